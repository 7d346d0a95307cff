import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import { gunzipSync } from "node:zlib";
import { IMAGES, imageJson, LOCATIONS, SERVER_TYPES, serverTypeJson } from "./catalog.js";
import { FakeImages } from "./images.js";
import { labelProblems, matches, parseSelector, SelectorError } from "./labels.js";
import { pricingJson } from "./pricing.js";
import { type Route, SpecValidator, SpecViolation } from "./spec.js";
import { FakeVolumes, type VolumeRec } from "./volumes.js";

/**
 * A stateful fake of the Hetzner Cloud API (node:http on 127.0.0.1, random port) for tests, demos
 * (`npm run fake:hetzner`) and benchmarks. It validates EVERY request and EVERY response against Hetzner's official
 * OpenAPI spec: a mismatch is answered with 500 and recorded in `violations`, which tests assert stays empty.
 *
 * It follows the live API where it moved on from the spec copy: no `datacenter` in server payloads (unless
 * `legacyDatacenter` is set, for old clients such as Debian's hcloud-cli), and 410 on /datacenters. Servers get
 * loopback addresses (127.0.0.N counting up from 2; IPv6 network ::/64, whose first host is ::1), never public ones.
 */

export interface FakeServerInfo {
  id: number;
  name: string;
  /** IPv4 address, or null for IPv6-only servers. */
  ipv4: string | null;
  /** The IPv6 host address (::1), or null. */
  ipv6: string | null;
  /** user_data as cloud-init would see it (base64 and gzip undone). */
  userData: string;
  labels: Record<string, string>;
}

export interface FakeOptions {
  /** The read/write token the fake accepts (default: a random one, see `token`). */
  token?: string;
  /** A second token that may only read (writes answer 403 token_readonly). */
  readOnlyToken?: string;
  /** How long actions stay "running" before "success" (create, delete, power). Default 0. */
  actionDelayMs?: number;
  /** After the create action: how long the server stays "starting" before "running". Default 0. */
  bootDelayMs?: number;
  /** Include the deprecated `datacenter` object in server payloads (for old hcloud-cli versions). */
  legacyDatacenter?: boolean;
  /** First three octets of the addresses handed out, e.g. "127.0.7." (default "127.0.0."). */
  ipv4Prefix?: string;
  /**
   * Called when a server is created (tests start a stand-in sshd on its address). The server reports "running" only
   * after the returned promise settles, like a real server that has booted.
   */
  onServerCreated?: (s: FakeServerInfo) => void | Promise<void>;
  /** Called when a server is deleted (tests stop its stand-in sshd). */
  onServerDeleted?: (s: FakeServerInfo) => void | Promise<void>;
  /** The project's rate limit in requests per hour (`RateLimit-Limit`; default 3600, the API's default). */
  rateLimit?: number;
  /** Actions whose command this answers with an error end in "error" instead of "success" (real actions can fail). */
  failAction?: (command: string) => { code: string; message: string } | undefined;
}

/** A page's `meta.pagination`, as the spec has it. */
export interface Pagination {
  page: number;
  per_page: number;
  previous_page: number | null;
  next_page: number | null;
  last_page: number | null;
  total_entries: number | null;
}

export interface Fault {
  method?: string;
  /** Path below /v1: a string (exact, or a prefix ending in "/") or a RegExp. */
  path?: string | RegExp;
  operationId?: string;
  /** Only requests whose query string (decoded, without "?") matches. */
  search?: RegExp;
  /** Only requests whose JSON body passes this check. */
  body?: (body: unknown) => boolean;
  /** "before" (default): the request has no effect; "after": it takes effect, then the fault replaces the answer. */
  when?: "before" | "after";
  /** Slow response: wait this long (before handling, or after handling with when: "after"). */
  delayMs?: number;
  /** Answer with this status instead (omit for a pure delay). */
  status?: number;
  code?: string;
  message?: string;
  details?: unknown;
  /** Rewrites `meta.pagination` of a list answer (a broken API or proxy: pages that never advance, a wrong last page). */
  pagination?: Partial<Pagination> | ((actual: Pagination) => Partial<Pagination>);
  /** How many matching requests it hits (default 1; Infinity for all). */
  times?: number;
}

export interface Violation {
  where: "request" | "response";
  method: string;
  path: string;
  operationId?: string;
  message: string;
}

export interface RequestLog {
  method: string;
  path: string;
  search: string;
  /** 0 while the answer is pending. */
  status: number;
  operationId?: string;
  /** The parsed JSON body, when the request had a valid one. */
  body?: unknown;
  /** performance.now() when the request arrived and when it was answered (benchmarks subtract the fake's time). */
  start: number;
  end?: number;
}

interface ServerRec {
  id: number;
  name: string;
  status: "running" | "initializing" | "starting" | "stopping" | "off" | "deleting";
  created: string;
  labels: Record<string, string>;
  type: string;
  location: string;
  image: string;
  ipv4: string | null;
  ipv4Id: number | null;
  ipv6Id: number | null;
  userData: string;
  sshKeys: number[];
}

interface SshKeyRec {
  id: number;
  name: string;
  fingerprint: string;
  public_key: string;
  labels: Record<string, string>;
  created: string;
}

