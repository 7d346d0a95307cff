import type { Command } from "commander";
import type { App } from "../app.js";

/**
 * `spuff guard`: the guard daemon that serves the guarded agent to plain OpenSSH (docs/adr/0007-guard-daemon.md).
 * Hidden from the command list: OpenSSH runs `guard ensure` from the generated config, and `ensure` starts `serve`.
 */
export function register(program: Command, app: App): void {
  const guard = program
    .command("guard", { hidden: true })
    .description("the guard daemon serving spuff's guarded agent to plain ssh, scp, rsync and VS Code (run by OpenSSH)")
    .addHelpText(
      "after",
      `
The generated ssh config (\`spuff ssh-config\`) has OpenSSH run \`spuff guard ensure NAME\` before each connection to
spuff-NAME; it starts the daemon when none runs and arms it with the policy of that moment. The daemon serves one
agent socket per VM in $XDG_STATE_HOME/spuff/guard/, logs to guard/daemon.log there, and stops when no VM is left.

Examples:
  $ spuff guard status        what the daemon serves, with which agent
  $ spuff guard stop          stop it (the next \`ssh spuff-NAME\` starts it again)`,
    );

  guard
    .command("ensure <name>")
    .description("make sure the guard serves NAME (start the daemon if needed); exit 1, with the reason, if it cannot")
    .action(async (name: string) => {
      const { ensureGuard } = await import("../../core/session.js");
      try {
        if (!(await ensureGuard(app, name))) process.exitCode = 1; // ssh.forward_agent: false
      } catch (err) {
        // OpenSSH shows this command's stderr; the connection goes on, without an agent.
        const e = err as Error & { hints?: string[] };
        app.err(`spuff: no agent forwarded to ${name}: ${e.message}${e.hints?.[0] ? `\nspuff: hint: ${e.hints[0]}` : ""}\nspuff: \`spuff doctor ${name}\` checks the whole path`);
        process.exitCode = 1;
      }
    });

  guard
    .command("serve")
    .description("run the daemon in the foreground (ensure starts it detached)")
    .action(async () => {
      const { guardDir, spuffBuild } = await import("../../core/session.js");
      const { withLock } = await import("../../core/state.js");
      const { startGuardServer } = await import("../../ssh/guard-daemon.js");
      const dir = guardDir(app.io.env);
      const log = (line: string) => app.err(`${new Date().toISOString()} ${line}`);
      const started = await withLock(dir, () =>
        startGuardServer({ dir, log, build: spuffBuild(), vms: () => app.state().list().filter((r) => r.endpoint).map((r) => r.name) }),
      );
      if (!started) return log("another guard daemon already serves here; exiting");
      await started.done;
    });

  guard
    .command("status")
    .description("what the running daemon serves")
    .action(async () => {
      const { guardDir } = await import("../../core/session.js");
      const { guardRequest } = await import("../../ssh/guard-daemon.js");
      const reply = await guardRequest(guardDir(app.io.env), { op: "ping" }).catch(() => undefined);
      if (app.json) return app.printJson(reply ?? { running: false });
      if (!reply?.ok) return app.out("the guard daemon is not running (the next `ssh spuff-NAME` starts it)");
      app.out(`guard daemon pid ${reply.pid}`);
      for (const v of reply.vms) {
        app.out(`  ${v.vm}: ${v.socket} → ${v.agent.path} (${v.agent.why}); sign_policy ${v.signPolicy}; ${v.connections} connection(s) since ${v.armedAt}`);
      }
    });

  guard
    .command("stop")
    .description("stop the daemon")
    .action(async () => {
      const { guardDir } = await import("../../core/session.js");
      const { guardRequest } = await import("../../ssh/guard-daemon.js");
      const reply = await guardRequest(guardDir(app.io.env), { op: "stop" }).catch(() => undefined);
      app.info(reply ? `stopped the guard daemon (pid ${reply.ok ? reply.pid : "?"})` : "the guard daemon was not running");
    });
}
