import type { Command } from "commander";
import type { ReapResult } from "../../core/reap.js";
import { table } from "../../core/view.js";
import { ProviderError } from "../../core/errors.js";
import type { App } from "../app.js";
import { stderrProgress } from "../progress.js";
import { regenerateSshConfig } from "./up.js";

export function register(program: Command, app: App): void {
  program
    .command("reap")
    .description("delete spuff VMs past their TTL or powered off, and resources no VM uses; forget VMs that are gone")
    .option("--dry-run", "print the plan, change nothing")
    .option("--all-owners", "also reap other owners' VMs in the same account (default: only this machine's)")
    .option("--install", "run `spuff reap` every 10 minutes (systemd user timer on Linux, launchd agent on macOS)")
    .option("--no-enable", "with --install: write the timer files but do not enable them")
    .option("--uninstall", "remove the timer installed by --install")
    .addHelpText(
      "after",
      `
What is reaped (docs/idle.md):
  interrupted   its \`spuff up\` died (Ctrl-C twice, a crash) before the VM was ready; never while that up still runs
  expired       the VM is past its hard TTL (label spuff/expires-at)
  idle-stopped  the VM powered itself off; the provider bills it until it is deleted
  stopped       the VM powered off and its disk is still billed; a free provider's (local) stopped
                VM is kept until its TTL instead: \`spuff start NAME\` boots it again
  interrupted   its \`spuff up\` died before the VM was ready
  gone          the VM no longer exists; its local state (keys, known_hosts entry) is removed
  workspace     a kept workspace volume whose \`workspace.keep\` (label spuff/keep) has passed since its
                last detach; never one attached to a VM (docs/workspaces.md)
plus each provider's orphans: SSH keys, security groups or VM directories that no VM uses, and baked images
(\`spuff image ls\`) that no \`up\` has matched for image.keep (default 30d).
This machine's VMs are those labelled with its owner id, or whose record (keys) it holds.
Provider labels are the truth: a scheduled job with only a token can reap for a whole team.

Examples:
  $ spuff reap --dry-run
  $ spuff reap --json
  $ spuff reap --install
  $ HCLOUD_TOKEN=... spuff --provider hetzner reap --all-owners --json   (cron, CI)`,
    )
    .action(async (opts: { dryRun?: boolean; allOwners?: boolean; install?: boolean; enable: boolean; uninstall?: boolean }) => {
      if (opts.install || opts.uninstall) {
        const { installReapTimer, uninstallReapTimer } = await import("../../core/reap-timer.js");
        if (opts.uninstall) {
          const removed = uninstallReapTimer(app.io.env, process.platform);
          if (app.json) app.printJson({ removed });
          else app.out(removed.length ? `removed ${removed.join(", ")}` : "no reap timer was installed");
          return;
        }
        const t = installReapTimer(app.io.env, process.platform, opts.enable);
        if (app.json) {
          app.printJson({ files: t.files, enabled: t.enabled, enable: t.enable.join(" ") });
          return;
        }
        app.out(`wrote ${t.files.join(", ")}`);
        app.out(t.enabled ? "enabled: spuff reap now runs every 10 minutes" : `enable it with: ${t.enable.join(" ")}`);
        app.info("the timer sees your config files, not your shell's environment: keep provider credentials in the config (see docs/idle.md)");
        return;
      }
      const progress = stderrProgress(app);
      const { reap } = await import("../../core/reap.js");
      const { parseDuration } = await import("../../config/load.js");
      const result = await app.interruptible((signal) =>
        reap(
          {
            state: app.state(),
            provider: (n) => app.provider(n),
            providerNames: app.providerScope(),
            owner: app.owner(),
            allOwners: opts.allOwners,
            progress,
            signal,
            imageKeepMs: parseDuration(app.config().image.keep),
          },
          Boolean(opts.dryRun),
        ),
      );
      progress.finish();
      if (!result.dryRun && result.plan.some((i) => i.done)) await regenerateSshConfig(app);
      const failure = result.errors.length
        ? new ProviderError(`reap could not finish: ${result.errors.length} problem(s)`, {
            notes: result.errors.map((e) => `${e.provider}: ${e.message}`),
            hint: "fix the cause and run `spuff reap` again; everything it acts on is labelled, nothing is lost by retrying",
          })
        : undefined;
      if (!app.json) {
        app.out(describe(result));
        if (failure) throw failure;
        return;
      }
      // One document on stdout whatever happened: the result holds the errors; the message goes to stderr only.
      app.printJson(result);
      if (failure) {
        app.err([`error: ${failure.message}`, ...failure.notes.map((n) => `  ${n}`), ...failure.hints.map((h) => `hint: ${h}`)].join("\n"));
        process.exitCode = failure.exitCode;
      }
    });
}

function describe(r: ReapResult): string {
  const lines: string[] = [];
  if (r.plan.length === 0 && r.orphans.length === 0 && r.workspaces.length === 0) return "nothing to reap";
  if (r.plan.length) {
    const state = (i: ReapResult["plan"][number]) => (r.dryRun ? "would " : i.done ? "" : "FAILED: ") + (i.action === "destroy" ? "destroy" : "forget");
    lines.push(table(["NAME", "PROVIDER", "REASON", "ACTION"], r.plan.map((i) => [i.name, i.provider, i.reason, i.error ? `FAILED: ${i.error}` : state(i)])));
  }
  for (const o of r.orphans) lines.push(`${r.dryRun ? "would delete" : "deleted"} ${o.provider} ${o.resource}`);
  for (const w of r.workspaces) {
    const why = w.reason === "interrupted" ? "made by an `up` that died before its VM was ready" : "its keep period has passed";
    const what = `the ${w.reason === "interrupted" ? "" : "kept "}workspace volume of ${w.name} (${w.provider} volume ${w.id}): ${why}`;
    lines.push(w.error ? `FAILED to delete ${what}: ${w.error}` : `${r.dryRun ? "would delete" : "deleted"} ${what}`);
  }
  if (r.dryRun) lines.push("", "(dry run: nothing changed; run `spuff reap` to do it)");
  return lines.join("\n");
}