interface ActionRec {
  id: number;
  command: string;
  status: "running" | "success" | "error";
  progress: number;
  started: string;
  finished: string | null;
  resources: { id: number; type: string }[];
  error: { code: string; message: string } | null;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const invalid = (fields: { name: string; messages: string[] }[]) =>
  new HttpError(422, "invalid_input", `invalid input in field${fields.length > 1 ? "s" : ""} ${fields.map((f) => `'${f.name}'`).join(", ")}`, { fields });
const notFound = (what: string, id: number | string) => new HttpError(404, "not_found", `${what} with ID '${id}' not found`);
const HOSTNAME = /^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/** Hetzner-style timestamps: "2026-11-23T08:00:00+00:00". */
const stamp = (d = new Date()) => d.toISOString().replace(/\.\d{3}Z$/, "+00:00");

let sharedSpec: SpecValidator | undefined;

/**
 * The project's rate limit as the spec's "Rate Limiting" section has it: `limit` requests, refilled gradually (limit
 * per hour: one per second at the default 3600), one taken by every request, authenticated or not. Empty: 429
 * `rate_limit_exceeded`. `RateLimit-Reset` is when the bucket is full again, not when the next request is allowed.
 */
export class RateLimitBucket {
  private tokens: number;
  private at = Date.now();

  constructor(readonly limit = 3600) {
    this.tokens = limit;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.limit, this.tokens + ((now - this.at) * this.limit) / 3_600_000);
    this.at = now;
  }

  /** Takes one request; false when the bucket is empty. */
  take(now = Date.now()): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Requests left now (whole ones, as `RateLimit-Remaining` reports them). */
  remaining(now = Date.now()): number {
    this.refill(now);
    return Math.floor(this.tokens);
  }

  /** Sets what is left, e.g. 0: the next request gets 429 (another tool used the project's quota). */
  setRemaining(n: number, now = Date.now()): void {
    this.refill(now);
    this.tokens = Math.max(0, Math.min(this.limit, n));
  }

  /** The three headers every answer carries; `empty` for an injected 429 (the bucket as if just drained). */
  headers(now = Date.now(), empty = false): Record<string, string> {
    this.refill(now);
    const tokens = empty ? 0 : this.tokens;
    const fullInMs = ((this.limit - tokens) * 3_600_000) / this.limit;
    return {
      "RateLimit-Limit": String(this.limit),
      "RateLimit-Remaining": String(Math.floor(tokens)),
      "RateLimit-Reset": String(Math.ceil((now + fullInMs) / 1000)),
    };
  }
}

export class HetznerFake {
  readonly token: string;
  endpoint = "";
  readonly violations: Violation[] = [];
  /** Operations of the spec the fake does not implement, as called. */
  readonly unimplemented: string[] = [];
  /** Errors thrown by onServerCreated/onServerDeleted. */
  readonly hookErrors: string[] = [];
  readonly requests: RequestLog[] = [];
  /** When each onServerCreated hook (a "boot") ran, in performance.now() time. */
  readonly boots: { id: number; start: number; end?: number }[] = [];
  /** How many times the fake had to generate a root password (a create without ssh_keys). Must stay 0 for spuff. */
  rootPasswordsIssued = 0;
  /**
   * Events: "server-created", "server-deleted", "ssh-key-created", "ssh-key-deleted", "volume-created",
   * "volume-deleted", "volume-detached" (with the resource's id and name) and "request" (a RequestLog), emitted when
   * the state changed, before the response is sent.
   */
  readonly events = new EventEmitter();
  readonly servers = new Map<number, ServerRec>();
  readonly sshKeys = new Map<number, SshKeyRec>();
  readonly actions = new Map<number, ActionRec>();
  /** The Volumes API (volumes.ts): `volumeApi.volumes` holds the volumes, `volumeApi.seed()` adds one. */
  readonly volumeApi: FakeVolumes;
  /** What GET /pricing says a volume's GB costs per month (gross EUR). */
  volumePricePerGbMonth = 0.0524;
  faults: Fault[] = [];
  /** The project's rate limit; `rateLimit.setRemaining(0)` makes the next request a 429 (then one per second passes). */
  readonly rateLimit: RateLimitBucket;
  legacyDatacenter: boolean;
  readonly opts: FakeOptions;
  /** Snapshots (baked images): test/fakes/hetzner/images.ts. Events "image-created", "image-deleted". */
  readonly images: FakeImages;
  private readonly spec: SpecValidator;
  private readonly unavailable = new Set<string>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly pending = new Set<Promise<unknown>>();
  private nextId = 1;
  private nextHost = 2;
  private http?: HttpServer;

