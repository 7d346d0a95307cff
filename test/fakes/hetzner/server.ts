import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { exampleOf, HetznerSpec } from "./spec.js";

/**
 * A stateful fake of the Hetzner Cloud API for tests, demos (`npm run fake:hetzner`) and benchmarks. Every request and
 * every response is validated against Hetzner's official OpenAPI spec; a mismatch is answered with 500 and recorded in
 * `violations`, so a test fails loudly. Servers get loopback addresses (127.0.0.N, IPv6 ::1), never public ones.
 */
export interface FakeOptions {
  /** Bearer token the fake accepts; a token starting with "readonly" is refused writes (403 token_readonly). */
  token?: string;
  /** How long actions (create, delete, poweroff) stay "running". */
  actionDelayMs?: number;
  /** Called when a server is created, with its address and user-data (tests start a stand-in sshd there). */
  onServerCreated?: (s: { id: number; name: string; ipv4: string | null; userData: string }) => void | Promise<void>;
  /** Include the legacy `datacenter` object in server payloads (for old clients such as Debian's hcloud-cli). */
  legacyDatacenter?: boolean;
}

export interface Fault {
  method?: string;
  /** Matches the request path (a string prefix or a RegExp). */
  path?: string | RegExp;
  /** How many requests it hits; default 1. */
  times?: number;
  status?: 429 | 500 | 503 | 412;
  /** Let the request take effect, then answer with the fault (a server created, but the client sees 500). */
  afterCommit?: boolean;
  delayMs?: number;
}

interface SshKey {
  id: number;
  name: string;
  fingerprint: string;
  public_key: string;
  labels: Record<string, string>;
  created: string;
}
interface Action {
  id: number;
  command: string;
  started: number;
  resources: { id: number; type: string }[];
  onDone?: () => void;
  done: boolean;
}
interface ServerRec {
  id: number;
  name: string;
  status: string;
  created: string;
  labels: Record<string, string>;
  serverType: string;
  location: string;
  image: string;
  ipv4: string | null;
  ipv6: boolean;
  userData: string;
  sshKeys: number[];
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

const LOCATIONS = [
  { id: 1, name: "fsn1", description: "Falkenstein DC Park 1", country: "DE", city: "Falkenstein", latitude: 50.47612, longitude: 12.370071, network_zone: "eu-central" },
  { id: 2, name: "nbg1", description: "Nuremberg DC Park 1", country: "DE", city: "Nuremberg", latitude: 49.452102, longitude: 11.076665, network_zone: "eu-central" },
  { id: 3, name: "hel1", description: "Helsinki DC Park 1", country: "FI", city: "Helsinki", latitude: 60.169855, longitude: 24.938379, network_zone: "eu-central" },
  { id: 4, name: "ash", description: "Ashburn, VA", country: "US", city: "Ashburn, VA", latitude: 39.0437, longitude: -77.4875, network_zone: "us-east" },
];
/** name, cores, memory GB, disk GB, hourly EUR gross, locations where it can be created, deprecated */
const TYPES: [string, number, number, number, number, string[], boolean][] = [
  ["cx22", 2, 4, 40, 0.0071, ["fsn1", "nbg1", "hel1"], false],
  ["cx32", 4, 8, 80, 0.0127, ["fsn1", "nbg1", "hel1"], false],
  ["cpx21", 3, 4, 80, 0.0121, ["fsn1", "nbg1", "hel1", "ash"], false],
  ["ccx13", 2, 8, 80, 0.0232, ["fsn1", "nbg1", "ash"], false],
  ["cx11", 1, 2, 20, 0.0062, ["fsn1", "nbg1"], true],
];

export class HetznerFake {
  readonly spec = new HetznerSpec();
  readonly token: string;
  /** Spec violations seen (requests and responses); tests assert this stays empty. */
  readonly violations: string[] = [];
  /** Every request, as "METHOD /path?query". */
  readonly requests: string[] = [];
  readonly servers = new Map<number, ServerRec>();
  readonly sshKeys = new Map<number, SshKey>();
  readonly actions = new Map<number, Action>();
  faults: Fault[] = [];
  /** Server types unavailable in a location right now (answered with 412 resource_unavailable). */
  unavailable: { serverType: string; location: string }[] = [];
  private nextId = 1000;
  private nextIp = 2;
  private http?: Server;
  endpoint = "";

  constructor(readonly opts: FakeOptions = {}) {
    this.token = opts.token ?? "fake-token-0123456789abcdef";
  }

