import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pidAlive, StateStore } from "../../src/core/state.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { BIN, tempHome } from "../helpers/cli.js";
import { type Agent, type Sshd, startAgent, startGitServer, startSshd } from "../helpers/sshd.js";

// Plain OpenSSH (`ssh spuff-NAME`, what scp, rsync and VS Code run) against a real loopback sshd standing in for the VM,
// through the config `spuff ssh-config` generates and the guard daemon it starts on demand, all through the built CLI.
/** Resolves once the process is gone; fails after 10 s. */
async function gone(pid: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(pidAlive(pid), `process ${pid} still runs`).toBe(false);
}

function cwdOf(pid: string): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return undefined;
  }
}

describe("plain OpenSSH gets spuff's guard, never the raw agent", () => {
  const t = tempHome();
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  const guardDir = join(stateDir, "guard");
  const userConfig = join(t.home, ".ssh", "config");
  const generated = join(t.env.XDG_CONFIG_HOME as string, "spuff", "ssh_config");
  const clientKey = ed25519KeyPair("spuff-vm");
  let vm: Sshd;
  let agent: Agent;
  let decoy: Agent;
  let git: Awaited<ReturnType<typeof startGitServer>>;
  let env: NodeJS.ProcessEnv;

  const spuff = (argv: string[], extra: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [BIN, ...argv], { env: { ...env, ...extra }, cwd: t.home, encoding: "utf8", timeout: 60_000 });
  /** `ssh spuff-box CMD` with the user's OpenSSH config (which includes the generated one), as a user types it. */
  const ssh = (command: string, extra: NodeJS.ProcessEnv = {}) =>
    spawnSync("ssh", ["-F", userConfig, "-o", "BatchMode=yes", "spuff-box", command], { env: { ...env, ...extra }, cwd: t.home, encoding: "utf8", timeout: 60_000 });
  const userSshConfig = (identityAgent: string) =>
    writeFileSync(userConfig, `Include ${generated}\n\nHost spuff-*\n  IdentityAgent ${identityAgent}\n`);
  const daemonPid = () => JSON.parse(spuff(["--json", "guard", "status"]).stdout).pid as number | undefined;
  const log = () => readFileSync(join(stateDir, "agent.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  // On the VM: an SSH login that asks the forwarded agent for a signature (the servers accept the offered key).
  const loginFromVm = (user: string, port: number) =>
    `ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p ${port} ${user}@127.0.0.1 true`;

  beforeAll(async () => {
    agent = startAgent(["work-key", "other-key"]);
    decoy = startAgent(["decoy-key"]);
    vm = await startSshd({ authorizedKeys: [clientKey.public.trim(), agent.keys[0].public], extraConfig: ["AllowUsers spuff-test"] });
    git = await startGitServer([agent.keys[0].public]);
    await new StateStore(stateDir).save(
      { name: "box", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: vm.hostKey, endpoint: { host: "127.0.0.1", port: vm.port } },
      { private: clientKey.private, public: clientKey.public.trim() },
    );
    mkdirSync(join(t.env.XDG_CONFIG_HOME as string, "spuff"), { recursive: true });
    writeFileSync(join(t.env.XDG_CONFIG_HOME as string, "spuff", "config.yaml"), `ssh:\n  user: spuff-test\n  tmux: false\n  allowed_keys: [work-key]\ngit_hosts:\n  - host: githost.test\n    address: 127.0.0.1\n    host_keys: ["${git.hostKey}"]\n`);
    mkdirSync(join(t.home, ".ssh"), { recursive: true });
    // The seed case: the agent for these hosts is an IdentityAgent in the user's OpenSSH config (e.g. 1Password's);
    // SSH_AUTH_SOCK is another agent, which must not be the one guarded.
    userSshConfig(agent.socket);
    env = { ...t.env, SSH_AUTH_SOCK: decoy.socket, SPUFF_SSH_CONFIG: userConfig };
    expect(spuff(["ssh-config"]).status).toBe(0);
  });

  afterAll(async () => {
    spuff(["guard", "stop"]);
    await vm?.stop();
    await git?.stop();
    agent?.stop();
    decoy?.stop();
    t.cleanup();
  });

  it("ssh-add -l on the VM lists exactly the allowed key of the agent OpenSSH uses for the host", () => {
    const r = ssh("ssh-add -l");
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(r.stdout).toContain(agent.keys[0].fingerprint);
    expect(r.stdout).not.toContain(agent.keys[1].fingerprint);
    expect(r.stdout).not.toContain(decoy.keys[0].fingerprint);
    // OpenSSH forwards the guard's socket, which the daemon (started on demand) serves for this VM.
    const status = JSON.parse(spuff(["--json", "guard", "status"]).stdout);
    expect(status.vms).toEqual([
      expect.objectContaining({ vm: "box", socket: join(guardDir, "box.sock"), agent: { path: agent.socket, source: "IdentityAgent for spuff-box", why: `IdentityAgent for spuff-box, as OpenSSH resolves it (\`ssh -G -F ${userConfig} spuff-box\`)` } }),
    ]);
    expect(readFileSync(join(guardDir, "daemon.log"), "utf8")).toContain(`serving box at ${join(guardDir, "box.sock")}: agent ${agent.socket}`);
  });

  it("the signature log has plain OpenSSH's signatures, allowed and refused, as for spuff ssh", () => {
    const before = existsSync(join(stateDir, "agent.log")) ? log().length : 0;
    ssh(loginFromVm("git", git.port)); // git-shell refuses the command; the login's signature is what counts
    const refused = ssh(loginFromVm("spuff-test", vm.port));
    expect(refused.status).not.toBe(0);
    const entries = log().slice(before);
    expect(entries).toEqual([
      // OpenSSH binds both hops: this machine → the VM (its pinned key, the first hop) and the VM → the git server.
      expect.objectContaining({ vm: "box", user: "git", allowed: true, key: agent.keys[0].fingerprint, host: "githost.test", destination: "githost.test" }),
      // The VM's own sshd is no pinned git host.
      expect.objectContaining({ vm: "box", user: "spuff-test", allowed: false, rule: "host-not-pinned", host: null }),
    ]);
    expect(readFileSync(join(guardDir, "daemon.log"), "utf8")).toContain("refused a signature request from box");
  });

  it("the daemon outlives spuff, and a stopped or killed one is started again by the next ssh", async () => {
    const first = daemonPid();
    expect(first && pidAlive(first)).toBe(true);
    expect(spuff(["guard", "stop"]).stderr).toContain(`stopped the guard daemon (pid ${first})`);
    expect(existsSync(join(guardDir, "box.sock"))).toBe(false);
    expect(ssh("ssh-add -l").stdout).toContain(agent.keys[0].fingerprint);
    const second = daemonPid();
    expect(second).not.toBe(first);
    process.kill(second as number, "SIGKILL"); // leaves its sockets behind
    expect(ssh("ssh-add -l").stdout).toContain(agent.keys[0].fingerprint);
    const third = daemonPid();
    expect(third).not.toBe(second);
    // A daemon of another build (spuff was upgraded since it started) is replaced: its guard code is not this one's.
    const now = Date.now() / 1000;
    utimesSync(BIN, now, now);
    expect(ssh("ssh-add -l").stdout).toContain(agent.keys[0].fingerprint);
    expect(daemonPid()).not.toBe(third);
    await gone(third as number); // it was asked to stop, and does
  });

  it("three connections at once, with no daemon running: each gets the guard, and one daemon is left", async () => {
    spuff(["guard", "stop"]);
    const run = () =>
      new Promise<string>((resolve) => {
        const c = spawn("ssh", ["-F", userConfig, "-o", "BatchMode=yes", "spuff-box", "ssh-add -l"], { env, cwd: t.home });
        let out = "";
        c.stdout.on("data", (d: Buffer) => (out += d.toString()));
        c.once("close", () => resolve(out));
      });
    const outs = await Promise.all([run(), run(), run()]);
    for (const out of outs) expect(out).toContain(agent.keys[0].fingerprint);
    // A daemon started second sees the first one answer and exits (`guard serve` holds the directory's lock meanwhile).
    const daemons = () => readdirSync("/proc").filter((p) => /^\d+$/.test(p) && cwdOf(p) === guardDir);
    const deadline = Date.now() + 15_000;
    while (daemons().length > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(daemons()).toEqual([String(daemonPid())]);
  });

  it("when the guard cannot serve, plain ssh still reaches the VM with no agent at all, and doctor says why", () => {
    userSshConfig(join(t.home, "gone.sock"));
    try {
      const r = ssh('echo "sock=${SSH_AUTH_SOCK:-none}"; ssh-add -l; echo "rc=$?"');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain("sock=none");
      expect(r.stdout).toContain("rc=2"); // ssh-add: cannot contact an agent
      expect(r.stderr).toContain(`spuff: no agent forwarded to box: the SSH agent socket ${t.home}/gone.sock (from IdentityAgent for spuff-box`);
      expect(r.stderr).toContain("spuff doctor box");
      const d = spuff(["--json", "doctor", "box", "--git-host", "githost.invalid"]);
      expect(d.status).toBe(2);
      const checks = JSON.parse(d.stdout) as { check: string; ok: boolean; detail: string; hint?: string }[];
      expect(checks.find((c) => c.check === "local agent")).toMatchObject({ ok: false, detail: expect.stringContaining(`${t.home}/gone.sock (from IdentityAgent for spuff-box`) });
      expect(checks.find((c) => c.check === "guard for plain ssh")).toMatchObject({
        ok: false,
        detail: expect.stringContaining("cannot serve, so plain ssh forwards no agent: the SSH agent socket"),
        hint: expect.stringContaining("the agent is not running"),
      });
      expect(checks.find((c) => c.check === "ssh spuff-box")).toMatchObject({ ok: true, detail: "forwards no agent" });
    } finally {
      userSshConfig(agent.socket);
    }
  });

  it("doctor names the agent chosen and why, and that ssh spuff-NAME forwards the guard", () => {
    const d = spuff(["--json", "doctor", "box", "--git-host", "githost.invalid"]);
    const checks = JSON.parse(d.stdout) as { check: string; ok: boolean; detail: string }[];
    expect(checks.find((c) => c.check === "local agent")).toMatchObject({
      ok: true,
      detail: `${agent.socket} answers and holds keys; chosen from IdentityAgent for spuff-box, as OpenSSH resolves it (\`ssh -G -F ${userConfig} spuff-box\`)`,
    });
    expect(checks.find((c) => c.check === "guard for plain ssh")).toMatchObject({ ok: true, detail: expect.stringContaining(`serves ${join(guardDir, "box.sock")}, guarding ${agent.socket}`) });
    expect(checks.find((c) => c.check === "ssh spuff-box")).toMatchObject({ ok: true, detail: `forwards the guard's socket ${join(guardDir, "box.sock")}` });
  });

  it("an old generated config (ForwardAgent yes) is named by doctor as forwarding the raw agent", () => {
    const good = readFileSync(generated, "utf8");
    writeFileSync(generated, good.replace(/^Match .*\n.*\n/m, "").replace("ForwardAgent no", "ForwardAgent yes"));
    try {
      // What that config did: the VM sees every key of the agent, unfiltered (and nothing is logged).
      const raw = ssh("ssh-add -l");
      expect(raw.stdout).toContain(agent.keys[0].fingerprint);
      expect(raw.stdout).toContain(agent.keys[1].fingerprint);
      const checks = JSON.parse(spuff(["--json", "doctor", "box", "--git-host", "githost.invalid"]).stdout) as { check: string; ok: boolean; detail: string; hint: string }[];
      expect(checks.find((c) => c.check === "ssh spuff-box")).toMatchObject({ ok: false, detail: "forwards your agent without the guard (forwardagent yes)", hint: expect.stringContaining("run `spuff ssh-config`") });
    } finally {
      writeFileSync(generated, good);
    }
  });

  it("ssh.forward_agent: false: no agent channel is asked for, by spuff ssh or by plain ssh", () => {
    const cfg = join(t.env.XDG_CONFIG_HOME as string, "spuff", "config.yaml");
    const saved = readFileSync(cfg, "utf8");
    writeFileSync(cfg, saved.replace("  tmux: false\n", "  tmux: false\n  forward_agent: false\n"));
    try {
      // Seen on the server's side: sshd sets SSH_AUTH_SOCK in the session only when the client asked for agent forwarding.
      const viaSpuff = spuff(["ssh", "box", "--", 'echo "sock=${SSH_AUTH_SOCK:-none}"']);
      expect(viaSpuff.stdout).toBe("sock=none\n");
      const viaSsh = ssh('echo "sock=${SSH_AUTH_SOCK:-none}"');
      expect(viaSsh.stdout).toBe("sock=none\n");
      expect(viaSsh.stderr).toBe(""); // no agent, as configured: nothing to complain about
    } finally {
      writeFileSync(cfg, saved);
    }
    // With the default (forward_agent: true), spuff ssh does forward it.
    expect(spuff(["ssh", "box", "--", 'echo "sock=${SSH_AUTH_SOCK:-none}"']).stdout).not.toContain("sock=none");
  });

  it("the daemon stops serving a VM whose record is gone, and stops when none is left", async () => {
    ssh("true"); // the daemon runs (again)
    const pid = daemonPid();
    expect(pid && pidAlive(pid)).toBe(true);
    await new StateStore(stateDir).remove("box");
    // `spuff down` rewrites the generated config the same way, which tells the daemon to look at the records.
    expect(spuff(["ssh-config"]).status).toBe(0);
    await gone(pid as number);
    expect(existsSync(join(guardDir, "box.sock"))).toBe(false);
    expect(readFileSync(join(guardDir, "daemon.log"), "utf8")).toContain("stopped: no VM record left");
  });
});

describe("ssh-config --install / --uninstall", () => {
  const t = tempHome();
  const file = join(t.home, ".ssh", "config");
  afterAll(() => t.cleanup());
  const spuff = (argv: string[]) => spawnSync(process.execPath, [BIN, ...argv], { env: t.env, cwd: t.home, encoding: "utf8" });
  const generated = join(t.env.XDG_CONFIG_HOME as string, "spuff", "ssh_config");

  beforeAll(() => mkdirSync(join(t.home, ".ssh"), { recursive: true }));

  it("never replaces a symlinked ~/.ssh/config: leaves it untouched and prints the line to add", () => {
    const dotfiles = join(t.home, "dotfiles");
    mkdirSync(dotfiles);
    writeFileSync(join(dotfiles, "ssh_config"), "Host example\n  User me\n");
    symlinkSync(join(dotfiles, "ssh_config"), file);
    const r = spuff(["ssh-config", "--install"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`left ${file} alone: it is a symlink to ${join(dotfiles, "ssh_config")}`);
    expect(r.stdout).toContain(`\n  Include ${generated}\n`);
    expect(r.stdout).toContain(`home-manager: programs.ssh.includes = [ "${generated}" ];`);
    expect(readFileSync(file, "utf8")).toBe("Host example\n  User me\n");
    expect(existsSync(`${file}.spuff-backup`)).toBe(false);
    rmSync(file);
  });

  it("never rewrites a read-only one either", () => {
    writeFileSync(file, "Host example\n  User me\n", { mode: 0o444 });
    chmodSync(file, 0o444);
    const r = spuff(["ssh-config", "--install"]);
    expect(r.stdout).toContain(`left ${file} alone: it is read-only (mode 444)`);
    expect(readFileSync(file, "utf8")).toBe("Host example\n  User me\n");
    chmodSync(file, 0o600);
  });

  it("--uninstall takes the Include line out again", () => {
    expect(spuff(["ssh-config", "--install"]).stdout).toContain("added the Include line");
    expect(readFileSync(file, "utf8")).toBe(`Include ${generated}\n\nHost example\n  User me\n`);
    expect(spuff(["ssh-config", "--uninstall"]).stdout).toContain(`removed the Include line from ${file}`);
    expect(readFileSync(file, "utf8")).toBe("Host example\n  User me\n");
    expect(spuff(["ssh-config", "--uninstall"]).stdout).toContain("does not include it");
  });
});
