import { randomUUID } from "node:crypto";
import { encodeUserData, renderUserData, templateArgsFromConfig, trustWarnings } from "../cloudinit/index.js";
import type { Config } from "../config/defaults.js";
import { parseDuration } from "../config/units.js";
import type { Login, VmTarget } from "../ssh/connect.js";
import { ed25519KeyPair } from "../ssh/keys.js";
import { chooseBake } from "./bake.js";
import { cloudInitFailure } from "./cloud-init-wait.js";
import { Interrupted, ProviderError, UserError } from "./errors.js";
import { buildLabels, LABEL } from "./labels.js";
import { validateName } from "./names.js";
import type { Progress, Provider, Vm, Volume } from "./provider.js";
import type { Owner } from "./owner.js";
import { processAlive, type StateStore, thisProcess, type VmRecord } from "./state.js";
import { findWorkspace, markDetached, prepareWorkspace, volumesOfRequest, wantsVolume } from "./workspace.js";

export interface UpDeps {
  provider: Provider;
  config: Config;
  state: StateStore;
  /** This machine's owner id (labels) and aliases (which kept workspace volumes are its own). */
  owner: Owner;
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
  /** The workspace volume at ~/work: new (`created`), or a kept one attached again; absent without one. */
  workspace?: { volume: Volume; created: boolean };
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
  const now = new Date();
  const expiresAt = new Date(now.getTime() + ttlMs);
  // The provider's read-only checks go out now and are awaited once the name is reserved, so their round trips overlap
  // the key generation, rendering and state writes below; the errors keep their order (bad input, a taken name, these).
  const placement = { size: req.size, location: req.location };
  // The lookups wait for the provider's own checks: input it refuses sends no request at all.
  const validated = provider.validate?.(placement, signal);
  const checked = Promise.resolve(validated);
  const found = checked.then(() => provider.get(name, signal));
  const kept = wantsVolume(config, provider) ? checked.then(() => findWorkspace(provider, name, deps.owner, signal)) : undefined;
  // Each is awaited below, in this order; a rejection before then is not unhandled.
  for (const p of [validated, found, kept]) p?.catch(() => {});
  // One turn of the event loop lets the checks' requests leave now (a connection opens on the next turn), so their round
  // trips overlap the key generation, rendering and state write below instead of starting after them.
  await new Promise((r) => setImmediate(r));
  const clientKey = ed25519KeyPair(`spuff-${name}`);
  const hostKey = ed25519KeyPair(`spuff-${name}-host`);
  // The newest current baked image (docs/images.md), whose packages and image.setup the user-data then leaves out.
  const bake = await chooseBake({ provider, config, owner: deps.owner.id, progress }, placement, signal);
  const parts = { hostname: name, hostKey, clientPublicKey: clientKey.public, expiresAt, baked: Boolean(bake.image) };
  const args = templateArgsFromConfig(config, parts);
  for (const w of trustWarnings(args.gitHosts)) progress.warn(w);
  // Rendered here, before anything is created, so bad input fails first; again below with the workspace's device.
  let userData = encodeUserData(renderUserData(args), info.features.maxUserDataBytes, info.features.userDataBinary);
  const requestId = randomUUID().replaceAll("-", "");
  const labels = buildLabels({ name, owner: deps.owner.id, createdAt: now, expiresAt, requestId });
  const me = thisProcess();
  const record: VmRecord = {
    name,
    provider: info.name,
    user: config.ssh.user,
    createdAt: now.toISOString(),
    hostKey: hostKey.public,
    requestId,
    upPid: me.pid,
    ...(me.start ? { upStart: me.start } : {}),
  };
  // The name is reserved here, under the state lock, before any provider call: a second `up` of the same name fails
  // now, having created nothing. If spuff dies later, the record (and the provider's labels) let `reap` find leftovers.
  await state.reserve(record, clientKey);

