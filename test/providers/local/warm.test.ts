import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { channelExchange, identityLine, identityOf, parseIdentityAnswer, parseUserData, pruneStates, shapeHash, splitWorkspace, warmKey, warmSeedUserData, warmUpUserData } from "../../../providers/local/warm.js";
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
    expect(a.ssh_keys?.ed25519_private).not.toBe(b.ssh_keys?.ed25519_private);
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
    const text = warmUpUserData(doc, { hostname: "spuff-warm", authorizedKeys: ["ssh-ed25519 AAAA warm"], idleConf: "X=1\n" }, host);
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    const warm = parseUserData(text);
    expect(identityOf(warm)).toMatchObject({ hostname: "spuff-warm", authorizedKeys: ["ssh-ed25519 AAAA warm"], idleConf: "X=1\n" });
    expect(warm.ssh_keys).toEqual({ ed25519_private: host.private, ed25519_public: host.public });
    expect(text).not.toContain(doc.ssh_keys?.ed25519_private?.split("\n")[2]);
    const paths = (warm.write_files ?? []).map((f) => f.path);
    expect(paths).toContain("/usr/local/lib/spuff/warm-identity");
    expect(paths).toContain("/etc/systemd/system/spuff-warm-identity.service");
    expect(shapeHash(warm)).not.toBe(shapeHash(doc));
  });

  it("a restored VM's seed is its own user-data without any host key (also from gzipped user-data)", () => {
    for (const ud of [userData("a"), gzipSync(userData("a"))]) {
      const own = parseUserData(ud);
      const text = warmSeedUserData(ud);
      expect(text.startsWith("#cloud-config\n")).toBe(true);
      expect(text).not.toContain("PRIVATE KEY");
      expect(text).not.toContain(own.ssh_keys?.ed25519_public?.split(" ")[1]);
      const seed = parseUserData(text);
      expect(seed.ssh_keys).toBeUndefined();
      expect({ ...seed, ssh_keys: own.ssh_keys }).toEqual(own);
    }
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

  it("one line: plain tokens, then base64 fields, with fresh randomness every time; no host key", () => {
    const a = identityLine(id, { machineId: "0".repeat(32), instanceId: "spuff-box-1", now: 1_700_000_000_000 });
    const b = identityLine(id, { machineId: "0".repeat(32), instanceId: "spuff-box-1", now: 1_700_000_000_000 });
    expect(a.endsWith("\n")).toBe(true);
    expect(a.trim()).not.toContain("\n");
    const f = a.trim().split(" ");
    expect(f).toHaveLength(8);
    expect(f.slice(0, 5)).toEqual(["spuff-identity-2", "box", "0".repeat(32), "1700000000.000", "spuff-box-1"]);
    for (const x of f.slice(5)) expect(x).toMatch(/^[A-Za-z0-9+/]*={0,2}$/);
    const d = f.slice(5).map((x) => Buffer.from(x, "base64"));
    expect(d[0].toString()).toBe(`${id.authorizedKeys.join("\n")}\n`);
    expect(d[1].toString()).toBe(id.idleConf);
    expect(d[2]).toHaveLength(64);
    expect(a.split(" ")[7]).not.toBe(b.split(" ")[7]);
    expect(a).not.toContain("ssh-ed25519");
    expect(Buffer.from(a).toString()).not.toMatch(/PRIVATE|ssh_host/);
  });

  it("a token that is not one (a space would shift every field after it) is refused", () => {
    expect(() => identityLine({ ...id, hostname: "a b" }, { machineId: "0".repeat(32), instanceId: "i" })).toThrow('not a valid identity field: "a b"');
    expect(() => identityLine(id, { machineId: "0".repeat(32), instanceId: "i\nx" })).toThrow("not a valid identity field");
  });
});

describe("the guest's answer: the host key it made (the VM is untrusted)", () => {
  const pub = ed25519KeyPair("guest").public.split(" ").slice(0, 2).join(" ");

  it("takes exactly `ok` and one ed25519 public key", () => {
    expect(parseIdentityAnswer(`ok ${pub}`, "box")).toBe(pub);
  });

  it.each([
    ["no key", "ok"],
    ["a comment after the key", `ok ${pub} root@box`],
    ["two keys", `ok ${pub} ${pub}`],
    ["another key type", "ok ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"],
    ["a key blob that is not ed25519's length", `ok ${pub}AAAA`],
    ["a blob that says ed25519 but holds garbage", `ok ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${"!".repeat(43)}`],
    ["leading space", ` ok ${pub}`],
    ["a carriage return", `ok ${pub}\r`],
    ["a private key", "ok -----BEGIN OPENSSH PRIVATE KEY-----"],
    ["nothing", ""],
  ])("refuses %s, saying what it got", (_what, answer) => {
    expect(() => parseIdentityAnswer(answer, "box")).toThrow('the VM answered its identity with something other than "ok" and one ed25519 public key');
    try {
      parseIdentityAnswer(answer, "box");
    } catch (e) {
      const err = e as { notes: string[]; hints: string[] };
      expect(err.notes[0]).toMatch(/^it wrote: "/);
      expect(err.notes[0]).not.toMatch(/[\r\n]/);
      expect(err.hints.join(" ")).toContain("nothing of box was pinned");
    }
  });

  it("a refusal from the guest says so, its text shown with control characters replaced", () => {
    expect(() => parseIdentityAnswer("error: bad \x1b[31mhostname\x07", "box")).toThrow('the VM refused its identity: "error: bad ?[31mhostname?"');
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

  it("sends the line and returns the one line the guest answers", async () => {
    const g = await guest("ok ssh-ed25519 AAAA\n");
    expect(await channelExchange(g.path, "spuff-identity-2 x\n", 5000)).toBe("ok ssh-ed25519 AAAA");
    expect(g.got()).toBe("spuff-identity-2 x\n");
  });

  it("waits for an answer without sending (the warm-up VM's 'sealed')", async () => {
    const g = await guest("sealed\n", { atOnce: true });
    expect(await channelExchange(g.path, undefined, 5000)).toBe("sealed");
  });

  it("a second line, an endless answer, a closed channel and silence are errors", async () => {
    await expect(channelExchange((await guest("ok ssh-ed25519 AAAA\nok ssh-ed25519 BBBB\n")).path, "x\n", 5000)).rejects.toThrow("the VM wrote more than one line on its identity channel");
    await expect(channelExchange((await guest(Buffer.alloc(8192, 0x41))).path, "x\n", 5000)).rejects.toThrow("the VM wrote too much on its identity channel");
    await expect(channelExchange((await guest("", { close: true })).path, "x\n", 5000)).rejects.toThrow("the identity channel closed before the VM answered");
    await expect(channelExchange((await guest("", { atOnce: true })).path, "x\n", 300)).rejects.toThrow("the VM did not answer on its identity channel within 0 s");
  });
});
