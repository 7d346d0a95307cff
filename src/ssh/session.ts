import { createServer, type Server } from "node:net";
import type { Client, ClientChannel } from "ssh2";
import { ProviderError, UserError } from "../core/errors.js";
import { type AgentPolicy, GuardedAgent } from "./agent.js";
import { connect, unreachable, type VmTarget } from "./connect.js";
import type { Dialed, Forward } from "./dial.js";
import { forwardAgentWithoutWaiting } from "./ssh2.js";

export { type Forward, parseForward } from "./dial.js";

export interface SessionOptions {
  target: VmTarget;
  /** Remote command; undefined = interactive shell. */
  command?: string;
  pty: boolean;
  /** Guarded agent policy and the real agent's socket; undefined = no forwarding. */
  agent?: { socket: string; policy: AgentPolicy };
  forwards: Forward[];
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout: { write(chunk: Buffer | string): unknown; columns?: number; rows?: number };
  stderr: { write(chunk: Buffer | string): unknown };
  env: NodeJS.ProcessEnv;
  /** Status lines (forwarded ports, denied signatures, reconnects) go here. */
  status(line: string): void;
  /**
   * Reconnect with backoff when the connection drops (keepalive missed, network gone) and run the same command again.
   * Only for commands that resume — `tmux new -A` re-attaches the same session. Ctrl-C while reconnecting gives up.
   */
  reconnect?: boolean;
}

/** The connection dropped before the remote command ended (as opposed to the command exiting). */
export class ConnectionLost extends ProviderError {}

function startForwards(client: Client, forwards: Forward[]): Promise<Server[]> {
  return Promise.all(
    forwards.map(
      (f) =>
        new Promise<Server>((resolve, reject) => {
          const srv = createServer((sock) => {
            client.forwardOut("127.0.0.1", f.localPort, f.remoteHost, f.remotePort, (err, ch) => {
              if (err) return sock.destroy();
              sock.pipe(ch).pipe(sock);
              sock.on("error", () => ch.close());
              ch.on("error", () => sock.destroy());
            });
          });
          srv.once("error", (e) => reject(new UserError(`cannot listen on 127.0.0.1:${f.localPort}: ${e.message}`, { hint: "pick another local port" })));
          srv.listen(f.localPort, "127.0.0.1", () => resolve(srv));
        }),
    ),
  );
}

/**
 * Runs a session and, when `reconnect` is set, reconnects after a dropped connection with backoff (1 s doubling to
 * 30 s, for up to 10 minutes), printing one status line per attempt. A host key mismatch or a login failure is not
 * retried. Ctrl-C (SIGINT) while waiting to reconnect gives up with the original error.
 */
export async function runSessionWithReconnect(o: SessionOptions, early?: EarlyConnection): Promise<number> {
  for (let next = early; ; ) {
    try {
      return await runSession(o, next);
    } catch (err) {
      if (!o.reconnect || !(err instanceof ConnectionLost)) throw err;
      o.status(`spuff: connection to ${o.target.name} lost; reconnecting (Ctrl-C gives up)…`);
      next = await reconnectWait(o, err);
      o.status(`spuff: reconnected to ${o.target.name}`);
    }
  }
}

/** Retries the connection with backoff; the one that succeeds carries the resumed session (no second handshake). */
async function reconnectWait(o: SessionOptions, lost: ConnectionLost): Promise<EarlyConnection> {
  const ac = new AbortController();
  const onInt = () => ac.abort();
  process.once("SIGINT", onInt);
  try {
    const deadline = Date.now() + 10 * 60_000;
    for (let delay = 1000, attempt = 1; ; delay = Math.min(delay * 2, 30_000), attempt++) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        ac.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (ac.signal.aborted) throw lost;
      const conn = connectEarly(o.target, Boolean(o.agent), undefined, { readyTimeout: 10_000, signal: ac.signal });
      try {
        await conn.client;
        return conn;
      } catch (err) {
        if (ac.signal.aborted || err instanceof UserError) throw ac.signal.aborted ? lost : err;
        if (Date.now() > deadline) throw lost;
        o.status(`spuff: reconnect attempt ${attempt} failed (${(err as Error).message}); retrying in ${Math.round(Math.min(delay * 2, 30_000) / 1000)} s`);
      }
    }
  } finally {
    process.off("SIGINT", onInt);
  }
}

/** A session's connection, opened before the session's options are settled (`connectEarly`). */
export interface EarlyConnection {
  client: Promise<Client>;
  /** The guard ssh2 forwards the agent through; it refuses every request until the session arms it. */
  agent?: GuardedAgent;
  /** Closes the connection when the session will not run after all. */
  cancel(): void;
}

/**
 * Starts connecting to `target` at once, so that what the session still has to settle (the config, the agent's
 * preflight) runs while sshd works on the key exchange and the login. Nothing is forwarded before `runSession`.
 */
