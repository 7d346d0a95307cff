import type { Client } from "openapi-fetch";
import { type ApiResponse, apiClient } from "./transport.js";
import { backoff, showEndpoint, sleep } from "../../src/core/api.js";
import { ProviderError, UserError } from "../../src/core/errors.js";
import type { operations, paths } from "./api.gen.js";

/**
 * The thin Hetzner Cloud API client: the only code in spuff that talks HTTP to Hetzner. Types come from the official
 * OpenAPI spec (api.gen.ts). It adds what every call needs: the token (never echoed), a per-request timeout, retries of
 * reads on 5xx/timeouts with backoff, waiting out 429 as the quota refills (one request per second), retrying 423
 * `locked`, pagination that always ends, and one mapping from API errors to spuff's errors with hints. Creates (POST)
 * are never retried blindly: the caller decides (it looks the resource up by its `spuff/request-id` label first).
 */

type Json<Op, Status extends number> = Op extends { responses: { [K in Status]: { content: { "application/json": infer B } } } } ? B : never;
export type Server = NonNullable<Json<operations["get_server"], 200>["server"]>;
export type SshKey = Json<operations["create_ssh_key"], 201>["ssh_key"];
export type Action = Json<operations["get_actions"], 200>["actions"][number];
export type ServerType = Json<operations["list_server_types"], 200>["server_types"][number];
export type Location = Json<operations["list_locations"], 200>["locations"][number];
export type CreateServerBody = NonNullable<operations["create_server"]["requestBody"]>["content"]["application/json"];
export type CreateSshKeyBody = NonNullable<operations["create_ssh_key"]["requestBody"]>["content"]["application/json"];
export type HVolume = Json<operations["get_volume"], 200>["volume"];
export type CreateVolumeBody = NonNullable<operations["create_volume"]["requestBody"]>["content"]["application/json"];
export type Pricing = Json<operations["get_pricing"], 200>["pricing"];

export const DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1";
export const TOKEN_HINT =
  "create a token in the Hetzner Cloud Console (https://console.hetzner.cloud): open your project → Security → API tokens → Generate API token, permission Read & Write; then `export HCLOUD_TOKEN=...` (or set hetzner.token in your config)";

export interface ClientOptions {
  endpoint: string;
  token: string;
  /** Per-request timeout. */
  timeoutMs: number;
  /** Base of every backoff and of action polling (HCLOUD_POLL_INTERVAL, default 500 ms). */
  pollMs: number;
  /** How long a `locked` (423) resource is retried before giving up. */
  lockedMs?: number;
  /** How long one call keeps retrying while rate limited (429) before it fails (SPUFF_HETZNER_RATE_LIMIT_TIMEOUT). */
  rateLimitedMs?: number;
}

const apiErrors = new WeakMap<object, { status: number; code: string }>();

/** The HTTP status and Hetzner error code behind an error this client threw, if any. */
export function apiErrorOf(err: unknown): { status: number; code: string } | undefined {
  return err && typeof err === "object" ? apiErrors.get(err) : undefined;
}

/** A failure whose outcome at Hetzner is unknown (timeout, connection reset, 5xx on a create): look before retrying. */
export class UncertainError extends ProviderError {}

interface ApiErrorBody {
  error?: { code?: string; message?: string; details?: { fields?: { name?: string; messages?: string[] }[] } | null };
}

type Result<D> = { data?: D; error?: unknown; response: ApiResponse };

/** What messages say for an HCLOUD_ENDPOINT that is not a URL. */
export const INVALID_ENDPOINT = "(invalid HCLOUD_ENDPOINT)";

/** Pages a list call reads at most (10 000 entries at 50 a page, far beyond any project spuff manages). */
export const MAX_PAGES = 200;

export class HetznerClient {
  readonly http: Client<paths>;
  private readonly opts: Required<ClientOptions>;

  constructor(opts: ClientOptions) {
    this.opts = { lockedMs: 120_000, rateLimitedMs: 30_000, ...opts };
    let base: URL;
    try {
      base = new URL(opts.endpoint);
    } catch {
      throw new UserError(`HCLOUD_ENDPOINT is not a URL`, { hint: `unset it to use ${DEFAULT_ENDPOINT}` });
    }
    this.http = apiClient<paths>(base.toString().replace(/\/$/, ""), { Authorization: `Bearer ${opts.token}`, "User-Agent": "spuff" });
  }