  async start(port = 0, host = "127.0.0.1"): Promise<string> {
    this.http = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.http?.listen(port, host, r));
    const addr = this.http.address() as { port: number };
    this.endpoint = `http://${host}:${addr.port}/v1`;
    return this.endpoint;
  }

  async stop(): Promise<void> {
    this.http?.closeAllConnections();
    await new Promise((r) => this.http?.close(r));
  }

  /** Simulates the VM powering itself off (the idle watcher): the server is "off" and still billed. */
  powerOff(name: string): void {
    for (const s of this.servers.values()) if (s.name === name) s.status = "off";
  }

  /** Adds `n` servers directly (benchmarks and pagination tests). */
  seed(n: number, labels: Record<string, string> = { "managed-by": "spuff" }): void {
    for (let i = 0; i < n; i++) {
      const id = this.id();
      const name = `seed-${id}`;
      this.servers.set(id, this.newServer(id, name, { ...labels, "spuff/name": name }, "cx22", "fsn1", "debian-12", true, "", []));
      this.servers.get(id)!.status = "running";
    }
  }

  private id(): number {
    return this.nextId++;
  }

  private newServer(id: number, name: string, labels: Record<string, string>, serverType: string, location: string, image: string, ipv4: boolean, userData: string, sshKeys: number[]): ServerRec {
    return { id, name, status: "initializing", created: new Date().toISOString(), labels, serverType, location, image, ipv4: ipv4 ? `127.0.0.${this.nextIp++}` : null, ipv6: true, userData, sshKeys };
  }

  // ---- HTTP plumbing ------------------------------------------------------------------------------------------------
  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://fake");
    const path = url.pathname.replace(/^\/v1/, "") || "/";
    const method = req.method ?? "GET";
    this.requests.push(`${method} ${path}${url.search}`);
    const raw = await new Promise<string>((resolve) => {
      let b = "";
      req.on("data", (d) => (b += d));
      req.on("end", () => resolve(b));
    });
    let status = 200;
    let body: unknown;
    let headers: Record<string, string> = {};
    const fault = this.takeFault(method, path);
    try {
      if (fault?.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
      if (req.headers.authorization !== `Bearer ${this.token}`) {
        throw new HttpError(401, "unauthorized", "unable to authenticate");
      }
      let parsed: unknown;
      if (raw) {
        try {
          parsed = JSON.parse(raw);
        } catch {
          throw new HttpError(400, "json_error", "invalid JSON in request body");
        }
      }
      if (path === "/datacenters" || path.startsWith("/datacenters/")) throw new HttpError(410, "gone", "datacenters were removed on 1 October 2026; use locations");
      const problems = this.spec.checkRequest(method, path, url.searchParams, parsed);
      if (problems.length) {
        this.violations.push(...problems.map((p) => `${method} ${path}: ${p}`));
        throw new HttpError(422, "invalid_input", `request does not match the Hetzner API spec: ${problems.join("; ")}`);
      }
      if (fault?.status && !fault.afterCommit) throw this.faultError(fault.status);
      if (this.token.startsWith("readonly") && method !== "GET") throw new HttpError(403, "token_readonly", "the token is read-only");
      [status, body] = await this.route(method, path, url.searchParams, parsed);
      if (fault?.status && fault.afterCommit) throw this.faultError(fault.status);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      status = err.status;
      headers = err.headers;
      body = { error: { code: err.code, message: err.message, details: err.details } };
    }
    // 410 is what the live API answers for removed endpoints; the spec copy predates it.
    const problems = status === 410 ? [] : this.spec.checkResponse(method, path, status, body);
    if (problems.length) {
      this.violations.push(...problems.map((p) => `${method} ${path}: ${p}`));
      status = 500;
      body = { error: { code: "fake_spec_violation", message: `the fake produced a response that violates the spec: ${problems.join("; ")}`, details: null } };
    }
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(body === undefined ? undefined : JSON.stringify(body));
  }

  private takeFault(method: string, path: string): Fault | undefined {
    const i = this.faults.findIndex(
      (f) =>
        (!f.method || f.method === method) &&
        (!f.path || (typeof f.path === "string" ? path.startsWith(f.path) : f.path.test(path))),
    );
    if (i < 0) return undefined;
    const f = this.faults[i];
    f.times = (f.times ?? 1) - 1;
    if (f.times <= 0) this.faults.splice(i, 1);
    return f;
  }

