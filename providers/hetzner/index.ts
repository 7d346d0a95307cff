import { backoff, showEndpoint, sleep } from "../../src/core/api.js";
import { ProviderError, UserError } from "../../src/core/errors.js";
import { LABEL, MANAGED_BY_VALUE } from "../../src/core/labels.js";
import type {
  Catalog,
  CreateSpec,
  Image,
  ImageSpec,
  Placement,
  Progress,
  Provider,
  ProviderContext,
  ProviderFactory,
  ProviderInfo,
  SshEndpoint,
  Vm,
  Volume,
  VolumeSpec,
} from "../../src/core/provider.js";
import {
  type Action,
  apiErrorOf,
  type HVolume,
  DEFAULT_ENDPOINT,
  HetznerClient,
  INVALID_ENDPOINT,
  type Location,
  pollDelay,
  type Server,
  type ServerType,
  TOKEN_HINT,
  UncertainError,
} from "./client.js";
import {
  apiId,
  byName,
  byRequest,
  hourlyPrice,
  isDeprecated,
  locationDescription,
  MANAGED,
  MAX_USER_DATA,
  MAX_VOLUME_GB,
  MIN_VOLUME_GB,
  type Placement as HetznerPlacement,
  PROVIDER,
  serverAddress,
  serverBody,
  sshKeyBody,
  toCatalogSize,
  toVm,
  toVolume,
  volumeBody,
  volumePricePerGb,
  WORKSPACES,
  workspacesOfRequest,
} from "./requests.js";
import { HetznerImages } from "./images.js";

/** SSH keys younger than this are never orphans: an `up` may be between registering its key and creating its server. */
const ORPHAN_MIN_AGE_MS = 5 * 60_000;

/** Go-style durations as the official hcloud CLI takes them ("500ms", "1s", "1m30s"), or plain milliseconds. */
export function parseGoDuration(text: string): number | undefined {
  if (/^\d+$/.test(text)) return Number(text);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
    consumed += m[0].length;
  }
  return consumed === text.length && consumed > 0 ? total : undefined;
}

class HetznerProvider implements Provider {
  private client?: HetznerClient;
  private catalogCache?: Promise<{ types: ServerType[]; locations: Location[] }>;
  private pricingCache?: Promise<{ amount: number; currency: string } | null>;
  /** Warnings found by validate() (which has no progress), shown when create() starts. */
  private pending: string[] = [];
  private readonly images = new HetznerImages(() => this.api());

  constructor(private readonly ctx: ProviderContext) {}

  info(): ProviderInfo {
    const endpoint = this.ctx.env.HCLOUD_ENDPOINT;
    return {
      name: PROVIDER,
      description: endpoint && endpoint !== DEFAULT_ENDPOINT ? `Hetzner Cloud API at ${showEndpoint(endpoint, INVALID_ENDPOINT)}` : "Hetzner Cloud",
      features: { selfTerminatesOnPoweroff: false, billsWhenStopped: true, prices: true, free: false, maxUserDataBytes: MAX_USER_DATA, userDataBinary: "base64", volumes: true, images: true },
    };
  }

