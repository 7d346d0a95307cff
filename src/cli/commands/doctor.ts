import type { Command } from "commander";
import { table } from "../../core/view.js";
import type { App } from "../app.js";
import { guardedAgentFor, resolveRecord, vmTarget } from "./ssh.js";

export function register(program: Command, app: App): void {
  program
    .command("doctor [name]")
    .description("check the agent, the VM's host key, agent forwarding and git logins from the VM, with a fix per failure")
    .option("--no-agent", "check without forwarding the agent")
    .option("--git-host <host>", "git host to test a login to (repeatable; default: git_hosts from the config, else github.com)", (v: string, acc?: string[]) => [...(acc ?? []), v])
    .addHelpText(
      "after",
      `
Checks, in order: the local agent (socket, permissions, keys), that the VM answers with the host key pinned when it was
created, that the forwarded agent is visible on the VM (\`ssh-add -l\` there), and for each git host an \`ssh -T git@HOST\`
login from the VM. Exit code 0 when everything passed, 2 otherwise.

Examples:
  $ spuff doctor
  $ spuff doctor api --git-host gitlab.com
  $ spuff doctor api --json`,
    )
    .action(async (name: string | undefined, opts: { agent: boolean; gitHost?: string[] }) => {
      const record = resolveRecord(app, name);
      const config = app.config();
      const gitHosts = opts.gitHost?.length ? opts.gitHost : config.git_hosts.length ? config.git_hosts.map((h) => h.host) : ["github.com"];
      const { doctor } = await import("../../ssh/doctor.js");
      const forward = opts.agent && config.ssh.forward_agent;
      const checks = await app.interruptible((signal) =>
        doctor({ target: vmTarget(app, record), agent: forward ? () => guardedAgentFor(app, record) : undefined, gitHosts, signal }),
      );
      const failed = checks.filter((c) => !c.ok);
      if (app.json) app.printJson(checks);
      else {
        app.out(table(["CHECK", "RESULT", "DETAIL"], checks.map((c) => [c.check, c.ok ? "ok" : "FAIL", c.detail])));
        for (const c of failed) if (c.hint) app.out(`hint (${c.check}): ${c.hint}`);
      }
      if (failed.length) {
        // The table (or JSON) already said everything; only the exit code is left to set.
        app.info(`spuff: ${failed.length} of ${checks.length} checks failed on ${record.name}`);
        process.exitCode = 2;
      }
    });
}
