import { reapImages } from "./bake.js";
import { down, inventory, volumeOf, workspaces } from "./inventory.js";
import { type Owner, recordOf } from "./owner.js";
import type { Progress, Provider } from "./provider.js";
import { processAlive, type StateStore } from "./state.js";
import type { VmView } from "./view.js";
import { LABEL } from "./labels.js";
import { deleteWorkspace, volumesOfRequest } from "./workspace.js";

/**
 * The reaper (docs/idle.md): deletes spuff VMs past their TTL, or powered off where a stopped VM still costs money
 * (a `free` provider's stopped VM is kept until its TTL: `spuff start` boots it again), forgets local state of VMs
 * that are gone, and asks each provider to delete orphaned resources (SSH keys, security groups, overlay directories)
 * that no VM uses. Provider labels are the truth: it works from a machine with no local state (`--all-owners`).
 */
export interface ReapDeps {
  state: StateStore;
  provider(name: string): Promise<Provider>;
  providerNames: string[];
  /** This machine's owner id and aliases: only its VMs are reaped unless `allOwners`. */
  owner: Owner;
  allOwners?: boolean;
  progress: Progress;
  now?: Date;
  signal?: AbortSignal;
  /** image.keep: baked images no `up` matched for this long are deleted (docs/images.md). Absent: bakes are kept. */
  imageKeepMs?: number;
}

export interface ReapItem {
  provider: string;
  name: string;
  /** expired | idle-stopped | stopped | gone (see VmView.reap). */
  reason: string;
  /** "destroy" deletes the VM at the provider; "forget" removes local state of a VM that no longer exists. */
  action: "destroy" | "forget";
  done: boolean;
  error?: string;
}

export interface ReapResult {
  dryRun: boolean;
  plan: ReapItem[];
  orphans: { provider: string; resource: string }[];
  /**
   * Workspace volumes deleted (docs/workspaces.md): "expired" (kept past `spuff/keep` after their last detach) or
   * "interrupted" (made by an `up` that died before its VM was ready, found by that up's request id).
   */
  workspaces: { provider: string; name: string; id: string; reason: string; done: boolean; error?: string }[];
  errors: { provider: string; message: string }[];
}

/** The VMs among `vms` the reaper would act on: this machine's (see VmView.mine), or everyone's with `allOwners`. */
export function reapable(vms: VmView[], allOwners = false): VmView[] {
  return vms.filter((v) => v.reap && (allOwners || v.mine));
}

export async function reap(deps: ReapDeps, dryRun: boolean): Promise<ReapResult> {
  const { progress } = deps;
  const inv = await inventory({ state: deps.state, provider: deps.provider, providerNames: deps.providerNames, owner: deps.owner, now: deps.now }, deps.signal);
  const errors = [...inv.errors];
  const plan: ReapItem[] = reapable(inv.vms, deps.allOwners).map((v) => ({
    provider: v.provider,
    name: v.name,
    reason: v.reap ?? "",
    action: v.status === "gone" ? "forget" : "destroy",
    done: false,
  }));
  const targets = reapable(inv.vms, deps.allOwners);
  const wsItems: ReapResult["workspaces"] = [];
  if (!dryRun) {
    for (const [i, item] of plan.entries()) {
      deps.signal?.throwIfAborted();
      const view = targets[i];
      try {
        // An `up` that died before its VM was ready leaves what it made, a new (empty) workspace volume among it: that
        // volume carries the dead up's request id. A kept volume that up attached carries an earlier one and stays.
        const record = deps.state.read(view.name);
        const dead =
          item.reason === "interrupted"
            ? view.labels[LABEL.requestId]
            : item.reason === "gone" && record?.upPid !== undefined && record.provider === view.provider
              ? record.requestId
              : undefined;
        await down({ state: deps.state, provider: deps.provider }, view, progress);
        if (dead) {
          const p = await deps.provider(view.provider);
          for (const v of await volumesOfRequest(p, dead, undefined)) {
            if (v.attachedTo) continue;
            await deleteWorkspace(p, v, progress, deps.signal);
            wsItems.push({ provider: view.provider, name: v.name, id: v.id, reason: "interrupted", done: true });
          }
        }
        item.done = true;
      } catch (err) {
        item.error = (err as Error).message;
        errors.push({ provider: item.provider, message: `${item.name}: ${item.error}` });
      }
    }
  }
  const orphans: ReapResult["orphans"] = [];
  const asked = deps.providerNames.filter((n) => !inv.errors.some((e) => e.provider === n));
  const busy = new Set(
    inv.vms
      .filter((v) => {
        const r = v.status === "creating" ? undefined : recordOf(deps.state, v);
        return v.status === "creating" || (r?.upPid !== undefined && processAlive({ pid: r.upPid, start: r.upStart }));
      })
      .map((v) => v.name),
  );
  for (const name of asked) {
    try {
      const p = await deps.provider(name);
      for (const resource of (await p.reapOrphans?.(dryRun, progress, busy)) ?? []) orphans.push({ provider: name, resource });
      if (deps.imageKeepMs !== undefined) {
        const opts = { keepMs: deps.imageKeepMs, owner: deps.owner.id, aliases: deps.owner.aliases, allOwners: deps.allOwners, dryRun, now: deps.now };
        for (const resource of await reapImages(p, opts, progress)) orphans.push({ provider: name, resource });
      }
    } catch (err) {
      errors.push({ provider: name, message: `orphans: ${(err as Error).message}` });
    }
  }
  // Kept workspaces: never one attached or whose VM's `up` runs; a detach time is recorded the first time it is seen.
  const ws = await workspaces({ state: deps.state, provider: deps.provider, providerNames: asked, owner: deps.owner, now: deps.now, stamp: !dryRun, busy }, deps.signal);
  errors.push(...ws.errors);
  const expired = wsItems;
  for (const w of ws.workspaces.filter((w) => w.reap && (deps.allOwners || w.mine))) {
    const item: ReapResult["workspaces"][number] = { provider: w.provider, name: w.name, id: w.id, reason: "expired", done: false };
    expired.push(item);
    if (dryRun) continue;
    try {
      const p = await deps.provider(w.provider);
      await deleteWorkspace(p, volumeOf(w), progress, deps.signal);
      item.done = true;
    } catch (err) {
      item.error = (err as Error).message;
      errors.push({ provider: w.provider, message: `workspace ${w.name}: ${item.error}` });
    }
  }
  return { dryRun, plan, orphans, workspaces: expired, errors };
}

/**
 * A fast check for `up` and `ls`: the VMs of the given providers that need reaping, or nothing when the providers do
 * not answer within `timeoutMs` (the check must never slow a command down noticeably or fail it).
 */
export async function pendingReap(deps: Omit<ReapDeps, "progress">, timeoutMs: number): Promise<VmView[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const inv = await Promise.race([
      inventory({ state: deps.state, provider: deps.provider, providerNames: deps.providerNames, owner: deps.owner, now: deps.now }, ac.signal),
      new Promise<never>((_, reject) => ac.signal.addEventListener("abort", () => reject(new Error("timeout")))),
    ]);
    return reapable(inv.vms, deps.allOwners);
  } catch {
    return [];
  } finally {
    clearTimeout(timer);
  }
}
