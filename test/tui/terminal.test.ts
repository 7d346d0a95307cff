import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Harness, harness, problems } from "../providers/hetzner/harness.js";
import { type Agent, startAgent } from "../helpers/sshd.js";
import { haveTmux, Terminal } from "../helpers/tmux.js";

const BIN = join(import.meta.dirname, "..", "..", "dist", "src", "cli", "bin.cjs");

// The built `spuff` in a real terminal (tmux), against the Hetzner fake with stand-in sshds on 127.0.77.N: create a VM
// through the wizard, see it in the list, destroy it (its workspace volume is kept), delete the kept workspace, quit.
describe.skipIf(!haveTmux)("spuff in a terminal (tmux)", () => {
  let h: Harness;
  let term: Terminal | undefined;
  let agent: Agent;
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.77.", config: { provider: "hetzner" } });
    agent = startAgent(["tui-test-key"]);
  });
  afterEach(async () => {
    term?.close();
    term = undefined;
    agent.stop();
    await h.close();
  });

  it("creates a VM through the wizard, lists it, destroys it (its workspace is kept), deletes the kept workspace and quits", async () => {
    const { CI: _ci, NO_COLOR: _nc, ...env } = h.env;
    term = Terminal.start([process.execPath, BIN], { ...env, SSH_AUTH_SOCK: agent.socket }, { width: 100, height: 30, cwd: h.home.home });
    const t = term;

    const empty = await t.waitFor("no VMs — press n to create one");
    expect(empty).toContain("spuff · 0 VMs · hetzner");

    t.keys("n");
    const providers = await t.waitFor("(configured)");
    expect(providers).toMatch(/› hetzner\s+Hetzner Cloud.*\(configured\)/);
    t.keys("Enter");

    // The catalog comes from the fake's /locations, /server_types and /pricing.
    const locations = await t.waitFor(/› \w+\s.*\(default\)/);
    expect(locations).toContain("New VM · Location · hetzner");
    t.keys("Enter");

    const sizes = await t.waitFor(/New VM · Size[\s\S]*› /);
    expect(sizes).toMatch(/SIZE\s+VCPU\s+RAM\s+DISK\s+PRICE\/H\s+MONTH\s+IN \w+/);
    expect(sizes).toMatch(/› \S+\s+\d+\s+\d+G\s+\d+G\s+€\d+\.\d+\s+€\d+\.\d+\s+available/);
    t.keys("Enter");

    await t.waitFor("New VM · Name");
    // A name that breaks the rule is refused where it is typed; then a good one.
    t.keys("C-u");
    t.keys("Bad_Name", { literal: true });
    t.keys("Enter");
    await t.waitFor('invalid VM name "Bad_Name"');
    t.keys("C-u");
    t.keys("tui-box", { literal: true });
    t.keys("Enter");

    const summary = await t.waitFor("New VM · Summary");
    expect(summary).toMatch(/name\s+tui-box/);
    expect(summary).toMatch(/estimate\s+at most €\d+\.\d+ if it runs its whole \S+ TTL/);
    t.keys("Enter");

    const ready = await t.waitFor("tui-box is ready", 60_000);
    for (const phase of ["validate config", "register SSH key", "create server", "wait running", "wait SSH", "cloud-init"]) {
      expect(ready).toMatch(new RegExp(`✓ ${phase}\\b`));
    }
    expect(ready).toContain("connect:  spuff ssh tui-box");
    expect([...h.fake.servers.values()].map((s) => s.name)).toEqual(["tui-box"]);

    t.keys("Escape");
    const listed = await t.waitFor(/› tui-box\s+running\s+hetzner/);
    expect(listed).toContain("spuff · 1 VM · hetzner");

    // Enter hands the terminal to a shell on the VM (the stand-in's real sshd); the picker comes back when it exits.
    t.keys("Enter");
    await t.waitFor("spuff: connecting to tui-box");
    // The shell runs as the VM's user, with the local agent's key forwarded through spuff's guard.
    t.keys("echo handoff-$((6*7)) $(id -un) $(ssh-add -l | awk '{print $3}')", { literal: true });
    t.keys("Enter");
    await t.waitFor("handoff-42 spuff-test tui-test-key");
    t.keys("exit", { literal: true });
    t.keys("Enter");
    const back = await t.waitFor((s) => s.includes("shell on tui-box ended") && /› tui-box\s+running/.test(s));
    expect(back).toContain("spuff · 1 VM · hetzner");

    // The VM got a workspace volume (~/work); the destroy dialog says it is kept.
    const [vol] = h.fake.volumes.values();
    t.keys("d");
    const dialog = await t.waitFor("[y/N]", 30_000);
    expect(dialog).toContain("Destroy tui-box");
    expect(dialog).toContain(`Its workspace volume ${vol.id}`);
    t.keys("y");
    await t.waitFor("destroyed tui-box", 30_000);
    // The kept workspace is a row now; d on it deletes it after its own question.
    const kept = await t.waitFor(/› tui-box\s+hetzner\s+fsn1\s+10G/);
    expect(kept).toContain("no VMs — press n to create one");
    expect(kept).toContain("u up  d delete");
    expect(h.fake.servers.size).toBe(0);
    t.keys("d");
    await t.waitFor(`Delete the kept workspace of tui-box (hetzner volume ${vol.id}, 10 GiB`);
    t.keys("y");
    await t.waitFor(`deleted the workspace volume ${vol.id} of tui-box (hetzner)`, 30_000);
    expect(h.fake.volumes.size).toBe(0);

    t.keys("q");
    expect(await t.exitCode()).toBe(0);

    // The first run left its code cache (docs/adr/0013-code-cache.md); a run from it loads ink as well.
    expect(existsSync(join(env.XDG_CACHE_HOME as string, "spuff", "code", "none.v8"))).toBe(true);
    term = Terminal.start([process.execPath, BIN], { ...env, SSH_AUTH_SOCK: agent.socket }, { width: 100, height: 30, cwd: h.home.home });
    await term.waitFor("no VMs — press n to create one");
    term.keys("q");
    expect(await term.exitCode()).toBe(0);
    expect(problems(h.fake)).toEqual([]);
  });
});
