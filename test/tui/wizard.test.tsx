import { render } from "ink-testing-library";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { workspaceLabels } from "../../src/core/workspace.js";
import { CreateView } from "../../src/tui/create.js";
import type { CreateRequest } from "../../src/tui/services.js";
import { KeyRoot } from "../../src/tui/widgets.js";
import { Wizard } from "../../src/tui/wizard.js";
import { type Harness, harness, problems } from "../providers/hetzner/harness.js";
import { frame, has, KEY, type Rendered, servicesFor } from "./helpers.js";


const cursorLine = (f: string) => f.split("\n").find((l) => l.startsWith("› ")) ?? "";
const money = (s: string) => Number(s.replace("€", ""));

// The wizard and the create view on the real App against the Hetzner fake (catalog from /locations, /server_types,
// /pricing); stand-in sshds on 127.0.79.N for the VM the create view makes.
describe("create wizard and progress", () => {
  let h: Harness;
  let r: Rendered | undefined;
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.79.", config: { provider: "hetzner" } });
  });
  afterEach(async () => {
    r?.unmount();
    r = undefined;
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  async function wizard() {
    const services = await servicesFor(h.env, h.home.home);
    const created: CreateRequest[] = [];
    let cancelled = 0;
    r = render(
      <KeyRoot>
        <Wizard services={services} onCancel={() => cancelled++} onCreate={(req) => created.push(req)} width={100} height={30} />
      </KeyRoot>,
    );
    return { r, created, cancelled: () => cancelled };
  }

  it("provider → location → size (prices, availability) → name (validated) → summary with the estimate → create", async () => {
    const w = await wizard();
    const providers = await frame(w.r, has("(configured)"));
    expect(providers.split("\n")[0]).toBe("New VM · Provider");
    expect(cursorLine(providers)).toMatch(/^› hetzner\s+Hetzner Cloud.*\(configured\)$/);
    expect(providers).toMatch(/^ {2}local\s+/m);
    expect(providers).toMatch(/^ {2}aws\s+/m);
    w.r.stdin.write(KEY.enter);

    const locations = await frame(w.r, (f) => cursorLine(f).includes("(default)"));
    expect(cursorLine(locations)).toMatch(/^› fsn1\s+Falkenstein, DE \(eu-central\)\s+\d+ sizes {2}\(default\)$/);
    expect(locations).toMatch(/^ {2}sin\s+Singapore, SG \(ap-southeast\)\s+\d+ sizes$/m);
    // Down to Singapore (the last location), where the EU-only sizes are not sold.
    for (let i = 0; i < 5; i++) w.r.stdin.write(KEY.down);
    await frame(w.r, (f) => cursorLine(f).startsWith("› sin"));
    w.r.stdin.write(KEY.enter);

    const sizes = await frame(w.r, has("IN sin"));
    expect(sizes).toMatch(/SIZE\s+VCPU\s+RAM\s+DISK\s+PRICE\/H\s+MONTH\s+IN sin/);
    const rows = sizes.split("\n").filter((l) => /^[› ] \w+\s+\d+\s+\d+G/.test(l));
    const kinds = rows.map((l) => (l.endsWith("not here") ? "not here" : "here"));
    // Sold here first, cheapest first; then the ones not sold here.
    expect(kinds.indexOf("not here")).toBeGreaterThan(0);
    expect(kinds.slice(kinds.indexOf("not here")).every((k) => k === "not here")).toBe(true);
    const hereHourly = rows.filter((l) => !l.endsWith("not here")).map((l) => money(l.trim().split(/\s+/)[5]));
    expect(hereHourly).toEqual([...hereHourly].sort((a, b) => a - b));
    expect(rows.find((l) => /^[› ] cx22\s/.test(l))).toMatch(/not here$/);

    // Choosing a size that is not sold here says where it is.
    const firstMissing = kinds.indexOf("not here");
    for (let i = 0; i < firstMissing; i++) w.r.stdin.write(KEY.down);
    await frame(w.r, (f) => cursorLine(f).endsWith("not here"));
    w.r.stdin.write(KEY.enter);
    const refused = await frame(w.r, has("is not available in sin"));
    expect(refused).toMatch(/hint: it is available in [a-z0-9, ]+/);
    w.r.stdin.write(KEY.up);
    const chosen = cursorLine(await frame(w.r, (f) => /available$/.test(cursorLine(f)))).trim().split(/\s+/)[1];
    w.r.stdin.write(KEY.enter);

    const name = await frame(w.r, has("New VM · Name"));
    expect(name.split("\n")[0]).toBe(`New VM · Name · hetzner › sin › ${chosen}`);
    expect(name).toMatch(/Name: spuff-[a-z]+-[a-z]+/);
    w.r.stdin.write(`${KEY.ctrlU}Bad Name${KEY.enter}`);
    await frame(w.r, has('invalid VM name "Bad Name"'));
    w.r.stdin.write(`${KEY.ctrlU}web-1${KEY.enter}`);

    const summary = await frame(w.r, has("New VM · Summary"));
    expect(summary).toMatch(/name {5}web-1/);
    expect(summary).toMatch(/location sin — Singapore/);
    expect(summary).toMatch(new RegExp(`size {5}${chosen} — \\d+ vCPU, \\d+ GB RAM, \\d+ GB disk`));
    expect(summary).toMatch(/TTL {6}24h \(config idle\.ttl\)/);
    const price = /price {4}€([\d.]+) per hour, capped at €([\d.]+) per month/.exec(summary);
    const est = /estimate at most €([\d.]+) if it runs its whole 24h TTL/.exec(summary);
    expect(price && est).toBeTruthy();
    const [hourly, monthly] = [Number(price?.[1]), Number(price?.[2])];
    expect(Number(est?.[1])).toBeCloseTo(Math.min(hourly * 24, monthly), 2);
    // ~/work: Hetzner VMs get a workspace volume (workspace.volume defaults to true).
    await frame(w.r, has("~/work   a new 10 GiB workspace volume, kept by `spuff down` (--purge deletes it)"));

    // A name with a kept workspace of this machine: up attaches it, and only where the volume is.
    const kept = h.fake.volumeApi.seed({ name: "kept-1", location: "fsn1", labels: workspaceLabels({ name: "kept-1", owner: "testowner0001", requestId: "rkept", now: new Date(), keepSeconds: 86400 }) });
    w.r.stdin.write(KEY.esc);
    await frame(w.r, (f) => f.includes("New VM · Name") && f.includes("web-1"));
    w.r.stdin.write(`${KEY.ctrlU}kept-1${KEY.enter}`);
    await frame(w.r, has(`~/work   its kept workspace volume ${kept.id} is in fsn1, not sin: esc back to fsn1 (or up is refused)`));
    w.r.stdin.write(KEY.esc);
    await frame(w.r, (f) => f.includes("New VM · Name") && f.includes("kept-1"));
    w.r.stdin.write(`${KEY.ctrlU}web-1${KEY.enter}`);
    await frame(w.r, (f) => f.includes("New VM · Summary") && f.includes("a new 10 GiB workspace volume"));

    // Esc goes back a step, keeping what was typed.
    w.r.stdin.write(KEY.esc);
    await frame(w.r, (f) => f.includes("New VM · Name") && f.includes("web-1"));
    w.r.stdin.write(KEY.enter);
    await frame(w.r, has("New VM · Summary"));
    expect(w.created).toEqual([]);
    w.r.stdin.write(KEY.enter);
    await vi.waitFor(() => expect(w.created).toEqual([{ provider: "hetzner", name: "web-1", size: chosen, location: "sin" }]));
    expect(h.fake.servers.size).toBe(0); // the wizard only asks; the create view creates
  });

  it("a provider without a catalog goes straight to the name; esc walks back to the start and out", async () => {
    const w = await wizard();
    await frame(w.r, has("(configured)"));
    w.r.stdin.write(KEY.down);
    const local = await frame(w.r, (f) => cursorLine(f).startsWith("› local"));
    expect(local).toContain("local");
    w.r.stdin.write(KEY.enter);
    await frame(w.r, has("New VM · Name · local"));
    w.r.stdin.write(KEY.enter);
    const summary = await frame(w.r, has("New VM · Summary"));
    expect(summary).toContain("size     from your config (spuff config show)");
    expect(summary).toContain("price    free: it runs on this machine");
    w.r.stdin.write(KEY.esc);
    await frame(w.r, has("New VM · Name"));
    w.r.stdin.write(KEY.esc);
    await frame(w.r, has("New VM · Provider"));
    w.r.stdin.write(KEY.esc);
    await vi.waitFor(() => expect(w.cancelled()).toBe(1));
    expect(w.created).toEqual([]);
  });

  async function create(req: CreateRequest) {
    const services = await servicesFor(h.env, h.home.home);
    const done: unknown[] = [];
    const shells: string[] = [];
    r = render(
      <KeyRoot>
        <CreateView services={services} request={req} onDone={(o) => done.push(o)} onShell={(n) => shells.push(n)} width={100} />
      </KeyRoot>,
    );
    return { r, done, shells };
  }

  it("the progress view: each phase gets ✓ and its duration, then how to connect; enter opens the shell", async () => {
    const c = await create({ provider: "hetzner", name: "prog", size: "cpx11", location: "nbg1" });
    const first = await frame(c.r, (f) => /^[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] \S/m.test(f));
    expect(first.split("\n")[0]).toBe("Creating prog (hetzner, nbg1, cpx11)");
    expect(first).toContain("esc cancel and roll back");
    const ready = await frame(c.r, has("prog is ready"), 30_000);
    for (const phase of ["validate config", "register SSH key", "create server", "wait running", "wait SSH", "cloud-init"]) {
      expect(ready).toMatch(new RegExp(`^✓ ${phase} \\(\\d+(\\.\\d)? m?s\\)$`, "m"));
    }
    expect(ready).toMatch(/prog is ready \(127\.0\.79\.\d+:22, Hetzner Cloud/);
    expect(ready).toContain("connect:  spuff ssh prog");
    expect(ready).toContain("openssh:  ssh spuff-prog");
    expect(ready).toContain("enter open a shell");
    c.r.stdin.write(KEY.enter);
    await vi.waitFor(() => expect(c.shells).toEqual(["prog"]));
    const [server] = h.fake.servers.values();
    expect(server).toMatchObject({ name: "prog", type: "cpx11", location: "nbg1" });
  });

  it("a failed phase is named with the error and its hint; nothing is left behind", async () => {
    h.fake.inject({ method: "POST", path: "/servers", status: 412, code: "resource_unavailable", message: "server type cpx11 is sold out here" });
    const c = await create({ provider: "hetzner", name: "fail", size: "cpx11", location: "nbg1" });
    const failed = await frame(c.r, has("failed:"), 30_000);
    expect(failed).toMatch(/^✓ validate config/m);
    expect(failed).toMatch(/^✗ create server failed$/m);
    expect(failed).toContain("create server failed:");
    expect(failed.replace(/\s+/g, " ")).toContain("Hetzner cannot create a cpx11 server in nbg1 right now (412 resource_unavailable)");
    expect(failed).toMatch(/hint: cpx11 is available in [a-z0-9, ]+: e\.g\. --location \w+/);
    expect(failed).toContain("rolled back fail");
    expect(failed).toContain("esc back to the list");
    expect(h.fake.servers.size).toBe(0);
    await vi.waitFor(() => expect(h.fake.sshKeys.size).toBe(0));
    c.r.stdin.write(KEY.esc);
    await vi.waitFor(() => expect(c.done).toHaveLength(1));
    expect(c.done[0]).toMatchObject({ failed: { message: expect.stringContaining("cannot create a cpx11 server") } });
  });
});
