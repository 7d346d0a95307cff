import { execFileSync, spawn } from "node:child_process";
import { appendFileSync, chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StateStore } from "../../src/core/state.js";
import { type AgentPolicy, GuardedAgent } from "../../src/ssh/agent.js";
import { gitHostPins } from "../../src/ssh/agent-hosts.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { runCli, tempHome, writeUserConfig } from "../helpers/cli.js";
import { type Agent, type Sshd, startAgent, startGitServer, startSshd } from "../helpers/sshd.js";

const fingerprintOfFile = (pub: string) => execFileSync("ssh-keygen", ["-lf", pub], { encoding: "utf8" }).split(" ")[1];

/** Runs a program to its end without blocking this process (the guard under test may live in it). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

// Signatures bound to their destination, with real parts: a loopback sshd as the VM (user spuff-test, OpenSSH 9.2's
// client on it sends session-bind), a git server pinned in git_hosts, a second server that takes the same key for
// user git but is no pinned git host, and a real ssh-agent.
describe("the guard signs only for the pinned git host the client bound", () => {
  const t = tempHome();
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  const clientKey = ed25519KeyPair("spuff-vm");
  let vm: Sshd;
  let agent: Agent;
  let git: Awaited<ReturnType<typeof startGitServer>>;
  let rogue: Awaited<ReturnType<typeof startGitServer>>;
  let vmDir: string;
  let gitFp: string;
  let rogueFp: string;
  let env: NodeJS.ProcessEnv;
  const spuff = (argv: string[], extraEnv: NodeJS.ProcessEnv = {}) => runCli(argv, { env: { ...env, ...extraEnv }, cwd: t.home });
  /** The VM's OpenSSH client with the test's ssh config (nothing in the VM user's home is touched). */
  const vmSsh = (dest: string, ...cmd: string[]) => `/usr/bin/ssh -F ${vmDir}/ssh_config -T ${dest} ${cmd.join(" ")}`;
  const config = (extra = "", gitHost = "") =>
    `ssh:\n  user: spuff-test\n  tmux: false\n${extra}git_hosts:\n  - host: githost.test\n    address: 127.0.0.1\n    host_keys: ["${git.hostKey}"]\n${gitHost}`;
  const decisions = () =>
    readFileSync(join(stateDir, "agent.log"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((l) => !l.event);

  beforeAll(async () => {
    agent = startAgent(["work-key"]);
    vmDir = mkdtempSync(join(tmpdir(), "spuff-vmside-"));
    chmodSync(vmDir, 0o755);
    // On the VM, `ssh` is a client that sends no session-bind (ssh2, as OpenSSH before 8.9); /usr/bin/ssh is OpenSSH 9.2.
    execFileSync("mkdir", ["-p", join(vmDir, "bin")]);
    vm = await startSshd({
      authorizedKeys: [clientKey.public.trim()],
      extraConfig: ["AllowUsers spuff-test", `SetEnv PATH=${vmDir}/bin:/usr/local/bin:/usr/bin:/bin`],
    });
    git = await startGitServer([agent.keys[0].public]);
    rogue = await startGitServer([agent.keys[0].public]);
    gitFp = fingerprintOfFile(join(git.dir, "host_ed25519.pub"));
    rogueFp = fingerprintOfFile(join(rogue.dir, "host_ed25519.pub"));
    const record = { name: "box", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: vm.hostKey, endpoint: { host: "127.0.0.1", port: vm.port } };
    await new StateStore(stateDir).save(record, { private: clientKey.private, public: clientKey.public.trim() });
    writeUserConfig(t.env, config());
    env = { ...t.env, SSH_AUTH_SOCK: agent.socket };

    writeFileSync(join(vmDir, "known_hosts"), `githost.test ${git.hostKey}\nrogue.test ${rogue.hostKey}\n`);
    writeFileSync(
      join(vmDir, "ssh_config"),
      [
        `Host githost.test\n  HostName 127.0.0.1\n  Port ${git.port}\n  HostKeyAlias githost.test`,
        `Host rogue.test\n  HostName 127.0.0.1\n  Port ${rogue.port}\n  HostKeyAlias rogue.test`,
        `Host *\n  BatchMode yes\n  StrictHostKeyChecking yes\n  UserKnownHostsFile ${vmDir}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  UpdateHostKeys no\n  ForwardAgent no`,
      ].join("\n"),
    );
    const ssh2 = createRequire(import.meta.url).resolve("ssh2");
    writeFileSync(
      join(vmDir, "old-ssh.cjs"),
      `// usage: ssh [-T] [-o X]... USER@HOST: logs in with the agent's keys, without session-bind
const { Client } = require(${JSON.stringify(ssh2)});
const args = process.argv.slice(2);
let dest;
for (let i = 0; i < args.length; i++) if (args[i] === "-o") i++; else if (!args[i].startsWith("-")) { dest = args[i]; break; }
const [user, host] = dest.split("@");
const port = { "githost.test": ${git.port}, "rogue.test": ${rogue.port} }[host];
const c = new Client();
c.on("ready", () => { console.log("Hi " + user + "! You've successfully authenticated"); c.end(); });
c.on("error", () => { console.log(user + "@" + host + ": Permission denied (publickey)."); process.exitCode = 255; });
c.connect({ host: "127.0.0.1", port, username: user, agent: process.env.SSH_AUTH_SOCK, authHandler: ["agent"] });
`,
    );
    writeFileSync(join(vmDir, "bin", "ssh"), `#!/bin/sh\nexec node ${vmDir}/old-ssh.cjs "$@"\n`, { mode: 0o755 });
  });

  afterAll(async () => {
    await vm?.stop();
    await git?.stop();
    await rogue?.stop();
    agent?.stop();
    rmSync(vmDir, { recursive: true, force: true });
    t.cleanup();
  });

  it("ssh -T git@<pinned git host> is signed, and logged with the host's name", async () => {
    writeUserConfig(t.env, config());
    const r = await spuff(["ssh", "box", "--", vmSsh("git@githost.test", "echo", "signed-in")]);
    expect(r.stdout, r.stderr).toBe("signed-in\n");
    expect(r.code).toBe(0);
    const d = decisions().at(-1);
    expect(d).toMatchObject({ vm: "box", key: agent.keys[0].fingerprint, comment: "work-key", user: "git", host: "githost.test", hostKey: gitFp, destination: "githost.test", allowed: true, refusedBy: null, rule: null });
    expect(Date.now() - Date.parse(d.time)).toBeLessThan(60_000);
  });

  it("git@<a server that is no pinned git host> is refused (under sign_policy: any the same login goes through)", async () => {
    // The attack: the rogue server takes the key for user git. Without the binding check it would be signed.
    writeUserConfig(t.env, config("  sign_policy: any\n"));
    const any = await spuff(["ssh", "box", "--", vmSsh("git@rogue.test", "echo", "signed-in")]);
    expect(any.stdout, any.stderr).toBe("signed-in\n");
    expect(decisions().at(-1)).toMatchObject({ user: "git", host: null, hostKey: rogueFp, destination: rogueFp, allowed: true });

    writeUserConfig(t.env, config());
    const r = await spuff(["ssh", "box", "--", vmSsh("git@rogue.test", "echo", "signed-in")]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("Permission denied (publickey)");
    expect(r.stderr).toContain(`spuff: refused a signature request from box ("git" at ${rogueFp} with ${agent.keys[0].fingerprint}): host key ${rogueFp} is no pinned git host's`);
    expect(decisions().at(-1)).toMatchObject({ user: "git", host: null, hostKey: rogueFp, destination: rogueFp, allowed: false, refusedBy: "spuff", rule: "host-not-pinned" });
  });

  it("a wrong user at the pinned git host is refused; git_hosts `user` names the one it expects", async () => {
    writeUserConfig(t.env, config());
    const r = await spuff(["ssh", "box", "--", vmSsh("spuff-test@githost.test", "echo", "signed-in")]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(decisions().at(-1)).toMatchObject({ user: "spuff-test", host: "githost.test", hostKey: gitFp, allowed: false, rule: "wrong-user" });
    expect(decisions().at(-1).reason).toContain('user "spuff-test" is not "git", the user githost.test expects');

    writeUserConfig(t.env, config("", "    user: spuff-test\n"));
    const other = await spuff(["ssh", "box", "--", vmSsh("spuff-test@githost.test", "echo", "signed-in")]);
    expect(other.stdout, other.stderr).toBe("signed-in\n");
    expect(decisions().at(-1)).toMatchObject({ user: "spuff-test", host: "githost.test", allowed: true });
    const git2 = await spuff(["ssh", "box", "--", vmSsh("git@githost.test", "true")]);
    expect(git2.code).not.toBe(0);
    expect(decisions().at(-1)).toMatchObject({ user: "git", host: "githost.test", allowed: false, rule: "wrong-user" });
  });

  it("a client that sends no session-bind is refused under git-only, and doctor says why", async () => {
    writeUserConfig(t.env, config());
    const r = await spuff(["ssh", "box", "--", "ssh", "-T", "git@githost.test"]);
    expect(r.stdout).toContain("Permission denied (publickey)");
    expect(decisions().at(-1)).toMatchObject({ user: "git", host: null, hostKey: null, destination: null, allowed: false, rule: "no-bind" });
    expect(r.stderr).toContain("its client bound no session (no session-bind@openssh.com: OpenSSH older than 8.9?)");

    const doc = await spuff(["doctor", "box", "--git-host", "githost.test"]);
    expect(doc.code).toBe(2);
    expect(doc.stdout).toMatch(/git login to githost.test\s+FAIL\s+git@githost.test: Permission denied/);
    expect(doc.stdout).toContain("hint (git login to githost.test): the ssh client on the VM does not bind its agent requests to the server (session-bind@openssh.com, OpenSSH 8.9 and later)");

    writeUserConfig(t.env, config("  sign_policy: any\n"));
    const any = await spuff(["ssh", "box", "--", "ssh", "-T", "git@githost.test"]);
    expect(any.stdout).toContain("Hi git! You've successfully authenticated");
    writeUserConfig(t.env, config());
  });

  it("ssh-add -h destination constraints work through the guard: the binds reach the real agent, its refusal is its own", async () => {
    const a = startAgent([]);
    const keyPath = join(mkdtempSync(join(tmpdir(), "spuff-hkey-")), "key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", keyPath, "-C", "constrained"]);
    const pub = readFileSync(`${keyPath}.pub`, "utf8").trim();
    const fp = fingerprintOfFile(`${keyPath}.pub`);
    appendFileSync(join(git.dir, "authorized_keys"), `${pub}\n`);
    const knownHosts = join(vmDir, "known_hosts");
    const add = (...constraint: string[]) => execFileSync("ssh-add", ["-q", "-H", knownHosts, ...constraint, keyPath], { env: { ...process.env, SSH_AUTH_SOCK: a.socket } });
    try {
      writeUserConfig(t.env, config());
      // Only for user deploy at githost.test: the guard allows git@githost.test, the real agent does not. Had the
      // guard not passed the bind on, the agent would see an unbound (local) connection and sign.
      add("-h", "deploy@githost.test");
      const refused = await spuff(["ssh", "box", "--", vmSsh("git@githost.test", "echo", "signed-in")], { SSH_AUTH_SOCK: a.socket });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain(`spuff: your SSH agent refused a signature for box ("git" at githost.test with ${fp})`);
      expect(refused.stderr).not.toContain("spuff: refused a signature request");
      expect(decisions().at(-1)).toMatchObject({ key: fp, user: "git", host: "githost.test", allowed: false, refusedBy: "agent", rule: "agent-refused" });

      execFileSync("ssh-add", ["-q", "-D"], { env: { ...process.env, SSH_AUTH_SOCK: a.socket } });
      add("-h", "githost.test");
      const ok = await spuff(["ssh", "box", "--", vmSsh("git@githost.test", "echo", "signed-in")], { SSH_AUTH_SOCK: a.socket });
      expect(ok.stdout, ok.stderr).toBe("signed-in\n");
      expect(decisions().at(-1)).toMatchObject({ key: fp, host: "githost.test", allowed: true });
    } finally {
      a.stop();
      rmSync(join(keyPath, ".."), { recursive: true, force: true });
    }
  });

  describe("plain OpenSSH forwarding the guard (ForwardAgent=<socket>) binds the first hop", () => {
    let server: Server;
    let dir: string;
    let policy: AgentPolicy;
    const guard = new GuardedAgent();
    const sshToVm = (command: string) =>
      run(
        "ssh",
        [
          "-F", "/dev/null",
          "-o", "BatchMode=yes",
          "-o", "IdentitiesOnly=yes",
          "-i", join(dir, "id"),
          "-o", "StrictHostKeyChecking=yes",
          "-o", `UserKnownHostsFile=${join(dir, "known_hosts")}`,
          "-o", `ForwardAgent=${join(dir, "guard.sock")}`,
          "-p", String(vm.port),
          "spuff-test@127.0.0.1",
          command,
        ],
        // OpenSSH forwards the ForwardAgent socket only while SSH_AUTH_SOCK names a live agent (check_agent_present in
        // ssh.c), so neither may be unset nor IdentityAgent=none (which unsets it); IdentitiesOnly keeps the login to -i.
        { PATH: process.env.PATH, SSH_AUTH_SOCK: agent.socket },
      );

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "spuff-guardsock-"));
      writeFileSync(join(dir, "id"), clientKey.private, { mode: 0o600 });
      writeFileSync(join(dir, "known_hosts"), `[127.0.0.1]:${vm.port} ${vm.hostKey}\n`);
      policy = {
        allowedKeys: [],
        signPolicy: "git-only",
        logFile: join(dir, "agent.log"),
        vm: "box",
        gitHosts: gitHostPins([{ host: "githost.test", host_keys: [git.hostKey] }]),
        vmHostKey: vm.hostKey,
      };
      guard.arm(agent.socket, policy);
      // What a guard daemon does: one guarded agent connection per socket connection.
      server = createServer((sock) => guard.getStream((_err, s) => s && sock.pipe(s).pipe(sock)));
      await new Promise<void>((r) => server.listen(join(dir, "guard.sock"), r));
    });

    afterAll(() => {
      server?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    const log = () => readFileSync(join(dir, "agent.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));

    it("through the VM's pinned host key: the git login is signed", async () => {
      const r = await sshToVm(vmSsh("git@githost.test", "echo", "signed-in"));
      expect(r.stdout, r.stderr).toBe("signed-in\n");
      expect(log().at(-1)).toMatchObject({ user: "git", host: "githost.test", allowed: true });
    });

    it("through any other host key: the guard refuses everything on that connection", async () => {
      guard.arm(agent.socket, { ...policy, vmHostKey: ed25519KeyPair().public.split(" ").slice(0, 2).join(" ") });
      const list = await sshToVm("ssh-add -l; echo rc=$?");
      expect(list.stdout).not.toContain(agent.keys[0].fingerprint);
      expect(list.stdout).toMatch(/rc=[12]/);
      const r = await sshToVm(vmSsh("git@githost.test", "echo", "signed-in"));
      expect(r.stdout).toBe("");
      expect(r.code).not.toBe(0);
      const vmFp = fingerprintOfFile(join(vm.dir, "host_ed25519.pub"));
      expect(log()).toContainEqual(expect.objectContaining({ event: "first-hop-mismatch", hostKey: vmFp }));
      guard.arm(agent.socket, policy);
    });
  });
});
