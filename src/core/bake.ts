import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { BAKE_CLEAN, DEFAULT_PACKAGES, encodeUserData, renderUserData, templateDir } from "../cloudinit/index.js";
import type { TemplateArgs } from "../cloudinit/types.js";
import type { Config } from "../config/defaults.js";
import { parseDuration } from "../config/units.js";
import type { Login, VmTarget } from "../ssh/connect.js";
import { ed25519KeyPair } from "../ssh/keys.js";
import { cloudInitFailure } from "./cloud-init-wait.js";
import { Interrupted, ProviderError, UserError } from "./errors.js";
import { buildLabels, LABEL, labelTime, MANAGED_BY_VALUE } from "./labels.js";
import type { Image, Placement, Progress, Provider, Vm } from "./provider.js";

/**
 * Baked images (docs/images.md): a VM boots the configured base image with only the image-level part of the config
 * (packages, image.setup), is cleaned of everything per-VM, and becomes a provider image labelled with the hash of
 * those inputs (`spuff/bake`). `up` boots the newest image whose hash matches the current config and sends no package
 * or image.setup work; a config change makes the bake stale and `up` uses the base image until `spuff image bake`.
 * Core knows no provider: it branches on `features.images` only.
 */

/** Changes whenever what a bake does changes (the recipe below, the clean script): older bakes become stale. */
const BAKE_RECIPE = 1;
/** How long a bake VM may live (its expires-at label): the reaper deletes one whose `spuff image bake` died. */
const BAKE_VM_TTL_MS = 2 * 3600_000;
/** `up` moves spuff/last-matched at most this often (one label write per hour, not per `up`). */
const TOUCH_EVERY_MS = 3600_000;

export const BAKE_KIND = "bake";

export function bakesImages(p: Provider): boolean {
  return Boolean(p.info().features.images && p.imageBase && p.listImages && p.createImage && p.deleteImage);
}

/** The packages a bake installs (and an `up` from it skips): the built-in ones plus config `packages`. */
export function bakePackages(config: Config): string[] {
  return [...new Set([...DEFAULT_PACKAGES, ...config.packages])];
}

/**
 * The bake's hash: everything that decides what the image holds. The provider, its base image (Provider.imageBase),
 * the login user (its home holds image.setup's results), the packages, image.setup, and the scripts that install
 * and clean. 20 hex characters: a valid label value everywhere.
 */
export function bakeKey(config: Config, provider: string, base: string): string {
  const dir = templateDir();
  const script = (f: string) => readFileSync(`${dir}files/${f}`, "utf8");
  const inputs = {
    recipe: BAKE_RECIPE,
    provider,
    base,
    user: config.ssh.user,
    packages: bakePackages(config),
    setup: config.image.setup,
    install: script("spuff-install-packages.sh"),
    clean: script("spuff-bake-clean.sh"),
  };
  return createHash("sha256").update(JSON.stringify(inputs)).digest("hex").slice(0, 20);
}

export function isBake(image: Image): boolean {
  return image.labels[LABEL.managedBy] === MANAGED_BY_VALUE && image.labels[LABEL.kind] === BAKE_KIND && Boolean(image.labels[LABEL.bake]);
}

/** The newest available bake with this hash and owner. */
export function newestBake(images: Image[], key: string, owner: string): Image | undefined {
  return images
    .filter((i) => isBake(i) && i.status === "available" && i.labels[LABEL.bake] === key && i.labels[LABEL.owner] === owner)
    .sort((a, b) => (Number(b.labels[LABEL.createdAt]) || 0) - (Number(a.labels[LABEL.createdAt]) || 0))[0];
}

export interface BakeChoice {
  /** The bake to boot; absent: boot the base image. */
  image?: Image;
  /** The config's bake hash (undefined when the provider does not bake). */
  key?: string;
}

/**
 * For `up`: the newest current bake of this owner, or nothing. A stale bake (only older hashes exist) is named in a
 * warning, and `up` boots the base image. Moves the chosen bake's spuff/last-matched (at most hourly), so the reaper
 * keeps images that are in use. Any failure to look bakes up costs only the speed-up: a warning, and the base image.
 */
