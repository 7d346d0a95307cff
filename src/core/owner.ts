import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, userInfo } from "node:os";
import { join } from "node:path";
import { UserError } from "./errors.js";
import { LABEL } from "./labels.js";
import { stateDir, type StateStore, type VmRecord } from "./state.js";

/**
 * Who "this machine" is, for labels (`spuff/owner`) and for the reaper's "only my VMs". The id is random, created once
 * in spuff's state directory (`owner.json`), so it survives hostname and user-name changes (a laptop whose hostname
 * follows the network). `aliases` are ids this machine used before: the sha256("user@host") ids of older spuff
 * versions, kept so their VMs stay this machine's. SPUFF_OWNER overrides everything (tests, CI jobs).
 */
export interface Owner {
  id: string;
  aliases: string[];
}

const ID_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** The id older spuff versions derived: the first 12 hex digits of sha256("user@host"). */
export function legacyOwnerId(env: NodeJS.ProcessEnv): string {
  let user = env.USER || env.LOGNAME || "";
  if (!user) {
    try {
      user = userInfo().username;
    } catch {
      user = "unknown";
    }
  }
  return process.getBuiltinModule("node:crypto").createHash("sha256").update(`${user}@${hostname()}`).digest("hex").slice(0, 12);
}

function read(file: string): Owner | undefined {
  if (!existsSync(file)) return undefined;
  let data: Partial<Owner>;
  try {
    data = JSON.parse(readFileSync(file, "utf8")) as Partial<Owner>;
  } catch (err) {
    throw new UserError(`cannot read spuff's owner id from ${file}: ${(err as Error).message}`, {
      hint: "it holds this machine's owner id; restore it from a backup, or remove it to start a new id (this machine's VMs then count as another owner's)",
    });
  }
  if (typeof data.id !== "string" || !ID_RE.test(data.id)) {
    throw new UserError(`${file}: "id" is not a valid owner id`, { hint: "restore the file, or remove it to start a new id" });
  }
  const aliases = Array.isArray(data.aliases) ? data.aliases.filter((a): a is string => typeof a === "string" && ID_RE.test(a)) : [];
  return { id: data.id, aliases };
}

const cache = new Map<string, Owner>();

/** This machine's owner id and aliases, creating the id on first use (atomically: two first runs agree on one id). */
export function owner(env: NodeJS.ProcessEnv = process.env): Owner {
  if (env.SPUFF_OWNER) return { id: env.SPUFF_OWNER, aliases: [] };
  const dir = stateDir(env);
  const file = join(dir, "owner.json");
  const cached = cache.get(file);
  if (cached) return cached;
  let found = read(file);
  if (!found) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fresh: Owner = { id: process.getBuiltinModule("node:crypto").randomBytes(6).toString("hex"), aliases: [legacyOwnerId(env)] };
    const tmp = `${file}.${process.pid}.${process.getBuiltinModule("node:crypto").randomBytes(6).toString("hex")}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(fresh, null, 2)}\n`, { mode: 0o600 });
    try {
      linkSync(tmp, file); // fails with EEXIST when another spuff created it first: then that one is the id
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      rmSync(tmp, { force: true });
    }
    found = read(file) as Owner;
  }
  cache.set(file, found);
  return found;
}

/** The owner label value spuff writes on new VMs. */
export function ownerId(env: NodeJS.ProcessEnv = process.env): string {
  return owner(env).id;
}

/** Whether `labels` carry one of this machine's owner ids. */
export function ownedLabels(labels: Record<string, string>, me: Owner): boolean {
  const o = labels[LABEL.owner];
  return o !== undefined && (o === me.id || me.aliases.includes(o));
}

/**
 * The local record that belongs to exactly this VM: same provider and name, and the same request id (or, for records
 * older than request ids, the same provider id). A record of another VM that happens to share the name is not it.
 */
export function recordOf(state: Pick<StateStore, "read">, vm: { provider: string; name: string; id: string; labels: Record<string, string> }): VmRecord | undefined {
  const r = state.read(vm.name);
  if (!r || r.provider !== vm.provider) return undefined;
  const rid = vm.labels[LABEL.requestId];
  if (r.requestId !== undefined) return rid === r.requestId ? r : undefined;
  return r.id !== undefined && r.id === vm.id ? r : undefined;
}

/** This machine's VM: it carries one of this machine's owner ids, or this machine holds its record (its keys). */
export function isMine(state: Pick<StateStore, "read">, vm: { provider: string; name: string; id: string; labels: Record<string, string> }, me: Owner): boolean {
  return ownedLabels(vm.labels, me) || recordOf(state, vm) !== undefined;
}
