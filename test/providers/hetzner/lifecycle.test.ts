import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { LABEL } from "../../../src/core/labels.js";
import { userDataText } from "../../helpers/standin-vm.js";
import { type Harness, harness, problems } from "./harness.js";

// The real CLI (`main(argv)`) against the spec-validating Hetzner fake, with a real OpenSSH sshd standing in for each
// server on the loopback address the fake hands out (127.0.71.N:22; IPv6-only servers: [::1]:22).
describe("hetzner: up → ls → down through the CLI", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.71." });
  });
  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  it("creates a server with its SSH key and labels, lists it with its price, and removes both", async () => {
    const up = await h.spuff(["up", "box", "--json"]);
    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);
    const ready = up.stdout.trim().split("\n").map((l) => JSON.parse(l)).find((e) => e.event === "ready");
    expect(ready.vm).toMatchObject({ name: "box", provider: "hetzner", status: "running", address: "127.0.71.2:22", location: "fsn1", size: "cx22" });
    expect(ready.vm.pricePerHour).toEqual({ amount: 0.0071, currency: "EUR" });

    // One server, one key, both labelled; the server got the key (no root password) and no datacenter.
    expect(h.fake.servers.size).toBe(1);
    expect(h.fake.sshKeys.size).toBe(1);
    const [server] = h.fake.servers.values();
    const [key] = h.fake.sshKeys.values();
    expect(server.sshKeys).toEqual([key.id]);
    expect(server).toMatchObject({ name: "box", type: "cx22", location: "fsn1", image: "debian-13" });
    expect(server.ipv4).toBe("127.0.71.2");
    for (const labels of [server.labels, key.labels]) {
      expect(labels).toMatchObject({ "managed-by": "spuff", [LABEL.name]: "box", [LABEL.owner]: "testowner0001" });
      expect(labels[LABEL.requestId]).toMatch(/^[0-9a-f]{32}$/);
      expect(Number(labels[LABEL.expiresAt]) - Number(labels[LABEL.createdAt])).toBe(24 * 3600);
    }
    expect(key.labels[LABEL.requestId]).toBe(server.labels[LABEL.requestId]);
    // Plain text when it fits Hetzner's 32 KiB, else gzip as base64 (cloud-init's Hetzner datasource decodes both).
    expect(userDataText(server.userData).startsWith("#cloud-config")).toBe(true);
    expect(h.fake.count("POST", "/servers")).toBe(1);

    const ls = await h.spuff(["ls", "--json"]);
    expect(ls.code).toBe(0);
    const vms = JSON.parse(ls.stdout);
    expect(vms).toHaveLength(1);
    expect(vms[0]).toMatchObject({ name: "box", status: "running", address: "127.0.71.2:22", pricePerHour: { amount: 0.0071, currency: "EUR" }, reap: null });

    const table = await h.spuff(["ls"]);
    expect(table.stdout).toMatch(/^box\s+running\s+hetzner\s+127\.0\.71\.2:22\s+2\dh\d+m\s+\S+\s+€0\.0071/m);

    const down = await h.spuff(["down", "box", "--yes"]);
    for (const r of [up, ls, table, down]) expect(r.stdout + r.stderr).not.toContain(h.fake.token);
    expect(down.stderr).toContain("deleted SSH key spuff-box-");
    expect(down.code).toBe(0);
    expect(h.fake.servers.size).toBe(0);
    expect(h.fake.sshKeys.size).toBe(0);

    // Idempotent: the server is gone; down again is a user error about an unknown VM, not an API failure.
    const again = await h.spuff(["down", "box", "--yes"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('no VM named "box"');
  });

  it("IPv6-only (hetzner.ipv4: false): no IPv4 is requested and spuff connects to the server's ::1", async () => {
    const h6 = await harness({ ipv4Prefix: "127.0.71.", config: { hetzner: { ipv4: false, location: "nbg1", server_type: "cpx21" } } });
    try {
      const up = await h6.spuff(["up", "six"]);
      expect(up.stderr).toContain("IPv6 only");
      expect(up.code).toBe(0);
      expect(up.stdout).toContain("six is ready ([::1]:22");
      const [server] = h6.fake.servers.values();
      expect(server.ipv4).toBeNull();
      expect(server).toMatchObject({ location: "nbg1", type: "cpx21" });
      const ls = JSON.parse((await h6.spuff(["ls", "--json"])).stdout);
      expect(ls[0]).toMatchObject({ address: "[::1]:22", pricePerHour: { amount: 0.0136 } });
      expect((await h6.spuff(["down", "six", "--yes"])).code).toBe(0);
      expect(h6.fake.servers.size + h6.fake.sshKeys.size).toBe(0);
      expect(problems(h6.fake)).toEqual([]);
    } finally {
      await h6.close();
    }
  });

  it("--size and --location override the config; the placement is validated against /server_types and /locations", async () => {
    const up = await h.spuff(["up", "big", "--size", "ccx13", "--location", "sin"]);
    expect(up.code).toBe(0);
    const [server] = h.fake.servers.values();
    expect(server).toMatchObject({ type: "ccx13", location: "sin" });
    // Prices come from the type's price for the server's own location.
    const ls = JSON.parse((await h.spuff(["ls", "--json"])).stdout);
    expect(ls[0].pricePerHour).toEqual({ amount: 0.0278, currency: "EUR" });
    expect(h.fake.requests.some((r) => r.path === "/server_types")).toBe(true);
    expect(h.fake.requests.some((r) => r.path === "/locations")).toBe(true);
    expect((await h.spuff(["down", "big", "--yes"])).code).toBe(0);
  });

  it("a server that powered itself off shows as idle-stopped (still billed) and `spuff reap` deletes it and its key", async () => {
    expect((await h.spuff(["up", "idle"])).code).toBe(0);
    h.fake.powerOff("idle");
    const ls = JSON.parse((await h.spuff(["ls", "--json"])).stdout);
    expect(ls[0]).toMatchObject({ name: "idle", status: "idle-stopped", reap: "idle-stopped" });
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code).toBe(0);
    expect(reap.stdout).toMatch(/idle\s+hetzner\s+idle-stopped\s+destroy/);
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
  });

  it("reap deletes spuff SSH keys whose server is gone, but not young ones nor other keys", async () => {
    const pub = (n: number) => `ssh-ed25519 ${Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from("ssh-ed25519"), Buffer.from([0, 0, 0, 32]), Buffer.alloc(32, n)]).toString("base64")}`;
    const old = new Date(Date.now() - 3600_000);
    h.fake.addSshKey({ name: "spuff-gone-1", publicKey: pub(1), labels: { "managed-by": "spuff", [LABEL.name]: "gone", [LABEL.requestId]: "r1" }, created: old });
    h.fake.addSshKey({ name: "spuff-fresh-2", publicKey: pub(2), labels: { "managed-by": "spuff", [LABEL.name]: "fresh", [LABEL.requestId]: "r2" } });
    h.fake.addSshKey({ name: "someone-elses", publicKey: pub(3), labels: {}, created: old });
    const dry = await h.spuff(["reap", "--dry-run"]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain("SSH key spuff-gone-1");
    expect(h.fake.sshKeys.size).toBe(3);
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code).toBe(0);
    expect([...h.fake.sshKeys.values()].map((k) => k.name).sort()).toEqual(["someone-elses", "spuff-fresh-2"]);
  });

  it("extend relabels the server with PUT /servers/{id}; when the VM refuses the new TTL, the label is put back", async () => {
    expect((await h.spuff(["up", "ext"])).code).toBe(0);
    const [server] = h.fake.servers.values();
    const before = server.labels[LABEL.expiresAt];
    // The stand-in has no spuff-idle to take the new TTL, so extend fails after relabelling, and must undo it.
    const r = await h.spuff(["extend", "ext", "4h"]);
    expect(r.code).toBe(2);
    const puts = h.fake.requests.filter((x) => x.method === "PUT" && x.path === `/servers/${server.id}`);
    expect(puts.map((x) => x.status)).toEqual([200, 200]);
    expect(server.labels[LABEL.expiresAt]).toBe(before);
    expect((await h.spuff(["down", "ext", "--yes"])).code).toBe(0);
  });

  it("ls pages through more than 50 servers", async () => {
    h.fake.seedServers(60);
    const ls = await h.spuff(["ls", "--json"]);
    expect(ls.code).toBe(0);
    const names = JSON.parse(ls.stdout).map((v: { name: string }) => v.name);
    expect(names).toHaveLength(60);
    expect(new Set(names).size).toBe(60);
    expect(h.fake.requests.filter((r) => r.path === "/servers" && r.method === "GET").map((r) => new URLSearchParams(r.search).get("page"))).toEqual(["1", "2"]);
  });

  it("tolerates legacy payloads that still carry `datacenter`", async () => {
    h.fake.legacyDatacenter = true;
    h.fake.seedServers(1);
    const ls = await h.spuff(["ls", "--json"]);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)[0]).toMatchObject({ location: "fsn1", size: "cx22" });
  });
});
