import { existsSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { closeEach, type Harness, harness } from "../providers/hetzner/harness.js";
import { BIN } from "../helpers/cli.js";
import { haveTmux, Terminal } from "../helpers/tmux.js";
import { DIRTY, type WorkTree, workTree } from "../helpers/unsaved-work.js";

// A VM without a workspace volume is the only copy of its work: `spuff down` looks at its git work trees over SSH
// (the stand-in VM is a real sshd whose login user has a real repository) and asks before it destroys.
describe.skipIf(!existsSync(BIN) || !haveTmux)("down: unsaved work on a VM without a workspace volume", { timeout: 60_000 }, () => {
  let h: Harness | undefined;
  let term: Terminal | undefined;
  let work: WorkTree | undefined;
  // After each test (vitest runs these hooks last registered first): the terminal and the work tree go, then closeEach
  // checks the fake for problems and closes the harness.
  closeEach(
    () => h,
    () => (h = undefined),
  );
  afterEach(() => {
    term?.close();
    term = undefined;
    work?.remove();
    work = undefined;
  });

  it("lists uncommitted changes, unpushed commits and stashes, asks, and --yes --json destroys and reports them", async () => {
    h = await harness({ ipv4Prefix: "127.0.92.", config: { workspace: { volume: false } } });
    const up = await h.spuff(["up", "box"]);
    expect(up.code, up.stderr).toBe(0);

    // On the "VM": a repository with a commit no remote has, a stash, and an uncommitted change.
    work = workTree("unsaved-", true);
    const where = `~/${work.path}: ${DIRTY}`;

    // Without a terminal and without --yes: refused, with the list.
    const refused = await h.spuff(["down", "box"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("refusing to destroy box");
    expect(refused.stderr).toContain("unsaved work on box:");
    expect(refused.stderr).toContain(where);
    expect(h.fake.servers.size).toBe(1);

    // In a terminal: the list, then the question; "no" destroys nothing.
    const { CI: _ci, NO_COLOR: _nc, ...env } = h.env;
    term = Terminal.start([process.execPath, BIN, "--provider", "hetzner", "down", "box"], env, { width: 200, height: 30, cwd: h.home.home });
    const asked = await term.waitFor("[y/N]");
    expect(asked).toContain("box has work that exists nowhere else (it has no workspace volume):");
    expect(asked).toContain(where);
    expect(asked).toContain("and the unsaved work above.");
    term.keys("n", { literal: true });
    term.keys("Enter");
    await term.waitFor("nothing destroyed");
    expect(h.fake.servers.size).toBe(1);

    // --yes destroys; --json says what was lost.
    const gone = await h.spuff(["down", "box", "--yes", "--json"]);
    expect(gone.code, gone.stderr).toBe(0);
    const [result] = JSON.parse(gone.stdout);
    expect(result.destroyed).toBe(true);
    expect(result.workspace).toBeNull();
    expect(result.unsaved.checked).toBe(true);
    expect(result.unsaved.repos).toContainEqual({ path: work.path, changed: 1, unpushed: 1, stashes: 1 });
    await h.fake.settled();
    expect(h.fake.servers.size).toBe(0);
  });

  it("a clean work tree destroys without a word about unsaved work", async () => {
    h = await harness({ ipv4Prefix: "127.0.92.", config: { workspace: { volume: false } } });
    expect((await h.spuff(["up", "clean"])).code).toBe(0);
    work = workTree("clean-", false);
    const gone = await h.spuff(["down", "clean", "--yes", "--json"]);
    expect(gone.code, gone.stderr).toBe(0);
    const [result] = JSON.parse(gone.stdout);
    expect(result.unsaved.checked).toBe(true);
    expect(result.unsaved.repos.filter((r: { path: string }) => r.path === work?.path)).toEqual([]);
    expect(gone.stderr).not.toContain(work.path);
  });
});