  constructor(opts: FakeOptions = {}) {
    this.opts = opts;
    this.token = opts.token ?? `fake-${randomBytes(12).toString("hex")}`;
    this.legacyDatacenter = Boolean(opts.legacyDatacenter);
    this.rateLimit = new RateLimitBucket(opts.rateLimit);
    sharedSpec ??= new SpecValidator();
    this.spec = sharedSpec;
    this.images = new FakeImages({
      id: () => this.id(),
      server: (id) => this.server(id),
      assertUnlocked: (srv) => this.assertUnlocked(srv as ServerRec),
      action: (command, resources, onDone, fail) => this.actionJson(this.action(command, resources, this.opts.actionDelayMs ?? 0, onDone, undefined, fail)),
      list: (key, all, q) => this.list(key, all, q),
      invalid: (fields) => invalid(fields),
      notFound: (what, id) => notFound(what, id),
      error: (status, code, message) => new HttpError(status, code, message),
      stamp: () => stamp(),
      emit: (event, data) => this.events.emit(event, data),
    });
    this.volumeApi = new FakeVolumes({
      id: () => this.id(),
      stamp: () => stamp(),
      actionDelayMs: () => this.opts.actionDelayMs ?? 0,
      action: (command, resources, delayMs, onDone, gate) => this.action(command, resources, delayMs, onDone, gate),
      actionJson: (a) => this.actionJson(a as ActionRec),
      actions: () => this.actions.values(),
      serverLocation: (id) => this.servers.get(id)?.location,
      serverLocked: (id) => {
        const s = this.servers.get(id);
        return s ? this.locked(s) : false;
      },
      list: (key, all, q) => this.list(key, all, q),
      selector: (text) => this.selector(text),
      emit: (event, payload) => this.events.emit(event, payload),
      error: (status, code, message, details) => new HttpError(status, code, message, details ?? null),
      invalid,
      notFound,
    });
  }

  /** The volumes (by id). */
  get volumes(): Map<number, VolumeRec> {
    return this.volumeApi.volumes;
  }

  /** Starts a fake on 127.0.0.1 and a random port (or `port`). */
  static async start(opts: FakeOptions & { port?: number } = {}): Promise<HetznerFake> {
    const fake = new HetznerFake(opts);
    await fake.listen(opts.port ?? 0);
    return fake;
  }

