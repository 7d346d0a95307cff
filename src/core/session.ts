import { spawn } from "node:child_process";
import { closeSync, copyFileSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, realpathSync, renameSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Config } from "../config/defaults.js";
import type { AgentPolicy, SignDecision } from "../ssh/agent.js";
import type { VmTarget } from "../ssh/connect.js";
import type { Forward } from "../ssh/dial.js";
import type { GuardReply, GuardSettings } from "../ssh/guard-client.js";
import type { EarlyConnection, SessionOptions } from "../ssh/session.js";
import { ProviderError, UserError } from "./errors.js";
import { configDir, hostAlias, type StateStore, stateDir, type VmRecord, writeFileAtomic } from "./state.js";

/**
 * Opening a session on a VM, in one place for `spuff ssh`, the TUI, `spuff doctor` and the guard daemon: which VM and
 * how to reach it (pinned host key, per-VM key), which of the user's agents is guarded and with which policy, the tmux
 * command and when a dropped connection is resumed, and the generated OpenSSH config that routes plain `ssh` through
 * the same guard. src/ssh does the SSH; this module hands it records and settings.
 */

/** What a session needs of the running spuff (the CLI's App provides it). */
export interface SessionContext {
  io: {
    env: NodeJS.ProcessEnv;
    stdin: SessionOptions["stdin"];
    stdout: { write(chunk: string): unknown; columns?: number; rows?: number };
    stderr: { write(chunk: string): unknown };
  };
  prepare?(): Promise<void>;
  config(): Config;
  state(): StateStore;
  /** Status lines (stderr; silent under --json). */
  info(line: string): void;
  /** Lines that must be seen (stderr). */
  err(line: string): void;
}

/** The VM to connect to: by name, or the only one this machine has keys for. */
export function resolveRecord(state: StateStore, name: string | undefined): VmRecord {
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
export function vmTarget(state: StateStore, record: VmRecord): VmTarget {
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
    privateKey: readFileSync(state.clientKeyPath(record.name)),
    hostKey: record.hostKey,
    // Mid-rotation (an up that was interrupted between the VM's switch and its confirmation) either key is the VM's.
    ...(record.nextHostKey ? { nextHostKey: record.nextHostKey } : {}),
  };
}

/** The OpenSSH user config spuff asks (`ssh -G -F`) and installs its Include into: $SPUFF_SSH_CONFIG, else ~/.ssh/config. */
export function userSshConfig(env: NodeJS.ProcessEnv): { file: string; explicit: boolean } {
  if (env.SPUFF_SSH_CONFIG) return { file: env.SPUFF_SSH_CONFIG, explicit: true };
  return { file: join(env.HOME || homedir(), ".ssh", "config"), explicit: false };
}

export interface ChosenAgent {
  path: string;
  /** The setting or OpenSSH option that named it: ssh.agent_socket, IdentityAgent, SSH_AUTH_SOCK. */
  source: string;
  /** Why that one, in a sentence (for `doctor` and `spuff guard status`). */
  why: string;
}

/**
 * The agent OpenSSH would use for `spuff-NAME` (and would forward with `ForwardAgent yes`): ssh.agent_socket when the
 * config sets it; else the `IdentityAgent` OpenSSH resolves for the host (`ssh -G`, with Include and Match evaluated,
 * tokens and `~` expanded; e.g. a 1Password agent); else SSH_AUTH_SOCK. `IdentityAgent none` means no agent.
 */
