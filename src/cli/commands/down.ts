import type { Command } from "commander";
import { down, type DownResult, pick, workspaces } from "../../core/inventory.js";
import { UserError } from "../../core/errors.js";
import type { UnsavedWork } from "../../core/unsaved.js";
import { recordOf } from "../../core/owner.js";
import { formatMoney, type VmView } from "../../core/view.js";
import { keptNote, type WorkspaceView } from "../../core/workspace.js";
import type { App } from "../app.js";
import { stderrProgress } from "../progress.js";
import { listVms } from "./ls.js";
import { regenerateSshConfig } from "./up.js";

/** "api (hetzner id 4711)": the VM exactly as `down` will destroy it. */
const which = (v: VmView) => `${v.name} (${v.provider}${v.id && v.id !== v.name ? ` id ${v.id}` : ""})`;

export function register(program: Command, app: App): void {
  program
    .command("down [names...]")
    .alias("destroy")
    .description("destroy VMs and everything spuff created for them (already gone counts as success)")
    .option("--all", "destroy every spuff VM of this machine in the selected providers")
    .option("--all-owners", "also destroy VMs of other owners (with --all: everyone's)")
    .option("--purge", "also delete the VM's workspace volume (or a kept workspace without a VM): its work is gone")
    .addHelpText(
      "after",
      `
Destroys exactly the VM it shows (by its provider id). Asks for confirmation in a terminal; scripts pass --yes.
Another owner's VM (label spuff/owner, and no record on this machine) is destroyed only with --all-owners, or after a
confirmation in a terminal that names its owner.
The VM's workspace volume (~/work, docs/workspaces.md) is kept: the next \`spuff up NAME\` attaches it again, and it
is deleted \`workspace.keep\` after this (default 14d). --purge deletes it too.
A VM without a workspace volume is first asked for unsaved git work (uncommitted changes, unpushed commits, stashes
under ~); spuff lists what it found and asks before destroying (--yes destroys anyway; --json reports it).

Examples:
  $ spuff down api
  $ spuff down api web --yes
  $ spuff down api --purge --yes
  $ spuff down --all --yes --json
  $ spuff down old-box --all-owners --yes`,
    )
    .action(async (names: string[], opts: { all?: boolean; allOwners?: boolean; purge?: boolean }) => {
      const { vms } = await listVms(app);
      let kept: WorkspaceView[] | undefined;
      const keptWorkspaces = async () => {
        kept ??= (await workspaces({ state: app.state(), provider: (n) => app.provider(n), providerNames: app.providerScope(), owner: app.owner() })).workspaces;
        return kept;
      };
      // A name with no VM may still have a kept workspace: --purge deletes it, otherwise say how.
      const purgeOnly: WorkspaceView[] = [];
      const picked: VmView[] = [];
      for (const n of opts.all ? [] : names) {
        if (vms.some((v) => v.name === n)) {
          picked.push(pick(vms, n));
          continue;
        }
        const ws = (await keptWorkspaces()).filter((w) => w.name === n && w.status === "kept" && (w.mine || opts.allOwners));
        if (!ws.length) picked.push(pick(vms, n)); // the usual "no VM named" error
        else if (!opts.purge) {
          throw new UserError(`no VM named "${n}"; its workspace volume is kept (${ws.map((w) => `${w.provider} volume ${w.id}, ${w.sizeGiB} GiB`).join("; ")})`, {
            hint: `\`spuff up ${n}\` attaches it again; \`spuff down ${n} --purge\` deletes it`,
          });
        } else purgeOnly.push(...ws);
      }
      const targets = opts.all
        ? vms.filter((v) => v.mine || opts.allOwners)
        : names.length
          ? [...new Map(picked.map((v) => [`${v.provider}/${v.id}/${v.name}`, v])).values()]
          : [pick(vms, undefined)];
      if (opts.all && opts.purge) purgeOnly.push(...(await keptWorkspaces()).filter((w) => w.status === "kept" && (w.mine || opts.allOwners)));
      if (targets.length === 0 && purgeOnly.length) {
        const done = await purgeKept(app, purgeOnly);
        if (app.json && done) app.printJson(done);
        return;
      }
      if (targets.length === 0) {
        app.info(opts.all && vms.length ? "no VMs of this machine to destroy (other owners' VMs need --all-owners)" : "no VMs to destroy");
        if (app.json) app.printJson([]);
        return;
      }
      const theirs = targets.filter((t) => !t.mine);
      if (theirs.length && !opts.allOwners) {
        const whose = theirs.map((t) => `${which(t)} belongs to owner ${t.owner ?? "unknown"}`);
        if (!app.interactive || app.globals.yes) {
          throw new UserError(`refusing to destroy another owner's VM: ${whose.join("; ")}`, {
            hint: "this machine has no record of it and it is not labelled with this machine's owner id; pass --all-owners if it is really no longer used",
          });
        }
        const { confirm } = await import("../prompt.js");
        for (const t of theirs) {
          if (!(await confirm(app, `${which(t)} is not this machine's: it belongs to owner ${t.owner ?? "unknown"}. Destroy it anyway?`))) {
            app.info("nothing destroyed");
            return;
          }
        }
      }
      const unsaved = await checkUnsaved(app, targets, opts.purge ? [] : await keptWorkspaces().catch(() => []));
      if (!app.globals.yes) {
        const list = targets.map(which).join(", ");
        const lost = [...unsaved.entries()].filter(([, u]) => u.repos.length);
        const { describeUnsaved } = await import("../../core/unsaved.js");
        if (!app.interactive) {
          throw new UserError(`refusing to destroy ${list} without confirmation`, {
            notes: lost.flatMap(([t, u]) => [`unsaved work on ${t.name}:`, ...u.repos.map((r) => `  ${describeUnsaved(r)}`)]),
            hint: "pass --yes (or -y) to confirm",
          });
        }
        for (const [t, u] of lost) {
          app.warn(`${t.name} has work that exists nowhere else (it has no workspace volume):`);
          for (const r of u.repos) app.warn(`  ${describeUnsaved(r)}`);
        }
        const { confirm } = await import("../prompt.js");
        const what = opts.purge ? "the VM, its disk and its workspace volume" : "the VM and its disk (a workspace volume is kept)";
        if (!(await confirm(app, `Destroy ${list}? This deletes ${what}${lost.length ? ", and the unsaved work above" : ""}.`))) {
          app.info("nothing destroyed");
          return;
        }
      }
      const progress = stderrProgress(app);
      const results: Result[] = [];
      for (const t of targets) {
        const r = await down({ state: app.state(), provider: (n) => app.provider(n) }, t, progress, undefined, { purge: opts.purge });
        progress.finish();
        results.push({ ...r, id: t.id || null, unsaved: unsaved.get(t) ?? null });
        if (!app.json) {
          app.out(`${r.destroyed ? `destroyed ${which(t)}` : `already gone: ${r.name} (${r.provider}); its local record is forgotten`}${r.cost ? `, cost ${formatMoney(r.cost)}` : ""}`);
          if (r.workspace?.action === "kept") {
            app.out(keptNote({ id: r.workspace.id, name: r.name, provider: r.provider, sizeGiB: r.workspace.sizeGiB, labels: {}, pricePerMonth: r.workspace.pricePerMonth }, r.workspace.keepSeconds));
          } else if (r.workspace) app.out(`deleted the workspace volume ${r.workspace.id} of ${r.name}`);
        }
      }
      if (purgeOnly.length) results.push(...((await purgeKept(app, purgeOnly)) ?? []));
      await regenerateSshConfig(app);
      const total = results.reduce((s, r) => s + (r.cost?.amount ?? 0), 0);
      const currency = results.find((r) => r.cost)?.cost?.currency;
      if (app.json) app.printJson(results);
      else if (currency && results.length > 1) app.out(`total cost: ${formatMoney({ amount: total, currency })}`);
    });
}