export async function chooseBake(
  deps: { provider: Provider; config: Config; owner: string; progress: Progress },
  placement: Placement,
  signal?: AbortSignal,
): Promise<BakeChoice> {
  const { provider, config, owner, progress } = deps;
  // Nothing image-level configured: a bake would hold nothing the base image lacks, so none is looked up.
  if (!bakesImages(provider) || (config.packages.length === 0 && config.image.setup.length === 0)) return {};
  let key: string;
  let images: Image[];
  try {
    const base = provider.imageBase?.(placement, signal) ?? Promise.resolve("");
    [key, images] = await Promise.all([base.then((b) => bakeKey(config, provider.info().name, b)), provider.listImages?.(signal) ?? []]);
  } catch (err) {
    if (signal?.aborted || err instanceof UserError) throw err;
    progress.warn(`cannot look up baked images (${(err as Error).message}); booting the base image`);
    return {};
  }
  const image = newestBake(images, key, owner);
  if (!image) {
    const stale = images.filter((i) => isBake(i) && i.labels[LABEL.owner] === owner && i.status === "available");
    if (stale.length) {
      const newest = stale.sort((a, b) => (Number(b.labels[LABEL.createdAt]) || 0) - (Number(a.labels[LABEL.createdAt]) || 0))[0];
      const when = labelTime(newest.labels, LABEL.createdAt)?.toISOString().slice(0, 16).replace("T", " ");
      progress.warn(
        `the baked image ${newest.name} (${newest.id}${when ? `, baked ${when} UTC` : ""}) is stale: packages, image.setup, ssh.user or the base image changed since; booting the base image and installing at boot — \`spuff image bake\` bakes the current config`,
      );
    }
    return { key };
  }
  const last = labelTime(image.labels, LABEL.lastMatched)?.getTime() ?? 0;
  if (Date.now() - last > TOUCH_EVERY_MS && provider.setImageLabels) {
    const labels = { ...image.labels, [LABEL.lastMatched]: String(Math.floor(Date.now() / 1000)) };
    await provider.setImageLabels(image, labels, signal).catch((err: Error) => {
      if (signal?.aborted) throw err;
      progress.warn(`could not mark ${image.name} as used (${err.message}); the reaper counts image.keep from its last mark`);
    });
  }
  progress.info(`booting the baked image ${image.name} (${image.id}): packages and image.setup are already on it`);
  return { image, key };
}

export interface BakeDeps {
  provider: Provider;
  config: Config;
  owner: string;
  progress: Progress & { fail?(): string | undefined };
  env: NodeJS.ProcessEnv;
}

export interface BakeRequest {
  placement: Placement;
  /** Bake again even when a current bake exists. */
  force?: boolean;
  signal: AbortSignal;
}

export interface BakeResult {
  image: Image;
  key: string;
  /** False when a current bake existed and was kept (no --force). */
  created: boolean;
}

function bootTimeoutMs(env: NodeJS.ProcessEnv): number {
  return env.SPUFF_BOOT_TIMEOUT ? parseDuration(env.SPUFF_BOOT_TIMEOUT) : 30 * 60_000;
}

/** The bake VM's user-data input: packages and image.setup only. No git hosts, dotfiles, repositories, extra keys. */
export function bakeTemplateArgs(config: Config, name: string, keys: { host: { private: string; public: string }; client: string }, expiresAt: Date): TemplateArgs {
  return {
    hostname: name,
    user: config.ssh.user,
    authorizedKeys: [keys.client.trim()],
    hostKey: { private: keys.host.private, public: keys.host.public.trim() },
    gitHosts: [],
    packages: config.packages,
    setup: config.image.setup,
    repositories: [],
    baked: "bake",
    idle: { timeoutSeconds: parseDuration(config.idle.timeout) / 1000, expiresAt: Math.floor(expiresAt.getTime() / 1000), action: "poweroff" },
  };
}

/**
 * `spuff image bake`: create a VM from the base image → wait SSH (pinned) → cloud-init done → bake-clean → image
 * (labels in the create request) → delete the VM. A failure or interrupt deletes the VM and every image labelled with
 * this bake's request id, so nothing is left billing and no half-made image stays.
 */