  get pollMs(): number {
    return this.opts.pollMs;
  }

  /** How long a locked (423) resource is retried (SPUFF_HETZNER_LOCKED_TIMEOUT). */
  get lockedMs(): number {
    return this.opts.lockedMs;
  }

  get endpoint(): string {
    return showEndpoint(this.opts.endpoint, INVALID_ENDPOINT);
  }

  /** Removes the token from any text that leaves the client. */
  redact(text: string): string {
    return this.opts.token.length >= 4 ? text.split(this.opts.token).join("***") : text;
  }

  /**
   * Runs one API call with timeout, retries and error mapping. `idempotent` calls are retried on 5xx and transport
   * failures; others throw `UncertainError` then. 429 and 423 are retried for every call (the request was refused).
   * Statuses in `accept` are returned as `undefined` instead of thrown (e.g. 404 on get/delete).
   */
  async call<D>(
    what: string,
    run: (signal: AbortSignal) => Promise<Result<D>>,
    opts: { idempotent: boolean; signal?: AbortSignal; accept?: number[] },
  ): Promise<D | undefined> {
    const { signal } = opts;
    let transient = 0;
    let rateLimitedSince: number | undefined;
    const lockedUntil = Date.now() + this.opts.lockedMs;
    let locked = 0;
    for (;;) {
      signal?.throwIfAborted();
      const timeout = AbortSignal.timeout(this.opts.timeoutMs);
      const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
      let r: Result<D>;
      try {
        r = await run(combined);
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        const reason = timeout.aborted
          ? `no answer from the Hetzner API within ${this.opts.timeoutMs < 1000 ? `${this.opts.timeoutMs} ms` : `${Math.round(this.opts.timeoutMs / 1000)} s`}`
          : `cannot reach the Hetzner API at ${this.endpoint}: ${this.redact(transportMessage(err))}`;
        if (opts.idempotent && transient < 4) {
          await sleep(backoff(transient++, this.opts.pollMs, 10_000), signal);
          continue;
        }
        const E = opts.idempotent ? ProviderError : UncertainError;
        throw new E(`${what}: ${reason}`, { hint: "check your network and HCLOUD_ENDPOINT; https://status.hetzner.com shows Hetzner's status" });
      }
      const { response } = r;
      if (response.ok) return r.data ?? (undefined as D);
      if (opts.accept?.includes(response.status)) return undefined;
      const body = (r.error ?? {}) as ApiErrorBody;
      if (response.status === 429) {
        // The quota refills gradually (one request per second at 3600/h): the next request is allowed in about a
        // second, whatever `RateLimit-Reset` says (that is when the whole quota is back, usually an hour away).
        rateLimitedSince ??= Date.now();
        const left = this.opts.rateLimitedMs - (Date.now() - rateLimitedSince);
        if (left > 0) {
          await sleep(Math.min(rateLimitWait(response.headers), left), signal);
          continue;
        }
        throw this.rateLimitError(what, response, body, Date.now() - rateLimitedSince);
      }
      if (response.status === 423 && Date.now() < lockedUntil) {
        await sleep(backoff(locked++, this.opts.pollMs, 5000), signal);
        continue;
      }
      if (response.status >= 500) {
        if (opts.idempotent && transient < 4) {
          await sleep(backoff(transient++, this.opts.pollMs, 10_000), signal);
          continue;
        }
        if (!opts.idempotent) {
          const e = this.toError(what, response, body);
          const u = new UncertainError(e.message, { hint: e.hints });
          apiErrors.set(u, { status: response.status, code: body.error?.code ?? "" });
          throw u;
        }
      }
      throw this.toError(what, response, body);
    }
  }

  /** Maps an API error response to a UserError (the user fixes it: exit 1) or ProviderError (exit 2), with hints. */
  toError(what: string, response: ApiResponse, body: ApiErrorBody): UserError | ProviderError {
    const err = this.mapError(what, response, body);
    apiErrors.set(err, { status: response.status, code: body.error?.code ?? "" });
    return err;
  }