  private faultError(status: number): HttpError {
    if (status === 429) {
      const reset = Math.floor(Date.now() / 1000) + 1;
      return new HttpError(429, "rate_limit_exceeded", "limit of 3600 requests per hour reached", null, {
        "RateLimit-Limit": "3600",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": String(reset),
      });
    }
    if (status === 412) return new HttpError(412, "resource_unavailable", "server type not available in this location");
    return new HttpError(status, status === 503 ? "unavailable" : "server_error", "internal server error (injected by the test)");
  }

  // ---- resources ----------------------------------------------------------------------------------------------------
  private async route(method: string, path: string, q: URLSearchParams, body: unknown): Promise<[number, unknown]> {
    const m = this.spec.match(path);
    const key = `${method} ${m?.template}`;
    const id = Number(m?.params.id);
    switch (key) {
      case "GET /locations":
        return [200, { locations: LOCATIONS, meta: this.meta(1, 50, LOCATIONS.length) }];
      case "GET /server_types": {
        const all = TYPES.map((_, i) => this.serverType(i));
        return [200, { server_types: all, meta: this.meta(1, 50, all.length) }];
      }
      case "GET /servers": {
        let list = [...this.servers.values()].filter((s) => matchesSelector(s.labels, q.get("label_selector")));
        if (q.get("name")) list = list.filter((s) => s.name === q.get("name"));
        const statuses = q.getAll("status");
        if (statuses.length) list = list.filter((s) => statuses.includes(s.status));
        return [200, { servers: this.page(list, q).map((s) => this.serverJson(s)), meta: this.meta(Number(q.get("page") ?? 1), Number(q.get("per_page") ?? 25), list.length) }];
      }
      case "POST /servers":
        return this.createServer(body as Record<string, unknown>);
      case "GET /servers/{id}":
        return [200, { server: this.serverJson(this.server(id)) }];
      case "PUT /servers/{id}": {
        const s = this.server(id);
        const b = body as { name?: string; labels?: Record<string, string> };
        if (b.labels) s.labels = { ...b.labels };
        if (b.name) s.name = b.name;
        return [200, { server: this.serverJson(s) }];
      }
      case "DELETE /servers/{id}": {
        const s = this.server(id);
        if ([...this.actions.values()].some((a) => !this.actionDone(a) && a.resources.some((r) => r.id === id && r.type === "server"))) {
          throw new HttpError(423, "locked", "server is locked by a running action");
        }
        s.status = "deleting";
        const a = this.action("delete_server", [{ id, type: "server" }], () => this.servers.delete(id));
        return [200, { action: this.actionJson(a) }];
      }
      case "POST /servers/{id}/actions/poweroff": {
        const s = this.server(id);
        const a = this.action("stop_server", [{ id, type: "server" }], () => (s.status = "off"));
        return [201, { action: this.actionJson(a) }];
      }
      case "GET /actions/{id}": {
        const a = this.actions.get(id);
        if (!a) throw new HttpError(404, "not_found", `action with ID '${id}' not found`);
        return [200, { action: this.actionJson(a) }];
      }
      case "GET /ssh_keys": {
        let list = [...this.sshKeys.values()].filter((k) => matchesSelector(k.labels, q.get("label_selector")));
        if (q.get("name")) list = list.filter((k) => k.name === q.get("name"));
        return [200, { ssh_keys: this.page(list, q), meta: this.meta(Number(q.get("page") ?? 1), Number(q.get("per_page") ?? 25), list.length) }];
      }
      case "POST /ssh_keys": {
        const b = body as { name: string; public_key: string; labels?: Record<string, string> };
        const fp = md5Fingerprint(b.public_key);
        if (!fp) throw new HttpError(422, "invalid_input", "invalid input in field 'public_key'", { fields: [{ name: "public_key", messages: ["invalid public key"] }] });
        for (const k of this.sshKeys.values()) {
          if (k.name === b.name) throw new HttpError(409, "uniqueness_error", "SSH key with the same name already exists", { fields: [{ name: "name" }] });
          if (k.fingerprint === fp) throw new HttpError(409, "uniqueness_error", "SSH key with the same fingerprint already exists", { fields: [{ name: "public_key" }] });
        }
        const key: SshKey = { id: this.id(), name: b.name, fingerprint: fp, public_key: b.public_key, labels: b.labels ?? {}, created: new Date().toISOString() };
        this.sshKeys.set(key.id, key);
        return [201, { ssh_key: key }];
      }
      case "GET /ssh_keys/{id}": {
        const k = this.sshKeys.get(id);
        if (!k) throw new HttpError(404, "not_found", `ssh_key with ID '${id}' not found`);
        return [200, { ssh_key: k }];
      }
      case "DELETE /ssh_keys/{id}": {
        if (!this.sshKeys.delete(id)) throw new HttpError(404, "not_found", `ssh_key with ID '${id}' not found`);
        return [204, undefined];
      }
    }
    throw new HttpError(404, "not_found", `the fake does not implement ${method} ${path}`);
  }