export async function bake(deps: BakeDeps, req: BakeRequest): Promise<BakeResult> {
  const { provider, config, progress } = deps;
  const { signal } = req;
  const info = provider.info();
  if (!bakesImages(provider)) {
    throw new UserError(`the ${info.name} provider cannot bake images`, { hint: "bake on a provider that can: --provider hetzner or --provider aws" });
  }
  if (config.packages.length === 0 && config.image.setup.length === 0) {
    throw new UserError("nothing to bake: packages and image.setup are empty", {
      hint: "list packages or image.setup steps in your config (docs/images.md); the base image already has everything else",
    });
  }
  progress.phase("validate config");
  await provider.validate?.(req.placement, signal);
  const base = (await provider.imageBase?.(req.placement, signal)) ?? "";
  const key = bakeKey(config, info.name, base);
  const existing = newestBake((await provider.listImages?.(signal)) ?? [], key, deps.owner);
  if (existing && !req.force) {
    progress.info(`${existing.name} (${existing.id}) is the current bake already; --force bakes again`);
    return { image: existing, key, created: false };
  }

  const now = new Date();
  const name = `spuff-bake-${key.slice(0, 8)}-${Math.floor(now.getTime() / 1000).toString(36)}`;
  const requestId = randomUUID().replaceAll("-", "");
  const clientKey = ed25519KeyPair(`spuff-${name}`);
  const hostKey = ed25519KeyPair(`spuff-${name}-host`);
  const expiresAt = new Date(now.getTime() + BAKE_VM_TTL_MS);
  const args = bakeTemplateArgs(config, name, { host: hostKey, client: clientKey.public }, expiresAt);
  const userData = encodeUserData(renderUserData(args), info.features.maxUserDataBytes, info.features.userDataBinary);
  const common = { [LABEL.kind]: BAKE_KIND, [LABEL.bake]: key };
  const labels = { ...buildLabels({ name, owner: deps.owner, createdAt: now, expiresAt, requestId }), ...common };

  let vm: Vm | undefined;
  let login: Login | undefined;
  try {
    signal.throwIfAborted();
    const ssh = import("../ssh/connect.js"); // the SSH client loads while the provider creates the VM
    const rotate = import("./rotate.js");
    for (const p of [ssh, rotate]) p.catch(() => {});
    vm = await provider.create({ name, labels, userData, publicKey: clientKey.public, requestId, size: req.placement.size, location: req.placement.location, signal }, progress);
    // A VM restored from a saved machine state made its own host key and reported it (as in `up`, checked as strictly).
    const own = (await rotate).ownHostKeyOf(vm, hostKey.public, name);
    signal.throwIfAborted();
    progress.phase("wait running");
    vm = await provider.waitReady(vm, progress, signal);
    const ep = provider.sshEndpoint(vm);
    const target: VmTarget = { name, host: ep.host, port: ep.port, user: config.ssh.user, privateKey: clientKey.private, hostKey: own ?? hostKey.public };
    progress.phase("wait SSH");
    // One login for the cloud-init wait and the cleaning (a new one if it drops during the wait), as in `up`.
    login = await (await ssh).Login.open(target, { timeoutMs: bootTimeoutMs(deps.env), signal });

    progress.phase("cloud-init");
    const failure = await cloudInitFailure(login, "cloud-init status --wait --long", { signal, progress, timeoutMs: bootTimeoutMs(deps.env) });
    if (failure) {
      throw new ProviderError(`cloud-init on the bake VM ${name} finished with errors: nothing was baked`, {
        notes: failure,
        hint: "fix packages or image.setup and run `spuff image bake` again",
      });
    }

    progress.phase("clean");
    const quoted = [config.ssh.user, ...bakePackages(config)].map((a) => `'${a}'`).join(" ");
    const clean = await login.exec(`sudo -n ${BAKE_CLEAN} ${quoted}`, { signal });
    login.end();
    if (clean.code !== 0) {
      throw new ProviderError(`cleaning the bake VM ${name} failed (exit ${clean.code}): nothing was baked`, {
        notes: `${clean.stderr}${clean.stdout}`.trim().split("\n").filter(Boolean),
        hint: "fix packages or image.setup and run `spuff image bake` again",
      });
    }

    progress.phase("create image");
    const imageLabels = {
      [LABEL.managedBy]: MANAGED_BY_VALUE,
      [LABEL.name]: name,
      [LABEL.owner]: deps.owner,
      [LABEL.createdAt]: String(Math.floor(Date.now() / 1000)),
      [LABEL.lastMatched]: String(Math.floor(Date.now() / 1000)),
      [LABEL.requestId]: requestId,
      ...common,
    };
    const image = await provider.createImage!(vm, { name, labels: imageLabels, signal }, progress);
    signal.throwIfAborted();

    progress.phase("delete bake VM");
    await provider.destroy(vm, progress, signal);
    vm = undefined;
    progress.phase("ready");
    return { image, key, created: true };
  } catch (err) {
    login?.end();
    const failed = progress.fail?.();
    const interrupted = signal.aborted || err instanceof Interrupted;
    await rollback(deps, name, requestId, vm);
    throw interrupted ? new Interrupted(`interrupted during ${failed ?? "bake"}; rolled back: no bake VM and no image are left`) : err;
  }
}

