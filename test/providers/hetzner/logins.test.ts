import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { BIN, phaseShown, type Running, spawnCli } from "../../helpers/cli.js";
import { type StandinVm, startStandinVm } from "../../helpers/standin-vm.js";
import { type Harness, harness, problems } from "./harness.js";

// How many times `spuff up` logs in to the VM, counted in the log of the real sshd standing in for the server
// ("Accepted publickey", and "Connection from" for every connection): the SSH wait's login carries the cloud-init wait
// and the rotation's prepare, commit and finish; the rotation's proof is a connection that stops after its key
// exchange, without a login (docs/adr/0008-host-key-rotation.md). A connection that drops during the cloud-init wait
// is replaced by one new login; a second drop fails the up, which rolls back.

/** Every process below `pid` (the stand-in's listening sshd): the connections' sshd processes and their commands. */
function descendants(pid: number): number[] {
  const rows = execFileSync("ps", ["-e", "-o", "pid=,ppid="], { encoding: "utf8" })
    .trim()
    .split("\n")
    .map((l) => l.trim().split(/\s+/).map(Number));
  const found: number[] = [];
  for (let frontier = [pid]; frontier.length; ) {
    frontier = rows.filter(([, ppid]) => frontier.includes(ppid)).map(([p]) => p);
    found.push(...frontier);
  }
  return found;
}