  private createServer(b: Record<string, unknown>): [number, unknown] {
    const name = String(b.name);
    const serverType = String(b.server_type);
    const location = String(b.location ?? "fsn1");
    const fields: { name: string; messages: string[] }[] = [];
    if (!/^(?=.{1,63}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$/.test(name)) fields.push({ name: "name", messages: ["must be a valid hostname"] });
    const t = TYPES.findIndex((x) => x[0] === serverType);
    if (t < 0) fields.push({ name: "server_type", messages: [`server type '${serverType}' not found`] });
    if (!LOCATIONS.some((l) => l.name === location)) fields.push({ name: "location", messages: [`location '${location}' not found`] });
    const keys = ((b.ssh_keys as (string | number)[] | undefined) ?? []).map((k) => [...this.sshKeys.values()].find((x) => x.id === Number(k) || x.name === k));
    if (keys.some((k) => !k)) fields.push({ name: "ssh_keys", messages: ["unknown SSH key"] });
    if (typeof b.user_data === "string" && Buffer.byteLength(b.user_data) > 32768) fields.push({ name: "user_data", messages: ["user_data is too long (max 32 KiB)"] });
    if (fields.length) throw new HttpError(422, "invalid_input", `invalid input in field${fields.length > 1 ? "s" : ""} ${fields.map((f) => `'${f.name}'`).join(", ")}`, { fields });
    if ([...this.servers.values()].some((s) => s.name === name)) throw new HttpError(409, "uniqueness_error", "server name is already used", { fields: [{ name: "name" }] });
    if (this.unavailable.some((u) => u.serverType === serverType && u.location === location) || !TYPES[t][5].includes(location)) {
      throw new HttpError(412, "resource_unavailable", `server type ${serverType} is unavailable in ${location}`);
    }
    const net = (b.public_net ?? {}) as { enable_ipv4?: boolean };
    const s = this.newServer(this.id(), name, (b.labels as Record<string, string>) ?? {}, serverType, location, String(b.image), net.enable_ipv4 !== false, String(b.user_data ?? ""), keys.map((k) => (k as SshKey).id));
    this.servers.set(s.id, s);
    const a = this.action("create_server", [{ id: s.id, type: "server" }], () => (s.status = "running"));
    void this.opts.onServerCreated?.({ id: s.id, name, ipv4: s.ipv4, userData: s.userData });
    return [201, { server: this.serverJson(s), action: this.actionJson(a), next_actions: [], root_password: null }];
  }

  private server(id: number): ServerRec {
    const s = this.servers.get(id);
    if (!s) throw new HttpError(404, "not_found", `server with ID '${id}' not found`);
    this.settle();
    return s;
  }

  private action(command: string, resources: { id: number; type: string }[], onDone?: () => void): Action {
    const a: Action = { id: this.id(), command, started: Date.now(), resources, onDone, done: false };
    this.actions.set(a.id, a);
    if (!this.opts.actionDelayMs) this.actionDone(a);
    return a;
  }

  private actionDone(a: Action): boolean {
    if (!a.done && Date.now() - a.started >= (this.opts.actionDelayMs ?? 0)) {
      a.done = true;
      a.onDone?.();
    }
    return a.done;
  }

  private settle(): void {
    for (const a of this.actions.values()) this.actionDone(a);
  }

  private actionJson(a: Action) {
    const done = this.actionDone(a);
    return {
      id: a.id,
      command: a.command,
      status: done ? "success" : "running",
      progress: done ? 100 : 50,
      started: new Date(a.started).toISOString(),
      finished: done ? new Date().toISOString() : null,
      resources: a.resources,
      error: null,
    };
  }

  private serverType(i: number) {
    const [name, cores, memory, disk, hourly, locations, deprecated] = TYPES[i];
    const list = this.spec.responseSchema("/server_types", "get", "200").properties as Record<string, { items: Record<string, unknown> }>;
    const base = exampleOf(list.server_types.items) as Record<string, unknown>;
    const price = (loc: string) => ({
      location: loc,
      price_hourly: { net: (hourly / 1.19).toFixed(4), gross: hourly.toFixed(4) },
      price_monthly: { net: ((hourly * 730) / 1.19).toFixed(4), gross: (hourly * 730).toFixed(4) },
      included_traffic: 21990232555520,
      price_per_tb_traffic: { net: "1.0000", gross: "1.1900" },
    });
    return {
      ...base,
      id: i + 1,
      name,
      description: name.toUpperCase(),
      cores,
      memory,
      disk,
      deprecated,
      deprecation: deprecated ? { announced: "2026-01-01T00:00:00Z", unavailable_after: "2026-12-31T00:00:00Z" } : null,
      prices: LOCATIONS.map((l) => price(l.name)),
      storage_type: "local",
      cpu_type: "shared",
      architecture: "x86",
      locations: LOCATIONS.map((l) => ({
        id: l.id,
        name: l.name,
        deprecation: null,
        available: locations.includes(l.name),
        recommended: locations.includes(l.name),
      })),
    };
  }

  private serverJson(s: ServerRec) {
    this.settle();
    const schema = this.spec.responseSchema("/servers/{id}", "get", "200");
    const base = exampleOf((schema.properties as Record<string, Record<string, unknown>>).server) as Record<string, unknown>;
    const loc = LOCATIONS.find((l) => l.name === s.location) ?? LOCATIONS[0];
    const t = TYPES.findIndex((x) => x[0] === s.serverType);
    return {
      ...base,
      id: s.id,
      name: s.name,
      status: s.status,
      created: s.created,
      labels: s.labels,
      public_net: {
        ipv4: s.ipv4 ? { id: s.id, ip: s.ipv4, blocked: false, dns_ptr: `static.${s.ipv4}.clients.example` } : null,
        ipv6: s.ipv6 ? { id: s.id + 1, ip: "::/64", blocked: false, dns_ptr: [] } : null,
        floating_ips: [],
        firewalls: [],
      },
      private_net: [],
      server_type: this.serverType(t < 0 ? 0 : t),
      location: loc,
      image: null,
      iso: null,
      rescue_enabled: false,
      locked: false,
      backup_window: null,
      outgoing_traffic: 0,
      ingoing_traffic: 0,
      included_traffic: 21990232555520,
      protection: { delete: false, rebuild: false },
      primary_disk_size: TYPES[t < 0 ? 0 : t][3],
      volumes: [],
      load_balancers: [],
      ...(this.opts.legacyDatacenter
        ? { datacenter: { id: loc.id, name: `${loc.name}-dc1`, description: `${loc.description} DC1`, location: loc, server_types: { supported: [], available: [], available_for_migration: [] } } }
        : {}),
    };
  }

  private page<T>(list: T[], q: URLSearchParams): T[] {
    const page = Number(q.get("page") ?? 1);
    const per = Math.min(Number(q.get("per_page") ?? 25), 50);
    return list.slice((page - 1) * per, page * per);
  }

  private meta(page: number, perPage: number, total: number) {
    const per = Math.min(perPage, 50);
    const last = Math.max(1, Math.ceil(total / per));
    return { pagination: { page, per_page: per, previous_page: page > 1 ? page - 1 : null, next_page: page < last ? page + 1 : null, last_page: last, total_entries: total } };
  }
}

/** Hetzner label selectors: comma-separated `k=v`, `k==v`, `k!=v`, `k`, `!k` (all must hold). */
export function matchesSelector(labels: Record<string, string>, selector: string | null): boolean {
  if (!selector) return true;
  return selector.split(",").every((term) => {
    const t = term.trim();
    let m: RegExpMatchArray | null;
    if ((m = t.match(/^([^!=]+)!=(.*)$/))) return labels[m[1]] !== m[2];
    if ((m = t.match(/^([^!=]+)==?(.*)$/))) return labels[m[1]] === m[2];
    if (t.startsWith("!")) return !(t.slice(1) in labels);
    return t in labels;
  });
}

function md5Fingerprint(publicKey: string): string | undefined {
  const b64 = publicKey.trim().split(/\s+/)[1];
  if (!b64 || !/^[A-Za-z0-9+/=]+$/.test(b64)) return undefined;
  return createHash("md5").update(Buffer.from(b64, "base64")).digest("hex").match(/../g)?.join(":");
}