  async listen(port = 0): Promise<string> {
    this.http = createServer((req, res) => {
      this.handle(req, res).catch((err: Error) => {
        this.violations.push({ where: "response", method: req.method ?? "?", path: req.url ?? "?", message: `fake crashed: ${err.stack ?? err}` });
        if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: "fake_crashed", message: String(err), details: null } }));
      });
    });
    this.http.keepAliveTimeout = 5000;
    await new Promise<void>((resolve) => this.http?.listen(port, "127.0.0.1", resolve));
    const addr = this.http.address() as { port: number };
    this.endpoint = `http://127.0.0.1:${addr.port}/v1`;
    return this.endpoint;
  }

  /** Waits for pending hooks (stand-in sshd starts and stops). */
  async settled(): Promise<void> {
    while (this.pending.size) await Promise.allSettled([...this.pending]);
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.settled();
    if (!this.http) return;
    this.http.closeAllConnections();
    await new Promise((r) => this.http?.close(r));
    this.http = undefined;
  }

  // ---- test controls -------------------------------------------------------------------------------------------

  /** Adds a fault; it applies to the next `times` matching requests. */
  inject(fault: Fault): void {
    this.faults.push({ times: 1, ...fault });
  }

  clearFaults(): void {
    this.faults = [];
  }

  /** Switches a server type off (or on) in a location: /server_types shows it unavailable, POST /servers gets 412. */
  setAvailable(serverType: string, location: string, available: boolean): void {
    if (available) this.unavailable.delete(`${serverType}@${location}`);
    else this.unavailable.add(`${serverType}@${location}`);
  }

  /** The VM powered itself off (idle watcher, TTL): status "off", still billed. */
  powerOff(idOrName: number | string): void {
    const s = [...this.servers.values()].find((x) => x.id === idOrName || x.name === idOrName);
    if (!s) throw new Error(`no server ${idOrName}`);
    s.status = "off";
  }

  /** Adds `n` running servers directly (pagination tests, benchmarks). */
  seedServers(n: number, opts: { labels?: (i: number) => Record<string, string>; namePrefix?: string } = {}): number[] {
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      const name = `${opts.namePrefix ?? "seed"}-${i + 1}`;
      const labels = opts.labels?.(i) ?? { "managed-by": "spuff", "spuff/name": name, "spuff/owner": "seedowner000" };
      const s = this.newServer({ name, labels, type: "cx22", location: "fsn1", image: "debian-12", ipv4: true, ipv6: true, userData: "", sshKeys: [] });
      s.status = "running";
      ids.push(s.id);
    }
    return ids;
  }

  /** Adds an SSH key directly, e.g. an old orphan for reap tests. */
  addSshKey(k: { name: string; publicKey: string; labels: Record<string, string>; created?: Date }): number {
    const rec: SshKeyRec = {
      id: this.id(),
      name: k.name,
      public_key: k.publicKey,
      fingerprint: md5Fingerprint(k.publicKey) ?? "00",
      labels: { ...k.labels },
      created: stamp(k.created),
    };
    this.sshKeys.set(rec.id, rec);
    return rec.id;
  }

  /** Requests to a path (below /v1), e.g. count("POST", "/servers"). */
  count(method: string, path: string): number {
    return this.requests.filter((r) => r.method === method && r.path === path).length;
  }

  // ---- HTTP ----------------------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://fake");
    const method = (req.method ?? "GET").toUpperCase();
    const path = url.pathname.replace(/^\/v1(?=\/|$)/, "") || "/";
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");

    // Logged on arrival (status 0 until answered), so a test sees requests whose answer is still delayed.
    const log: RequestLog = { method, path, search: url.search, status: 0, start: performance.now() };
    this.requests.push(log);
    let status = 200;
    let body: unknown;
    let headers: Record<string, string> = {};
    let route: Route | undefined;
    let operationId: string | undefined;
    let violated = false;
    try {
      if (!url.pathname.startsWith("/v1/")) throw new HttpError(404, "not_found", "the API lives under /v1");
      // The live API removed these (410 since 1 October 2026); the spec copy still lists them.
      if (method === "GET" && /^\/datacenters(\/[^/]+)?$/.test(path)) {
        route = this.spec.route(method, path)?.route;
        throw new HttpError(410, "gone", "datacenters were removed on 1 October 2026; use locations and server_types[].locations");
      }
      let checked;
      try {
        checked = this.spec.checkRequest(method, path, url.searchParams, req.headers["content-type"], raw);
      } catch (err) {
        if (!(err instanceof SpecViolation)) throw err;
        this.violations.push({ where: "request", method, path: `${path}${url.search}`, operationId: err.operationId, message: err.message });
        route = this.spec.route(method, path)?.route;
        violated = true;
        throw new HttpError(500, "spec_violation", `the request does not match the Hetzner Cloud API spec: ${err.message}`);
      }
      route = checked.route;
      operationId = route.op.operationId;
      log.body = checked.body;
      if (!this.rateLimit.take()) {
        const limit = this.rateLimit.limit;
        throw new HttpError(429, "rate_limit_exceeded", `limit of ${limit} requests per hour reached`, null, this.rateLimit.headers());
      }
      const auth = req.headers.authorization ?? "";
      const readOnly = this.opts.readOnlyToken !== undefined && auth === `Bearer ${this.opts.readOnlyToken}`;
      if (auth !== `Bearer ${this.token}` && !readOnly) throw new HttpError(401, "unauthorized", "unable to authenticate");
      const fault = this.takeFault(method, path, decodeURIComponent(url.search.slice(1)), operationId, checked.body);
      if (fault?.delayMs && fault.when !== "after") await sleep(fault.delayMs);
      if (fault?.status && fault.when !== "after") throw this.faultError(fault);
      if (readOnly && method !== "GET") throw new HttpError(403, "token_readonly", "the token is read-only");
      [status, body] = this.dispatch(method, route.template, checked.path, checked.query, checked.body);
      if (fault?.pagination) body = withPagination(body, fault.pagination);
      if (fault?.delayMs && fault.when === "after") await sleep(fault.delayMs);
      if (fault?.status && fault.when === "after") throw this.faultError(fault);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      status = err.status;
      headers = err.headers;
      body = { error: { code: err.code, message: err.message, details: err.details } };
    }
    if (route && !violated) {
      try {
        this.spec.checkResponse(route, status, body);
      } catch (err) {
        if (!(err instanceof SpecViolation)) throw err;
        this.violations.push({ where: "response", method, path: `${path}${url.search}`, operationId, message: err.message });
        status = 500;
        body = { error: { code: "spec_violation", message: `the fake's response violates the Hetzner Cloud API spec: ${err.message}`, details: null } };
      }
    }
    log.status = status;
    log.operationId = operationId;
    log.end = performance.now();
    this.events.emit("request", log);
    res.writeHead(status, {
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...this.rateLimit.headers(),
      ...headers,
    });
    res.end(body === undefined ? undefined : JSON.stringify(body));
  }

  private takeFault(method: string, path: string, search: string, operationId: string, body: unknown): Fault | undefined {
    const i = this.faults.findIndex(
      (f) =>
        (f.method === undefined || f.method.toUpperCase() === method) &&
        (f.operationId === undefined || f.operationId === operationId) &&
        (f.path === undefined || (typeof f.path === "string" ? f.path === path || (f.path.endsWith("/") && path.startsWith(f.path)) : f.path.test(path))) &&
        (f.search === undefined || f.search.test(search)) &&
        (f.body === undefined || f.body(body)),
    );
    if (i < 0) return undefined;
    const f = this.faults[i];
    f.times = (f.times ?? 1) - 1;
    if (f.times <= 0) this.faults.splice(i, 1);
    return f;
  }

  private faultError(f: Fault): HttpError {
    const status = f.status ?? 500;
    const defaults: Record<number, [string, string]> = {
      403: ["forbidden", "insufficient permissions for this request"],
      409: ["conflict", "the resource was changed by another request"],
      412: ["resource_unavailable", "server type is unavailable in this location"],
      422: ["invalid_input", "invalid input"],
      423: ["locked", "the resource is locked by a running action"],
      429: ["rate_limit_exceeded", `limit of ${this.rateLimit.limit} requests per hour reached`],
      500: ["server_error", "internal server error (injected)"],
      503: ["unavailable", "service unavailable (injected)"],
    };
    const [code, message] = defaults[status] ?? ["server_error", `error ${status} (injected)`];
    // A 429 says what the API says when the quota is used up: nothing remaining, full again in an hour.
    const headers = status === 429 ? this.rateLimit.headers(Date.now(), true) : {};
    return new HttpError(status, f.code ?? code, f.message ?? message, f.details ?? null, headers);
  }

  // ---- operations ----------------------------------------------------------------------------------------------

  private dispatch(method: string, template: string, p: Record<string, unknown>, q: Record<string, unknown>, body: unknown): [number, unknown] {
    const id = p.id as number;
    const b = (body ?? {}) as Record<string, unknown>;
    const image = this.images.dispatch(method, template, p, q, b);
    if (image) return image;
    switch (`${method} ${template}`) {
      case "GET /locations": {
        const list = LOCATIONS.filter((l) => q.name === undefined || l.name === q.name);
        return this.list("locations", list, q);
      }
      case "GET /locations/{id}": {
        const l = LOCATIONS.find((x) => x.id === id);
        if (!l) throw notFound("location", id);
        return [200, { location: l }];
      }
      case "GET /server_types": {
        const list = SERVER_TYPES.filter((t) => q.name === undefined || t.name === q.name).map((t) => serverTypeJson(t, this.unavailable));
        return this.list("server_types", list, q);
      }
      case "GET /server_types/{id}": {
        const t = SERVER_TYPES.find((x) => x.id === id);
        if (!t) throw notFound("server_type", id);
        return [200, { server_type: serverTypeJson(t, this.unavailable) }];
      }
      case "GET /servers": {
        const selector = this.selector(q.label_selector);
        const statuses = (q.status as string[] | undefined) ?? [];
        const list = [...this.servers.values()].filter(
          (s) => matches(s.labels, selector) && (q.name === undefined || s.name === q.name) && (statuses.length === 0 || statuses.includes(s.status)),
        );
        return this.list("servers", sortBy(list, q.sort as string[] | undefined).map((s) => this.serverJson(s)), q);
      }
      case "POST /servers":
        return this.createServer(b);
      case "GET /servers/{id}":
        return [200, { server: this.serverJson(this.server(id)) }];
      case "PUT /servers/{id}": {
        const s = this.server(id);
        if (b.labels !== undefined) this.checkLabels(b.labels as Record<string, string>);
        if (typeof b.name === "string") {
          if (!HOSTNAME.test(b.name)) throw invalid([{ name: "name", messages: ["must be a valid hostname"] }]);
          if ([...this.servers.values()].some((x) => x.name === b.name && x.id !== id)) throw new HttpError(409, "uniqueness_error", "server name is already used", { fields: [{ name: "name", messages: ["is already used"] }] });
          s.name = b.name;
        }
        if (b.labels !== undefined) s.labels = { ...(b.labels as Record<string, string>) };
        return [200, { server: this.serverJson(s) }];
      }
      case "DELETE /servers/{id}": {
        const s = this.server(id);
        this.assertUnlocked(s);
        s.status = "deleting";
        const info = this.info(s);
        // Its volumes are detached by the delete (locked until it is done) and kept.
        const a = this.action("delete_server", [{ id, type: "server" }, ...this.volumeApi.resourcesOf(id)], this.opts.actionDelayMs ?? 0, () => {
          this.volumeApi.detachAll(id);
          this.servers.delete(id);
          this.events.emit("server-deleted", { id, name: s.name });
          if (this.opts.onServerDeleted) this.track(Promise.resolve().then(() => this.opts.onServerDeleted?.(info)));
        });
        return [200, { action: this.actionJson(a) }];
      }
      case "POST /servers/{id}/actions/poweroff":
      case "POST /servers/{id}/actions/shutdown": {
        const s = this.server(id);
        this.assertUnlocked(s);
        const a = this.action(template.endsWith("poweroff") ? "stop_server" : "shutdown_server", [{ id, type: "server" }], this.opts.actionDelayMs ?? 0, () => {
          s.status = "off";
        });
        return [201, { action: this.actionJson(a) }];
      }
      case "POST /servers/{id}/actions/poweron": {
        const s = this.server(id);
        this.assertUnlocked(s);
        const a = this.action("start_server", [{ id, type: "server" }], this.opts.actionDelayMs ?? 0, () => {
          s.status = "running";
        });
        return [201, { action: this.actionJson(a) }];
      }
      case "GET /actions":
        // Only the ids it knows, like the API (an unknown id is left out, not a 404).
        return [200, { actions: (q.id as number[]).flatMap((i) => (this.actions.has(i) ? [this.actionJson(this.actions.get(i) as ActionRec)] : [])) }];
      case "GET /actions/{id}": {
        const a = this.actions.get(id);
        if (!a) throw notFound("action", id);
        return [200, { action: this.actionJson(a) }];
      }
      case "GET /ssh_keys": {
        const selector = this.selector(q.label_selector);
        const list = [...this.sshKeys.values()].filter(
          (k) => matches(k.labels, selector) && (q.name === undefined || k.name === q.name) && (q.fingerprint === undefined || k.fingerprint === q.fingerprint),
        );
        return this.list("ssh_keys", sortBy(list, q.sort as string[] | undefined), q);
      }
      case "POST /ssh_keys":
        return this.createSshKey(b);
      case "GET /ssh_keys/{id}": {
        const k = this.sshKeys.get(id);
        if (!k) throw notFound("ssh_key", id);
        return [200, { ssh_key: k }];
      }
      case "PUT /ssh_keys/{id}": {
        const k = this.sshKeys.get(id);
        if (!k) throw notFound("ssh_key", id);
        if (b.labels !== undefined) {
          this.checkLabels(b.labels as Record<string, string>);
          k.labels = { ...(b.labels as Record<string, string>) };
        }
        if (typeof b.name === "string") k.name = b.name;
        return [200, { ssh_key: k }];
      }
      case "DELETE /ssh_keys/{id}": {
        const k = this.sshKeys.get(id);
        if (!k) throw notFound("ssh_key", id);
        this.sshKeys.delete(id);
        this.events.emit("ssh-key-deleted", { id, name: k.name });
        return [204, undefined];
      }
    }
    if (`${method} ${template}` === "GET /pricing") return [200, pricingJson({ volumePerGbMonth: this.volumePricePerGbMonth })];
    const volumes = this.volumeApi.dispatch(method, template, id, q, b);
    if (volumes) return volumes;
    this.unimplemented.push(`${method} ${template}`);
    throw new HttpError(501, "not_implemented", `the fake does not implement ${method} ${template}`);
  }

  private createServer(b: Record<string, unknown>): [number, unknown] {
    const fields: { name: string; messages: string[] }[] = [];
    const name = String(b.name);
    if (!HOSTNAME.test(name)) fields.push({ name: "name", messages: ["must be a valid hostname (RFC 1123)"] });
    if (b.datacenter !== undefined) fields.push({ name: "datacenter", messages: ["datacenters were removed; use location"] });
    const type = SERVER_TYPES.find((t) => t.name === b.server_type || String(t.id) === b.server_type);
    if (!type) fields.push({ name: "server_type", messages: [`server type "${String(b.server_type)}" not found`] });
    const location = LOCATIONS.find((l) => l.name === (b.location ?? "fsn1") || String(l.id) === b.location);
    if (!location) fields.push({ name: "location", messages: [`location "${String(b.location)}" not found`] });
    const image = this.images.bootable(String(b.image));
    if (!image) fields.push({ name: "image", messages: [`image "${String(b.image)}" not found`] });
    const keyRefs = (b.ssh_keys as string[] | undefined) ?? [];
    const keys = keyRefs.map((ref) => [...this.sshKeys.values()].find((k) => String(k.id) === ref || k.name === ref));
    if (keys.some((k) => !k)) fields.push({ name: "ssh_keys", messages: [`unknown SSH key ${keyRefs.filter((_, i) => !keys[i]).join(", ")}`] });
    const userData = typeof b.user_data === "string" ? b.user_data : "";
    if (Buffer.byteLength(userData) > 32 * 1024) fields.push({ name: "user_data", messages: ["is longer than 32 KiB"] });
    const labels = (b.labels as Record<string, string> | undefined) ?? {};
    const bad = labelProblems(labels);
    if (bad.length) fields.push({ name: "labels", messages: bad });
    if (fields.length) throw invalid(fields);
    if ([...this.servers.values()].some((s) => s.name === name)) {
      throw new HttpError(409, "uniqueness_error", "server name is already used", { fields: [{ name: "name", messages: ["is already used"] }] });
    }
    if (!type?.sold.includes(location?.name ?? "") || this.unavailable.has(`${type?.name}@${location?.name}`)) {
      throw new HttpError(412, "resource_unavailable", `server type ${type?.name} is unavailable in ${location?.name}`);
    }
    const volumes = this.volumeApi.checkForServer(b.volumes, location?.name ?? "");
    const net = (b.public_net ?? {}) as { enable_ipv4?: boolean; enable_ipv6?: boolean };
    const s = this.newServer({
      name,
      labels,
      type: type?.name ?? "",
      location: location?.name ?? "",
      image: image?.name ?? "",
      ipv4: net.enable_ipv4 !== false,
      ipv6: net.enable_ipv6 !== false,
      userData,
      sshKeys: keys.map((k) => k?.id ?? 0),
    });
    let rootPassword: string | null = null;
    if (keys.length === 0) {
      rootPassword = randomBytes(12).toString("base64url");
      this.rootPasswordsIssued++;
    }
    const info = this.info(s);
    let booted: Promise<unknown> | undefined;
    if (this.opts.onServerCreated) {
      const boot: { id: number; start: number; end?: number } = { id: s.id, start: performance.now() };
      this.boots.push(boot);
      booted = this.track(Promise.resolve().then(() => this.opts.onServerCreated?.(info))).finally(() => (boot.end = performance.now()));
    }
    const delay = this.opts.actionDelayMs ?? 0;
    const create = this.action("create_server", [{ id: s.id, type: "server" }], delay, () => {
      if (s.status === "initializing") s.status = b.start_after_create === false ? "off" : "starting";
    });
    const next = this.volumeApi.attachAtCreate(volumes, s.id, b.automount === true) as ActionRec[];
    if (b.start_after_create !== false) {
      next.push(
        this.action("start_server", [{ id: s.id, type: "server" }], delay + (this.opts.bootDelayMs ?? 0), () => {
          if (s.status === "starting" || s.status === "initializing") s.status = "running";
        }, booted),
      );
    }
    this.events.emit("server-created", { id: s.id, name });
    return [201, { server: this.serverJson(s), action: this.actionJson(create), next_actions: next.map((a) => this.actionJson(a)), root_password: rootPassword }];
  }

  private createSshKey(b: Record<string, unknown>): [number, unknown] {
    const name = String(b.name);
    const publicKey = String(b.public_key);
    const fingerprint = md5Fingerprint(publicKey);
    const fields: { name: string; messages: string[] }[] = [];
    if (!fingerprint) fields.push({ name: "public_key", messages: ["invalid public key"] });
    const labels = (b.labels as Record<string, string> | undefined) ?? {};
    const bad = labelProblems(labels);
    if (bad.length) fields.push({ name: "labels", messages: bad });
    if (fields.length) throw invalid(fields);
    for (const k of this.sshKeys.values()) {
      if (k.name === name) throw new HttpError(409, "uniqueness_error", "SSH key with the same name already exists", { fields: [{ name: "name", messages: ["is already used"] }] });
      if (k.fingerprint === fingerprint) {
        throw new HttpError(409, "uniqueness_error", "SSH key with the same fingerprint already exists", { fields: [{ name: "public_key", messages: ["is already used"] }] });
      }
    }
    const rec: SshKeyRec = { id: this.id(), name, fingerprint: fingerprint ?? "", public_key: publicKey, labels: { ...labels }, created: stamp() };
    this.sshKeys.set(rec.id, rec);
    this.events.emit("ssh-key-created", { id: rec.id, name });
    return [201, { ssh_key: rec }];
  }

  // ---- helpers ------------------------------------------------------------------------------------------------

  private id(): number {
    return this.nextId++;
  }

  private newServer(o: { name: string; labels: Record<string, string>; type: string; location: string; image: string; ipv4: boolean; ipv6: boolean; userData: string; sshKeys: number[] }): ServerRec {
    if (o.ipv4 && this.nextHost > 254) throw new HttpError(403, "resource_limit_exceeded", "the fake ran out of loopback addresses");
    const s: ServerRec = {
      id: this.id(),
      name: o.name,
      status: "initializing",
      created: stamp(),
      labels: { ...o.labels },
      type: o.type,
      location: o.location,
      image: o.image,
      ipv4: o.ipv4 ? `${this.opts.ipv4Prefix ?? "127.0.0."}${this.nextHost++}` : null,
      ipv4Id: o.ipv4 ? this.id() : null,
      ipv6Id: o.ipv6 ? this.id() : null,
      userData: o.userData,
      sshKeys: o.sshKeys,
    };
    this.servers.set(s.id, s);
    return s;
  }

  private info(s: ServerRec): FakeServerInfo {
    return { id: s.id, name: s.name, ipv4: s.ipv4, ipv6: s.ipv6Id ? "::1" : null, userData: decodeUserData(s.userData), labels: { ...s.labels } };
  }

  private track<T>(p: Promise<T>): Promise<T> {
    const guarded = p.catch((err: Error) => {
      this.hookErrors.push(String(err?.message ?? err));
      throw err;
    });
    const quiet = guarded.catch(() => undefined);
    this.pending.add(quiet);
    void quiet.finally(() => this.pending.delete(quiet));
    return guarded;
  }

  private server(id: number): ServerRec {
    const s = this.servers.get(id);
    if (!s) throw notFound("server", id);
    return s;
  }

  private assertUnlocked(s: ServerRec): void {
    if (this.locked(s)) throw new HttpError(423, "locked", `server ${s.id} is locked by a running action`);
  }

  private locked(s: ServerRec): boolean {
    return [...this.actions.values()].some((a) => a.status === "running" && a.resources.some((r) => r.type === "server" && r.id === s.id));
  }

  private checkLabels(labels: Record<string, string>): void {
    const bad = labelProblems(labels);
    if (bad.length) throw invalid([{ name: "labels", messages: bad }]);
  }

  private selector(text: unknown): ReturnType<typeof parseSelector> {
    try {
      return parseSelector(typeof text === "string" ? text : "");
    } catch (err) {
      if (err instanceof SelectorError) throw invalid([{ name: "label_selector", messages: [err.message] }]);
      throw err;
    }
  }

  /**
   * An action that succeeds after `delayMs` (and after `gate` settles; a rejected gate makes it fail). `fail`, asked
   * when it ends, may make it fail instead (e.g. its image was deleted meanwhile).
   */
  private action(
    command: string,
    resources: ActionRec["resources"],
    delayMs: number,
    onDone?: () => void,
    gate?: Promise<unknown>,
    fail?: () => { code: string; message: string } | undefined,
  ): ActionRec {
    const a: ActionRec = { id: this.id(), command, status: "running", progress: 0, started: stamp(), finished: null, resources, error: null };
    this.actions.set(a.id, a);
    const finish = (failed?: { code: string; message: string }) => {
      const error = failed ?? fail?.() ?? this.opts.failAction?.(command);
      a.progress = 100;
      a.finished = stamp();
      if (error) {
        a.status = "error";
        a.error = error;
      } else {
        a.status = "success";
        onDone?.();
      }
    };
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (gate) gate.then(() => finish(), (err: Error) => finish({ code: "action_failed", message: String(err?.message ?? err) }));
      else finish();
    }, delayMs);
    this.timers.add(t);
    return a;
  }

  private actionJson(a: ActionRec) {
    return { ...a, resources: a.resources.map((r) => ({ ...r })) };
  }

  private serverJson(s: ServerRec) {
    const type = SERVER_TYPES.find((t) => t.name === s.type) ?? SERVER_TYPES[0];
    const loc = LOCATIONS.find((l) => l.name === s.location) ?? LOCATIONS[0];
    const image = IMAGES.find((i) => i.name === s.image) ?? IMAGES[0];
    const snapshot = this.images.jsonFor(s.image);
    return {
      id: s.id,
      name: s.name,
      status: s.status,
      created: s.created,
      public_net: {
        ipv4: s.ipv4 ? { id: s.ipv4Id ?? undefined, ip: s.ipv4, blocked: false, dns_ptr: `static.${s.ipv4}.clients.fake.invalid` } : null,
        ipv6: s.ipv6Id ? { id: s.ipv6Id, ip: "::/64", blocked: false, dns_ptr: [] } : null,
        floating_ips: [],
        firewalls: [],
      },
      private_net: [],
      server_type: serverTypeJson(type, this.unavailable),
      location: loc,
      ...(this.legacyDatacenter
        ? {
            datacenter: {
              id: loc.id,
              name: `${loc.name}-dc1`,
              description: `${loc.description} DC1`,
              location: loc,
              server_types: { supported: SERVER_TYPES.map((t) => t.id), available: SERVER_TYPES.filter((t) => t.sold.includes(loc.name)).map((t) => t.id), available_for_migration: [] },
            },
          }
        : {}),
      image: snapshot ?? imageJson(image, type.arch),
      iso: null,
      rescue_enabled: false,
      locked: this.locked(s),
      backup_window: null,
      outgoing_traffic: 0,
      ingoing_traffic: 0,
      included_traffic: 21990232555520,
      protection: { delete: false, rebuild: false },
      labels: { ...s.labels },
      volumes: this.volumeApi.attachedTo(s.id),
      load_balancers: [],
      primary_disk_size: type.disk,
      placement_group: null,
    };
  }

  /** Pagination as the API does it: `page` (default 1), `per_page` (default 25, at most 50). */
  private list<T>(key: string, all: T[], q: Record<string, unknown>): [number, unknown] {
    const page = Math.max(1, (q.page as number | undefined) ?? 1);
    const per = Math.min(50, Math.max(1, (q.per_page as number | undefined) ?? 25));
    const last = Math.max(1, Math.ceil(all.length / per));
    return [
      200,
      {
        [key]: all.slice((page - 1) * per, page * per),
        meta: {
          pagination: {
            page,
            per_page: per,
            previous_page: page > 1 ? page - 1 : null,
            next_page: page < last ? page + 1 : null,
            last_page: last,
            total_entries: all.length,
          },
        },
      },
    ];
  }
}

