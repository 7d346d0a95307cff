import { render } from "ink-testing-library";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LABEL } from "../../src/core/labels.js";
import { workspaceLabels } from "../../src/core/workspace.js";
import { Picker, type PickerAction } from "../../src/tui/picker.js";
import { Root, type TuiExit } from "../../src/tui/root.js";
import { KeyRoot } from "../../src/tui/widgets.js";
import { type Harness, harness, problems } from "../providers/hetzner/harness.js";
import { dialogText, frame, has, KEY, type Rendered, servicesFor } from "./helpers.js";

const OWNER = "testowner0001";
const DAY = 86400;
const selected = (f: string) => f.split("\n").find((l) => l.startsWith("› "))?.split(/\s+/)[1];

/** Labels of a workspace volume `up` made for `name`, detached `detachedDaysAgo` days ago (undefined: no detach time yet). */
function labels(name: string, owner: string, detachedDaysAgo?: number): Record<string, string> {
  const now = new Date();
  const l = workspaceLabels({ name, owner, requestId: `r${name}`, now: new Date(now.getTime() - 20 * DAY * 1000), keepSeconds: 14 * DAY });
  if (detachedDaysAgo !== undefined) l[LABEL.detachedAt] = String(Math.floor(now.getTime() / 1000 - detachedDaysAgo * DAY));
  return l;
}

