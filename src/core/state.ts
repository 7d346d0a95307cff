import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
// node:crypto and node:child_process load when first used (process.getBuiltinModule): ~8 ms of each start-up.
import { homedir, userInfo } from "node:os";
import { dirname, join } from "node:path";
import { UserError } from "./errors.js";
import { compareNames } from "./order.js";
import type { SshEndpoint } from "./provider.js";

/**
 * Local state caches only what a provider cannot hold: the per-VM client key pair and the VM's pinned host key.
 * Layout: $XDG_STATE_HOME/spuff/vms/<name>/{vm.json,id_ed25519,id_ed25519.pub}, plus generated known_hosts.
 * Every write is atomic (temp file + rename); read-modify-write sequences run under `withLock`.
 */
export function stateDir(env: NodeJS.ProcessEnv): string {
  if (env.SPUFF_STATE_DIR) return env.SPUFF_STATE_DIR;
  const base = env.XDG_STATE_HOME || join(env.HOME || homedir(), ".local", "state");
  return join(base, "spuff");
}

/**
 * The cache holds the local provider's images, which `sudo spuff image build` writes (debootstrap needs root) and
 * `spuff up` as the user reads. Under sudo, HOME is root's: then the cache is the invoking user's (SUDO_USER), and
 * what spuff writes there is handed to that user (`sudoInvoker`).
 */
export function cacheDir(env: NodeJS.ProcessEnv): string {
  if (env.SPUFF_CACHE_DIR) return env.SPUFF_CACHE_DIR;
  const invoker = env.XDG_CACHE_HOME ? undefined : sudoInvoker(env);
  if (invoker && (!env.HOME || env.HOME === userInfo().homedir)) return join(invoker.home, ".cache", "spuff");
  const base = env.XDG_CACHE_HOME || join(env.HOME || homedir(), ".cache");
  return join(base, "spuff");
}

/** The user who ran spuff through sudo (root now, SUDO_USER/SUDO_UID/SUDO_GID set by sudo), with their home. */
export function sudoInvoker(env: NodeJS.ProcessEnv): { user: string; uid: number; gid: number; home: string } | undefined {
  if (process.getuid?.() !== 0 || !env.SUDO_USER || env.SUDO_USER === "root") return undefined;
  const uid = Number(env.SUDO_UID);
  const gid = Number(env.SUDO_GID);
  if (!Number.isInteger(uid) || uid <= 0 || !Number.isInteger(gid)) return undefined;
  const entry = process.getBuiltinModule("node:child_process").spawnSync("getent", ["passwd", env.SUDO_USER], { encoding: "utf8" }).stdout?.trim().split(":");
  const home = entry?.[5];
  if (!home || Number(entry[2]) !== uid) return undefined;
  return { user: env.SUDO_USER, uid, gid, home };
}

export function configDir(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), ".config");
  return join(base, "spuff");
}