  private api(): HetznerClient {
    if (this.client) return this.client;
    const token = this.ctx.env.HCLOUD_TOKEN || this.ctx.config.hetzner.token;
    if (!token) throw new UserError("no Hetzner Cloud API token", { hint: TOKEN_HINT });
    const env = this.ctx.env;
    const poll = env.HCLOUD_POLL_INTERVAL ? parseGoDuration(env.HCLOUD_POLL_INTERVAL) : 500;
    if (poll === undefined) throw new UserError(`HCLOUD_POLL_INTERVAL="${env.HCLOUD_POLL_INTERVAL}" is not a duration`, { hint: 'e.g. "500ms" or "1s"' });
    const timeout = env.SPUFF_HETZNER_TIMEOUT ? parseGoDuration(env.SPUFF_HETZNER_TIMEOUT) : 30_000;
    if (!timeout) throw new UserError(`SPUFF_HETZNER_TIMEOUT="${env.SPUFF_HETZNER_TIMEOUT}" is not a duration`, { hint: 'e.g. "30s"' });
    const locked = env.SPUFF_HETZNER_LOCKED_TIMEOUT ? parseGoDuration(env.SPUFF_HETZNER_LOCKED_TIMEOUT) : 120_000;
    if (locked === undefined) throw new UserError(`SPUFF_HETZNER_LOCKED_TIMEOUT="${env.SPUFF_HETZNER_LOCKED_TIMEOUT}" is not a duration`, { hint: 'e.g. "2m"' });
    const rateLimited = env.SPUFF_HETZNER_RATE_LIMIT_TIMEOUT ? parseGoDuration(env.SPUFF_HETZNER_RATE_LIMIT_TIMEOUT) : 30_000;
    if (rateLimited === undefined) {
      throw new UserError(`SPUFF_HETZNER_RATE_LIMIT_TIMEOUT="${env.SPUFF_HETZNER_RATE_LIMIT_TIMEOUT}" is not a duration`, { hint: 'e.g. "30s"' });
    }
    this.client = new HetznerClient({
      endpoint: env.HCLOUD_ENDPOINT || DEFAULT_ENDPOINT,
      token,
      pollMs: Math.max(10, poll),
      timeoutMs: timeout,
      lockedMs: locked,
      rateLimitedMs: rateLimited,
    });
    return this.client;
  }

  private placement(over: Placement): HetznerPlacement {
    const c = this.ctx.config.hetzner;
    return { serverType: over.size ?? c.server_type, location: over.location ?? c.location, image: c.image, ipv4: c.ipv4 };
  }

  private loadCatalog(signal?: AbortSignal): Promise<{ types: ServerType[]; locations: Location[] }> {
    if (!this.catalogCache) {
      const api = this.api();
      this.catalogCache = Promise.all([api.serverTypes(signal), api.locations(signal)]).then(([types, locations]) => ({ types, locations }));
      this.catalogCache.catch(() => (this.catalogCache = undefined));
    }
    return this.catalogCache;
  }

  /** Checks the token, the server type and the location against /server_types and /locations before anything is created. */
  async validate(over: Placement, signal?: AbortSignal): Promise<void> {
    const p = this.placement(over);
    const { types, locations } = await this.loadCatalog(signal);
    const loc = locations.find((l) => l.name === p.location);
    if (!loc) {
      throw new UserError(`unknown Hetzner location "${p.location}"`, {
        notes: locations.map((l) => `${l.name}  ${locationDescription(l)}`),
        hint: `pass one of ${locations.map((l) => l.name).join(", ")} with --location, or set hetzner.location`,
      });
    }
    const type = types.find((t) => t.name === p.serverType);
    if (!type) {
      const offered = types.filter((t) => !isDeprecated(t) && t.locations.some((l) => l.name === p.location && l.available));
      throw new UserError(`unknown Hetzner server type "${p.serverType}"`, {
        notes: offered.map((t) => `${t.name.padEnd(8)} ${toCatalogSize(t).description}, ${price(t, p.location)}`),
        hint: `pass one of these (available in ${p.location}) with --size, or set hetzner.server_type`,
      });
    }
    if (isDeprecated(type)) {
      const after = type.deprecation?.unavailable_after;
      this.pending.push(
        `Hetzner deprecated server type ${type.name}${after ? `; it cannot be created after ${after.slice(0, 10)}` : ""}: pick a current one with --size (\`spuff up --help\`)`,
      );
    }
    const here = type.locations.find((l) => l.name === p.location);
    if (!here?.available) {
      const where = type.locations.filter((l) => l.available).map((l) => l.name);
      throw new UserError(`server type ${type.name} is not available in ${p.location}`, {
        hint: where.length
          ? `it is available in ${where.join(", ")}: e.g. --location ${where[0]}`
          : `no location offers ${type.name} right now; pick another type with --size`,
      });
    }
  }

  async catalog(signal?: AbortSignal): Promise<Catalog> {
    const { types, locations } = await this.loadCatalog(signal);
    const c = this.ctx.config.hetzner;
    return {
      locations: locations.map((l) => ({ name: l.name, description: locationDescription(l) })),
      sizes: types.map(toCatalogSize),
      defaults: { size: c.server_type, location: c.location },
    };
  }

