import { readFileSync } from "node:fs";
import { parseDuration } from "../config/units.js";
import { waitForSsh } from "../ssh/connect.js";
import { UserError } from "./errors.js";
import { vmOf } from "./inventory.js";
import { recordOf } from "./owner.js";
import type { Progress, Provider, Vm } from "./provider.js";
import { type StateStore, thisProcess } from "./state.js";
import { targetFor } from "./up.js";
import type { VmView } from "./view.js";

export interface StartDeps {
  provider: Provider;
  state: StateStore;
  progress: Progress;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

/**
 * `spuff start NAME`: boots a stopped VM again with its disk (the provider's optional `start`), waits until it runs
 * and until SSH answers with the host key pinned when it was created. While it starts, the record carries this
 * process (as during `up`), so a reaper never deletes the VM from under it.
 */
export async function startVm(deps: StartDeps, view: VmView): Promise<{ vm: Vm; alreadyRunning: boolean }> {
  const { provider, state, progress, signal } = deps;
  const info = provider.info();
  if (!provider.start) {
    throw new UserError(`the ${info.name} provider cannot start a stopped VM`, {
      hint: info.features.selfTerminatesOnPoweroff
        ? `its VMs are deleted when they power off (${info.name} ends them, disk and all); create a new one with \`spuff up\``
        : "create a new one with `spuff up`",
    });
  }
  if (view.status === "running") return { vm: vmOf(view), alreadyRunning: true };
  if (view.status !== "stopped" && view.status !== "idle-stopped") {
    throw new UserError(`${view.name} is ${view.status}: only a stopped VM can be started`, {
      hint: view.status === "gone" ? "`spuff reap` forgets it; `spuff up` creates a new VM" : "wait a moment and look again with `spuff ls`",
    });
  }
  const record = recordOf(state, view);
  if (!record) {
    throw new UserError(`this machine has no keys for ${view.name}`, { hint: "start it from the machine that created it (its keys are there)" });
  }
  if (view.ttlSeconds !== null && view.ttlSeconds <= 0) {
    throw new UserError(`${view.name} is past its TTL (expired ${view.expiresAt}): it would power off again at once`, {
      hint: `copy what you need from its disk with the provider's tools, then \`spuff down ${view.name}\`; \`spuff up\` creates a new VM`,
    });
  }
  const me = thisProcess();
  await state.update(view.name, (r) => ({ ...r, upPid: me.pid, ...(me.start ? { upStart: me.start } : {}) }));
  try {
    let vm = await provider.start(vmOf(view), progress, signal);
    progress.phase("wait running");
    vm = await provider.waitReady(vm, progress, signal);
    const key = readFileSync(state.clientKeyPath(view.name));
    const target = targetFor(record, vm, provider, key);
    await state.update(view.name, (r) => ({ ...r, endpoint: { host: target.host, port: target.port } }));
    progress.phase("wait SSH");
    const timeoutMs = deps.env.SPUFF_BOOT_TIMEOUT ? parseDuration(deps.env.SPUFF_BOOT_TIMEOUT) : 15 * 60_000;
    await waitForSsh(target, { timeoutMs, signal });
    progress.phase("ready");
    return { vm, alreadyRunning: false };
  } finally {
    await state
      .update(view.name, (r) => {
        const { upPid: _pid, upStart: _start, ...rest } = r;
        return r.upPid === me.pid ? rest : r;
      })
      .catch(() => undefined);
  }
}
