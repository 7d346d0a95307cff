import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { MOUNT_WORKSPACE, renderUserData, type TemplateArgs, templateArgsFromConfig } from "../../src/cloudinit/index.js";
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
    expect(r.stderr).toContain(`spuff: cloning git@githost.test:${git.path} into ~/work/${git.path.replace(/\.git$/, "")}`);
    expect(readFileSync(join(home, "work", git.path.replace(/\.git$/, ""), "README"), "utf8")).toBe("private\n");
    expect(existsSync(join(home, ".local", "state", "spuff", "first-login-done"))).toBe(true);
    // Once only: a second login does nothing.
    rmSync(join(home, "work"), { recursive: true });
    const again = spawnSync("spuff-first-login", [], { env, encoding: "utf8" });
    expect(again.stderr).toBe("");
    expect(existsSync(join(home, "work"))).toBe(false);
  });

  it("a repository already in ~/work (a kept workspace on a new VM) is not cloned again, and its work is untouched", () => {
    const { files } = render(hosts(), { repositories: [`git@githost.test:${git.path}`, `git@githost.test:${git.path.replace(/\.git$/, "")}-gone.git`] });
    const { home, env } = vmHome(files);
    // A new VM: no first-login marker in its home, but the workspace volume holds the clone with unpushed work.
    const kept = join(home, "work", git.path.replace(/\.git$/, ""));
    mkdirSync(kept, { recursive: true });
    writeFileSync(join(kept, "unpushed.txt"), "mine\n");
    const r = spawnSync("spuff-first-login", [], { env, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stderr).not.toContain(`into ~/work/${git.path.replace(/\.git$/, "")}\n`);
    expect(readFileSync(join(kept, "unpushed.txt"), "utf8")).toBe("mine\n");
    expect(existsSync(join(kept, "README"))).toBe(false);
    // The other repository is not there, so it is cloned (and fails: it does not exist on the server).
    expect(r.stderr).toContain(`into ~/work/${git.path.replace(/\.git$/, "")}-gone`);
  });

  it("without a forwarded agent it explains and retries at the next login", () => {
    const { files } = render(hosts(), { repositories: [`git@githost.test:${git.path}`] });
    const { home, env } = vmHome(files);
    const { SSH_AUTH_SOCK: _, ...noAgent } = env;
    const r = spawnSync("spuff-first-login", [], { env: noAgent, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("no usable forwarded SSH agent");
    expect(existsSync(join(home, "work"))).toBe(false);
    expect(existsSync(join(home, ".local", "state", "spuff", "first-login-done"))).toBe(false);
    expect(spawnSync("spuff-first-login", [], { env, encoding: "utf8" }).status).toBe(0);
    expect(readFileSync(join(home, "work", git.path.replace(/\.git$/, ""), "README"), "utf8")).toBe("private\n");
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

describe.runIf(process.getuid?.() === 0 && spawnSync("losetup", ["-f"]).status === 0)("mount-workspace (real loop devices, mounted in a private mount namespace)", () => {
  const USER = "spuff-test";
  const loops: string[] = [];
  afterAll(() => {
    for (const l of loops) spawnSync("losetup", ["-d", l]);
  });

  /** The script as the rendered user-data writes it. */
  function script(): string {
    const { files } = render([], { workspace: { devices: ["/dev/disk/by-id/virtio-spuff-ws-test"] } });
    const f = join(mkdtempSync(join(dir, "ws-")), "mount-workspace");
    writeFileSync(f, files[MOUNT_WORKSPACE], { mode: 0o755 });
    return f;
  }

  /** A 64 MiB disk image as a loop device; `prepare` may write to the image first. */
  function disk(prepare?: (image: string) => void): string {
    const image = join(mkdtempSync(join(dir, "disk-")), "disk.img");
    execFileSync("truncate", ["-s", "64M", image]);
    prepare?.(image);
    const dev = execFileSync("losetup", ["-f", "--show", image], { encoding: "utf8" }).trim();
    loops.push(dev);
    return dev;
  }

  const blkid = (dev: string, tag: string) => spawnSync("blkid", ["-p", "-o", "value", "-s", tag, dev], { encoding: "utf8" }).stdout.trim();

  /**
   * Runs the script as runcmd does (root), in a mount namespace of its own so nothing stays mounted here, then looks
   * at the result from inside: what is mounted at the work directory, its owner, and whether the user can write there.
   */
  function mountWorkspace(devices: string[], opts: { work?: string; fstab?: string; wait?: number } = {}) {
    const work = opts.work ?? join(mkdtempSync(join(dir, "home-")), "work");
    chmodSync(join(work, ".."), 0o755);
    const fstab = opts.fstab ?? join(work, "..", "fstab");
    const check = [
      '"$0" "$@" || exit',
      'findmnt -n -o SOURCE,FSTYPE --mountpoint "$2"',
      'stat -c "%U %a" "$2"',
      `runuser -u ${USER} -- touch "$2/by-user"`,
      'ls -A "$2"',
    ].join("\n");
    const r = spawnSync("unshare", ["--mount", "--propagation", "private", "bash", "-c", check, script(), USER, work, ...devices], {
      env: { PATH: process.env.PATH, SPUFF_FSTAB: fstab, SPUFF_WORKSPACE_WAIT: String(opts.wait ?? 5) },
      // Not a socket on stdin (node's default pipe), which makes bash read ~/.bashrc as if started by rshd.
      stdio: ["ignore", "pipe", "pipe"],
      encoding: "utf8",
    });
    return { ...r, work, fstab: existsSync(fstab) ? readFileSync(fstab, "utf8") : "" };
  }

  it("an empty volume is formatted ext4, mounted at ~/work (fstab by UUID, nofail) and owned by the login user", () => {
    const dev = disk();
    const r = mountWorkspace(["/dev/disk/by-id/virtio-not-attached", dev]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const uuid = blkid(dev, "UUID");
    expect(uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.stdout).toContain(`spuff: formatting the new workspace volume ${dev} (ext4)\n`);
    expect(r.stdout).toContain(`${dev} ext4\n${USER} 755\n`);
    expect(r.stdout).toContain("by-user\nlost+found\n");
    expect(r.fstab).toBe(`UUID=${uuid} ${r.work} ext4 defaults,nofail 0 2\n`);
    // The namespace is gone, so is the mount: the work directory on the VM's own disk is empty.
    expect(readdirSync(r.work)).toEqual([]);
  });

  it("a volume with a filesystem is never formatted: its files and UUID stay; a second run adds no fstab line", () => {
    const dev = disk((image) => {
      const src = mkdtempSync(join(dir, "src-"));
      writeFileSync(join(src, "marker"), "kept\n");
      execFileSync("mkfs.ext4", ["-q", "-d", src, image]);
    });
    const uuid = blkid(dev, "UUID");
    const r = mountWorkspace([dev]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).not.toContain("formatting");
    expect(r.stdout).toContain(`spuff: workspace ${dev} (ext4, UUID ${uuid}) mounted at ${r.work}\n`);
    expect(r.stdout).toContain("by-user\nlost+found\nmarker\n");
    expect(blkid(dev, "UUID")).toBe(uuid);
    const again = mountWorkspace([dev], { work: r.work, fstab: join(r.work, "..", "fstab") });
    expect(again.status).toBe(0);
    expect(again.stdout).not.toContain("formatting");
    expect(again.fstab).toBe(`UUID=${uuid} ${r.work} ext4 defaults,nofail 0 2\n`);
  });

  it("waits for a volume that appears after boot (a cloud volume attached later)", async () => {
    const dev = disk();
    const link = join(mkdtempSync(join(dir, "by-id-")), "virtio-spuff-ws-late");
    const work = join(mkdtempSync(join(dir, "home-")), "work");
    chmodSync(join(work, ".."), 0o755);
    const child = spawn("unshare", ["--mount", "--propagation", "private", script(), USER, work, link], {
      env: { PATH: process.env.PATH, SPUFF_FSTAB: join(work, "..", "fstab"), SPUFF_WORKSPACE_WAIT: "20" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    await new Promise((r) => setTimeout(r, 1500));
    expect(child.exitCode).toBeNull(); // still waiting
    symlinkSync(dev, link);
    const code = await new Promise((r) => child.once("exit", r));
    expect(out).toContain(`spuff: workspace ${dev} (ext4, UUID `);
    expect(code).toBe(0);
  });

  it("fails the boot, touching nothing, when no device appears or the volume holds something other than a filesystem", () => {
    const gone = mountWorkspace(["/dev/disk/by-id/virtio-spuff-ws-none"], { wait: 1 });
    expect(gone.status).toBe(1);
    expect(gone.stderr).toBe("spuff: the workspace volume did not appear within 1 s (looked for /dev/disk/by-id/virtio-spuff-ws-none)\n");
    expect(gone.fstab).toBe("");
    const swap = disk((image) => execFileSync("mkswap", ["-q", image]));
    const uuid = blkid(swap, "UUID");
    const r = mountWorkspace([swap]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^spuff: ${swap} holds something other than one filesystem \\(.*TYPE=swap.*\\); not touching it\\n$`));
    expect(blkid(swap, "TYPE")).toBe("swap");
    expect(blkid(swap, "UUID")).toBe(uuid);
    expect(r.fstab).toBe("");
  });
});
