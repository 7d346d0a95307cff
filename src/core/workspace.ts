import type { Config } from "../config/defaults.js";
import { parseDuration, sizeMiB } from "../config/units.js";
import { ProviderError, UserError } from "./errors.js";
import { LABEL, labelTime, MANAGED_BY_VALUE } from "./labels.js";
import { ownedLabels, type Owner } from "./owner.js";
import { formatMoney } from "./view.js";
import type { Progress, Provider, Volume } from "./provider.js";

/**
 * Workspace volumes (docs/workspaces.md): the compute is ephemeral, the work is not. Each VM of a provider with
 * `features.volumes` gets a volume named after it (labels, never a name guess), mounted at ~/work. `down`, idle and TTL
 * destroy the VM and keep the volume; the next `up` of that name attaches it again; the reaper deletes it
 * `spuff/keep` seconds after its last detach.
 */
export const WORKSPACE_KIND = "workspace";

/** Days before a kept workspace's deletion when `ls` starts warning. */
export const WARN_BEFORE_SECONDS = 3 * 86400;

/** The stable JSON shape of a workspace in `workspace ls --json` (docs/json.md). */
export interface WorkspaceView {
  name: string;
  provider: string;
  id: string;
  /** "attached" (a VM has it), "kept" (detached, waiting for the next `up`). */
  status: "attached" | "kept";
  sizeGiB: number;
  location: string | null;
  /** The provider id of the VM it is attached to. */
  attachedTo: string | null;
  createdAt: string | null;
  /** When a VM last had it: now while attached, else when it was last seen detached. */
  lastUsedAt: string | null;
  keepSeconds: number | null;
  /** When the reaper deletes it (kept workspaces only; null while attached or when the detach time is not known yet). */
  deleteAt: string | null;
  /** Seconds until deleteAt (negative: due). */
  deleteInSeconds: number | null;
  pricePerMonth: { amount: number; currency: string } | null;
  owner: string | null;
  mine: boolean;
  /** "expired" when `spuff reap` deletes it now, else null. */
  reap: string | null;
  labels: Record<string, string>;
}

export function workspaceSizeGiB(config: Config): number {
  return Math.max(1, Math.ceil(sizeMiB(config.workspace.size) / 1024));
}

export function keepSeconds(config: Config): number {
  return Math.floor(parseDuration(config.workspace.keep) / 1000);
}

/** Whether `config` gives new VMs of `provider` a workspace volume. */
export function wantsVolume(config: Config, provider: Provider): boolean {
  return config.workspace.volume && provider.info().features.volumes;
}

export function isWorkspace(v: Volume): boolean {
  return v.labels[LABEL.managedBy] === MANAGED_BY_VALUE && v.labels[LABEL.kind] === WORKSPACE_KIND;
}

export function workspaceLabels(input: { name: string; owner: string; requestId: string; now: Date; keepSeconds: number }): Record<string, string> {
  const t = String(Math.floor(input.now.getTime() / 1000));
  return {
    [LABEL.managedBy]: MANAGED_BY_VALUE,
    [LABEL.kind]: WORKSPACE_KIND,
    [LABEL.name]: input.name,
    [LABEL.owner]: input.owner,
    [LABEL.createdAt]: t,
    [LABEL.requestId]: input.requestId,
    [LABEL.keep]: String(input.keepSeconds),
  };
}

/** This owner's workspace volumes named `name` (labels spuff/name and spuff/owner, never the volume's own name). */
export async function findWorkspace(provider: Provider, name: string, me: Owner, signal?: AbortSignal): Promise<Volume | undefined> {
  const found = ((await provider.listVolumes?.(signal)) ?? []).filter((v) => isWorkspace(v) && v.labels[LABEL.name] === name && ownedLabels(v.labels, me));
  if (found.length > 1) {
    throw new ProviderError(`${found.length} workspace volumes of this machine are labelled spuff/name=${name}`, {
      notes: found.map((v) => `volume ${v.id}${v.location ? ` in ${v.location}` : ""}, ${v.sizeGiB} GiB${v.attachedTo ? `, attached to ${v.attachedTo}` : ""}`),
      hint: `keep one: delete the others with \`spuff workspace rm ${name} --id ID\``,
    });
  }
  return found[0];
}

/** When the volume was last seen detached: its spuff/detached-at, unless an attach came after it. */
function detachedAt(v: Volume): Date | undefined {
  const detached = labelTime(v.labels, LABEL.detachedAt);
  const attached = labelTime(v.labels, LABEL.attachedAt);
  if (!detached || (attached && attached.getTime() > detached.getTime())) return undefined;
  return detached;
}

/** The volume's keep period in seconds (label spuff/keep), null when it has none. */
export function keepOf(v: Volume): number | null {
  return /^\d{1,12}$/.test(v.labels[LABEL.keep] ?? "") ? Number(v.labels[LABEL.keep]) : null;
}

