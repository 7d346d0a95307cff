import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { builtImageDir, pulledImageDir } from "../../providers/local/image.js";
import { StateStore } from "../../src/core/state.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { stringify } from "yaml";
import { runCli, writeUserConfig } from "../helpers/cli.js";
import { docShapes, mismatches, one, used } from "../helpers/json-shapes.js";
import { type Harness, harness } from "../providers/hetzner/harness.js";

// Every --json output docs/json.md describes, produced by the real CLI (against the Hetzner fake with a stand-in sshd
// per server) and checked against the shapes written in the doc itself: one document each, exactly those keys and types.

const shapes = docShapes();

/** Shapes whose output needs a VM that runs spuff-idle: checked by the end-to-end test on a real VM instead. */
const ON_A_REAL_VM = new Set(["extend"]); // test/e2e/local-vm.test.ts, "spuff extend moves the hard TTL"

/** `up --json`: every line an event of the doc; returns them. */
function events(stdout: string): Record<string, unknown>[] {
  const lines = stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const [i, e] of lines.entries()) {
    const last = i === lines.length - 1;
    const kinds = last && "error" in e ? ["Error"] : ["UpPhase", "UpMessage", "UpReady"];
    const fits = kinds.filter((k) => mismatches(e, shapes.get(k)).length === 0);
    expect(fits, `line ${i + 1} fits none of ${kinds.join(", ")}: ${JSON.stringify(e)}`).toHaveLength(1);
    used.add(fits[0]);
  }
  return lines;
}

