import type { Command } from "commander";
import { pick } from "../../core/inventory.js";
import { toView } from "../../core/view.js";
import type { App } from "../app.js";
import { stderrProgress } from "../progress.js";
import { listVms } from "./ls.js";
import { regenerateSshConfig } from "./up.js";

export function register(program: Command, app: App): void {
  program
    .command("start <name>")
    .description("boot a stopped VM again with its disk (after an idle poweroff or a host restart)")
    .addHelpText(
      "after",
      `
The VM keeps its disk, files and pinned host key; spuff waits until SSH answers. A VM past its TTL is not started.
Local VMs (QEMU) and Hetzner servers can be started; AWS instances are terminated when they power off, so there is
nothing to start there.

Examples:
  $ spuff start api
  $ spuff start api --json`,
    )
    .action(async (name: string) => {
      const { vms } = await listVms(app);
      const view = pick(vms, name);
      const provider = await app.provider(view.provider);
      const { startVm } = await import("../../core/start.js");
      const progress = stderrProgress(app);
      const { vm, alreadyRunning } = await app.interruptible((signal) =>
        startVm({ provider, state: app.state(), progress, env: app.io.env, signal }, view),
      );
      progress.finish();
      if (!alreadyRunning) await regenerateSshConfig(app);
      const started = toView(vm, new Date(), provider.info().features, view.mine);
      if (app.json) {
        app.printJson({ ...started, started: !alreadyRunning });
        return;
      }
      app.out(alreadyRunning ? `${view.name} is already running` : `${view.name} is running again (${started.address ?? "no address"})`);
      app.out(`  connect:  spuff ssh ${view.name}`);
    });
}
