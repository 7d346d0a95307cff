import type { Command } from "commander";
import { pick } from "../../core/inventory.js";
import { formatDuration, formatMoney, REAP_REASON, statusText } from "../../core/view.js";
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
        ["status", statusText(vm)],
        ["owner", vm.owner ? `${vm.owner}${vm.mine ? " (this machine)" : ""}` : vm.mine ? "this machine" : "-"],
        ["address", vm.address ?? "-"],
        ["location", vm.location ?? "-"],
        ["size", vm.size ?? "-"],
        ["created", vm.createdAt ?? "-"],
        ["age", formatDuration(vm.ageSeconds)],
        ["expires", vm.expiresAt ? `${vm.expiresAt} (in ${formatDuration(vm.ttlSeconds)})` : "-"],
        ["price/hour", formatMoney(vm.pricePerHour)],
        ["cost so far", formatMoney(vm.accruedCost)],
      ];
      if (vm.reap) {
        const how = vm.mine ? "`spuff reap` deletes it" : "another owner's: `spuff reap --all-owners` deletes it";
        rows.push(["to reap", `${vm.reap}: ${REAP_REASON[vm.reap] ?? vm.reap}; ${how}`]);
      } else if (vm.status === "stopped" && vm.mine) {
        rows.push(["next", `\`spuff start ${vm.name}\` boots it again with its disk; \`spuff down ${vm.name}\` deletes it`]);
      }
      app.out(rows.map(([k, v]) => `${k.padEnd(12)} ${v}`).join("\n"));
    });
}
