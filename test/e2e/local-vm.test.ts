import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { builtImageDir } from "../../providers/local/image.js";
import { runCli, tempHome } from "../helpers/cli.js";
import { type Agent, freePort, startAgent, startGitServer } from "../helpers/sshd.js";

// The end-to-end proof on a real VM (Debian 13, the default image, built by test/setup.d/50-local-image.sh): QEMU (TCG
// here), the rendered cloud-init, pinned host keys both ways, a private git clone through the guarded, forwarded agent
// from a git server on this machine's loopback, the idle watcher, and a clean `down`.
const cacheDir = process.env.SPUFF_CACHE_DIR ?? join(process.env.HOME ?? "/root", ".cache", "spuff");
const imageReady = existsSync(join(builtImageDir(cacheDir, "debian-13"), "disk.qcow2"));

describe.skipIf(!imageReady)("local VM end to end", { timeout: 15 * 60_000 }, () => {
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
      local: { cpus: 2, memory: "1G", disk: "4G", guest_forwards: [`10.0.2.100:22=127.0.0.1:${git.port}`] },
      ssh: { allowed_keys: [agent.keys[0].fingerprint] },
      git_hosts: [{ host: "githost.test", address: "10.0.2.100", port: 22, host_keys: [git.hostKey] }],
      repositories: [`git@githost.test:${git.path}`],
    };
    writeFileSync(join(t.home, "spuff.yaml"), stringify(config));
    env = { ...t.env, SPUFF_CACHE_DIR: cacheDir, SSH_AUTH_SOCK: agent.socket };
  });

  afterAll(async () => {
    // Whatever happened, leave no VM behind: down by name, then kill any QEMU whose pidfile is under this state dir.
    await runCli(["down", "e2e", "--yes"], { env, cwd: t.home }).catch(() => {});
    spawnSync("sh", ["-c", `for f in ${stateDir}/local/*/qemu.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")"; done`]);
    agent?.stop();
    await git?.stop();
    t.cleanup();
  });

  it("spuff up boots the VM and waits for cloud-init (streaming its output with --verbose)", async () => {
    const r = await spuff("--verbose", "up", "e2e");
    expect(r.stderr).toContain("✓ wait SSH");
    expect(r.stderr).toMatch(/^ {2}cloud-init: Cloud-init v\. \S+ running '(init|modules:config|modules:final)'/m);
    expect(r.stderr).toContain("✓ cloud-init");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("e2e is ready");
  });

  it("cloud-init finished without errors", async () => {
    const r = await spuff("ssh", "e2e", "--", "cloud-init", "status", "--long");
    expect(r.stdout).toContain("status: done");
    expect(r.code).toBe(0);
  });

  it("OpenSSH itself accepts the VM with strict checking against the key pinned before boot", async () => {
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
    const r = await spuff("ssh", "e2e", "--", "bash", "-lc", `'cat ~/src/${name}/README'`);
    expect(r.stderr).toContain(`spuff: cloning git@githost.test:${git.path} into ~/src/${name}`);
    expect(r.stdout, r.stderr).toBe("private\n");
    expect(r.code).toBe(0);
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
    expect(files.filter((f) => !f.startsWith("/etc/ssh/ssh_host_ed25519_key") && !f.startsWith("/var/lib/cloud/instances/") && !f.includes("/var/lib/cloud/instance/"))).toEqual([]);
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
    const { expiresAt } = JSON.parse(r.stdout);
    expect(new Date(expiresAt).getTime() - new Date(before).getTime()).toBe(2 * 3600_000);
    const conf = await spuff("ssh", "e2e", "--", "grep", "^EXPIRES_AT=", "/etc/spuff/idle.conf");
    expect(conf.stdout.trim()).toBe(`EXPIRES_AT=${new Date(expiresAt).getTime() / 1000}`);
    expect(JSON.parse((await spuff("--json", "status", "e2e")).stdout).expiresAt).toBe(expiresAt);
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
    const r = await spuff("ssh", "e2e", "--", "sudo", "journalctl", "-u", "spuff-idle", "--no-pager", "-o", "cat", ...window);
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
    // No boot grace either: a VM that booted quickly would otherwise still be in it when the window starts.
    const set = await spuff("ssh", "e2e", "--", "sudo", "sh", "-c", `'sed -i s/^IDLE_TIMEOUT_SECONDS=.*/IDLE_TIMEOUT_SECONDS=120/ /etc/spuff/idle.conf && echo GRACE_SECONDS=0 >> /etc/spuff/idle.conf'`);
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
    const start = await spuff("ssh", "e2e", "--", "setsid", "-f", "spuff-busy", "--", "sleep", String(HOLD_MS / 1000 + 10), ">/dev/null", "2>&1", "</dev/null");
    expect(start.code).toBe(0);
    await new Promise((r) => setTimeout(r, HOLD_MS));
    // Still up with no session past the timeout; the watcher said why.
    const log = await journal();
    expect(log).toMatch(/active: .*spuff-busy=1/);
    expect(log).not.toMatch(/poweroff$/m);
  });

  it("powers off once idle, then spuff reap removes it: no process, overlay or state is left", { timeout: 8 * 60_000 }, async () => {
    const deadline = Date.now() + 6 * 60_000;
    let status = "";
    while (Date.now() < deadline) {
      status = JSON.parse((await spuff("--json", "ls")).stdout)[0]?.status;
      if (status === "stopped") break;
      await new Promise((r) => setTimeout(r, 10_000));
    }
    expect(status).toBe("stopped");
    // The watcher wrote its reason to the console before powering off.
    expect(execFileSync("cat", [join(stateDir, "local", "e2e", "console.log")], { encoding: "utf8" })).toMatch(/spuff-idle: idle for \d+m\d*s? \(timeout 2m\)/);
    const r = await spuff("reap");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/e2e\s+local\s+stopped\s+destroy/);
    expect(existsSync(join(stateDir, "local", "e2e"))).toBe(false);
    expect(existsSync(join(stateDir, "vms", "e2e"))).toBe(false);
    expect(spawnSync("pgrep", ["-f", `${stateDir}/local/e2e`]).status).toBe(1);
    const ls = await spuff("--json", "ls");
    expect(JSON.parse(ls.stdout)).toEqual([]);
    expect(readdirSync(join(stateDir, "local"))).toEqual([]);
  });

  it("spuff down of a reaped VM says it no longer exists", async () => {
    const r = await spuff("down", "e2e", "--yes");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no VM named "e2e"');
  });
});
