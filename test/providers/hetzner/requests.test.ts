import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { pollDelay, rateLimitWait } from "../../../providers/hetzner/client.js";
import { parseGoDuration } from "../../../providers/hetzner/index.js";
import {
  byName,
  byRequest,
  hourlyPrice,
  MANAGED,
  serverAddress,
  serverBody,
  sshKeyBody,
  sshKeyName,
  toCatalogSize,
  toVm,
  userDataString,
} from "../../../providers/hetzner/requests.js";
import { buildLabels } from "../../../src/core/labels.js";
import { decodeUserData } from "../../fakes/hetzner/fake.js";
import { labelProblems, matches, parseSelector } from "../../fakes/hetzner/labels.js";
import { SpecValidator } from "../../fakes/hetzner/spec.js";

// Label and request building for the Hetzner provider, checked against Hetzner's label rules and the official spec.
const labels = buildLabels({
  name: "api",
  owner: "0123456789ab",
  createdAt: new Date("2026-11-23T10:00:00Z"),
  expiresAt: new Date("2026-11-24T10:00:00Z"),
  requestId: "3f2a9c0d8e7b6a5f4e3d2c1b0a998877",
});
const spec = { name: "api", labels, userData: "#cloud-config\nhostname: api\n", requestId: labels["spuff/request-id"], publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl spuff-api\n" };
const placement = { serverType: "cx22", location: "fsn1", image: "debian-12", ipv4: true };
const validator = new SpecValidator();
const bodyOk = (method: string, path: string, body: unknown) => validator.checkRequest(method, path, new URLSearchParams(), "application/json", JSON.stringify(body));

describe("hetzner request building", () => {
  it("spuff's labels satisfy Hetzner's label rules (times as Unix seconds, prefix spuff/)", () => {
    expect(labels).toEqual({
      "managed-by": "spuff",
      "spuff/name": "api",
      "spuff/owner": "0123456789ab",
      "spuff/created-at": "1795428000",
      "spuff/expires-at": "1795514400",
      "spuff/request-id": "3f2a9c0d8e7b6a5f4e3d2c1b0a998877",
    });
    expect(labelProblems(labels)).toEqual([]);
    expect(labelProblems({ "spuff/created-at": "2026-11-23T10:00:00Z" })).toHaveLength(1);
  });

  it("label selectors: managed-by, by name, by request id; the fake matches them like the API", () => {
    expect(MANAGED).toBe("managed-by=spuff");
    expect(byName("api")).toBe("managed-by=spuff,spuff/name=api");
    expect(byRequest("abc")).toBe("managed-by=spuff,spuff/request-id=abc");
    expect(matches(labels, parseSelector(byName("api")))).toBe(true);
    expect(matches(labels, parseSelector(byName("other")))).toBe(false);
    expect(matches(labels, parseSelector("spuff/name in (x,api),!gone,spuff/owner!=someone"))).toBe(true);
    expect(matches(labels, parseSelector("spuff/name notin (api)"))).toBe(false);
  });

  it("the SSH key: a per-request name, the trimmed key, the VM's labels; valid per the spec", () => {
    const body = sshKeyBody(spec);
    expect(body).toEqual({ name: "spuff-api-3f2a9c0d", public_key: spec.publicKey.trim(), labels });
    expect(sshKeyName("api", "ffffffff00")).toBe("spuff-api-ffffffff");
    expect(() => bodyOk("POST", "/ssh_keys", body)).not.toThrow();
  });

  it("the server: location (never datacenter), the SSH key, image, labels, public_net; valid per the spec", () => {
    const body = serverBody(spec, placement, 42);
    expect(body).toEqual({
      name: "api",
      server_type: "cx22",
      image: "debian-12",
      location: "fsn1",
      ssh_keys: ["42"],
      user_data: spec.userData,
      labels,
      start_after_create: true,
      public_net: { enable_ipv4: true, enable_ipv6: true },
    });
    expect(body).not.toHaveProperty("datacenter");
    expect(() => bodyOk("POST", "/servers", body)).not.toThrow();
    expect(serverBody(spec, { ...placement, ipv4: false }, 42).public_net).toEqual({ enable_ipv4: false, enable_ipv6: true });
  });

  it("gzip user-data goes base64, which cloud-init's Hetzner datasource decodes; over 32 KiB is a user error", () => {
    const text = `#cloud-config\nwrite_files: []\n# ${"x".repeat(100)}\n`;
    const sent = userDataString(gzipSync(text));
    expect(sent).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(decodeUserData(sent)).toBe(text);
    expect(userDataString(text)).toBe(text);
    expect(() => userDataString("y".repeat(32 * 1024 + 1))).toThrow(/over its limit of 32768/);
  });
});

describe("hetzner response reading", () => {
  const server = {
    id: 7,
    name: "api",
    status: "off",
    created: "2026-11-23T10:00:00+00:00",
    public_net: { ipv4: { ip: "127.0.0.9", blocked: false, dns_ptr: "x" }, ipv6: { ip: "2001:db8:1:2::/64", blocked: false, dns_ptr: [] }, floating_ips: [] },
    server_type: {
      name: "cx22",
      prices: [
        { location: "fsn1", price_hourly: { net: "0.0060", gross: "0.0071" }, price_monthly: { net: "3.79", gross: "4.51" } },
        { location: "ash", price_hourly: { net: "0.0072", gross: "0.0085" }, price_monthly: { net: "4.5", gross: "5.4" } },
      ],
    },
    location: { name: "ash" },
    labels,
  } as unknown as Parameters<typeof toVm>[0];

  it("a server without `datacenter` becomes a VM: stopped when off, price for its own location", () => {
    expect(toVm(server)).toEqual({
      id: "7",
      name: "api",
      provider: "hetzner",
      status: "stopped",
      endpoint: { host: "127.0.0.9", port: 22 },
      location: "ash",
      size: "cx22",
      labels,
      createdAt: "2026-11-23T10:00:00+00:00",
      pricePerHour: { amount: 0.0085, currency: "EUR" },
    });
    expect(hourlyPrice(server.server_type, "sin")).toBeNull();
  });

  it("the SSH address: IPv4, else the first host of the IPv6 network", () => {
    expect(serverAddress(server)).toBe("127.0.0.9");
    expect(serverAddress({ public_net: { ...server.public_net, ipv4: null } })).toBe("2001:db8:1:2::1");
    expect(serverAddress({ public_net: { ...server.public_net, ipv4: null, ipv6: { ip: "::/64", blocked: false, dns_ptr: [] } } })).toBe("::1");
    expect(serverAddress({ public_net: { ipv4: null, ipv6: null, floating_ips: [] } })).toBeUndefined();
  });

  it("a server type as a catalog size: only available locations, deprecated flagged", () => {
    const size = toCatalogSize({
      name: "cx11",
      cores: 1,
      memory: 2,
      disk: 20,
      cpu_type: "shared",
      storage_type: "local",
      architecture: "x86",
      deprecated: false,
      deprecation: { announced: "2026-01-01T00:00:00+00:00", unavailable_after: "2027-01-01T00:00:00+00:00" },
      prices: server.server_type.prices,
      locations: [
        { id: 1, name: "fsn1", available: true, recommended: false, deprecation: null },
        { id: 4, name: "ash", available: false, recommended: false, deprecation: null },
      ],
    } as unknown as Parameters<typeof toCatalogSize>[0]);
    expect(size).toMatchObject({ name: "cx11", vcpus: 1, memoryGiB: 2, diskGiB: 20, deprecated: true, locations: ["fsn1"] });
    expect(size.prices[0]).toEqual({ location: "fsn1", hourly: 0.0071, monthly: 4.51, currency: "EUR" });
  });

  it("a 429 waits for one request to come back (RateLimit-Reset is when all are); Go-style durations parse like hcloud's", () => {
    const now = 1_800_000_000_000;
    const h = (limit: number, resetIn: number) => new Headers({ "RateLimit-Limit": String(limit), "RateLimit-Remaining": "0", "RateLimit-Reset": String(now / 1000 + resetIn) });
    expect(rateLimitWait(h(3600, 3600), now, 0)).toBe(1000);
    expect(rateLimitWait(h(3600, 3600), now, 1)).toBe(1100);
    expect(rateLimitWait(h(7200, 3600), now, 0)).toBe(500);
    expect(rateLimitWait(h(60, 3600), now, 0)).toBe(10_000);
    // The whole quota back sooner than one request's refill: wait until then (at least 50 ms).
    expect(rateLimitWait(h(3600, 1), now + 700, 0)).toBe(300);
    expect(rateLimitWait(h(3600, -3), now, 0)).toBe(50);
    expect(rateLimitWait(new Headers(), now, 0)).toBe(1000);
    expect(parseGoDuration("500ms")).toBe(500);
    expect(parseGoDuration("1m30s")).toBe(90_000);
    expect(parseGoDuration("250")).toBe(250);
    expect(parseGoDuration("soon")).toBeUndefined();
  });

  it("polls quickly at first, then backs off to 2 s", () => {
    expect([0, 1, 2, 3, 4, 5, 9].map((i) => pollDelay(i, 500))).toEqual([25, 50, 100, 200, 400, 800, 2000]);
    expect(pollDelay(0, 20)).toBe(10);
    expect(pollDelay(9, 5000)).toBe(5000);
  });
});
