import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Client } from "ssh2";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { freePort, type Sshd, startSshd } from "../helpers/sshd.js";

/**
 * The idle watcher's real decision logic (cloud-init/idle/spuff-idle under bash) against fixture /proc files, fake
 * `systemctl`/`wall`/`tmux` programs that record what they were asked, and a fake clock (SPUFF_NOW); its SSH count
 * also against the real /proc with real sshd connections.
 */
const IDLE_DIR = resolve("cloud-init/idle");
const T0 = 1_900_000_000;
const TIMEOUT = 1800;
/** The login user (SSH_USER in idle.conf): a real local account (test/setup.d/15-users.sh), so the watcher finds its uid. */
const USER = "spuff-test";
const uidOf = (user: string) => Number(execFileSync("id", ["-u", user], { encoding: "utf8" }).trim());
const UID = uidOf(USER);

interface Vm {
  root: string;
  proc: string;
  run: string;
  conf: string;
  state: string;
  calls: string;
  env: NodeJS.ProcessEnv;
}

let vm: Vm;

function write(file: string, text: string): void {
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, text);
}

/** A quiet machine: booted long ago, no CPU or network use, no sessions. */
function makeVm(conf: Record<string, string | number> = {}): Vm {
  const root = mkdtempSync(join(tmpdir(), "spuff-idle-"));
  const proc = join(root, "proc");
  const run = join(root, "run");
  const bin = join(root, "bin");
  const calls = join(root, "calls");
  mkdirSync(join(run, "busy"), { recursive: true });
  mkdirSync(join(root, "tmux"), { recursive: true });
  write(join(proc, "uptime"), "86400.00 170000.00\n");
  write(join(proc, "loadavg"), "0.00 0.01 0.05 1/120 4242\n");
  setCpu(proc, 1000, 100000);
  setNet(proc, 5000);
  setProc(proc, 1, "systemd", 0, "/sbin/init");
  setProc(proc, 400, "sshd", 0, "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups");
  const fake = (name: string, body: string) => {
    write(join(bin, name), `#!/bin/bash\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  fake("systemctl", `echo "systemctl $*" >> "${calls}"`);
  fake("wall", `echo "wall $*" >> "${calls}"`);
  fake("tmux", `[ "$3" = list-clients ] && cat "$2.clients" 2>/dev/null; exit 0`);
  fake("hostname", "echo devbox");
  const confFile = join(root, "idle.conf");
  const lines = { IDLE_TIMEOUT_SECONDS: TIMEOUT, EXPIRES_AT: T0 + 86400, ACTION: "poweroff", SSH_USER: USER, ...conf };
  write(confFile, `${Object.entries(lines).map(([k, v]) => `${k}=${v}`).join("\n")}\n`);
  return {
    root,
    proc,
    run,
    conf: confFile,
    state: join(root, "state", "idle.state"),
    calls,
    env: {
      PATH: `${bin}:${process.env.PATH}`,
      SPUFF_IDLE_CONF: confFile,
      SPUFF_IDLE_STATE: join(root, "state", "idle.state"),
      SPUFF_RUN_DIR: run,
      SPUFF_PROC: proc,
      SPUFF_TMUX_DIR: join(root, "tmux"),
      SPUFF_KMSG: join(root, "kmsg"),
    },
  };
}

/** A process as the watcher sees it: its executable's name (comm), real uid (status) and title (cmdline). */
function setProc(proc: string, pid: number, comm: string, uid: number, title: string): void {
  write(join(proc, String(pid), "comm"), `${comm}\n`);
  write(join(proc, String(pid), "status"), `Name:\t${comm}\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t${pid}\nUid:\t${uid}\t${uid}\t${uid}\t${uid}\n`);
  write(join(proc, String(pid), "cmdline"), `${title}\0`);
}

/** One authenticated SSH connection of the login user: OpenSSH 9.8+'s per-connection process (`ssh -N`: no "@"). */
const session = (pid = 4242, title = `sshd-session: ${USER}@pts/0`) => setProc(vm.proc, pid, "sshd-session", UID, title);

function setCpu(proc: string, busy: number, idle: number): void {
  write(join(proc, "stat"), `cpu  ${busy} 0 0 ${idle} 0 0 0 0 0 0\ncpu0 ${busy} 0 0 ${idle} 0 0 0 0 0 0\n`);
}

function setNet(proc: string, bytes: number): void {
  write(
    join(proc, "net", "dev"),
    [
      "Inter-|   Receive                                                |  Transmit",
      " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed",
      "    lo: 99999999    1000    0    0    0     0          0         0 99999999    1000    0    0    0     0       0          0",
      `  ens3: ${bytes}     100    0    0    0     0          0         0 ${bytes}     100    0    0    0     0       0          0`,
      "",
    ].join("\n"),
  );
}

/** Runs one check at time `now`; returns its log line(s) and what it asked systemctl and wall to do. */
function tick(now: number, ...args: string[]): { out: string; err: string; calls: string[]; code: number } {
  rmSync(vm.calls, { force: true });
  const r = spawnSync("bash", [join(IDLE_DIR, "spuff-idle"), ...args], { env: { ...vm.env, SPUFF_NOW: String(now) }, encoding: "utf8" });
  if (r.status === 0 && r.stderr.trim()) throw new Error(`spuff-idle wrote to stderr:\n${r.stderr}`);
  const calls = existsSync(vm.calls) ? readFileSync(vm.calls, "utf8").trim().split("\n") : [];
  return { out: r.stdout, err: r.stderr, calls, code: r.status ?? -1 };
}

const poweroff = (calls: string[]) => calls.includes("systemctl poweroff");
const walls = (calls: string[]) => calls.filter((c) => c.startsWith("wall "));

/** Runs checks every minute from `from` to `to` (inclusive); returns the minute (offset) of the first poweroff. */
function runMinutes(from: number, to: number, each?: (t: number) => void): number | undefined {
  for (let t = from; t <= to; t += 60) {
    each?.(t);
    if (poweroff(tick(t).calls)) return t;
  }
  return undefined;
}

beforeEach(() => {
  vm = makeVm();
});
afterEach(() => rmSync(vm.root, { recursive: true, force: true }));

describe("spuff-idle: idle only when every signal is quiet", () => {
  it("warns once 5 minutes before the timeout, then powers off at the timeout", () => {
    const first = tick(T0);
    expect(first.out).toContain("idle for 0s of 30m");
    expect(first.calls).toEqual([]);
    const warnAt: number[] = [];
    for (let t = T0 + 60; t < T0 + TIMEOUT; t += 60) {
      const r = tick(t);
      expect(poweroff(r.calls)).toBe(false);
      if (walls(r.calls).length) warnAt.push(t - T0);
    }
    expect(warnAt).toEqual([TIMEOUT - 300]);
    const last = tick(T0 + TIMEOUT);
    expect(poweroff(last.calls)).toBe(true);
    expect(last.out).toMatch(/idle for 30m \(timeout 30m\).*poweroff/);
    // The reason also goes to the kernel log (a local VM's console), which outlives the journal.
    expect(readFileSync(join(vm.root, "kmsg"), "utf8")).toMatch(/^spuff-idle: idle for 30m \(timeout 30m\)/);
  });

  it("stays up while booting (grace period), counting idle time from the end of it", () => {
    write(join(vm.proc, "uptime"), "120.00 200.00\n");
    expect(tick(T0).out).toContain("active: booting=120s");
    expect(poweroff(tick(T0 + TIMEOUT + 60).calls)).toBe(false);
  });

  it("a VM restored from a saved state (warm start) counts its grace from the restore (/run/spuff/started-at), not from the saved boot", () => {
    write(join(vm.proc, "uptime"), "900.00 1500.00\n"); // the warm-up's boot was 15 minutes ago
    write(join(vm.run, "started-at"), `${T0 - 30}\n`);
    expect(tick(T0).out).toContain("active: booting=30s");
    expect(poweroff(tick(T0 + TIMEOUT + 60).calls)).toBe(false);
    // A started-at in the future or garbage is ignored: the uptime counts.
    write(join(vm.run, "started-at"), "nonsense\n");
    expect(tick(T0 + TIMEOUT + 120).out).not.toContain("booting");
  });

  const signals: [string, (t: number) => void, RegExp][] = [
    ["an SSH shell (OpenSSH < 9.8: sshd: USER@pts/N)", () => setProc(vm.proc, 4242, "sshd", UID, `sshd: ${USER}@pts/0`), /ssh-connections=1/],
    ["an SSH shell (OpenSSH 9.8+: sshd-session: USER@pts/N)", () => session(), /ssh-connections=1/],
    ["a quiet SSH command (sshd-session: USER@notty)", () => session(4243, `sshd-session: ${USER}@notty`), /ssh-connections=1/],
    ["a port-forward-only SSH connection (ssh -N: sshd-session: USER)", () => session(4244, `sshd-session: ${USER}`), /ssh-connections=1/],
    ["a port-forward-only SSH connection on OpenSSH < 9.8 (sshd: USER)", () => setProc(vm.proc, 4245, "sshd", UID, `sshd: ${USER}`), /ssh-connections=1/],
    [
      "an attached tmux client",
      () => {
        write(join(vm.root, "tmux", "tmux-1000", "default"), "");
        write(join(vm.root, "tmux", "tmux-1000", "default.clients"), "/dev/pts/1: main [120x40 xterm-256color] (utf8)\n");
      },
      /tmux-clients=1/,
    ],
    ["CPU use", (t) => setCpu(vm.proc, 1000 + (t - T0) * 50, 100000 + (t - T0) * 50), /cpu=50%/],
    ["load", () => write(join(vm.proc, "loadavg"), "2.10 1.50 0.70 3/120 4242\n"), /load=2.10/],
    ["network traffic", (t) => setNet(vm.proc, 5000 + (t - T0) * 20000), /network=\d+KiB/],
    [
      "a spuff-busy job",
      () => {
        write(join(vm.run, "busy", "777"), "make test\n");
        setProc(vm.proc, 777, "spuff-busy", UID, "/bin/bash\0/usr/local/bin/spuff-busy");
      },
      /spuff-busy=1/,
    ],
  ];
  for (const [what, apply, reason] of signals) {
    it(`stays up past the timeout while there is ${what}`, () => {
      tick(T0);
      const off = runMinutes(T0 + 60, T0 + TIMEOUT + 600, apply);
      expect(off).toBeUndefined();
      apply(T0 + TIMEOUT + 660);
      expect(tick(T0 + TIMEOUT + 660).out).toMatch(reason);
    });
  }

  it("a tmux server without attached clients, an sshd listener or a stale spuff-busy marker do not count", () => {
    write(join(vm.root, "tmux", "tmux-1000", "default"), "");
    write(join(vm.run, "busy", "31337"), "gone job\n");
    tick(T0);
    expect(runMinutes(T0 + 60, T0 + TIMEOUT)).toBe(T0 + TIMEOUT);
    expect(readdirSync(join(vm.run, "busy"))).toEqual([]);
  });

  it("sshd processes that are not an authenticated connection of the login user do not count", () => {
    const sshdUid = uidOf("sshd");
    // Before authentication: the root monitor already carries the user name the client sent, the unprivileged child runs
    // as sshd's privilege-separation user (OpenSSH < 9.8, 9.8+, and 10's sshd-auth).
    setProc(vm.proc, 500, "sshd", 0, `sshd: ${USER} [priv]`);
    setProc(vm.proc, 501, "sshd", sshdUid, `sshd: ${USER} [net]`);
    setProc(vm.proc, 502, "sshd-session", 0, `sshd-session: ${USER} [priv]`);
    setProc(vm.proc, 503, "sshd-auth", sshdUid, `sshd-auth: ${USER} [net]`);
    setProc(vm.proc, 504, "sshd-session", 0, "sshd-session: unknown [priv]");
    // Another account's authenticated connection, and the login user's own non-sshd process with a session-like title.
    setProc(vm.proc, 505, "sshd-session", uidOf("git"), "sshd-session: git@notty");
    setProc(vm.proc, 506, "bash", UID, `sshd-session: ${USER}@pts/0`);
    // The monitor (root) of a real session counts once, through its user-owned child only.
    setProc(vm.proc, 507, "sshd-session", 0, `sshd-session: ${USER} [priv]`);
    session(508);
    expect(tick(T0).out).toContain("active: ssh-connections=1\n");
    rmSync(join(vm.proc, "508"), { recursive: true });
    tick(T0 + 60);
    expect(runMinutes(T0 + 120, T0 + 60 + TIMEOUT)).toBe(T0 + 60 + TIMEOUT);
  });

  it("an SSH_USER that does not exist counts no connection and says so", () => {
    rmSync(vm.root, { recursive: true, force: true });
    vm = makeVm({ SSH_USER: "nosuchuser" });
    session();
    const r = tick(T0);
    expect(r.out).toContain("SSH_USER=nosuchuser in");
    expect(r.out).not.toContain("ssh-connections");
  });

  it("counts idle time again from the last activity", () => {
    tick(T0);
    session(5000);
    tick(T0 + 600);
    rmSync(join(vm.proc, "5000"), { recursive: true });
    // Idle counts from the first check that sees nothing (T0+660), not from the last busy one.
    expect(runMinutes(T0 + 660, T0 + 660 + TIMEOUT + 60)).toBe(T0 + 660 + TIMEOUT);
  });

  it("spuff-keep holds the VM until its deadline, then idle time runs out normally", () => {
    const keep = spawnSync("bash", [join(IDLE_DIR, "spuff-keep"), "1h"], { env: { ...vm.env, SPUFF_NOW: String(T0) }, encoding: "utf8" });
    expect(keep.status).toBe(0);
    expect(keep.stdout).toContain("kept from idle poweroff until");
    tick(T0);
    expect(tick(T0 + 3000).out).toMatch(/spuff-keep=10m/);
    // The first check after the keep ran out is at T0+3600; idle time counts from there.
    expect(runMinutes(T0 + 3060, T0 + 3600 + TIMEOUT + 120)).toBe(T0 + 3600 + TIMEOUT);
  });
});

describe("spuff-idle: the hard TTL", () => {
  it("warns at 30 and 5 minutes, then powers off at the TTL even while someone works", () => {
    rmSync(vm.root, { recursive: true, force: true });
    vm = makeVm({ EXPIRES_AT: T0 + 3600 });
    session();
    const warned: number[] = [];
    let off: number | undefined;
    for (let t = T0; t <= T0 + 3700 && off === undefined; t += 60) {
      const r = tick(t);
      if (walls(r.calls).length) warned.push(T0 + 3600 - t);
      if (poweroff(r.calls)) off = t;
    }
    expect(warned).toEqual([1800, 300]);
    expect(off).toBe(T0 + 3600);
  });

  it("--set-expires moves the TTL (what `spuff extend` runs) and re-arms the warnings", () => {
    rmSync(vm.root, { recursive: true, force: true });
    vm = makeVm({ EXPIRES_AT: T0 + 600 });
    session();
    expect(walls(tick(T0).calls)).toHaveLength(1);
    const set = tick(T0 + 60, "--set-expires", String(T0 + 7200));
    expect(set.code).toBe(0);
    expect(set.out).toContain("hard TTL moved");
    expect(readFileSync(vm.conf, "utf8")).toMatch(/^EXPIRES_AT=1900007200$/m);
    expect(readFileSync(vm.conf, "utf8").match(/EXPIRES_AT=/g)).toHaveLength(1);
    expect(poweroff(tick(T0 + 660).calls)).toBe(false);
    const rewarn = tick(T0 + 7200 - 1700);
    expect(walls(rewarn.calls)).toHaveLength(1);
    const bad = tick(T0 + 60, "--set-expires", "soon");
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("needs a Unix time");
  });
});

describe("spuff-idle --status, spuff-keep and spuff-busy", () => {
  it("--status reports the signals and changes nothing", () => {
    session();
    const r = tick(T0, "--status");
    expect(r.out).toContain("active: ssh-connections=1");
    expect(r.out).toContain("expires in: 24h");
    expect(r.calls).toEqual([]);
    expect(existsSync(vm.state)).toBe(false);
  });

  it("spuff-keep rejects a bad duration and keeps the later of two deadlines", () => {
    const keep = (...a: string[]) =>
      spawnSync("bash", [join(IDLE_DIR, "spuff-keep"), ...a], { env: { ...vm.env, SPUFF_NOW: String(T0) }, encoding: "utf8" });
    const bad = keep("2x");
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('"2x" is not a duration');
    expect(keep("2h").status).toBe(0);
    expect(keep("30m").status).toBe(0);
    expect(readFileSync(join(vm.run, "keep-until"), "utf8").trim()).toBe(String(T0 + 7200));
    expect(keep().stdout).toContain("120 more minutes");
    expect(keep("off").status).toBe(0);
    expect(existsSync(join(vm.run, "keep-until"))).toBe(false);
  });

  it("spuff-busy marks the VM busy while its command runs and passes the exit status through", () => {
    const r = spawnSync(
      "bash",
      [join(IDLE_DIR, "spuff-busy"), "--", "bash", "-c", `ls "${join(vm.run, "busy")}"; cat "${join(vm.run, "busy")}"/*; exit 7`],
      { env: vm.env, encoding: "utf8" },
    );
    expect(r.status).toBe(7);
    const [pid, cmd] = r.stdout.trim().split("\n");
    expect(pid).toMatch(/^\d+$/);
    expect(cmd).toContain("bash -c");
    expect(readdirSync(join(vm.run, "busy"))).toEqual([]);
    expect(spawnSync("bash", [join(IDLE_DIR, "spuff-busy")], { env: vm.env }).status).toBe(2);
  });
});

describe("spuff-idle against real sshd connections (this machine's OpenSSH)", () => {
  let sshd: Sshd;
  let keyDir: string;
  const clients: ChildProcess[] = [];

  beforeAll(async () => {
    keyDir = mkdtempSync(join(tmpdir(), "spuff-idle-key-"));
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(keyDir, "id"), "-C", "idle-test"]);
    sshd = await startSshd({ authorizedKeys: [readFileSync(join(keyDir, "id.pub"), "utf8").trim()] });
  });
  afterAll(async () => {
    for (const c of clients) c.kill("SIGKILL");
    await sshd?.stop();
    rmSync(keyDir, { recursive: true, force: true });
  });

  /** The processes under this test's sshd (other tests' sshd run as the same user), each "pid uid comm title". */
  function sshdTree(): { pid: number; uid: number; comm: string; title: string }[] {
    const parent = new Map<number, number>();
    for (const p of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
      try {
        parent.set(Number(p), Number(readFileSync(`/proc/${p}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[1]));
      } catch {
        /* gone */
      }
    }
    const ours = new Set([sshd.pid]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const [pid, ppid] of parent) if (ours.has(ppid) && !ours.has(pid)) grew = Boolean(ours.add(pid));
    }
    ours.delete(sshd.pid);
    return [...ours].flatMap((pid) => {
      try {
        const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
        return [{ pid, uid, comm: readFileSync(`/proc/${pid}/comm`, "utf8").trim(), title: readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] }];
      } catch {
        return [];
      }
    });
  }

  /** The watcher's SSH count over the real /proc entries of this sshd's processes (linked into the fixture /proc). */
  function connections(): number {
    for (const d of readdirSync(vm.proc).filter((d) => /^\d+$/.test(d) && d !== "1" && d !== "400")) rmSync(join(vm.proc, d), { recursive: true, force: true });
    for (const p of sshdTree()) spawnSync("ln", ["-s", `/proc/${p.pid}`, join(vm.proc, String(p.pid))]);
    const out = tick(T0, "--status").out;
    return Number(/ssh-connections=(\d+)/.exec(out)?.[1] ?? 0);
  }

  async function until<T>(what: string, f: () => T | undefined): Promise<T> {
    for (const deadline = Date.now() + 15_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
      const v = f();
      if (v !== undefined) return v;
    }
    throw new Error(`timed out waiting for ${what}: ${JSON.stringify(sshdTree())}`);
  }

  const ssh = (...args: string[]) => {
    const c = spawn(
      "ssh",
      ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-i", join(keyDir, "id"), "-p", String(sshd.port), `${USER}@${sshd.host}`, ...args],
      { stdio: "ignore" },
    );
    clients.push(c);
    return c;
  };
  const ownedByUser = () => sshdTree().find((p) => p.uid === UID && /^sshd/.test(p.comm));

  it("counts an `ssh -N -L` connection, whose sshd title has no USER@, and stops when it closes", async () => {
    const c = ssh("-N", "-L", `${await freePort()}:127.0.0.1:9`);
    const proc = await until("the user's sshd process", ownedByUser);
    expect(proc.title).toMatch(new RegExp(`^sshd(-session)?: ${USER}$`));
    expect(connections()).toBe(1);
    c.kill("SIGTERM");
    await until("the connection to close", () => (ownedByUser() ? undefined : true));
    expect(connections()).toBe(0);
  });

  it("counts a quiet command (USER@notty)", async () => {
    const c = ssh("sleep", "60");
    const proc = await until("the session title", () => { const p = ownedByUser(); return p?.title.includes("@notty") ? p : undefined; });
    expect(proc.title).toMatch(new RegExp(`^sshd(-session)?: ${USER}@notty$`));
    expect(connections()).toBe(1);
    c.kill("SIGTERM");
    await until("the connection to close", () => (ownedByUser() ? undefined : true));
  });

  it("does not count a client that names the user but never authenticates (it could reconnect forever)", async () => {
    const attacker = new Client();
    attacker.on("error", () => {});
    // Offer "none" as the login user, then stall: sshd's root monitor is now titled "sshd[-session]: USER [priv]".
    attacker.connect({
      host: sshd.host,
      port: sshd.port,
      username: USER,
      readyTimeout: 60_000,
      authHandler: (left: string[] | null, _partial: boolean, next: (m: unknown) => void) => {
        if (left === null) next({ type: "none", username: USER });
      },
    } as unknown as Parameters<Client["connect"]>[0]);
    try {
      const monitor = await until("the pre-auth monitor", () => sshdTree().find((p) => p.title.includes(`${USER} [priv]`)));
      expect(monitor.uid).toBe(0);
      expect(connections()).toBe(0);
    } finally {
      attacker.end();
    }
  });
});
