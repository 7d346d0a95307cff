import type { Command } from "commander";
import { hostAlias } from "../../core/state.js";
import { toView } from "../../core/view.js";
import type { App } from "../app.js";
import { PlainProgress } from "../progress.js";
import { dirname } from "node:path";

export function register(program: Command, app: App): void {
  program
    .command("up [name]")
    .description("create a VM, wait until it is ready, and print how to connect")
    .option("--ttl <duration>", "hard time to live, e.g. 4h (default: config idle.ttl, 24h)")
    .option("--size <size>", "machine size: Hetzner server type (cx22), AWS instance type (t3.small)")
    .option("--location <location>", "where to create it: Hetzner location (fsn1), AWS availability zone (eu-central-1a)")
    .option("--keep-on-failure", "keep the VM when cloud-init or SSH fails, for debugging")
    .option("--cold", "local: boot the image instead of restoring the saved machine state (like local.warm: false)")
    .addHelpText(
      "after",
      `
The name defaults to the directory holding spuff.yaml, else a random spuff-<adjective>-<noun>.
Ctrl-C rolls back everything created so far; a second Ctrl-C exits at once (\`spuff reap\` cleans up).
When it fails: --keep-on-failure keeps the VM to look at (\`spuff ssh NAME\`); a local VM's serial console is in
~/.local/state/spuff/local/NAME/console.log; SPUFF_BOOT_TIMEOUT=30m waits longer for SSH and for cloud-init (default
15m). More in docs/troubleshooting.md.

Examples:
  $ spuff up                          local QEMU VM (no account needed)
  $ spuff up api --provider hetzner   a Hetzner Cloud server named "api"
  $ spuff up --ttl 4h --json          JSON progress events, then the VM
  $ spuff up --cold                   a local VM booted from its image, not restored from the saved state
  $ spuff -v up                       also stream the VM's cloud-init output while it runs`,
    )
    .action(async (nameArg: string | undefined, opts: { ttl?: string; keepOnFailure?: boolean; size?: string; location?: string; cold?: boolean }) => {
      const config = app.config();
      if (opts.cold) config.local.warm = false; // before the provider is made: it reads this config
      const { findProjectConfig } = await import("../../config/load.js");
      const { nameFromDir, randomName, validateName } = await import("../../core/names.js");
      const project = findProjectConfig(app.io.cwd);
      const name = validateName(nameArg ?? (project ? nameFromDir(dirname(project)) : undefined) ?? randomName());
      const provider = await app.provider();
      // Notes go to stderr in every mode: they are for the person, and --json's stdout stays the event stream.
      for (const note of provider.notices?.() ?? []) app.err(`note: ${note}`);
      // A terminal gets the Ink progress view (loaded only then); scripts, CI and --json get plain lines or JSON events.
      const progress =
        app.interactive && app.io.stderr.isTTY
          ? (await (await import("../../tui/load.js")).loadTui(() => import("../../tui/progress.js"))).startInkProgress(app, `Creating ${name} with ${provider.info().description}`)
          : new PlainProgress(app);
      const { up } = await import("../../core/up.js");
      // A bounded check, run alongside: leftovers that need `spuff reap` are named at the end, never slowing `up` down.
      const { pendingReap } = await import("../../core/reap.js");
      const leftovers = pendingReap(
        { state: app.state(), provider: (n) => app.provider(n), providerNames: app.providerScope(), owner: app.owner() },
        3000,
      );
      const result = await app
        .interruptible((signal) =>
          up(
            { provider, config, state: app.state(), owner: app.owner(), progress, env: app.io.env, followCloudInit: app.verbose },
            { name, ttl: opts.ttl, keepOnFailure: opts.keepOnFailure, size: opts.size, location: opts.location, signal },
          ),
        )
        .then((r) => {
          progress.finish();
          return r;
        })
        .finally(() => "close" in progress && progress.close());
      await regenerateSshConfig(app);
      const view = toView(result.vm, new Date(), provider.info().features, true);
      const reap = (await leftovers).filter((v) => !(v.name === name && v.provider === view.provider));
      if (reap.length) {
        progress.warn(`${reap.length} other VM${reap.length === 1 ? "" : "s"} of this machine need${reap.length === 1 ? "s" : ""} reaping (${reap.map((v) => `${v.name}: ${v.reap}`).join(", ")}): run \`spuff reap\``);
      }
      if (app.json) {
        app.out(JSON.stringify({ event: "ready", vm: view, timings: progress.timings }));
        return;
      }
      app.out(
        [
          `${name} is ready (${view.address ?? "no address"}, ${provider.info().description})`,
          `  connect:  spuff ssh ${name}`,
          `  openssh:  ssh ${hostAlias(name)}   (after \`spuff ssh-config --install\`)`,
          ...(result.workspace
            ? [`  work:     ~/work is ${result.workspace.created ? "a new" : "the kept"} workspace volume ${result.workspace.volume.id} (${result.workspace.volume.sizeGiB} GiB), kept by \`spuff down\``]
            : []),
          `  destroy:  spuff down ${name}`,
        ].join("\n"),
      );
    });
}

/** Rewrites the generated OpenSSH config (`spuff ssh-config`) after the set of VMs changed; the guard daemon follows. */
export async function regenerateSshConfig(app: App): Promise<void> {
  const { sshConfigChanged } = await import("../../core/session.js");
  const warning = await sshConfigChanged(app.io.env, app.state());
  if (warning) app.warn(warning);
}
