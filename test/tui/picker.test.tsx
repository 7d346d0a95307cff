import { existsSync } from "node:fs";
import { join } from "node:path";
import { render } from "ink-testing-library";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LABEL } from "../../src/core/labels.js";
import { StateStore, stateDir } from "../../src/core/state.js";
import { workspaceLabels } from "../../src/core/workspace.js";
import { DROP_ORDER } from "../../src/tui/columns.js";
import { Picker, type PickerAction } from "../../src/tui/picker.js";
import { KeyRoot } from "../../src/tui/widgets.js";
import { tempHome } from "../helpers/cli.js";
import { type Harness, harness, problems } from "../providers/hetzner/harness.js";
import { dialogText, frame, goneRecords, has, KEY, plain, type Rendered, servicesFor, stoppedLocalVm } from "./helpers.js";


const selected = (f: string) => f.split("\n").find((l) => l.startsWith("› "))?.split(/\s+/)[1];

describe("picker on the local provider's state", () => {
  let home: ReturnType<typeof tempHome>;
  let r: Rendered | undefined;
  const actions: PickerAction[] = [];
  beforeEach(() => {
    home = tempHome();
    actions.length = 0;
  });
  afterEach(() => {
    r?.unmount();
    r = undefined;
    home.cleanup();
  });

  async function picker(width = 100, refreshMs = 60_000) {
    const services = await servicesFor(home.env, home.home);
    r = render(<KeyRoot><Picker services={services} onAction={(a) => actions.push(a)} width={width} height={30} refreshMs={refreshMs} /></KeyRoot>);
    return r;
  }

  it("shows loading, then every VM with its columns; narrow terminals drop columns in the documented order", async () => {
    await stoppedLocalVm(home.env, "web", { ageHours: 3, ttlHours: 24 });
    await stoppedLocalVm(home.env, "api", { ageHours: 30, ttlHours: 24 });
    goneRecords(home.env, "old", 1);
    const p = await picker(140);
    expect(plain(p.frames[0])).toContain("loading VMs from local");
    const f = await frame(p, has("web"));
    const lines = f.split("\n");
    expect(lines[0]).toBe("spuff · 3 VMs · local");
    expect(lines[1]).toMatch(/^ {2}NAME\s+STATUS\s+PROVIDER\s+LOCATION\s+SIZE\s+ADDRESS\s+AGE\s+TTL\s+PRICE\/H\s+COST$/);
    expect(lines[2]).toMatch(/^› api\s+stopped \(idle\)\s+local\s+localhost\s+2cpu-2g-tcg\s+127\.0\.0\.1:2222\s+1d6h\s+-6h0m\s+€0\.0000\s+€0\.0000$/);
    expect(lines[3]).toMatch(/^ {2}old-vm0\s+gone\s+local\s+-\s+-\s+-\s+\d+s\s+-\s+-\s+-$/);
    expect(lines[4]).toMatch(/^ {2}web\s+stopped \(idle\)\s+local\s+localhost\s+2cpu-2g-tcg\s+127\.0\.0\.1:2222\s+3h0m\s+20h59m\s+€0\.0000\s+€0\.0000$/);
    // A stopped local VM costs nothing and is kept (s starts it); only the expired one and the gone record are reaped.
    expect(f).toContain("2 need reaping (api: expired, old-vm0: gone): `spuff reap`");
    expect(f).toContain("↑↓ move  enter shell  n new  s start  d destroy  e extend  r refresh  / filter  ? help  q quit");
    p.unmount();

    // 80 columns: ADDRESS, AGE and LOCATION go first; every line fits.
    const narrow = await picker(80);
    const n = await frame(narrow, has("web"));
    expect(n.split("\n")[1]).toMatch(/^ {2}NAME\s+STATUS\s+PROVIDER\s+SIZE\s+TTL\s+PRICE\/H\s+COST$/);
    for (const line of n.split("\n")) expect(line.length).toBeLessThanOrEqual(80);
    narrow.unmount();

    // 36 columns: only what never goes is left.
    const tiny = await picker(36);
    const t = await frame(tiny, has("web"));
    expect(t.split("\n")[1]).toMatch(/^ {2}NAME\s+STATUS\s+TTL$/);
    expect(DROP_ORDER).toEqual(["ADDRESS", "AGE", "LOCATION", "SIZE", "PRICE/H", "PROVIDER", "COST"]);
  });

  it("says how to start when there are no VMs", async () => {
    const p = await picker();
    const f = await frame(p, has("no VMs"));
    expect(f).toContain("no VMs — press n to create one");
    p.stdin.write("n");
    await vi.waitFor(() => expect(actions).toEqual([{ kind: "new" }]));
  });

  it("moves with ↑/↓ and j/k, filters with /, shows help with ?, quits with q and esc", async () => {
    for (const n of ["alpha", "bravo", "charlie"]) await stoppedLocalVm(home.env, n);
    const p = await picker();
    await frame(p, has("charlie"));
    expect(selected(plain(p.lastFrame()))).toBe("alpha");
    p.stdin.write("j");
    expect(selected(await frame(p, (f) => selected(f) === "bravo"))).toBe("bravo");
    p.stdin.write(KEY.down);
    await frame(p, (f) => selected(f) === "charlie");
    p.stdin.write(KEY.down); // stays on the last row
    p.stdin.write("k");
    await frame(p, (f) => selected(f) === "bravo");
    p.stdin.write(KEY.up);
    await frame(p, (f) => selected(f) === "alpha");
    // Two keys in one chunk both count.
    p.stdin.write("jj");
    await frame(p, (f) => selected(f) === "charlie");

    p.stdin.write("/");
    await frame(p, has("name, provider, status, location or size"));
    p.stdin.write("rav");
    const filtered = await frame(p, has('filter "rav"'));
    expect(filtered).toMatch(/^› bravo\s/m);
    expect(filtered).not.toMatch(/^[› ] charlie\s/m);
    expect(filtered.split("\n")[0]).toBe('spuff · 3 VMs · local · filter "rav"');
    p.stdin.write(KEY.enter);
    await frame(p, has("↑↓ move"));
    expect(selected(plain(p.lastFrame()))).toBe("bravo");
    // "/" opens the filter with its current text; ctrl-u clears it, all in one chunk.
    p.stdin.write("/\u0015zzz\r");
    await frame(p, has('no VM matches "zzz" — esc clears the filter'));
    p.stdin.write(KEY.esc); // clears the filter, does not quit
    await frame(p, (f) => /^[› ] alpha\s/m.test(f) && /^[› ] charlie\s/m.test(f));
    expect(actions).toEqual([]);

    p.stdin.write("?");
    const help = await frame(p, has("spuff — keys"));
    expect(help).toContain("open a shell on the VM (spuff ssh NAME)");
    expect(help).toContain("Narrow terminals drop columns in this order: ADDRESS, AGE, LOCATION, SIZE, PRICE/H, PROVIDER, COST.");
    p.stdin.write("x");
    await frame(p, has("↑↓ move"));

    p.stdin.write("q");
    await vi.waitFor(() => expect(actions).toEqual([{ kind: "quit" }]));
    p.stdin.write(KEY.esc);
    await vi.waitFor(() => expect(actions).toEqual([{ kind: "quit" }, { kind: "quit" }]));
  });

  it("destroys only after y in a dialog that names the VM", async () => {
    await stoppedLocalVm(home.env, "keep");
    await stoppedLocalVm(home.env, "web");
    const state = new StateStore(stateDir(home.env));
    const p = await picker();
    await frame(p, has("web"));
    p.stdin.write("j");
    await frame(p, (f) => selected(f) === "web");

    p.stdin.write("d");
    const dialog = await frame(p, has("[y/N]"));
    expect(dialog).toContain("Destroy web (local, localhost, 2cpu-2g-tcg)? This deletes the VM and its disk.");
    // The local provider has no workspace volumes here, and a stopped VM cannot be asked for unsaved work.
    expect(dialogText(dialog)).toContain("It has no workspace volume: what is on its disk goes with it (not checked for unsaved git work: it is stopped (idle)).");
    p.stdin.write("n");
    await frame(p, has("nothing destroyed"));
    expect(state.read("web")).toBeDefined();
    expect(existsSync(join(stateDir(home.env), "local", "web"))).toBe(true);

    p.stdin.write("d");
    await frame(p, has("[y/N]"));
    p.stdin.write("y");
    const after = await frame(p, has("destroyed web"));
    expect(after).toContain("destroyed web (cost €0.0000)");
    await frame(p, (f) => !/^[› ] web\s/m.test(f) && f.includes("1 VM"));
    expect(state.read("web")).toBeUndefined();
    expect(existsSync(join(stateDir(home.env), "local", "web"))).toBe(false);
    expect(state.read("keep")).toBeDefined();
  });

  it("a stopped VM's workspace volume is kept by destroy and becomes a row; d on it deletes its disk", async () => {
    const services = await servicesFor(home.env, home.home);
    const local = await services.app.provider("local");
    const quiet = { phase() {}, info() {}, warn() {} };
    const labels = workspaceLabels({ name: "web", owner: "testowner0001", requestId: "rweb", now: new Date(), keepSeconds: 14 * 86400 });
    const vol = await local.createVolume?.({ name: "web", sizeGiB: 1, labels }, quiet);
    if (!vol) throw new Error("the local provider made no volume");
    await stoppedLocalVm(home.env, "web", { workspace: vol.id });
    const disk = join(stateDir(home.env), "local-workspaces", vol.id, "disk.qcow2");
    expect(existsSync(disk)).toBe(true);
    r = render(<KeyRoot><Picker services={services} onAction={(a) => actions.push(a)} width={100} height={30} refreshMs={60_000} /></KeyRoot>);
    // Attached: the VM is the row, the volume is not listed as kept.
    const f = await frame(r, has("web"));
    expect(f.split("\n")[0]).toBe("spuff · 1 VM · local");
    expect(f).not.toContain("KEPT WORKSPACE");

    r.stdin.write("d");
    const dialog = dialogText(await frame(r, has("[y/N]")));
    expect(dialog).toContain(`Its workspace volume ${vol.id} (1 GiB, €0.0000/month) is kept: ~/work comes back with the next \`spuff up web\`.`);
    r.stdin.write("y");
    const after = await frame(r, has("KEPT WORKSPACE"));
    expect(after).toContain(`kept the workspace volume ${vol.id} (1 GiB, €0.0000/month)`);
    expect(after).toMatch(/^› web\s+local\s+localhost\s+1G\s+just now\s+€0\.0000\s+13d23h$/m);
    expect(existsSync(join(stateDir(home.env), "local", "web"))).toBe(false);
    expect(existsSync(disk)).toBe(true);
    const [kept] = (await local.listVolumes?.()) ?? [];
    expect(kept.id).toBe(vol.id);
    expect(kept.attachedTo).toBeUndefined();
    expect(Number(kept.labels[LABEL.detachedAt])).toBeGreaterThan(0);

    r.stdin.write("d");
    const del = dialogText(await frame(r, has("y delete")));
    expect(del).toContain(`Delete the kept workspace of web (local volume ${vol.id}, 1 GiB, €0.0000/month)? Its work is gone for good.`);
    r.stdin.write("y");
    await frame(r, has(`deleted the workspace volume ${vol.id} of web (local)`));
    await frame(r, has("no VMs — press n to create one"));
    expect(existsSync(join(stateDir(home.env), "local-workspaces", vol.id))).toBe(false);
  });

  it("extend asks for a duration and shows the provider's refusal with its hint; enter on a stopped VM explains", async () => {
    await stoppedLocalVm(home.env, "web");
    const p = await picker();
    await frame(p, has("web"));
    p.stdin.write("e");
    await frame(p, has("Extend the TTL of web (now 21h59m) by:"));
    p.stdin.write("4h");
    await frame(p, has("by: 4h"));
    p.stdin.write(KEY.enter);
    const refused = await frame(p, has("not running"));
    expect(refused).toContain("error: web is stopped, not running: its TTL cannot be extended");
    expect(refused).toContain("hint: boot it again first: `spuff start web`");

    p.stdin.write("e");
    await frame(p, has("Extend the TTL"));
    p.stdin.write("soon\r");
    const bad = await frame(p, has('invalid duration "soon"'));
    expect(bad).toContain('hint: use e.g. "30m", "4h", "1h30m", "2d"');

    p.stdin.write(KEY.enter);
    const noShell = await frame(p, has("there is no shell to open"));
    expect(noShell).toContain("error: web is stopped (idle): there is no shell to open");
    expect(noShell).toContain("hint: press s to start it again with its disk");
    expect(actions).toEqual([]);
  });

  it("s starts a stopped VM; what the provider refuses shows with its hint, and the VM is kept", async () => {
    await stoppedLocalVm(home.env, "web", { console: "[   40.2] systemd[1]: Started ssh.service\n" });
    const p = await picker();
    const f = await frame(p, has("web"));
    expect(f).toMatch(/^› web\s+stopped \(host restarted\)\s+local/m);
    p.stdin.write("s");
    // This machine has no base image for the VM's kernel: the local provider says so, and how to get one.
    const refused = await frame(p, has("no local VM image of Debian 13 (trixie) (local.image: debian-13) yet"));
    expect(refused).toContain("error: no local VM image of Debian 13 (trixie) (local.image: debian-13) yet");
    expect(refused).toContain("hint: download Debian's official cloud image");
    expect(existsSync(join(stateDir(home.env), "local", "web", "meta.json"))).toBe(true);
    expect(new StateStore(stateDir(home.env)).read("web")?.upPid).toBeUndefined();
  });

  it("refreshes by itself: a VM created elsewhere appears without a key press", async () => {
    await stoppedLocalVm(home.env, "first");
    const p = await picker(100, 200);
    await frame(p, has("first"));
    await stoppedLocalVm(home.env, "second");
    const f = await frame(p, has("second"));
    expect(f.split("\n")[0]).toBe("spuff · 2 VMs · local");
  });
});