describe("docs/json.md: every documented --json output, through the real CLI", () => {
  let h: Harness;
  const spuff = (args: string[], env: NodeJS.ProcessEnv = {}) => h.spuff([...args], env);

  beforeAll(async () => {
    h = await harness({ ipv4Prefix: "127.0.91." });
    // A VM only local state knows: `up` warns that it needs reaping (a warning event), `ls` lists it as gone.
    const k = ed25519KeyPair();
    await new StateStore(join(h.env.XDG_STATE_HOME as string, "spuff")).save(
      { name: "ghost", provider: "hetzner", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: k.public.trim() },
      { private: k.private, public: k.public.trim() },
    );
  });
  afterAll(async () => {
    await h?.close();
  });

  it("the doc's shapes parse and the notation is understood", () => {
    expect([...shapes.keys()]).toEqual(expect.arrayContaining(["VM", "Error", "ls", "reap", "doctor", "ssh-config", "image", "config-init"]));
    expect(mismatches({ a: 1 }, { a: "string" })).toEqual(['$.a: expected string, got 1']);
    expect(mismatches({ a: "x", b: 2 }, { a: "string" })).toEqual(["$.b: not in the doc"]);
    expect(mismatches({}, { "a?": "string" })).toEqual([]);
  });

  it("up: events, a warning among them, and ready with the VM", async () => {
    const r = await spuff(["up", "box", "--json"]);
    expect(r.code).toBe(0);
    const all = events(r.stdout);
    expect(all.at(-1)?.event).toBe("ready");
    expect(all.some((e) => e.event === "warning")).toBe(true);
    expect(all.some((e) => e.status === "done" && typeof e.ms === "number")).toBe(true);
  });

  it("ls, status; extend only as far as this stand-in allows (it has no spuff-idle: an Error)", async () => {
    const ls = one("ls", (await spuff(["ls", "--json"])).stdout) as { name: string; reap: string | null }[];
    expect(ls.map((v) => [v.name, v.reap])).toEqual([["box", null], ["ghost", "gone"]]);
    expect((one("status", (await spuff(["status", "box", "--json"])).stdout) as { name: string }).name).toBe("box");
    one("Error", (await spuff(["extend", "box", "2h", "--json"])).stdout);
    // The server powers itself off; start powers it on again.
    h.fake.powerOff("box");
    expect((one("start", (await spuff(["start", "box", "--json"])).stdout) as { started: boolean }).started).toBe(true);
  });

  it("doctor (checks fail here: no agent, no network for git hosts) and ssh-config, with and without --install", async () => {
    const doctor = await spuff(["doctor", "box", "--no-agent", "--git-host", "127.0.0.1", "--json"]);
    expect((one("doctor", doctor.stdout) as unknown[]).length).toBeGreaterThan(1);
    one("ssh-config", (await spuff(["ssh-config", "--json"])).stdout);
    const installed = one("ssh-config", (await spuff(["ssh-config", "--install", "--json"])).stdout) as { installed: unknown };
    expect(installed.installed).not.toBeNull();
  });

  it("down, then reap (dry run and real), reap with an error (still one document), the timer", async () => {
    const attached = one("workspace-ls", (await spuff(["workspace", "ls", "--json"])).stdout) as { name: string; status: string }[];
    expect(attached.map((w) => [w.name, w.status])).toEqual([["box", "attached"]]);
    const downed = one("down", (await spuff(["down", "box", "--yes", "--json"])).stdout) as { workspace: { action: string } }[];
    expect(downed[0].workspace.action).toBe("kept");
    const kept = one("workspace-ls", (await spuff(["workspace", "ls", "--json"])).stdout) as { name: string; status: string }[];
    expect(kept.map((w) => [w.name, w.status])).toEqual([["box", "kept"]]);
    expect((one("workspace-rm", (await spuff(["workspace", "rm", "box", "--yes", "--json"])).stdout) as { deleted: boolean }).deleted).toBe(true);
    // A VM without a workspace volume: down asks it for unsaved work first.
    const noVolume = join(h.home.home, "no-volume.yaml");
    writeFileSync(noVolume, "ssh:\n  user: spuff-test\n  tmux: false\nworkspace:\n  volume: false\n");  // --config replaces the user config
    expect((await spuff(["--config", noVolume, "up", "plain"])).code).toBe(0);
    const plain = one("down", (await spuff(["down", "plain", "--yes", "--json"])).stdout) as { unsaved: { checked: boolean } }[];
    expect(plain[0].unsaved.checked).toBe(true);
    const dry = one("reap", (await spuff(["reap", "--dry-run", "--json"])).stdout) as { plan: { name: string }[] };
    expect(dry.plan.map((p) => p.name)).toEqual(["ghost"]);
    one("reap", (await spuff(["reap", "--json"])).stdout);

    // Without --provider, reap asks every provider local state names; hetzner has no token now.
    await new StateStore(join(h.env.XDG_STATE_HOME as string, "spuff")).save(
      { name: "ghost2", provider: "hetzner", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: ed25519KeyPair().public.trim() },
      { private: "", public: "" },
    );
    const failing = await runCli(["reap", "--json"], { env: { ...h.env, HCLOUD_TOKEN: "" }, cwd: h.home.home });
    expect(failing.code).toBe(2);
    expect((one("reap", failing.stdout) as { errors: unknown[] }).errors).toHaveLength(1);
    expect(failing.stderr).toContain("error: reap could not finish: 1 problem(s)");

    one("reap-install", (await spuff(["reap", "--install", "--no-enable", "--json"])).stdout);
    one("reap-uninstall", (await spuff(["reap", "--uninstall", "--json"])).stdout);
  });

  it("up that fails: a failed phase, the rollback, and the error as the last line", async () => {
    h.fake.inject({ method: "POST", path: "/servers", status: 403, code: "forbidden", message: "insufficient permissions" });
    const r = await spuff(["up", "broken", "--json"]);
    expect(r.code).toBe(2);
    const all = events(r.stdout);
    expect(all.some((e) => e.event === "phase" && e.status === "failed")).toBe(true);
    expect(all.at(-1)).toHaveProperty("error");
  });

  it("image pull and image build (cached images: nothing is downloaded or built)", async () => {
    const cache = join(h.env.XDG_CACHE_HOME as string, "spuff");
    for (const dir of [pulledImageDir(cache, "debian-13"), builtImageDir(cache, "debian-13")]) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "disk.qcow2"), "");
    }
    expect(one("image", (await spuff(["image", "pull", "--json"])).stdout)).toEqual({ image: pulledImageDir(cache, "debian-13") });
    expect(one("image", (await spuff(["image", "build", "--json"])).stdout)).toEqual({ image: builtImageDir(cache, "debian-13") });
  });

  it("config init, path, show, validate", async () => {
    // The harness wrote the user config already: init writes a project file (which it trusts, being its own text).
    const initDir = join(h.home.home, "init");
    mkdirSync(initDir, { recursive: true });
    one("config-init", (await runCli(["config", "init", "--project", "--json"], { env: h.env, cwd: initDir })).stdout);
    one("config-path", (await spuff(["config", "path", "--json"])).stdout);
    const show = one("config-show", (await spuff(["config", "show", "--json"])).stdout) as { config: { hetzner: { token: string } } };
    expect(show.config.hetzner.token).toBe("<redacted>");
    one("config-validate", (await spuff(["config", "validate", "--json"])).stdout);

    // A warning under --json: on stderr, and stdout stays one document.
    const loose = join(h.home.home, "loose.yaml");
    writeFileSync(loose, "hetzner:\n  token: not-a-real-token\n", { mode: 0o644 });
    chmodSync(loose, 0o644);
    const warned = await spuff(["--config", loose, "config", "show", "--json"]);
    expect(warned.stderr).toMatch(/^warning: .*loose\.yaml holds an API token and is readable by others/m);
    one("config-show", warned.stdout);
  });

  it("trust, trust --list, trust --revoke", async () => {
    const project = join(h.home.home, "project");
    mkdirSync(project, { recursive: true });
    const file = join(project, "spuff.yaml");
    writeFileSync(file, "packages: [jq]\n");
    const trusted = one("trust", (await spuff(["trust", file, "--json"])).stdout) as { path: string };
    expect(trusted.path).toBe(file);
    const list = one("trust-list", (await spuff(["trust", "--list", "--json"])).stdout) as { path: string; status: string }[];
    expect(list).toContainEqual(expect.objectContaining({ path: file, status: "trusted" }));
    expect(one("trust-revoke", (await spuff(["trust", "--revoke", file, "--json"])).stdout)).toEqual({ revoked: file });
  });

  it("an error", async () => {
    const r = await spuff(["status", "nope", "--json"]);
    expect(r.code).toBe(1);
    one("Error", r.stdout);
  });

  it("image bake, image ls, image rm (a baked snapshot of the fake)", async () => {
    writeUserConfig(h.env, stringify({ ssh: { user: "spuff-test", tmux: false }, packages: ["jq"] }));
    const baked = one("image-bake", (await spuff(["image", "bake", "--json"])).stdout) as { id: string; created: boolean };
    expect(baked.created).toBe(true);
    const ls = one("image-ls", (await spuff(["image", "ls", "--json"])).stdout) as { id: string }[];
    expect(ls.map((i) => i.id)).toEqual([baked.id]);
    expect(one("image-rm", (await spuff(["image", "rm", baked.id, "--json"])).stdout)).toEqual({ removed: [baked.id] });
  });

  it("every shape in the doc was met", () => {
    expect([...shapes.keys()].filter((s) => !used.has(s) && !ON_A_REAL_VM.has(s))).toEqual([]);
  });
});
