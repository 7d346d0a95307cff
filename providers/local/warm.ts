import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, realpathSync, rmSync, statSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { dirname, join, relative } from "node:path";
import { gunzipSync } from "node:zlib";
import { parse, stringify } from "yaml";
import { MOUNT_WORKSPACE } from "../../src/cloudinit/render.js";
import { ProviderError } from "../../src/core/errors.js";
import { parseKey } from "../../src/ssh/ssh2.js";
import type { BaseImage } from "./image.js";
import { qemuArgs, qemuBinary, type QemuSpec } from "./qemu.js";

/**
 * Warm start for local VMs (docs/adr/0009-local-warm-start.md): a VM is restored from a machine state saved once per
 * image, QEMU, machine arguments and user-data shape, then given its own identity over a virtio-serial channel.
 */

/**
 * `up`'s cloud-init check on a restored VM: cloud-init's result (written when it finished in the warm-up VM) with no
 * errors; prints it either way. Bash builtins only (the login shell of spuff's user): under TCG every command the
 * check starts costs a visible fraction of a second.
 */
export const WARM_CLOUD_INIT_CHECK = `r=; IFS= read -r -d '' r < /run/cloud-init/result.json; printf '%s\\n' "$r"; r=\${r//[[:space:]]/}; [[ $r == *[{,]'"errors":[]'* ]]`;

/** The virtio-serial port the guest's warm-identity service reads (/dev/virtio-ports/NAME). */
export const IDENTITY_PORT = "org.spuff.identity";
/** Where the warm-up VM's cloud-init installs the guest half (providers/local/warm-identity.sh). */
export const WARM_IDENTITY = "/usr/local/lib/spuff/warm-identity";
/** The warm-up VM's hostname; warm-identity.sh replaces it in /etc/hosts. */
export const WARM_HOSTNAME = "spuff-warm";

/** The guest half of the identity channel, shipped next to this file (in source and build alike). */
function scriptPath(): string {
  for (const rel of ["./warm-identity.sh", "../../../providers/local/warm-identity.sh"]) {
    const p = new URL(rel, import.meta.url).pathname;
    if (existsSync(p)) return p;
  }
  throw new Error("providers/local/warm-identity.sh is missing from this installation");
}

/** QEMU arguments a warm VM adds to the cold ones, at save and restore alike: the identity channel and a VM generation id. */
export function warmDeviceArgs(channel: string): string[] {
  return [
    "-device", "virtio-serial-pci,id=spuffser",
    "-chardev", `socket,id=spuffid,path=${channel},server=on,wait=off`,
    "-device", `virtserialport,bus=spuffser.0,chardev=spuffid,name=${IDENTITY_PORT}`,
    // A new generation id on every start: a Linux guest (5.18+) reseeds its RNG when it changes, i.e. after restore.
    "-device", "vmgenid,guid=auto",
  ];
}

/**
 * The per-VM fields of spuff's user-data: what a restored VM is given over the channel. Not its host key: the guest
 * makes that itself after the restore and answers with its public half.
 */
export interface Identity {
  hostname: string;
  user: string;
  authorizedKeys: string[];
  /** /etc/spuff/idle.conf as the user-data writes it (idle timeout, TTL, login user). */
  idleConf: string;
}

type Doc = Record<string, unknown> & {
  hostname?: string;
  ssh_keys?: { ed25519_private?: string; ed25519_public?: string };
  users?: { name?: string; ssh_authorized_keys?: string[] }[];
  write_files?: { path: string; content: string; permissions?: string; owner?: string }[];
};

export const IDLE_CONF = "/etc/spuff/idle.conf";

export function parseUserData(userData: string | Buffer): Doc {
  const text = typeof userData === "string" ? userData : gunzipSync(userData).toString("utf8");
  const doc = parse(text) as unknown;
  // Not a mapping (empty, or not cloud-config at all): no identity, so the VM boots cold.
  return doc && typeof doc === "object" && !Array.isArray(doc) ? (doc as Doc) : {};
}

/** The identity in spuff's user-data; undefined when it is not user-data of the shape spuff renders. */
export function identityOf(doc: Doc): Identity | undefined {
  const user = doc.users?.[0];
  const idle = doc.write_files?.find((f) => f.path === IDLE_CONF);
  const k = doc.ssh_keys;
  if (!doc.hostname || !user?.name || !user.ssh_authorized_keys?.length || !idle || !k?.ed25519_private || !k.ed25519_public) return undefined;
  return { hostname: doc.hostname, user: user.name, authorizedKeys: user.ssh_authorized_keys, idleConf: idle.content };
}

