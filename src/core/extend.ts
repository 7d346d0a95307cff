import { readFileSync } from "node:fs";
import { parseDuration } from "../config/units.js";
import { execOnVm } from "../ssh/connect.js";
import { ProviderError, UserError } from "./errors.js";
import { LABEL, labelTime } from "./labels.js";
import type { Progress, Provider, Vm } from "./provider.js";
import type { StateStore } from "./state.js";
import { targetFor } from "./up.js";

/**
 * `spuff extend NAME 4h`: moves the hard TTL by `by`, counted from the current expiry (or from now when it already
 * passed). Both places that act on it change: the provider label `spuff/expires-at` (the reaper reads it) and
 * /etc/spuff/idle.conf on the VM (its watcher powers off at that time). Returns the new expiry.
 */
export async function extendVm(
  deps: { provider: Provider; state: StateStore; progress?: Progress; signal?: AbortSignal },
  vm: Vm,
  by: string,
  now: Date = new Date(),
): Promise<Date> {
  const ms = parseDuration(by);
  if (ms <= 0) throw new UserError(`"${by}" is not a duration longer than 0`, { hint: "e.g. spuff extend NAME 4h" });
  if (vm.status !== "running") {
    throw new UserError(`${vm.name} is ${vm.status}, not running: its TTL cannot be extended`, {
      hint:
        vm.status === "stopped"
          ? deps.provider.start
            ? `boot it again first: \`spuff start ${vm.name}\``
            : "a powered-off VM is removed by `spuff reap`; create a new one with `spuff up`"
          : "wait until it runs",
    });
  }
  const record = deps.state.read(vm.name);
  if (!record) {
    throw new UserError(`this machine has no keys for ${vm.name}`, { hint: "extend it from the machine that created it" });
  }
  const current = labelTime(vm.labels, LABEL.expiresAt);
  const base = current && current.getTime() > now.getTime() ? current.getTime() : now.getTime();
  const next = new Date(Math.ceil((base + ms) / 1000) * 1000);
  const epoch = String(Math.floor(next.getTime() / 1000));

  // Label first: if the VM cannot be reached, the label is put back, so the reaper and the VM keep agreeing.
  const before = { ...vm.labels };
  if (deps.provider.setLabels) await deps.provider.setLabels(vm, { ...vm.labels, [LABEL.expiresAt]: epoch }, deps.signal);
  else deps.progress?.warn(`the ${vm.provider} provider cannot relabel VMs; \`spuff ls\` keeps showing the old TTL`);
  try {
    const target = targetFor(record, vm, deps.provider, readFileSync(deps.state.clientKeyPath(vm.name)));
    const r = await execOnVm(target, `sudo -n /usr/local/bin/spuff-idle --set-expires ${epoch}`, deps.signal, 60_000);
    if (r.code !== 0) {
      throw new ProviderError(`the VM refused the new TTL: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
    }
  } catch (err) {
    if (deps.provider.setLabels) await deps.provider.setLabels(vm, before).catch(() => undefined);
    throw err instanceof UserError || err instanceof ProviderError
      ? err
      : new ProviderError(`could not update the TTL on ${vm.name}: ${(err as Error).message}`, { hint: `check \`spuff ssh ${vm.name}\` works` });
  }
  vm.labels = { ...vm.labels, [LABEL.expiresAt]: epoch };
  return next;
}
