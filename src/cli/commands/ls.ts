import type { Command } from "commander";
import { inventory } from "../../core/inventory.js";
import { formatDuration, formatMoney, statusText, table, type VmView } from "../../core/view.js";
import type { App } from "../app.js";

/** Columns, in the order they are dropped when the terminal is narrow (last dropped first). */
const COLUMNS: { header: string; cell: (v: VmView) => string }[] = [
  { header: "NAME", cell: (v) => v.name },
  { header: "STATUS", cell: (v) => statusText(v) },
  { header: "PROVIDER", cell: (v) => v.provider },
  { header: "ADDRESS", cell: (v) => v.address ?? "-" },
  { header: "TTL", cell: (v) => formatDuration(v.ttlSeconds) },
  { header: "AGE", cell: (v) => formatDuration(v.ageSeconds) },
  { header: "PRICE/H", cell: (v) => formatMoney(v.pricePerHour) },
  { header: "COST", cell: (v) => formatMoney(v.accruedCost) },
  { header: "LOCATION", cell: (v) => v.location ?? "-" },
  { header: "SIZE", cell: (v) => v.size ?? "-" },
];

export function renderTable(vms: VmView[], width = 200): string {
  let cols = COLUMNS;
  for (;;) {
    const text = table(
      cols.map((c) => c.header),
      vms.map((v) => cols.map((c) => c.cell(v))),
    );
    if (cols.length <= 2 || Math.max(...text.split("\n").map((l) => l.length)) <= width) return text;
    cols = cols.slice(0, -1);
  }
}

export async function listVms(app: App, signal?: AbortSignal) {
  return inventory({ state: app.state(), provider: (n) => app.provider(n), providerNames: app.providerScope(), owner: app.owner() }, signal);
}

/** The lines under the table: what needs reaping, what `spuff start` brings back, whose VMs these are. */
export function notes(vms: VmView[]): string[] {
  const lines: string[] = [];
  const mine = vms.filter((v) => v.reap && v.mine);
  const theirs = vms.filter((v) => v.reap && !v.mine);
  const list = (vs: VmView[]) => vs.map((v) => `${v.name}: ${v.reap}`).join(", ");
  if (mine.length) lines.push(`${mine.length} VM${mine.length === 1 ? "" : "s"} of this machine need${mine.length === 1 ? "s" : ""} reaping (${list(mine)}): run \`spuff reap\``);
  if (theirs.length) lines.push(`${theirs.length} VM${theirs.length === 1 ? "" : "s"} of other owners need${theirs.length === 1 ? "s" : ""} reaping (${list(theirs)}): \`spuff reap --all-owners\` removes them`);
  const startable = vms.filter((v) => v.status === "stopped" && !v.reap && v.mine);
  if (startable.length === 1) lines.push(`${startable[0].name} is stopped, its disk kept: \`spuff start ${startable[0].name}\` boots it again`);
  else if (startable.length) lines.push(`${startable.map((v) => v.name).join(", ")} are stopped, their disks kept: \`spuff start NAME\` boots one again`);
  return lines;
}

export function register(program: Command, app: App): void {
  program
    .command("ls")
    .alias("list")
    .description("list spuff VMs with status, address, time to live and cost, and kept workspaces")
    .addHelpText(
      "after",
      `
Below the VMs: kept workspace volumes (docs/workspaces.md), with size, last use, price per month and the time until
the reaper deletes them; \`spuff workspace ls --json\` lists them for scripts (\`ls --json\` lists VMs only).

Examples:
  $ spuff ls
  $ spuff ls --provider hetzner --json`,
    )
    .action(async () => {
      const { vms, errors } = await listVms(app);
      for (const e of errors) app.warn(`${e.provider}: ${e.message}`);
      if (app.json) {
        app.printJson(vms);
        return;
      }
      const { listWorkspaces, renderWorkspaces, workspaceNotes } = await import("./workspace.js");
      const ws = await listWorkspaces(app);
      for (const e of ws.errors) app.warn(`${e.provider}: workspaces: ${e.message}`);
      const kept = ws.workspaces.filter((w) => w.status === "kept" && w.mine);
      if (vms.length === 0 && kept.length === 0) {
        app.info("no VMs; create one with `spuff up`");
        return;
      }
      if (vms.length) app.out(renderTable(vms, app.io.stdout.isTTY ? (app.io.stdout.columns ?? 80) : 200));
      if (kept.length) app.out(`${vms.length ? "\n" : ""}${renderWorkspaces(kept)}`);
      for (const line of [...notes(vms), ...workspaceNotes(kept)]) app.info(line);
    });
}