export async function chooseAgent(config: Config, env: NodeJS.ProcessEnv, vm: string): Promise<ChosenAgent> {
  const { expandPath } = await import("../ssh/agent.js");
  if (config.ssh.agent_socket) {
    return { path: expandPath(config.ssh.agent_socket, env), source: "ssh.agent_socket", why: "ssh.agent_socket in the spuff config (it comes first)" };
  }
  const alias = hostAlias(vm);
  const { resolveOpenSsh } = await import("../ssh/openssh-config.js");
  const user = userSshConfig(env);
  const r = await resolveOpenSsh(alias, env, { configFile: user.explicit ? user.file : undefined });
  const asked = `\`ssh -G${user.explicit ? ` -F ${user.file}` : ""} ${alias}\``;
  const fromEnv = (why: string): ChosenAgent => {
    if (!env.SSH_AUTH_SOCK) {
      throw new UserError("no SSH agent to forward (SSH_AUTH_SOCK is not set)", {
        notes: [why],
        hint: ["start one and add your key: `eval \"$(ssh-agent)\" && ssh-add`", "or connect without it: `spuff ssh --no-agent`"],
      });
    }
    return { path: env.SSH_AUTH_SOCK, source: "SSH_AUTH_SOCK", why: `SSH_AUTH_SOCK: ${why}` };
  };
  if (r.error !== undefined) return fromEnv(`the OpenSSH config could not be asked: ${r.error}`);
  const ia = r.options.get("identityagent");
  if (ia === undefined) return fromEnv(`${asked} sets no IdentityAgent`);
  if (ia === "SSH_AUTH_SOCK") return fromEnv(`${asked} says IdentityAgent SSH_AUTH_SOCK`);
  if (ia.toLowerCase() === "none") {
    throw new UserError(`your OpenSSH config sets \`IdentityAgent none\` for ${alias} (${asked}): there is no agent to forward`, {
      hint: ["set ssh.agent_socket in the spuff config, or change IdentityAgent for that host", "or connect without it: `spuff ssh --no-agent`"],
    });
  }
  return { path: expandPath(ia, env), source: `IdentityAgent for ${alias}`, why: `IdentityAgent for ${alias}, as OpenSSH resolves it (${asked})` };
}

/** Everything the guard needs for one VM (config and the chosen agent, after its preflight); serialisable. */
export async function guardSettings(ctx: SessionContext, record: VmRecord): Promise<GuardSettings> {
  const config = ctx.config();
  const env = ctx.io.env;
  const agent = await chooseAgent(config, env, record.name);
  const { preflightAgent } = await import("../ssh/agent.js");
  const { gitHostPins } = await import("../ssh/agent-hosts.js");
  await preflightAgent(agent);
  const askpass = ["SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY"];
  return {
    vm: record.name,
    agent,
    allowedKeys: config.ssh.allowed_keys ?? [],
    signPolicy: config.ssh.sign_policy,
    logFile: join(ctx.state().dir, "agent.log"),
    confirm: config.ssh.confirm ? { env: Object.fromEntries(askpass.flatMap((k) => (env[k] ? [[k, env[k] as string]] : []))) } : undefined,
    firstHopHostKey: record.hostKey,
    gitHosts: gitHostPins(config.git_hosts),
  };
}

/** The guarded agent for an in-process session: the chosen agent's socket and the policy, refusals shown locally. */
export async function guardFor(ctx: SessionContext, record: VmRecord): Promise<{ socket: string; /** why this agent */ source: string; policy: AgentPolicy }> {
  const s = await guardSettings(ctx, record);
  const { guardPolicy } = await import("../ssh/guard-daemon.js");
  const { refusalLine } = await import("../ssh/agent.js");
  const onDecision = (d: SignDecision) => {
    const line = refusalLine(d);
    if (line) ctx.err(line);
  };
  return { socket: s.agent.path, source: s.agent.why, policy: guardPolicy(s, onDecision, (line) => ctx.err(line)) };
}

/** The interactive shell: tmux, attached to the session "spuff" (created if missing, re-attached after a drop). */
export const TMUX_SHELL = "tmux new -A -s spuff";

/** The remote command, whether it gets a PTY, and whether a dropped connection is resumed. */
export function sessionPlan(config: Config, o: { command?: string[]; tmux?: boolean; tty?: boolean }): { command?: string; pty: boolean; reconnect: boolean } {
  const interactive = !o.command?.length;
  // Like OpenSSH, the words after `--` are joined with spaces and run by the remote shell.
  const command = interactive ? (config.ssh.tmux && o.tmux !== false ? TMUX_SHELL : undefined) : o.command?.join(" ");
  // Only a tmux shell resumes where it was; a plain shell or a command cannot be re-run safely.
  return { command, pty: interactive || Boolean(o.tty), reconnect: command === TMUX_SHELL };
}

