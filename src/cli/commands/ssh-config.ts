import type { Command } from "commander";
import { UserError } from "../../core/errors.js";
import type { App } from "../app.js";

export function register(program: Command, app: App): void {
  program
    .command("ssh-config")
    .description("write an OpenSSH config with a `Host spuff-<name>` block per VM, for ssh, scp, rsync and editors")
    .option("--install", "add the Include line to ~/.ssh/config (backs it up first; safe to repeat)")
    .option("--uninstall", "remove the Include line from ~/.ssh/config again (backs it up first)")
    .addHelpText(
      "after",
      `
Then \`ssh spuff-NAME\`, \`scp file spuff-NAME:\`, \`rsync\`, \`mosh\` and VS Code Remote-SSH work, with the VM's host key
pinned and your agent forwarded through spuff's guard (the same policy and log as \`spuff ssh\`): OpenSSH runs
\`spuff guard ensure NAME\` before each connection, which starts the guard if needed; if it cannot serve, no agent is
forwarded (\`spuff doctor NAME\` says why). A symlinked or read-only ~/.ssh/config (home-manager, stow, a dotfiles
repository) is never rewritten: spuff prints the line to add there. $SPUFF_SSH_CONFIG names another file than
~/.ssh/config.

Examples:
  $ spuff ssh-config                 write it and print the Include line
  $ spuff ssh-config --install       also add the Include line to ~/.ssh/config
  $ spuff ssh-config --uninstall     remove the Include line again`,
    )
    .action(async (opts: { install?: boolean; uninstall?: boolean }) => {
      if (opts.install && opts.uninstall) throw new UserError("--install and --uninstall exclude each other", { hint: "pass one of them" });
      const { editInclude, sshConfigChanged, sshConfigPath } = await import("../../core/session.js");
      const { includeLine } = await import("../../ssh/sshconfig.js");
      const warning = await sshConfigChanged(app.io.env, app.state());
      if (warning) throw new UserError(warning);
      const path = sshConfigPath(app.io.env);
      const line = includeLine(path);
      const want = opts.install ? "add" : opts.uninstall ? "remove" : undefined;
      const result = want ? await editInclude(app.io.env, want) : undefined;
      if (app.json) {
        app.printJson({ path, include: line, [opts.uninstall ? "uninstalled" : "installed"]: result ?? null });
        return;
      }
      app.out(`wrote ${path}`);
      if (!result) app.out(`add this line at the top of ~/.ssh/config (or run \`spuff ssh-config --install\`):\n  ${line}`);
      else if (result.status === "added") app.out(`added the Include line to ${result.file}${result.backup ? ` (backup: ${result.backup})` : ""}`);
      else if (result.status === "removed") app.out(`removed the Include line from ${result.file}${result.backup ? ` (backup: ${result.backup})` : ""}`);
      else if (result.status === "present") app.out(`${result.file} already includes it`);
      else if (result.status === "absent") app.out(`${result.file} does not include it`);
      else if (result.status === "left-alone") {
        const where = result.wanted === "add" ? "add this line at the top of it (before any Host or Match block)" : "remove this line from it";
        app.out(
          [
            `left ${result.file} alone: ${result.why}. Where it is managed, ${where}:`,
            `  ${line}`,
            ...(result.wanted === "add" ? [`home-manager: programs.ssh.includes = [ "${path}" ];`] : []),
          ].join("\n"),
        );
      }
    });
}
