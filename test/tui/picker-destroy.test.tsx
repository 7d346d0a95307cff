import { render } from "ink-testing-library";
import { afterEach, describe, expect, it } from "vitest";
import { Picker } from "../../src/tui/picker.js";
import { KeyRoot } from "../../src/tui/widgets.js";
import { closeEach, type Harness, harness } from "../providers/hetzner/harness.js";
import { DIRTY, type WorkTree, workTree } from "../helpers/unsaved-work.js";
import { frame, has, plain, type Rendered, servicesFor } from "./helpers.js";

// The picker's destroy dialog for a VM without a workspace volume (workspace.volume: false): before it asks, it logs
// in to the VM (the stand-in VM is a real sshd whose login user has a real git repository) and lists the work that
// exists nowhere else. A check that cannot run says so; it never reads as "nothing unsaved".
describe("picker: destroy asks the VM for unsaved work first", { timeout: 60_000 }, () => {
  let h: Harness | undefined;
  let r: Rendered | undefined;
  let work: WorkTree | undefined;
  // After each test (vitest runs these hooks last registered first): the terminal and the work tree go, then closeEach
  // checks the fake for problems and closes the harness.
  closeEach(
    () => h,
    () => (h = undefined),
  );
  afterEach(() => {
    r?.unmount();
    r = undefined;
    work?.remove();
    work = undefined;
  });

  it("lists uncommitted changes, unpushed commits and stashes in the dialog; a failed check says why; y destroys", async () => {
    h = await harness({ ipv4Prefix: "127.0.113.", config: { workspace: { volume: false } } });
    const up = await h.spuff(["up", "box"]);
    expect(up.code, up.stderr).toBe(0);

    // On the "VM": a repository with a commit no remote has, a stash, and an uncommitted change.
    work = workTree("tui-unsaved-", true);
    const where = `~/${work.path}: ${DIRTY}`;

    const services = await servicesFor(h.env, h.home.home, { provider: "hetzner" });
    r = render(<KeyRoot><Picker services={services} onAction={() => {}} width={200} height={30} refreshMs={60_000} /></KeyRoot>);
    await frame(r, has("box"));
    r.stdin.write("d");
    const dialog = await frame(r, has("[y/N]"), 30_000);
    // It asked before it offered y: the first dialog frame said it was looking.
    expect(r.frames.map(plain).some((f) => f.includes("looking for its workspace volume and for unsaved git work on it"))).toBe(true);
    expect(dialog).toMatch(/Destroy box \(hetzner, fsn1, cx22, id \d+\)\? This deletes the VM and its disk, and the unsaved work below\./);
    expect(dialog).toContain("It has no workspace volume, and this work exists nowhere else:");
    expect(dialog).toContain(where);
    r.stdin.write("n");
    await frame(r, has("nothing destroyed"));
    expect(h.fake.servers.size).toBe(1);

    // The VM's sshd goes away: the check cannot log in, and the dialog says so instead of "nothing found".
    const [id] = [...h.fake.servers.keys()];
    await h.standins.get(id)?.stop();
    r.stdin.write("d");
    const failed = await frame(r, has("[y/N]"), 30_000);
    expect(failed).toContain("It has no workspace volume, and spuff could not check it for unsaved git work: cannot reach box");
    expect(failed).not.toContain("no uncommitted changes");
    expect(failed).not.toContain(where);

    r.stdin.write("y");
    await frame(r, has("destroyed box"), 30_000);
    await frame(r, has("no VMs — press n to create one"));
    await h.fake.settled();
    expect(h.fake.servers.size).toBe(0);
  });
});
