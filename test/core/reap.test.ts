import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { legacyOwnerId } from "../../src/core/owner.js";
import { processStart, StateStore, type VmRecord } from "../../src/core/state.js";
import { runCli, tempHome } from "../helpers/cli.js";

/**
 * `spuff reap` and `spuff extend` through the real CLI and the real local provider. VMs are given to the provider the
 * way it keeps them (a directory with meta.json, and a live QEMU process for a running VM): a running VM here is a
 * real `qemu-system-x86_64 -machine none` process, which the provider finds, lists and stops like any other.
 */
let t: ReturnType<typeof tempHome>;
const qemus: ChildProcess[] = [];
const OWNER = "testowner0001";
const now = () => Math.floor(Date.now() / 1000);

beforeEach(() => {
  t = tempHome();
});
afterEach(() => {
  for (const q of qemus.splice(0)) if (q.exitCode === null) q.kill("SIGKILL");
  t.cleanup();
});

const stateDir = () => join(t.env.XDG_STATE_HOME as string, "spuff");
const vmDir = (name: string) => join(stateDir(), "local", name);

async function localVm(
  name: string,
  opts: { running?: boolean; owner?: string; expiresIn?: number; record?: boolean | Partial<VmRecord>; console?: string } = {},
): Promise<void> {
  const dir = vmDir(name);
  mkdirSync(dir, { recursive: true });
  const labels = {
    "managed-by": "spuff",
    "spuff/name": name,
    "spuff/owner": opts.owner ?? OWNER,
    "spuff/created-at": String(now() - 3600),
    "spuff/expires-at": String(now() + (opts.expiresIn ?? 86400)),
    "spuff/request-id": `req${name}`,
  };
  writeFileSync(join(dir, "meta.json"), JSON.stringify({ name, labels, createdAt: new Date().toISOString(), sshPort: 2222, cpus: 1, memoryMiB: 1024 }));
  if (opts.console !== undefined) writeFileSync(join(dir, "console.log"), opts.console);
  if (opts.running) {
    const q = spawn("qemu-system-x86_64", ["-machine", "none", "-display", "none", "-S", "-qmp", `unix:${join(dir, "qmp.sock")},server=on,wait=off`, "-pidfile", join(dir, "qemu.pid")], { stdio: "ignore" });
    qemus.push(q);
    const deadline = Date.now() + 10_000;
    while (!existsSync(join(dir, "qemu.pid")) || !existsSync(join(dir, "qmp.sock"))) {
      if (Date.now() > deadline || q.exitCode !== null) throw new Error("qemu did not start");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  if (opts.record !== false) {
    const extra = typeof opts.record === "object" ? opts.record : {};
    await new StateStore(stateDir()).save(
      { name, provider: "local", user: "dev", createdAt: new Date().toISOString(), hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQGfM2nNEk4qPSdX5VlJ7f7D2ZTx5x3o2Z6V2Y5k0cn", requestId: `req${name}`, ...extra },
      { private: "not a real key", public: "ssh-ed25519 AAAA test" },
    );
  }
}

const IDLE_CONSOLE = "[  OK  ] Started spuff-idle.service\nspuff-idle: idle for 30m (timeout 30m): no ssh session, tmux client, cpu, load, network, spuff-keep or spuff-busy; poweroff\n[ 1805.1] reboot: Power down\n";

describe("spuff reap", () => {
  it("plans with --dry-run and changes nothing; then destroys expired VMs and forgets gone ones, keeping stopped local VMs", async () => {
    await localVm("idle1", { console: IDLE_CONSOLE }); // QEMU exited: powered off by the idle watcher
    await localVm("crashed", { console: "[   12.3] systemd[1]: Reached target multi-user.target.\n" }); // QEMU killed under it
    await localVm("oldstop", { expiresIn: -60, console: IDLE_CONSOLE }); // stopped and past its TTL
    await localVm("old", { running: true, expiresIn: -60 });
    await localVm("busy", { running: true });
    await new StateStore(stateDir()).save({ name: "vanished", provider: "local", user: "dev", createdAt: new Date().toISOString(), hostKey: "ssh-ed25519 AAAA" });

    const ls = await runCli(["ls"], { env: t.env });
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^idle1\s+stopped \(idle\)\s+local/m);
    expect(ls.stdout).toMatch(/^crashed\s+stopped \(host restarted\)\s+local/m);
    expect(ls.stderr).toContain("3 VMs of this machine need reaping (old: expired, oldstop: expired, vanished: gone): run `spuff reap`");
    expect(ls.stderr).toContain("crashed, idle1 are stopped, their disks kept: `spuff start NAME` boots one again");
    const json = JSON.parse((await runCli(["ls", "--json"], { env: t.env })).stdout);
    expect(json.find((v: { name: string }) => v.name === "crashed")).toMatchObject({ status: "stopped", stopReason: "host-restarted", reap: null, mine: true });

    const dry = await runCli(["reap", "--dry-run"], { env: t.env });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/old\s+local\s+expired\s+would destroy/);
    expect(dry.stdout).toMatch(/oldstop\s+local\s+expired\s+would destroy/);
    expect(dry.stdout).toMatch(/vanished\s+local\s+gone\s+would forget\n\n\(dry run: nothing changed/);
    for (const kept of ["busy", "idle1", "crashed"]) expect(dry.stdout).not.toContain(kept);
    expect(existsSync(vmDir("oldstop"))).toBe(true);
    expect(qemus[0].exitCode).toBeNull();

    const r = await runCli(["reap", "--json"], { env: t.env });
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.dryRun).toBe(false);
    expect(result.errors).toEqual([]);
    expect(result.plan.map((i: { name: string; reason: string; action: string; done: boolean }) => [i.name, i.reason, i.action, i.done])).toEqual([
      ["old", "expired", "destroy", true],
      ["oldstop", "expired", "destroy", true],
      ["vanished", "gone", "forget", true],
    ]);
    expect(existsSync(vmDir("oldstop"))).toBe(false);
    expect(existsSync(vmDir("old"))).toBe(false);
    expect(existsSync(join(vmDir("crashed"), "meta.json"))).toBe(true);
    expect(existsSync(join(vmDir("idle1"), "meta.json"))).toBe(true);
    await new Promise((r) => (qemus[0].exitCode !== null ? r(null) : qemus[0].once("exit", r)));
    expect(qemus[1].exitCode).toBeNull(); // "busy" keeps running
    expect(new StateStore(stateDir()).list().map((v) => v.name)).toEqual(["busy", "crashed", "idle1"]);
    expect(readFileSync(join(stateDir(), "known_hosts"), "utf8")).not.toContain("spuff-old ");

    const again = await runCli(["reap"], { env: t.env });
    expect(again).toMatchObject({ code: 0, stdout: "nothing to reap\n" });
  });

  it("leaves other owners' VMs alone unless --all-owners", async () => {
    await localVm("theirs", { owner: "someoneelse01", record: false, expiresIn: -60 });
    expect((await runCli(["reap"], { env: t.env })).stdout).toBe("nothing to reap\n");
    expect(existsSync(vmDir("theirs"))).toBe(true);
    const ls = await runCli(["ls"], { env: t.env });
    expect(ls.stderr).toContain("1 VM of other owners needs reaping (theirs: expired): `spuff reap --all-owners` removes them");
    const down = await runCli(["down", "theirs", "--yes"], { env: t.env });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain("refusing to destroy another owner's VM: theirs (local) belongs to owner someoneelse01");
    expect(down.stderr).toContain("--all-owners");
    expect(existsSync(vmDir("theirs"))).toBe(true);
    const r = await runCli(["reap", "--all-owners"], { env: t.env });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/theirs\s+local\s+expired\s+destroy/);
    expect(existsSync(vmDir("theirs"))).toBe(false);
  });

  it("this machine's VMs: its stable owner id, the older user@host id (an alias), and any VM whose record it holds", async () => {
    const env = { ...t.env, SPUFF_OWNER: undefined, USER: "alice" };
    await localVm("legacy", { owner: legacyOwnerId(env), record: false, expiresIn: -60 }); // labelled by an older spuff here
    await localVm("renamed", { owner: "0ldhostname1", expiresIn: -60 }); // another id, but this machine holds its record
    await localVm("imposter", { owner: "someoneelse01", expiresIn: -60, record: { requestId: "another-request" } }); // same name, other VM
    const r = await runCli(["reap", "--json"], { env });
    expect(r.code).toBe(0);
    // The imposter VM is not this machine's; the record that shared its name belongs to a VM that no longer exists.
    expect(JSON.parse(r.stdout).plan.map((i: { name: string; action: string }) => [i.name, i.action])).toEqual([
      ["imposter", "forget"],
      ["legacy", "destroy"],
      ["renamed", "destroy"],
    ]);
    expect(existsSync(join(vmDir("imposter"), "meta.json"))).toBe(true);
    expect(existsSync(vmDir("legacy")) || existsSync(vmDir("renamed"))).toBe(false);
    // The id is random, kept in the state directory, and stays the same from run to run.
    const owner = JSON.parse(readFileSync(join(stateDir(), "owner.json"), "utf8"));
    expect(owner.id).toMatch(/^[0-9a-f]{12}$/);
    expect(owner.aliases).toEqual([legacyOwnerId(env)]);
    await runCli(["ls"], { env: { ...env, USER: "bob" } });
    expect(JSON.parse(readFileSync(join(stateDir(), "owner.json"), "utf8"))).toEqual(owner);
  });

  it("an `up` whose pid now belongs to another process (reboot, pid reuse) counts as dead; --keep-on-failure VMs are kept", async () => {
    // Our own pid is alive, but it did not start at the recorded time: another process got that pid.
    await localVm("reused", { running: true, record: { upPid: process.pid, upStart: "0:1" } });
    await localVm("creating", { running: true, record: { upPid: process.pid, upStart: processStart(process.pid) } });
    await localVm("kept", { running: true }); // what --keep-on-failure leaves: a record without upPid
    const ls = JSON.parse((await runCli(["ls", "--json"], { env: t.env })).stdout);
    expect(ls.map((v: { name: string; reap: string | null }) => [v.name, v.reap])).toEqual([
      ["creating", null],
      ["kept", null],
      ["reused", "interrupted"],
    ]);
  });

  it("a local VM whose metadata cannot be read is unknown: never forgotten, never deleted as an orphan", async () => {
    await localVm("broken");
    writeFileSync(join(vmDir("broken"), "meta.json"), "{ not json");
    const old = new Date(Date.now() - 5 * 60_000);
    utimesSync(vmDir("broken"), old, old);
    const ls = JSON.parse((await runCli(["ls", "--json"], { env: t.env })).stdout);
    expect(ls).toMatchObject([{ name: "broken", status: "unknown", reap: null }]);
    const r = await runCli(["reap"], { env: t.env });
    expect(r).toMatchObject({ code: 0, stdout: "nothing to reap\n" });
    expect(existsSync(join(vmDir("broken"), "meta.json"))).toBe(true);
    expect(new StateStore(stateDir()).read("broken")).toBeDefined();
  });

  it("nothing is deleted because spuff could not tell: a provider that fails, a record that cannot be read", async () => {
    // A record of a Hetzner VM, and the Hetzner API unreachable: the record is not "gone", reap fails and keeps it.
    await new StateStore(stateDir()).save({ name: "far", provider: "hetzner", id: "42", requestId: "reqfar", user: "dev", createdAt: new Date().toISOString(), hostKey: "ssh-ed25519 AAAA" });
    const env = { ...t.env, HCLOUD_TOKEN: "not-a-real-token", HCLOUD_ENDPOINT: "http://127.0.0.1:9/v1", HCLOUD_POLL_INTERVAL: "10ms" };
    const r = await runCli(["reap"], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("hetzner: ");
    expect(r.stdout).toBe("nothing to reap\n");
    expect(new StateStore(stateDir()).read("far")).toBeDefined();

    // A record whose vm.json cannot be read: never forgotten, and its name stays taken.
    mkdirSync(join(stateDir(), "vms", "garbled"), { recursive: true });
    writeFileSync(join(stateDir(), "vms", "garbled", "vm.json"), "{ half a reco");
    expect((await runCli(["reap", "--provider", "local"], { env: t.env })).stdout).toBe("nothing to reap\n");
    expect(existsSync(join(stateDir(), "vms", "garbled", "vm.json"))).toBe(true);
    const up = await runCli(["up", "garbled"], { env: t.env });
    expect(up.code).toBe(1);
    expect(up.stderr).toContain(`error: the name "garbled" is taken: ${join(stateDir(), "vms", "garbled")} exists but holds no readable VM record`);
    expect(readFileSync(join(stateDir(), "vms", "garbled", "vm.json"), "utf8")).toBe("{ half a reco");
  });

  it("deletes orphans: a VM directory without metadata left by a crash", async () => {
    const orphan = vmDir("half-made");
    mkdirSync(orphan, { recursive: true });
    writeFileSync(join(orphan, "overlay.qcow2"), "x");
    const young = await runCli(["reap", "--dry-run"], { env: t.env });
    expect(young.stdout).toBe("nothing to reap\n"); // may belong to an `up` writing it right now
    const old = new Date(Date.now() - 5 * 60_000);
    utimesSync(orphan, old, old);
    const dry = await runCli(["reap", "--dry-run"], { env: t.env });
    expect(dry.stdout).toContain(`would delete local VM directory without metadata ${orphan}`);
    expect(existsSync(orphan)).toBe(true);
    const r = await runCli(["reap"], { env: t.env });
    expect(r.stdout).toContain(`deleted local VM directory without metadata ${orphan}`);
    expect(existsSync(orphan)).toBe(false);
  });

  it("--install --no-enable writes a systemd user timer running `spuff reap`; --uninstall removes it", async () => {
    const r = await runCli(["reap", "--install", "--no-enable"], { env: t.env });
    expect(r.code).toBe(0);
    const dir = join(t.env.XDG_CONFIG_HOME as string, "systemd", "user");
    const service = readFileSync(join(dir, "spuff-reap.service"), "utf8");
    expect(service).toContain(`ExecStart="${process.execPath}" "${process.argv[1]}" "reap"`);
    expect(readFileSync(join(dir, "spuff-reap.timer"), "utf8")).toMatch(/OnUnitActiveSec=10min[\s\S]*Persistent=true/);
    expect(r.stdout).toContain("enable it with: systemctl --user enable --now spuff-reap.timer");
    expect(r.stderr).toContain("keep provider credentials in the config");
    const u = await runCli(["reap", "--uninstall", "--json"], { env: t.env });
    expect(JSON.parse(u.stdout).removed).toHaveLength(2);
    expect(existsSync(join(dir, "spuff-reap.service"))).toBe(false);
  });
});

describe("spuff extend", () => {
  it("refuses a VM that powered off, a bad duration and an unknown VM, changing nothing", async () => {
    await localVm("sleepy");
    const before = readFileSync(join(vmDir("sleepy"), "meta.json"), "utf8");
    const off = await runCli(["extend", "sleepy", "4h"], { env: t.env });
    expect(off.code).toBe(1);
    expect(off.stderr).toContain("sleepy is stopped, not running: its TTL cannot be extended");
    expect(off.stderr).toContain("boot it again first: `spuff start sleepy`");
    const bad = await runCli(["extend", "sleepy", "4 hours"], { env: t.env });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/4 hours/);
    const unknown = await runCli(["extend", "nope", "4h"], { env: t.env });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no VM named "nope"');
    expect(readFileSync(join(vmDir("sleepy"), "meta.json"), "utf8")).toBe(before);
  });

  it("puts the label back when the VM cannot be reached", async () => {
    await localVm("unreachable", { running: true });
    const before = JSON.parse(readFileSync(join(vmDir("unreachable"), "meta.json"), "utf8")).labels["spuff/expires-at"];
    const r = await runCli(["extend", "unreachable", "4h"], { env: t.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/could not update the TTL on unreachable|refused/);
    expect(JSON.parse(readFileSync(join(vmDir("unreachable"), "meta.json"), "utf8")).labels["spuff/expires-at"]).toBe(before);
  });
});
