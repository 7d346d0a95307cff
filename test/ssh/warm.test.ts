import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pidAlive, StateStore } from "../../src/core/state.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { BIN, tempHome, writeUserConfig } from "../helpers/cli.js";
import { type Agent, type Sshd, startAgent, startGitServer, startSshd } from "../helpers/sshd.js";

// `spuff ssh NAME -- COMMAND` on the guard daemon's warm connection (like OpenSSH's ControlPersist), through the built
// CLI against a real loopback sshd standing in for the VM: reused, still guarded, pinned, and direct when it must be.
describe("spuff ssh reuses the guard daemon's warm connection", () => {
  const t = tempHome();
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  const guardDir = join(stateDir, "guard");
  const clientKey = ed25519KeyPair("spuff-vm");
  let vm: Sshd;
  let agent: Agent;
  let git: Awaited<ReturnType<typeof startGitServer>>;
  let env: NodeJS.ProcessEnv;

  const spuff = (argv: string[], input?: string | Buffer) =>
    spawnSync(process.execPath, [BIN, ...argv], { env, cwd: t.home, input, encoding: "utf8", timeout: 60_000, maxBuffer: 16 << 20 });
  const status = () => JSON.parse(spuff(["--json", "guard", "status"]).stdout) as { pid?: number; warm?: string[]; running?: false };
  const daemonLog = () => (existsSync(join(guardDir, "daemon.log")) ? readFileSync(join(guardDir, "daemon.log"), "utf8") : "");
  const agentLog = () =>
    existsSync(join(stateDir, "agent.log")) ? readFileSync(join(stateDir, "agent.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l)) : [];
  /** The TCP connection the command ran on, as sshd tells it ("client-ip client-port server-ip server-port"). */
  const connection = () => {
    const r = spuff(["ssh", "box", "--", "echo $SSH_CONNECTION"]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    return r.stdout.trim();
  };
  const until = async (what: string, ok: () => boolean) => {
    const deadline = Date.now() + 15_000;
    while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(ok(), what).toBe(true);
  };
  const config = (extra = "") =>
    writeUserConfig(env, `ssh:\n  user: spuff-test\n  tmux: false\n  allowed_keys: [work-key]\n${extra}git_hosts:\n  - host: githost.test\n    address: 127.0.0.1\n    host_keys: ["${git.hostKey}"]\n`);
  const loginFromVm = (user: string, port: number) =>
    `ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p ${port} ${user}@127.0.0.1 true`;

  beforeAll(async () => {
    agent = startAgent(["work-key", "other-key"]);
    vm = await startSshd({ authorizedKeys: [clientKey.public.trim(), agent.keys[0].public], extraConfig: ["AllowUsers spuff-test"] });
    git = await startGitServer([agent.keys[0].public]);
    await new StateStore(stateDir).save(
      { name: "box", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: vm.hostKey, endpoint: { host: "127.0.0.1", port: vm.port } },
      { private: clientKey.private, public: clientKey.public.trim() },
    );
    mkdirSync(join(t.home, ".ssh"), { recursive: true });
    writeFileSync(join(t.home, ".ssh", "config"), "");
    env = { ...t.env, SSH_AUTH_SOCK: agent.socket };
    config();
  });

  afterAll(async () => {
    spuff(["guard", "stop"]);
    await vm?.stop();
    await git?.stop();
    agent?.stop();
    t.cleanup();
  });

  it("the first command connects directly and starts the daemon; the next ones share its one logged-in connection", async () => {
    const direct = connection();
    await until("the daemon answers", () => status().pid !== undefined);
    const first = connection();
    const second = connection();
    expect(first).toBe(second); // the same client port: one TCP connection, one login
    expect(first).not.toBe(direct);
    expect(status().warm).toEqual(["box"]);
    expect(daemonLog().match(/warm connection to box \(127\.0\.0\.1:\d+\) logged in/g)).toHaveLength(1);
  });

  it("stdin, stdout, stderr and the exit code pass through it, also a few MiB", () => {
    const r = spuff(["ssh", "box", "--", "cat; echo to-stderr >&2; exit 7"], "from stdin");
    expect([r.status, r.stdout, r.stderr]).toEqual([7, "from stdin", "to-stderr\n"]);
    const blob = randomBytes(5 << 20);
    const sum = spuff(["ssh", "box", "--", "sha256sum"], blob);
    expect(sum.stdout.split(" ")[0]).toBe(createHash("sha256").update(blob).digest("hex"));
    expect(status().warm).toEqual(["box"]);
  });

  it("a file of 8 MiB or more on stdin goes on a connection of its own, byte for byte", () => {
    const warm = connection();
    const file = join(t.home, "big");
    const blob = randomBytes(9 << 20);
    writeFileSync(file, blob);
    const fd = openSync(file, "r");
    try {
      const r = spawnSync(process.execPath, [BIN, "ssh", "box", "--", "sha256sum; echo $SSH_CONNECTION"], { env, cwd: t.home, stdio: [fd, "pipe", "pipe"], encoding: "utf8", timeout: 60_000 });
      const [sum, conn] = r.stdout.trim().split("\n");
      expect(sum.split(" ")[0]).toBe(createHash("sha256").update(blob).digest("hex"));
      expect(conn).not.toBe(warm);
    } finally {
      closeSync(fd);
    }
    expect(connection()).toBe(warm);
  });

  /**
   * `sh -c SCRIPT`, where `$SPUFF` is spuff and `$PIDFILE` where the script puts its pid (`$!`): pipes on spuff's
   * stdin or stdout (FIFOs), as a shell makes them. `during` runs once spuff's pid is known and the output so far has
   * `mark`, while the command still runs.
   */
  const sh = (script: string, during?: { mark: string; run(pid: number): void | Promise<void> }) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const pidFile = join(t.home, `spuff.pid.${Math.random()}`);
      const bin = join(t.home, "spuff");
      writeFileSync(bin, `#!/bin/sh\nexec '${process.execPath}' '${BIN}' "$@"\n`, { mode: 0o755 });
      const p = spawn("sh", ["-c", script], { env: { ...env, SPUFF: bin, PIDFILE: pidFile }, cwd: t.home, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      let ran: Promise<void> | undefined;
      const timer = setTimeout(() => p.kill(), 60_000);
      const seen = () => {
        if (during && !ran && (stdout + stderr).includes(during.mark)) {
          ran = (async () => {
            while (!existsSync(pidFile) || !readFileSync(pidFile, "utf8").endsWith("\n")) await new Promise((r) => setTimeout(r, 10));
            await during.run(Number(readFileSync(pidFile, "utf8")));
          })();
        }
      };
      p.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
        seen();
      });
      p.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
        seen();
      });
      p.on("close", (status) => {
        clearTimeout(timer);
        Promise.resolve(ran).then(() => resolve({ status, stdout, stderr }), reject);
      });
    });
  /** `INPUT | spuff ssh box -- COMMAND`: a pipe on spuff's stdin. */
  const piped = (input: string, command: string, during?: Parameters<typeof sh>[1]) =>
    sh(`${input} | "$SPUFF" ssh box -- '${command}' & echo $! > "$PIDFILE"; wait $!`, during);
  /** `spuff ssh box -- COMMAND | OUTPUT`: a pipe on spuff's stdout; spuff's exit code comes last on stderr. */
  const pipedOut = (command: string, output: string, during?: Parameters<typeof sh>[1]) =>
    sh(`{ "$SPUFF" ssh box -- '${command}' & echo $! > "$PIDFILE"; wait $!; echo "exit $?" >&2; } | ${output}`, during);
  const procField = (pid: number, file: string, field: string) => Number(new RegExp(`^${field}:\\s*(\\d+)`, "m").exec(readFileSync(`/proc/${pid}/${file}`, "utf8"))?.[1]);
  /** The daemon once it keeps a warm connection to box, and its resident memory then (kB). */
  const warmDaemon = async () => {
    connection();
    await until("the daemon answers", () => status().pid !== undefined);
    connection();
    const daemon = status().pid as number;
    return { daemon, rssBefore: procField(daemon, "status", "VmRSS") };
  };

  it("a pipe on stdin (`cat f | spuff ssh`) goes through on the warm connection byte for byte, read by the daemon, not by spuff", async () => {
    connection();
    await until("the daemon answers", () => status().pid !== undefined);
    const warm = connection();
    const file = join(t.home, "piped");
    const blob = randomBytes(8 << 20);
    writeFileSync(file, blob);
    let read = Number.NaN;
    const r = await piped(`cat '${file}'`, "sha256sum; echo $SSH_CONNECTION; echo to-stderr >&2; sleep 1; exit 7", {
      mark: "127.0.0.1",
      run: (pid) => (read = procField(pid, "io", "rchar")),
    });
    expect([r.status, r.stderr]).toEqual([7, "to-stderr\n"]);
    const [sum, conn] = r.stdout.trim().split("\n");
    expect(sum.split(" ")[0]).toBe(createHash("sha256").update(blob).digest("hex"));
    expect(conn).toBe(warm);
    // All spuff itself read (its code, the daemon's frames): far less than the 8 MiB that went through.
    expect(read).toBeLessThan(2 << 20);
    // Its end reaches the command; nothing, too; and a command that stops reading ends the pipeline (as with OpenSSH).
    expect(await piped("printf abc", "wc -c")).toEqual({ status: 0, stdout: "3\n", stderr: "" });
    expect(await piped("true", "wc -c")).toEqual({ status: 0, stdout: "0\n", stderr: "" });
    expect(await piped("yes", "head -c 6")).toEqual({ status: 0, stdout: "y\ny\ny\n", stderr: "" });
  });

  it("a pipe into a command that reads slowly is held back, not buffered: the daemon's and spuff's memory stay bounded", async () => {
    const { daemon, rssBefore } = await warmDaemon();
    let grew = { daemon: Number.NaN, spuff: Number.NaN };
    // 256 MiB on its way while the command sleeps before it reads any of it.
    const r = await piped("head -c 268435456 /dev/zero", "echo sleeping; sleep 2; wc -c", {
      mark: "sleeping",
      run: async (pid) => {
        await new Promise((r) => setTimeout(r, 1000)); // time for the pipe's writer to fill whatever would take it
        grew = { daemon: procField(daemon, "status", "VmRSS") - rssBefore, spuff: procField(pid, "status", "VmRSS") };
      },
    });
    expect(r).toEqual({ status: 0, stdout: "sleeping\n268435456\n", stderr: "" });
    // kB: a few MiB in flight (the channel's window and buffer), not the input.
    expect(grew.daemon).toBeLessThan(48 << 10);
    expect(grew.spuff).toBeLessThan(96 << 10);
  });

  it("a pipe on stdout (`spuff ssh -- cat f | …`) goes through byte for byte, written by the daemon, not by spuff", async () => {
    connection();
    await until("the daemon answers", () => status().pid !== undefined);
    // 8 MiB the command makes itself (the VM's user cannot read this test's files).
    const blob = Buffer.from("0123456789abcdef\n".repeat(Math.ceil((8 << 20) / 17))).subarray(0, 8 << 20);
    let wrote = Number.NaN;
    const r = await pipedOut(`yes 0123456789abcdef | head -c ${8 << 20}; echo sent >&2; sleep 1; exit 5`, "sha256sum", {
      mark: "sent",
      run: (pid) => (wrote = procField(pid, "io", "wchar")),
    });
    expect([r.status, r.stdout.split(" ")[0], r.stderr]).toEqual([0, createHash("sha256").update(blob).digest("hex"), "sent\nexit 5\n"]);
    expect(wrote).toBeLessThan(1 << 20);
    // A reader that stops (`| head`) ends the command, and spuff exits 0, as when it wrote the pipe itself.
    expect(await pipedOut("yes", "head -c 6")).toEqual({ status: 0, stdout: "y\ny\ny\n", stderr: "exit 0\n" });
    expect(await pipedOut("echo x; exit 3", "cat")).toEqual({ status: 0, stdout: "x\n", stderr: "exit 3\n" });
  });

  it("a pipe out of a command to a slow reader is held back, not buffered: the daemon's memory stays bounded", async () => {
    const { daemon, rssBefore } = await warmDaemon();
    let grew = Number.NaN;
    const r = await pipedOut("head -c 268435456 /dev/zero", "(echo reading >&2; sleep 4; wc -c)", {
      mark: "reading",
      run: async () => {
        await new Promise((r) => setTimeout(r, 2500)); // time for the command to fill whatever would take it
        grew = procField(daemon, "status", "VmRSS") - rssBefore;
      },
    });
    expect(r).toEqual({ status: 0, stdout: "268435456\n", stderr: "reading\nexit 0\n" });
    expect(grew).toBeLessThan(48 << 10);
  });

  it("output to a reader that is not a pipe (a socket) and reads slowly is held back too: spuff's memory stays bounded", async () => {
    const { daemon, rssBefore } = await warmDaemon();
    // Node's "pipe" is a socket pair: spuff relays what the daemon sends it.
    const p = spawn(process.execPath, [BIN, "ssh", "box", "--", "head -c 268435456 /dev/zero"], { env, cwd: t.home, stdio: ["ignore", "pipe", "pipe"] });
    p.stdout.pause();
    await new Promise((r) => setTimeout(r, 3000));
    const grew = { daemon: procField(daemon, "status", "VmRSS") - rssBefore, spuff: procField(p.pid as number, "status", "VmRSS") };
    let n = 0;
    p.stdout.on("data", (d: Buffer) => (n += d.length));
    p.stdout.resume();
    const code = await new Promise((r) => p.on("close", r));
    expect([code, n]).toEqual([0, 268435456]);
    expect(grew.daemon).toBeLessThan(48 << 10);
    expect(grew.spuff).toBeLessThan(96 << 10);
  });

  it("the guard stands on the reused path: only the allowed key, git logins signed, every signature logged", () => {
    const warm = connection();
    const keys = spuff(["ssh", "box", "--", "ssh-add -l"]);
    expect(keys.stdout.trim().split("\n")).toEqual([expect.stringContaining(agent.keys[0].fingerprint)]);
    const before = agentLog().length;
    spuff(["ssh", "box", "--", loginFromVm("git", git.port)]); // git-shell refuses the command; the signature counts
    const refused = spuff(["ssh", "box", "--", loginFromVm("spuff-test", vm.port)]);
    expect(refused.status).not.toBe(0);
    // The refusal reaches this command's stderr, as on a connection of its own.
    expect(refused.stderr).toContain("refused a signature request from box");
    expect(agentLog().slice(before)).toEqual([
      expect.objectContaining({ vm: "box", user: "git", allowed: true, key: agent.keys[0].fingerprint, destination: "githost.test" }),
      expect.objectContaining({ vm: "box", user: "spuff-test", allowed: false, rule: "host-not-pinned" }),
    ]);
    expect(connection()).toBe(warm);
  });

  it("a VM record whose pinned host key changed is not served by the old connection: the new pin is checked, and refused", () => {
    const file = join(stateDir, "vms", "box", "vm.json");
    const original = readFileSync(file, "utf8");
    const other = ed25519KeyPair("someone-else").public.trim().split(" ").slice(0, 2).join(" ");
    writeFileSync(file, original.replace(vm.hostKey, other));
    try {
      const r = spuff(["ssh", "box", "--", "echo ran"]);
      expect(r.stdout).toBe("");
      expect(r.status).toBe(255);
      expect(r.stderr).toContain("does not match the key pinned when it was created");
      expect(daemonLog()).toContain("warm connection to box closed: its VM record changed");
      expect(daemonLog()).toMatch(/warm connection to box refused: host key of box .* does not match/);
    } finally {
      writeFileSync(file, original);
    }
    expect(connection()).toMatch(/^127\.0\.0\.1 \d+/);
  });

  it("falls back to a direct connection when the daemon is killed or stopped, and starts one again", async () => {
    const warm = connection();
    const pid = status().pid as number;
    process.kill(pid, "SIGKILL"); // leaves its control socket behind
    await until("the daemon is gone", () => !pidAlive(pid));
    expect(existsSync(join(guardDir, "control.sock"))).toBe(true);
    const direct = connection();
    expect(direct).not.toBe(warm);
    await until("a new daemon answers", () => (status().pid ?? pid) !== pid);
    expect(spuff(["guard", "stop"]).status).toBe(0);
    expect(connection()).not.toBe(direct);
    await until("a daemon answers again", () => status().pid !== undefined);
  });

  it("a daemon of another build (spuff was upgraded) runs nothing: the command goes direct and this build's daemon replaces it", async () => {
    connection();
    await until("the daemon answers", () => status().pid !== undefined);
    const old = status().pid as number;
    const now = Date.now() / 1000;
    utimesSync(BIN, now, now); // what spuffBuild() compares, as after an upgrade
    const direct = connection();
    await until("the old daemon is gone", () => !pidAlive(old));
    const warm = connection();
    expect(status().pid).not.toBe(old);
    expect(connection()).toBe(warm);
    expect(direct).not.toBe(warm);
  });

  it("--direct and ssh.persist: 0m neither use nor start a daemon; persist closes an idle connection", async () => {
    spuff(["guard", "stop"]);
    const a = spuff(["ssh", "box", "--direct", "--", "true"]);
    expect(a.status).toBe(0);
    config("  persist: 0m\n");
    expect(spuff(["ssh", "box", "--", "true"]).status).toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    expect(status().running).toBe(false);
    config("  persist: 1s\n");
    connection(); // starts the daemon
    await until("the daemon answers", () => status().pid !== undefined);
    connection(); // logs in, then stays 1 s
    await until("the idle connection closes", () => daemonLog().includes("warm connection to box closed: no session for 1 s (ssh.persist)"));
    expect(status().warm).toEqual([]);
    config();
  });

  it("a VM that now answers with another host key on the same address is refused on the reused path", async () => {
    connection();
    await until("the daemon answers", () => status().pid !== undefined);
    connection();
    expect(status().warm).toEqual(["box"]);
    const refusals = () => daemonLog().split("\n").filter((l) => /warm connection to box refused: host key of box/.test(l)).length;
    const before = refusals();
    // The VM goes away under the warm connection (its sshd process for that connection dies), and another machine
    // answers on its address with a host key of its own.
    const lost = spuff(["ssh", "box", "--", "kill -9 $PPID"]);
    expect(lost.status).toBe(255);
    expect(lost.stderr).toContain("the connection to box was lost");
    await until("the daemon saw its connection close", () => daemonLog().includes("warm connection to box closed by the other side"));
    const port = vm.port;
    await vm.stop();
    vm = await startSshd({ port, authorizedKeys: [clientKey.public.trim()], extraConfig: ["AllowUsers spuff-test"] });
    const r = spuff(["ssh", "box", "--", "echo ran"]);
    expect(r.stdout).toBe("");
    expect(r.status).toBe(255);
    expect(r.stderr).toContain("does not match the key pinned when it was created");
    expect(refusals()).toBe(before + 1);
  });
});
