import { randomUUID } from "node:crypto";
import { encodeUserData, renderUserData, templateArgsFromConfig, trustWarnings } from "../cloudinit/index.js";
import type { Config } from "../config/defaults.js";
import { parseDuration } from "../config/load.js";
import { type VmTarget, execOnVm, followOnVm, waitForSsh } from "../ssh/connect.js";
import { ed25519KeyPair } from "../ssh/keys.js";
import { Interrupted, ProviderError, UserError } from "./errors.js";
import { buildLabels } from "./labels.js";
import { validateName } from "./names.js";
import type { Progress, Provider, Vm } from "./provider.js";
import { rotateHostKey } from "./rotate.js";
import { pidAlive, type StateStore, type VmRecord } from "./state.js";

export interface UpDeps {
  provider: Provider;
  config: Config;
  state: StateStore;
  owner: string;
  progress: Progress & { fail?(): string | undefined };
  env: NodeJS.ProcessEnv;
  /** `--verbose`: stream the VM's cloud-init output into `progress.info` while waiting for it. */
  followCloudInit?: boolean;
}

export interface UpRequest {
  name: string;
  /** Overrides config idle.ttl. */
  ttl?: string;
  /** Keep the VM when a later phase fails (for debugging); Ctrl-C still rolls back. */
  keepOnFailure?: boolean;
  /** `--size` / `--location`: override the provider's configured placement. */
  size?: string;
  location?: string;
  signal: AbortSignal;
}

export interface UpResult {
  vm: Vm;
  record: VmRecord;
  target: VmTarget;
}

/** Milliseconds to wait for SSH and for cloud-init; software-emulated VMs are slow. Override: SPUFF_BOOT_TIMEOUT. */
function bootTimeoutMs(env: NodeJS.ProcessEnv): number {
  return env.SPUFF_BOOT_TIMEOUT ? parseDuration(env.SPUFF_BOOT_TIMEOUT) : 15 * 60_000;
}

export function targetFor(record: VmRecord, vm: Vm, provider: Provider, privateKey: string | Buffer): VmTarget {
  const ep = provider.sshEndpoint(vm);
  return { name: record.name, host: ep.host, port: ep.port, user: record.user, privateKey, hostKey: record.hostKey };
}

/**
 * Creates a VM: validate → keys → user-data → create → wait running → wait SSH (pinned host key) → cloud-init done.
 * Any failure or interrupt after the first provider call rolls back: the VM and its provider resources are destroyed
 * and local state removed, so nothing is left billing.
 */
