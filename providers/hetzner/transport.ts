import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";

/**
 * The `fetch` openapi-fetch calls, on node:http(s). Node 20's global fetch loads undici and compiles its WebAssembly
 * HTTP parser on first use, and the process then waits for that compilation before it can exit: about 60 ms more per
 * `spuff` run than node:http (docs/performance.md). Requests and answers are the same: one request, the whole body
 * buffered (Hetzner answers are small JSON), no redirects (the API sends none), no compression asked for.
 * Transport failures reject like fetch does: a TypeError whose `cause` is the system error (ECONNREFUSED...).
 */
export async function nodeFetch(input: Request): Promise<Response> {
  const url = new URL(input.url);
  const body = input.body ? Buffer.from(await input.arrayBuffer()) : undefined;
  const headers: Record<string, string> = Object.fromEntries(input.headers);
  if (body) headers["content-length"] = String(body.length);
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  const res = await new Promise<{ msg: IncomingMessage; data: Buffer }>((resolve, reject) => {
    const req = send(url, { method: input.method, headers, signal: input.signal }, (msg) => {
      const chunks: Buffer[] = [];
      msg.on("data", (c: Buffer) => chunks.push(c));
      msg.on("end", () => resolve({ msg, data: Buffer.concat(chunks) }));
      msg.on("error", (err) => reject(new TypeError("fetch failed", { cause: err })));
    });
    req.on("error", (err) => reject(input.signal.aborted ? input.signal.reason : new TypeError("fetch failed", { cause: err })));
    req.end(body);
  });
  const out = new Headers();
  for (const [k, v] of Object.entries(res.msg.headers)) {
    if (Array.isArray(v)) for (const one of v) out.append(k, one);
    else if (v !== undefined) out.set(k, v);
  }
  const status = res.msg.statusCode ?? 0;
  const empty = status === 204 || status === 304 || input.method === "HEAD";
  return new Response(empty ? null : new Uint8Array(res.data), { status, statusText: res.msg.statusMessage, headers: out });
}