export function connectEarly(
  target: VmTarget,
  forwardAgent: boolean,
  dialed?: Dialed,
  opts: { readyTimeout?: number; signal?: AbortSignal } = {},
): EarlyConnection {
  const agent = forwardAgent ? new GuardedAgent() : undefined;
  const ac = new AbortController();
  if (opts.signal) {
    if (opts.signal.aborted) ac.abort(opts.signal.reason);
    else opts.signal.addEventListener("abort", () => ac.abort(opts.signal?.reason), { once: true });
  }
  const failed = dialed?.failure();
  const client = failed
    ? Promise.reject(unreachable(target, failed))
    : connect(target, {
        ...(dialed ? { sock: dialed.sock } : {}),
        // The agent answers forwarded requests; the forwarding itself is asked for with the session (runSession).
        ...(agent ? { agent: agent as never } : {}),
        // Log in with the per-VM key only; the user's agent is for the VM's onward git logins, never for this one.
        authHandler: ["publickey"] as never,
        keepaliveInterval: 30_000,
        keepaliveCountMax: 3,
        ...(opts.readyTimeout ? { readyTimeout: opts.readyTimeout } : {}),
      }, ac.signal);
  // A failure is reported where the session awaits the client; until then it must not count as unhandled.
  client.catch(() => {});
  const cancel = () => {
    // At once, also mid-handshake: a silent sshd must not hold spuff for the handshake's timeout.
    ac.abort(new Error("cancelled"));
    dialed?.sock.destroy();
    void client.then((c) => c.end(), () => {});
  };
  return { client, agent, cancel };
}

/**
 * Runs one SSH session on the VM: a command with piped stdio, or an interactive PTY. Returns the remote exit code.
 * The host key is verified before anything else, so the agent is only ever forwarded to the pinned VM.
 */
export async function runSession(o: SessionOptions, early?: EarlyConnection): Promise<number> {
  const conn = early ?? connectEarly(o.target, Boolean(o.agent));
  if (o.agent) conn.agent?.arm(o.agent.socket, o.agent.policy);
  const agent = o.agent ? conn.agent : undefined;
  const client = await conn.client;
  const servers = await startForwards(client, o.forwards).catch((e) => {
    client.end();
    throw e;
  });
  for (const f of o.forwards) o.status(`forwarding 127.0.0.1:${f.localPort} → ${f.remoteHost}:${f.remotePort} on ${o.target.name}`);
  const raw = o.pty && o.stdin.isTTY && typeof o.stdin.setRawMode === "function";
  // Undo raw mode once, and only if this session turned it on: the connection's "close" comes after the session
  // ended, when the terminal may already belong to someone else (the TUI's picker turns raw mode on again).
  let rawOn = false;
  const restore = () => {
    if (rawOn) o.stdin.setRawMode?.(false);
    rawOn = false;
  };
  try {
    return await new Promise<number>((resolve, reject) => {
      const ptyOpts = o.pty
        ? { term: o.env.TERM || "xterm-256color", rows: o.stdout.rows ?? 24, cols: o.stdout.columns ?? 80 }
        : undefined;
      const onChannel = (err: Error | undefined, stream: ClientChannel) => {
        if (err) return reject(new ProviderError(`cannot start a session on ${o.target.name}: ${err.message}`));
        let code = 0;
        const onResize = () => stream.setWindow(o.stdout.rows ?? 24, o.stdout.columns ?? 80, 0, 0);
        if (o.pty) process.on("SIGWINCH", onResize);
        if (raw) {
          o.stdin.setRawMode?.(true);
          rawOn = true;
        }
        o.stdin.pipe(stream);
        // Write rather than pipe: the CLI's output streams only promise write() (tests capture them in memory).
        stream.on("data", (d: Buffer) => o.stdout.write(d));
        stream.stderr.on("data", (d: Buffer) => o.stderr.write(d));
        let exited = false;
        stream.on("exit", (c: number | null, signal?: string) => {
          exited = true;
          code = c ?? (signal ? 128 + 1 : 255);
        });
        stream.on("close", () => {
          if (o.pty) process.off("SIGWINCH", onResize);
          o.stdin.unpipe(stream);
          restore();
          // sshd always reports how a command ended; a channel closed without that went down with the connection.
          if (exited) resolve(code);
          else reject(lostError());
        });
      };
      const lostError = () =>
        new ConnectionLost(`the connection to ${o.target.name} was lost`, { hint: `reconnect with \`spuff ssh ${o.target.name}\`; a tmux session keeps your work` });
      client.on("close", () => {
        restore();
        reject(lostError());
      });
      // Keepalive timeouts and resets surface as errors; the "close" that follows reports them.
      client.on("error", () => {});
      if (agent) forwardAgentWithoutWaiting(client);
      if (o.command !== undefined) client.exec(o.command, (ptyOpts ? { pty: ptyOpts } : {}) as never, onChannel);
      else client.shell(ptyOpts ?? false, onChannel);
    });
  } finally {
    restore();
    for (const s of servers) s.close();
    client.end();
    if (typeof (o.stdin as { pause?: () => void }).pause === "function") (o.stdin as { pause: () => void }).pause();
  }
}
