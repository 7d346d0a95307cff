import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { builtImageDir } from "../../../providers/local/image.js";
import { createProvider } from "../../../providers/local/index.js";
import { renderUserData, templateArgsFromConfig } from "../../../src/cloudinit/index.js";
import { loadConfig } from "../../../src/config/load.js";
import { ProviderError, UserError } from "../../../src/core/errors.js";
import type { Progress, Provider, Volume } from "../../../src/core/provider.js";
import { ed25519KeyPair } from "../../../src/ssh/keys.js";

// The local provider's workspace volumes (docs/providers/local.md): real qcow2 disks made by qemu-img, labels in
// spuff's state, attachment read from the local VMs' metadata. The attach itself is checked on a real QEMU (TCG, ended
// a few seconds after it starts, long before the guest boots) through QMP: the disk is there with its serial.
const home = mkdtempSync(join(tmpdir(), "spuff-ws-local-"));
const stateDir = join(home, "state");
const realCache = process.env.SPUFF_CACHE_DIR ?? join(process.env.HOME ?? "/root", ".cache", "spuff");
const imageReady = existsSync(join(builtImageDir(realCache, "debian-13"), "disk.qcow2"));
const providers: Provider[] = [];
afterAll(async () => {
  for (const p of providers) for (const vm of await p.list()) await p.destroy(vm, progress);
  rmSync(home, { recursive: true, force: true });
});

const progress: Progress = { phase() {}, info() {}, warn() {} };

async function provider(): Promise<Provider> {
  const { config } = loadConfig({ env: { HOME: home }, cwd: home });
  config.local = { ...config.local, accel: "tcg", cpus: 1, memory: "512M", network: "none" };
  const p = await createProvider({ config, env: { HOME: home }, stateDir, cacheDir: realCache, verbose: false });
  providers.push(p);
  return p;
}

const labels = (name: string, requestId = "req1") => ({
  "managed-by": "spuff",
  "spuff/kind": "workspace",
  "spuff/name": name,
  "spuff/owner": "owner1",
  "spuff/created-at": "1700000000",
  "spuff/request-id": requestId,
  "spuff/keep": "1209600",
});
const wsRoot = join(stateDir, "local-workspaces");

