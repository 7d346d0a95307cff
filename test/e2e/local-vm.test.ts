import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { builtImageDir } from "../../providers/local/image.js";
import { BIN, type CliResult, runCli, spawnCli, tempHome, writeUserConfig } from "../helpers/cli.js";
import { one } from "../helpers/json-shapes.js";
import { type Agent, freePort, startAgent, startGitServer } from "../helpers/sshd.js";

// The end-to-end proof on a real VM (Debian 13, the default image, built by test/setup.d/50-local-image.sh): QEMU (TCG
// here), the rendered cloud-init, pinned host keys both ways, a private git clone through the guarded, forwarded agent
// from a git server on this machine's loopback, the idle watcher, and a clean `down`; and the workspace volume at ~/work
// (docs/workspaces.md) across `down` and `up` (kept, its clone not repeated) and `down --purge` (the next `up` is empty).
const cacheDir = process.env.SPUFF_CACHE_DIR ?? join(process.env.HOME ?? "/root", ".cache", "spuff");
const imageReady = existsSync(join(builtImageDir(cacheDir, "debian-13"), "disk.qcow2"));

describe.skipIf(!imageReady || !existsSync(BIN))("local VM end to end", { timeout: 15 * 60_000 }, () => {
  const t = tempHome();
  let agent: Agent;
  let git: Awaited<ReturnType<typeof startGitServer>>;
  let env: NodeJS.ProcessEnv;
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  const spuff = (...argv: string[]) => runCli(argv, { env, cwd: t.home });

  beforeAll(async () => {
    agent = startAgent(["allowed-key", "hidden-key"]);
    git = await startGitServer([agent.keys[0].public]);
    const config = {
      provider: "local",
      // A cold boot: this is the proof of the boot path (test/e2e/warm.test.ts restores saved states).
      local: { cpus: 2, memory: "1G", disk: "4G", network: "none", warm: false, guest_forwards: [`10.0.2.100:22=127.0.0.1:${git.port}`] },
      ssh: { allowed_keys: [agent.keys[0].fingerprint] },
      git_hosts: [{ host: "githost.test", address: "10.0.2.100", port: 22, host_keys: [git.hostKey] }],
      repositories: [`git@githost.test:${git.path}`],
    };
    writeUserConfig(t.env, stringify(config));
    env = { ...t.env, SPUFF_CACHE_DIR: cacheDir, SSH_AUTH_SOCK: agent.socket };
  });

  afterAll(async () => {
    // Whatever happened, leave no VM behind: down by name, then kill any QEMU whose pidfile is under this state dir.
    await runCli(["down", "e2e", "--purge", "--yes"], { env, cwd: t.home }).catch(() => {});
    spawnSync("sh", ["-c", `for f in ${stateDir}/local/*/qemu.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")"; done`]);
    agent?.stop();
    await git?.stop();
    t.cleanup();
  });

  it("two `spuff up e2e` at once: one boots the VM and waits for cloud-init (streaming it with --verbose), the other fails before booting anything", async () => {
    // Both through the built CLI, started together: exactly one gets the name.
    const runs = [spawnCli(["--verbose", "up", "e2e"], env, t.home), spawnCli(["--verbose", "up", "e2e"], env, t.home)];
    const done: CliResult[] = await Promise.all(runs.map(async (run) => ({ code: (await run.exit) ?? -1, stdout: run.stdout(), stderr: run.stderr() })));
    const [r, lost] = done[0].code === 0 ? done : [done[1], done[0]];
    expect(lost.code, lost.stderr).toBe(1);
    expect(lost.stderr).toMatch(/error: a VM named "e2e" is being created right now \(by spuff process \d+\)/);
    expect(lost.stderr).toContain("hint: wait for it, then `spuff ssh e2e`");
    expect(lost.stderr).not.toContain("• boot");
    expect(lost.stderr).not.toContain("rolling back");
    expect(r.stderr).toContain("✓ wait SSH");
    expect(r.stderr).toMatch(/^ {2}cloud-init: Cloud-init v\. \S+ running '(init|modules:config|modules:final)'/m);
    expect(r.stderr).toContain("✓ cloud-init");
    expect(r.stderr).toContain("✓ rotate host key");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("e2e is ready");
  });

  // The host key in the seed (what the VM's cloud-init read, and what any root process on it can still read from the
  // attached seed ISO) is no longer the VM's key: spuff replaced it over the first pinned connection.
  const bare = (line: string) => line.trim().split(" ").slice(0, 2).join(" ");
  const seedHostKey = () => {
    const ud = execFileSync("isoinfo", ["-R", "-i", join(stateDir, "local", "e2e", "seed.iso"), "-x", "/user-data"], { encoding: "utf8" });
    const keys = parse(ud).ssh_keys as { ed25519_private: string; ed25519_public: string };
    return { public: bare(keys.ed25519_public), private: keys.ed25519_private };
  };
  const record = () => JSON.parse(execFileSync("cat", [join(stateDir, "vms", "e2e", "vm.json")], { encoding: "utf8" }));

  it("the VM presents a new host key, not the one in its seed; it alone is pinned, and plain OpenSSH connects strictly", async () => {
    const rec = record();
    const scan = execFileSync("ssh-keyscan", ["-T", "20", "-t", "ed25519", "-p", String(rec.endpoint.port), "127.0.0.1"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    const presented = scan.trim().split(" ").slice(1, 3).join(" ");
    expect(presented).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI/);
    expect(presented).not.toBe(seedHostKey().public);
    expect(rec.hostKey).toBe(presented);
    expect(rec.nextHostKey).toBeUndefined();
    expect(execFileSync("cat", [join(stateDir, "known_hosts")], { encoding: "utf8" })).toBe(`spuff-e2e ${presented}\n`);
    const sshConfig = join(t.env.XDG_CONFIG_HOME as string, "spuff", "ssh_config");
    expect(execFileSync("cat", [sshConfig], { encoding: "utf8" })).toContain("StrictHostKeyChecking yes");
    const plain = spawnSync("ssh", ["-F", sshConfig, "-o", "BatchMode=yes", "spuff-e2e", "echo", "in"], { encoding: "utf8", env: { PATH: process.env.PATH, HOME: t.home } });
    // Nothing from OpenSSH (no host key warning); the guard's `Match exec` notes that there is no agent to forward.
    expect(plain.stderr.split("\n").filter((l) => l && !l.startsWith("spuff: "))).toEqual([]);
    expect(plain.stdout).toBe("in\n");
    expect(plain.status).toBe(0);
    const viaSpuff = await spuff("ssh", "e2e", "--no-agent", "--", "echo", "in");
    expect(viaSpuff.stdout).toBe("in\n");
    expect(viaSpuff.code).toBe(0);
  });

  it("no file on the VM holds the host private key from the seed; only the seed ISO itself still does", { timeout: 5 * 60_000 }, async () => {
    // The key's base64 lines go on stdin, not the command line (sudo logs command lines to the journal). The first
    // line is the same in every unencrypted OpenSSH key (format, cipher and KDF names) and the last one is short: the
    // lines in between are this key's own.
    const lines = seedHostKey().private.split("\n").filter((l) => l && !l.startsWith("-----")).slice(1, -1);
    expect(lines.length).toBeGreaterThanOrEqual(3);
    const grep = await runCli(["ssh", "e2e", "--no-agent", "--", "sudo grep -rlaF -f /dev/stdin /etc /var /home /root /run /tmp /usr/local /boot 2>/dev/null; echo status=$?"], {
      env,
      cwd: t.home,
      stdin: `${lines.join("\n")}\n`,
    });
    expect(grep.stdout).toBe("status=1\n"); // grep: 1 = no file matched
    const files = await spuff("ssh", "e2e", "--no-agent", "--", "sudo", "sh", "-c", "'ls /var/lib/cloud/instance/; ls /etc/ssh | grep ssh_host_'");
    expect(files.stdout).not.toMatch(/^(user-data\.txt|user-data\.txt\.i|cloud-config\.txt|obj\.pkl)$/m);
    expect(files.stdout).toMatch(/^sem$/m);
    expect(files.stdout.split("\n").filter((f) => f.startsWith("ssh_host_"))).toEqual(["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]);
    // What cannot be removed from inside the VM: the datasource (here the seed ISO; on a cloud, its metadata service).
    const seed = await runCli(["ssh", "e2e", "--no-agent", "--", "sudo sh -c 'mount -o ro /dev/sr0 /mnt && grep -c -F -f /dev/stdin /mnt/user-data; umount /mnt'"], { env, cwd: t.home, stdin: `${lines[0]}\n` });
    expect(seed.stdout).toBe("1\n");
  });

  it("cloud-init finished without errors", async () => {
    const r = await spuff("ssh", "e2e", "--", "cloud-init", "status", "--long");
    expect(r.stdout).toContain("status: done");
    expect(r.code).toBe(0);
  });

  it("OpenSSH itself accepts the VM with strict checking against the pinned key (given on the command line, no generated config)", async () => {
    const rec = JSON.parse(execFileSync("cat", [join(stateDir, "vms", "e2e", "vm.json")], { encoding: "utf8" }));
    const r = spawnSync("ssh", [
      "-F", "/dev/null",
      "-o", "BatchMode=yes",
      "-o", "StrictHostKeyChecking=yes",
      "-o", `UserKnownHostsFile=${join(stateDir, "known_hosts")}`,
      "-o", "HostKeyAlias=spuff-e2e",
      "-o", "IdentitiesOnly=yes",
      "-i", join(stateDir, "vms", "e2e", "id_ed25519"),
      "-p", String(rec.endpoint.port),
      `${rec.user}@127.0.0.1`,
      "ls /etc/ssh | grep -c '^ssh_host_.*_key$'",
    ], { encoding: "utf8", env: { PATH: process.env.PATH } });
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("1"); // only one host key exists: the pinned ed25519 one that OpenSSH just accepted
    expect(r.status).toBe(0);
  });

  it("the VM sees only the allowed key of the forwarded agent", async () => {
    const r = await spuff("ssh", "e2e", "--", "ssh-add", "-l");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(agent.keys[0].fingerprint);
    expect(r.stdout).not.toContain(agent.keys[1].fingerprint);
  });

  it("git clone of a private repository works through the forwarded agent, with the git host pinned", async () => {
    const r = await spuff("ssh", "e2e", "--", "git", "clone", "-q", `git@githost.test:${git.path}`, "private", "&&", "cat", "private/README");
    expect(r.stderr).not.toContain("refused a signature");
    expect(r.stdout, r.stderr).toBe("private\n");
    expect(r.code).toBe(0);
    const log = execFileSync("cat", [join(stateDir, "agent.log")], { encoding: "utf8" }).trim().split("\n").map((l) => JSON.parse(l));
    expect(log.at(-1)).toMatchObject({ vm: "e2e", key: agent.keys[0].fingerprint, user: "git", allowed: true });
  });

  it("the first login shell clones the configured repository through the forwarded agent (spuff-first-login)", async () => {
    const name = git.path.replace(/\.git$/, "");
    const r = await spuff("ssh", "e2e", "--", "bash", "-lc", `'cat ~/work/${name}/README'`);
    expect(r.stderr).toContain(`spuff: cloning git@githost.test:${git.path} into ~/work/${name}`);
    expect(r.stdout, r.stderr).toBe("private\n");
    expect(r.code).toBe(0);
  });

  const repoName = () => git.path.replace(/\.git$/, "");
  /** This machine's workspaces (`spuff workspace ls --json`, the shape docs/json.md gives). */
  const workspaceList = async () => one("workspace-ls", (await spuff("--json", "workspace", "ls")).stdout) as { id: string; name: string; status: string; attachedTo: string | null; sizeGiB: number }[];
  let workspaceId = "";

  it("~/work is the workspace volume: ext4 on the virtio disk with its serial, owned by the login user; the VM's own disk is vda", async () => {
    const [ws] = await workspaceList();
    expect(ws).toMatchObject({ name: "e2e", status: "attached", attachedTo: "e2e", sizeGiB: 10 });
    workspaceId = ws.id;
    const r = await spuff("ssh", "e2e", "--", "findmnt", "-n", "-o", "SOURCE,FSTYPE", "/", "&&", "findmnt", "-n", "-o", "SOURCE,FSTYPE", "/home/dev/work", "&&", "readlink", "-f", `/dev/disk/by-id/virtio-spuff-ws-${ws.id}`, "&&", "stat", "-c", "%U", "/home/dev/work", "&&", "grep", "-c", "nofail", "/etc/fstab");
    expect(r.stdout, r.stderr).toBe("/dev/vda ext4\n/dev/vdb ext4\n/dev/vdb\ndev\n1\n");
    // Work to find again after `down` and `up`: a file, and an uncommitted one in the clone.
    const w = await spuff("ssh", "e2e", "--", "echo", "kept", ">", "~/work/marker", "&&", "echo", "wip", ">", `~/work/${repoName()}/wip.txt`, "&&", "sync");
    expect(w.code, w.stderr).toBe(0);
  });

  it("the guard refuses signatures for anything but git logins", async () => {
    // The git server would accept the same key for user spuff-test: the guard must not sign that login.
    const r = await spuff("ssh", "e2e", "--", "ssh", "-o", "BatchMode=yes", "spuff-test@githost.test", "true");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("refused a signature request from e2e");
    expect(r.stderr).toContain('user "spuff-test" is not "git"');
  });

  it("no private key is on the VM (only its own host key)", async () => {
    const r = await spuff("ssh", "e2e", "--", "sudo", "grep", "-rlI", "PRIVATE KEY", "/home", "/root", "/etc", "/var/lib/cloud", "2>/dev/null", "||", "true");
    const files = r.stdout.trim().split("\n").filter(Boolean);
    // cloud-init's copies of user-data (which held the first host key) are gone since the rotation.
    expect(files).toEqual(["/etc/ssh/ssh_host_ed25519_key"]);
  });

  it("with --no-agent the same clone fails, with spuff's explanation", async () => {
    const r = await spuff("ssh", "e2e", "--no-agent", "--", "git", "clone", "-q", `git@githost.test:${git.path}`, "again");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("Permission denied (publickey)");
    expect(r.stderr).toContain("no SSH agent was forwarded (--no-agent)");
  });

  it("spuff extend moves the hard TTL on the VM and in its label", async () => {
    const before = JSON.parse((await spuff("--json", "status", "e2e")).stdout).expiresAt;
    const r = await spuff("--json", "extend", "e2e", "2h");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const { expiresAt } = one("extend", r.stdout) as { expiresAt: string }; // the shape docs/json.md gives
    expect(new Date(expiresAt).getTime() - new Date(before).getTime()).toBe(2 * 3600_000);
    const conf = await spuff("ssh", "e2e", "--", "grep", "^EXPIRES_AT=", "/etc/spuff/idle.conf");
    expect(conf.stdout.trim()).toBe(`EXPIRES_AT=${new Date(expiresAt).getTime() / 1000}`);
    expect(JSON.parse((await spuff("--json", "status", "e2e")).stdout).expiresAt).toBe(expiresAt);
  });

  it("a VM whose QEMU is killed (host crash) survives spuff reap; spuff start boots it with its disk and pinned host key", { timeout: 8 * 60_000 }, async () => {
    const write = await spuff("ssh", "e2e", "--", "echo", "written-before-the-crash", ">", "crash-marker", "&&", "sync");
    expect(write.code, write.stderr).toBe(0);
    const pid = Number(execFileSync("cat", [join(stateDir, "local", "e2e", "qemu.pid")], { encoding: "utf8" }).trim());
    process.kill(pid, "SIGKILL");
    while (spawnSync("kill", ["-0", String(pid)]).status === 0) await new Promise((r) => setTimeout(r, 100));
    const [vm] = JSON.parse((await spuff("--json", "ls")).stdout);
    expect(vm).toMatchObject({ name: "e2e", status: "stopped", stopReason: "host-restarted", reap: null, mine: true });
    const ls = await spuff("ls");
    expect(ls.stdout).toMatch(/^e2e\s+stopped \(host restarted\)\s+local/m);
    expect(ls.stderr).toContain("e2e is stopped, its disk kept: `spuff start e2e` boots it again");
    const reap = await spuff("reap");
    expect(reap).toMatchObject({ code: 0, stdout: "nothing to reap\n" });
    expect(existsSync(join(stateDir, "local", "e2e", "disk.qcow2"))).toBe(true);
    const start = await spuff("start", "e2e");
    expect(start.code, start.stderr).toBe(0);
    expect(start.stderr).toContain("✓ wait SSH");
    expect(start.stdout).toContain("e2e is running again (127.0.0.1:");
    // spuff ssh checks the host key pinned before the first boot: the same VM, its file still there.
    const read = await spuff("ssh", "e2e", "--", "cat", "crash-marker", "~/work/marker", "&&", "findmnt", "-n", "-o", "SOURCE", "/home/dev/work");
    expect(read.stdout, read.stderr).toBe("written-before-the-crash\nkept\n/dev/vdb\n");
  });

  it("the VM runs Debian 13 with OpenSSH's split sshd, whose session titles the idle watcher does not depend on", async () => {
    const r = await spuff("ssh", "e2e", "--", "cat", "/etc/debian_version", "&&", "ssh", "-V", "2>&1", "&&", "systemctl", "is-active", "ssh", "&&", "ps", "-o", "comm=,args=", "-u", "dev");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^13\./);
    expect(r.stdout).toMatch(/OpenSSH_(9\.[89]|[1-9]\d)/);
    expect(r.stdout).toMatch(/^active$/m);
    // This very command is a quiet session (no tty): the title Debian 12's watcher rule (^sshd: USER@) missed.
    expect(r.stdout).toMatch(/^sshd-session +sshd-session: dev@notty$/m);
    // tmux (3.5 on Debian 13) reads spuff's ~/.tmux.conf: panes use the stable agent link.
    const tmux = await spuff("ssh", "e2e", "--", "tmux", "new-session", "-d", "-s", "probe", "&&", "tmux", "show-environment", "-g", "SSH_AUTH_SOCK", ";", "tmux", "kill-server");
    expect(tmux.stdout, tmux.stderr).toBe("SSH_AUTH_SOCK=/home/dev/.ssh/agent.sock\n");
  });

  it("the idle watcher runs every minute and sees a quiet spuff ssh command", async () => {
    const r = await spuff("ssh", "e2e", "--", "sudo", "systemctl", "is-active", "spuff-idle.timer", "&&", "spuff-idle", "--status");
    expect(r.stdout).toMatch(/^active\n/);
    expect(r.stdout).toContain("active: ssh-connections=1");
    expect(r.code).toBe(0);
  });

  // The rest runs with a 2-minute idle timeout (what `idle.timeout: 2m` renders), set on the running VM: a check sees
  // a quiet VM at most 60 s after it became quiet, so it powers off within 3 minutes; holding it 190 s proves a signal.
  const HOLD_MS = 190_000;
  const journal = async (since?: number, until?: number) => {
    const window = [...(since ? ["--since", `@${since}`] : []), ...(until ? ["--until", `@${until}`] : [])];
    // Direct: through the guard daemon, the read would leave a warm connection behind, a login the watcher counts.
    const r = await spuff("ssh", "e2e", "--direct", "--", "sudo", "journalctl", "-u", "spuff-idle", "--no-pager", "-o", "cat", ...window);
    if (r.code !== 0) {
      const console = join(stateDir, "local", "e2e", "console.log");
      const tail = existsSync(console) ? execFileSync("tail", ["-n", "30", console], { encoding: "utf8" }) : "(no console log)";
      throw new Error(`reading the journal failed (${r.code}): ${r.stderr}\n--- console.log tail:\n${tail}`);
    }
    return r.stdout;
  };
  /** The first line a TCP service on this machine's port sends, retried until the port answers. */
  const banner = async (port: number): Promise<string> => {
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 500))) {
      const line = await new Promise<string>((resolve) => {
        const sock = createConnection({ host: "127.0.0.1", port });
        let got = "";
        sock.setTimeout(5000, () => sock.destroy());
        sock.on("data", (d) => {
          got += d.toString();
          if (got.includes("\n")) sock.destroy();
        });
        sock.on("error", () => {});
        sock.on("close", () => resolve(got.split("\r\n")[0]));
      });
      if (line) return line;
    }
    return "";
  };
  const vmStatus = async () => JSON.parse((await spuff("--json", "ls")).stdout)[0]?.status;

  it("an ssh -N connection through the generated ssh-config (plain OpenSSH) keeps it running past the timeout", { timeout: 6 * 60_000 }, async () => {
    // Only the tunnel may count: the guard daemon's warm connection (from earlier `spuff ssh -- …`, kept for ssh.persist)
    // is a login of its own, so the daemon goes, and the command below connects directly and starts none.
    expect((await spuff("guard", "stop")).code).toBe(0);
    // No boot grace either: a VM that booted quickly would otherwise still be in it when the window starts.
    const set = await spuff("ssh", "e2e", "--direct", "--", "sudo", "sh", "-c", `'sed -i s/^IDLE_TIMEOUT_SECONDS=.*/IDLE_TIMEOUT_SECONDS=120/ /etc/spuff/idle.conf && echo GRACE_SECONDS=0 >> /etc/spuff/idle.conf'`);
    expect(set.code).toBe(0);
    const cfg = await spuff("--json", "ssh-config");
    expect(cfg.code).toBe(0);
    const { path } = JSON.parse(cfg.stdout);
    // Only a port forward, no session channel: sshd titles this connection "sshd-session: dev", without "@".
    const port = await freePort();
    const tunnel = spawn("ssh", ["-F", path, "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-N", "-L", `127.0.0.1:${port}:127.0.0.1:22`, "spuff-e2e"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let tunnelErr = "";
    tunnel.stderr.on("data", (d: Buffer) => (tunnelErr += d.toString()));
    let since = 0;
    try {
      // Up once the VM's sshd greets us through the forward (that greeting's connection never authenticates).
      expect(await banner(port), tunnelErr).toMatch(/^SSH-2\.0-OpenSSH_/);
      since = Math.floor(Date.now() / 1000) + 1;
      await new Promise((r) => setTimeout(r, HOLD_MS));
      expect(tunnel.exitCode, tunnelErr).toBeNull();
      expect(await vmStatus()).toBe("running");
    } finally {
      tunnel.kill("SIGTERM");
    }
    const closed = Math.floor(Date.now() / 1000) - 1;
    // Every check while nothing but the tunnel was connected counted it; none found the VM idle.
    const during = (await journal(since, closed)).split("\n").filter((l) => l.startsWith("spuff-idle: "));
    expect(during.length, during.join("\n")).toBeGreaterThanOrEqual(3);
    for (const line of during) expect(line).toMatch(/^spuff-idle: active: ssh-connections=1( |$)/);
  });

  it("does not power off while a spuff-busy job runs with nobody connected", { timeout: 6 * 60_000 }, async () => {
    const start = await spuff("ssh", "e2e", "--direct", "--", "setsid", "-f", "spuff-busy", "--", "sleep", String(HOLD_MS / 1000 + 10), ">/dev/null", "2>&1", "</dev/null");
    expect(start.code).toBe(0);
    await new Promise((r) => setTimeout(r, HOLD_MS));
    // Still up with no session past the timeout; the watcher said why.
    const log = await journal();
    expect(log).toMatch(/active: .*spuff-busy=1/);
    expect(log).not.toMatch(/poweroff$/m);
  });

  it("powers off once idle; spuff reap keeps the stopped local VM (it costs nothing) and its workspace; spuff down removes the VM and keeps the workspace", { timeout: 8 * 60_000 }, async () => {
    // Nothing of spuff's may stay connected: a warm connection (ssh.persist) is a login the watcher rightly counts.
    expect((await spuff("guard", "stop")).code).toBe(0);
    const deadline = Date.now() + 6 * 60_000;
    let vm: { status?: string; stopReason?: string; reap?: string | null } = {};
    while (Date.now() < deadline) {
      vm = JSON.parse((await spuff("--json", "ls")).stdout)[0] ?? {};
      if (vm.status === "stopped") break;
      await new Promise((r) => setTimeout(r, 10_000));
    }
    expect(vm).toMatchObject({ status: "stopped", stopReason: "idle", reap: null });
    // The watcher wrote its reason to the console before powering off.
    expect(execFileSync("cat", [join(stateDir, "local", "e2e", "console.log")], { encoding: "utf8" })).toMatch(/spuff-idle: idle for \d+m\d*s? \(timeout 2m\)/);
    expect((await spuff("ls")).stdout).toMatch(/^e2e\s+stopped \(idle\)\s+local/m);
    const reap = await spuff("reap");
    expect(reap).toMatchObject({ code: 0, stdout: "nothing to reap\n" });
    expect(existsSync(join(stateDir, "local", "e2e", "disk.qcow2"))).toBe(true);
    expect(await workspaceList()).toMatchObject([{ id: workspaceId, status: "attached", attachedTo: "e2e" }]);
    const r = await spuff("down", "e2e", "--yes");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("destroyed e2e (local)");
    expect(r.stdout).toContain(`kept the workspace volume ${workspaceId} (10 GiB, €0.00/month): \`spuff up e2e\` brings ~/work back`);
    expect(await workspaceList()).toMatchObject([{ id: workspaceId, status: "kept", attachedTo: null }]);
    expect(existsSync(join(stateDir, "local-workspaces", workspaceId, "disk.qcow2"))).toBe(true);
    expect(existsSync(join(stateDir, "local", "e2e"))).toBe(false);
    expect(existsSync(join(stateDir, "vms", "e2e"))).toBe(false);
    expect(spawnSync("pgrep", ["-f", `${stateDir}/local/e2e`]).status).toBe(1);
    const ls = await spuff("--json", "ls");
    expect(JSON.parse(ls.stdout)).toEqual([]);
    expect(readdirSync(join(stateDir, "local"))).toEqual([]);
  });

  it("spuff up e2e again attaches the kept workspace: the work is there and the repository is not cloned again", { timeout: 6 * 60_000 }, async () => {
    const up = await spuff("up", "e2e");
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain(`attaching the kept workspace volume ${workspaceId} (10 GiB): ~/work is as it was`);
    // A login shell on the new VM runs spuff-first-login again (its marker was on the old VM's disk): the clone is
    // on the volume, so it is left as it is.
    const r = await spuff("ssh", "e2e", "--", "bash", "-lc", `'cat ~/work/marker ~/work/${repoName()}/wip.txt ~/work/${repoName()}/README'`);
    expect(r.stderr).not.toContain("cloning");
    expect(r.stdout, r.stderr).toBe("kept\nwip\nprivate\n");
    expect(r.code).toBe(0);
    expect(await workspaceList()).toMatchObject([{ id: workspaceId, status: "attached", attachedTo: "e2e" }]);
  });

  it("spuff down e2e --purge deletes the workspace too; the next up starts with an empty ~/work", { timeout: 6 * 60_000 }, async () => {
    const down = await spuff("down", "e2e", "--purge", "--yes");
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toContain(`deleted the workspace volume ${workspaceId} of e2e`);
    expect(await workspaceList()).toEqual([]);
    expect(readdirSync(join(stateDir, "local-workspaces"))).toEqual([]);
    const up = await spuff("up", "e2e");
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).not.toContain("attaching the kept workspace");
    const [fresh] = await workspaceList();
    expect(fresh.id).not.toBe(workspaceId);
    // No login shell, so no first-login clone: only what mkfs made.
    const r = await spuff("ssh", "e2e", "--", "ls", "-A", "/home/dev/work");
    expect(r.stdout, r.stderr).toBe("lost+found\n");
    const gone = await spuff("down", "e2e", "--purge", "--yes");
    expect(gone.code, gone.stderr).toBe(0);
    expect(await workspaceList()).toEqual([]);
    expect(readdirSync(join(stateDir, "local"))).toEqual([]);
  });

  it("spuff down of a removed VM says it no longer exists", async () => {
    const r = await spuff("down", "e2e", "--yes");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no VM named "e2e"');
  });
});
