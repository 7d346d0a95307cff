import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { builtImageDir } from "../../providers/local/image.js";
import { BIN, runCli, tempHome, writeUserConfig } from "../helpers/cli.js";

// Baked images on a real local VM (QEMU, TCG here, network none): `spuff image bake` boots the Debian 13 image with an
// image.setup step, cleans the guest, powers it down and flattens its disk into a qcow2 base; `up` boots that base,
// its user-data has no package step and no image.setup, and the image.setup's result is on the VM.
const cacheDir = process.env.SPUFF_CACHE_DIR ?? join(process.env.HOME ?? "/root", ".cache", "spuff");
const imageReady = existsSync(join(builtImageDir(cacheDir, "debian-13"), "disk.qcow2"));

describe.skipIf(!imageReady || !existsSync(BIN))("local VM: baked image end to end", { timeout: 20 * 60_000 }, () => {
  const t = tempHome();
  let env: NodeJS.ProcessEnv;
  let bakeId = "";
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  const spuff = (...argv: string[]) => runCli(argv, { env, cwd: t.home });

  beforeAll(() => {
    writeUserConfig(
      t.env,
      stringify({
        provider: "local",
        local: { cpus: 2, memory: "1G", disk: "4G", network: "none" },
        image: { setup: ["mkdir -p ~/.cache/baked && echo baked-once > ~/.cache/baked/mark"] },
        setup: ["echo per-vm > ~/per-vm"],
      }),
    );
    env = { ...t.env, SPUFF_CACHE_DIR: cacheDir };
  });

  afterAll(async () => {
    await runCli(["down", "bk", "--yes"], { env, cwd: t.home }).catch(() => {});
    spawnSync("sh", ["-c", `for f in ${stateDir}/local/*/qemu.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")"; done`]);
    if (bakeId) rmSync(join(cacheDir, "bakes", bakeId), { recursive: true, force: true });
    t.cleanup();
  });

  it("bakes a flattened qcow2 base, labelled, and no bake VM is left", async () => {
    const r = await spuff("image", "bake", "--json");
    expect(r.code, r.stderr).toBe(0);
    const baked = JSON.parse(r.stdout);
    bakeId = baked.id;
    expect(baked).toMatchObject({ provider: "local", status: "available", current: true, created: true, pricePerMonth: null });
    expect(baked.sizeGB).toBeGreaterThan(0);
    const disk = join(cacheDir, "bakes", bakeId, "disk.qcow2");
    const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", disk], { encoding: "utf8" }));
    expect(info["backing-filename"]).toBeUndefined();
    expect(JSON.parse((await spuff("ls", "--json")).stdout)).toEqual([]);
  });

  it("`up` boots it: no package step and no image.setup in the user-data, image.setup's result and the per-VM setup on the VM", async () => {
    const up = await spuff("up", "bk");
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain(`booting the baked image`);
    const ud = parse(execFileSync("isoinfo", ["-R", "-i", join(stateDir, "local", "bk", "seed.iso"), "-x", "/user-data"], { encoding: "utf8" })) as {
      runcmd: (string | string[])[];
      write_files: { path: string; content: string }[];
    };
    const runcmd = ud.runcmd.map((c) => (Array.isArray(c) ? c.join(" ") : c)).join("\n");
    expect(runcmd).not.toContain("spuff-install-packages");
    expect(ud.write_files.find((f) => f.path === "/etc/spuff/setup.sh")?.content).not.toContain(".cache/baked");
    const out = await spuff("ssh", "bk", "--no-agent", "--", "cat ~/.cache/baked/mark ~/per-vm; sudo cat /etc/machine-id; ls /etc/ssh | grep ssh_host_");
    expect(out.code, out.stderr).toBe(0);
    const lines = out.stdout.trim().split("\n");
    expect(lines.slice(0, 2)).toEqual(["baked-once", "per-vm"]);
    expect(lines[2]).toMatch(/^[0-9a-f]{32}$/);
    // Only this VM's own ed25519 key (rotated by up): no key of the bake VM survived in the image.
    expect(lines.slice(3)).toEqual(["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]);
  });

  it("`image rm` refuses while a VM sits on the bake, and deletes it after `down`", async () => {
    const busy = await spuff("image", "rm", bakeId);
    expect(busy.code).toBe(2);
    expect(busy.stderr).toContain(`is the base of bk`);
    expect((await spuff("down", "bk", "--yes")).code).toBe(0);
    const rm = await spuff("image", "rm", bakeId);
    expect(rm.code, rm.stderr).toBe(0);
    expect(existsSync(join(cacheDir, "bakes", bakeId))).toBe(false);
  });
});