export interface OpenOptions {
  record: VmRecord;
  /** Words after `--`; none = an interactive shell. */
  command?: string[];
  /** false: a plain login shell instead of tmux (--no-tmux). */
  tmux?: boolean;
  /** false: no agent (--no-agent); otherwise ssh.forward_agent decides. */
  agent?: boolean;
  /** Force a PTY for a command (-t). */
  tty?: boolean;
  forwards?: Forward[];
  /** Replaces ctx.io.stdin (e.g. a file read in large chunks). */
  stdin?: SessionOptions["stdin"];
  /** A connection already opening (`connectEarly`): the config and the agent are settled during its handshake. */
  early?: EarlyConnection;
  target?: VmTarget;
}

/**
 * Opens a session on the VM: loads the config, guards the agent, runs the command or the (tmux) shell, and resumes a
 * dropped tmux shell. A config or agent error closes an early connection unused. Returns the remote exit code and
 * whether an agent was forwarded.
 */
export async function openSession(ctx: SessionContext, o: OpenOptions): Promise<{ code: number; agent: boolean }> {
  const target = o.target ?? vmTarget(ctx.state(), o.record);
  let config: Config;
  let agent: Awaited<ReturnType<typeof guardFor>> | undefined;
  try {
    await ctx.prepare?.();
    config = ctx.config();
    agent = o.agent !== false && config.ssh.forward_agent ? await guardFor(ctx, o.record) : undefined;
  } catch (err) {
    o.early?.cancel();
    throw err;
  }
  const plan = sessionPlan(config, o);
  const { runSessionWithReconnect } = await import("../ssh/session.js");
  const code = await runSessionWithReconnect(
    {
      target,
      command: plan.command,
      pty: plan.pty,
      reconnect: plan.reconnect,
      agent,
      forwards: o.forwards ?? [],
      stdin: o.stdin ?? ctx.io.stdin,
      // The CLI's streams take strings; ssh2's data is written as it comes (Buffers), which they accept too.
      stdout: ctx.io.stdout as SessionOptions["stdout"],
      stderr: ctx.io.stderr as SessionOptions["stderr"],
      env: ctx.io.env,
      status: (l) => ctx.info(l),
    },
    o.early,
  );
  return { code, agent: agent !== undefined };
}

// ---- The generated OpenSSH config and the guard daemon for plain OpenSSH ----

/** Path of the generated OpenSSH config ($XDG_CONFIG_HOME/spuff/ssh_config). */
export function sshConfigPath(env: NodeJS.ProcessEnv): string {
  return join(configDir(env), "ssh_config");
}

/** The guard daemon's directory: its control socket, one agent socket per VM, its lock and log. */
export function guardDir(env: NodeJS.ProcessEnv): string {
  return join(stateDir(env), "guard");
}

/** How OpenSSH runs this spuff: this Node and this spuff's bin.cjs, by absolute path (no PATH needed). */
export function spuffCommand(): string[] {
  const candidates = ["../cli/bin.cjs", "../../dist/src/cli/bin.cjs"].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  return [process.execPath, candidates.find((p) => existsSync(p)) ?? candidates[0]];
}

/**
 * This spuff's build, as the guard daemon reports it: Node and bin.cjs by path, and when bin.cjs and the bundle next to
 * it (spuff.cjs, what bin.cjs runs) were last written.
 */
export function spuffBuild(): string {
  const [node, bin] = spuffCommand();
  const mtime = (file: string) => {
    try {
      return statSync(file).mtimeMs;
    } catch {
      return 0; // not built: compared as it is
    }
  };
  return `${node} ${bin} ${mtime(bin)} ${mtime(join(dirname(bin), "spuff.cjs"))}`;
}

/** Renders the generated config from the VM records: one block per VM that has an address. */
export async function renderGeneratedConfig(env: NodeJS.ProcessEnv, state: StateStore): Promise<string> {
  const { renderSshConfig } = await import("../ssh/sshconfig.js");
  const { vmSocket } = await import("../ssh/guard-client.js");
  const dir = guardDir(env);
  const entries = state.list().flatMap((r) =>
    r.endpoint
      ? [{ alias: hostAlias(r.name), name: r.name, host: r.endpoint.host, port: r.endpoint.port, user: r.user, identityFile: state.clientKeyPath(r.name), guardSocket: vmSocket(dir, r.name) }]
      : [],
  );
  return renderSshConfig(entries, state.knownHostsPath(), spuffCommand());
}

