import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A real OpenSSH sshd on loopback, owned by the test: temp host key, config and authorized keys. */
export interface Sshd {
  host: string;
  port: number;
  pid: number;
  /** "ssh-ed25519 AAAA..." */
  hostKey: string;
  dir: string;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

export function waitForPort(host: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const sock = createConnection({ host, port });
      sock.once("connect", () => {
        sock.destroy();
        resolve();
      });
      sock.once("error", () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${host}:${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

export async function startSshd(opts: { authorizedKeys: string[]; host?: string; port?: number; extraConfig?: string[] }): Promise<Sshd> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), "spuff-sshd-"));
  chmodSync(dir, 0o755);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_ed25519"), "-C", "test-sshd"]);
  writeFileSync(join(dir, "authorized_keys"), `${opts.authorizedKeys.join("\n")}\n`, { mode: 0o644 });
  writeFileSync(
    join(dir, "sshd_config"),
    [
      `ListenAddress ${host}:${port}`,
      `HostKey ${join(dir, "host_ed25519")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "AllowAgentForwarding yes",
      "LogLevel ERROR",
      ...(opts.extraConfig ?? []),
    ].join("\n"),
  );
  mkdirSync("/run/sshd", { recursive: true });
  const child: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<never>((_, reject) => child.once("exit", (c) => reject(new Error(`sshd exited (${c}): ${stderr}`))));
  await Promise.race([waitForPort(host, port), exited]);
  exited.catch(() => {});
  const hostKey = readFileSync(join(dir, "host_ed25519.pub"), "utf8").trim().split(" ").slice(0, 2).join(" ");
  return {
    host,
    port,
    pid: child.pid ?? 0,
    hostKey,
    dir,
    stop: () => stopSshd(child, dir),
  };
}

/** Stops an sshd started by a test (unless it already ended) and removes its directory. */
export async function stopSshd(child: ChildProcess, dir: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await gone;
  }
  rmSync(dir, { recursive: true, force: true });
}

/** A real ssh-agent on a temp socket holding freshly generated keys. */
export interface Agent {
  socket: string;
  pid: number;
  keys: { path: string; public: string; fingerprint: string; comment: string }[];
  stop(): void;
}

export function startAgent(comments: string[]): Agent {
  const dir = mkdtempSync(join(tmpdir(), "spuff-agent-"));
  chmodSync(dir, 0o700);
  const socket = join(dir, "agent.sock");
  const out = execFileSync("ssh-agent", ["-a", socket], { encoding: "utf8" });
  const pid = Number(/SSH_AGENT_PID=(\d+)/.exec(out)?.[1]);
  const keys = comments.map((comment, i) => {
    const path = join(dir, `key${i}`);
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path, "-C", comment]);
    execFileSync("ssh-add", ["-q", path], { env: { ...process.env, SSH_AUTH_SOCK: socket } });
    const pub = readFileSync(`${path}.pub`, "utf8").trim();
    const fingerprint = execFileSync("ssh-keygen", ["-lf", `${path}.pub`], { encoding: "utf8" }).split(" ")[1];
    return { path, public: pub, fingerprint, comment };
  });
  return {
    socket,
    pid,
    keys,
    stop() {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        /* already gone */
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A git server: sshd logging in the local user `git`, with a bare repository (`git@HOST:${path}`) holding one commit. It also
 * accepts the same keys for user `spuff-test`, so tests can show that the guard refuses to sign a non-git login.
 */
export async function startGitServer(authorizedKeys: string[]): Promise<Sshd & { repo: string; path: string }> {
  const sshd = await startSshd({ authorizedKeys, extraConfig: ["AllowUsers git spuff-test"] });
  const repo = join(sshd.dir, "private.git");
  const work = join(sshd.dir, "work");
  execFileSync("git", ["init", "-q", "--bare", "-b", "main", repo]);
  execFileSync("git", ["init", "-q", "-b", "main", work]);
  writeFileSync(join(work, "README"), "private\n");
  const g = ["-C", work, "-c", "user.name=t", "-c", "user.email=t@example.com"];
  execFileSync("git", [...g, "add", "README"]);
  execFileSync("git", [...g, "commit", "-q", "-m", "init"]);
  execFileSync("git", [...g, "push", "-q", repo, "main"]);
  execFileSync("chown", ["-R", "git:git", repo]);
  // The git user's home must let it reach the repo: link it from the home directory, under a name of its own, so git
  // servers of test files running in parallel do not take each other's place.
  const home = execFileSync("sh", ["-c", "getent passwd git | cut -d: -f6"], { encoding: "utf8" }).trim();
  const path = `private-${sshd.port}.git`;
  rmSync(join(home, path), { force: true });
  execFileSync("ln", ["-s", repo, join(home, path)]);
  execFileSync("chown", ["-h", "git:git", join(home, path)]); // git refuses repositories whose path it does not own
  return {
    ...sshd,
    repo,
    path,
    async stop() {
      rmSync(join(home, path), { force: true });
      await sshd.stop();
    },
  };
}