/** The user-data with `id` in place of its identity, and `hostKey` as its host key pair (none without it). */
export function withIdentity(doc: Doc, id: Omit<Identity, "user">, hostKey?: { private: string; public: string }): Doc {
  const copy = structuredClone(doc);
  copy.hostname = id.hostname;
  if (hostKey) copy.ssh_keys = { ed25519_private: hostKey.private, ed25519_public: hostKey.public };
  else delete copy.ssh_keys;
  if (copy.users?.[0]) copy.users[0].ssh_authorized_keys = id.authorizedKeys;
  for (const f of copy.write_files ?? []) if (f.path === IDLE_CONF) f.content = id.idleConf;
  return copy;
}

/**
 * A workspace volume is not part of a saved state (its disk is the VM's own): the user-data's mount step
 * (`mount-workspace USER DIR DEVICE...`) is left out of the state, where ~/work becomes a plain directory as without
 * a volume, and returned, for spuff to run on the restored VM once the disk is plugged in. The mount script itself
 * stays in the state's files.
 */
export function splitWorkspace(doc: Doc): { doc: Doc; mount?: string[] } {
  const runcmd = (doc as { runcmd?: unknown[] }).runcmd;
  const i = Array.isArray(runcmd) ? runcmd.findIndex((c) => Array.isArray(c) && c[0] === MOUNT_WORKSPACE) : -1;
  if (!Array.isArray(runcmd) || i < 0) return { doc };
  const mount = (runcmd[i] as unknown[]).map(String);
  const [, user, dir] = mount;
  const copy = structuredClone(doc) as Doc & { runcmd: unknown[] };
  copy.runcmd[i] = ["install", "-d", "-o", user, "-g", user, dir];
  return { doc: copy, mount };
}

/**
 * Everything in the user-data but its identity, hashed: a saved state is used only for user-data of the same shape
 * (same user, packages, git hosts, setup, files), since all of that already ran in it.
 */
export function shapeHash(doc: Doc): string {
  const blank = withIdentity(doc, { hostname: "", authorizedKeys: [], idleConf: "" });
  return createHash("sha256").update(JSON.stringify(blank)).digest("hex");
}

/**
 * The seed ISO of a restored VM (read only if `spuff start` boots it cold later): its own user-data without the host
 * key pair. The restored guest made its own key, which that cold boot keeps: cloud-init sees the instance it already
 * ran (warm-identity.sh renames it to the seed's instance id) and does not run its per-instance ssh module again.
 */
export function warmSeedUserData(userData: string | Buffer): string {
  const d = parseUserData(userData);
  delete d.ssh_keys;
  return `#cloud-config\n${stringify(d, { lineWidth: 0 })}`;
}

/** The warm-up VM's user-data: the VM's own with a throwaway identity and host key, plus the guest half of the channel. */
export function warmUpUserData(doc: Doc, id: Omit<Identity, "user">, hostKey: { private: string; public: string }): string {
  const d = withIdentity(doc, id, hostKey);
  d.write_files = [
    ...(d.write_files ?? []),
    { path: WARM_IDENTITY, content: readFileSync(scriptPath(), "utf8"), permissions: "0755", owner: "root:root" },
    {
      path: "/etc/systemd/system/spuff-warm-identity.service",
      content: `[Unit]\nDescription=spuff: this VM's identity after a restore (docs/adr/0009-local-warm-start.md)\n\n[Service]\nType=simple\nExecStart=${WARM_IDENTITY} serve\n`,
      permissions: "0644",
    },
  ];
  return `#cloud-config\n${stringify(d, { lineWidth: 0 })}`;
}

/** The identity line warm-identity.sh reads: the VM's own fields, a fresh machine-id, the clock and fresh randomness. */
export function identityLine(id: Identity, o: { machineId: string; instanceId: string; now?: number }): string {
  const b = (s: string | Buffer) => Buffer.from(s).toString("base64");
  // Tokens the guest checks strictly are sent as they are; multi-line fields and the randomness in base64.
  const tokens = [id.hostname, o.machineId, ((o.now ?? Date.now()) / 1000).toFixed(3), o.instanceId];
  for (const t of tokens) if (!/^[A-Za-z0-9.-]+$/.test(t)) throw new ProviderError(`not a valid identity field: ${JSON.stringify(t)}`);
  const encoded = [`${id.authorizedKeys.join("\n")}\n`, id.idleConf, randomBytes(64)].map(b);
  return `spuff-identity-2 ${[...tokens, ...encoded].join(" ")}\n`;
}

/** What the guest wrote, made safe to show: printable ASCII only, bounded. */
const shown = (s: string) => s.replace(/[^\x20-\x7e]/g, "?").slice(0, 200);

/** "ok", then one ed25519 public key (type and base64 only: 51 bytes of key blob are 68 base64 characters). */
const OK_ANSWER = /^ok (ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43})$/;