/** Deletes this bake's VM and every image labelled with its request id. Uses no signal: Ctrl-C must not stop it. */
async function rollback(deps: BakeDeps, name: string, requestId: string, vm: Vm | undefined): Promise<void> {
  const { provider, progress } = deps;
  progress.info(`rolling back: removing the bake VM ${name} and any image made of it`);
  try {
    const images = ((await provider.listImages?.()) ?? []).filter((i) => i.labels[LABEL.requestId] === requestId);
    for (const i of images) await provider.deleteImage?.(i, progress);
    const vms = vm ? [vm] : (await provider.list()).filter((v) => v.labels[LABEL.requestId] === requestId);
    for (const v of vms) await provider.destroy(v, progress);
    // An image whose create request was answered only after the listing above.
    for (const i of ((await provider.listImages?.()) ?? []).filter((x) => x.labels[LABEL.requestId] === requestId)) await provider.deleteImage?.(i, progress);
    progress.info(`rolled back ${name}`);
  } catch (err) {
    progress.warn(
      `rollback of the bake ${name} failed: ${(err as Error).message}; its VM and image carry the label spuff/request-id=${requestId} — run \`spuff reap\``,
    );
  }
}

export interface ImageView {
  provider: string;
  id: string;
  name: string;
  status: Image["status"];
  /** The bake hash (label spuff/bake). */
  bake: string;
  /** Whether it is the bake the current config would boot (`up` uses it), per its provider. */
  current: boolean;
  createdAt: string | null;
  lastMatchedAt: string | null;
  sizeGB: number | null;
  pricePerMonth: { amount: number; currency: string } | null;
  owner: string | null;
}

export function imageView(i: Image, currentKey: string | undefined): ImageView {
  const t = (k: string) => labelTime(i.labels, k)?.toISOString() ?? null;
  return {
    provider: i.provider,
    id: i.id,
    name: i.name,
    status: i.status,
    bake: i.labels[LABEL.bake] ?? "",
    current: currentKey !== undefined && i.labels[LABEL.bake] === currentKey,
    createdAt: t(LABEL.createdAt) ?? i.createdAt ?? null,
    lastMatchedAt: t(LABEL.lastMatched),
    sizeGB: i.sizeGB ?? null,
    pricePerMonth: i.pricePerMonth ?? null,
    owner: i.labels[LABEL.owner] ?? null,
  };
}

/**
 * The reaper's part: bakes of this owner (every owner with `allOwners`) that no `up` has matched for `keepMs`
 * (label spuff/last-matched, else spuff/created-at). Images still being created are left alone.
 */
export async function reapImages(
  provider: Provider,
  opts: { keepMs: number; owner: string; aliases?: string[]; allOwners?: boolean; dryRun: boolean; now?: Date },
  progress: Progress,
): Promise<string[]> {
  if (!bakesImages(provider)) return [];
  const now = (opts.now ?? new Date()).getTime();
  const removed: string[] = [];
  for (const i of (await provider.listImages?.()) ?? []) {
    if (!isBake(i) || i.status === "creating") continue;
    const o = i.labels[LABEL.owner];
    if (!opts.allOwners && o !== opts.owner && !(opts.aliases ?? []).includes(o ?? "")) continue;
    const last = labelTime(i.labels, LABEL.lastMatched) ?? labelTime(i.labels, LABEL.createdAt);
    if (!last || now - last.getTime() < opts.keepMs) continue;
    const days = Math.floor((now - last.getTime()) / 86_400_000);
    removed.push(`baked image ${i.name} (id ${i.id}, not matched for ${days}d)`);
    if (!opts.dryRun) {
      await provider.deleteImage?.(i, progress);
      progress.info(`deleted baked image ${i.name}`);
    }
  }
  return removed;
}