// Kept workspaces in the picker, against the spec-validating Hetzner fake's Volumes API and the real Hetzner provider:
// the rows (size, last use, price per month, time until the reaper deletes them, a warning within three days), their
// keys (u: a new VM of that name through the wizard; d: delete for good after a question), and the destroy dialog of a
// VM whose workspace volume is kept.
describe("picker: kept workspaces on the Hetzner fake", { timeout: 60_000 }, () => {
  let h: Harness | undefined;
  let r: Rendered | undefined;
  afterEach(async () => {
    r?.unmount();
    r = undefined;
    if (h) {
      expect(problems(h.fake)).toEqual([]);
      await h.close();
    }
    h = undefined;
  });

  it("lists this machine's kept workspaces under the VMs, warns within three days, and deletes one only after y", async () => {
    h = await harness({ ipv4Prefix: "127.0.114.", standin: false });
    h.fake.seedServers(1, { namePrefix: "api", labels: () => ({ "managed-by": "spuff", "spuff/name": "api-1", "spuff/owner": OWNER }) });
    const old = h.fake.volumeApi.seed({ name: "old", size: 20, labels: labels("old", OWNER, 12.5) });
    const fresh = h.fake.volumeApi.seed({ name: "fresh", labels: labels("fresh", OWNER, 1) });
    // Past its keep period: the next `spuff reap` deletes it.
    h.fake.volumeApi.seed({ name: "due", labels: labels("due", OWNER, 15) });
    // Detached without `spuff down` (its server was deleted elsewhere): the picker stamps it, its keep starts now.
    const lost = h.fake.volumeApi.seed({ name: "lost", location: "nbg1", labels: labels("lost", OWNER) });
    // Another owner's kept workspace is theirs: not a row here.
    h.fake.volumeApi.seed({ name: "theirs", labels: labels("theirs", "teammate0005", 1) });
    const actions: PickerAction[] = [];
    const services = await servicesFor(h.env, h.home.home, { provider: "hetzner" });
    r = render(<KeyRoot><Picker services={services} onAction={(a) => actions.push(a)} width={120} height={30} refreshMs={60_000} /></KeyRoot>);
    const f = await frame(r, has("KEPT WORKSPACE"));
    const lines = f.split("\n");
    expect(lines[0]).toBe("spuff · 1 VM · 4 kept workspaces · hetzner");
    expect(lines[2]).toMatch(/^› api-1\s+running\s+hetzner/);
    expect(lines[3]).toBe("");
    expect(lines[4]).toMatch(/^ {2}KEPT WORKSPACE\s+PROVIDER\s+LOCATION\s+SIZE\s+LAST USED\s+PRICE\/MONTH\s+DELETED IN$/);
    // Hetzner's /pricing: €0.0524 per GB and month (the fake's price list), so 10 GB €0.52 and 20 GB €1.05.
    expect(lines[5]).toMatch(/^ {2}due\s+hetzner\s+fsn1\s+10G\s+15d0h ago\s+€0\.52\s+due$/);
    expect(lines[6]).toMatch(/^ {2}fresh\s+hetzner\s+fsn1\s+10G\s+1d0h ago\s+€0\.52\s+12d23h$/);
    expect(lines[7]).toMatch(/^ {2}lost\s+hetzner\s+nbg1\s+10G\s+just now\s+€0\.52\s+13d23h$/);
    expect(lines[8]).toMatch(/^ {2}old\s+hetzner\s+fsn1\s+20G\s+12d12h ago\s+€1\.05\s+1d11h$/);
    expect(f).not.toContain("theirs");
    expect(f).toContain("the kept workspace of old is deleted in 1d11h: u brings it back and keeps it");
    expect(f).toContain("the kept workspace of due is past its keep period: the next `spuff reap` deletes it (u brings it back and keeps it)");
    expect(f).not.toContain("the kept workspace of fresh");
    expect(Number(h.fake.volumes.get(lost.id)?.labels[LABEL.detachedAt])).toBeGreaterThan(Date.now() / 1000 - 60);

    // On a workspace row the footer shows its keys; enter explains that there is no VM.
    r.stdin.write("jjjj");
    const onOld = await frame(r, (x) => selected(x) === "old");
    expect(onOld).toContain("↑↓ move  u up  d delete  n new  r refresh  / filter  ? help  q quit");
    r.stdin.write(KEY.enter);
    const noVm = await frame(r, has("it has no VM"));
    expect(noVm).toContain("error: old is a kept workspace: it has no VM to open a shell on");
    expect(noVm).toContain("hint: press u to bring it back with a new VM (`spuff up old`), d to delete it");

    r.stdin.write("d");
    const dialog = dialogText(await frame(r, has("[y/N]")));
    expect(dialog).toContain(`Delete the kept workspace of old (hetzner volume ${old.id}, 20 GiB, €1.05/month)? Its work is gone for good.`);
    r.stdin.write("n");
    await frame(r, has("nothing deleted"));
    expect(h.fake.volumes.has(old.id)).toBe(true);
    r.stdin.write("d");
    await frame(r, has("[y/N]"));
    r.stdin.write("y");
    await frame(r, has(`deleted the workspace volume ${old.id} of old (hetzner)`));
    await frame(r, (x) => !/^[› ] old\s/m.test(x) && x.includes("3 kept workspaces"));
    expect(h.fake.volumes.has(old.id)).toBe(false);
    expect(h.fake.volumes.has(fresh.id)).toBe(true);

    // The filter finds workspaces too; u hands the workspace to the wizard.
    r.stdin.write("/fre\r");
    const filtered = await frame(r, (x) => x.includes('filter "fre"') && x.includes("u up"));
    expect(selected(filtered)).toBe("fresh");
    expect(filtered).not.toContain("api-1");
    r.stdin.write("u");
    await vi.waitFor(() => expect(actions.map((a) => (a.kind === "up" ? `up ${a.workspace.name} ${a.workspace.id}` : a.kind))).toEqual([`up fresh ${fresh.id}`]));
  });

  it("destroy keeps the workspace and says so; u brings it back through the wizard in its location; p purges", async () => {
    h = await harness({ ipv4Prefix: "127.0.114." });
    const up = await h.spuff(["up", "box"]);
    expect(up.code, up.stderr).toBe(0);
    const [vol] = h.fake.volumes.values();
    const exits: TuiExit[] = [];
    const services = await servicesFor(h.env, h.home.home, { provider: "hetzner" });
    r = render(<Root services={services} onExit={(e) => exits.push(e)} width={140} height={30} refreshMs={60_000} />);
    await frame(r, has("box"));

    r.stdin.write("d");
    const dialog = dialogText(await frame(r, has("[y/N]")));
    expect(dialog).toContain(`Its workspace volume ${vol.id} (10 GiB, €0.52/month) is kept: ~/work comes back with the next \`spuff up box\`.`);
    expect(dialog).toContain("y destroy (the volume is kept) · p destroy and delete the volume · any other key keeps it [y/N]");
    // A VM with a workspace volume is not asked for unsaved work: the volume keeps ~/work.
    expect(dialog).not.toContain("unsaved git work");
    r.stdin.write("y");
    const after = await frame(r, has("KEPT WORKSPACE"), 30_000);
    expect(after).toMatch(/destroyed box \(cost €\d+\.\d+\)/);
    expect(after).toContain(`kept the workspace volume ${vol.id} (10 GiB, €0.52/month): u on its row brings ~/work back with a new VM`);
    expect(after).toContain("no VMs — press n to create one, or u to bring a kept workspace back");
    expect(after).toMatch(/^› box\s+hetzner\s+fsn1\s+10G\s+just now\s+€0\.52\s+13d23h$/m);
    expect(after.split("\n")[0]).toBe("spuff · 0 VMs · 1 kept workspace · hetzner");
    await h.fake.settled();
    expect(h.fake.servers.size).toBe(0);
    expect(h.fake.volumes.get(vol.id)).toMatchObject({ server: null });

    // u: the wizard for this workspace asks only the size (in the volume's location), then the summary.
    r.stdin.write("u");
    const sizes = await frame(r, has("New VM for the kept workspace box · Size · hetzner › fsn1"));
    expect(sizes).toContain("IN fsn1");
    expect(sizes).toContain("esc cancel");
    r.stdin.write(KEY.enter);
    const summary = await frame(r, has("New VM for the kept workspace box · Summary"));
    expect(summary).toMatch(/name\s+box/);
    expect(summary).toContain(`~/work   the kept workspace volume ${vol.id} (10 GiB) is attached: the work is where it was`);
    r.stdin.write(KEY.enter);
    await frame(r, has("box is ready"), 45_000);
    const [server] = h.fake.servers.values();
    expect(h.fake.volumes.get(vol.id)).toMatchObject({ server: server.id, automount: false });
    // The same volume: only the first `up` made one.
    expect(h.fake.count("POST", "/volumes")).toBe(1);
    expect(h.fake.volumes.size).toBe(1);
    const create = h.fake.requests.filter((x) => x.method === "POST" && x.path === "/servers").at(-1)?.body as Record<string, unknown>;
    expect(create).toMatchObject({ name: "box", location: "fsn1", volumes: [vol.id] });

    // Back in the list: p in the destroy dialog asks a second time, then deletes the VM and the volume.
    r.stdin.write(KEY.esc);
    await frame(r, (x) => /^› box\s+running\s+hetzner/m.test(x));
    r.stdin.write("d");
    await frame(r, has("p destroy and delete the volume"));
    r.stdin.write("p");
    const purge = dialogText(await frame(r, has("destroy both")));
    expect(purge).toContain(`Destroy box and delete its workspace volume ${vol.id} (10 GiB, €0.52/month)? Its work is gone for good.`);
    r.stdin.write("y");
    await frame(r, has(`; deleted its workspace volume ${vol.id}`), 30_000);
    await frame(r, has("no VMs — press n to create one"));
    await h.fake.settled();
    expect(h.fake.servers.size + h.fake.volumes.size).toBe(0);
    expect(exits).toEqual([]);
  });
});