/**
 * The host key a restored VM made itself, from its answer to the identity line. The VM is untrusted: exactly "ok"
 * and one ed25519 public key (no comment, no options) on one line; anything else is refused, and nothing is pinned.
 */
export function parseIdentityAnswer(answer: string, name: string): string {
  const m = OK_ANSWER.exec(answer);
  const parsed = m ? parseKey(m[1]) : undefined;
  const key = parsed && !(parsed instanceof Error) && !Array.isArray(parsed) ? parsed : undefined;
  if (m && key?.type === "ssh-ed25519" && !key.isPrivateKey()) return m[1];
  const refused = answer.startsWith("error: ");
  throw new ProviderError(
    refused ? `the VM refused its identity: ${JSON.stringify(shown(answer))}` : "the VM answered its identity with something other than \"ok\" and one ed25519 public key",
    {
      notes: refused ? [] : [`it wrote: ${JSON.stringify(shown(answer))}`],
      hint: `nothing of ${name} was pinned; \`spuff up --cold\` boots without the saved state`,
    },
  );
}

/** What identifies a file cheaply: a rebuilt or replaced image, kernel or QEMU binary changes it. */
function fileId(path: string): string {
  const real = realpathSync(path);
  const s = statSync(real);
  return `${real}:${s.size}:${s.mtimeMs}:${s.ino}`;
}

export function qemuVersion(): string {
  const r = spawnSync(qemuBinary(), ["--version"], { encoding: "utf8" });
  return (r.stdout ?? "").split("\n")[0].trim();
}

/**
 * The key a saved state is stored and found under: the base image (disk, kernel, initrd, and a pulled image's SHA512),
 * the QEMU binary and its version, the machine arguments with per-VM paths and ports left out (accelerator, CPUs,
 * memory, disk size, network, devices), and the user-data's shape. Anything else is a different state.
 */
export function warmKey(p: { image: BaseImage; machine: Omit<QemuSpec, "name" | "overlay" | "seed" | "sshPort" | "pidfile" | "qmp" | "console">; diskMiB: number; shape: string; qemuBinaryPath?: string }): { key: string; inputs: Record<string, unknown> } {
  const sums = join(dirname(p.image.disk), "SHA512");
  const which = spawnSync("sh", ["-c", `command -v ${qemuBinary()}`], { encoding: "utf8" }).stdout.trim();
  const machineArgs = [
    ...qemuArgs({ ...p.machine, name: "warm", overlay: "@disk", seed: "@seed", sshPort: 1, pidfile: "@pid", qmp: "@qmp", console: "@console" }).filter((a) => a !== "spuff-warm"),
    ...warmDeviceArgs("@channel"),
  ];
  const inputs = {
    image: [p.image.disk, p.image.kernel, p.image.initrd].filter((f): f is string => Boolean(f)).map(fileId),
    imageSha512: existsSync(sums) ? readFileSync(sums, "utf8").trim() : undefined,
    qemu: qemuVersion(),
    qemuBinary: which ? fileId(which) : qemuBinary(),
    machineArgs,
    diskMiB: p.diskMiB,
    shape: p.shape,
    // The guest half of the channel is part of the saved state.
    identityScript: createHash("sha256").update(readFileSync(scriptPath())).digest("hex"),
  };
  return { key: createHash("sha256").update(JSON.stringify(inputs)).digest("hex").slice(0, 16), inputs };
}

/** Saved states live next to the image they were made from (in the cache), one directory per key. */
export function warmRoot(cacheDir: string, image: BaseImage): string {
  const dir = dirname(image.disk);
  const inCache = !relative(join(cacheDir, "images"), dir).startsWith("..");
  return inCache ? join(dir, "warm") : join(cacheDir, "warm");
}

/** The inputs every state shares at one time: image, QEMU and the guest script (not the config's size or shape). */
const GLOBAL_INPUTS = ["image", "imageSha512", "qemu", "qemuBinary", "identityScript"] as const;

/**
 * Removes the saved states that can no longer be used (made from another image, QEMU or guest script than `current`,
 * or marked bad) and that no local VM's disk is layered on. States of other configs (size, network, user-data shape)
 * made with the same image and QEMU stay.
 */