  let vm: Vm | undefined;
  let login: Login | undefined;
  let created = false;
  const workspace: { volume?: Volume; created?: boolean; requested?: boolean } = {};
  try {
    await validated;
    const existing = await found;
    if (existing) {
      const who = existing.labels[LABEL.owner];
      throw new UserError(`the ${info.name} provider already has a spuff VM named "${name}"${who ? ` (owner ${who})` : ""} that this machine has no keys for`, {
        hint: `pick another name, or remove it with \`spuff down ${name} --provider ${info.name} --all-owners\` if it is no longer used`,
      });
    }
    signal.throwIfAborted();
    created = true;
    if (kept) {
      progress.phase("workspace volume");
      workspace.requested = true;
      const ws = await prepareWorkspace({ provider, config, owner: deps.owner, progress }, { name, requestId, location: req.location, now, signal, found: kept });
      Object.assign(workspace, ws);
      const devices = provider.volumeDevices?.(ws.volume) ?? [];
      const withVolume = templateArgsFromConfig(config, { ...parts, workspaceDevices: devices });
      userData = encodeUserData(renderUserData(withVolume), info.features.maxUserDataBytes, info.features.userDataBinary);
      signal.throwIfAborted();
    }
    // The SSH client (ssh2) and the rotation load while the provider creates the VM, not at start-up.
    const sshCode = Promise.all([import("../ssh/connect.js"), import("./rotate.js")]);
    sshCode.catch(() => {}); // awaited below
    // The provider names its own create phases (register SSH key, create server; seed, boot; ...).
    vm = await provider.create(
      {
        name,
        labels,
        userData,
        publicKey: clientKey.public,
        requestId,
        size: req.size,
        location: req.location,
        volume: workspace.volume,
        image: bake.image,
        signal,
      },
      progress,
    );
    const [{ followOnVm, Login }, { ownHostKeyOf, rotateHostKey }] = await sshCode;
    // A key the VM made itself and reported on a private channel replaces the user-data's before the first login.
    const own = ownHostKeyOf(vm, hostKey.public, name);
    if (own) record.hostKey = own;
    await state.update(name, (r) => ({ ...r, id: vm?.id, ...(own ? { hostKey: own } : {}) }));
    signal.throwIfAborted();
    progress.phase("wait running");
    vm = await provider.waitReady(vm, progress, signal);
    const target = targetFor(record, vm, provider, clientKey.private);
    const saved = await state.update(name, (r) => ({ ...r, id: vm?.id, endpoint: { host: target.host, port: target.port } }));

    // One login from here to the end of the rotation (the wait's, pinned to the key above); the rotation's proof is a
    // key exchange without a login. A connection that drops during the cloud-init wait is replaced by a new login.
    progress.phase("wait SSH");
    login = await Login.open(target, { timeoutMs: bootTimeoutMs(deps.env), signal });

    progress.phase("cloud-init");
    const follow = deps.followCloudInit
      ? followOnVm(target, "/var/log/cloud-init-output.log", (line) => progress.info(`cloud-init: ${line}`), signal, await login.client(signal))
      : undefined;
    const failure = await cloudInitFailure(login, provider.cloudInitCheck?.(vm) ?? "cloud-init status --wait --long", { signal, progress }).finally(() =>
      follow?.stop(),
    );
    if (failure) {
      throw new ProviderError(`cloud-init on ${name} finished with errors`, {
        notes: failure,
        hint: `re-run with --keep-on-failure and inspect with \`spuff ssh ${name} -- sudo cloud-init status --long\``,
      });
    }

    // The host key above came in user-data, which the VM's metadata service serves to anyone on it: replace it and
    // re-pin (docs/adr/0008-host-key-rotation.md). A key the VM made itself (`ownHostKey`) never did.
    if (!own) {
      progress.phase("rotate host key");
      target.hostKey = await rotateHostKey({ state, progress }, target, signal, login);
    }
    login.end();

    progress.phase("ready");
    const done = await endUp(state, name, requestId);
    const ws = workspace.volume ? { volume: workspace.volume, created: Boolean(workspace.created) } : undefined;
    return { vm, record: done ?? saved ?? record, target, ...(ws ? { workspace: ws } : {}) };
  } catch (err) {
    login?.end();
    const failed = progress.fail?.();
    const interrupted = signal.aborted || err instanceof Interrupted;
    if (!interrupted && req.keepOnFailure && vm) {
      progress.warn(`${failed ?? "a phase"} failed; keeping ${name} as asked (--keep-on-failure): \`spuff down ${name}\` removes it`);
      await endUp(state, name, requestId).catch(() => undefined);
      throw err;
    }
    if (created) await rollback(deps, name, requestId, vm, workspace);
    else await state.removeOwn(name, requestId).catch(() => undefined);
    throw interrupted ? new Interrupted(`interrupted during ${failed ?? "up"}; rolled back, nothing is left`) : err;
  }
}

/** `up` is over for this record (ready, or kept on failure): its pid no longer stands for "being created". */
async function endUp(state: StateStore, name: string, requestId: string): Promise<VmRecord | undefined> {
  return state.update(name, (r) => {
    if (r.requestId !== requestId) return r;
    const { upPid: _pid, upStart: _start, ...rest } = r;
    return rest;
  });
}

/**
 * Destroys what this `up` created, and only that: the VM `create` returned, else the provider's VMs labelled with this
 * run's `spuff/request-id` (never a lookup by name, which may find another run's VM). Uses no signal: the user's
 * Ctrl-C must not stop the cleanup.
 */
async function rollback(
  deps: UpDeps,
  name: string,
  requestId: string,
  vm: Vm | undefined,
  workspace: { volume?: Volume; created?: boolean; requested?: boolean },
): Promise<void> {
  const { provider, state, progress } = deps;
  progress.info(`rolling back: removing ${name} and its resources`);
  try {
    const found = vm ? [vm] : (await provider.list()).filter((v) => v.labels[LABEL.requestId] === requestId);
    for (const v of found) await provider.destroy(v, progress);
    // A workspace volume this up created is empty: it goes. One that existed before holds work: it stays, detached.
    if (workspace.requested) {
      if (workspace.volume && !workspace.created) {
        await markDetached(provider, workspace.volume, new Date());
        progress.info(`kept the workspace volume ${workspace.volume.id} of ${name}: it existed before this up`);
      } else {
        for (const v of await volumesOfRequest(provider, requestId, workspace.volume)) await provider.deleteVolume?.(v, progress);
      }
    }
    // Leftovers of this up (a registered key...), not those of other ups still running on this machine.
    const busy = new Set(
      state
        .list()
        .filter((r) => r.name !== name && r.upPid !== undefined && processAlive({ pid: r.upPid, start: r.upStart }))
        .map((r) => r.name),
    );
    await provider.reapOrphans?.(false, progress, busy);
    await state.removeOwn(name, requestId);
    progress.info(`rolled back ${name}`);
  } catch (err) {
    progress.warn(
      `rollback of ${name} failed: ${(err as Error).message}; its resources carry the label spuff/request-id=${requestId} — run \`spuff reap\``,
    );
  }
}