  async create(spec: CreateSpec, progress: Progress): Promise<Vm> {
    for (const w of this.pending.splice(0)) progress.warn(w);
    const api = this.api();
    const p = this.placement(spec);
    const { signal } = spec;
    // The workspace volume decides where the server goes; checked before anything is created.
    const volumeId = spec.volume ? await this.attachable(spec, p, signal) : undefined;
    if (!p.ipv4) progress.info("IPv6 only (hetzner.ipv4: false): your network must reach IPv6 addresses for SSH");
    try {
      progress.phase("register SSH key");
      const keyBody = sshKeyBody(spec);
      const key = await this.once(
        () => api.createSshKey(keyBody, signal),
        async () => (await api.listSshKeys(byRequest(spec.requestId), signal))[0],
        progress,
        signal,
      );
      signal?.throwIfAborted();
      progress.phase("create server");
      const body = serverBody(spec, p, key.id, volumeId);
      let created: { server: Server; action?: Action; nextActions?: Action[] };
      try {
        created = await this.once<{ server: Server; action?: Action; nextActions?: Action[] }>(
          () => api.createServer(body, signal),
          async () => {
            const found = (await api.listServers(byRequest(spec.requestId), signal))[0];
            return found ? { server: found } : undefined;
          },
          progress,
          signal,
        );
      } catch (err) {
        throw await this.explainUnavailable(err, p, signal);
      }
      // The create and the volume's attach, polled together (the power-on is waitReady's).
      await api.waitActions(
        [
          ...(created.action ? [{ action: created.action, what: `create server ${spec.name}` }] : []),
          ...(created.nextActions ?? []).filter((a) => a.command === "attach_volume").map((action) => ({ action, what: `attach the workspace volume of ${spec.name}` })),
        ],
        signal,
      );
      if (volumeId !== undefined) await this.waitAttached(volumeId, apiId(created.server.id, `create server ${spec.name}`), spec.name, signal);
      return toVm(created.server);
    } catch (err) {
      await this.undoCreate(spec, progress);
      throw err;
    }
  }

  /**
   * The workspace volume `spec.volume` as Hetzner has it now: it must exist, be detached, and be in the location the
   * server goes to. A requested (--location) or configured (hetzner.location) location elsewhere is a UserError that
   * names both and the fix; nothing has been created yet. Returns its id.
   */
  private async attachable(spec: CreateSpec, p: HetznerPlacement, signal?: AbortSignal): Promise<number> {
    const vol = spec.volume as Volume;
    const id = apiId(vol.id, `the workspace volume of ${spec.name}`);
    const current = await this.api().getVolume(id, signal);
    if (!current) {
      throw new ProviderError(`the workspace volume of ${spec.name} (Hetzner volume ${id}) no longer exists`, {
        hint: `run \`spuff up ${spec.name}\` again: it creates a new, empty workspace`,
      });
    }
    const where = typeof current.location?.name === "string" ? current.location.name : vol.location;
    if (where !== p.location) {
      const asked = spec.location !== undefined ? `--location ${spec.location}` : `hetzner.location is ${p.location}`;
      throw new UserError(`the workspace of ${spec.name} is in ${where} (Hetzner volume ${id}), but ${asked}: a volume attaches only to a server in its own location`, {
        hint: [
          `\`spuff up ${spec.name} --location ${where}\` brings the workspace back where it is`,
          `or \`spuff down ${spec.name} --purge\` deletes the old workspace (and the work on it), and the next \`spuff up ${spec.name}\` starts empty in ${p.location}`,
        ],
      });
    }
    if (current.server !== null && current.server !== undefined) {
      throw new UserError(`the workspace of ${spec.name} (Hetzner volume ${id}) is attached to server ${apiId(current.server, `volume ${id}`)}`, {
        hint: `\`spuff ls\` shows which VM uses it; \`spuff down ${spec.name}\` detaches it (and keeps it)`,
      });
    }
    return id;
  }

