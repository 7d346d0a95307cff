
import { once } from "node:events";
import { existsSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { LABEL } from "../../../src/core/labels.js";
import type { VolumeRec } from "../../fakes/hetzner/volumes.js";
import { BIN, phaseShown, type Running, spawnCli } from "../../helpers/cli.js";
import { closeEach, type Harness, harness, problems } from "./harness.js";

// Workspace volumes through the real CLI against the spec-validating Hetzner fake (docs/workspaces.md): `up` creates
// a labelled volume and attaches it at server create, `down` keeps it (and says what it costs), the next `up` of the
// name attaches the SAME volume, `down --purge` deletes it; and Ctrl-C at each phase of `up` (the built binary, SIGINT)
// never leaves a volume without labels and never deletes one that existed before.

const OWNER = "testowner0001";

describe("hetzner: workspace volumes through the CLI", { timeout: 60_000 }, () => {
  let h: Harness;
  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  const only = (): VolumeRec => {
    expect(h.fake.volumes.size).toBe(1);
    return [...h.fake.volumes.values()][0];
  };

  it("up creates a labelled volume and attaches it; down keeps it (size, price); up attaches the same one; --purge deletes it", async () => {
    h = await harness({ ipv4Prefix: "127.0.118." });
    const up = await h.spuff(["up", "box"]);
    expect(up.code, up.stderr).toBe(0);
    const vol = only();
    const [server] = h.fake.servers.values();
    expect(vol).toMatchObject({ server: server.id, automount: false, location: "fsn1", size: 10, status: "available" });
    expect(vol.labels).toMatchObject({ "managed-by": "spuff", [LABEL.kind]: "workspace", [LABEL.name]: "box", [LABEL.owner]: OWNER, [LABEL.keep]: String(14 * 86400) });
    // The volume's request id is the server's: the same `up` made both.
    expect(vol.labels[LABEL.requestId]).toBe(server.labels[LABEL.requestId]);
    expect(up.stdout).toContain(`  work:     ~/work is a new workspace volume ${vol.id} (10 GiB), kept by \`spuff down\``);
    // The VM is told to mount it by its id.
    expect(server.userData.length).toBeGreaterThan(0);
    const create = h.fake.requests.find((r) => r.method === "POST" && r.path === "/servers")?.body as Record<string, unknown>;
    expect(create).toMatchObject({ volumes: [vol.id], automount: false, location: "fsn1" });

    const down = await h.spuff(["down", "box", "--yes"]);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toContain(
      `kept the workspace volume ${vol.id} (10 GiB, €0.52/month): \`spuff up box\` brings ~/work back; deleted 14 days after this unless attached again; \`spuff down box --purge\` deletes it now`,
    );
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
    expect(only()).toMatchObject({ id: vol.id, server: null });
    expect(Number(only().labels[LABEL.detachedAt])).toBeGreaterThan(0);

    const again = await h.spuff(["up", "box"]);
    expect(again.code, again.stderr).toBe(0);
    const [second] = h.fake.servers.values();
    expect(only()).toMatchObject({ id: vol.id, server: second.id });
    expect(only().labels[LABEL.detachedAt]).toBeUndefined();
    expect(again.stdout).toContain(`~/work is the kept workspace volume ${vol.id} (10 GiB)`);
    expect(h.fake.count("POST", "/volumes")).toBe(1);

    // A location the volume is not in: refused before anything is created.
    expect((await h.spuff(["down", "box", "--yes"])).code).toBe(0);
    const creates = () => h.fake.requests.filter((r) => r.method === "POST").length;
    const before = creates();
    const far = await h.spuff(["up", "box", "--location", "nbg1"]);
    expect(far.code).toBe(1);
    expect(far.stderr).toContain(`error: the workspace of box is in fsn1 (Hetzner volume ${vol.id}), but --location nbg1: a volume attaches only to a server in its own location`);
    expect(far.stderr).toContain("hint: `spuff up box --location fsn1` brings the workspace back where it is");
    expect(far.stderr).toContain("hint: or `spuff down box --purge` deletes the old workspace");
    expect(creates()).toBe(before);
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
    expect(only()).toMatchObject({ id: vol.id, server: null });

    // No VM, a kept workspace: --purge deletes it.
    const purge = await h.spuff(["down", "box", "--purge", "--yes"]);
    expect(purge.code, purge.stderr).toBe(0);
    expect(h.fake.volumes.size).toBe(0);
  });

  it("an attach that fails fails the up with its action, and rolls back; the create and the attach were polled together", async () => {
    h = await harness({
      ipv4Prefix: "127.0.119.",
      actionDelayMs: 60,
      failAction: (command) => (command === "attach_volume" ? { code: "action_failed", message: "volume attach failed" } : undefined),
    });
    const up = await h.spuff(["up", "box"]);
    expect(up.code).toBe(2);
    expect(up.stderr).toContain("attach the workspace volume of box: the Hetzner action attach_volume failed: action_failed volume attach failed");
    expect(up.stderr).not.toMatch(/\n\s+at /);
    // One request per poll for both; the create's action id and the attach's.
    const create = h.fake.requests.find((r) => r.method === "POST" && r.path === "/servers");
    const polls = h.fake.requests.filter((r) => r.method === "GET" && r.path === "/actions" && r.start > (create?.start ?? 0));
    expect(polls.length).toBeGreaterThan(0);
    expect(polls[0].search).toMatch(/^\?id=\d+&id=\d+$/);
    expect(h.fake.requests.filter((r) => r.path.startsWith("/actions/"))).toEqual([]);
    // Nothing is left: the server, its key and the volume this up made.
    expect(h.fake.servers.size + h.fake.sshKeys.size + h.fake.volumes.size).toBe(0);
    expect((await h.spuff(["ls", "--json"])).stdout.trim()).toBe("[]");
  });

  it("down --purge of a running VM deletes the server, then its volume", async () => {
    h = await harness({ ipv4Prefix: "127.0.118." });
    expect((await h.spuff(["up", "gone"])).code).toBe(0);
    const vol = only();
    const purge = await h.spuff(["down", "gone", "--purge", "--yes"]);
    expect(purge.code, purge.stderr).toBe(0);
    expect(purge.stdout).toContain(`deleted the workspace volume ${vol.id} of gone`);
    expect(h.fake.servers.size + h.fake.sshKeys.size + h.fake.volumes.size).toBe(0);
    // The volume was deleted only after the server delete had detached it: no refused DELETE.
    expect(h.fake.requests.filter((r) => r.method === "DELETE" && r.path === `/volumes/${vol.id}`).map((r) => r.status)).toEqual([204]);
  });

  it("workspace ls shows kept volumes with the API's price; reap deletes one past its keep period, never an attached one", async () => {
    h = await harness({ ipv4Prefix: "127.0.118." });
    expect((await h.spuff(["up", "live"])).code).toBe(0);
    const live = only();
    const now = Math.floor(Date.now() / 1000);
    const labels = (name: string, detachedDaysAgo: number) => ({
      "managed-by": "spuff",
      [LABEL.kind]: "workspace",
      [LABEL.name]: name,
      [LABEL.owner]: OWNER,
      [LABEL.createdAt]: String(now - 30 * 86400),
      [LABEL.requestId]: `${name.replace(/-/g, "")}00000000000000000000`,
      [LABEL.keep]: String(14 * 86400),
      [LABEL.detachedAt]: String(now - detachedDaysAgo * 86400),
    });
    const old = h.fake.volumeApi.seed({ name: "spuff-old-00000000", size: 20, labels: labels("old", 15) });
    const recent = h.fake.volumeApi.seed({ name: "spuff-recent-00000000", size: 10, labels: labels("recent", 1) });
    // An attached volume whose labels say it is long past its keep period: attached wins.
    h.fake.volumes.set(live.id, { ...live, labels: { ...live.labels, [LABEL.detachedAt]: String(now - 30 * 86400), [LABEL.attachedAt]: String(now - 31 * 86400) } });

    const ls = await h.spuff(["workspace", "ls", "--json"]);
    expect(ls.code, ls.stderr).toBe(0);
    const views = JSON.parse(ls.stdout) as { id: string; status: string; pricePerMonth: unknown; reap: string | null }[];
    expect(views.map((v) => [v.id, v.status, v.pricePerMonth, v.reap]).sort()).toEqual(
      [
        [String(live.id), "attached", { amount: 0.524, currency: "EUR" }, null],
        [String(old.id), "kept", { amount: 1.048, currency: "EUR" }, "expired"],
        [String(recent.id), "kept", { amount: 0.524, currency: "EUR" }, null],
      ].sort(),
    );

    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code, reap.stderr).toBe(0);
    expect(reap.stdout).toContain(`deleted the kept workspace volume of old (hetzner volume ${old.id}): its keep period has passed`);
    expect([...h.fake.volumes.keys()].sort()).toEqual([live.id, recent.id].sort());
    expect(h.fake.volumes.get(live.id)?.server).not.toBeNull();
  });
});