/** Writes the generated config; returns its path. */
export async function writeSshConfig(env: NodeJS.ProcessEnv, state: StateStore): Promise<string> {
  const path = sshConfigPath(env);
  writeFileAtomic(path, await renderGeneratedConfig(env, state), 0o600);
  return path;
}

/**
 * After the set of VMs changed (`up`, `down`, `reap`, the TUI): rewrites the generated config and tells a running guard
 * daemon to look at the records (it stops serving removed VMs, and stops when none is left). Returns a warning, if any.
 */
export async function sshConfigChanged(env: NodeJS.ProcessEnv, state: StateStore): Promise<string | undefined> {
  try {
    await writeSshConfig(env, state);
  } catch (err) {
    return `could not update the generated ssh config: ${(err as Error).message}`;
  }
  const { guardRequest } = await import("../ssh/guard-client.js");
  await guardRequest(guardDir(env), { op: "rescan" }, 2000).catch(() => {}); // no daemon running: nothing to tell
  return undefined;
}

export type IncludeResult =
  | { status: "added" | "removed"; file: string; backup?: string }
  | { status: "present" | "absent"; file: string }
  /** The file is managed elsewhere (a symlink, or read-only): spuff leaves it alone; the user changes it. */
  | { status: "left-alone"; file: string; why: string; wanted: "add" | "remove" };

/** Why spuff must not rewrite the user's OpenSSH config, if it must not (a link into a dotfiles repo, a read-only file). */
function managedElsewhere(file: string): string | undefined {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(file);
  } catch {
    return undefined; // does not exist yet: spuff creates it
  }
  if (st.isSymbolicLink()) {
    let target = "?";
    try {
      target = realpathSync(file);
    } catch {
      /* dangling */
    }
    return `it is a symlink to ${target} (home-manager, stow or a dotfiles repository manage it)`;
  }
  // The mode, not access(2): root may write anything, and a file made read-only on purpose stays so.
  if ((st.mode & 0o222) === 0) return `it is read-only (mode ${(st.mode & 0o777).toString(8)})`;
  return undefined;
}

/** Adds (or removes) the Include line of the generated config in the user's OpenSSH config; backs the file up first. */
export async function editInclude(env: NodeJS.ProcessEnv, want: "add" | "remove"): Promise<IncludeResult> {
  const { includeLine, withInclude, withoutInclude } = await import("../ssh/sshconfig.js");
  const { file } = userSshConfig(env);
  const line = includeLine(sshConfigPath(env));
  const current = existsSync(file) ? readFileSync(file, "utf8") : "";
  const next = want === "add" ? withInclude(current, line) : withoutInclude(current, line);
  if (next === undefined) return { status: want === "add" ? "present" : "absent", file };
  const why = managedElsewhere(file);
  if (why) return { status: "left-alone", file, why, wanted: want };
  let backup: string | undefined;
  if (existsSync(file)) {
    backup = `${file}.spuff-backup`;
    copyFileSync(file, backup);
  }
  writeFileAtomic(file, next, existsSync(file) ? statSync(file).mode & 0o777 : 0o600);
  return { status: want === "add" ? "added" : "removed", file, backup };
}

/**
 * `spuff guard ensure NAME`, run by OpenSSH (`Match exec`) before every connection to spuff-NAME: settles the policy
 * and the agent as `spuff ssh` would, makes sure the daemon runs (starting it detached if not), and arms it for NAME.
 * Throws (so OpenSSH forwards no agent) when the guard cannot serve; returns the socket it serves, or undefined when
 * ssh.forward_agent is false.
 */
