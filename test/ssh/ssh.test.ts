import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StateStore } from "../../src/core/state.js";
import { GuardedAgent, parseUserAuthRequest } from "../../src/ssh/agent.js";
import { identityAgentFor } from "../../src/ssh/openssh-config.js";
import { BIN, runCli, tempHome, userConfigFile, writeUserConfig } from "../helpers/cli.js";
import { type Agent, type Sshd, startAgent, startGitServer, startSshd } from "../helpers/sshd.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";


// `spuff ssh` against a real OpenSSH sshd on loopback standing in for a VM (user spuff-test), with a real ssh-agent.
describe("spuff ssh", () => {
  const t = tempHome();
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  const clientKey = ed25519KeyPair("spuff-vm");
  let vm: Sshd;
  let agent: Agent;
  let git: Awaited<ReturnType<typeof startGitServer>>;
  let env: NodeJS.ProcessEnv;
  const spuff = (argv: string[], stdin?: string, extraEnv: NodeJS.ProcessEnv = {}) =>
    runCli(argv, { env: { ...env, ...extraEnv }, cwd: t.home, stdin });
  // The git server is a pinned git host: the guard signs git logins bound to its host key (git-only).
  const config = (sshExtra = "") =>
    `ssh:\n  user: spuff-test\n  tmux: false\n${sshExtra}git_hosts:\n  - host: githost.test\n    address: 127.0.0.1\n    host_keys: ["${git.hostKey}"]\n`;

  beforeAll(async () => {
    agent = startAgent(["work-key", "other-key"]);
    // The agent's key is also authorised on the "VM" itself, so a login there asks the agent for a signature.
    vm = await startSshd({ authorizedKeys: [clientKey.public.trim(), agent.keys[0].public], extraConfig: ["AllowUsers spuff-test"] });
    git = await startGitServer([agent.keys[0].public]);
    const store = new StateStore(stateDir);
    const record = { name: "box", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: vm.hostKey, endpoint: { host: "127.0.0.1", port: vm.port } };
    await store.save(record, { private: clientKey.private, public: clientKey.public.trim() });
    // A second record whose pinned key is wrong: as if the VM was replaced behind the same address.
    const other = ed25519KeyPair().public.trim().split(" ").slice(0, 2).join(" ");
    await store.save({ ...record, name: "mitm", hostKey: other }, { private: clientKey.private, public: clientKey.public.trim() });
    writeUserConfig(t.env, config());
    env = { ...t.env, SSH_AUTH_SOCK: agent.socket };
    // On the "VM" (this machine, user spuff-test), git reaches the git server by name with its key pinned.
    const home = "/home/spuff-test";
    execFileSync("mkdir", ["-p", `${home}/.ssh`]);
    writeFileSync(`${home}/.ssh/known_hosts`, `githost.test ${git.hostKey}\n`);
    writeFileSync(`${home}/.ssh/config`, `Host githost.test\n  HostName 127.0.0.1\n  Port ${git.port}\n  HostKeyAlias githost.test\n  StrictHostKeyChecking yes\n`);
    execFileSync("chown", ["-R", "spuff-test:spuff-test", `${home}/.ssh`]);
  });

  afterAll(async () => {
    await vm?.stop();
    await git?.stop();
    agent?.stop();
    rmSync("/home/spuff-test/.ssh", { recursive: true, force: true });
    rmSync("/home/spuff-test/clone", { recursive: true, force: true });
    t.cleanup();
  });

  it("runs a command, pipes stdin, and returns the remote exit code", async () => {
    const r = await spuff(["ssh", "box", "--", "tr", "a-z", "A-Z;", "exit", "7"], "hello\n");
    expect(r.stdout).toBe("HELLO\n");
    expect(r.code).toBe(7);
  });

  it("a file on stdin (read in 1 MiB chunks) reaches the remote byte for byte, through the built binary", () => {
    const file = join(t.home, "blob");
    const blob = randomBytes(5 * 2 ** 20 + 12345);
    writeFileSync(file, blob);
    const fd = openSync(file, "r");
    const r = spawnSync(process.execPath, [BIN, "ssh", "box", "--", "sha256sum"], { env, cwd: t.home, stdio: [fd, "pipe", "pipe"], encoding: "utf8" });
    closeSync(fd);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout.split(" ")[0]).toBe(createHash("sha256").update(blob).digest("hex"));
  });

  it("gives a PTY with -t and the terminal size reaches the remote", async () => {
    const r = await spuff(["ssh", "box", "-t", "--", "stty", "size"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe("24 80");
  });

  it("refuses a VM whose host key differs from the pinned one, and explains", async () => {
    const r = await spuff(["ssh", "mitm", "--", "true"]);
    expect(r.code).toBe(255);
    expect(r.stderr).toContain("does not match the key pinned when it was created");
    expect(r.stderr).toContain(`got      SHA256:`);
    expect(r.stderr).toContain("someone is intercepting the connection");
  });

  it("refuses an unknown VM with the list of known ones", async () => {
    const r = await spuff(["ssh", "nope", "--", "true"]);
    expect(r.code).toBe(255);
    expect(r.stderr).toContain('no VM named "nope"');
    expect(r.stderr).toContain("hint: VMs: box, mitm");
  });

  it("the forwarded agent lists only the allowed keys", async () => {
    const all = await spuff(["ssh", "box", "--", "ssh-add", "-l"]);
    expect(all.stdout).toContain(agent.keys[0].fingerprint);
    expect(all.stdout).toContain(agent.keys[1].fingerprint);
    writeUserConfig(t.env, config(`  allowed_keys: ["other-key"]\n`));
    const one = await spuff(["ssh", "box", "--", "ssh-add", "-l"]);
    expect(one.stdout).not.toContain(agent.keys[0].fingerprint);
    expect(one.stdout).toContain(agent.keys[1].fingerprint);
    writeUserConfig(t.env, config());
  });

  it("git clone from a loopback git server works through the guarded agent, and is logged", async () => {
    const r = await spuff(["ssh", "box", "--", `rm -rf clone && git clone -q git@githost.test:${git.path} clone && cat clone/README`]);
    expect(r.stdout, r.stderr).toBe("private\n");
    expect(r.code).toBe(0);
    const log = readFileSync(join(stateDir, "agent.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(log.at(-1)).toMatchObject({ vm: "box", user: "git", allowed: true, key: agent.keys[0].fingerprint });
  });

  it("under git-only, a signature for a non-git login is refused and logged", async () => {
    const r = await spuff(["ssh", "box", "--", `ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p ${vm.port} spuff-test@127.0.0.1 true`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('refused a signature request from box');
    const log = readFileSync(join(stateDir, "agent.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    // The "VM"'s own sshd is no pinned git host: refused before its user is even looked at.
    expect(log.at(-1)).toMatchObject({ vm: "box", user: "spuff-test", allowed: false, rule: "host-not-pinned", host: null });
  });

  it("with ssh.confirm each signature is asked through SSH_ASKPASS; a no declines it", async () => {
    writeUserConfig(t.env, config("  confirm: true\n"));
    const askpass = join(t.home, "askpass");
    const asked = join(t.home, "asked");
    writeFileSync(askpass, `#!/bin/sh\necho "$SSH_ASKPASS_PROMPT|$1" >> ${asked}\nexit "$(cat ${t.home}/answer)"\n`, { mode: 0o755 });
    const clone = (dir: string) => spuff(["ssh", "box", "--", `rm -rf ${dir} && git clone -q git@githost.test:${git.path} ${dir} && cat ${dir}/README`], undefined, { SSH_ASKPASS: askpass });
    writeFileSync(join(t.home, "answer"), "1");
    const no = await clone("c1");
    expect(no.code).not.toBe(0);
    expect(no.stderr).toContain("declined at the confirmation prompt");
    writeFileSync(join(t.home, "answer"), "0");
    const yes = await clone("c2");
    expect(yes.stdout).toBe("private\n");
    expect(readFileSync(asked, "utf8")).toContain(`confirm|spuff: allow box to sign a login as "git" at githost.test with work-key?`);
    writeUserConfig(t.env, config());
  });

  it("with --no-agent the clone fails and spuff says why", async () => {
    const r = await spuff(["ssh", "box", "--no-agent", "--", `git clone -q git@githost.test:${git.path} clone2`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("Permission denied (publickey)");
    expect(r.stderr).toContain("no SSH agent was forwarded (--no-agent)");
  });

  it("a bad config is reported with its place although the connection was already opening, and nothing runs", async () => {
    // spuff ssh connects before it reads the config (docs/performance.md); the config's verdict must still come first.
    const bad = join(t.home, "bad.yaml");
    writeFileSync(bad, "ssh:\n  user: spuff-test\n  tmux: sometimes\n");
    const marker = "/home/spuff-test/ran-despite-bad-config";
    const r = await spuff(["--config", bad, "ssh", "box", "--", `touch ${marker}`]);
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/bad\.yaml:3:\d+/);
    expect(r.stderr).toContain("ssh.tmux");
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(existsSync(marker)).toBe(false);
  });

  it("ssh-config writes a config that OpenSSH itself uses, with the host key pinned", async () => {
    const r = await spuff(["ssh-config"]);
    expect(r.code).toBe(0);
    const path = join(t.env.XDG_CONFIG_HOME as string, "spuff", "ssh_config");
    expect(r.stdout).toContain(`Include ${path}`);
    const ok = spawnSync("ssh", ["-F", path, "-o", "BatchMode=yes", "spuff-box", "echo", "via-openssh"], { encoding: "utf8", env: { PATH: process.env.PATH } });
    expect(ok.stderr).toBe("");
    expect(ok.stdout).toBe("via-openssh\n");
    // The record whose pinned key does not match is refused by OpenSSH too.
    const bad = spawnSync("ssh", ["-F", path, "-o", "BatchMode=yes", "spuff-mitm", "true"], { encoding: "utf8", env: { PATH: process.env.PATH } });
    expect(bad.status).toBe(255);
    expect(bad.stderr).toContain("REMOTE HOST IDENTIFICATION HAS CHANGED");
  });

  it("ssh-config --install adds the Include line once, with a backup", async () => {
    mkdirSync(join(t.home, ".ssh"), { recursive: true });
    writeFileSync(join(t.home, ".ssh", "config"), "Host example\n  User me\n");
    const a = await spuff(["ssh-config", "--install"]);
    expect(a.stdout).toContain("added the Include line");
    const b = await spuff(["ssh-config", "--install"]);
    expect(b.stdout).toContain("already includes it");
    const text = readFileSync(join(t.home, ".ssh", "config"), "utf8");
    expect(text.startsWith("Include ")).toBe(true);
    expect(text.match(/^Include /gm)).toHaveLength(1);
    expect(text).toContain("Host example\n  User me\n");
    expect(readFileSync(join(t.home, ".ssh", "config.spuff-backup"), "utf8")).toBe("Host example\n  User me\n");
  });

  it("forwards a local port with -L and says so", async () => {
    const echo = createServer((s) => s.end("pong\n"));
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    const port = (echo.address() as { port: number }).port;
    const local = port + 1 < 65535 ? port + 1 : port - 1;
    const run = spuff(["ssh", "box", "-L", `${local}:127.0.0.1:${port}`, "--", "sleep", "2"]);
    await new Promise((r) => setTimeout(r, 1200));
    const got = await new Promise<string>((resolve, reject) => {
      let data = "";
      const c = createConnection({ host: "127.0.0.1", port: local });
      c.on("data", (d) => (data += d));
      c.on("end", () => resolve(data));
      c.on("error", reject);
    });
    const r = await run;
    echo.close();
    expect(got).toBe("pong\n");
    expect(r.stderr).toContain(`forwarding 127.0.0.1:${local} → 127.0.0.1:${port} on box`);
    expect(r.code).toBe(0);
  });

  it("doctor passes every check when the agent, the VM and the git host are right", async () => {
    writeUserConfig(t.env, config());
    const r = await spuff(["--json", "doctor", "box"]);
    writeUserConfig(t.env, config());
    const checks = JSON.parse(r.stdout);
    expect(checks.map((c: { check: string; ok: boolean }) => [c.check, c.ok])).toEqual([
      ["local agent", true],
      ["VM reachable", true],
      ["VM host key", true],
      ["agent on the VM", true],
      ["git login to githost.test", true],
    ]);
    expect(checks[3].detail).toContain(agent.keys[0].fingerprint);
    expect(r.code).toBe(0);
  });

  it("doctor names each failure with its fix: wrong host key, key not on the git host, unpinned git host", async () => {
    const mitm = await spuff(["doctor", "mitm", "--git-host", "githost.test"]);
    expect(mitm.code).toBe(2);
    expect(mitm.stdout).toMatch(/VM host key\s+FAIL\s+.*does not match the key pinned/);
    expect(mitm.stdout).toMatch(/git login to githost.test\s+FAIL\s+skipped: no verified connection/);

    // Only the second agent key is allowed: the git server knows only the first.
    writeUserConfig(t.env, config(`  allowed_keys: ["other-key"]\n`));
    const denied = await spuff(["doctor", "box", "--git-host", "githost.test"]);
    expect(denied.code).toBe(2);
    expect(denied.stdout).toMatch(/git login to githost.test\s+FAIL\s+.*Permission denied \(publickey\)/);
    expect(denied.stdout).toContain(`hint (git login to githost.test): githost.test accepted none of the offered keys (${agent.keys[1].fingerprint})`);

    writeUserConfig(t.env, config());
    const known = "/home/spuff-test/.ssh/known_hosts";
    const saved = readFileSync(known, "utf8");
    writeFileSync(known, "");
    const unpinned = await spuff(["doctor", "box", "--git-host", "githost.test"]);
    writeFileSync(known, saved);
    expect(unpinned.code).toBe(2);
    expect(unpinned.stdout).toMatch(/git login to githost.test\s+FAIL\s+No ED25519 host key is known for githost.test/);
    expect(unpinned.stdout).toContain("githost.test's host key is not pinned on the VM");

    const noAgent = await spuff(["doctor", "box", "--git-host", "githost.test"], undefined, { SSH_AUTH_SOCK: "" });
    expect(noAgent.code).toBe(2);
    expect(noAgent.stdout).toMatch(/local agent\s+FAIL\s+no SSH agent to forward/);
  });
});

describe("agent preflight", () => {
  const t = tempHome();
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  beforeAll(async () => {
    const k = ed25519KeyPair();
    await new StateStore(stateDir).save(
      { name: "box", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: k.public.trim(), endpoint: { host: "127.0.0.1", port: 1 } },
      { private: k.private, public: k.public.trim() },
    );
  });
  afterAll(() => t.cleanup());
  const run = (extra: NodeJS.ProcessEnv) => runCli(["ssh", "box", "--", "true"], { env: { ...t.env, ...extra }, cwd: t.home });

  it("a VM that refuses the connection: where, why and what to check; exit 255 (spuff itself failed)", async () => {
    const r = await runCli(["ssh", "box", "--no-agent", "--", "true"], { env: t.env, cwd: t.home });
    expect(r.code).toBe(255);
    expect(r.stderr).toContain("error: cannot reach box at 127.0.0.1:1: ECONNREFUSED");
    expect(r.stderr).toContain("hint: is the VM running and its SSH port open? `spuff status box`");
    expect(r.stderr).not.toContain("bug");
  });

  it("a bad config ends spuff ssh at once although the VM accepted the connection and never answered", async () => {
    // The connection opens before the config is read; a config error must not wait for the handshake's timeout.
    const silent = createServer(() => {}); // accepts, never speaks SSH
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as { port: number }).port;
    const k = ed25519KeyPair();
    await new StateStore(stateDir).save(
      { name: "mute", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: k.public.trim(), endpoint: { host: "127.0.0.1", port } },
      { private: k.private, public: k.public.trim() },
    );
    const bad = join(t.home, "bad.yaml");
    writeFileSync(bad, "ssh:\n  forward_agent: perhaps\n");
    const r = spawnSync(process.execPath, [BIN, "--config", bad, "ssh", "mute", "--", "true"], { env: t.env, cwd: t.home, encoding: "utf8", timeout: 10_000 });
    silent.close();
    expect(r.signal).toBeNull(); // not killed by the 10 s limit: the handshake's own timeout is 20 s
    expect(r.status).toBe(255);
    expect(r.stderr).toContain("ssh.forward_agent");
  });

  it("no agent at all", async () => {
    const r = await run({});
    expect(r.code).toBe(255);
    expect(r.stderr).toContain("no SSH agent to forward (SSH_AUTH_SOCK is not set)");
    expect(r.stderr).toContain('hint: start one and add your key: `eval "$(ssh-agent)" && ssh-add`');
  });

  it("socket missing", async () => {
    const r = await run({ SSH_AUTH_SOCK: join(t.home, "nope.sock") });
    expect(r.stderr).toContain("nope.sock (from SSH_AUTH_SOCK) does not exist");
  });

  it("not a socket", async () => {
    const f = join(t.home, "file");
    writeFileSync(f, "");
    const r = await run({ SSH_AUTH_SOCK: f });
    expect(r.stderr).toContain(`${f} (from SSH_AUTH_SOCK) is not a socket`);
  });

  it("world-accessible socket", async () => {
    const dir = mkdtempSync(join(tmpdir(), "spuff-open-"));
    chmodSync(dir, 0o755);
    const sock = join(dir, "s");
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(sock, r));
    chmodSync(sock, 0o777);
    const r = await run({ SSH_AUTH_SOCK: sock });
    srv.close();
    rmSync(dir, { recursive: true, force: true });
    expect(r.stderr).toContain("is accessible to other users (mode 777)");
    expect(r.stderr).toContain("hint: fix it: chmod 600");
  });

  it("agent not answering", async () => {
    const dir = mkdtempSync(join(tmpdir(), "spuff-mute-"));
    chmodSync(dir, 0o700);
    const sock = join(dir, "s");
    const srv = createServer(() => {}); // accepts, never answers
    await new Promise<void>((r) => srv.listen(sock, r));
    const r = await run({ SSH_AUTH_SOCK: sock });
    srv.close();
    rmSync(dir, { recursive: true, force: true });
    expect(r.stderr).toContain("does not answer");
  });

  it("agent without keys", async () => {
    const a = startAgent([]);
    const r = await run({ SSH_AUTH_SOCK: a.socket });
    a.stop();
    expect(r.stderr).toContain("the SSH agent holds no keys");
    expect(r.stderr).toContain("hint: add your key: `ssh-add`");
  });

  it("ssh.agent_socket in config wins, with ~ expanded", async () => {
    writeUserConfig(t.env, "ssh:\n  agent_socket: ~/configured.sock\n");
    const r = await run({ SSH_AUTH_SOCK: "/nonexistent" });
    rmSync(userConfigFile(t.env));
    expect(r.stderr).toContain(`${t.home}/configured.sock (from ssh.agent_socket) does not exist`);
  });
});

describe("agent helpers", () => {
  it("reads IdentityAgent for a host from ~/.ssh/config", () => {
    const dir = mkdtempSync(join(tmpdir(), "spuff-cfg-"));
    const f = join(dir, "config");
    writeFileSync(f, "Host github.com\n  IdentityAgent ~/gh.sock\nHost spuff-* !spuff-x\n  IdentityAgent ~/.1password/agent.sock\nHost *\n  IdentityAgent SSH_AUTH_SOCK\n");
    expect(identityAgentFor("spuff-box", {}, f)).toBe("~/.1password/agent.sock");
    expect(identityAgentFor("spuff-x", {}, f)).toBe("SSH_AUTH_SOCK");
    rmSync(dir, { recursive: true, force: true });
    expect(existsSync(f)).toBe(false);
  });

  it("a guard not yet armed with a policy refuses every request without asking the real agent", async () => {
    const guard = new GuardedAgent();
    const failure = Buffer.from([5]); // SSH_AGENT_FAILURE
    expect(await guard.handle(Buffer.from([11]))).toEqual(failure); // REQUEST_IDENTITIES
    expect(await guard.handle(Buffer.from([13, 0, 0, 0, 0, 0, 0, 0, 0]))).toEqual(failure); // SIGN_REQUEST
  });

  it("parses SSH user-auth requests and rejects other data", () => {
    const s = (x: string | Buffer) => {
      const b = Buffer.isBuffer(x) ? x : Buffer.from(x);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return Buffer.concat([len, b]);
    };
    const req = Buffer.concat([s(Buffer.alloc(32, 1)), Buffer.from([50]), s("git"), s("ssh-connection"), s("publickey"), Buffer.from([1]), s("ssh-ed25519"), s("KEY")]);
    expect(parseUserAuthRequest(req)).toEqual({ user: "git", service: "ssh-connection" });
    expect(parseUserAuthRequest(Buffer.from("SSHSIG\0\0\0\x01"))).toBeUndefined();
    expect(parseUserAuthRequest(Buffer.concat([s("id"), Buffer.from([51]), s("git")]))).toBeUndefined();
  });
});