describe.skipIf(!existsSync(BIN))("hetzner: Ctrl-C during up never loses a workspace volume", { timeout: 60_000 }, () => {
  let h: Harness | undefined;
  const children = closeEach(
    () => h,
    () => {
      h = undefined;
    },
  );

  /** Labels of every volume at the moment it was created (to prove none ever existed without them). */
  function watchCreates(): Record<string, string>[] {
    const seen: Record<string, string>[] = [];
    h?.fake.events.on("volume-created", ({ id }: { id: number }) => seen.push({ ...h?.fake.volumes.get(id)?.labels }));
    return seen;
  }

  /** A workspace volume kept from an earlier `up` of `name` by this machine's owner (detached a day ago). */
  function kept(name: string): VolumeRec {
    const day = String(Math.floor(Date.now() / 1000) - 86400);
    return (h as Harness).fake.volumeApi.seed({
      name: `spuff-${name}-0ld0ld00`,
      size: 10,
      labels: {
        "managed-by": "spuff",
        [LABEL.kind]: "workspace",
        [LABEL.name]: name,
        [LABEL.owner]: OWNER,
        [LABEL.createdAt]: day,
        [LABEL.requestId]: "0ld0ld000000000000000000000000000",
        [LABEL.keep]: String(14 * 86400),
        [LABEL.attachedAt]: day,
        [LABEL.detachedAt]: day,
      },
    });
  }

  async function until(cond: () => boolean, run: Running): Promise<void> {
    for (let i = 0; !cond(); i++) {
      if (run.child.exitCode !== null || i > 500) throw new Error(`up ended or took too long:\n${run.stderr()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  function up(name: string): Running {
    if (!h) throw new Error("no harness");
    const run = spawnCli(["--provider", "hetzner", "up", name], h.env, h.home.home);
    children.push(run.child);
    return run;
  }

  async function rolledBack(run: Running, during: string): Promise<void> {
    const code = await run.exit;
    expect(run.stderr()).toContain(`interrupted during ${during}; rolled back, nothing is left`);
    expect(code).toBe(130);
    await h?.fake.settled();
    expect({ servers: h?.fake.servers.size, keys: h?.fake.sshKeys.size }).toEqual({ servers: 0, keys: 0 });
  }

  /** A new volume: labelled from its first moment, and deleted by the rollback. */
  function newVolumeGone(seen: Record<string, string>[]): void {
    expect(seen.length).toBe(1);
    for (const l of seen) expect(l).toMatchObject({ "managed-by": "spuff", [LABEL.kind]: "workspace", [LABEL.owner]: OWNER });
    expect(h?.fake.volumes.size).toBe(0);
  }

  /** The kept volume: still there, detached, never asked to be deleted, still labelled as this owner's workspace. */
  function keptStays(v: VolumeRec): void {
    expect(h?.fake.volumes.size).toBe(1);
    const now = h?.fake.volumes.get(v.id);
    expect(now?.server).toBeNull();
    expect(now?.labels).toMatchObject({ "managed-by": "spuff", [LABEL.kind]: "workspace", [LABEL.name]: v.labels[LABEL.name], [LABEL.owner]: OWNER, [LABEL.requestId]: v.labels[LABEL.requestId] });
    expect(h?.fake.requests.filter((r) => r.method === "DELETE" && r.path.startsWith("/volumes/"))).toEqual([]);
  }

  // Each phase of `up`, with a new volume and with a kept one; `interrupt` starts `up` and sends SIGINT in that phase.
  const phases: { phase: string; opts: Parameters<typeof harness>[0]; interrupt: (name: string) => Promise<Running> }[] = [
    {
      phase: "workspace volume",
      opts: {},
      interrupt: async (name) => {
        // New: the volume exists, its answer is on the way. Kept: its relabel (attached-at) is on the way.
        h?.fake.inject({ method: "POST", path: "/volumes", when: "after", delayMs: 3000 });
        h?.fake.inject({ method: "PUT", path: /^\/volumes\/\d+$/, when: "after", delayMs: 3000 });
        const run = up(name);
        // In flight (logged on arrival, answer delayed): the fake has already made the change.
        await until(() => Boolean(h?.fake.requests.some((r) => r.status === 0 && r.method !== "GET" && r.path.startsWith("/volumes"))), run);
        await new Promise((r) => setTimeout(r, 100));
        return run;
      },
    },
    {
      phase: "register SSH key",
      opts: {},
      interrupt: async (name) => {
        h?.fake.inject({ method: "POST", path: "/ssh_keys", when: "after", delayMs: 3000 });
        const run = up(name);
        await once((h as Harness).fake.events, "ssh-key-created");
        return run;
      },
    },
    {
      phase: "create server",
      opts: { actionDelayMs: 1500 },
      interrupt: async (name) => {
        const run = up(name);
        await once((h as Harness).fake.events, "server-created");
        return run;
      },
    },
    {
      phase: "wait running",
      opts: { bootDelayMs: 2000 },
      interrupt: async (name) => {
        const run = up(name);
        await phaseShown(run, "wait running");
        return run;
      },
    },
    {
      phase: "wait SSH",
      opts: {},
      interrupt: async (name) => {
        const run = up(name);
        await phaseShown(run, "wait SSH");
        return run;
      },
    },
  ];

  for (const p of phases) {
    it(`during ${p.phase}, new volume: it was labelled from the start and is deleted`, async () => {
      h = await harness({ ipv4Prefix: "127.0.118.", standin: false, ...p.opts });
      const seen = watchCreates();
      const run = await p.interrupt("int-new");
      run.child.kill("SIGINT");
      await rolledBack(run, p.phase);
      h.fake.clearFaults();
      newVolumeGone(seen);
    });

    it(`during ${p.phase}, kept volume: it stays, detached, and is never deleted`, async () => {
      h = await harness({ ipv4Prefix: "127.0.118.", standin: false, ...p.opts });
      const v = kept("int-kept");
      const run = await p.interrupt("int-kept");
      run.child.kill("SIGINT");
      await rolledBack(run, p.phase);
      h.fake.clearFaults();
      keptStays(v);
      expect(h.fake.count("POST", "/volumes")).toBe(0);
    });
  }
});
