import { UserError } from "./errors.js";
import type { Progress, Provider, Vm } from "./provider.js";
import { pidAlive, type StateStore } from "./state.js";
import { toView, type VmView } from "./view.js";

export interface InventoryDeps {
  state: StateStore;
  /** Loads a provider by name (lazily). */
  provider(name: string): Promise<Provider>;
  /** Providers to ask: the configured one plus any that local state mentions, unless one was named explicitly. */
  providerNames: string[];
  now?: Date;
}

export interface Inventory {
  vms: VmView[];
  /** Providers that could not be asked, with the reason. */
  errors: { provider: string; message: string }[];
}

/** Lists spuff VMs from the providers (the source of truth), adding local records whose VM no longer exists. */
export async function inventory(deps: InventoryDeps, signal?: AbortSignal): Promise<Inventory> {
  const now = deps.now ?? new Date();
  const errors: Inventory["errors"] = [];
  const results = await Promise.all(
    deps.providerNames.map(async (name) => {
      try {
        const p = await deps.provider(name);
        const vms = await p.list(signal);
        return vms.map((vm) => toView(vm, now, p.info().features.billsWhenStopped));
      } catch (err) {
        if (deps.providerNames.length === 1) throw err;
        errors.push({ provider: name, message: (err as Error).message });
        return [];
      }
    }),
  );
  const vms = results.flat();
  const records = new Map(deps.state.list().map((r) => [`${r.provider}/${r.name}`, r]));
  for (const v of vms) {
    const pid = records.get(`${v.provider}/${v.name}`)?.upPid;
    if (pid === undefined) continue;
    // A live `up` is still creating it: never reap it from under that process. If that `up` died (crash, or a second
    // Ctrl-C), nobody will finish or roll it back.
    v.reap = pidAlive(pid) ? null : "interrupted";
  }
  const seen = new Set(vms.map((v) => `${v.provider}/${v.name}`));
  const asked = new Set(deps.providerNames.filter((n) => !errors.some((e) => e.provider === n)));
  for (const r of deps.state.list()) {
    if (!asked.has(r.provider) || seen.has(`${r.provider}/${r.name}`)) continue;
    // Not at the provider (yet): a running `up` is still creating it; otherwise only local state is left.
    const creating = r.upPid !== undefined && pidAlive(r.upPid);
    const vm: Vm = { id: r.id ?? "", name: r.name, provider: r.provider, status: creating ? "creating" : "gone", labels: {}, createdAt: r.createdAt };
    vms.push(toView(vm, now, false));
  }
  vms.sort((a, b) => a.name.localeCompare(b.name) || a.provider.localeCompare(b.provider));
  return { vms, errors };
}

/** Finds one VM by name; with no name, the only VM there is. */
export function pick(vms: VmView[], name: string | undefined): VmView {
  const live = vms.filter((v) => v.status !== "gone");
  if (name) {
    const found = vms.find((v) => v.name === name);
    if (!found) {
      throw new UserError(`no VM named "${name}"`, {
        hint: live.length ? `VMs: ${live.map((v) => v.name).join(", ")}` : "create one with `spuff up`",
      });
    }
    return found;
  }
  if (live.length === 1) return live[0];
  if (live.length === 0) throw new UserError("there are no VMs", { hint: "create one with `spuff up`" });
  throw new UserError(`there are ${live.length} VMs; name one`, { hint: `VMs: ${live.map((v) => v.name).join(", ")}` });
}

export interface DownResult {
  name: string;
  provider: string;
  destroyed: boolean;
  cost: VmView["accruedCost"];
}

/** Destroys a VM and forgets its local state. Already gone is success. */
export async function down(
  deps: { state: StateStore; provider(name: string): Promise<Provider> },
  view: VmView,
  progress: Progress,
  signal?: AbortSignal,
): Promise<DownResult> {
  const p = await deps.provider(view.provider);
  let destroyed = false;
  if (view.status !== "gone") {
    const vm = (await p.get(view.name, signal)) ?? undefined;
    if (vm) {
      progress.phase(`destroy ${view.name}`);
      await p.destroy(vm, progress, signal);
      destroyed = true;
    }
  }
  await deps.state.remove(view.name);
  return { name: view.name, provider: view.provider, destroyed, cost: view.accruedCost };
}
