import { backoff, showEndpoint, sleep } from "../../src/core/api.js";
import { ProviderError, UserError } from "../../src/core/errors.js";
import { LABEL } from "../../src/core/labels.js";
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
} from "../../src/core/provider.js";
import {
  type Action,
  apiErrorOf,
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
  byName,
  byRequest,
  hourlyPrice,
  isDeprecated,
  locationDescription,
  MANAGED,
  MAX_USER_DATA,
  type Placement as HetznerPlacement,
  PROVIDER,
  serverAddress,
  serverBody,
  sshKeyBody,
  toCatalogSize,
  toVm,
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
  /** Warnings found by validate() (which has no progress), shown when create() starts. */
  private pending: string[] = [];
  private readonly images = new HetznerImages(() => this.api());

  constructor(private readonly ctx: ProviderContext) {}

  info(): ProviderInfo {
    const endpoint = this.ctx.env.HCLOUD_ENDPOINT;
    return {
      name: PROVIDER,
      description: endpoint && endpoint !== DEFAULT_ENDPOINT ? `Hetzner Cloud API at ${showEndpoint(endpoint, INVALID_ENDPOINT)}` : "Hetzner Cloud",
      features: { selfTerminatesOnPoweroff: false, billsWhenStopped: true, prices: true, free: false, maxUserDataBytes: MAX_USER_DATA, userDataBinary: "base64", volumes: false, images: true },
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
      const body = serverBody(spec, p, key.id);
      let created: { server: Server; action?: Action };
      try {
        created = await this.once<{ server: Server; action?: Action }>(
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
      if (created.action) await api.waitAction(created.action, `create server ${spec.name}`, signal);
      return toVm(created.server);
    } catch (err) {
      await this.undoCreate(spec, progress);
      throw err;
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

  /** Deletes the server (waiting for the action) and its SSH key. Already gone = success. */
  async destroy(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<void> {
    const api = this.api();
    if (/^\d+$/.test(vm.id)) await this.deleteServer(Number(vm.id), vm.name, signal);
    const rid = vm.labels[LABEL.requestId];
    const keys = await api.listSshKeys(rid ? byRequest(rid) : byName(vm.name), signal);
    for (const k of keys) await api.deleteSshKey(k.id, signal);
    if (keys.length) progress.info(`deleted SSH key ${keys.map((k) => k.name).join(", ")}`);
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

function price(t: ServerType, location: string): string {
  const h = hourlyPrice(t, location);
  return h ? `€${h.amount.toFixed(4)}/h` : "no price";
}

export const createProvider: ProviderFactory = (ctx) => new HetznerProvider(ctx);