  private mapError(what: string, response: ApiResponse, body: ApiErrorBody): UserError | ProviderError {
    const status = response.status;
    const code = body.error?.code ?? "";
    const apiMessage = this.redact(body.error?.message ?? response.statusText ?? "");
    const said = `${status}${code ? ` ${code}` : ""}${apiMessage ? `: ${apiMessage}` : ""}`;
    if (status === 401) {
      return new UserError(`the Hetzner API rejected the token (${said})`, { hint: TOKEN_HINT });
    }
    if (status === 403 && code === "token_readonly") {
      return new UserError(`${what}: the Hetzner API token is read-only (${said})`, {
        hint: "spuff creates and deletes servers and SSH keys: generate a token with permission Read & Write (Console → your project → Security → API tokens) and use it instead",
      });
    }
    if (status === 403 && code === "resource_limit_exceeded") {
      return new ProviderError(`${what}: the Hetzner project reached a resource limit (${said})`, {
        hint: "delete servers you no longer need (`spuff ls`, `spuff reap`) or ask Hetzner for a higher limit (Console → your project → Limits)",
      });
    }
    if (status === 403) {
      return new ProviderError(`${what}: Hetzner refused the request (${said})`, {
        hint: "check that the token belongs to the intended project and that the project is not restricted (https://console.hetzner.cloud)",
      });
    }
    if (status === 409 && code === "uniqueness_error") {
      return new UserError(`${what}: the name is already taken in this Hetzner project (${said})`, {
        hint: "pick another name (`spuff up OTHER-NAME`), or remove the existing resource in the Hetzner Cloud Console",
      });
    }
    if (status === 412 && code === "resource_unavailable") {
      return new ProviderError(`${what}: Hetzner has no capacity for this right now (${said})`, {
        hint: "try another location (--location) or server type (--size); `spuff up --help` lists them",
      });
    }
    if (status === 422 && code === "invalid_input") {
      const fields = body.error?.details?.fields ?? [];
      return new UserError(`${what}: the Hetzner API rejected the input (${said})`, {
        notes: fields.map((f) => `${f.name ?? "?"}: ${(f.messages ?? []).map((m) => this.redact(m)).join("; ")}`),
        hint: "check hetzner.* in your config (`spuff config show`) and the --size/--location flags",
      });
    }
    if (status === 423) {
      return new ProviderError(`${what}: the resource is locked by a running Hetzner action (${said})`, {
        hint: "wait a minute and run the command again",
      });
    }
    if (status >= 500) {
      return new ProviderError(`${what}: the Hetzner API failed (${said})`, {
        hint: "Hetzner may be having trouble (https://status.hetzner.com); run the command again later",
      });
    }
    return new ProviderError(`${what}: the Hetzner API answered ${said}`, {
      hint: status === 404 ? "the resource no longer exists" : "run again with --verbose for details",
    });
  }

  /** 429 for longer than spuff waits: how long it tried, and how the quota comes back. */
  private rateLimitError(what: string, response: ApiResponse, body: ApiErrorBody, waitedMs: number): ProviderError {
    const code = body.error?.code ?? "";
    const apiMessage = this.redact(body.error?.message ?? response.statusText ?? "");
    const said = `429${code ? ` ${code}` : ""}${apiMessage ? `: ${apiMessage}` : ""}`;
    const limit = Number(response.headers.get("RateLimit-Limit")) || 3600;
    const reset = response.headers.get("RateLimit-Reset");
    const full = reset && /^\d+$/.test(reset) ? ` (all of them by ${new Date(Number(reset) * 1000).toISOString().slice(11, 16)} UTC)` : "";
    const every = limit === 3600 ? "one per second" : `one every ${Math.round(3_600_000 / limit) / 1000} s`;
    const err = new ProviderError(`${what}: rate limited by the Hetzner API for ${Math.max(1, Math.round(waitedMs / 1000))} s (${said})`, {
      hint: [
        `the project's ${limit} requests per hour come back ${every}${full}; another tool (or a loop in CI) is using the same project heavily`,
        "run the command again in a minute; SPUFF_HETZNER_RATE_LIMIT_TIMEOUT waits longer (default 30s)",
      ],
    });
    apiErrors.set(err, { status: 429, code });
    return err;
  }

