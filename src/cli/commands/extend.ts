import type { Command } from "commander";
import { UserError } from "../../core/errors.js";
import { pick, vmOf } from "../../core/inventory.js";
import { formatDuration } from "../../core/view.js";
import type { App } from "../app.js";
import { stderrProgress } from "../progress.js";
import { listVms } from "./ls.js";

export function register(program: Command, app: App): void {
  program
    .command("extend <name> <duration>")
    .description("move a VM's hard time to live (TTL) later by DURATION, on the VM and in its provider labels")
    .addHelpText(
      "after",
      `
The TTL moves from its current expiry (or from now, when that passed). The VM must be running.

Examples:
  $ spuff extend api 4h
  $ spuff extend api 1d --json`,
    )
    .action(async (name: string, duration: string) => {
      const { vms } = await listVms(app);
      const view = pick(vms, name);
      if (view.status === "gone") throw new UserError(`${view.name} no longer exists at ${view.provider}`, { hint: "`spuff reap` forgets it; `spuff up` creates a new VM" });
      const provider = await app.provider(view.provider);
      const vm = vmOf(view);
      const { extendVm } = await import("../../core/extend.js");
      const progress = stderrProgress(app);
      const now = new Date();
      const expiresAt = await app.interruptible((signal) => extendVm({ provider, state: app.state(), progress, signal }, vm, duration, now));
      const ttlSeconds = Math.floor((expiresAt.getTime() - now.getTime()) / 1000);
      if (app.json) app.printJson({ name: view.name, provider: view.provider, expiresAt: expiresAt.toISOString(), ttlSeconds });
      else app.out(`${view.name} now expires at ${expiresAt.toISOString()} (in ${formatDuration(ttlSeconds)})`);
    });
}
