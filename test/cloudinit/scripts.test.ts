import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { renderUserData, type TemplateArgs, templateArgsFromConfig } from "../../src/cloudinit/index.js";
import { loadConfig } from "../../src/config/load.js";
import { type Agent, type Sshd, startAgent, startGitServer } from "../helpers/sshd.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";

// The VM side of "git clone works on the first try": the files the rendered user-data writes (~/.ssh/config,
// /etc/ssh/ssh_known_hosts, /etc/spuff/*.conf and the scripts) are taken from the rendered YAML and used by real
// OpenSSH, git and ssh-agent against a real git server (sshd) on loopback. Only the paths differ from the VM: the
// known_hosts and config files live in a temp dir, handed to ssh with -F and GlobalKnownHostsFile.
const fingerprint = (key: string) => execFileSync("ssh-keygen", ["-lf", "-"], { input: `${key}\n`, encoding: "utf8" }).split(" ")[1];

let dir: string;
let agent: Agent;
let git: Sshd & { repo: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "spuff-ci-scripts-"));
  chmodSync(dir, 0o755);
  agent = startAgent(["git-key"]);
  git = await startGitServer([agent.keys[0].public]);
});
afterAll(async () => {
  agent?.stop();
  await git?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function render(gitHosts: TemplateArgs["gitHosts"], extra: Partial<TemplateArgs> = {}) {
  const { config } = loadConfig({ env: { HOME: dir }, cwd: dir });
  const k = ed25519KeyPair();
  const c = ed25519KeyPair();
  const args = templateArgsFromConfig(config, { hostname: "box", hostKey: { private: k.private, public: k.public }, clientPublicKey: c.public, expiresAt: new Date() });
  const doc = parse(renderUserData({ ...args, gitHosts, ...extra }));
  const files: Record<string, string> = Object.fromEntries(doc.write_files.map((f: { path: string; content: string }) => [f.path, f.content]));
  return { doc, files };
}

/** A fresh "VM home" with the rendered files in place; returns the environment the scripts run with. */
function vmHome(files: Record<string, string>) {
  const home = mkdtempSync(join(dir, "home-"));
  mkdirSync(join(home, ".ssh"), { mode: 0o700 });
  mkdirSync(join(home, "bin"));
  writeFileSync(join(home, ".ssh", "config"), files["/home/dev/.ssh/config"], { mode: 0o600 });
  const knownHosts = join(home, "ssh_known_hosts");
  writeFileSync(knownHosts, files["/etc/ssh/ssh_known_hosts"]);
  for (const [path, content] of Object.entries(files)) {
    if (path.startsWith("/usr/local/bin/")) writeFileSync(join(home, "bin", path.split("/").pop() as string), content, { mode: 0o755 });
    if (path.startsWith("/etc/spuff/")) writeFileSync(join(home, path.split("/").pop() as string), content);
  }
  const env = {
    PATH: `${join(home, "bin")}:${process.env.PATH}`,
    HOME: home,
    SSH_AUTH_SOCK: agent.socket,
    SPUFF_FIRST_LOGIN_CONF: join(home, "first-login.conf"),
    // Real ssh with exactly the rendered config; as on the VM, only the global known_hosts file is consulted.
    GIT_SSH_COMMAND: `ssh -F ${join(home, ".ssh", "config")} -o GlobalKnownHostsFile=${knownHosts} -o UserKnownHostsFile=/dev/null -o BatchMode=yes`,
    GIT_CONFIG_NOSYSTEM: "1",
  };
  return { home, env, knownHosts };
}

const cloneRepo = (env: NodeJS.ProcessEnv, url: string, to: string) =>
  spawnSync("git", ["clone", "-q", url, to], { env, encoding: "utf8" });

describe("git over SSH with the rendered config and pinned keys", () => {
  it("clones a private repository through the agent on the first try (pinned host_keys, non-standard port, address)", () => {
    const { files } = render([{ host: "githost.test", address: "127.0.0.1", port: git.port, hostKeys: [git.hostKey] }]);
    const { home, env } = vmHome(files);
    const r = cloneRepo(env, `git@githost.test:${git.path}`, join(home, "p"));
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(readFileSync(join(home, "p", "README"), "utf8")).toBe("private\n");
  });

  it("refuses a git host whose key does not match the pin", () => {
    const other = ed25519KeyPair().public.split(" ").slice(0, 2).join(" ");
    const { files } = render([{ host: "githost.test", address: "127.0.0.1", port: git.port, hostKeys: [other] }]);
    const { home, env } = vmHome(files);
    const r = cloneRepo(env, `git@githost.test:${git.path}`, join(home, "p"));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
    expect(existsSync(join(home, "p"))).toBe(false);
  });

  it("refuses a host that is not pinned at all (StrictHostKeyChecking yes)", () => {
    const { files } = render([]);
    const { home, env } = vmHome(files);
    const r = spawnSync("git", ["clone", "-q", `ssh://git@127.0.0.1:${git.port}/~/${git.path}`, join(home, "p")], { env, encoding: "utf8" });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain("Host key verification failed");
  });

  it("does not forward the agent onward from the VM", () => {
    const { files } = render([]);
    const { home } = vmHome(files);
    const r = spawnSync("ssh", ["-F", join(home, ".ssh", "config"), "-G", "anyhost.example"], { encoding: "utf8" });
    expect(r.stdout).toMatch(/^forwardagent no$/m);
    expect(r.stdout).toMatch(/^stricthostkeychecking true$/m);
    expect(r.stdout).toMatch(/^identitiesonly no$/m);
  });
});

describe("spuff-keyscan (git hosts configured by fingerprint, or not at all)", () => {
  it("keeps only keys whose fingerprint is configured, under the host name; then the clone works", () => {
    const { doc, files } = render([
      { host: "githost.test", address: "127.0.0.1", port: git.port, fingerprints: [fingerprint(git.hostKey)] },
      { host: "wrong.test", address: "127.0.0.1", port: git.port, fingerprints: ["SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"] },
    ]);
    expect(doc.runcmd).toContainEqual(["/usr/local/bin/spuff-keyscan"]);
    const { home, env, knownHosts } = vmHome(files);
    const r = spawnSync("spuff-keyscan", [join(home, "keyscan.conf"), knownHosts], { env, encoding: "utf8" });
    expect(r.status).toBe(1); // wrong.test ended up with no key
    expect(r.stderr).toContain(`wrong.test: dropping ssh-ed25519 key ${fingerprint(git.hostKey)} (not a configured fingerprint)`);
    expect(r.stderr).toContain("wrong.test: no key matched");
    const added = readFileSync(knownHosts, "utf8").split("\n").filter((l) => l.includes(".test") && !l.startsWith("#"));
    expect(added).toEqual([`githost.test,[githost.test]:${git.port} ${git.hostKey}`]);
    const clone = cloneRepo(env, `git@githost.test:${git.path}`, join(home, "p"));
    expect(clone.stderr).toBe("");
    expect(clone.status).toBe(0);
    expect(cloneRepo(env, `git@wrong.test:${git.path}`, join(home, "w")).stderr).toContain("Host key verification failed");
  });

  it("with neither keys nor fingerprints: keeps what it sees (trust on first use), and the clone works", () => {
    const { files } = render([{ host: "tofu.test", address: "127.0.0.1", port: git.port }]);
    const { home, env, knownHosts } = vmHome(files);
    const r = spawnSync("spuff-keyscan", [join(home, "keyscan.conf"), knownHosts], { env, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`tofu.test: pinned ssh-ed25519 ${fingerprint(git.hostKey)}`);
    expect(cloneRepo(env, `git@tofu.test:${git.path}`, join(home, "p")).status).toBe(0);
  });

  it("a trust-on-first-use host that is down at boot is left to accept-new, not an error", () => {
    const { files } = render([{ host: "later.test", address: "127.0.0.1", port: 1 }]);
    const { home, env, knownHosts } = vmHome(files);
    const r = spawnSync("spuff-keyscan", [join(home, "keyscan.conf"), knownHosts], { env: { ...env, SPUFF_KEYSCAN_ATTEMPTS: "1" }, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("later.test: not reachable at 127.0.0.1 port 1 now; its key will be trusted at the first connection (accept-new)");
  });

  it("reports a pinned-by-fingerprint host it cannot reach", () => {
    const { files } = render([{ host: "down.test", address: "127.0.0.1", port: 1, fingerprints: [fingerprint(git.hostKey)] }]);
    const { home, env, knownHosts } = vmHome(files);
    const r = spawnSync("spuff-keyscan", [join(home, "keyscan.conf"), knownHosts], { env: { ...env, SPUFF_KEYSCAN_ATTEMPTS: "1" }, encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("down.test: no key matched (scanned 127.0.0.1 port 1)");
  });
});

describe("spuff-first-login (dotfiles and repositories, cloned through the agent at login)", () => {
  const hosts = () => [{ host: "githost.test", address: "127.0.0.1", port: git.port, hostKeys: [git.hostKey] }];

  it("clones dotfiles (then runs install) and repositories once, and records success", () => {
    const { files } = render(hosts(), {
      dotfiles: { repo: `git@githost.test:${git.path}`, install: "cp README ~/installed" },
      repositories: [`git@githost.test:${git.path}`],
    });
    const { home, env } = vmHome(files);
    const r = spawnSync("spuff-first-login", [], { env, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(`spuff: cloning dotfiles git@githost.test:${git.path}`);
    expect(readFileSync(join(home, ".dotfiles", "README"), "utf8")).toBe("private\n");
    expect(readFileSync(join(home, "installed"), "utf8")).toBe("private\n");
    expect(readFileSync(join(home, "src", git.path.replace(/\.git$/, ""), "README"), "utf8")).toBe("private\n");
    expect(existsSync(join(home, ".local", "state", "spuff", "first-login-done"))).toBe(true);
    // Once only: a second login does nothing.
    rmSync(join(home, "src"), { recursive: true });
    const again = spawnSync("spuff-first-login", [], { env, encoding: "utf8" });
    expect(again.stderr).toBe("");
    expect(existsSync(join(home, "src"))).toBe(false);
  });

  it("without a forwarded agent it explains and retries at the next login", () => {
    const { files } = render(hosts(), { repositories: [`git@githost.test:${git.path}`] });
    const { home, env } = vmHome(files);
    const { SSH_AUTH_SOCK: _, ...noAgent } = env;
    const r = spawnSync("spuff-first-login", [], { env: noAgent, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("no usable forwarded SSH agent");
    expect(existsSync(join(home, "src"))).toBe(false);
    expect(existsSync(join(home, ".local", "state", "spuff", "first-login-done"))).toBe(false);
    expect(spawnSync("spuff-first-login", [], { env, encoding: "utf8" }).status).toBe(0);
    expect(readFileSync(join(home, "src", git.path.replace(/\.git$/, ""), "README"), "utf8")).toBe("private\n");
  });

  it("a failed clone is reported and not marked done", () => {
    const { files } = render(hosts(), { repositories: ["git@githost.test:missing.git"] });
    const { home, env } = vmHome(files);
    const r = spawnSync("spuff-first-login", [], { env, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("some clones failed");
    expect(existsSync(join(home, ".local", "state", "spuff", "first-login-done"))).toBe(false);
  });
});

describe("spuff-install-packages (real dpkg and apt, no network, no system change)", () => {
  /** apt with no package sources and its own state dirs: nothing to download, nothing of the machine's touched. */
  function aptEnv(): NodeJS.ProcessEnv {
    const d = mkdtempSync(join(dir, "apt-"));
    for (const sub of ["lists/partial", "cache/archives/partial", "parts"]) mkdirSync(join(d, sub), { recursive: true });
    writeFileSync(
      join(d, "apt.conf"),
      [
        'Dir::Etc::SourceList "/dev/null";',
        `Dir::Etc::SourceParts "${d}/parts";`,
        `Dir::State::Lists "${d}/lists";`,
        `Dir::Cache "${d}/cache";`,
        'Debug::NoLocking "true";',
      ].join("\n"),
    );
    return { PATH: process.env.PATH, APT_CONFIG: join(d, "apt.conf") };
  }
  const script = "cloud-init/files/spuff-install-packages.sh";

  it("does nothing when every package is present (the local image case)", () => {
    const r = spawnSync("bash", [script, "git", "tmux", "openssh-client"], { env: aptEnv(), encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("spuff: all packages present: git tmux openssh-client\n");
  });

  it("a package that cannot be installed is reported, and the boot goes on (exit 0)", () => {
    const r = spawnSync("bash", [script, "git", "spuff-no-such-package"], { env: aptEnv(), encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("spuff: installing spuff-no-such-package");
    expect(r.stderr).toContain("WARNING: could not install spuff-no-such-package");
  });
});