/** Writes `data` to `file` atomically: a crash or a concurrent reader sees the old or the new content, never a mix. */
export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${process.getBuiltinModule("node:crypto").randomBytes(6).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", mode);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

/** The file's text, or undefined when it cannot be read (missing...). */
function readIfExists(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** Whether a process with this id exists (EPERM: it exists but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

let bootTime: string | undefined;

/**
 * When process `pid` started, as an opaque text that is equal for the same process and differs for a later process
 * given the same pid (after a reboot, or once the pid wrapped around): on Linux the boot time (`btime` in /proc/stat)
 * and field 22 of /proc/PID/stat (start time in clock ticks since boot); elsewhere `ps -o lstart=`. Undefined when the
 * process does not exist or its start time cannot be read.
 */
export function processStart(pid: number): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  if (process.platform === "linux") {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      // The command name (field 2) is in parentheses and may hold spaces or ")": fields after it follow the last ")".
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      bootTime ??= /^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"))?.[1] ?? "?";
      return `${bootTime}:${fields[19]}`;
    } catch {
      return undefined;
    }
  }
  const r = process.getBuiltinModule("node:child_process").spawnSync("ps", ["-o", "lstart=", "-p", String(pid)], { encoding: "utf8" });
  const text = r.status === 0 ? r.stdout.trim() : "";
  return text || undefined;
}

/** A running process, told apart from a later one that reuses its pid. */
export interface ProcessRef {
  pid: number;
  /** `processStart(pid)` when it was recorded; missing in records written before spuff kept it. */
  start?: string;
}

export function thisProcess(): ProcessRef {
  return { pid: process.pid, start: processStart(process.pid) };
}

/**
 * Whether the process is still the one recorded: its pid exists and started at the recorded time. A record without
 * a start time (older spuff) counts as alive while the pid exists, as before.
 */
export function processAlive(ref: ProcessRef): boolean {
  if (!pidAlive(ref.pid)) return false;
  if (ref.start === undefined) return true;
  const now = processStart(ref.pid);
  // EPERM-only processes whose start cannot be read are taken at their word (the pid exists).
  return now === undefined || now === ref.start;
}

/**
 * Runs `fn` while holding an exclusive lock file in `dir`. A lock whose owner process is dead is broken.
 * Waits up to `timeoutMs`, then fails with a hint naming the lock file.
 */
export async function withLock<T>(dir: string, fn: () => Promise<T> | T, timeoutMs = 30_000): Promise<T> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const lock = join(dir, ".lock");
  const deadline = Date.now() + timeoutMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    try {
      const fd = openSync(lock, "wx", 0o600);
      const me = thisProcess();
      writeSync(fd, `${me.pid} ${me.start ?? ""}`.trim());
      closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      let owner = Number.NaN;
      let start: string | undefined;
      try {
        const [pid, ...rest] = readFileSync(lock, "utf8").trim().split(" ");
        owner = Number(pid);
        start = rest.join(" ") || undefined;
      } catch {
        continue; // released between our open and read
      }
      // A lock whose process died, or whose pid now belongs to a later process (after a reboot), is stale.
      if (Number.isInteger(owner) && owner > 0 && !processAlive({ pid: owner, start })) {
        rmSync(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new UserError(`spuff state is locked by process ${owner}`, {
          hint: `wait for that spuff command to finish; if no spuff runs, remove ${lock}`,
        });
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

export interface VmRecord {
  name: string;
  provider: string;
  /** Provider id, once known. */
  id?: string;
  user: string;
  createdAt: string;
  /** The VM's pinned host public key, "ssh-ed25519 AAAA...". */
  hostKey: string;
  /**
   * Set only while `up` replaces the host key from user-data (docs/adr/0008-host-key-rotation.md): the new key the VM
   * made, pinned next to `hostKey` until the VM is seen presenting it.
   */
  nextHostKey?: string;
  endpoint?: SshEndpoint;
  /** The `spuff/request-id` label of the VM this record belongs to: how spuff finds exactly that VM, never by name. */
  requestId?: string;
  /**
   * Set while `spuff up` creates the VM: its process id (and `upStart`, when that process started). A record whose
   * `up` died (crash, second Ctrl-C) is reaped. Cleared when `up` ends, whatever the outcome.
   */
  upPid?: number;
  upStart?: string;
  /** Extra provider data spuff must remember (e.g. the local provider's VM directory). */
  extra?: Record<string, unknown>;
}

export class StateStore {
  constructor(readonly dir: string) {}

  vmDir(name: string): string {
    return join(this.dir, "vms", name);
  }

  clientKeyPath(name: string): string {
    return join(this.vmDir(name), "id_ed25519");
  }

  knownHostsPath(): string {
    return join(this.dir, "known_hosts");
  }

  read(name: string): VmRecord | undefined {
    const file = join(this.vmDir(name), "vm.json");
    if (!existsSync(file)) return undefined;
    try {
      return JSON.parse(readFileSync(file, "utf8")) as VmRecord;
    } catch {
      return undefined;
    }
  }

  list(): VmRecord[] {
    const root = join(this.dir, "vms");
    if (!existsSync(root)) return [];
    return readdirSync(root)
      .filter((n) => statSync(join(root, n)).isDirectory())
      .map((n) => this.read(n))
      .filter((r): r is VmRecord => r !== undefined)
      .sort((a, b) => compareNames(a.name, b.name));
  }

  /**
   * Reserves `record.name` on this machine: creates the record and the key pair under the state lock, or fails when
   * any state for that name exists (a VM, an `up` creating one, or a record that cannot be read). Two `spuff up` of
   * the same name never both get past this.
   */
  async reserve(record: VmRecord, clientKey: { private: string; public: string }): Promise<void> {
    await withLock(this.dir, () => {
      const dir = this.vmDir(record.name);
      if (existsSync(dir)) {
        const current = this.read(record.name);
        const hint = [`connect with \`spuff ssh ${record.name}\`, or remove it with \`spuff down ${record.name}\``, "or pick another name: `spuff up OTHER-NAME`"];
        if (!current) {
          throw new UserError(`the name "${record.name}" is taken: ${dir} exists but holds no readable VM record`, {
            hint: [`look at ${dir}; if no VM of that name exists, remove the directory`, "or pick another name: `spuff up OTHER-NAME`"],
          });
        }
        if (current.upPid !== undefined && processAlive({ pid: current.upPid, start: current.upStart })) {
          throw new UserError(`a VM named "${record.name}" is being created right now (by spuff process ${current.upPid})`, {
            hint: [`wait for it, then \`spuff ssh ${record.name}\``, "or pick another name: `spuff up OTHER-NAME`"],
          });
        }
        throw new UserError(`a VM named "${record.name}" already exists`, { hint });
      }
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileAtomic(join(dir, "id_ed25519"), clientKey.private, 0o600);
      writeFileAtomic(join(dir, "id_ed25519.pub"), `${clientKey.public}\n`, 0o644);
      writeFileAtomic(join(dir, "vm.json"), `${JSON.stringify(record, null, 2)}\n`);
      this.writeKnownHosts();
    });
  }

  /** Removes the record of `name` only if it is the one of request `requestId` (never another run's record). */
  async removeOwn(name: string, requestId: string): Promise<boolean> {
    return withLock(this.dir, () => {
      if (this.read(name)?.requestId !== requestId) return false;
      rmSync(this.vmDir(name), { recursive: true, force: true });
      this.writeKnownHosts();
      return true;
    });
  }

  /** Saves the record and the per-VM key pair; refreshes known_hosts. */
  async save(record: VmRecord, clientKey?: { private: string; public: string }): Promise<void> {
    await withLock(this.dir, () => {
      const dir = this.vmDir(record.name);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (clientKey) {
        writeFileAtomic(join(dir, "id_ed25519"), clientKey.private, 0o600);
        writeFileAtomic(join(dir, "id_ed25519.pub"), `${clientKey.public}\n`, 0o644);
      }
      writeFileAtomic(join(dir, "vm.json"), `${JSON.stringify(record, null, 2)}\n`);
      this.writeKnownHosts();
    });
  }

  async update(name: string, change: (r: VmRecord) => VmRecord): Promise<VmRecord | undefined> {
    return withLock(this.dir, () => {
      const current = this.read(name);
      if (!current) return undefined;
      const next = change(current);
      writeFileAtomic(join(this.vmDir(name), "vm.json"), `${JSON.stringify(next, null, 2)}\n`);
      this.writeKnownHosts();
      return next;
    });
  }

  async remove(name: string): Promise<void> {
    await withLock(this.dir, () => {
      rmSync(this.vmDir(name), { recursive: true, force: true });
      this.writeKnownHosts();
    });
  }

  /**
   * known_hosts with one line per VM key under its HostKeyAlias `spuff-<name>` (two during a host key rotation);
   * regenerated from the VM records.
   */
  private writeKnownHosts(): void {
    const lines = this.list().flatMap((r) => [r.hostKey, ...(r.nextHostKey ? [r.nextHostKey] : [])].map((k) => `${hostAlias(r.name)} ${k}`));
    const text = lines.length ? `${lines.join("\n")}\n` : "";
    // Most record updates change no key: the file stays as it is (no write, no fsync).
    if (readIfExists(this.knownHostsPath()) === text) return;
    writeFileAtomic(this.knownHostsPath(), text, 0o644);
  }
}

export function hostAlias(name: string): string {
  return `spuff-${name}`;
}
