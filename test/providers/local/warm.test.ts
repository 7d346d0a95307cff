import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { channelExchange, identityLine, identityOf, parseUserData, pruneStates, shapeHash, splitWorkspace, warmKey, warmUpUserData } from "../../../providers/local/warm.js";
import { renderUserData, templateArgsFromConfig } from "../../../src/cloudinit/index.js";
import { DEFAULTS } from "../../../src/config/defaults.js";
import type { Config } from "../../../src/config/defaults.js";
import { ed25519KeyPair } from "../../../src/ssh/keys.js";

// The parts of warm start that need no VM (the VM side runs in test/e2e/warm.test.ts): which user-data a saved state
// may serve, what it is keyed by, the identity line, and the host end of the identity channel against a real socket.
const dir = mkdtempSync(join(tmpdir(), "spuff-warm-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = (over: Partial<Config> = {}) => ({ ...structuredClone(DEFAULTS), ...over }) as unknown as Config;
const userData = (name: string, c = config(), workspaceDevices?: string[]) =>
  renderUserData(
    templateArgsFromConfig(c, { hostname: name, hostKey: ed25519KeyPair("h"), clientPublicKey: ed25519KeyPair("c").public, expiresAt: new Date(Date.now() + 3600_000), workspaceDevices }),
  );

describe("which user-data a saved state serves", () => {
  it("two VMs of one config share a shape: only the identity differs (also gzipped)", () => {
    const a = parseUserData(userData("a"));
    const b = parseUserData(gzipSync(userData("b")));
    expect(shapeHash(a)).toBe(shapeHash(b));
    const ia = identityOf(a);
    const ib = identityOf(b);
    expect(ia?.hostname).toBe("a");
    expect(ib?.hostname).toBe("b");
    expect(ia?.hostKey.private).not.toBe(ib?.hostKey.private);
    expect(ia?.authorizedKeys).not.toEqual(ib?.authorizedKeys);
    expect(ia?.idleConf).toMatch(/^EXPIRES_AT=\d+$/m);
  });

  it("anything else in the config is another shape: packages, setup, the login user", () => {
    const base = shapeHash(parseUserData(userData("a")));
    expect(shapeHash(parseUserData(userData("a", config({ packages: ["jq"] }))))).not.toBe(base);
    expect(shapeHash(parseUserData(userData("a", config({ setup: ["echo hi"] }))))).not.toBe(base);
    expect(shapeHash(parseUserData(userData("a", config({ ssh: { ...DEFAULTS.ssh, user: "alice" } }))))).not.toBe(base);
  });

  it("VMs with their own workspace volumes share a shape: the mount step is split off, to run after the restore", () => {
    const a = splitWorkspace(parseUserData(userData("a", config(), ["/dev/disk/by-id/virtio-spuff-ws-aaaaaaaaaa"])));
    const b = splitWorkspace(parseUserData(userData("b", config(), ["/dev/disk/by-id/virtio-spuff-ws-bbbbbbbbbb"])));
    expect(shapeHash(a.doc)).toBe(shapeHash(b.doc));
    expect(a.mount).toEqual(["/usr/local/lib/spuff/mount-workspace", "dev", "/home/dev/work", "/dev/disk/by-id/virtio-spuff-ws-aaaaaaaaaa"]);
    // The state's ~/work is a plain directory, as without a volume; the mount script is in its files for later.
    const runcmd = (a.doc as { runcmd: unknown[] }).runcmd.map((c) => (Array.isArray(c) ? c.join(" ") : c));
    expect(runcmd).toContain("install -d -o dev -g dev /home/dev/work");
    expect(runcmd.some((c) => String(c).includes("mount-workspace"))).toBe(false);
    // Without a volume there is nothing to split.
    const plain = parseUserData(userData("c"));
    expect(splitWorkspace(plain)).toEqual({ doc: plain });
  });

  it("user-data not of spuff's shape has no identity (the VM boots cold)", () => {
    expect(identityOf(parseUserData("#cloud-config\nhostname: x\n"))).toBeUndefined();
  });

  it("the warm-up VM's user-data carries the throwaway identity and the guest half of the channel, nothing of the VM's", () => {
    const doc = parseUserData(userData("a"));
    const host = ed25519KeyPair("warm");
    const text = warmUpUserData(doc, { hostname: "spuff-warm", hostKey: host, authorizedKeys: ["ssh-ed25519 AAAA warm"], idleConf: "X=1\n" });
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    const warm = parseUserData(text);
    expect(identityOf(warm)).toMatchObject({ hostname: "spuff-warm", authorizedKeys: ["ssh-ed25519 AAAA warm"], idleConf: "X=1\n" });
    expect(text).not.toContain(identityOf(doc)?.hostKey.private.split("\n")[2]);
    const paths = (warm.write_files ?? []).map((f) => f.path);
    expect(paths).toContain("/usr/local/lib/spuff/warm-identity");
    expect(paths).toContain("/etc/systemd/system/spuff-warm-identity.service");
    expect(shapeHash(warm)).not.toBe(shapeHash(doc));
  });
});

describe("what a saved state is keyed by", () => {
  const disk = join(dir, "disk.qcow2");
  writeFileSync(disk, "image");
  const image = { disk, description: "test" };
  const machine = { accel: "tcg" as const, cpus: 2, memoryMiB: 1024, guestForwards: [], network: "none" as const };
  const key = (o: Partial<Parameters<typeof warmKey>[0]> = {}) => warmKey({ image, machine, diskMiB: 4096, shape: "s", ...o }).key;

  it("the same inputs give the same key", () => {
    expect(key()).toBe(key());
  });

  it("another image file, machine size, network, disk size, forward or shape gives another key", () => {
    const k = key();
    expect(key({ machine: { ...machine, memoryMiB: 2048 } })).not.toBe(k);
    expect(key({ machine: { ...machine, cpus: 1 } })).not.toBe(k);
    expect(key({ machine: { ...machine, network: "nat" } })).not.toBe(k);
    expect(key({ machine: { ...machine, guestForwards: ["10.0.2.100:22=127.0.0.1:2222"] } })).not.toBe(k);
    expect(key({ diskMiB: 8192 })).not.toBe(k);
    expect(key({ shape: "t" })).not.toBe(k);
    utimesSync(disk, new Date(), new Date(Date.now() + 5000)); // a rebuilt image
    expect(key()).not.toBe(k);
  });

  it("records the QEMU version it was made with", () => {
    const { inputs } = warmKey({ image, machine, diskMiB: 4096, shape: "s" });
    expect(String(inputs.qemu)).toMatch(/^QEMU emulator version \d+\.\d+/);
  });
});

describe("which saved states are removed when a new one is saved", () => {
  it("those of another image, QEMU or guest script, or marked bad, unless a VM's disk is layered on them; other configs' stay", () => {
    const root = mkdtempSync(join(dir, "states-"));
    const current = { image: ["disk:1"], qemu: "QEMU 7.2", qemuBinary: "q:1", identityScript: "s1", shape: "a", machineArgs: ["-m", "1024"] };
    const state = (name: string, inputs: Record<string, unknown> | undefined, bad = false) => {
      mkdirSync(join(root, name));
      if (inputs) writeFileSync(join(root, name, "warm.json"), JSON.stringify({ inputs }));
      if (bad) writeFileSync(join(root, name, "bad"), "x\n");
    };
    state("now", current);
    state("other-config", { ...current, shape: "b", machineArgs: ["-m", "2048"] });
    state("old-image", { ...current, image: ["disk:0"] });
    state("old-qemu", { ...current, qemu: "QEMU 7.1" });
    state("old-script", { ...current, identityScript: "s0" });
    state("bad", { ...current, shape: "c" }, true);
    state("unreadable", undefined);
    state("old-but-used", { ...current, image: ["disk:0"] });
    state("x.build-123", undefined);
    writeFileSync(join(root, "x.lock"), "1\n");
    const removed = pruneStates(root, current, (d) => d.endsWith("old-but-used")).map((d) => d.slice(root.length + 1)).sort();
    expect(removed).toEqual(["bad", "old-image", "old-qemu", "old-script", "unreadable"]);
    for (const kept of ["now", "other-config", "old-but-used", "x.build-123", "x.lock"]) expect(existsSync(join(root, kept))).toBe(true);
  });
});

describe("the identity line", () => {
  const id = identityOf(parseUserData(userData("box")));
  if (!id) throw new Error("no identity");

  it("one line of base64 fields, with fresh randomness every time", () => {
    const a = identityLine(id, { machineId: "0".repeat(32), instanceId: "spuff-box-1", now: 1_700_000_000_000 });
    const b = identityLine(id, { machineId: "0".repeat(32), instanceId: "spuff-box-1", now: 1_700_000_000_000 });
    expect(a.endsWith("\n")).toBe(true);
    const f = a.trim().split(" ");
    expect(f[0]).toBe("spuff-identity-1");
    expect(f).toHaveLength(10);
    for (const x of f.slice(1)) expect(x).toMatch(/^[A-Za-z0-9+/]*={0,2}$/);
    const d = f.slice(1, 9).map((x) => Buffer.from(x, "base64").toString("utf8"));
    expect(d[0]).toBe("box");
    expect(d[1]).toBe(id.hostKey.private);
    expect(d[3]).toBe(`${id.authorizedKeys.join("\n")}\n`);
    expect(d[6]).toBe("1700000000.000");
    expect(d[7]).toBe("spuff-box-1");
    expect(a.split(" ")[9]).not.toBe(b.split(" ")[9]);
  });
});

describe("the host end of the identity channel (the VM is untrusted)", () => {
  const servers: Server[] = [];
  afterAll(() => {
    for (const s of servers) s.close();
  });
  let n = 0;
  /** A Unix socket that answers like a guest would: `answer` after the first data (or at once). */
  const guest = (answer: string | Buffer, opts: { atOnce?: boolean; close?: boolean } = {}) =>
    new Promise<{ path: string; got: () => string }>((resolve) => {
      const path = join(dir, `chan-${n++}.sock`);
      let got = "";
      const srv = createServer((c) => {
        const reply = () => (opts.close ? c.end() : c.write(answer));
        if (opts.atOnce) reply();
        c.on("data", (d) => {
          got += d.toString();
          if (!opts.atOnce) reply();
        });
      });
      servers.push(srv);
      srv.listen(path, () => resolve({ path, got: () => got }));
    });

  it("sends the line and takes the expected answer", async () => {
    const g = await guest("ok\n");
    await channelExchange(g.path, "spuff-identity-1 x\n", "ok", 5000);
    expect(g.got()).toBe("spuff-identity-1 x\n");
  });

  it("waits for an answer without sending (the warm-up VM's 'sealed')", async () => {
    const g = await guest("sealed\n", { atOnce: true });
    await channelExchange(g.path, undefined, "sealed", 5000);
  });

  it("a refusal is an error that shows the answer with control characters replaced", async () => {
    const g = await guest("error: bad \x1b[31mhostname\x07\n");
    await expect(channelExchange(g.path, "x\n", "ok", 5000)).rejects.toThrow('the VM refused its identity: "error: bad ?[31mhostname?"');
  });

  it("an endless answer, a closed channel and silence are errors", async () => {
    await expect(channelExchange((await guest(Buffer.alloc(8192, 0x41))).path, "x\n", "ok", 5000)).rejects.toThrow("the VM wrote too much on its identity channel");
    await expect(channelExchange((await guest("", { close: true })).path, "x\n", "ok", 5000)).rejects.toThrow("the identity channel closed before the VM answered");
    await expect(channelExchange((await guest("", { atOnce: true })).path, "x\n", "ok", 300)).rejects.toThrow("the VM did not answer on its identity channel within 0 s");
  });
});