export async function up(deps: UpDeps, req: UpRequest): Promise<UpResult> {
  const { provider, config, state, progress } = deps;
  const { signal } = req;
  const info = provider.info();
  const name = validateName(req.name);

  progress.phase("validate config");
  const ttlMs = parseDuration(req.ttl ?? config.idle.ttl);
  if (ttlMs <= 0) throw new UserError("the TTL must be longer than 0", { hint: "e.g. --ttl 4h" });
  if (state.read(name)) {
    throw new UserError(`a VM named "${name}" already exists`, {
      hint: [`connect with \`spuff ssh ${name}\`, or remove it with \`spuff down ${name}\``, "or pick another name: `spuff up OTHER-NAME`"],
    });
  }
  await provider.validate?.({ size: req.size, location: req.location }, signal);
  if (await provider.get(name, signal)) {
    throw new UserError(`the ${info.name} provider already has a spuff VM named "${name}" that this machine has no keys for`, {
      hint: `remove it with \`spuff down ${name} --provider ${info.name}\` or pick another name`,
    });
  }

  const now = new Date();
  const expiresAt = new Date(now.getTime() + ttlMs);
  const clientKey = ed25519KeyPair(`spuff-${name}`);
  const hostKey = ed25519KeyPair(`spuff-${name}-host`);
  const args = templateArgsFromConfig(config, { hostname: name, hostKey, clientPublicKey: clientKey.public, expiresAt });
  for (const w of trustWarnings(args.gitHosts)) progress.warn(w);
  const userDataText = renderUserData(args);
  const userData = encodeUserData(userDataText, info.features.maxUserDataBytes, info.features.userDataBinary);
  const requestId = randomUUID().replaceAll("-", "");
  const labels = buildLabels({ name, owner: deps.owner, createdAt: now, expiresAt, requestId });

  const record: VmRecord = {
    name,
    provider: info.name,
    user: config.ssh.user,
    createdAt: now.toISOString(),
    hostKey: hostKey.public,
    upPid: process.pid,
  };
  // State first: if spuff dies mid-create, the record (and the provider's labels) let `reap` find the leftovers.
  await state.save(record, clientKey);

  let vm: Vm | undefined;
  try {
    signal.throwIfAborted();
    // The provider names its own create phases (register SSH key, create server; seed, boot; ...).
    vm = await provider.create(
      { name, labels, userData, publicKey: clientKey.public, requestId, size: req.size, location: req.location, signal },
      progress,
    );
    await state.update(name, (r) => ({ ...r, id: vm?.id }));
    signal.throwIfAborted();
    progress.phase("wait running");
    vm = await provider.waitReady(vm, progress, signal);
    const target = targetFor(record, vm, provider, clientKey.private);
    const saved = await state.update(name, (r) => ({ ...r, id: vm?.id, endpoint: { host: target.host, port: target.port } }));

    progress.phase("wait SSH");
    await waitForSsh(target, { timeoutMs: bootTimeoutMs(deps.env), signal });

    progress.phase("cloud-init");
    const follow = deps.followCloudInit
      ? followOnVm(target, "/var/log/cloud-init-output.log", (line) => progress.info(`cloud-init: ${line}`), signal)
      : undefined;
    const ci = await execOnVm(target, "cloud-init status --wait --long", signal).finally(() => follow?.stop());
    if (ci.code !== 0) {
      const tail = await execOnVm(target, "sudo tail -n 25 /var/log/cloud-init-output.log", signal).catch(() => undefined);
      throw new ProviderError(`cloud-init on ${name} finished with errors`, {
        notes: [...ci.stdout.trim().split("\n"), ...(tail ? ["--- /var/log/cloud-init-output.log (tail)", ...tail.stdout.trimEnd().split("\n")] : [])],
        hint: `re-run with --keep-on-failure and inspect with \`spuff ssh ${name} -- sudo cloud-init status --long\``,
      });
    }

    // The host key above came in user-data, which the VM's metadata service serves to anyone on it: replace it and
    // re-pin (docs/adr/0008-host-key-rotation.md).
    progress.phase("rotate host key");
    target.hostKey = await rotateHostKey({ state, progress }, target, signal);

    progress.phase("ready");
    const done = await state.update(name, ({ upPid: _, ...r }) => r);
    return { vm, record: done ?? saved ?? record, target };
  } catch (err) {
    const failed = progress.fail?.();
    const interrupted = signal.aborted || err instanceof Interrupted;
    if (!interrupted && req.keepOnFailure && vm) {
      progress.warn(`${failed ?? "a phase"} failed; keeping ${name} as asked (--keep-on-failure): \`spuff down ${name}\` removes it`);
      throw err;
    }
    await rollback(deps, name, vm);
    throw interrupted ? new Interrupted(`interrupted during ${failed ?? "up"}; rolled back, nothing is left`) : err;
  }
}

/** Destroys whatever `up` created so far. Uses a fresh signal: the user's Ctrl-C must not stop the cleanup. */
async function rollback(deps: UpDeps, name: string, vm: Vm | undefined): Promise<void> {
  const { provider, state, progress } = deps;
  progress.info(`rolling back: removing ${name} and its resources`);
  try {
    const found = vm ?? (await provider.get(name));
    if (found) await provider.destroy(found, progress);
    // Leftovers of this up (a registered key...), not those of other ups still running on this machine.
    const busy = new Set(state.list().filter((r) => r.name !== name && r.upPid !== undefined && pidAlive(r.upPid)).map((r) => r.name));
    await provider.reapOrphans?.(false, progress, busy);
    await state.remove(name);
    progress.info(`rolled back ${name}`);
  } catch (err) {
    progress.warn(
      `rollback of ${name} failed: ${(err as Error).message}; its resources carry the label spuff/name=${name} — run \`spuff reap\``,
    );
  }
}
