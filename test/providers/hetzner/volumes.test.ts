import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { afterEach, describe, expect, it } from "vitest";
import { createProvider } from "../../../providers/hetzner/index.js";
import { loadConfig } from "../../../src/config/load.js";
import { ProviderError, UserError } from "../../../src/core/errors.js";
import { LABEL } from "../../../src/core/labels.js";
import type { CreateSpec, Progress, Provider, Volume } from "../../../src/core/provider.js";
import { HetznerFake } from "../../fakes/hetzner/fake.js";
import { tempHome, writeUserConfig } from "../../helpers/cli.js";
import { problems } from "./harness.js";

// The Hetzner provider's workspace volumes (docs/workspaces.md), the real provider against the spec-validating fake
// and its stateful Volumes API: labels in the create request, attach at server create with automount off, destroy
// keeps the volume, delete waits out locks and refuses attached volumes, the location rule, and Ctrl-C (AbortSignal)
// never leaving a volume without labels nor deleting one that existed before.

interface Recorder extends Progress {
  phases: string[];
  infos: string[];
  warns: string[];
}

function recorder(): Recorder {
  const r: Recorder = {
    phases: [],
    infos: [],
    warns: [],
    phase: (n) => r.phases.push(n),
    info: (m) => r.infos.push(m),
    warn: (m) => r.warns.push(m),
  };
  return r;
}

/** A syntactically valid OpenSSH ed25519 public key (the fake checks the blob's type), unique per call. */
function publicKey(): string {
  const type = Buffer.from("ssh-ed25519");
  const len = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  return `ssh-ed25519 ${Buffer.concat([len(type.length), type, len(32), randomBytes(32)]).toString("base64")} test`;
}

const OWNER = "testowner0001";

function labels(name: string, requestId: string): Record<string, string> {
  const now = String(Math.floor(Date.now() / 1000));
  return {
    [LABEL.managedBy]: "spuff",
    [LABEL.kind]: "workspace",
    [LABEL.name]: name,
    [LABEL.owner]: OWNER,
    [LABEL.createdAt]: now,
    [LABEL.requestId]: requestId,
    [LABEL.keep]: String(14 * 86400),
  };
}

