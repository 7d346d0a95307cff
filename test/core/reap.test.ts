import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StateStore } from "../../src/core/state.js";
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

async function localVm(name: string, opts: { running?: boolean; owner?: string; expiresIn?: number; record?: boolean } = {}): Promise<void> {
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
    await new StateStore(stateDir()).save(
      { name, provider: "local", user: "dev", createdAt: new Date().toISOString(), hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQGfM2nNEk4qPSdX5VlJ7f7D2ZTx5x3o2Z6V2Y5k0cn" },
      { private: "not a real key", public: "ssh-ed25519 AAAA test" },
    );
  }
}

describe("spuff reap", () => {
  it("plans with --dry-run and changes nothing; then destroys powered-off and expired VMs and forgets gone ones", async () => {
    await localVm("idle1"); // QEMU exited: powered off by the idle watcher
    await localVm("old", { running: true, expiresIn: -60 });
    await localVm("busy", { running: true });
    await new StateStore(stateDir()).save({ name: "vanished", provider: "local", user: "dev", createdAt: new Date().toISOString(), hostKey: "ssh-ed25519 AAAA" });

    const ls = await runCli(["ls"], { env: t.env });
    expect(ls.code).toBe(0);
    expect(ls.stderr).toMatch(/3 VM\(s\) need reaping \(idle1: stopped, old: expired, vanished: gone\); run `spuff reap`/);

    const dry = await runCli(["reap", "--dry-run"], { env: t.env });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/idle1\s+local\s+stopped\s+would destroy/);
    expect(dry.stdout).toMatch(/old\s+local\s+expired\s+would destroy/);
    expect(dry.stdout).toMatch(/vanished\s+local\s+gone\s+would forget/);
    expect(dry.stdout).not.toContain("busy");
    expect(dry.stdout).toContain("dry run: nothing changed");
    expect(existsSync(vmDir("idle1"))).toBe(true);
    expect(qemus[0].exitCode).toBeNull();

    const r = await runCli(["reap", "--json"], { env: t.env });
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.dryRun).toBe(false);
    expect(result.errors).toEqual([]);
    expect(result.plan.map((i: { name: string; reason: string; action: string; done: boolean }) => [i.name, i.reason, i.action, i.done])).toEqual([
      ["idle1", "stopped", "destroy", true],
      ["old", "expired", "destroy", true],
      ["vanished", "gone", "forget", true],
    ]);
    expect(existsSync(vmDir("idle1"))).toBe(false);
    expect(existsSync(vmDir("old"))).toBe(false);
    await new Promise((r) => qemus[0].exitCode !== null ? r(null) : qemus[0].once("exit", r));
    expect(qemus[1].exitCode).toBeNull(); // "busy" keeps running
    expect(new StateStore(stateDir()).list().map((v) => v.name)).toEqual(["busy"]);
    expect(readFileSync(join(stateDir(), "known_hosts"), "utf8")).not.toContain("spuff-old ");

    const again = await runCli(["reap"], { env: t.env });
    expect(again).toMatchObject({ code: 0, stdout: "nothing to reap\n" });
  });

  it("leaves other owners' VMs alone unless --all-owners", async () => {
    await localVm("theirs", { owner: "someoneelse01", record: false });
    expect((await runCli(["reap"], { env: t.env })).stdout).toBe("nothing to reap\n");
    expect(existsSync(vmDir("theirs"))).toBe(true);
    const r = await runCli(["reap", "--all-owners"], { env: t.env });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/theirs\s+local\s+stopped\s+destroy/);
    expect(existsSync(vmDir("theirs"))).toBe(false);
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
    expect(dry.stdout).toContain(`would delete local local VM directory without metadata ${orphan}`);
    expect(existsSync(orphan)).toBe(true);
    const r = await runCli(["reap"], { env: t.env });
    expect(r.stdout).toContain(`deleted local local VM directory without metadata ${orphan}`);
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
    expect(off.stderr).toContain("spuff reap");
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
