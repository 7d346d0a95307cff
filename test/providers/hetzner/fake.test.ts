import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HetznerFake } from "../../fakes/hetzner/fake.js";
import { SpecValidator } from "../../fakes/hetzner/spec.js";

// The fake is only worth something if it fails loudly: these tests show it catches requests and responses that do not
// match the official spec, and behaves like the live API where tests depend on it.
describe("the Hetzner fake", () => {
  let fake: HetznerFake;
  beforeEach(async () => {
    fake = await HetznerFake.start({ ipv4Prefix: "127.0.74.", actionDelayMs: 200 });
  });
  afterEach(async () => {
    await fake.close();
  });

  const call = async (method: string, path: string, body?: unknown, token = fake.token) => {
    const r = await fetch(`${fake.endpoint}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, headers: r.headers, body: text ? JSON.parse(text) : undefined };
  };
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test";

  it("answers a request that violates the spec with 500 and records it", async () => {
    const r = await call("POST", "/servers", { name: 5, image: "debian-12" });
    expect(r.status).toBe(500);
    expect(r.body.error.code).toBe("spec_violation");
    expect(fake.violations).toHaveLength(1);
    expect(fake.violations[0]).toMatchObject({ where: "request", operationId: "create_server" });
    expect(fake.violations[0].message).toContain("must have required property 'server_type'");
    expect(fake.violations[0].message).toContain("request body/name must be string");
    const q = await call("GET", "/servers?per_page=ten&colour=blue");
    expect(q.status).toBe(500);
    expect(fake.violations.map((v) => v.message).join("\n")).toMatch(/per_page.*must be integer[\s\S]*"colour" is not in the spec/);
    expect((await call("GET", "/no_such_thing")).status).toBe(500);
    expect(fake.violations).toHaveLength(3);
  });

  it("checks responses too: a payload missing required fields or with a wrong type is a violation", () => {
    const v = new SpecValidator();
    const route = v.route("GET", "/servers/1")?.route;
    expect(route).toBeDefined();
    if (!route) return;
    expect(() => v.checkResponse(route, 200, { server: { id: 1, name: "x" } })).toThrow(/must have required property 'status'/);
    expect(() => v.checkResponse(route, 201, {})).toThrow(/status 201 is not declared/);
    expect(() => v.checkResponse(route, 404, { error: { code: "not_found" } })).toThrow(/must have required property 'message'/);
    expect(() => v.checkResponse(route, 404, { error: { code: "not_found", message: "gone", details: null } })).not.toThrow();
    const list = v.route("GET", "/servers")?.route;
    if (!list) return;
    // Formats are checked: dates must be RFC 3339, ids int64.
    expect(() => v.checkResponse(list, 200, { servers: [], meta: { pagination: { page: 1.5, per_page: 25, previous_page: null, next_page: null, last_page: 1, total_entries: 0 } } })).toThrow(/int64|integer/);
  });

  it("serves its own payloads without violations, with and without the legacy datacenter", async () => {
    const k = await call("POST", "/ssh_keys", { name: "k", public_key: key, labels: { "managed-by": "spuff" } });
    expect(k.status).toBe(201);
    const created = await call("POST", "/servers", { name: "s1", server_type: "cx22", image: "debian-12", location: "fsn1", ssh_keys: [String(k.body.ssh_key.id)] });
    expect(created.status).toBe(201);
    expect(created.body.server).not.toHaveProperty("datacenter");
    expect(created.body.root_password).toBeNull();
    expect(created.body.server.public_net.ipv4.ip).toBe("127.0.74.2");
    fake.legacyDatacenter = true;
    const legacy = await call("GET", `/servers/${created.body.server.id}`);
    expect(legacy.body.server.datacenter).toMatchObject({ name: "fsn1-dc1", location: { name: "fsn1" } });
    for (const path of ["/server_types", "/locations", "/ssh_keys", "/servers?status=initializing&sort=name:desc"]) expect((await call("GET", path)).status).toBe(200);
    expect(fake.violations).toEqual([]);
  });

  it("behaves like the live API: 410 on /datacenters, 401, 423 while an action runs, root password without ssh_keys", async () => {
    expect((await call("GET", "/datacenters")).status).toBe(410);
    expect((await call("GET", "/servers", undefined, "wrong")).status).toBe(401);
    const created = await call("POST", "/servers", { name: "pw", server_type: "cx22", image: "debian-12", location: "fsn1" });
    expect(created.body.root_password).toMatch(/\S{8,}/);
    expect(fake.rootPasswordsIssued).toBe(1);
    expect(created.body.action.status).toBe("running");
    const id = created.body.server.id;
    expect((await call("DELETE", `/servers/${id}`)).body.error.code).toBe("locked");
    while ((await call("GET", `/actions/${created.body.next_actions[0].id}`)).body.action.status === "running") await new Promise((r) => setTimeout(r, 50));
    expect((await call("GET", `/servers/${id}`)).body.server.status).toBe("running");
    const del = await call("DELETE", `/servers/${id}`);
    expect(del.status).toBe(200);
    expect((await call("GET", `/servers/${id}`)).body.server.status).toBe("deleting");
    expect(fake.violations).toEqual([]);
  });

  it("rejects what Hetzner rejects: invalid labels, duplicate names and keys, unknown types; 412 for an unavailable type", async () => {
    const bad = await call("POST", "/ssh_keys", { name: "k", public_key: key, labels: { "spuff/created-at": "2026-11-23T10:00:00Z" } });
    expect(bad.status).toBe(422);
    expect(bad.body.error.details.fields[0].name).toBe("labels");
    expect((await call("POST", "/ssh_keys", { name: "k", public_key: key })).status).toBe(201);
    expect((await call("POST", "/ssh_keys", { name: "k2", public_key: key })).body.error.code).toBe("uniqueness_error");
    expect((await call("POST", "/ssh_keys", { name: "k3", public_key: "ssh-ed25519 bm9wZQ==" })).status).toBe(422);
    const t = await call("POST", "/servers", { name: "x", server_type: "cx99", image: "debian-12", location: "fsn1", ssh_keys: ["k"] });
    expect(t.body.error.details.fields.map((f: { name: string }) => f.name)).toEqual(["server_type"]);
    expect((await call("POST", "/servers", { name: "x", server_type: "cx22", image: "debian-12", location: "ash", ssh_keys: ["k"] })).status).toBe(412);
    fake.setAvailable("cpx21", "ash", false);
    expect((await call("POST", "/servers", { name: "x", server_type: "cpx21", image: "debian-12", location: "ash", ssh_keys: ["k"] })).status).toBe(412);
    const types = await call("GET", "/server_types?name=cpx21");
    expect(types.body.server_types[0].locations.find((l: { name: string }) => l.name === "ash").available).toBe(false);
    expect(fake.violations).toEqual([]);
  });

  it("pages (per_page at most 50) and filters by label selector", async () => {
    fake.seedServers(120, { labels: (i) => ({ "managed-by": "spuff", parity: i % 2 ? "odd" : "even" }) });
    const p3 = await call("GET", "/servers?per_page=100&page=3&label_selector=managed-by%3Dspuff");
    expect(p3.body.servers).toHaveLength(20);
    expect(p3.body.meta.pagination).toEqual({ page: 3, per_page: 50, previous_page: 2, next_page: null, last_page: 3, total_entries: 120 });
    const odd = await call("GET", `/servers?label_selector=${encodeURIComponent("parity in (odd),managed-by")}&per_page=50`);
    expect(odd.body.meta.pagination.total_entries).toBe(60);
    expect(fake.violations).toEqual([]);
  });

  it("injects 429 with RateLimit headers, and errors after the request took effect", async () => {
    fake.inject({ method: "GET", path: "/servers", status: 429 });
    const r = await call("GET", "/servers");
    expect(r.status).toBe(429);
    expect(r.body.error).toEqual({ code: "rate_limit_exceeded", message: "limit of 3600 requests per hour reached", details: null });
    expect(r.headers.get("RateLimit-Remaining")).toBe("0");
    expect(Number(r.headers.get("RateLimit-Reset"))).toBeGreaterThan(Date.now() / 1000 + 3590);
    const ok = await call("GET", "/servers");
    expect(Number(ok.headers.get("RateLimit-Remaining"))).toBeLessThan(3600);
    expect(Number(ok.headers.get("RateLimit-Reset"))).toBeLessThan(Date.now() / 1000 + 10);
    fake.inject({ method: "POST", path: "/ssh_keys", status: 500, when: "after" });
    expect((await call("POST", "/ssh_keys", { name: "k", public_key: key })).status).toBe(500);
    expect(fake.sshKeys.size).toBe(1);
    expect(fake.violations).toEqual([]);
  });
});