  // ---- operations -------------------------------------------------------------------------------------------------

  /**
   * All pages of a list call (`per_page` 50, the API's maximum). It always ends: each page must name the following one
   * as `next_page` (or none), never one past `last_page`, and at most MAX_PAGES are read; any other answer is an error
   * (a partial list is never returned as if it were whole).
   */
  async all<T, K extends string>(
    what: string,
    key: K,
    page: (p: number, signal: AbortSignal) => Promise<Result<{ [k in K]: T[] } & { meta?: { pagination?: { next_page?: number | null; last_page?: number | null } } }>>,
    signal?: AbortSignal,
  ): Promise<T[]> {
    const out: T[] = [];
    for (let p = 1; ; p++) {
      const current = p;
      const data = await this.call(what, (s) => page(current, s), { idempotent: true, signal });
      out.push(...(data?.[key] ?? []));
      const next = data?.meta?.pagination?.next_page;
      if (next === null || next === undefined) return out;
      const last = data?.meta?.pagination?.last_page;
      const broken =
        next <= p
          ? `the Hetzner API's page ${p} names next_page ${next}: the pages do not move forward`
          : typeof last === "number" && next > last
            ? `the Hetzner API's page ${p} names next_page ${next} past its last_page ${last}`
            : next > p + 1
              ? `the Hetzner API's page ${p} names next_page ${next}: pages ${p + 1} to ${next - 1} would be missed`
              : p >= MAX_PAGES
                ? `the Hetzner API's answer goes on past ${MAX_PAGES} pages (${MAX_PAGES * 50} entries)`
                : undefined;
      if (broken) {
        throw new ProviderError(`${what}: ${broken}`, {
          hint: "the answers do not come from a working Hetzner API: check HCLOUD_ENDPOINT and any proxy in between, or https://status.hetzner.com",
        });
      }
    }
  }

  listServers(labelSelector: string, signal?: AbortSignal): Promise<Server[]> {
    return this.all<Server, "servers">(
      "list servers",
      "servers",
      (page, s) => this.http.GET("/servers", { params: { query: { label_selector: labelSelector, page, per_page: 50 } }, signal: s }),
      signal,
    );
  }

  async getServer(id: number, signal?: AbortSignal): Promise<Server | undefined> {
    const data = await this.call(`get server ${id}`, (s) => this.http.GET("/servers/{id}", { params: { path: { id } }, signal: s }), {
      idempotent: true,
      signal,
      accept: [404],
    });
    return data?.server;
  }

  /** POST /servers, once. A transport failure or 5xx throws `UncertainError`: the server may exist. */
  async createServer(body: CreateServerBody, signal?: AbortSignal): Promise<{ server: Server; action?: Action; nextActions: Action[] }> {
    const data = await this.call(`create server ${body.name}`, (s) => this.http.POST("/servers", { body, signal: s }), { idempotent: false, signal });
    if (!data) throw new ProviderError(`create server ${body.name}: the Hetzner API answered without a server`);
    return { server: data.server as Server, action: data.action, nextActions: Array.isArray(data.next_actions) ? data.next_actions : [] };
  }

  async setServerLabels(id: number, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    await this.call(`relabel server ${id}`, (s) => this.http.PUT("/servers/{id}", { params: { path: { id } }, body: { labels }, signal: s }), {
      idempotent: true,
      signal,
    });
  }

  /** DELETE /servers/{id}; `undefined` when it is already gone. A locked server (running action) is retried. */
  async deleteServer(id: number, signal?: AbortSignal): Promise<Action | undefined> {
    const data = await this.call(`delete server ${id}`, (s) => this.http.DELETE("/servers/{id}", { params: { path: { id } }, signal: s }), {
      idempotent: true,
      signal,
      accept: [404],
    });
    return data?.action;
  }