describe("picker on the Hetzner fake", () => {
  let h: Harness;
  let r: Rendered | undefined;
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.78.", standin: false });
  });
  afterEach(async () => {
    r?.unmount();
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  it("a rejected token shows the message and hint, not a crash; r retries", async () => {
    const services = await servicesFor({ ...h.env, HCLOUD_TOKEN: "wrong-token" }, h.home.home, { provider: "hetzner" });
    r = render(<KeyRoot><Picker services={services} onAction={() => {}} width={100} height={30} refreshMs={60_000} /></KeyRoot>);
    const f = await frame(r, has("cannot list VMs"));
    expect(f).toContain("cannot list VMs: the Hetzner API rejected the token (401 unauthorized");
    expect(f).toMatch(/hint: create a token in the Hetzner Cloud Console/);
    expect(f).toContain("r retries · n creates a VM with another provider · q quits");
    const before = h.fake.requests.length;
    r.stdin.write("r");
    await vi.waitFor(() => expect(h.fake.requests.length).toBeGreaterThan(before));
    await frame(r, has("cannot list VMs"));
  });

  it("lists running servers with price and cost, and enter asks to open a shell on the selected one", async () => {
    h.fake.seedServers(2, { namePrefix: "box", labels: (i) => ({ "managed-by": "spuff", "spuff/name": `box-${i + 1}`, "spuff/owner": "testowner0001" }) });
    const actions: PickerAction[] = [];
    const services = await servicesFor(h.env, h.home.home, { provider: "hetzner" });
    r = render(<KeyRoot><Picker services={services} onAction={(a) => actions.push(a)} width={120} height={30} refreshMs={60_000} /></KeyRoot>);
    const f = await frame(r, has("box-2"));
    expect(f.split("\n")[0]).toBe("spuff · 2 VMs · hetzner");
    expect(f).toMatch(/^› box-1\s+running\s+hetzner\s+fsn1\s+cx22\s+127\.0\.78\.\d+:22\s+\S+\s+-\s+€0\.0071\s+€0\.0071$/m);
    r.stdin.write("j\r");
    await vi.waitFor(() => expect(actions.map((a) => (a.kind === "shell" ? a.vm.name : a.kind))).toEqual(["box-2"]));
  });

  it("destroying another owner's server asks with its owner named; any key but y keeps it", async () => {
    const [id] = h.fake.seedServers(1, { namePrefix: "team", labels: () => ({ "managed-by": "spuff", "spuff/name": "team-1", "spuff/owner": "teammate0005" }) });
    const services = await servicesFor(h.env, h.home.home, { provider: "hetzner" });
    r = render(<KeyRoot><Picker services={services} onAction={() => {}} width={120} height={30} refreshMs={60_000} /></KeyRoot>);
    await frame(r, has("team-1"));
    r.stdin.write("d");
    const dialog = await frame(r, has("[y/N]"));
    expect(dialog).toContain(`Destroy team-1 (hetzner, fsn1, cx22, id ${id})? This deletes the VM and its disk.`);
    expect(dialog).toContain("It is not this machine's: it belongs to owner teammate0005.");
    expect(dialogText(dialog)).toContain("(not checked for unsaved git work: this machine has no key to log in to it)");
    r.stdin.write("n");
    await frame(r, has("nothing destroyed"));
    expect(h.fake.servers.size).toBe(1);
  });
});
