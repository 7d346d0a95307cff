import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StateStore, withLock, writeFileAtomic } from "../../src/core/state.js";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "spuff-state-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const record = (name: string) => ({
  name,
  provider: "local",
  user: "dev",
  createdAt: new Date(0).toISOString(),
  hostKey: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${name.padEnd(43, "A").slice(0, 43)}`,
});

describe("state store", () => {
  it("saves the record and key pair with private modes, and regenerates known_hosts", async () => {
    const store = new StateStore(dir);
    await store.save(record("alpha"), { private: "PRIVATE", public: "ssh-ed25519 AAAA alpha" });
    expect(statSync(store.clientKeyPath("alpha")).mode & 0o777).toBe(0o600);
    expect(statSync(store.vmDir("alpha")).mode & 0o777).toBe(0o700);
    expect(store.read("alpha")).toEqual(record("alpha"));
    expect(readFileSync(store.knownHostsPath(), "utf8")).toBe(`spuff-alpha ${record("alpha").hostKey}\n`);
    await store.remove("alpha");
    expect(store.list()).toEqual([]);
    expect(readFileSync(store.knownHostsPath(), "utf8")).toBe("");
  });

  it("during a host key rotation known_hosts pins both keys of the VM, afterwards only the new one", async () => {
    const store = new StateStore(dir);
    const next = record("beta").hostKey;
    await store.save(record("alpha"));
    await store.update("alpha", (r) => ({ ...r, nextHostKey: next }));
    expect(readFileSync(store.knownHostsPath(), "utf8")).toBe(`spuff-alpha ${record("alpha").hostKey}\nspuff-alpha ${next}\n`);
    await store.update("alpha", ({ nextHostKey: _, ...r }) => ({ ...r, hostKey: next }));
    expect(readFileSync(store.knownHostsPath(), "utf8")).toBe(`spuff-alpha ${next}\n`);
  });

  it("atomic writes leave no temp files behind", () => {
    const f = join(dir, "x", "file.json");
    for (let i = 0; i < 20; i++) writeFileAtomic(f, `{"i":${i}}`);
    expect(readFileSync(f, "utf8")).toBe('{"i":19}');
    expect(readdirSync(join(dir, "x"))).toEqual(["file.json"]);
  });

  it("breaks a lock left by a dead process", async () => {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(join(dir, ".lock"), "999999");
    expect(await withLock(dir, () => "got it")).toBe("got it");
  });

  it("the owner id is made once: four first runs at once agree on one id, and later runs read it back", async () => {
    const env = JSON.stringify({ XDG_STATE_HOME: dir, HOME: dir, USER: "dev" });
    const code = `import("${resolve("src/core/owner.ts")}").then((m) => console.log(m.ownerId(${env})))`;
    const run = () =>
      new Promise<string>((res, rej) => {
        let out = "";
        const child = spawn(process.execPath, ["--import", "tsx", "-e", code], { stdio: ["ignore", "pipe", "inherit"] });
        child.stdout.on("data", (d: Buffer) => (out += d));
        child.on("error", rej);
        child.on("exit", () => res(out.trim()));
      });
    const ids = await Promise.all([run(), run(), run(), run()]);
    expect(ids[0]).toMatch(/^[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(1);
    expect(await run()).toBe(ids[0]);
    expect(readdirSync(join(dir, "spuff"))).toEqual(["owner.json"]);
  });

  it("two spuff processes writing at once lose nothing", async () => {
    // Eight real processes, each saving 10 VMs into the same state dir at the same time.
    const script = resolve("test/fixtures/state-writer.ts");
    const procs = Array.from({ length: 8 }, (_, p) =>
      new Promise<number>((res, rej) => {
        const child = spawn(process.execPath, ["--import", "tsx", script, dir, `p${p}`, "10"], { stdio: "inherit" });
        child.on("error", rej);
        child.on("exit", (code) => res(code ?? 1));
      }),
    );
    expect(await Promise.all(procs)).toEqual(Array(8).fill(0));
    const store = new StateStore(dir);
    const names = store.list().map((r) => r.name);
    expect(names).toHaveLength(80);
    const known = readFileSync(store.knownHostsPath(), "utf8").trim().split("\n");
    expect(known).toHaveLength(80);
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp") || f === ".lock")).toEqual([]);
  });
});