  /** POST /servers/{id}/actions/poweron: boots a stopped server (its disk as it was). Sent again only if refused. */
  async powerOnServer(id: number, signal?: AbortSignal): Promise<Action> {
    const data = await this.call(`power on server ${id}`, (s) => this.http.POST("/servers/{id}/actions/poweron", { params: { path: { id } }, signal: s }), {
      idempotent: true,
      signal,
    });
    if (!data) throw new ProviderError(`power on server ${id}: the Hetzner API answered without an action`);
    return data.action;
  }

  listSshKeys(labelSelector: string, signal?: AbortSignal): Promise<SshKey[]> {
    return this.all<SshKey, "ssh_keys">(
      "list SSH keys",
      "ssh_keys",
      (page, s) => this.http.GET("/ssh_keys", { params: { query: { label_selector: labelSelector, page, per_page: 50 } }, signal: s }),
      signal,
    );
  }

  async createSshKey(body: CreateSshKeyBody, signal?: AbortSignal): Promise<SshKey> {
    const data = await this.call(`register SSH key ${body.name}`, (s) => this.http.POST("/ssh_keys", { body, signal: s }), { idempotent: false, signal });
    if (!data) throw new ProviderError(`register SSH key ${body.name}: the Hetzner API answered without a key`);
    return data.ssh_key;
  }

  /** DELETE /ssh_keys/{id}; already gone is success. */
  async deleteSshKey(id: number, signal?: AbortSignal): Promise<void> {
    await this.call(`delete SSH key ${id}`, (s) => this.http.DELETE("/ssh_keys/{id}", { params: { path: { id } }, signal: s }), {
      idempotent: true,
      signal,
      accept: [404],
    });
  }

  listVolumes(labelSelector: string, signal?: AbortSignal): Promise<HVolume[]> {
    return this.all<HVolume, "volumes">(
      "list volumes",
      "volumes",
      (page, s) => this.http.GET("/volumes", { params: { query: { label_selector: labelSelector, page, per_page: 50 } }, signal: s }),
      signal,
    );
  }

  async getVolume(id: number, signal?: AbortSignal): Promise<HVolume | undefined> {
    const data = await this.call(`get volume ${id}`, (s) => this.http.GET("/volumes/{id}", { params: { path: { id } }, signal: s }), {
      idempotent: true,
      signal,
      accept: [404],
    });
    return data?.volume;
  }

  /** POST /volumes, once (labels in the same request). A transport failure or 5xx throws `UncertainError`. */
  async createVolume(body: CreateVolumeBody, signal?: AbortSignal): Promise<{ volume: HVolume; action?: Action }> {
    const data = await this.call(`create volume ${body.name}`, (s) => this.http.POST("/volumes", { body, signal: s }), { idempotent: false, signal });
    if (!data?.volume) throw new ProviderError(`create volume ${body.name}: the Hetzner API answered without a volume`);
    return { volume: data.volume, action: data.action ?? undefined };
  }

  async setVolumeLabels(id: number, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    await this.call(`relabel volume ${id}`, (s) => this.http.PUT("/volumes/{id}", { params: { path: { id } }, body: { labels }, signal: s }), {
      idempotent: true,
      signal,
    });
  }

  /** DELETE /volumes/{id}; already gone is success. A locked volume (423) is retried like every call. */
  async deleteVolume(id: number, signal?: AbortSignal): Promise<void> {
    await this.call(`delete volume ${id}`, (s) => this.http.DELETE("/volumes/{id}", { params: { path: { id } }, signal: s }), {
      idempotent: true,
      signal,
      accept: [404],
    });
  }

  async pricing(signal?: AbortSignal): Promise<Pricing | undefined> {
    const data = await this.call("get pricing", (s) => this.http.GET("/pricing", { signal: s }), { idempotent: true, signal });
    return data?.pricing;
  }

  /** The actions `ids` as the API has them now, in one request (GET /actions?id=…); an id it no longer knows is left out. */
  async getActions(ids: number[], signal?: AbortSignal): Promise<Action[]> {
    const data = await this.call(`get actions ${ids.join(", ")}`, (s) => this.http.GET("/actions", { params: { query: { id: ids } }, signal: s }), {
      idempotent: true,
      signal,
    });
    if (!data) throw new ProviderError(`get actions ${ids.join(", ")}: the Hetzner API answered without actions`);
    return data.actions;
  }