/** A list answer with its `meta.pagination` fields replaced (fault injection). */
function withPagination(body: unknown, over: NonNullable<Fault["pagination"]>): unknown {
  const b = body as { meta?: { pagination?: Pagination } } | undefined;
  const actual = b?.meta?.pagination;
  if (!actual) return body;
  return { ...b, meta: { ...b.meta, pagination: { ...actual, ...(typeof over === "function" ? over(actual) : over) } } };
}

function sortBy<T extends { id: number; name: string; created?: string }>(list: T[], sort: string[] | undefined): T[] {
  const out = [...list];
  if (!sort?.length) return out.sort((a, b) => a.id - b.id);
  const keys = sort.map((s) => s.split(":") as [keyof T, string?]);
  return out.sort((a, b) => {
    for (const [k, dir] of keys) {
      const c = a[k] < b[k] ? -1 : a[k] > b[k] ? 1 : 0;
      if (c) return dir === "desc" ? -c : c;
    }
    return 0;
  });
}

/** What cloud-init's Hetzner datasource does with user_data: base64-decode when it can, then gunzip gzip. */
export function decodeUserData(userData: string): string {
  if (/^[A-Za-z0-9+/]+=*$/.test(userData.replace(/\s+/g, "")) && userData.length > 0 && !userData.startsWith("#")) {
    const bytes = Buffer.from(userData, "base64");
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) return gunzipSync(bytes).toString("utf8");
    return bytes.toString("utf8");
  }
  return userData;
}

/** Hetzner's SSH key fingerprint: MD5 of the key blob, colon-separated hex. Undefined for a malformed key. */
export function md5Fingerprint(publicKey: string): string | undefined {
  const [type, b64] = publicKey.trim().split(/\s+/);
  if (!type || !b64 || !/^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+)$/.test(type) || !/^[A-Za-z0-9+/]+=*$/.test(b64)) return undefined;
  const blob = Buffer.from(b64, "base64");
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : 0;
  if (len <= 0 || len + 4 > blob.length || blob.subarray(4, 4 + len).toString() !== type) return undefined;
  return createHash("md5").update(blob).digest("hex").match(/../g)?.join(":");
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
