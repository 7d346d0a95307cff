import { randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Harness, harness, problems } from "./harness.js";

// The API as its spec describes it, through the real CLI against the spec-validating fake: the rate limit refills one
// request per second (RateLimit-Reset is when the WHOLE quota is back, usually an hour away), list pagination that
// never ends, and user_data's 32 KiB counted as sent (gzip goes base64).
describe("hetzner: rate limit as the spec has it", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.76." });
  });
  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  const statuses = (path: RegExp) => h.fake.requests.filter((r) => path.test(r.path)).map((r) => r.status);

  it("the quota used up (429, RateLimit-Reset an hour away): ls and down wait for the refill and succeed within seconds", async () => {
    expect((await h.spuff(["up", "rl"])).code).toBe(0);

    h.fake.rateLimit.setRemaining(0);
    let t = Date.now();
    const ls = await h.spuff(["ls", "--json"]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(Date.now() - t).toBeLessThan(5000);
    expect(JSON.parse(ls.stdout).map((v: { name: string }) => v.name)).toEqual(["rl"]);
    expect(statuses(/^\/servers$/).slice(-2)).toEqual([429, 200]);
    const first429 = h.fake.requests.findIndex((r) => r.status === 429);
    expect(first429).toBeGreaterThan(-1);

    h.fake.rateLimit.setRemaining(0);
    t = Date.now();
    const down = await h.spuff(["down", "rl", "--yes"]);
    expect(down.code, down.stderr).toBe(0);
    // Every request of down waits for its own refilled request (one per second): a handful of seconds, not an hour.
    expect(Date.now() - t).toBeLessThan(15_000);
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
    expect(h.fake.requests.filter((r) => r.status === 429).length).toBeGreaterThanOrEqual(2);
  });

  it("a 429 with the API's headers and body: every answer carries RateLimit-*, the 429 says rate_limit_exceeded", async () => {
    h.fake.rateLimit.setRemaining(0);
    const res = await fetch(`${h.fake.endpoint}/servers`, { headers: { Authorization: `Bearer ${h.fake.token}` } });
    expect(res.status).toBe(429);
    expect(await res.json()).toEqual({ error: { code: "rate_limit_exceeded", message: "limit of 3600 requests per hour reached", details: null } });
    expect(res.headers.get("RateLimit-Limit")).toBe("3600");
    expect(res.headers.get("RateLimit-Remaining")).toBe("0");
    // Full again in an hour (3600 requests at one per second), not in a second.
    expect(Number(res.headers.get("RateLimit-Reset")) - Date.now() / 1000).toBeGreaterThan(3590);
    await new Promise((r) => setTimeout(r, 1100));
    const ok = await fetch(`${h.fake.endpoint}/servers`, { headers: { Authorization: `Bearer ${h.fake.token}` } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("RateLimit-Remaining")).toBe("0");
    // Unauthenticated requests count too.
    expect((await fetch(`${h.fake.endpoint}/servers`)).status).toBe(429);
  });

  it("rate limited for longer than spuff waits: exit 2 after the bound, says how the quota comes back", async () => {
    h.fake.inject({ method: "GET", path: "/servers", status: 429, times: Infinity });
    const t = Date.now();
    const r = await h.spuff(["ls"], { SPUFF_HETZNER_RATE_LIMIT_TIMEOUT: "2s" });
    expect(r.code).toBe(2);
    expect(Date.now() - t).toBeLessThan(5000);
    expect(r.stderr).toContain("error: list servers: rate limited by the Hetzner API for 2 s (429 rate_limit_exceeded: limit of 3600 requests per hour reached)");
    expect(r.stderr).toMatch(/hint: the project's 3600 requests per hour come back one per second \(all of them by \d\d:\d\d UTC\)/);
    // About one try per second, not a busy loop.
    expect(statuses(/^\/servers$/).length).toBeGreaterThanOrEqual(2);
    expect(statuses(/^\/servers$/).length).toBeLessThanOrEqual(4);
    h.fake.clearFaults();
  });
});

describe("hetzner: list pagination always ends", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.76.", standin: false });
  });
  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  const hint = "hint: the answers do not come from a working Hetzner API: check HCLOUD_ENDPOINT and any proxy in between, or https://status.hetzner.com";

  it("a page that names itself as the next one: ls ends with a clear error instead of looping", async () => {
    h.fake.seedServers(60, { labels: (i) => ({ "managed-by": "spuff", "spuff/name": `seed-${i + 1}`, "spuff/owner": "testowner0001" }) });
    h.fake.inject({ method: "GET", path: "/servers", search: /(^|&)page=2(&|$)/, pagination: { next_page: 2, last_page: 3 }, times: Infinity });
    const r = await h.spuff(["ls"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: list servers: the Hetzner API's page 2 names next_page 2: the pages do not move forward");
    expect(r.stderr).toContain(hint);
    expect(h.fake.count("GET", "/servers")).toBe(2);
    h.fake.clearFaults();
  });

  it("next_page past last_page, or skipping pages: a clear error", async () => {
    h.fake.inject({ method: "GET", path: "/servers", pagination: { next_page: 2 } });
    const past = await h.spuff(["ls"]);
    expect(past.code).toBe(2);
    expect(past.stderr).toContain("error: list servers: the Hetzner API's page 1 names next_page 2 past its last_page 1");
    h.fake.inject({ method: "GET", path: "/servers", pagination: { next_page: 5, last_page: null } });
    const skip = await h.spuff(["ls"]);
    expect(skip.code).toBe(2);
    expect(skip.stderr).toContain("error: list servers: the Hetzner API's page 1 names next_page 5: pages 2 to 4 would be missed");
  });

  it("pages that go on for ever (no last_page): ends after 200 pages with a clear error", async () => {
    h.fake.inject({ method: "GET", path: "/servers", pagination: (p) => ({ next_page: p.page + 1, last_page: null }), times: Infinity });
    const r = await h.spuff(["ls"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: list servers: the Hetzner API's answer goes on past 200 pages (10000 entries)");
    expect(h.fake.count("GET", "/servers")).toBe(200);
    h.fake.clearFaults();
  });
});

describe("hetzner: user_data's limit counts what is sent", () => {
  let h: Harness;
  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  it("user-data whose gzip fits 32 KiB but whose base64 does not: up fails in validate with the numbers, nothing created", async () => {
    // Incompressible setup lines: ~50 KB of user-data, ~30 KB gzipped (under 32 KiB), ~40 KB once base64 (how it is sent).
    const setup = Array.from({ length: 24 }, () => `echo ${randomBytes(750).toString("base64")} >/dev/null`);
    h = await harness({ ipv4Prefix: "127.0.76.", standin: false, config: { setup } });
    const r = await h.spuff(["up", "big"]);
    expect(r.code).toBe(1);
    const m = r.stderr.match(/error: the VM's user-data is (\d+) bytes \((\d+) gzipped, (\d+) as base64, the way this provider sends it\), over this provider's limit of 32768 bytes/);
    expect(m, r.stderr).not.toBeNull();
    const [text, gz, sent] = (m as RegExpMatchArray).slice(1).map(Number);
    expect(text).toBeGreaterThan(32768);
    expect(gz).toBeLessThan(32768);
    expect(sent).toBe(Math.ceil(gz / 3) * 4);
    // The last phase shown before the error is validate config: no key registered, no server created.
    expect(r.stderr.split("\n").filter((l) => l.startsWith("• ")).at(-1)).toBe("• validate config…");
    expect(r.stderr).toContain("hint: shorten `setup`, `packages` or `git_hosts` in the config");
    expect(h.fake.requests.filter((x) => x.method !== "GET")).toEqual([]);
    expect((await h.spuff(["ls", "--json"])).stdout.trim()).toBe("[]");
  });
});