  /** Polls an action until it succeeds (see `waitActions`); an `error` status throws. */
  async waitAction(action: Action, what: string, signal?: AbortSignal, timeoutMs = 10 * 60_000): Promise<Action> {
    return (await this.waitActions([{ action, what }], signal, timeoutMs))[0];
  }

  /**
   * Polls actions until every one has succeeded, all of them in one request per poll (as hcloud-go does), so waiting
   * for a create and the actions it started (attach a volume...) takes as long as the longest, not their sum. The
   * waits between polls are `pollDelay`'s. The first action with an `error` status throws, named by its `what`.
   */
  async waitActions(actions: { action: Action; what: string }[], signal?: AbortSignal, timeoutMs = 10 * 60_000): Promise<Action[]> {
    const deadline = Date.now() + timeoutMs;
    const current = actions.map((a) => a.action);
    for (let i = 0; ; i++) {
      for (const [k, a] of current.entries()) {
        if (a.status !== "error") continue;
        throw new ProviderError(`${actions[k].what}: the Hetzner action ${a.command} failed: ${a.error?.code ?? ""} ${this.redact(a.error?.message ?? "")}`.trim(), {
          hint: "check the server in the Hetzner Cloud Console; `spuff reap` removes leftovers",
        });
      }
      const running = current.filter((a) => a.status === "running");
      if (running.length === 0) return current;
      if (Date.now() > deadline) {
        const k = current.indexOf(running[0]);
        throw new ProviderError(`${actions[k].what}: the Hetzner action ${running[0].command} did not finish within ${Math.round(timeoutMs / 60_000)} min`, {
          hint: "check the server in the Hetzner Cloud Console",
        });
      }
      await sleep(pollDelay(i, this.opts.pollMs), signal);
      const answer = new Map((await this.getActions(running.map((a) => a.id), signal)).map((a) => [a.id, a]));
      for (const [k, a] of current.entries()) {
        if (a.status !== "running") continue;
        const now = answer.get(a.id);
        if (!now) throw new ProviderError(`${actions[k].what}: the Hetzner API no longer knows its action ${a.id} (${a.command})`);
        current[k] = now;
      }
    }
  }

  serverTypes(signal?: AbortSignal): Promise<ServerType[]> {
    return this.all<ServerType, "server_types">(
      "list server types",
      "server_types",
      (page, s) => this.http.GET("/server_types", { params: { query: { page, per_page: 50 } }, signal: s }),
      signal,
    );
  }

  locations(signal?: AbortSignal): Promise<Location[]> {
    return this.all<Location, "locations">(
      "list locations",
      "locations",
      (page, s) => this.http.GET("/locations", { params: { query: { page, per_page: 50 } }, signal: s }),
      signal,
    );
  }
}

/**
 * The wait before poll `i` (0-based) of an action or a server's status: a twentieth of the poll interval (25 ms by
 * default), doubling, up to 2 s (or the interval, when longer). Quick first looks keep fast operations fast (many
 * actions finish within a few hundred milliseconds); a 10 s create costs ~11 requests.
 */
export function pollDelay(i: number, pollMs: number): number {
  return Math.min(Math.max(2000, pollMs), Math.max(10, pollMs / 20) * 2 ** i);
}

/**
 * How long to wait after a 429 before the next try: the time one request takes to come back (the quota refills
 * `RateLimit-Limit` per hour, evenly: 1 s at the default 3600), or until `RateLimit-Reset` when the whole quota is back
 * sooner than that; at least 50 ms, at most 10 s, plus up to 10 % so processes sharing a project do not retry in step.
 */
export function rateLimitWait(headers: ApiResponse["headers"], now = Date.now(), jitter = Math.random()): number {
  const limit = Number(headers.get("RateLimit-Limit"));
  let ms = limit > 0 ? 3_600_000 / limit : 1000;
  const reset = headers.get("RateLimit-Reset");
  if (reset && /^\d+$/.test(reset)) ms = Math.min(ms, Math.max(0, Number(reset) * 1000 - now));
  return Math.round(Math.min(10_000, Math.max(50, ms)) * (1 + 0.1 * jitter));
}

function transportMessage(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