describe("local workspace volumes", () => {
  it("says it has volumes", async () => {
    expect((await provider()).info().features.volumes).toBe(true);
  });

  it("createVolume: a qcow2 of the size with its labels in the state; listed as free, detached, on localhost", async () => {
    const p = await provider();
    const v = await p.createVolume?.({ name: "alpha", sizeGiB: 3, labels: labels("alpha") }, progress);
    expect(v).toMatchObject({ name: "alpha", provider: "local", sizeGiB: 3, location: "localhost", labels: labels("alpha"), pricePerMonth: { amount: 0, currency: "EUR" } });
    expect(v?.attachedTo).toBeUndefined();
    const id = v?.id as string;
    expect(id).toMatch(/^[0-9a-f]{10}$/);
    const info = JSON.parse(execFileSync("qemu-img", ["info", "--output", "json", join(wsRoot, id, "disk.qcow2")], { encoding: "utf8" }));
    expect(info).toMatchObject({ format: "qcow2", "virtual-size": 3 * 2 ** 30 });
    expect(JSON.parse(readFileSync(join(wsRoot, id, "meta.json"), "utf8")).labels).toEqual(labels("alpha"));
    expect(await p.listVolumes?.()).toContainEqual(v);
    // Nothing half-made is left beside it.
    expect(readdirSync(wsRoot).filter((e) => e.startsWith("."))).toEqual([]);
  });

  it("volumeDevices: the virtio serial path (at most 20 characters), which the user-data renderer accepts", async () => {
    const p = await provider();
    const v = (await p.createVolume?.({ name: "beta", sizeGiB: 1, labels: labels("beta") }, progress)) as Volume;
    const devices = p.volumeDevices?.(v) as string[];
    expect(devices).toEqual([`/dev/disk/by-id/virtio-spuff-ws-${v.id}`]);
    expect(devices[0].slice("/dev/disk/by-id/virtio-".length).length).toBeLessThanOrEqual(20);
    const k = ed25519KeyPair();
    const { config } = loadConfig({ env: { HOME: home }, cwd: home });
    const args = templateArgsFromConfig(config, { hostname: "beta", hostKey: { private: k.private, public: k.public }, clientPublicKey: ed25519KeyPair().public, expiresAt: new Date(), workspaceDevices: devices });
    expect(renderUserData(args)).toContain(devices[0]);
  });

  it("an id that is not a workspace id is refused, never turned into a path", async () => {
    const p = await provider();
    const bad = { id: "../local/x", name: "x", provider: "local", sizeGiB: 1, labels: {} };
    await expect(p.deleteVolume?.(bad, progress)).rejects.toThrow(ProviderError);
    await expect(p.setVolumeLabels?.(bad, {})).rejects.toThrow(ProviderError);
    expect(() => p.volumeDevices?.(bad)).toThrow(ProviderError);
  });

  it("setVolumeLabels replaces the labels; listVolumes shows only spuff's workspaces", async () => {
    const p = await provider();
    const v = (await p.createVolume?.({ name: "gamma", sizeGiB: 1, labels: labels("gamma") }, progress)) as Volume;
    const next = { ...labels("gamma"), "spuff/detached-at": "1700000100" };
    await p.setVolumeLabels?.(v, next);
    expect((await p.listVolumes?.())?.find((x) => x.id === v.id)?.labels).toEqual(next);
    await p.setVolumeLabels?.(v, { "managed-by": "someone-else" });
    expect((await p.listVolumes?.())?.some((x) => x.id === v.id)).toBe(false);
  });

  it("deleteVolume removes a detached one; already gone is success", async () => {
    const p = await provider();
    const v = (await p.createVolume?.({ name: "delta", sizeGiB: 1, labels: labels("delta") }, progress)) as Volume;
    await p.deleteVolume?.(v, progress);
    expect(existsSync(join(wsRoot, v.id))).toBe(false);
    expect((await p.listVolumes?.())?.some((x) => x.id === v.id)).toBe(false);
    await expect(p.deleteVolume?.(v, progress)).resolves.toBeUndefined();
    expect(readdirSync(wsRoot).filter((e) => e.startsWith("."))).toEqual([]);
  });

  it("reapOrphans never deletes a workspace, only what a crash left of a create or delete", async () => {
    const p = await provider();
    const v = (await p.createVolume?.({ name: "eps", sizeGiB: 1, labels: labels("eps") }, progress)) as Volume;
    // What a crash in the middle of createVolume or deleteVolume leaves (made as they make them).
    const leftovers = [".tmp-0123456789", ".tmp-abcdefabcd", ".del-9876543210"].map((e) => join(wsRoot, e));
    for (const d of leftovers) {
      mkdirSync(d);
      writeFileSync(join(d, "meta.json"), JSON.stringify({ id: d.slice(-10), name: d.endsWith("abcd") ? "busy-one" : "eps", sizeGiB: 1, labels: labels("eps") }));
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(d, "disk.qcow2"), "1G"]);
    }
    const young = join(wsRoot, ".tmp-1111111111");
    mkdirSync(young);
    const old = new Date(Date.now() - 3600_000);
    for (const d of leftovers) utimesSync(d, old, old);
    const dry = (await p.reapOrphans?.(true, progress, new Set(["busy-one"]))) as string[];
    expect(dry.sort()).toEqual([`half-deleted workspace disk ${leftovers[2]}`, `unfinished workspace disk ${leftovers[0]}`]);
    expect(leftovers.every((d) => existsSync(d))).toBe(true);
    await p.reapOrphans?.(false, progress, new Set(["busy-one"]));
    expect([existsSync(leftovers[0]), existsSync(leftovers[1]), existsSync(leftovers[2]), existsSync(young)]).toEqual([false, true, false, true]);
    expect(existsSync(join(wsRoot, v.id, "disk.qcow2"))).toBe(true);
    expect((await p.listVolumes?.())?.some((x) => x.id === v.id)).toBe(true);
    rmSync(leftovers[1], { recursive: true });
    rmSync(young, { recursive: true });
  });
});