  /** After POST /servers with `volumes`: polls until Hetzner reports the volume on that server (at most 2 minutes). */
  private async waitAttached(volumeId: number, serverId: number, name: string, signal?: AbortSignal): Promise<void> {
    const api = this.api();
    const deadline = Date.now() + 2 * 60_000;
    for (let i = 0; ; i++) {
      const v = await api.getVolume(volumeId, signal);
      if (!v) throw new ProviderError(`the workspace volume of ${name} (Hetzner volume ${volumeId}) disappeared while its server was created`);
      if (v.server === serverId) return;
      if (Date.now() > deadline) {
        throw new ProviderError(`the workspace volume of ${name} (Hetzner volume ${volumeId}) is not attached to its new server ${serverId} after 2 minutes`, {
          hint: "check the volume in the Hetzner Cloud Console",
        });
      }
      await sleep(pollDelay(i, api.pollMs), signal);
    }
  }

  /**
   * Runs a create call at most once per attempt: when its outcome is unknown (timeout, 5xx), `lookup` (by the
   * `spuff/request-id` label) decides whether it happened before it is tried again. Never creates twice.
   */
  private async once<T>(create: () => Promise<T>, lookup: () => Promise<T | undefined>, progress: Progress, signal?: AbortSignal): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await create();
      } catch (err) {
        if (!(err instanceof UncertainError) || attempt >= 3) throw err;
        progress.info(`${err.message}; checking whether it was created before retrying`);
        const found = await lookup();
        if (found) return found;
        await sleep(backoff(attempt, this.api().pollMs, 10_000), signal);
      }
    }
  }

  /** 412 resource_unavailable on create: name the locations where the type is available now. */
  private async explainUnavailable(err: unknown, p: HetznerPlacement, signal?: AbortSignal): Promise<unknown> {
    if (apiErrorOf(err)?.code !== "resource_unavailable" || signal?.aborted) return err;
    this.catalogCache = undefined;
    const type = await this.loadCatalog(signal)
      .then(({ types }) => types.find((t) => t.name === p.serverType))
      .catch(() => undefined);
    const where = type?.locations.filter((l) => l.available && l.name !== p.location).map((l) => l.name) ?? [];
    return new ProviderError(`Hetzner cannot create a ${p.serverType} server in ${p.location} right now (412 resource_unavailable)`, {
      hint: where.length ? `${p.serverType} is available in ${where.join(", ")}: e.g. --location ${where[0]}` : "try another server type with --size, or again later",
      cause: err,
    });
  }

  /** After a failed or interrupted create: delete whatever this request made (found by its request id). */
  private async undoCreate(spec: CreateSpec, progress: Progress): Promise<void> {
    const api = this.api();
    try {
      for (const s of await api.listServers(byRequest(spec.requestId))) await this.deleteServer(s.id, spec.name);
      for (const k of await api.listSshKeys(byRequest(spec.requestId))) await api.deleteSshKey(k.id);
    } catch (err) {
      progress.warn(`cleaning up the failed create of ${spec.name} failed: ${(err as Error).message}; \`spuff reap\` removes what is left`);
    }
  }

  private async deleteServer(id: number, name: string, signal?: AbortSignal): Promise<void> {
    const api = this.api();
    const action = await api.deleteServer(id, signal);
    if (action) await api.waitAction(action, `delete server ${name}`, signal);
  }

  async list(signal?: AbortSignal): Promise<Vm[]> {
    return (await this.api().listServers(MANAGED, signal)).map(toVm);
  }

  async get(name: string, signal?: AbortSignal): Promise<Vm | undefined> {
    const [server] = await this.api().listServers(byName(name), signal);
    return server ? toVm(server) : undefined;
  }

  /**
   * Deletes the server (waiting for the action) and its SSH key. Already gone = success. Deleting the server detaches
   * its workspace volume, which is kept; the wait for the delete action is the wait for the detach.
   */
  async destroy(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<void> {
    const api = this.api();
    if (/^\d+$/.test(vm.id)) await this.deleteServer(Number(vm.id), vm.name, signal);
    const rid = vm.labels[LABEL.requestId];
    const keys = await api.listSshKeys(rid ? byRequest(rid) : byName(vm.name), signal);
    for (const k of keys) await api.deleteSshKey(k.id, signal);
    if (keys.length) progress.info(`deleted SSH key ${keys.map((k) => k.name).join(", ")}`);
  }

  /** The gross price of a volume GB per month from GET /pricing, once per run; null when unknown (never invented). */
  private volumePrice(signal?: AbortSignal): Promise<{ amount: number; currency: string } | null> {
    this.pricingCache ??= this.api()
      .pricing(signal)
      .then(volumePricePerGb, () => null);
    return this.pricingCache;
  }

  /**
   * Workspace volumes, found by their labels (managed-by=spuff, spuff/kind=workspace). The answer is checked again
   * here: a volume without those labels is never reported, whatever the API's filtering did.
   */
  async listVolumes(signal?: AbortSignal): Promise<Volume[]> {
    const api = this.api();
    const [volumes, perGb] = await Promise.all([api.listVolumes(WORKSPACES, signal), this.volumePrice(signal)]);
    return volumes.filter(isWorkspace).map((v) => toVolume(v, perGb));
  }

  /**
   * POST /volumes with every label in the same request, in the requested (or configured) location; waits for the
   * create action and until the volume is "available". A failed or interrupted create deletes what this request made
   * (found by its `spuff/request-id`): never a volume that existed before.
   */
  async createVolume(spec: VolumeSpec, progress: Progress): Promise<Volume> {
    const api = this.api();
    const { signal } = spec;
    const location = spec.location ?? this.ctx.config.hetzner.location;
    const size = Math.ceil(spec.sizeGiB);
    if (!(size >= MIN_VOLUME_GB && size <= MAX_VOLUME_GB)) {
      throw new UserError(`workspace.size is ${spec.sizeGiB} GiB: Hetzner volumes are ${MIN_VOLUME_GB} to ${MAX_VOLUME_GB} GB`, {
        hint: `set workspace.size between ${MIN_VOLUME_GB}G and ${MAX_VOLUME_GB}G, or workspace.volume: false for no workspace volume`,
      });
    }
    const requestId = spec.labels[LABEL.requestId];
    if (!requestId) throw new Error("createVolume: the labels lack spuff/request-id");
    const body = volumeBody({ ...spec, sizeGiB: size }, location);
    try {
      const created = await this.once<{ volume: HVolume; action?: Action }>(
        () => api.createVolume(body, signal),
        async () => {
          const found = (await api.listVolumes(workspacesOfRequest(requestId), signal)).filter(isWorkspace)[0];
          return found ? { volume: found } : undefined;
        },
        progress,
        signal,
      );
      const id = apiId(created.volume.id, `create volume ${body.name}`);
      if (created.action) await api.waitAction(created.action, `create the workspace volume of ${spec.name}`, signal);
      const ready = await this.waitAvailable(id, spec.name, signal);
      progress.info(`created workspace volume ${body.name} (${size} GB in ${location}, id ${id})`);
      return toVolume(ready, await this.volumePrice(signal));
    } catch (err) {
      await this.undoVolume(requestId, spec.name, progress);
      throw err;
    }
  }

  private async waitAvailable(id: number, name: string, signal?: AbortSignal): Promise<HVolume> {
    const api = this.api();
    const deadline = Date.now() + 5 * 60_000;
    for (let i = 0; ; i++) {
      const v = await api.getVolume(id, signal);
      if (!v) throw new ProviderError(`the workspace volume of ${name} (Hetzner volume ${id}) disappeared while it was created`);
      if (v.status === "available") return v;
      if (Date.now() > deadline) throw new ProviderError(`the workspace volume of ${name} (Hetzner volume ${id}) is still ${v.status} after 5 minutes`);
      await sleep(pollDelay(i, api.pollMs), signal);
    }
  }

  /** After a failed or interrupted createVolume: deletes the volumes labelled with this request's id (and only those). */
  private async undoVolume(requestId: string, name: string, progress: Progress): Promise<void> {
    try {
      const api = this.api();
      for (const v of (await api.listVolumes(workspacesOfRequest(requestId))).filter(isWorkspace)) {
        if (v.labels[LABEL.requestId] !== requestId) continue;
        await this.deleteVolume(toVolume(v, null), progress);
      }
    } catch (err) {
      progress.warn(`cleaning up the failed workspace volume of ${name} failed: ${(err as Error).message}; \`spuff down ${name} --purge\` deletes it`);
    }
  }

  /**
   * Deletes a detached workspace volume. Already gone = success. Attached = ProviderError, nothing deleted. A volume
   * locked by a running action (423) or changed by another request (409) is retried until SPUFF_HETZNER_LOCKED_TIMEOUT
   * (default 2 minutes), then a clear error. Only a volume labelled as a spuff workspace is ever deleted.
   */
  async deleteVolume(volume: Volume, progress: Progress, signal?: AbortSignal): Promise<void> {
    const api = this.api();
    const id = apiId(volume.id, `delete the workspace volume of ${volume.name}`);
    const started = Date.now();
    for (let i = 0; ; i++) {
      const current = await api.getVolume(id, signal);
      if (!current) return;
      if (!isWorkspace(current)) {
        throw new ProviderError(`Hetzner volume ${id} is not labelled as a spuff workspace (managed-by=spuff, spuff/kind=workspace); spuff does not delete it`, {
          hint: "delete it in the Hetzner Cloud Console if it is yours to delete",
        });
      }
      if (current.server !== null && current.server !== undefined) {
        const name = current.labels[LABEL.name] ?? volume.name;
        throw new ProviderError(`the workspace volume of ${name} (Hetzner volume ${id}) is attached to server ${apiId(current.server, `volume ${id}`)}; nothing was deleted`, {
          hint: `\`spuff down ${name}\` destroys the VM and keeps the volume; then \`spuff down ${name} --purge\` deletes it`,
        });
      }
      try {
        await api.deleteVolume(id, signal);
        progress.info(`deleted workspace volume ${current.name} (${current.size} GB, id ${id})`);
        return;
      } catch (err) {
        const e = apiErrorOf(err);
        const waited = Date.now() - started;
        // 422 service_error: attached meanwhile (the next look says to which server); 409: changed by another request.
        const retry = (e?.status === 422 && e.code === "service_error") || e?.status === 409;
        if (retry && waited < api.lockedMs) {
          await sleep(backoff(i, api.pollMs, 5000), signal);
          continue;
        }
        if (e?.status === 423 || e?.status === 409) {
          throw new ProviderError(`the workspace volume of ${volume.name} (Hetzner volume ${id}) is still locked by a running Hetzner action after ${Math.round(waited / 1000)} s`, {
            hint: [`run \`spuff down ${volume.name} --purge\` again in a minute`, "SPUFF_HETZNER_LOCKED_TIMEOUT waits longer (default 2m)"],
            cause: err,
          });
        }
        throw err;
      }
    }
  }

  /** Replaces the volume's labels (PUT /volumes/{id}). */
  async setVolumeLabels(volume: Volume, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    await this.api().setVolumeLabels(apiId(volume.id, `relabel the workspace volume of ${volume.name}`), labels, signal);
  }

  /** Hetzner's stable device path of a volume: /dev/disk/by-id/scsi-0HC_Volume_<id>. */
  volumeDevices(volume: Volume): string[] {
    return [`/dev/disk/by-id/scsi-0HC_Volume_${apiId(volume.id, `the workspace volume of ${volume.name}`)}`];
  }

  /** Powers a stopped server on (POST .../actions/poweron) and waits for the action; its disk is as it was. */
  async start(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<Vm> {
    const api = this.api();
    const id = Number(vm.id);
    const server = await api.getServer(id, signal);
    if (!server) throw new ProviderError(`server ${vm.name} (id ${vm.id}) no longer exists`, { hint: "`spuff reap` forgets it; `spuff up` creates a new VM" });
    if (server.status === "running") return toVm(server);
    progress.phase("power on");
    const action = await api.powerOnServer(id, signal);
    await api.waitAction(action, `power on server ${vm.name}`, signal);
    return toVm((await api.getServer(id, signal)) ?? server);
  }

  /** Polls the server until Hetzner reports it running with a public address. */
  async waitReady(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<Vm> {
    const api = this.api();
    const deadline = Date.now() + 10 * 60_000;
    let last = "";
    for (let i = 0; ; i++) {
      const server = await api.getServer(Number(vm.id), signal);
      if (!server) throw new ProviderError(`server ${vm.name} (id ${vm.id}) disappeared while starting`, { hint: "check the Hetzner Cloud Console" });
      if (server.status === "running" && serverAddress(server)) return toVm(server);
      if (server.status !== last) progress.info(`server is ${server.status}`);
      last = server.status;
      if (Date.now() > deadline) {
        throw new ProviderError(`server ${vm.name} is still ${server.status} after 10 minutes`, { hint: "check the server in the Hetzner Cloud Console" });
      }
      await sleep(pollDelay(i, api.pollMs), signal);
    }
  }

  sshEndpoint(vm: Vm): SshEndpoint {
    if (!vm.endpoint) throw new ProviderError(`${vm.name} has no public address`, { hint: "wait until it runs: `spuff ls`" });
    return vm.endpoint;
  }

  /** Replaces the server's labels (`spuff extend`). */
  async setLabels(vm: Vm, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    await this.api().setServerLabels(Number(vm.id), labels, signal);
  }

  /**
   * SSH keys labelled managed-by=spuff whose server is gone (matched by `spuff/request-id`, else by name). Keys of a VM
   * whose `up` still runs here (`busy`), and keys younger than 5 minutes (an `up` on another machine may be between
   * registering its key and creating its server), are left alone.
   */
  async reapOrphans(dryRun: boolean, progress: Progress, busy: ReadonlySet<string> = new Set()): Promise<string[]> {
    const api = this.api();
    const [keys, servers] = await Promise.all([api.listSshKeys(MANAGED), api.listServers(MANAGED)]);
    const rids = new Set(servers.map((s) => s.labels[LABEL.requestId]).filter(Boolean));
    const names = new Set(servers.map((s) => s.labels[LABEL.name]).filter(Boolean));
    const removed: string[] = [];
    for (const k of keys) {
      const rid = k.labels[LABEL.requestId];
      const used = (rid ? rids.has(rid) : names.has(k.labels[LABEL.name])) || busy.has(k.labels[LABEL.name]);
      if (used || Date.now() - Date.parse(k.created) < ORPHAN_MIN_AGE_MS) continue;
      removed.push(`SSH key ${k.name} (id ${k.id})`);
      if (!dryRun) {
        await api.deleteSshKey(k.id);
        progress.info(`deleted orphaned SSH key ${k.name}`);
      }
    }
    return removed;
  }

  // ---- baked images (providers/hetzner/images.ts) ----

  /** The base image's name and the server type's architecture: a snapshot boots only on the architecture it ran on. */
  async imageBase(over: Placement, signal?: AbortSignal): Promise<string> {
    const p = this.placement(over);
    const { types } = await this.loadCatalog(signal);
    return `${p.image}:${types.find((t) => t.name === p.serverType)?.architecture ?? "unknown"}`;
  }

  listImages(signal?: AbortSignal): Promise<Image[]> {
    return this.images.list(signal);
  }

  createImage(vm: Vm, spec: ImageSpec, progress: Progress): Promise<Image> {
    return this.images.create(Number(vm.id), spec, progress);
  }

  async deleteImage(image: Image, progress: Progress, signal?: AbortSignal): Promise<void> {
    await this.images.delete(Number(image.id), signal);
    progress.info(`deleted image ${image.name} (id ${image.id})`);
  }

  setImageLabels(image: Image, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    return this.images.setLabels(Number(image.id), labels, signal);
  }
}

/** Labelled as a spuff workspace volume (checked on every answer, whatever label_selector the request had). */
function isWorkspace(v: Pick<HVolume, "labels">): boolean {
  return v.labels?.[LABEL.managedBy] === MANAGED_BY_VALUE && v.labels?.[LABEL.kind] === "workspace";
}

function price(t: ServerType, location: string): string {
  const h = hourlyPrice(t, location);
  return h ? `€${h.amount.toFixed(4)}/h` : "no price";
}

export const createProvider: ProviderFactory = (ctx) => new HetznerProvider(ctx);
