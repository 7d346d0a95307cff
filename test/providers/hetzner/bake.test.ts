
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { LABEL } from "../../../src/core/labels.js";
import { SNAPSHOT_PRICE, SNAPSHOT_SIZE_GB } from "../../fakes/hetzner/images.js";
import { BIN, phaseShown, spawnCli, writeUserConfig } from "../../helpers/cli.js";
import { parseUserData, userDataText } from "../../helpers/standin-vm.js";
import { closeEach, type Harness, harness, } from "./harness.js";

// `spuff image bake` against the spec-validating Hetzner fake, with a real sshd standing in for the bake server: the
// snapshot request and its labels, the cleaning, `up` from the bake (no package or image.setup work in its
// user-data), the stale message after a config change, `image ls`/`image rm`, the reaper, and Ctrl-C.

const CONFIG = { packages: ["jq"], image: { setup: ["mkdir -p ~/.cache/baked"] }, setup: ["echo per-vm > ~/per-vm"] };

function writeConfig(h: Harness, extra: Record<string, unknown>): void {
  writeUserConfig(h.env, stringify({ ssh: { user: "spuff-test", tmux: false }, ...extra }));
}

/** The user-data runcmd lines and write_files paths, for checking what cloud-init is asked to do. */
function work(userData: string) {
  const cfg = parseUserData(userData) as { runcmd?: (string | string[])[]; write_files?: { path: string; content: string }[] };
  const runcmd = (cfg.runcmd ?? []).map((c) => (Array.isArray(c) ? c.join(" ") : c));
  const files = cfg.write_files ?? [];
  return { runcmd, paths: files.map((f) => f.path), setup: files.find((f) => f.path === "/etc/spuff/setup.sh")?.content ?? "" };
}