async function until(what: string, ok: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(!existsSync(BIN))("hetzner: the logins of spuff up", { timeout: 60_000 }, () => {
  let h: Harness;
  let vm: StandinVm | undefined;
  /** When set, the stand-in's `cloud-init status` waits (sleeps) on its first `hangs` runs, each leaving a mark in drops/. */
  let hangs = 0;
  /** When set, the stand-in's cloud-init finished with errors, and this is its output log. */
  let failedLog: string | undefined;
  const running: Running[] = [];
  const spawnUp = (name: string) => {
    const run = spawnCli(["--provider", "hetzner", "up", name], h.env, h.home.home);
    running.push(run);
    return run;
  };

  afterEach(async () => {
    for (const r of running.splice(0)) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill("SIGKILL");
    expect(problems(h.fake)).toEqual([]);
    await h.close();
    await vm?.stop();
    vm = undefined;
    hangs = 0;
    failedLog = undefined;
  });

  const start = async () => {
    h = await harness({
      ipv4Prefix: "127.0.101.",
      standin: false,
      onServerCreated: async (s) => {
        vm = await startStandinVm(s.userData, s.ipv4 ?? "::1");
        if (failedLog !== undefined) {
          const status = 'echo "status: error"; echo "errors:"; echo "  - (scripts_user/WARNING): Failed to run module scripts_user"; exit 1';
          writeFileSync(join(vm.dir, "bin", "cloud-init"), `#!/bin/sh\n${status}\n`, { mode: 0o755 });
          writeFileSync(join(vm.dir, "cloud-init-output.log"), failedLog, { mode: 0o644 });
        }
        if (hangs) {
          const drops = join(vm.dir, "drops");
          mkdirSync(drops);
          chmodSync(drops, 0o777);
          writeFileSync(
            join(vm.dir, "bin", "cloud-init"),
            `#!/bin/sh\nn=$(ls ${drops} | wc -l)\n: > ${drops}/$n\n[ "$n" -lt ${hangs} ] && exec sleep 60\necho "status: done"\n`,
            { mode: 0o755 },
          );
        }
      },
      onServerDeleted: async () => {
        await vm?.stop();
        vm = undefined;
      },
    });
  };
  const phasesOf = (stdout: string) =>
    stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === "phase" && e.status === "started")
      .map((e) => e.phase);

  it("a default up logs in once (cloud-init, prepare, commit, finish) and connects once more for the rotation's proof", async () => {
    await start();
    const up = await h.spuff(["up", "two", "--json"]);
    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);
    expect(phasesOf(up.stdout).slice(-4)).toEqual(["wait SSH", "cloud-init", "rotate host key", "ready"]);
    expect(vm?.logins()).toBe(1);
    expect(vm?.connections()).toBe(2);
    // The VM works with the rotated key, over a login of its own.
    expect((await h.spuff(["ssh", "two", "--no-agent", "--direct", "--", "true"])).code).toBe(0);
    expect(vm?.logins()).toBe(2);
    expect((await h.spuff(["down", "two", "--yes"])).code).toBe(0);
  });

  it("with --verbose the cloud-init log follower runs on the same login", async () => {
    await start();
    const up = await h.spuff(["up", "verb", "--verbose"]);
    expect(up.code).toBe(0);
    expect(vm?.logins()).toBe(1);
    expect(vm?.connections()).toBe(2);
    expect((await h.spuff(["down", "verb", "--yes"])).code).toBe(0);
  });

  it("a connection that drops during the cloud-init wait: one new login runs the wait again, and up succeeds", async () => {
    hangs = 1;
    await start();
    const run = spawnUp("drop");
    await phaseShown(run, "cloud-init");
    await until("the cloud-init wait", () => existsSync(join(vm?.dir ?? "", "drops", "0")));
    expect(vm?.logins()).toBe(1);
    for (const pid of descendants(vm?.pid ?? 0)) process.kill(pid, "SIGKILL");
    expect(await run.exit).toBe(0);
    expect(run.stderr()).toContain("the connection to drop closed while running `cloud-init status --wait --long`; logging in again");
    expect(run.stderr()).toContain("✓ rotate host key");
    // The wait's and the one after the drop (it also carried prepare, commit and finish); then the proof's connection.
    expect(vm?.logins()).toBe(2);
    expect(vm?.connections()).toBe(3);
    expect((await h.spuff(["ssh", "drop", "--no-agent", "--direct", "--", "true"])).code).toBe(0);
    expect((await h.spuff(["down", "drop", "--yes"])).code).toBe(0);
  });

  it("cloud-init that finished with errors fails the up with its status and the log's tail, and rolls back", async () => {
    failedLog = `${Array.from({ length: 40 }, (_, i) => `early line ${i}`).join("\n")}\nE: Unable to locate package nosuchpkg\nCloud-init v. 24.4 finished\n`;
    await start();
    const up = await h.spuff(["up", "bad"]);
    expect(up.code).toBe(2);
    expect(up.stderr).toContain("error: cloud-init on bad finished with errors");
    // What `cloud-init status` printed, then the last 25 lines of its log (not the early ones), then how to look.
    expect(up.stderr).toContain("  status: error");
    expect(up.stderr).toContain("Failed to run module scripts_user");
    expect(up.stderr).toContain("  --- /var/log/cloud-init-output.log (tail)");
    expect(up.stderr).toContain("  E: Unable to locate package nosuchpkg");
    expect(up.stderr).toContain("  early line 39");
    expect(up.stderr).not.toContain("early line 10\n");
    expect(up.stderr).toContain("hint: re-run with --keep-on-failure");
    expect(up.stderr).toContain("rolled back bad");
    expect(up.stderr).not.toContain("    at "); // no stack trace without --verbose
    await h.fake.settled();
    expect({ servers: h.fake.servers.size, keys: h.fake.sshKeys.size, volumes: h.fake.volumes.size }).toEqual({ servers: 0, keys: 0, volumes: 0 });
    expect((await h.spuff(["ls", "--json"])).stdout.trim()).toBe("[]");
  });

  it("a second drop fails the up with what happened, and rolls back", async () => {
    hangs = 2;
    await start();
    const run = spawnUp("drop2");
    for (const n of ["0", "1"]) {
      await until(`cloud-init wait ${n}`, () => existsSync(join(vm?.dir ?? "", "drops", n)));
      for (const pid of descendants(vm?.pid ?? 0)) process.kill(pid, "SIGKILL");
    }
    expect(await run.exit).toBe(2);
    expect(run.stderr()).toContain("error: the connection to drop2 closed while running `cloud-init status --wait --long`");
    expect(run.stderr()).toContain("rolled back drop2");
    await h.fake.settled();
    expect({ servers: h.fake.servers.size, keys: h.fake.sshKeys.size }).toEqual({ servers: 0, keys: 0 });
  });

  it("Ctrl-C during the cloud-init wait on the kept login rolls back", async () => {
    hangs = 1;
    await start();
    const run = spawnUp("intr");
    await until("the cloud-init wait", () => existsSync(join(vm?.dir ?? "", "drops", "0")));
    run.child.kill("SIGINT");
    expect(await run.exit).toBe(130);
    expect(run.stderr()).toContain("interrupted during cloud-init; rolled back, nothing is left");
    await h.fake.settled();
    expect({ servers: h.fake.servers.size, keys: h.fake.sshKeys.size }).toEqual({ servers: 0, keys: 0 });
    expect(JSON.parse((await h.spuff(["ls", "--json"])).stdout)).toEqual([]);
  });
});