export function pruneStates(root: string, current: Record<string, unknown>, inUse: (dir: string) => boolean): string[] {
  if (!existsSync(root)) return [];
  const removed: string[] = [];
  for (const n of readdirSync(root)) {
    const dir = join(root, n);
    if (n.includes(".build-") || n.endsWith(".lock") || inUse(dir)) continue;
    let inputs: Record<string, unknown> | undefined;
    try {
      inputs = (JSON.parse(readFileSync(join(dir, "warm.json"), "utf8")) as { inputs: Record<string, unknown> }).inputs;
    } catch {
      inputs = undefined;
    }
    const superseded = !inputs || existsSync(join(dir, "bad")) || GLOBAL_INPUTS.some((k) => JSON.stringify(inputs[k]) !== JSON.stringify(current[k]));
    if (!superseded) continue;
    rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

/** A minimal QMP client: one command at a time, answers in order. */
export class Qmp {
  private buf = "";
  private waiting: ((v: Record<string, unknown>) => void)[] = [];
  private constructor(private readonly sock: Socket) {
    sock.on("data", (d: Buffer) => {
      this.buf += d.toString("utf8");
      for (let i = this.buf.indexOf("\n"); i >= 0; i = this.buf.indexOf("\n")) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if ("event" in msg) continue;
        this.waiting.shift()?.(msg);
      }
    });
    sock.on("close", () => {
      for (const w of this.waiting.splice(0)) w({ error: { desc: "QMP connection closed" } });
    });
  }

  static async open(path: string, timeoutMs = 10_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const c = createConnection(path);
          c.once("connect", () => resolve(c));
          c.once("error", reject);
        });
        const q = new Qmp(sock);
        await new Promise<Record<string, unknown>>((r) => q.waiting.push(r)); // the greeting
        await q.run("qmp_capabilities");
        return q;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  run(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.waiting.push((msg) => {
        if (msg.error) reject(new Error(`QMP ${execute}: ${(msg.error as { desc?: string }).desc ?? JSON.stringify(msg.error)}`));
        else resolve((msg.return ?? {}) as Record<string, unknown>);
      });
      this.sock.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Stops the guest and writes its whole machine state to `file` (QMP migrate to a file); the disk is then consistent. */
export async function saveState(q: Qmp, file: string): Promise<void> {
  await q.run("stop");
  await q.run("migrate", { uri: `exec:cat > '${file.replaceAll("'", "'\\''")}'` });
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    const r = await q.run("query-migrate");
    if (r.status === "completed") return;
    if (r.status === "failed" || r.status === "cancelled") throw new ProviderError(`saving the machine state failed: ${String(r["error-desc"] ?? r.status)}`);
    if (Date.now() > deadline) throw new ProviderError("saving the machine state took more than 10 minutes");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `-incoming` for a restore from `file`. */
export function incomingArgs(file: string): string[] {
  return ["-incoming", `exec:cat '${file.replaceAll("'", "'\\''")}'`];
}

/** Waits until QEMU has read the saved state, then lets the guest run. */
export async function resumeRestored(q: Qmp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await q.run("query-status");
    if (r.status === "paused" || r.status === "postmigrate" || r.status === "prelaunch") {
      await q.run("cont");
      return;
    }
    if (r.status === "running") return;
    if (r.status !== "inmigrate") throw new ProviderError(`restoring the machine state failed: QEMU is ${String(r.status)}`);
    if (Date.now() > deadline) throw new ProviderError(`restoring the machine state took more than ${Math.round(timeoutMs / 1000)} s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * One exchange on the identity channel: connects to QEMU's end of it (a Unix socket only this user can reach), sends
 * `line` (if any) and returns the one line the guest writes back (without its newline). The guest is untrusted: a
 * second line, an answer longer than 4 KiB, silence and a closed channel are errors; the caller checks the line.
 */
export function channelExchange(path: string, line: string | undefined, timeoutMs: number, signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = "";
    let done = false;
    const c = createConnection(path);
    const finish = (err?: Error, answer?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      c.destroy();
      if (err) reject(err);
      else resolve(answer ?? "");
    };
    const onAbort = () => finish(signal?.reason instanceof Error ? signal.reason : new Error("aborted"));
    signal?.addEventListener("abort", onAbort);
    const timer = setTimeout(() => finish(new ProviderError(`the VM did not answer on its identity channel within ${Math.round(timeoutMs / 1000)} s${got ? ` (it wrote ${JSON.stringify(shown(got))})` : ""}`)), timeoutMs);
    c.once("connect", () => {
      if (line) c.write(line);
    });
    c.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      if (got.length > 4096) return finish(new ProviderError("the VM wrote too much on its identity channel"));
      const nl = got.indexOf("\n");
      if (nl < 0) return;
      if (got.length > nl + 1) return finish(new ProviderError(`the VM wrote more than one line on its identity channel: ${JSON.stringify(shown(got))}`));
      finish(undefined, got.slice(0, nl));
    });
    c.once("error", (e) => finish(new ProviderError(`cannot reach the VM's identity channel: ${e.message}`)));
    c.once("close", () => finish(new ProviderError(`the identity channel closed before the VM answered${got ? ` (it wrote ${JSON.stringify(shown(got))})` : ""}`)));
  });
}