/**
 * Unsaved git work on the running VMs of this machine that have no workspace volume attached (their disk is the only
 * copy of the work). A VM that cannot be asked is reported as not checked, never as clean.
 */
async function checkUnsaved(app: App, targets: VmView[], volumes: WorkspaceView[]): Promise<Map<VmView, UnsavedWork>> {
  const out = new Map<VmView, UnsavedWork>();
  const attached = new Set(volumes.filter((w) => w.attachedTo).map((w) => `${w.provider}/${w.attachedTo}`));
  const candidates = targets.filter((t) => t.status === "running" && !attached.has(`${t.provider}/${t.id}`));
  if (!candidates.length) return out;
  const { unsavedWork } = await import("../../core/unsaved.js");
  await Promise.all(
    candidates.map(async (t) => {
      const record = recordOf(app.state(), t);
      if (!record) return; // not this machine's keys: it cannot log in to look
      const u = await unsavedWork(app.state(), record);
      if (!u.checked) app.warn(`could not check ${t.name} for unsaved work: ${u.reason}`);
      out.set(t, u);
    }),
  );
  return out;
}

type Result = DownResult & { id: string | null; unsaved: UnsavedWork | null };

/** Deletes kept workspace volumes that have no VM (`down NAME --purge`); undefined when the user said no. */
async function purgeKept(app: App, list: WorkspaceView[]): Promise<Result[] | undefined> {
  const { confirmAndDelete } = await import("./workspace.js");
  const done = await confirmAndDelete(app, list);
  return done?.map((w) => ({
    name: w.name,
    provider: w.provider,
    id: null,
    destroyed: false,
    cost: null,
    workspace: { id: w.id, sizeGiB: w.sizeGiB, pricePerMonth: w.pricePerMonth, action: "deleted" as const, keepSeconds: w.keepSeconds },
    unsaved: null,
  }));
}
