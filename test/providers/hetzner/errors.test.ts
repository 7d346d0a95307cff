import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { freePort } from "../../helpers/sshd.js";
import { type Harness, harness, problems } from "./harness.js";

// Every API error the Hetzner provider maps, produced by the spec-validating fake and seen through the real CLI:
// the message, the hint and the exit code (1: the user fixes it; 2: the provider failed). Failed `up`s leave nothing.
describe("hetzner: API errors through the CLI", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.72.", readOnlyToken: "readonly-token-for-tests" });
  });
  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  const nothingLeft = () => expect({ servers: h.fake.servers.size, keys: h.fake.sshKeys.size }).toEqual({ servers: 0, keys: 0 });

  it("no token: exit 1, says where to create one", async () => {
    const r = await h.spuff(["ls"], { HCLOUD_TOKEN: "" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: no Hetzner Cloud API token");
    expect(r.stderr).toMatch(/hint: create a token in the Hetzner Cloud Console \(https:\/\/console\.hetzner\.cloud\).*Read & Write.*HCLOUD_TOKEN/);
    expect(h.fake.requests).toEqual([]);
  });

  it("401: exit 1, the token is invalid, and the token itself is never printed", async () => {
    const bad = "not-the-right-token-4f1c2d";
    const r = await h.spuff(["ls", "--verbose"], { HCLOUD_TOKEN: bad });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: the Hetzner API rejected the token (401 unauthorized: unable to authenticate)");
    expect(r.stderr).toContain("hint: create a token in the Hetzner Cloud Console");
    expect(r.stdout + r.stderr).not.toContain(bad);
    const json = await h.spuff(["up", "x", "--json"], { HCLOUD_TOKEN: bad });
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout.trim().split("\n").at(-1) ?? "")).toMatchObject({ error: { type: "UserError", exitCode: 1 } });
    expect(json.stdout + json.stderr).not.toContain(bad);
  });

  it("403 token_readonly: exit 1, asks for a Read & Write token; nothing is created", async () => {
    expect((await h.spuff(["ls"], { HCLOUD_TOKEN: "readonly-token-for-tests" })).code).toBe(0);
    const r = await h.spuff(["up", "ro"], { HCLOUD_TOKEN: "readonly-token-for-tests" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("the Hetzner API token is read-only (403 token_readonly");
    expect(r.stderr).toContain("hint: spuff creates and deletes servers and SSH keys: generate a token with permission Read & Write");
    expect(r.stdout + r.stderr).not.toContain("readonly-token-for-tests");
    nothingLeft();
  });

  it("403 forbidden: exit 2", async () => {
    h.fake.inject({ method: "POST", path: "/ssh_keys", status: 403 });
    const r = await h.spuff(["up", "fb"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("Hetzner refused the request (403 forbidden: insufficient permissions for this request)");
    expect(r.stderr).toContain("hint: check that the token belongs to the intended project");
    nothingLeft();
  });

  it("409 uniqueness_error: a server not made by spuff has the name; exit 1, and the SSH key is cleaned up", async () => {
    h.fake.seedServers(1, { namePrefix: "taken", labels: () => ({}) });
    const r = await h.spuff(["up", "taken-1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("create server taken-1: the name is already taken in this Hetzner project (409 uniqueness_error: server name is already used)");
    expect(r.stderr).toContain("hint: pick another name (`spuff up OTHER-NAME`)");
    expect(h.fake.servers.size).toBe(1);
    expect(h.fake.sshKeys.size).toBe(0);
  });

  it("a type not available in the location: exit 1 before anything is created, naming where it is available", async () => {
    h.fake.setAvailable("cx22", "fsn1", false);
    const r = await h.spuff(["up", "na"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: server type cx22 is not available in fsn1");
    expect(r.stderr).toContain("hint: it is available in nbg1, hel1: e.g. --location nbg1");
    expect(h.fake.count("POST", "/ssh_keys") + h.fake.count("POST", "/servers")).toBe(0);
  });

  it("412 resource_unavailable on create: exit 2, names other locations, rolls back the key", async () => {
    h.fake.inject({ method: "POST", path: "/servers", status: 412 });
    const r = await h.spuff(["up", "cap"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: Hetzner cannot create a cx22 server in fsn1 right now (412 resource_unavailable)");
    expect(r.stderr).toContain("hint: cx22 is available in nbg1, hel1: e.g. --location nbg1");
    nothingLeft();
  });

  it("422 invalid_input: exit 1, one line per field", async () => {
    h.fake.inject({
      method: "POST",
      path: "/servers",
      status: 422,
      message: "invalid input in fields 'image', 'user_data'",
      details: { fields: [{ name: "image", messages: ["image not found"] }, { name: "user_data", messages: ["is too long", "is not valid"] }] },
    });
    const r = await h.spuff(["up", "inv"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: create server inv: the Hetzner API rejected the input (422 invalid_input: invalid input in fields 'image', 'user_data')");
    expect(r.stderr).toContain("\n  image: image not found\n  user_data: is too long; is not valid\n");
    nothingLeft();
  });

  it("422 from the fake's own checks: an unknown image in the config", async () => {
    await h.close();
    h = await harness({ ipv4Prefix: "127.0.72.", config: { hetzner: { image: "debian-99" } } });
    const r = await h.spuff(["up", "img"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('  image: image "debian-99" not found');
    nothingLeft();
  });

  it("423 locked: down retries until the server's action finished", async () => {
    expect((await h.spuff(["up", "lk"])).code).toBe(0);
    h.fake.inject({ method: "DELETE", path: /^\/servers\/\d+$/, status: 423, times: 2 });
    const r = await h.spuff(["down", "lk", "--yes"]);
    expect(r.code).toBe(0);
    expect(h.fake.requests.filter((x) => x.method === "DELETE" && x.path.startsWith("/servers/")).map((x) => x.status)).toEqual([423, 423, 200]);
    nothingLeft();
  });

  it("423 locked for good: exit 2 with a hint to retry", async () => {
    expect((await h.spuff(["up", "lk2"])).code).toBe(0);
    h.fake.inject({ method: "DELETE", path: /^\/servers\/\d+$/, status: 423, times: Infinity });
    const r = await h.spuff(["down", "lk2", "--yes"], { SPUFF_HETZNER_LOCKED_TIMEOUT: "300ms" });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("the resource is locked by a running Hetzner action (423 locked");
    expect(r.stderr).toContain("hint: wait a minute and run the command again");
    h.fake.clearFaults();
    expect((await h.spuff(["down", "lk2", "--yes"])).code).toBe(0);
  });

  it("429 (the API's headers: RateLimit-Reset an hour away): waits about a second, then succeeds", async () => {
    h.fake.inject({ method: "GET", path: "/servers", status: 429 });
    const t = Date.now();
    const r = await h.spuff(["ls", "--json"]);
    expect(r.code).toBe(0);
    expect(Date.now() - t).toBeLessThan(4000);
    expect(h.fake.requests.filter((x) => x.path === "/servers").map((x) => x.status)).toEqual([429, 200]);
  });

  it("5xx on reads: retried with backoff; when it persists, exit 2", async () => {
    h.fake.inject({ method: "GET", path: "/servers", status: 503, times: 2 });
    expect((await h.spuff(["ls"])).code).toBe(0);
    expect(h.fake.requests.filter((x) => x.path === "/servers").map((x) => x.status)).toEqual([503, 503, 200]);
    h.fake.inject({ method: "GET", path: "/servers", status: 500, times: Infinity });
    const r = await h.spuff(["ls"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: list servers: the Hetzner API failed (500 server_error: internal server error (injected))");
    expect(r.stderr).toContain("hint: Hetzner may be having trouble (https://status.hetzner.com)");
  });

  it("timeouts on reads: retried; when every answer is late, exit 2", async () => {
    const env = { SPUFF_HETZNER_TIMEOUT: "200ms" };
    h.fake.inject({ method: "GET", path: "/servers", delayMs: 1500 });
    expect((await h.spuff(["ls"], env)).code).toBe(0);
    h.fake.inject({ method: "GET", path: "/servers", delayMs: 1500, times: Infinity });
    const r = await h.spuff(["ls"], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: list servers: no answer from the Hetzner API within 200 ms");
    h.fake.clearFaults();
  });

  it("an unreachable endpoint: exit 2, names it", async () => {
    const port = await freePort();
    const r = await h.spuff(["ls"], { HCLOUD_ENDPOINT: `http://127.0.0.1:${port}/v1` });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`error: list servers: cannot reach the Hetzner API at http://127.0.0.1:${port}/v1: ECONNREFUSED`);
  });

  it("unknown server type or location: exit 1 listing valid ones; a deprecated type warns", async () => {
    const t = await h.spuff(["up", "u1", "--size", "cx99"]);
    expect(t.code).toBe(1);
    expect(t.stderr).toContain('error: unknown Hetzner server type "cx99"');
    expect(t.stderr).toMatch(/^ {2}cx22 +2 shared vCPU, 4 GB RAM, 40 GB local disk, x86, €0\.0071\/h$/m);
    expect(t.stderr).not.toMatch(/^ {2}cx11 /m);
    expect(t.stderr).toContain("hint: pass one of these (available in fsn1) with --size, or set hetzner.server_type");
    const l = await h.spuff(["up", "u2", "--location", "mars1"]);
    expect(l.code).toBe(1);
    expect(l.stderr).toContain('error: unknown Hetzner location "mars1"');
    expect(l.stderr).toContain("  hel1  Helsinki, FI (eu-central)");
    expect(l.stderr).toContain("hint: pass one of fsn1, nbg1, hel1, ash, hil, sin with --location, or set hetzner.location");
    nothingLeft();
    const d = await h.spuff(["up", "old", "--size", "cx11"]);
    expect(d.code).toBe(0);
    expect(d.stderr).toContain("warning: Hetzner deprecated server type cx11; it cannot be created after 2027-06-01");
    expect((await h.spuff(["down", "old", "--yes"])).code).toBe(0);
  });
});

describe("hetzner: a retry storm never creates twice", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.73." });
  });
  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  it("500s on POST /servers (the last one after the server was stored) and on the lookups: one server, one key", async () => {
    h.fake.inject({ method: "POST", path: "/ssh_keys", status: 500, when: "after" });
    h.fake.inject({ method: "GET", path: "/ssh_keys", search: /spuff\/request-id=/, status: 500 });
    h.fake.inject({ method: "POST", path: "/servers", status: 500, times: 2 });
    h.fake.inject({ method: "POST", path: "/servers", status: 502, when: "after" });
    h.fake.inject({ method: "GET", path: "/servers", search: /spuff\/request-id=/, status: 500, times: 2 });
    const r = await h.spuff(["up", "storm"]);
    expect(r.stderr).toContain("checking whether it was created before retrying");
    expect(r.code).toBe(0);
    expect(h.fake.count("POST", "/servers")).toBe(3);
    expect(h.fake.count("POST", "/ssh_keys")).toBe(1);
    expect(h.fake.servers.size).toBe(1);
    expect(h.fake.sshKeys.size).toBe(1);
    expect(h.fake.requests.filter((x) => x.status === 409)).toEqual([]);
    expect(h.fake.faults).toEqual([]);
    expect((await h.spuff(["down", "storm", "--yes"])).code).toBe(0);
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
  });

  it("a timeout on POST /servers after the server was stored: found by its request id, not created again", async () => {
    h.fake.inject({ method: "POST", path: "/servers", when: "after", delayMs: 1500 });
    const r = await h.spuff(["up", "slow"], { SPUFF_HETZNER_TIMEOUT: "300ms" });
    expect(r.stderr).toContain("create server slow: no answer from the Hetzner API within 300 ms; checking whether it was created before retrying");
    expect(r.code).toBe(0);
    expect(h.fake.count("POST", "/servers")).toBe(1);
    expect(h.fake.servers.size).toBe(1);
    expect((await h.spuff(["down", "slow", "--yes"])).code).toBe(0);
  });
});
