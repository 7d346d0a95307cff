import type { Command } from "commander";
import { pick } from "../../core/inventory.js";
import { formatDuration, formatMoney } from "../../core/view.js";
import type { App } from "../app.js";
import { listVms } from "./ls.js";

export function register(program: Command, app: App): void {
  program
    .command("status [name]")
    .description("show one VM in detail (the only VM when no name is given)")
    .addHelpText("after", "\nExamples:\n  $ spuff status\n  $ spuff status api --json")
    .action(async (name?: string) => {
      const { vms } = await listVms(app);
      const vm = pick(vms, name);
      if (app.json) {
        app.printJson(vm);
        return;
      }
      const rows: [string, string][] = [
        ["name", vm.name],
        ["provider", vm.provider],
        ["id", vm.id || "-"],
        ["status", vm.status],
        ["address", vm.address ?? "-"],
        ["location", vm.location ?? "-"],
        ["size", vm.size ?? "-"],
        ["created", vm.createdAt ?? "-"],
        ["age", formatDuration(vm.ageSeconds)],
        ["expires", vm.expiresAt ? `${vm.expiresAt} (in ${formatDuration(vm.ttlSeconds)})` : "-"],
        ["price/hour", formatMoney(vm.pricePerHour)],
        ["cost so far", formatMoney(vm.accruedCost)],
      ];
      if (vm.reap) rows.push(["needs reaping", `${vm.reap} (run \`spuff reap\`)`]);
      app.out(rows.map(([k, v]) => `${k.padEnd(12)} ${v}`).join("\n"));
    });
}
