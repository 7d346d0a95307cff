import { UserError } from "./errors.js";
import { LABEL } from "./labels.js";
import { compareNames } from "./order.js";
import { isMine, type Owner, recordOf } from "./owner.js";
import type { Progress, Provider, Vm, Volume } from "./provider.js";
import { processAlive, type StateStore, type VmRecord } from "./state.js";
import { toView, type VmView } from "./view.js";
import { deleteWorkspace, isWorkspace, keepOf, markDetached, toWorkspaceView, type WorkspaceView } from "./workspace.js";

export interface InventoryDeps {
  state: StateStore;
  /** Loads a provider by name (lazily). */
  provider(name: string): Promise<Provider>;
  /** Providers to ask: the configured one plus any that local state mentions, unless one was named explicitly. */
  providerNames: string[];
  /** This machine's owner id and aliases: sets `VmView.mine`. */
  owner: Owner;
  now?: Date;
}

export interface Inventory {
  vms: VmView[];
  /** Providers that could not be asked, with the reason. */
  errors: { provider: string; message: string }[];
}

/** Whether provider VM `v` may be the VM of local record `r`: same identity, or a VM that carries none to compare. */
function mayBe(v: VmView, r: VmRecord): boolean {
  if (v.provider !== r.provider || v.name !== r.name) return false;
  const rid = v.labels[LABEL.requestId];
  if (rid === undefined) return true; // an older VM, or one whose labels cannot be read: spuff cannot tell, so yes
  if (r.requestId !== undefined) return rid === r.requestId;
  return r.id === undefined || r.id === v.id;
}

/**
 * Lists spuff VMs from the providers (the source of truth), adding local records whose VM no longer exists. A record
 * counts as "gone" only when its provider answered and listed nothing that may be its VM: a provider that could not be
 * asked, or a VM it cannot identify, never makes a record "gone".
 */
export async function inventory(deps: InventoryDeps, signal?: AbortSignal): Promise<Inventory> {
  const now = deps.now ?? new Date();
  const errors: Inventory["errors"] = [];
  const results = await Promise.all(
    deps.providerNames.map(async (name) => {
      try {
        const p = await deps.provider(name);
        return { vms: await p.list(signal), features: p.info().features };
      } catch (err) {
        if (deps.providerNames.length === 1) throw err;
        errors.push({ provider: name, message: (err as Error).message });
        return { vms: [], features: { billsWhenStopped: false, free: false } };
      }
    }),
  );
  // The records as they are once the lists are in, read once (not once per VM: 60 servers are 120 file lookups).
  const records = deps.state.list();
  const byName = new Map(records.map((r) => [r.name, r]));
  const known = { read: (name: string) => byName.get(name) };
  const vms = results.flatMap((r) => r.vms.map((vm) => toView(vm, now, r.features, isMine(known, vm, deps.owner))));
  for (const v of vms) {
    const r = recordOf(known, v);
    if (r?.upPid === undefined) continue;
    // A live `up` is still creating it: never reap it from under that process. If that `up` died (crash, second
    // Ctrl-C, or a reboot that handed its pid to another process), nobody will finish or roll it back.
    v.reap = processAlive({ pid: r.upPid, start: r.upStart }) ? null : "interrupted";
  }
  const asked = new Set(deps.providerNames.filter((n) => !errors.some((e) => e.provider === n)));
  for (const r of records) {
    if (!asked.has(r.provider) || vms.some((v) => mayBe(v, r))) continue;
    // Not at the provider (yet): a running `up` is still creating it; otherwise only local state is left.
    const creating = r.upPid !== undefined && processAlive({ pid: r.upPid, start: r.upStart });
    const labels: Record<string, string> = r.requestId ? { [LABEL.requestId]: r.requestId } : {};
    const vm: Vm = { id: r.id ?? "", name: r.name, provider: r.provider, status: creating ? "creating" : "gone", labels, createdAt: r.createdAt };
    vms.push(toView(vm, now, { billsWhenStopped: false, free: false }, true));
  }
  vms.sort((a, b) => compareNames(a.name, b.name) || compareNames(a.provider, b.provider) || Number(b.mine) - Number(a.mine));
  return { vms, errors };
}

const describeVm = (v: VmView) => `${v.name} (${v.provider} id ${v.id || "-"}, owner ${v.owner ?? "unknown"}${v.mine ? ", this machine's" : ""})`;

/**
 * Finds one VM by name; with no name, the only VM there is. When several VMs share the name (EC2 names are not unique;
 * another owner in the same project), this machine's one is meant; if that does not decide it, the user must.
 */
export function pick(vms: VmView[], name: string | undefined): VmView {
  const live = vms.filter((v) => v.status !== "gone");
  if (name) {
    const found = vms.filter((v) => v.name === name);
    if (found.length === 0) {
      throw new UserError(`no VM named "${name}"`, {
        hint: live.length ? `VMs: ${[...new Set(live.map((v) => v.name))].join(", ")}` : "create one with `spuff up`",
      });
    }
    if (found.length === 1) return found[0];
    const mine = found.filter((v) => v.mine);
    if (mine.length === 1) return mine[0];
    throw new UserError(`${found.length} VMs are named "${name}"`, {
      notes: found.map(describeVm),
      hint: "pass --provider to pick one; VMs of other owners are theirs to remove",
    });
  }
  if (live.length === 1) return live[0];
  if (live.length === 0) throw new UserError("there are no VMs", { hint: "create one with `spuff up`" });
  throw new UserError(`there are ${live.length} VMs; name one`, { hint: `VMs: ${live.map((v) => v.name).join(", ")}` });
}