/** QMP: capabilities, then one command; its answer. */
function qmpAsk(socket: string, command: Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const c = createConnection(socket);
    let buf = "";
    let sent = 0;
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`no QMP answer: ${buf}`));
    }, 10_000);
    c.on("error", reject);
    c.on("data", (d) => {
      buf += d;
      for (;;) {
        const nl = buf.indexOf("\n");
        if (nl < 0) return;
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (msg.QMP) {
          c.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`);
        } else if ("return" in msg || "error" in msg) {
          if (sent++ === 0) c.write(`${JSON.stringify(command)}\n`);
          else {
            clearTimeout(timer);
            c.destroy();
            resolve(msg);
          }
        }
      }
    });
  });
}

const serialOf = (name: string) =>
  qmpAsk(join(stateDir, "local", name, "qmp.sock"), { execute: "qom-get", arguments: { path: "/machine/peripheral/workspace", property: "serial" } });
const blockFiles = async (name: string) => {
  const r = await qmpAsk(join(stateDir, "local", name, "qmp.sock"), { execute: "query-block" });
  return (r.return as { inserted?: { file: string } }[]).map((b) => b.inserted?.file).filter(Boolean);
};

describe.skipIf(!imageReady)("a local VM with a workspace (real QEMU, stopped before its guest boots)", { timeout: 120_000 }, () => {
  it("create attaches it (serial spuff-ws-<id>); attached while the VM runs and while it is stopped; start keeps it; destroy keeps the disk", async () => {
    const p = await provider();
    const v = (await p.createVolume?.({ name: "ws1", sizeGiB: 2, labels: labels("ws1") }, progress)) as Volume;
    const disk = join(wsRoot, v.id, "disk.qcow2");
    const spec = { name: "ws1", labels: { "managed-by": "spuff", "spuff/name": "ws1" }, userData: "#cloud-config\n", publicKey: ed25519KeyPair().public, requestId: "r1", volume: v };
    const vm = await p.create(spec, progress);
    expect(vm.status).toBe("running");
    expect(await serialOf("ws1")).toEqual({ return: `spuff-ws-${v.id}` });
    expect(await blockFiles("ws1")).toContain(disk);
    expect((await p.listVolumes?.())?.find((x) => x.id === v.id)?.attachedTo).toBe("ws1");

    // Attached: no delete, and no second VM gets it (refused before anything of that VM exists).
    await expect(p.deleteVolume?.(v, progress)).rejects.toThrow(/attached to the local VM ws1; nothing was deleted/);
    expect(existsSync(disk)).toBe(true);
    await expect(p.create({ ...spec, name: "ws2", requestId: "r2" }, progress)).rejects.toThrow(UserError);
    expect(existsSync(join(stateDir, "local", "ws2"))).toBe(false);

    // QEMU gone under it (as after an idle poweroff): the VM is stopped and keeps its workspace.
    const pid = Number(readFileSync(join(stateDir, "local", "ws1", "qemu.pid"), "utf8"));
    process.kill(pid, "SIGKILL");
    while (spawnSync("kill", ["-0", String(pid)]).status === 0) await new Promise((r) => setTimeout(r, 50));
    expect((await p.get("ws1"))?.status).toBe("stopped");
    expect((await p.listVolumes?.())?.find((x) => x.id === v.id)?.attachedTo).toBe("ws1");
    await expect(p.deleteVolume?.(v, progress)).rejects.toThrow(ProviderError);

    const again = await p.start?.(vm, progress);
    expect(again?.status).toBe("running");
    expect(await serialOf("ws1")).toEqual({ return: `spuff-ws-${v.id}` });

    await p.destroy(vm, progress);
    expect(existsSync(join(stateDir, "local", "ws1"))).toBe(false);
    expect(existsSync(disk)).toBe(true);
    const after = (await p.listVolumes?.())?.find((x) => x.id === v.id);
    expect(after).toMatchObject({ id: v.id, name: "ws1", labels: labels("ws1") });
    expect(after?.attachedTo).toBeUndefined();
    await p.deleteVolume?.(v, progress);
    expect(existsSync(disk)).toBe(false);
  });

  it("create without a workspace attaches no second disk", async () => {
    const p = await provider();
    await p.create({ name: "plain", labels: { "managed-by": "spuff" }, userData: "#cloud-config\n", publicKey: ed25519KeyPair().public, requestId: "r3" }, progress);
    expect(await qmpAsk(join(stateDir, "local", "plain", "qmp.sock"), { execute: "qom-get", arguments: { path: "/machine/peripheral/workspace", property: "serial" } })).toHaveProperty("error");
    expect(await blockFiles("plain")).toHaveLength(2); // the VM's overlay and the seed
    await p.destroy((await p.get("plain")) as NonNullable<Awaited<ReturnType<Provider["get"]>>>, progress);
  });
});
