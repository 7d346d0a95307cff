import type { Command } from "commander";
import { down, pick } from "../../core/inventory.js";
import { UserError } from "../../core/errors.js";
import { formatMoney, type VmView } from "../../core/view.js";
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
    .addHelpText(
      "after",
      `
Destroys exactly the VM it shows (by its provider id). Asks for confirmation in a terminal; scripts pass --yes.
Another owner's VM (label spuff/owner, and no record on this machine) is destroyed only with --all-owners, or after a
confirmation in a terminal that names its owner.

Examples:
  $ spuff down api
  $ spuff down api web --yes
  $ spuff down --all --yes --json
  $ spuff down old-box --all-owners --yes`,
    )
    .action(async (names: string[], opts: { all?: boolean; allOwners?: boolean }) => {
      const { vms } = await listVms(app);
      const targets = opts.all
        ? vms.filter((v) => v.mine || opts.allOwners)
        : names.length
          ? [...new Map(names.map((n) => pick(vms, n)).map((v) => [`${v.provider}/${v.id}/${v.name}`, v])).values()]
          : [pick(vms, undefined)];
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
      if (!app.globals.yes) {
        const list = targets.map(which).join(", ");
        if (!app.interactive) {
          throw new UserError(`refusing to destroy ${list} without confirmation`, { hint: "pass --yes (or -y) to confirm" });
        }
        const { confirm } = await import("../prompt.js");
        if (!(await confirm(app, `Destroy ${list}? This deletes the VM and its disk.`))) {
          app.info("nothing destroyed");
          return;
        }
      }
      const progress = stderrProgress(app);
      const results = [];
      for (const t of targets) {
        const r = await down({ state: app.state(), provider: (n) => app.provider(n) }, t, progress);
        progress.finish();
        results.push({ ...r, id: t.id || null });
        if (!app.json) {
          app.out(`${r.destroyed ? `destroyed ${which(t)}` : `already gone: ${r.name} (${r.provider}); its local record is forgotten`}${r.cost ? `, cost ${formatMoney(r.cost)}` : ""}`);
        }
      }
      await regenerateSshConfig(app);
      const total = results.reduce((s, r) => s + (r.cost?.amount ?? 0), 0);
      const currency = results.find((r) => r.cost)?.cost?.currency;
      if (app.json) app.printJson(results);
      else if (currency && results.length > 1) app.out(`total cost: ${formatMoney({ amount: total, currency })}`);
    });
}
