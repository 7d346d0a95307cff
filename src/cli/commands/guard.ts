import type { Command } from "commander";
import type { SessionRequest } from "../../ssh/guard-client.js";
import type { App } from "../app.js";

/**
 * `spuff guard`: the guard daemon that serves the guarded agent to plain OpenSSH (docs/adr/0007-guard-daemon.md).
 * Hidden from the command list: OpenSSH runs `guard ensure` from the generated config, and `ensure` starts `serve`.
 */
/**
 * `spuff guard ensure NAME`, run by OpenSSH before each connection to spuff-NAME (src/cli/bin.cts calls it without
 * loading the rest of the CLI): exit 0 when the guard serves NAME; else the reason on stderr (OpenSSH shows it; the
 * connection goes on without an agent) and exit 1.
 */
export async function ensureForOpenSsh(name: string, env: NodeJS.ProcessEnv, cwd: string, err: (line: string) => void): Promise<number> {
  const { ensureForOpenSsh: ensure } = await import("../../core/session.js");
  const r = await ensure(env, cwd, name);
  if (r.ok) return 0;
  if (!r.quiet) err(`spuff: no agent forwarded to ${name}: ${r.error}${r.hint ? `\nspuff: hint: ${r.hint}` : ""}\nspuff: \`spuff doctor ${name}\` checks the whole path`);
  return 1;
}

/** In the daemon: the settings `spuff ssh NAME` would use, in the environment and directory of the `ensure` caller. */
async function settleFor(vm: string, env: NodeJS.ProcessEnv, cwd: string, log: (line: string) => void) {
  const { App } = await import("../app.js");
  const { guardSettings, resolveRecord } = await import("../../core/session.js");
  const sink = { write: (s: string) => log(`${vm}: ${s.trimEnd()}`) };
  const { PassThrough } = await import("node:stream");
  const app = new App({ env, cwd, stdin: new PassThrough(), stdout: sink, stderr: sink });
  await app.prepare();
  const record = resolveRecord(app.state(), vm);
  if (!app.config().ssh.forward_agent) return undefined;
  return guardSettings(app, record);
}

/**
 * In the daemon: a `spuff ssh NAME -- COMMAND` session as `spuff ssh` would settle it in the caller's environment,
 * directory and --config: the guard's settings, the VM's target, ssh.persist.
 */
async function settleSession(req: SessionRequest, log: (line: string) => void) {
  const { App } = await import("../app.js");
  const { guardSettings, resolveRecord, vmTarget } = await import("../../core/session.js");
  const { parseDuration } = await import("../../config/load.js");
  const { PassThrough } = await import("node:stream");
  const sink = { write: (s: string) => log(`${req.vm ?? "ssh"}: ${s.trimEnd()}`) };
  const app = new App({ env: req.env, cwd: req.cwd, stdin: new PassThrough(), stdout: sink, stderr: sink });
  app.globals.config = req.configFile;
  app.command = "ssh";
  app.untrustedProject = "ignore"; // as for \`spuff ssh\` (src/cli/main.ts): commands on existing VMs ignore it
  await app.prepare();
  const record = resolveRecord(app.state(), req.vm);
  const config = app.config();
  const target = vmTarget(app.state(), record);
  const persistMs = parseDuration(config.ssh.persist);
  if (!config.ssh.forward_agent || persistMs <= 0) return { vm: record.name, target, persistMs };
  return { vm: record.name, target, persistMs, settings: await guardSettings(app, record) };
}

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
    .addHelpText("after", "\nExamples:\n  $ spuff guard ensure api    what the generated ssh config runs before `ssh spuff-api`")
    .action(async (name: string) => {
      process.exitCode = await ensureForOpenSsh(name, app.io.env, app.io.cwd, (l) => app.err(l));
    });

  guard
    .command("serve")
    .description("run the daemon in the foreground (ensure starts it detached)")
    .addHelpText("after", "\nExamples:\n  $ spuff guard serve         in the foreground, its log on stderr (to watch it work)")
    .action(async () => {
      const { guardDir, spuffBuild } = await import("../../core/session.js");
      const { withLock } = await import("../../core/state.js");
      const { startGuardServer } = await import("../../ssh/guard-daemon.js");
      const dir = guardDir(app.io.env);
      const log = (line: string) => app.err(`${new Date().toISOString()} ${line}`);
      const started = await withLock(dir, () =>
        startGuardServer({
          dir,
          log,
          build: spuffBuild(),
          vms: () => app.state().list().filter((r) => r.endpoint).map((r) => r.name),
          settle: (vm, env, cwd) => settleFor(vm, env, cwd, log),
          session: (req) => settleSession(req, log),
        }),
      );
      if (!started) return log("another guard daemon already serves here; exiting");
      // It stops when its last VM goes, maybe while its home is deleted: the code cache is saved now, not then.
      (await import("../code-cache.js")).saveCodeCache();
      await started.done;
    });

  guard
    .command("status")
    .description("what the running daemon serves")
    .addHelpText("after", "\nExamples:\n  $ spuff guard status\n  $ spuff guard status --json")
    .action(async () => {
      const { guardDir } = await import("../../core/session.js");
      const { guardRequest } = await import("../../ssh/guard-client.js");
      const reply = await guardRequest(guardDir(app.io.env), { op: "ping" }).catch(() => undefined);
      if (app.json) return app.printJson(reply ?? { running: false });
      if (!reply?.ok) return app.out("the guard daemon is not running (the next `ssh spuff-NAME` starts it)");
      app.out(`guard daemon pid ${reply.pid}`);
      for (const v of reply.vms) {
        app.out(`  ${v.vm}: ${v.socket} → ${v.agent.path} (${v.agent.why}); sign_policy ${v.signPolicy}; ${v.connections} connection(s) since ${v.armedAt}`);
      }
      if (reply.warm?.length) app.out(`  warm connections (reused by \`spuff ssh NAME -- COMMAND\`): ${reply.warm.join(", ")}`);
    });

  guard
    .command("stop")
    .description("stop the daemon")
    .addHelpText("after", "\nExamples:\n  $ spuff guard stop          the next `ssh spuff-NAME` starts it again")
    .action(async () => {
      const { guardDir } = await import("../../core/session.js");
      const { guardRequest } = await import("../../ssh/guard-client.js");
      const reply = await guardRequest(guardDir(app.io.env), { op: "stop" }).catch(() => undefined);
      app.info(reply ? `stopped the guard daemon (pid ${reply.ok ? reply.pid : "?"})` : "the guard daemon was not running");
    });
}