export async function ensureGuard(ctx: SessionContext, name: string): Promise<{ socket: string; agent: ChosenAgent; pid: number } | undefined> {
  const record = resolveRecord(ctx.state(), name);
  const config = ctx.config();
  if (!config.ssh.forward_agent) return undefined; // no agent, as asked: nothing to serve, nothing to complain about
  const settings = await guardSettings(ctx, record);
  const dir = guardDir(ctx.io.env);
  const { guardRequest, vmSocket } = await import("../ssh/guard-client.js");
  await startDaemon(dir, ctx.io.env);
  const reply = await guardRequest(dir, { op: "arm", settings });
  if (!reply.ok) throw new ProviderError(`the guard daemon cannot serve ${name}: ${reply.error}`, { hint: `see ${join(dir, "daemon.log")}` });
  return { socket: vmSocket(dir, name), agent: settings.agent, pid: reply.pid };
}

/**
 * `spuff guard ensure NAME` as OpenSSH runs it: like `ensureGuard`, but the daemon settles the settings (it has the
 * config code and the agent's parser loaded; this process loads neither), in this process's environment and directory.
 */
export async function ensureForOpenSsh(env: NodeJS.ProcessEnv, cwd: string, vm: string): Promise<GuardReply> {
  const dir = guardDir(env);
  try {
    await startDaemon(dir, env);
  } catch (err) {
    const e = err as UserError;
    return { ok: false, error: e.message, hint: e.hints?.[0] };
  }
  const { guardRequest } = await import("../ssh/guard-client.js");
  const defined = Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
  // The agent's preflight may wait for the agent (5 s), the config's load for nothing long.
  return guardRequest(dir, { op: "ensure", vm, env: defined, cwd }, 30_000).catch((err: Error) => ({ ok: false as const, error: err.message }));
}

/**
 * Starts a guard daemon, detached (it outlives this command), without waiting for it; its output goes to daemon.log
 * (returned). `spuff ssh` starts one this way after a direct session, so that the next command finds a warm connection.
 */
export function spawnGuardDaemon(dir: string, env: NodeJS.ProcessEnv): string {
  const log = join(dir, "daemon.log");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // One line per connection adds up over months: past 1 MiB the log starts again (the previous one kept as .1).
  if (existsSync(log) && statSync(log).size > 1 << 20) renameSync(log, `${log}.1`);
  const fd = openSync(log, "a", 0o600);
  // Two daemons started at once sort themselves out (`guard serve` takes the directory's lock; the second one sees the
  // first answer and exits). Its output goes to daemon.log, not OpenSSH's stderr: a reader of that (VS Code) would
  // wait for the daemon to close it.
  const [node, bin] = spuffCommand();
  spawn(node, [bin, "guard", "serve"], { detached: true, stdio: ["ignore", fd, fd], cwd: dir, env }).unref();
  closeSync(fd);
  return log;
}

/** Replaces a guard daemon of another build (after an upgrade) with this one, and waits until it answers. */
export async function restartGuardDaemon(env: NodeJS.ProcessEnv): Promise<void> {
  await startDaemon(guardDir(env), env);
}

/** Starts the guard daemon unless one of this build answers: detached (it outlives this command), its output in daemon.log. */
async function startDaemon(dir: string, env: NodeJS.ProcessEnv): Promise<void> {
  const { guardRequest } = await import("../ssh/guard-client.js");
  const running = await guardRequest(dir, { op: "ping" }, 2000).catch(() => undefined);
  if (running?.ok && running.build === spuffBuild()) return;
  // Another spuff's daemon (this one was upgraded or moved): its guard code is not this one's. Replace it.
  if (running) {
    await guardRequest(dir, { op: "stop" }, 2000).catch(() => {});
    for (let i = 0; i < 40 && (await guardRequest(dir, { op: "ping" }, 500).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 50));
  }
  const log = spawnGuardDaemon(dir, env);
  const deadline = Date.now() + 10_000;
  for (let delay = 20; Date.now() < deadline; delay = Math.min(delay * 2, 200)) {
    await new Promise((r) => setTimeout(r, delay));
    if (await guardRequest(dir, { op: "ping" }, 1000).then(() => true, () => false)) return;
  }
  const tail = existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").slice(-3) : [];
  throw new ProviderError("the guard daemon did not start within 10 s", { notes: tail, hint: `see ${log}; \`spuff guard serve\` runs it in the foreground` });
}
