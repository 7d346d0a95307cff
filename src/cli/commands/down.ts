import type { Command } from "commander";
import { down, pick } from "../../core/inventory.js";
import { UserError } from "../../core/errors.js";
import { formatMoney } from "../../core/view.js";
import type { App } from "../app.js";
import { stderrProgress } from "../progress.js";
import { listVms } from "./ls.js";
import { regenerateSshConfig } from "./up.js";

export function register(program: Command, app: App): void {
  program
    .command("down [names...]")
    .alias("destroy")
    .description("destroy VMs and everything spuff created for them (already gone counts as success)")
    .option("--all", "destroy every spuff VM of the selected providers")
    .addHelpText(
      "after",
      `
Asks for confirmation in a terminal; scripts pass --yes.

Examples:
  $ spuff down api
  $ spuff down api web --yes
  $ spuff down --all --yes --json`,
    )
    .action(async (names: string[], opts: { all?: boolean }) => {
      const { vms } = await listVms(app);
      const targets = opts.all ? vms : names.length ? names.map((n) => pick(vms, n)) : [pick(vms, undefined)];
      if (targets.length === 0) {
        app.info("no VMs to destroy");
        if (app.json) app.printJson([]);
        return;
      }
      if (!app.globals.yes) {
        const list = targets.map((t) => t.name).join(", ");
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
        results.push(r);
        if (!app.json) app.out(`${r.destroyed ? "destroyed" : "already gone:"} ${r.name}${r.cost ? ` (cost ${formatMoney(r.cost)})` : ""}`);
      }
      await regenerateSshConfig(app);
      const total = results.reduce((s, r) => s + (r.cost?.amount ?? 0), 0);
      const currency = results.find((r) => r.cost)?.cost?.currency;
      if (app.json) app.printJson(results);
      else if (currency) app.out(`total cost: ${formatMoney({ amount: total, currency })}`);
    });
}
