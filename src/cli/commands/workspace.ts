import type { Command } from "commander";
import { volumeOf, workspaces } from "../../core/inventory.js";
import { UserError } from "../../core/errors.js";
import { formatDuration, formatMoney, table } from "../../core/view.js";
import { deleteWorkspace, WARN_BEFORE_SECONDS, type WorkspaceView } from "../../core/workspace.js";
import type { App } from "../app.js";
import { stderrProgress } from "../progress.js";

export async function listWorkspaces(app: App, signal?: AbortSignal) {
  return workspaces({ state: app.state(), provider: (n) => app.provider(n), providerNames: app.providerScope(), owner: app.owner(), stamp: true }, signal);
}

export function renderWorkspaces(list: WorkspaceView[]): string {
  return table(
    ["WORKSPACE", "STATUS", "PROVIDER", "SIZE", "LAST USED", "PRICE/MONTH", "DELETED IN", "ID"],
    list.map((w) => [
      w.name,
      w.status === "attached" ? `attached (${w.attachedTo})` : "kept",
      w.provider,
      `${w.sizeGiB}G`,
      w.lastUsedAt ? w.lastUsedAt.slice(0, 16).replace("T", " ") : "-",
      formatMoney(w.pricePerMonth),
      w.status === "kept" ? formatDuration(w.deleteInSeconds) : "-",
      w.id,
    ]),
  );
}

/** Lines under the table: kept workspaces that the reaper deletes within three days. */
export function workspaceNotes(list: WorkspaceView[]): string[] {
  return list
    .filter((w) => w.mine && w.deleteInSeconds !== null && w.deleteInSeconds < WARN_BEFORE_SECONDS)
    .map((w) =>
      w.deleteInSeconds !== null && w.deleteInSeconds <= 0
        ? `the kept workspace of ${w.name} is past its keep period: the next \`spuff reap\` deletes it (\`spuff up ${w.name}\` keeps it)`
        : `the kept workspace of ${w.name} is deleted in ${formatDuration(w.deleteInSeconds)}: \`spuff up ${w.name}\` keeps it`,
    );
}

/**
 * Asks once for all of `list` (unless --yes; without a terminal that is an error), then deletes each kept workspace
 * volume and says so. Undefined when the user said no. `spuff workspace rm` and `spuff down NAME --purge` use it.
 */
export async function confirmAndDelete(app: App, list: WorkspaceView[]): Promise<WorkspaceView[] | undefined> {
  if (!app.globals.yes) {
    const names = list.map((w) => `${w.name} (${w.provider} volume ${w.id}, ${w.sizeGiB} GiB)`).join(", ");
    if (!app.interactive) throw new UserError(`refusing to delete the workspace volume of ${names} without confirmation`, { hint: "pass --yes (or -y) to confirm" });
    const { confirm } = await import("../prompt.js");
    if (!(await confirm(app, `Delete the kept workspace of ${names}? Its work is gone for good.`))) {
      app.info("nothing deleted");
      return undefined;
    }
  }
  const progress = stderrProgress(app);
  for (const w of list) {
    await deleteWorkspace(await app.provider(w.provider), volumeOf(w), progress);
    progress.finish();
    if (!app.json) app.out(`deleted the workspace volume ${w.id} of ${w.name} (${w.provider})`);
  }
  return list;
}

export function register(program: Command, app: App): void {
  const ws = program
    .command("workspace")
    .alias("ws")
    .description("list or delete workspace volumes (~/work, kept when a VM goes; docs/workspaces.md)")
    .addHelpText(
      "after",
      `
A workspace volume is made for each VM (workspace.volume, default on) and mounted at ~/work. \`spuff down\`, idle and
TTL destroy the VM and keep the volume; the next \`spuff up NAME\` attaches it again. A kept volume is deleted
\`workspace.keep\` (default 14d) after its last detach by \`spuff reap\`, or now by \`spuff workspace rm NAME\`.

Examples:
  $ spuff workspace ls
  $ spuff workspace ls --json
  $ spuff workspace rm api --yes`,
    );
  ws.command("ls")
    .alias("list")
    .description("list workspace volumes: size, last use, price per month, time left")
    .addHelpText("after", "\nExamples:\n  $ spuff workspace ls\n  $ spuff workspace ls --provider hetzner --json")
    .action(async () => {
      const { workspaces: list, errors } = await listWorkspaces(app);
      for (const e of errors) app.warn(`${e.provider}: ${e.message}`);
      if (app.json) {
        app.printJson(list);
        return;
      }
      if (!list.length) {
        app.info("no workspace volumes");
        return;
      }
      app.out(renderWorkspaces(list));
      for (const line of workspaceNotes(list)) app.info(line);
    });
  ws.command("rm <name>")
    .alias("delete")
    .description("delete a kept workspace volume now (its work is gone for good)")
    .option("--id <id>", "the volume id, when several volumes carry the name")
    .addHelpText("after", "\nA volume attached to a VM is not deleted: `spuff down NAME --purge` deletes both.\n\nExamples:\n  $ spuff workspace rm api\n  $ spuff workspace rm api --yes --json")
    .action(async (name: string, opts: { id?: string }) => {
      const { workspaces: list } = await listWorkspaces(app);
      const found = list.filter((w) => w.name === name && (!opts.id || w.id === opts.id));
      if (!found.length) {
        throw new UserError(`no workspace volume named "${name}"${opts.id ? ` with id ${opts.id}` : ""}`, {
          hint: list.length ? `workspaces: ${list.map((w) => w.name).join(", ")}` : "`spuff workspace ls` lists them",
        });
      }
      if (found.length > 1) {
        throw new UserError(`${found.length} workspace volumes are named "${name}"`, {
          notes: found.map((w) => `${w.provider} volume ${w.id} (owner ${w.owner ?? "unknown"})`),
          hint: `pick one with --id`,
        });
      }
      const w = found[0];
      if (w.attachedTo) {
        throw new UserError(`the workspace volume of ${name} is attached to VM ${w.attachedTo}`, { hint: `\`spuff down ${name} --purge\` deletes the VM and the volume` });
      }
      if (!w.mine) throw new UserError(`the workspace volume of ${name} belongs to owner ${w.owner ?? "unknown"}`, { hint: "it is theirs to delete" });
      if (!(await confirmAndDelete(app, [w]))) return;
      if (app.json) app.printJson({ name, provider: w.provider, id: w.id, deleted: true });
    });
}