/** The VM a view stands for, as the provider listed it (its id and labels), for acting on exactly that VM. */
export function vmOf(view: VmView): Vm {
  const status = view.status === "idle-stopped" ? "stopped" : (view.status as Vm["status"]);
  const m = view.address ? /^\[?([^\]]+?)\]?:(\d+)$/.exec(view.address) : null;
  const endpoint = m ? { host: m[1], port: Number(m[2]) } : undefined;
  return { id: view.id, name: view.name, provider: view.provider, status, labels: view.labels, ...(endpoint ? { endpoint } : {}) };
}

export interface DownResult {
  name: string;
  provider: string;
  destroyed: boolean;
  cost: VmView["accruedCost"];
  /** The VM's workspace volume: kept (detached, for the next `up`) or deleted (`--purge`); null without one. */
  workspace: { id: string; sizeGiB: number; pricePerMonth: Volume["pricePerMonth"] | null; action: "kept" | "deleted"; keepSeconds: number | null } | null;
}

/**
 * Destroys exactly the VM `view` stands for (by the provider id it was listed with, never a new lookup by name), and
 * forgets its local record, if this machine holds it. Already gone is success.
 */
export async function down(
  deps: { state: StateStore; provider(name: string): Promise<Provider> },
  view: VmView,
  progress: Progress,
  signal?: AbortSignal,
  opts: { purge?: boolean } = {},
): Promise<DownResult> {
  let destroyed = false;
  let workspace: DownResult["workspace"] = null;
  const local = deps.state.read(view.name);
  // The record of exactly this VM; a record too old to carry any identity (no request id, no provider id) goes by name.
  const legacy = local && local.provider === view.provider && local.requestId === undefined && local.id === undefined ? local : undefined;
  const record = view.status === "gone" ? local : (recordOf(deps.state, view) ?? legacy);
  if (view.status !== "gone") {
    const p = await deps.provider(view.provider);
    // The workspace volume attached to exactly this VM (by its id): listed before the VM goes, kept after.
    const volumes = p.info().features.volumes ? ((await p.listVolumes?.(signal)) ?? []).filter((v) => isWorkspace(v) && v.attachedTo === view.id) : [];
    progress.phase(`destroy ${view.name}`);
    await p.destroy(vmOf(view), progress, signal);
    destroyed = true;
    for (const v of volumes) {
      const keep = keepOf(v);
      const detached = { ...v, attachedTo: undefined };
      if (opts.purge) await deleteWorkspace(p, detached, progress, signal);
      else await markDetached(p, detached, new Date(), signal);
      workspace = { id: v.id, sizeGiB: v.sizeGiB, pricePerMonth: v.pricePerMonth ?? null, action: opts.purge ? "deleted" : "kept", keepSeconds: keep };
    }
  }
  if (record?.requestId) await deps.state.removeOwn(view.name, record.requestId);
  else if (record) await deps.state.remove(view.name);
  return { name: view.name, provider: view.provider, destroyed, cost: view.accruedCost, workspace };
}

/**
 * Every workspace volume of the providers that have them (features.volumes), as views. A detached volume that has no
 * detach time yet (its VM went without `spuff down`: idle or TTL terminate, a deleted server) gets one now, when
 * `stamp` is set: its keep period starts at the latest here, never earlier.
 */
export async function workspaces(
  deps: InventoryDeps & { stamp?: boolean; busy?: ReadonlySet<string> },
  signal?: AbortSignal,
): Promise<{ workspaces: WorkspaceView[]; errors: Inventory["errors"] }> {
  const now = deps.now ?? new Date();
  const errors: Inventory["errors"] = [];
  const out: WorkspaceView[] = [];
  for (const name of deps.providerNames) {
    try {
      const p = await deps.provider(name);
      if (!p.info().features.volumes || !p.listVolumes) continue;
      for (let v of (await p.listVolumes(signal)).filter(isWorkspace)) {
        let view = toWorkspaceView(v, now, deps.owner, deps.busy?.has(v.name));
        if (deps.stamp && view.mine && view.status === "kept" && view.deleteAt === null && view.keepSeconds !== null) {
          v = await markDetached(p, v, now, signal);
          view = toWorkspaceView(v, now, deps.owner, deps.busy?.has(v.name));
        }
        out.push(view);
      }
    } catch (err) {
      errors.push({ provider: name, message: (err as Error).message });
    }
  }
  out.sort((a, b) => compareNames(a.name, b.name) || compareNames(a.provider, b.provider));
  return { workspaces: out, errors };
}

/** The Volume a workspace view stands for (its id and labels), for acting on exactly that volume. */
export function volumeOf(view: WorkspaceView): Volume {
  return {
    id: view.id,
    name: view.name,
    provider: view.provider,
    sizeGiB: view.sizeGiB,
    ...(view.location ? { location: view.location } : {}),
    labels: view.labels,
    ...(view.attachedTo ? { attachedTo: view.attachedTo } : {}),
    pricePerMonth: view.pricePerMonth,
  };
}