export function toWorkspaceView(v: Volume, now: Date, me: Owner, busy = false): WorkspaceView {
  const keep = keepOf(v);
  const since = v.attachedTo ? undefined : detachedAt(v);
  const deleteAt = since && keep !== null ? new Date(since.getTime() + keep * 1000) : undefined;
  const deleteIn = deleteAt ? Math.floor((deleteAt.getTime() - now.getTime()) / 1000) : null;
  const created = labelTime(v.labels, LABEL.createdAt) ?? (v.createdAt ? new Date(v.createdAt) : undefined);
  const lastUsed = v.attachedTo ? now : (since ?? labelTime(v.labels, LABEL.attachedAt));
  return {
    name: v.name,
    provider: v.provider,
    id: v.id,
    status: v.attachedTo ? "attached" : "kept",
    sizeGiB: v.sizeGiB,
    location: v.location ?? null,
    attachedTo: v.attachedTo ?? null,
    createdAt: created ? created.toISOString() : null,
    lastUsedAt: lastUsed ? lastUsed.toISOString() : null,
    keepSeconds: keep,
    deleteAt: deleteAt ? deleteAt.toISOString() : null,
    deleteInSeconds: deleteIn,
    pricePerMonth: v.pricePerMonth ?? null,
    owner: v.labels[LABEL.owner] ?? null,
    mine: ownedLabels(v.labels, me),
    reap: !busy && deleteIn !== null && deleteIn <= 0 ? "expired" : null,
    labels: v.labels,
  };
}

/** The labels of `v` with `key` set to now (and `drop` removed). */
function stamped(v: Volume, key: string, now: Date, drop?: string): Record<string, string> {
  const labels = { ...v.labels, [key]: String(Math.floor(now.getTime() / 1000)) };
  if (drop) delete labels[drop];
  return labels;
}

/** Records that a VM has the volume now: a later detach counts from the next `down`, not an old one. */
export async function markAttached(provider: Provider, v: Volume, now: Date, keep: number, signal?: AbortSignal): Promise<Volume> {
  const labels = { ...stamped(v, LABEL.attachedAt, now, LABEL.detachedAt), [LABEL.keep]: String(keep) };
  await provider.setVolumeLabels?.(v, labels, signal);
  return { ...v, labels };
}

/** Records when the volume was (at the latest) detached: the start of its `keep` period. */
export async function markDetached(provider: Provider, v: Volume, now: Date, signal?: AbortSignal): Promise<Volume> {
  const labels = stamped(v, LABEL.detachedAt, now);
  await provider.setVolumeLabels?.(v, labels, signal);
  return { ...v, labels };
}

/**
 * Finds the workspace volume for a new VM `name`, or creates one (labelled in the same request). A volume attached to
 * a VM is a UserError: the work is on a VM that still exists.
 */
export async function prepareWorkspace(
  deps: { provider: Provider; config: Config; owner: Owner; progress: Progress },
  /** `found`: a `findWorkspace` of this name started earlier (`up` lists volumes alongside its other checks). */
  req: { name: string; requestId: string; location?: string; now: Date; signal: AbortSignal; found?: Promise<Volume | undefined> },
): Promise<{ volume: Volume; created: boolean }> {
  const { provider, config, progress } = deps;
  const keep = keepSeconds(config);
  const existing = await (req.found ?? findWorkspace(provider, req.name, deps.owner, req.signal));
  if (existing?.attachedTo) {
    throw new UserError(`the workspace volume of "${req.name}" (${existing.provider} volume ${existing.id}) is attached to VM ${existing.attachedTo}`, {
      hint: `that VM still has the work: \`spuff ssh ${req.name}\`, or \`spuff down ${req.name}\` first (the volume is kept)`,
    });
  }
  if (existing) {
    progress.info(`attaching the kept workspace volume ${existing.id} (${existing.sizeGiB} GiB): ~/work is as it was`);
    return { volume: await markAttached(provider, existing, req.now, keep, req.signal), created: false };
  }
  if (!provider.createVolume) throw new ProviderError(`the ${provider.info().name} provider cannot create workspace volumes`);
  const labels = workspaceLabels({ name: req.name, owner: deps.owner.id, requestId: req.requestId, now: req.now, keepSeconds: keep });
  labels[LABEL.attachedAt] = labels[LABEL.createdAt];
  const volume = await provider.createVolume({ name: req.name, sizeGiB: workspaceSizeGiB(config), labels, location: req.location, signal: req.signal }, progress);
  return { volume, created: true };
}

/**
 * The workspace volumes to remove when `up` rolls back: the one it created (by id), else any labelled with its request
 * id (its create answer never came). A volume that existed before this `up` is never among them.
 */
export async function volumesOfRequest(provider: Provider, requestId: string, created: Volume | undefined): Promise<Volume[]> {
  if (created) return [created];
  return ((await provider.listVolumes?.()) ?? []).filter((v) => isWorkspace(v) && v.labels[LABEL.requestId] === requestId);
}

/** The size and price of a kept volume, and how to delete it, in one sentence for `down`. */
export function keptNote(v: Volume, keep: number | null): string {
  const price = v.pricePerMonth ? `, ${formatMoney(v.pricePerMonth, 2)}/month` : "";
  const days = keep !== null ? `; deleted ${Math.round(keep / 86400)} days after this unless attached again` : "";
  return `kept the workspace volume ${v.id} (${v.sizeGiB} GiB${price}): \`spuff up ${v.name}\` brings ~/work back${days}; \`spuff down ${v.name} --purge\` deletes it now`;
}


/** Deletes a detached workspace volume; attached ones are refused by the provider. */
export async function deleteWorkspace(provider: Provider, v: Volume, progress: Progress, signal?: AbortSignal): Promise<void> {
  if (!provider.deleteVolume) throw new ProviderError(`the ${provider.info().name} provider cannot delete volumes`);
  progress.phase(`delete workspace ${v.name}`);
  await provider.deleteVolume(v, progress, signal);
}
