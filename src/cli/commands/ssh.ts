import { createReadStream, fstatSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { UserError } from "../../core/errors.js";
import { hostAlias, type VmRecord } from "../../core/state.js";
import type { AgentPolicy } from "../../ssh/agent.js";
import type { VmTarget } from "../../ssh/connect.js";
import type { App } from "../app.js";

interface SshOpts {
  agent: boolean;
  tmux: boolean;
  t?: boolean;
  L?: string[];
}

/**
 * The session's input. Node reads a file on stdin (`spuff ssh vm -- 'tar x' < backup.tar`) 64 KiB at a time, each read
 * a round trip to its thread pool; 1 MiB reads make the transfer ~1.7× faster (docs/performance.md). Pipes and
 * terminals stay as they are: a read from them can block, and a pending read would keep spuff from exiting.
 */
function sessionInput(io: App["io"]): App["io"]["stdin"] {
  if (io.stdin !== process.stdin) return io.stdin;
  try {
    if (!fstatSync(0).isFile()) return io.stdin;
  } catch {
    return io.stdin;
  }
  return createReadStream("", { fd: 0, highWaterMark: 1 << 20, autoClose: false });
}

/** The VM to connect to: by name, or the only one this machine has keys for. */
export function resolveRecord(app: App, name: string | undefined): VmRecord {
  const state = app.state();
  if (name) {
    const r = state.read(name);
    if (!r) {
      const names = state.list().map((x) => x.name);
      throw new UserError(`no VM named "${name}" on this machine`, {
        hint: names.length ? `VMs: ${names.join(", ")}` : "create one with `spuff up`",
      });
    }
    return r;
  }
  const all = state.list();
  if (all.length === 1) return all[0];
  if (all.length === 0) throw new UserError("there are no VMs", { hint: "create one with `spuff up`" });
  throw new UserError(`there are ${all.length} VMs; name one`, { hint: `VMs: ${all.map((r) => r.name).join(", ")}` });
}

/** Where and how to log in to the VM: its pinned host key and the per-VM client key. */
export function vmTarget(app: App, record: VmRecord): VmTarget {
  if (!record.endpoint) {
    throw new UserError(`${record.name} has no address yet (its creation did not finish)`, {
      hint: `check \`spuff status ${record.name}\`; remove it with \`spuff down ${record.name}\``,
    });
  }
  return {
    name: record.name,
    host: record.endpoint.host,
    port: record.endpoint.port,
    user: record.user,
    privateKey: readFileSync(app.state().clientKeyPath(record.name)),
    hostKey: record.hostKey,
  };
}

/** The agent to forward (after its preflight) and the guard's policy from the config. */
export async function guardedAgentFor(app: App, record: VmRecord): Promise<{ socket: string; policy: AgentPolicy }> {
  const config = app.config();
  const { agentSocket, askpassConfirm, preflightAgent, refusalLine } = await import("../../ssh/agent.js");
  const { gitHostPins } = await import("../../ssh/agent-hosts.js");
  const { identityAgentFor } = await import("../../ssh/openssh-config.js");
  const sock = agentSocket(config.ssh.agent_socket, identityAgentFor(hostAlias(record.name), app.io.env), app.io.env);
  await preflightAgent(sock);
  return {
    socket: sock!.path,
    policy: {
      allowedKeys: config.ssh.allowed_keys ?? [],
      signPolicy: config.ssh.sign_policy,
      logFile: join(app.state().dir, "agent.log"),
      vm: record.name,
      gitHosts: gitHostPins(config.git_hosts),
      onDecision: (d) => {
        const line = refusalLine(d);
        if (line) app.err(line);
      },
      onNotice: (line) => app.err(line),
      confirm: config.ssh.confirm ? askpassConfirm(app.io.env) : undefined,
    },
  };
}

export function register(program: Command, app: App): void {
  program
    .command("ssh [name] [command...]")
    .description("open a shell (in tmux) on a VM with your agent forwarded through spuff's guard, or run a command")
    .option("--no-agent", "do not forward the SSH agent")
    .option("--no-tmux", "plain login shell instead of `tmux new -A -s spuff`")
    .option("-t", "force a PTY for a command")
    .option("-L <forward>", "forward 127.0.0.1:LOCAL to HOST:REMOTE on the VM (repeatable)", (v: string, acc?: string[]) => [...(acc ?? []), v])
    .addHelpText(
      "after",
      `
The VM's host key is checked against the key pinned when it was created; a mismatch refuses to connect.
The forwarded agent shows only ssh.allowed_keys and, with ssh.sign_policy git-only (default), signs only SSH logins
bound (OpenSSH 8.9+ session-bind) to a pinned git host's key, as the user that host expects ("git"). Every signature
request is logged with its destination to ~/.local/state/spuff/agent.log.
The remote command's exit code becomes spuff's exit code; when spuff itself fails (unknown VM, unreachable, host key
mismatch, bad config) it exits 255, as OpenSSH's ssh does, and its messages on stderr start with "error:" or "spuff:".

Examples:
  $ spuff ssh                             shell on your only VM, attached to tmux session "spuff"
  $ spuff ssh api -- make test            run a command, stdin/stdout piped
  $ spuff ssh api -L 8080:localhost:80    shell plus a port forward
  $ spuff ssh api --no-agent -- git pull  no agent on the VM for this session`,
    )
    .action(async (name: string | undefined, command: string[], opts: SshOpts) => {
      const { dial, parseForward } = await import("../../ssh/dial.js");
      const forwards = (opts.L ?? []).map(parseForward);
      const record = resolveRecord(app, name);
      const target = vmTarget(app, record);
      // Connect first, and settle the rest while sshd works: it starts its side of the connection while ssh2 loads,
      // and computes the key exchange while spuff reads the config and asks the agent. Nothing runs on the VM and
      // nothing is forwarded before those are settled; a config error closes the connection unused.
      const dialed = dial(target.host, target.port);
      const { connectEarly, runSessionWithReconnect } = await import("../../ssh/session.js");
      const early = connectEarly(target, opts.agent, dialed);
      let config: ReturnType<typeof app.config>;
      let agent: Awaited<ReturnType<typeof guardedAgentFor>> | undefined;
      try {
        await app.prepare();
        config = app.config();
        agent = opts.agent && config.ssh.forward_agent ? await guardedAgentFor(app, record) : undefined;
      } catch (err) {
        early.cancel();
        throw err;
      }
      const interactive = command.length === 0;
      // Like OpenSSH, the words after `--` are joined with spaces and run by the remote shell.
      const remote = interactive ? (config.ssh.tmux && opts.tmux ? "tmux new -A -s spuff" : undefined) : command.join(" ");
      const io = app.io as unknown as Parameters<typeof runSessionWithReconnect>[0];
      const code = await runSessionWithReconnect({
        target,
        command: remote,
        pty: interactive || Boolean(opts.t),
        agent,
        forwards,
        stdin: sessionInput(app.io),
        stdout: io.stdout,
        stderr: io.stderr,
        env: app.io.env,
        status: (l) => app.info(l),
        // Only a tmux shell resumes where it was; a plain shell or a command cannot be re-run safely.
        reconnect: remote?.startsWith("tmux new -A") === true,
      }, early);
      if (code !== 0 && !agent && !interactive) {
        const [why, fix] = opts.agent
          ? ["ssh.forward_agent is false", "set ssh.forward_agent: true in your config (`spuff config show` prints the effective value)"]
          : ["--no-agent", "run it without --no-agent"];
        app.err(`spuff: the command failed (exit ${code}) and no SSH agent was forwarded (${why}): git over SSH on the VM has no key to log in with; ${fix}`);
      }
      process.exitCode = code;
    });
}