describe("hetzner: workspace volumes", { timeout: 30_000 }, () => {
  let fake: HetznerFake;
  const cleanups: (() => void)[] = [];
  afterEach(async () => {
    expect(problems(fake)).toEqual([]);
    await fake.close();
    for (const c of cleanups.splice(0)) c();
  });

  async function setup(opts: { actionDelayMs?: number; location?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Provider> {
    fake = await HetznerFake.start({ ipv4Prefix: "127.0.93.", actionDelayMs: opts.actionDelayMs });
    return providerFor(opts);
  }

  function providerFor(opts: { location?: string; env?: NodeJS.ProcessEnv } = {}): Provider {
    const home = tempHome();
    cleanups.push(home.cleanup);
    writeUserConfig(home.env, stringify({ hetzner: { location: opts.location ?? "fsn1" } }));
    const { config } = loadConfig({ env: home.env, cwd: home.home });
    const stateDir = join(home.home, "state");
    mkdirSync(stateDir, { recursive: true });
    return createProvider({
      config,
      env: { HCLOUD_ENDPOINT: fake.endpoint, HCLOUD_TOKEN: fake.token, HCLOUD_POLL_INTERVAL: "20ms", ...opts.env },
      stateDir,
      cacheDir: join(home.home, "cache"),
      verbose: false,
    }) as Provider;
  }

  function serverSpec(name: string, volume?: Volume, over: Partial<CreateSpec> = {}): CreateSpec {
    const requestId = randomBytes(16).toString("hex");
    return {
      name,
      labels: { [LABEL.managedBy]: "spuff", [LABEL.name]: name, [LABEL.owner]: OWNER, [LABEL.requestId]: requestId },
      userData: "#cloud-config\n",
      publicKey: publicKey(),
      requestId,
      volume,
      ...over,
    };
  }

  const rid = () => randomBytes(16).toString("hex");
  const posts = () => fake.requests.filter((r) => r.method !== "GET").map((r) => `${r.method} ${r.path}`);
  const bodyOf = (method: string, path: string) => fake.requests.find((r) => r.method === method && r.path === path)?.body as Record<string, unknown>;

  it("createVolume: one POST with every label, in the configured location; listed with its size and monthly price", async () => {
    const p = await setup({ actionDelayMs: 150 });
    expect(p.info().features.volumes).toBe(true);
    // Volumes spuff must never report: another tool's, and a spuff-labelled one that is not a workspace.
    fake.volumeApi.seed({ name: "someone-elses", labels: { env: "prod" } });
    fake.volumeApi.seed({ name: "not-a-workspace", labels: { [LABEL.managedBy]: "spuff" } });
    const l = labels("ws", rid());
    const v = await p.createVolume?.({ name: "ws", sizeGiB: 10, labels: l }, recorder());
    expect(v).toMatchObject({ name: "ws", provider: "hetzner", sizeGiB: 10, location: "fsn1", labels: l, pricePerMonth: { amount: 0.524, currency: "EUR" } });
    expect(v?.attachedTo).toBeUndefined();
    const rec = fake.volumes.get(Number(v?.id));
    expect(rec).toMatchObject({ status: "available", server: null, location: "fsn1", size: 10, labels: l });
    // Labels in the create request itself (never a moment without them); no format, no automount, no server.
    expect(fake.count("POST", "/volumes")).toBe(1);
    expect(posts()).toEqual(["POST /volumes"]);
    expect(bodyOf("POST", "/volumes")).toEqual({ name: `spuff-ws-${l[LABEL.requestId].slice(0, 8)}`, size: 10, location: "fsn1", labels: l });

    const listed = await p.listVolumes?.();
    expect(listed?.map((x) => x.id)).toEqual([v?.id]);
    // Found by labels: the list asks for managed-by=spuff,spuff/kind=workspace, never a name.
    const list = fake.requests.find((r) => r.method === "GET" && r.path === "/volumes");
    expect(decodeURIComponent(list?.search ?? "")).toContain("label_selector=managed-by=spuff,spuff/kind=workspace");
    expect(p.volumeDevices?.(v as Volume)).toEqual([`/dev/disk/by-id/scsi-0HC_Volume_${v?.id}`]);
  });

  it("the price is what /pricing says, or null when it cannot be had (never invented)", async () => {
    const p = await setup();
    fake.volumePricePerGbMonth = 0.1;
    const v = await p.createVolume?.({ name: "priced", sizeGiB: 25, labels: labels("priced", rid()) }, recorder());
    expect(v?.pricePerMonth).toEqual({ amount: 2.5, currency: "EUR" });
    fake.inject({ method: "GET", path: "/pricing", status: 403, times: Infinity });
    const other = providerFor();
    expect((await other.listVolumes?.())?.map((x) => x.pricePerMonth)).toEqual([null]);
    fake.clearFaults();
  });

  it("listVolumes reads every page (50 a page) of the label-selected volumes", async () => {
    const p = await setup();
    for (let i = 0; i < 60; i++) fake.volumeApi.seed({ name: `ws-${i}`, labels: labels(`ws-${i}`, rid()) });
    for (let i = 0; i < 5; i++) fake.volumeApi.seed({ name: `other-${i}`, labels: { env: "prod" } });
    const all = await p.listVolumes?.();
    expect(all?.map((v) => v.name)).toEqual(Array.from({ length: 60 }, (_, i) => `ws-${i}`));
    expect(fake.requests.filter((r) => r.method === "GET" && r.path === "/volumes").map((r) => new URLSearchParams(r.search).get("page"))).toEqual(["1", "2"]);
  });

  it("a size Hetzner does not sell: a UserError before any request", async () => {
    const p = await setup();
    const err = await p.createVolume?.({ name: "tiny", sizeGiB: 5, labels: labels("tiny", rid()) }, recorder()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toBe("workspace.size is 5 GiB: Hetzner volumes are 10 to 10240 GB");
    expect(fake.requests).toEqual([]);
  });

  it("create({volume}): POST /servers attaches it (automount off) in its location; destroy detaches and keeps it; then it is deleted", async () => {
    const p = await setup({ actionDelayMs: 150 });
    const v = (await p.createVolume?.({ name: "box", sizeGiB: 10, labels: labels("box", rid()) }, recorder())) as Volume;
    const vm = await p.create(serverSpec("box", v), recorder());
    const body = bodyOf("POST", "/servers");
    expect(body).toMatchObject({ volumes: [Number(v.id)], automount: false, location: "fsn1" });
    expect(fake.volumes.get(Number(v.id))).toMatchObject({ server: Number(vm.id), automount: false });
    const [server] = await (await fetch(`${fake.endpoint}/servers/${vm.id}`, { headers: { Authorization: `Bearer ${fake.token}` } })).json().then((j) => [j.server]);
    expect(server.volumes).toEqual([Number(v.id)]);
    expect((await p.listVolumes?.())?.map((x) => x.attachedTo)).toEqual([vm.id]);

    // Deleting an attached volume is refused, and nothing is sent that deletes.
    const refused = await p.deleteVolume?.(v, recorder()).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ProviderError);
    expect((refused as ProviderError).message).toBe(`the workspace volume of box (Hetzner volume ${v.id}) is attached to server ${vm.id}; nothing was deleted`);
    expect((refused as ProviderError).hints.join("\n")).toContain("`spuff down box` destroys the VM and keeps the volume; then `spuff down box --purge` deletes it");
    expect(fake.count("DELETE", `/volumes/${v.id}`)).toBe(0);

    await p.destroy(vm, recorder());
    // destroy returned after the delete action: the volume is already detached, and kept.
    expect(fake.servers.size).toBe(0);
    expect(fake.volumes.get(Number(v.id))).toMatchObject({ server: null, labels: v.labels });
    expect((await p.listVolumes?.())?.map((x) => [x.id, x.attachedTo])).toEqual([[v.id, undefined]]);
    expect(fake.count("DELETE", `/volumes/${v.id}`)).toBe(0);

    // The next server gets the SAME volume back.
    const again = await p.create(serverSpec("box", v), recorder());
    expect(fake.volumes.get(Number(v.id))?.server).toBe(Number(again.id));
    await p.destroy(again, recorder());

    const progress = recorder();
    await p.deleteVolume?.(v, progress);
    expect(fake.volumes.size).toBe(0);
    expect(progress.infos).toContain(`deleted workspace volume spuff-box-${v.labels[LABEL.requestId].slice(0, 8)} (10 GB, id ${v.id})`);
    // Already gone is success.
    await p.deleteVolume?.(v, recorder());
  });

  it("reapOrphans never deletes a kept workspace volume", async () => {
    const p = await setup();
    await p.createVolume?.({ name: "kept", sizeGiB: 10, labels: labels("kept", rid()) }, recorder());
    expect(await p.reapOrphans?.(false, recorder())).toEqual([]);
    expect(fake.volumes.size).toBe(1);
    expect(fake.requests.filter((r) => r.method === "DELETE")).toEqual([]);
  });

  it("deleteVolume waits out a volume locked by its create action (423) and 409 conflicts, within a bound", async () => {
    const p = await setup({ actionDelayMs: 800, env: { SPUFF_HETZNER_LOCKED_TIMEOUT: "10s" } });
    const l = labels("locked", rid());
    // Created behind spuff's back (raw API): its create_volume action runs for 800 ms.
    const res = await fetch(`${fake.endpoint}/volumes`, {
      method: "POST",
      headers: { Authorization: `Bearer ${fake.token}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "locked-vol", size: 10, location: "fsn1", labels: l }),
    });
    expect(res.status).toBe(201);
    const id = String((await res.json()).volume.id);
    const [v] = (await p.listVolumes?.()) ?? [];
    expect(v.id).toBe(id);
    await p.deleteVolume?.(v, recorder());
    const statuses = fake.requests.filter((r) => r.method === "DELETE" && r.path === `/volumes/${id}`).map((r) => r.status);
    expect(statuses[0]).toBe(423);
    expect(statuses.at(-1)).toBe(204);
    expect(fake.volumes.size).toBe(0);

    const w = (await p.createVolume?.({ name: "conflict", sizeGiB: 10, labels: labels("conflict", rid()) }, recorder())) as Volume;
    fake.inject({ method: "DELETE", path: `/volumes/${w.id}`, status: 409, times: 2 });
    await p.deleteVolume?.(w, recorder());
    expect(fake.requests.filter((r) => r.method === "DELETE" && r.path === `/volumes/${w.id}`).map((r) => r.status)).toEqual([409, 409, 204]);
    expect(fake.volumes.size).toBe(0);
  });

  it("a volume locked for longer than SPUFF_HETZNER_LOCKED_TIMEOUT: a clear error, nothing deleted", async () => {
    const p = await setup({ env: { SPUFF_HETZNER_LOCKED_TIMEOUT: "1s" } });
    const v = (await p.createVolume?.({ name: "stuck", sizeGiB: 10, labels: labels("stuck", rid()) }, recorder())) as Volume;
    fake.inject({ method: "DELETE", path: `/volumes/${v.id}`, status: 423, times: Infinity });
    const t = Date.now();
    const err = await p.deleteVolume?.(v, recorder()).catch((e: unknown) => e);
    expect(Date.now() - t).toBeLessThan(5000);
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).message).toMatch(new RegExp(`^the workspace volume of stuck \\(Hetzner volume ${v.id}\\) is still locked by a running Hetzner action after [12] s$`));
    expect((err as ProviderError).hints).toEqual(["run `spuff down stuck --purge` again in a minute", "SPUFF_HETZNER_LOCKED_TIMEOUT waits longer (default 2m)"]);
    expect(fake.volumes.size).toBe(1);
    fake.clearFaults();
  });

  it("deleteVolume never deletes a volume that is not labelled as a spuff workspace, whatever id it is handed", async () => {
    const p = await setup();
    const foreign = fake.volumeApi.seed({ name: "database", labels: { env: "prod" } });
    const err = await p
      .deleteVolume?.({ id: String(foreign.id), name: "database", provider: "hetzner", sizeGiB: 10, labels: {} }, recorder())
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as Error).message).toContain(`Hetzner volume ${foreign.id} is not labelled as a spuff workspace`);
    expect(fake.volumes.has(foreign.id)).toBe(true);
    // Ids are checked before they go into a URL or a device path.
    const bad = { id: "1/../../servers/2", name: "x", provider: "hetzner", sizeGiB: 10, labels: {} };
    await expect(p.deleteVolume?.(bad, recorder())).rejects.toThrow(/invalid id/);
    expect(() => p.volumeDevices?.(bad)).toThrow(/invalid id/);
    expect(fake.requests.filter((r) => r.method === "DELETE")).toEqual([]);
  });

  it("a volume in another location than asked: a UserError naming both and the fix, before any request that creates", async () => {
    const p = await setup();
    const v = (await p.createVolume?.({ name: "far", sizeGiB: 10, labels: labels("far", rid()), location: "nbg1" }, recorder())) as Volume;
    expect(v.location).toBe("nbg1");
    const before = posts().length;

    // The configured location (fsn1) differs.
    const configured = await p.create(serverSpec("far", v), recorder()).catch((e: unknown) => e);
    expect(configured).toBeInstanceOf(UserError);
    expect((configured as UserError).message).toBe(
      `the workspace of far is in nbg1 (Hetzner volume ${v.id}), but hetzner.location is fsn1: a volume attaches only to a server in its own location`,
    );
    expect((configured as UserError).hints).toEqual([
      "`spuff up far --location nbg1` brings the workspace back where it is",
      "or `spuff down far --purge` deletes the old workspace (and the work on it), and the next `spuff up far` starts empty in fsn1",
    ]);
    // The requested location (--location hel1) differs.
    const requested = await p.create(serverSpec("far", v, { location: "hel1" }), recorder()).catch((e: unknown) => e);
    expect((requested as UserError).message).toContain("is in nbg1 (Hetzner volume");
    expect((requested as UserError).message).toContain("but --location hel1:");
    expect(posts().length).toBe(before);
    expect(fake.servers.size + fake.sshKeys.size).toBe(0);

    // --location nbg1: the server goes where the volume is.
    const vm = await p.create(serverSpec("far", v, { location: "nbg1" }), recorder());
    expect(vm.location).toBe("nbg1");
    expect(fake.volumes.get(Number(v.id))?.server).toBe(Number(vm.id));
    await p.destroy(vm, recorder());
  });

  it("the fake answers as the API does: cross-location attach, attached delete, sizes, automount without server", async () => {
    await setup();
    const call = async (method: string, path: string, body?: unknown) => {
      const r = await fetch(`${fake.endpoint}${path}`, {
        method,
        headers: { Authorization: `Bearer ${fake.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      return { status: r.status, body: text ? JSON.parse(text) : undefined };
    };
    const key = await call("POST", "/ssh_keys", { name: "k", public_key: publicKey() });
    const vol = await call("POST", "/volumes", { name: "v1", size: 10, location: "nbg1" });
    expect(vol.status).toBe(201);
    expect(vol.body.volume.linux_device).toBe(`/dev/disk/by-id/scsi-0HC_Volume_${vol.body.volume.id}`);
    const srv = { name: "s1", server_type: "cx22", image: "debian-12", ssh_keys: [String(key.body.ssh_key.id)] };
    const cross = await call("POST", "/servers", { ...srv, location: "fsn1", volumes: [vol.body.volume.id] });
    expect(cross.status).toBe(422);
    expect(cross.body.error.details.fields[0].messages[0]).toContain("server and volume must be in the same location");
    expect(fake.servers.size).toBe(0);
    const s = await call("POST", "/servers", { ...srv, location: "fsn1" });
    const attach = await call("POST", `/volumes/${vol.body.volume.id}/actions/attach`, { server: s.body.server.id });
    expect(attach.status).toBe(422);
    const ok = await call("POST", "/servers", { ...srv, name: "s2", location: "nbg1", volumes: [vol.body.volume.id], automount: false });
    expect(ok.status).toBe(201);
    expect(ok.body.server.volumes).toEqual([vol.body.volume.id]);
    expect(ok.body.next_actions.map((a: { command: string }) => a.command)).toContain("attach_volume");
    const del = await call("DELETE", `/volumes/${vol.body.volume.id}`);
    expect(del).toEqual({ status: 422, body: { error: { code: "service_error", message: `volume with ID '${vol.body.volume.id}' is still attached to a server`, details: null } } });
    const twice = await call("POST", `/volumes/${vol.body.volume.id}/actions/attach`, { server: ok.body.server.id });
    expect(twice.body.error.code).toBe("volume_already_attached");
    const detach = await call("POST", `/volumes/${vol.body.volume.id}/actions/detach`);
    expect(detach.status).toBe(201);
    expect((await call("GET", `/volumes/${vol.body.volume.id}`)).body.volume.server).toBeNull();
    expect((await call("POST", "/volumes", { name: "small", size: 9, location: "fsn1" })).status).toBe(422);
    expect((await call("POST", "/volumes", { name: "am", size: 10, location: "fsn1", automount: true })).status).toBe(422);
    expect((await call("POST", "/volumes", { name: "v1", size: 10, location: "fsn1" })).body.error.code).toBe("uniqueness_error");
    expect((await call("GET", "/pricing")).body.pricing.volume.price_per_gb_month.gross).toBe("0.0524000000");
  });

  it("Ctrl-C during createVolume (its answer on the way): the volume was labelled from the start, and is deleted", async () => {
    const p = await setup({ actionDelayMs: 300 });
    fake.inject({ method: "POST", path: "/volumes", when: "after", delayMs: 2000 });
    const ac = new AbortController();
    const l = labels("intr", rid());
    const seen: Record<string, string>[] = [];
    fake.events.on("volume-created", ({ id }: { id: number }) => {
      const rec = fake.volumes.get(id);
      if (rec) seen.push({ ...rec.labels });
    });
    const creating = p.createVolume?.({ name: "intr", sizeGiB: 10, labels: l, signal: ac.signal }, recorder());
    await once(fake.events, "volume-created");
    ac.abort(new Error("interrupted"));
    await expect(creating).rejects.toThrow("interrupted");
    await fake.settled();
    // Every volume that ever existed carried the labels at creation; this request's one is gone again.
    expect(seen).toEqual([l]);
    expect(fake.volumes.size).toBe(0);
    // The delete had to wait for the create action (423), then succeeded.
    const deletes = fake.requests.filter((r) => r.method === "DELETE" && r.path.startsWith("/volumes/")).map((r) => r.status);
    expect(deletes[0]).toBe(423);
    expect(deletes.at(-1)).toBe(204);
  });

  it("Ctrl-C during create({volume}): the server goes, the volume that existed before stays, detached, labels untouched", async () => {
    const p = await setup({ actionDelayMs: 500 });
    const v = (await p.createVolume?.({ name: "keep", sizeGiB: 10, labels: labels("keep", rid()) }, recorder())) as Volume;
    const ac = new AbortController();
    const creating = p.create(serverSpec("keep", v, { signal: ac.signal }), recorder());
    await once(fake.events, "server-created");
    ac.abort(new Error("interrupted"));
    await expect(creating).rejects.toThrow("interrupted");
    await fake.settled();
    expect(fake.servers.size + fake.sshKeys.size).toBe(0);
    expect([...fake.volumes.values()].map((x) => [String(x.id), x.server, x.labels])).toEqual([[v.id, null, v.labels]]);
    expect(fake.requests.filter((r) => r.method === "DELETE" && r.path.startsWith("/volumes/"))).toEqual([]);
  });
});
