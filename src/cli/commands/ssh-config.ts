import type { Command } from "commander";
import type { App } from "../app.js";

export function register(program: Command, app: App): void {
  program
    .command("ssh-config")
    .description("write an OpenSSH config with a `Host spuff-<name>` block per VM, for ssh, scp, rsync and editors")
    .option("--install", "add the Include line to ~/.ssh/config (backs it up first; safe to repeat)")
    .addHelpText(
      "after",
      `
Then \`ssh spuff-NAME\`, \`scp file spuff-NAME:\`, \`rsync\`, \`mosh\` and VS Code Remote-SSH work, with the VM's host key
pinned. Plain OpenSSH forwards your agent without spuff's guard; \`spuff ssh\` forwards the guarded proxy.

Examples:
  $ spuff ssh-config                 write it and print the Include line
  $ spuff ssh-config --install       also add the Include line to ~/.ssh/config`,
    )
    .action(async (opts: { install?: boolean }) => {
      const { includeLine, installInclude, writeSshConfig } = await import("../../ssh/sshconfig.js");
      const path = await writeSshConfig(app.io.env);
      const installed = opts.install ? installInclude(app.io.env) : undefined;
      if (app.json) {
        app.printJson({ path, include: includeLine(app.io.env), installed: installed ?? null });
        return;
      }
      app.out(`wrote ${path}`);
      if (!installed) app.out(`add this line at the top of ~/.ssh/config (or run \`spuff ssh-config --install\`):\n  ${includeLine(app.io.env)}`);
      else if (installed.changed) app.out(`added the Include line to ${installed.file}${installed.backup ? ` (backup: ${installed.backup})` : ""}`);
      else app.out(`${installed.file} already includes it`);
    });
}
