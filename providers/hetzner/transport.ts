import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import type { Client } from "openapi-fetch";

/**
 * The HTTP client the Hetzner client calls, on node:http(s), typed by the OpenAPI spec through openapi-fetch's
 * `Client` type (a type only: none of openapi-fetch runs). Node 20's global fetch loads undici and compiles its
 * WebAssembly HTTP parser, and the process waits for that before it exits (~60 ms); openapi-fetch without fetch still
 * builds undici's `Headers`, `Request` and `Response` for every call, and loading those is ~15–30 ms of every `spuff`
 * run that talks to Hetzner (docs/performance.md). What it sends is what openapi-fetch sent: the path parameters
 * percent-encoded into the path, the query as `name=value` pairs (arrays repeated, `undefined` left out), a JSON body
 * with `Content-Type: application/json`. The whole answer is buffered (Hetzner answers are small JSON), no redirects
 * (the API sends none), no compression asked for. Transport failures reject like fetch does: a TypeError whose `cause`
 * is the system error (ECONNREFUSED...); an abort rejects with the signal's reason.
 */

/** What the Hetzner client reads of an answer (a subset of fetch's `Response`). */
export interface ApiResponse {
  ok: boolean;
  status: number;
  statusText: string;
  headers: { get(name: string): string | null };
}

interface CallInit {
  params?: { path?: Record<string, string | number>; query?: Record<string, unknown> };
  body?: unknown;
  signal?: AbortSignal;
}

export interface ApiResult {
  data?: unknown;
  error?: unknown;
  response: ApiResponse;
}

function query(params: Record<string, unknown> | undefined): string {
  const pairs: string[] = [];
  for (const [name, value] of Object.entries(params ?? {})) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one === undefined || one === null) continue;
      if (typeof one === "object") throw new Error(`query parameter ${name}: objects are not supported`);
      pairs.push(`${name}=${encodeURIComponent(String(one))}`);
    }
  }
  return pairs.length ? `?${pairs.join("&")}` : "";
}

function answerHeaders(raw: IncomingHttpHeaders): ApiResponse["headers"] {
  return {
    get(name: string): string | null {
      const v = raw[name.toLowerCase()];
      return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
    },
  };
}

/** One request: the URL, method, headers and JSON body; resolves with the status, headers and the whole body. */
async function send(url: URL, method: string, headers: Record<string, string>, body: Buffer | undefined, signal: AbortSignal | undefined) {
  // node:https (and TLS, ~4 ms to load) only for an https endpoint: the API is, a local fake (HCLOUD_ENDPOINT) is not.
  const request = url.protocol === "https:" ? (await import("node:https")).request : httpRequest;
  return new Promise<{ response: ApiResponse; text: string }>((resolve, reject) => {
    const fail = (err: Error) => reject(signal?.aborted ? signal.reason : new TypeError("fetch failed", { cause: err }));
    if (signal?.aborted) return reject(signal.reason);
    let req: ReturnType<typeof request>;
    try {
      req = request(url, { method, headers, signal }, (msg) => {
        const chunks: Buffer[] = [];
        msg.on("data", (c: Buffer) => chunks.push(c));
        msg.on("error", fail);
        msg.on("end", () => {
          const status = msg.statusCode ?? 0;
          const response = { ok: status >= 200 && status < 300, status, statusText: msg.statusMessage ?? "", headers: answerHeaders(msg.headers) };
          resolve({ response, text: Buffer.concat(chunks).toString("utf8") });
        });
      });
    } catch (err) {
      // An invalid header value (a token with a newline): refused before anything is sent.
      return reject(new TypeError("fetch failed", { cause: err }));
    }
    req.on("error", fail);
    req.end(body);
  });
}

/** A client for the API at `baseUrl` (no trailing slash), sending `headers` with every request. */
export function apiClient<Paths extends {}>(baseUrl: string, headers: Record<string, string>): Client<Paths> {
  const call = async (method: string, path: string, init: CallInit = {}): Promise<ApiResult> => {
    const pathname = path.replace(/\{([^{}]+)\}/g, (whole, name: string) => {
      const v = init.params?.path?.[name];
      return v === undefined || v === null ? whole : encodeURIComponent(String(v));
    });
    const url = new URL(`${baseUrl}${pathname}${query(init.params?.query)}`);
    const body = init.body === undefined ? undefined : Buffer.from(JSON.stringify(init.body));
    const all: Record<string, string> = { ...headers };
    if (body) {
      all["Content-Type"] = "application/json";
      all["Content-Length"] = String(body.length);
    }
    const { response, text } = await send(url, method, all, body, init.signal);
    // As openapi-fetch: no body on 204, HEAD or `Content-Length: 0`; a successful answer is JSON (invalid JSON throws,
    // like a broken connection); an error's body is JSON when it parses, else its text.
    if (response.status === 204 || method === "HEAD" || response.headers.get("Content-Length") === "0") return { response };
    if (response.ok) return { data: text ? JSON.parse(text) : undefined, response };
    let error: unknown = text;
    try {
      error = JSON.parse(text);
    } catch {}
    return { error, response };
  };
  const client = {
    GET: (path: string, init?: CallInit) => call("GET", path, init),
    POST: (path: string, init?: CallInit) => call("POST", path, init),
    PUT: (path: string, init?: CallInit) => call("PUT", path, init),
    DELETE: (path: string, init?: CallInit) => call("DELETE", path, init),
  };
  return client as unknown as Client<Paths>;
}