describe("hetzner: baked images through the CLI", { timeout: 60_000 }, () => {
  let h: Harness | undefined;
  const children = closeEach(
    () => h,
    () => {
      h = undefined;
    },
  );

  it("bakes a labelled snapshot, `up` boots it without package or image.setup work, a config change makes it stale, `image rm` deletes it", async () => {
    h = await harness({ ipv4Prefix: "127.0.97.", config: CONFIG });
    const fake = h.fake;
    // What the bake server was sent, and its stand-in's root/ just before the server goes (the stand-in stops after).
    const sent = new Map<number, string>();
    fake.events.on("server-created", ({ id }: { id: number }) => sent.set(id, fake.servers.get(id)?.userData ?? ""));
    const roots: string[] = [];
    const logins: number[] = [];
    fake.events.on("server-deleted", ({ id }: { id: number }) => {
      const dir = h?.standins.get(id)?.dir;
      if (dir) roots.push(join(dir, "root"));
      logins.push(h?.standins.get(id)?.logins() ?? -1);
    });
    const seen: Record<string, boolean | string> = {};
    fake.events.on("server-deleted", () => {
      const root = roots.at(-1);
      if (!root || !existsSync(root) || "hostKey" in seen) return;
      seen.hostKey = existsSync(join(root, "etc/ssh/ssh_host_ed25519_key"));
      seen.machineId = readFileSync(join(root, "etc/machine-id"), "utf8");
      seen.spuffDir = existsSync(join(root, "etc/spuff"));
      seen.authorizedKeys = existsSync(join(root, "home/spuff-test/.ssh/authorized_keys"));
      seen.history = existsSync(join(root, "home/spuff-test/.bash_history"));
      seen.syslog = readFileSync(join(root, "var/log/syslog"), "utf8");
      seen.rotated = existsSync(join(root, "var/log/syslog.1"));
      seen.cloud = existsSync(join(root, "var/lib/cloud"));
      seen.kept = existsSync(join(root, "home/spuff-test/.local/bin/tool"));
    });

    const bake = await h.spuff(["image", "bake", "--json"]);
    expect(bake.code, bake.stderr).toBe(0);
    const baked = JSON.parse(bake.stdout);
    expect(baked).toMatchObject({ provider: "hetzner", status: "available", current: true, created: true, sizeGB: SNAPSHOT_SIZE_GB });
    expect(baked.pricePerMonth).toEqual({ amount: Math.round(SNAPSHOT_SIZE_GB * SNAPSHOT_PRICE.gross * 10000) / 10000, currency: "EUR" });

    // One snapshot, labelled in its create request; the bake server and its SSH key are gone.
    expect(fake.servers.size + fake.sshKeys.size).toBe(0);
    expect([...fake.images.snapshots.values()]).toHaveLength(1);
    const [snap] = fake.images.snapshots.values();
    expect(String(snap.id)).toBe(baked.id);
    expect(snap.labels).toMatchObject({ "managed-by": "spuff", [LABEL.kind]: "bake", [LABEL.owner]: "testowner0001" });
    expect(snap.labels[LABEL.bake]).toMatch(/^[0-9a-f]{20}$/);
    expect(snap.labels[LABEL.requestId]).toMatch(/^[0-9a-f]{32}$/);
    expect(Number(snap.labels[LABEL.lastMatched])).toBeGreaterThan(Date.now() / 1000 - 60);
    const createImage = fake.requests.filter((r) => r.operationId === "create_server_image");
    expect(createImage.map((r) => r.status)).toEqual([201]);
    // Shut down first (ACPI), then the snapshot, then the server deleted.
    const order = fake.requests.map((r) => r.operationId).filter((o) => ["shutdown_server", "create_server_image", "delete_server"].includes(o ?? ""));
    expect(order).toEqual(["shutdown_server", "create_server_image", "delete_server"]);

    // The bake server got packages and image.setup only: one login key, no per-VM setup, no git hosts to scan.
    const [bakeData] = sent.values();
    const bw = work(bakeData);
    expect(bw.runcmd.some((c) => c.startsWith("/usr/local/bin/spuff-install-packages ") && c.includes(" jq"))).toBe(true);
    expect(bw.setup).toContain("mkdir -p ~/.cache/baked");
    expect(bw.setup).not.toContain("per-vm");
    expect(bw.paths).toContain("/usr/local/lib/spuff/bake-clean");
    expect(bw.paths).not.toContain("/etc/spuff/first-login.conf");
    const bakeUsers = (parseUserData(bakeData).users ?? []) as { ssh_authorized_keys?: string[] }[];
    expect(bakeUsers[0].ssh_authorized_keys).toHaveLength(1);

    // The cleaning ran on the bake server before its image: nothing per-VM left, the image-level results kept.
    expect(seen).toEqual({
      hostKey: false,
      machineId: "",
      spuffDir: false,
      authorizedKeys: false,
      history: false,
      syslog: "",
      rotated: false,
      cloud: false,
      kept: true,
    });
    // One login for the cloud-init wait and the cleaning.
    expect(logins[0]).toBe(1);

    // `up` boots the snapshot; its user-data has no package step and no image.setup, only the per-VM setup.
    const up = await h.spuff(["up", "box"]);
    expect(up.code).toBe(0);
    expect(up.stderr).toContain(`booting the baked image ${baked.name} (${baked.id})`);
    const box = [...fake.servers.values()].find((s) => s.name === "box");
    expect(box?.image).toBe(baked.id);
    const uw = work(box?.userData ?? "");
    expect(uw.runcmd.join("\n")).not.toContain("spuff-install-packages");
    expect(uw.paths).not.toContain("/usr/local/bin/spuff-install-packages");
    expect(uw.paths).not.toContain("/usr/local/lib/spuff/bake-clean");
    expect(uw.setup).not.toContain(".cache/baked");
    expect(uw.setup).toContain("echo per-vm");
    expect(userDataText(box?.userData ?? "")).not.toMatch(/\bjq\b/);

    const ls = await h.spuff(["image", "ls", "--json"]);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([
      expect.objectContaining({ id: baked.id, provider: "hetzner", current: true, status: "available", sizeGB: SNAPSHOT_SIZE_GB, pricePerMonth: baked.pricePerMonth }),
    ]);
    const table = await h.spuff(["image", "ls"]);
    expect(table.stdout).toMatch(new RegExp(`^${baked.id}\\s+hetzner\\s+\\S+\\s+available\\s+current\\s+${SNAPSHOT_SIZE_GB} GB\\s+€`, "m"));

    // Another package: the bake is stale; `up` says so and boots the base image with the full install.
    writeConfig(h, { ...CONFIG, packages: ["jq", "rsync"] });
    const stale = await h.spuff(["up", "box2"]);
    expect(stale.code).toBe(0);
    expect(stale.stderr).toContain(`the baked image ${baked.name} (${baked.id}`);
    expect(stale.stderr).toContain("is stale");
    const box2 = [...fake.servers.values()].find((s) => s.name === "box2");
    expect(box2?.image).toBe("debian-13");
    const sw = work(box2?.userData ?? "");
    expect(sw.runcmd.some((c) => c.includes("spuff-install-packages") && c.includes("jq"))).toBe(true);
    expect(sw.setup).toContain(".cache/baked");
    expect(JSON.parse((await h.spuff(["image", "ls", "--json"])).stdout)[0].current).toBe(false);

    const rm = await h.spuff(["image", "rm", baked.id]);
    expect(rm.code).toBe(0);
    expect(fake.images.snapshots.size).toBe(0);
    expect(fake.requests.filter((r) => r.operationId === "delete_image").map((r) => r.status)).toEqual([204]);
    const again = await h.spuff(["image", "rm", baked.id]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`no baked image with id ${baked.id}`);

    for (const n of ["box", "box2"]) expect((await h.spuff(["down", n, "--yes"])).code).toBe(0);
  });

  it("refuses a bake with nothing to bake, creating nothing", async () => {
    h = await harness({ ipv4Prefix: "127.0.97.", config: {} });
    const empty = await h.spuff(["image", "bake"]);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain("nothing to bake: packages and image.setup are empty");
    expect(h.fake.requests.filter((r) => r.method !== "GET")).toEqual([]);
  });

  it("the reaper deletes a bake that no `up` matched for image.keep, and keeps a recent one", async () => {
    h = await harness({ ipv4Prefix: "127.0.97.", config: { ...CONFIG, image: { ...CONFIG.image, keep: "7d" } } });
    expect((await h.spuff(["image", "bake"])).code).toBe(0);
    expect((await h.spuff(["image", "bake", "--force"])).code).toBe(0);
    const [old, fresh] = [...h.fake.images.snapshots.values()];
    old.labels[LABEL.lastMatched] = String(Math.floor(Date.now() / 1000) - 8 * 86400);
    const dry = await h.spuff(["reap", "--dry-run"]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`would delete hetzner baked image`);
    expect(dry.stdout).toContain(`(id ${old.id}, not matched for 8d)`);
    expect(h.fake.images.snapshots.size).toBe(2);
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code).toBe(0);
    expect([...h.fake.images.snapshots.keys()]).toEqual([fresh.id]);
  });

  describe.skipIf(!existsSync(BIN))("Ctrl-C during a bake (the built binary)", () => {
    function bake(): ReturnType<typeof spawnCli> {
      if (!h) throw new Error("no harness");
      const run = spawnCli(["--provider", "hetzner", "image", "bake"], h.env, h.home.home);
      children.push(run.child);
      return run;
    }

    async function nothingLeft(run: ReturnType<typeof spawnCli>, during: string): Promise<void> {
      const code = await run.exit;
      expect(run.stderr()).toContain(`interrupted during ${during}; rolled back: no bake VM and no image are left`);
      expect(code).toBe(130);
      await h?.fake.settled();
      expect({ servers: h?.fake.servers.size, keys: h?.fake.sshKeys.size, images: h?.fake.images.snapshots.size }).toEqual({ servers: 0, keys: 0, images: 0 });
    }

    it("while the snapshot is being created: the half-made image and the server are deleted", async () => {
      h = await harness({ ipv4Prefix: "127.0.97.", config: CONFIG, actionDelayMs: 1500 });
      const run = bake();
      await once(h.fake.events, "image-created");
      const [snap] = h.fake.images.snapshots.values();
      expect(snap.status).toBe("creating");
      expect(snap.labels[LABEL.kind]).toBe("bake");
      run.child.kill("SIGINT");
      await nothingLeft(run, "create image");
      expect(h.fake.requests.filter((r) => r.operationId === "delete_image").map((r) => r.status)).toContain(204);
    });

    it("while waiting for SSH: the server is deleted, no image was made", async () => {
      h = await harness({ ipv4Prefix: "127.0.97.", config: CONFIG, standin: false });
      const run = bake();
      await phaseShown(run, "wait SSH");
      run.child.kill("SIGINT");
      await nothingLeft(run, "wait SSH");
      expect(h.fake.count("POST", "/servers")).toBe(1);
      expect(h.fake.requests.some((r) => r.operationId === "create_server_image")).toBe(false);
    });
  });
});
