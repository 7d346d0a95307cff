import type { Command } from "commander";
import { ProviderError } from "../../core/errors.js";
import type { App } from "../app.js";

interface SshOpts {
  agent: boolean;
  tmux: boolean;
  t?: boolean;
  L?: string[];
  direct?: boolean;
}

export function register(program: Command, app: App): void {
  program
    .command("ssh [name] [command...]")
    .description("open a shell (in tmux) on a VM with your agent forwarded through spuff's guard, or run a command")
    .option("--no-agent", "do not forward the SSH agent")
    .option("--no-tmux", "plain login shell instead of `tmux new -A -s spuff`")
    .option("-t", "force a PTY for a command")
    .option("-L <forward>", "forward 127.0.0.1:LOCAL to HOST:REMOTE on the VM (repeatable)", (v: string, acc?: string[]) => [...(acc ?? []), v])
    .option("--direct", "log in on a connection of its own, not on the guard daemon's warm one (ssh.persist)")
    .addHelpText(
      "after",
      `
The VM's host key is checked against the key pinned when it was created; a mismatch refuses to connect.
The forwarded agent shows only ssh.allowed_keys and, with ssh.sign_policy git-only (default), signs only SSH logins
bound (OpenSSH 8.9+ session-bind) to a pinned git host's key, as the user that host expects ("git"). Every signature
request is logged with its destination to ~/.local/state/spuff/agent.log.
The remote command's exit code becomes spuff's exit code; when spuff itself fails (unknown VM, unreachable, host key
mismatch, bad config) it exits 255, as OpenSSH's ssh does, and its messages on stderr start with "error:" or "spuff:".
A command (\`-- COMMAND\`, without -t or -L, and no file of 8 MiB or more on stdin) runs on the guard daemon's
warm connection to the VM when there is one (like OpenSSH's ControlPersist; ssh.persist, default 10m): no key
exchange or login of its own, the same guard, pinned host key and agent log. Without a daemon it connects
directly and starts one for the next command (--direct: always directly, starting nothing).

Examples:
  $ spuff ssh                             shell on your only VM, attached to tmux session "spuff"
  $ spuff ssh api -- make test            run a command, stdin/stdout piped
  $ spuff ssh api -L 8080:localhost:80    shell plus a port forward
  $ spuff ssh api --no-agent -- git pull  no agent on the VM for this session
  $ spuff ssh api --direct -- uptime      a connection of its own, not the warm one`,
    )
    .action(async (name: string | undefined, command: string[], opts: SshOpts) => {
      // Loaded here, not at the top: every other command (ls, --help) would load them too (docs/performance.md).
      const [{ dial, parseForward }, session, { largeFileOnStdin, sessionInput }] = await Promise.all([
        import("../../ssh/dial.js"),
        import("../../core/session.js"),
        import("../session-input.js"),
      ]);
      const { guardDir, openSession, resolveRecord, restartGuardDaemon, spawnGuardDaemon, spuffBuild, vmTarget } = session;
      const forwards = (opts.L ?? []).map(parseForward);
      const stdin = sessionInput(app.io.stdin);
      // A command with the agent forwarded runs on the guard daemon's warm connection when there is one
      // (src/ssh/warm.ts): this process then loads neither ssh2 nor the config. Anything else connects directly.
      const warmable = command.length > 0 && !opts.t && forwards.length === 0 && opts.agent && !opts.direct && !largeFileOnStdin(app.io.stdin);
      let warm: Awaited<ReturnType<typeof import("../../ssh/warm-client.js").warmSession>> | undefined;
      if (warmable) {
        // bin.cts may have tried already (src/cli/warm-ssh.ts), before loading the CLI.
        warm = (await import("../warm-ssh.js")).takeWarmResult();
        if (!warm) {
          const { warmSession } = await import("../../ssh/warm-client.js");
          const env = Object.fromEntries(Object.entries(app.io.env).filter((e): e is [string, string] => e[1] !== undefined));
          const req = { op: "session" as const, vm: name, env, cwd: app.io.cwd, configFile: app.globals.config, command: command.join(" "), build: spuffBuild() };
          warm = await warmSession(guardDir(app.io.env), req, { stdin, stdout: app.io.stdout, stderr: app.io.stderr });
        }
        if (warm.kind === "done") {
          process.exitCode = warm.code;
          return;
        }
        if (warm.kind === "failed") {
          // The command may have started: running it again on a connection of its own could run it twice.
          throw new ProviderError(warm.error, { hint: [`\`spuff guard status\` shows the daemon; \`spuff ssh --direct\` connects without it`, `see ${guardDir(app.io.env)}/daemon.log`] });
        }
      }
      const record = resolveRecord(app.state(), name);
      const target = vmTarget(app.state(), record);
      // Connect first, and settle the rest while sshd works: it starts its side of the connection while ssh2 loads,
      // and computes the key exchange while spuff reads the config and asks the agent. Nothing runs on the VM and
      // nothing is forwarded before those are settled; a config error closes the connection unused.
      const dialed = dial(target.host, target.port);
      const { connectEarly } = await import("../../ssh/session.js");
      const early = connectEarly(target, opts.agent, dialed);
      const interactive = command.length === 0;
      const { code, agent } = await openSession(app, {
        record,
        target,
        early,
        command,
        tmux: opts.tmux,
        agent: opts.agent,
        tty: opts.t,
        forwards,
        stdin,
      });
      // No daemon to reuse a connection of (or one of another build): start this build's for the next command.
      if (warm?.kind === "absent" || warm?.kind === "fallback") {
        const { parseDuration } = await import("../../config/load.js");
        if (!agent || parseDuration(app.config().ssh.persist) <= 0) {
          // ssh.persist 0 or no agent: nothing to start
        } else if (warm.kind === "absent") spawnGuardDaemon(guardDir(app.io.env), app.io.env);
        else if (warm.why === (await import("../../ssh/warm-client.js")).OTHER_BUILD) await restartGuardDaemon(app.io.env).catch(() => {});
      }
      if (code !== 0 && !agent && !interactive) {
        const [why, fix] = opts.agent
          ? ["ssh.forward_agent is false", "set ssh.forward_agent: true in your config (`spuff config show` prints the effective value)"]
          : ["--no-agent", "run it without --no-agent"];
        app.err(`spuff: the command failed (exit ${code}) and no SSH agent was forwarded (${why}): git over SSH on the VM has no key to log in with; ${fix}`);
      }
      process.exitCode = code;
    });
}
