import { createHash } from "node:crypto";
import type { ClientChannel, Client as ClientType, ConnectConfig } from "ssh2";
import { ProviderError, UserError } from "../core/errors.js";
import { Client, parseKey } from "./ssh2.js";

/** Everything needed to reach one VM with its pinned host key. */
export interface VmTarget {
  name: string;
  host: string;
  port: number;
  user: string;
  privateKey: string | Buffer;
  /** The pinned host public key, "ssh-ed25519 AAAA...". */
  hostKey: string;
  /** During a host key rotation (docs/adr/0008-host-key-rotation.md): the VM's new key, accepted as well. */
  nextHostKey?: string;
}

export function fingerprintOf(keyBlob: Buffer): string {
  return `SHA256:${createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "")}`;
}

/** Fingerprint of an OpenSSH public key line. */
export function fingerprintOfLine(line: string): string {
  const parsed = parseKey(line);
  if (parsed instanceof Error) throw new UserError(`not a public key: ${line.slice(0, 40)}…`);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  return fingerprintOf(key.getPublicSSH());
}

export class HostKeyMismatch extends UserError {}

/** ssh2 connect options that accept exactly the pinned host key(s) and nothing else. */
export function pinnedConnectConfig(target: VmTarget, onMismatch: (seen: string) => void): ConnectConfig {
  const expected = [target.hostKey, ...(target.nextHostKey ? [target.nextHostKey] : [])].map(fingerprintOfLine);
  return {
    host: target.host,
    port: target.port,
    username: target.user,
    privateKey: target.privateKey,
    hostVerifier: (key: Buffer) => {
      const seen = fingerprintOf(key);
      if (expected.includes(seen)) return true;
      onMismatch(seen);
      return false;
    },
    readyTimeout: 20_000,
    // Straight to the per-VM key: ssh2's default asks with "none" first, one round trip that can only fail.
    authHandler: ["publickey"] as never,
  };
}

export function hostKeyMismatchError(target: VmTarget, seen: string): HostKeyMismatch {
  return new HostKeyMismatch(
    `host key of ${target.name} (${target.host}:${target.port}) does not match the key pinned when it was created`,
    {
      notes: [`expected ${fingerprintOfLine(target.hostKey)}`, `got      ${seen}`],
      hint: [
        "likely causes: the VM was recreated outside spuff, its IP address was reused by another machine, or someone is intercepting the connection",
        `if the VM is gone, run \`spuff down ${target.name}\` and \`spuff up\` again; spuff never accepts a changed key`,
      ],
    },
  );
}

/**
 * A socket-level failure (refused, unreachable, timed out) as an error that says where and what to check. ssh2 tags
 * its errors with a `level`; an error without one is the dialed socket's own, before ssh2 took it over.
 */
export function unreachable(target: VmTarget, err: Error & { level?: string; code?: string }): Error {
  if (err.level !== undefined && err.level !== "client-socket" && err.level !== "client-timeout") return err;
  const what = err.level === "client-timeout" ? "did not complete the SSH handshake in time" : err.code ?? err.message;
  return new ProviderError(`cannot reach ${target.name} at ${target.host}:${target.port}: ${what}`, {
    cause: err,
    hint: `is the VM running and its SSH port open? \`spuff status ${target.name}\``,
  });
}

/**
 * Opens a connection with the pinned host key; rejects with a clear error on mismatch. `until` "handshake": resolves
 * once the key exchange is done, before any login: ssh2 has then checked the server's signature over the exchange
 * hash with the pinned key, which shows the server holds its private half (the caller ends the connection).
 */
export function connect(target: VmTarget, extra: Partial<ConnectConfig> = {}, signal?: AbortSignal, until: "ready" | "handshake" = "ready"): Promise<ClientType> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    let mismatch: string | undefined;
    let settled = false;
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      if (err === undefined) resolve(client);
      else {
        // Not end(): mid-handshake, a graceful close would wait for a peer that may never answer.
        client.destroy();
        reject(err);
      }
    };
    const onAbort = () => settle(signal?.reason ?? new Error("aborted"));
    signal?.addEventListener("abort", onAbort, { once: true });
    if (until === "handshake") client.once("handshake", () => settle());
    else client.once("ready", () => settle());
    // ssh2 may emit more than one error (e.g. a timeout, then the lost connection): listen for all of them.
    client.on("error", (err) => settle(mismatch ? hostKeyMismatchError(target, mismatch) : unreachable(target, err)));
    client.connect({ ...pinnedConnectConfig(target, (seen) => (mismatch = seen)), ...extra });
    // TCP_NODELAY like OpenSSH (see dial.ts); ssh2 never sets it. On the socket ssh2 opened or the one it was handed.
    client.setNoDelay(true);
  });
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs one command on the VM without a PTY and collects its output; fails after `timeoutMs`. `onStdout` also gets
 * the output as it arrives.
 */
export async function execOnVm(
  target: VmTarget,
  command: string,
  signal?: AbortSignal,
  timeoutMs = 15 * 60_000,
  onStdout?: (chunk: string) => void,
): Promise<ExecResult> {
  const client = await connect(target, {}, signal);
  try {
    return await execOnClient(client, target, command, signal, timeoutMs, onStdout);
  } finally {
    client.end();
  }
}

/** The connection closed under a running command: neither spuff (abort, timeout) nor the command ended it. */
export class ConnectionDropped extends ProviderError {}

/**
 * `execOnVm` over a connection that is already open (and stays open; only the command's channel is closed):
 * `converseOnClient` with no input, its parameters and defaults.
 */
export async function execOnClient(...args: Parameters<typeof converseOnClient>): Promise<ExecResult> {
  return (await converseOnClient(...args)).close();
}

/** A command on the VM that spuff talks to: lines to its stdin, its answers read from its stdout as they come. */
export interface Conversation {
  /** What it printed since the last answer, once that holds a whole line or it has exited. */
  answer(): Promise<string>;
  /** Its exit code and stderr once it has exited (stdout: what no answer took). */
  exited(): ExecResult | undefined;
  send(text: string): void;
  /** Ends its input and waits for it to exit. */
  close(): Promise<ExecResult>;
}

/**
 * Runs one command on the VM without a PTY, its stdin open for `send`. It fails (every answer, and `close`) when
 * `timeoutMs` passes, the signal aborts or the connection drops; a channel stopped that way is closed, not left open.
 */
export async function converseOnClient(
  client: ClientType,
  target: VmTarget,
  command: string,
  signal?: AbortSignal,
  timeoutMs = 15 * 60_000,
  onStdout?: (chunk: string) => void,
): Promise<Conversation> {
  let channel: ClientChannel | undefined;
  let stdout = "";
  let stderr = "";
  let code = 0;
  let result: ExecResult | undefined;
  let wake = () => {};
  let opened: (c: ClientChannel) => void = () => {};
  const done = new Promise<ExecResult>((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      client.off("close", onClose);
    };
    const fail = (err: unknown) => {
      cleanup();
      // Stopped before it ended: on a connection that stays open, its channel must not linger.
      try {
        channel?.signal("TERM");
        channel?.close();
      } catch {
        // the connection is gone; nothing to close
      }
      reject(err);
    };
    const timer = setTimeout(() => fail(new ProviderError(`\`${command}\` on ${target.name} did not finish within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
    const onAbort = () => fail(signal?.reason);
    const onClose = () => fail(new ConnectionDropped(`the connection to ${target.name} closed while running \`${command}\``));
    signal?.addEventListener("abort", onAbort, { once: true });
    client.on("close", onClose);
    // ssh2 throws at once on a connection that is already closed: that, too, must clear the timer and listeners.
    try {
      client.exec(command, (err, stream) => {
        if (err) return fail(err);
        channel = stream;
        stream.on("data", (d: Buffer) => {
          stdout += d.toString();
          onStdout?.(d.toString());
          wake();
        });
        stream.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        stream.on("exit", (c: number | null) => (code = c ?? 255));
        stream.on("close", () => {
          cleanup();
          result = { code, stdout, stderr };
          resolve(result);
        });
        opened(stream);
      });
    } catch (err) {
      fail(err);
    }
  });
  done.catch(() => {}); // every answer and close() report it
  const stream = await Promise.race([new Promise<ClientChannel>((r) => (opened = r)), done.then(() => undefined)]);
  if (!stream) throw new ProviderError(`\`${command}\` on ${target.name} closed before it started`);
  return {
    async answer() {
      while (!stdout.includes("\n") && !result) await Promise.race([new Promise<void>((r) => (wake = r)), done]);
      const text = stdout;
      stdout = "";
      if (result) result = { ...result, stdout: "" };
      return text;
    },
    exited: () => result,
    send: (text) => stream.write(text),
    async close() {
      stream.end();
      const r = await done;
      return { ...r, stdout };
    },
  };
}

/**
 * Follows a growing file on the VM (`tail -F`) and hands each complete line to `onLine` until `stop()`. Best effort:
 * a failure to follow is silent (it only adds detail to a wait that goes on without it). With `client`, on a channel
 * of that connection (no login of its own).
 */
export function followOnVm(
  target: VmTarget,
  path: string,
  onLine: (line: string) => void,
  signal?: AbortSignal,
  client?: ClientType,
): { stop(): void } {
  const ac = new AbortController();
  const stop = () => ac.abort();
  signal?.addEventListener("abort", stop, { once: true });
  let rest = "";
  const command = `sudo -n tail -n +1 -F ${path} 2>/dev/null`;
  const onChunk = (chunk: string) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop() ?? "";
    for (const l of lines) if (l.trim()) onLine(l.trimEnd());
  };
  const day = 24 * 3600_000;
  (client ? execOnClient(client, target, command, ac.signal, day, onChunk) : execOnVm(target, command, ac.signal, day, onChunk)).catch(() => {});
  return {
    stop() {
      signal?.removeEventListener("abort", stop);
      stop();
    },
  };
}

/**
 * Waits until the VM's sshd answers with the pinned host key and accepts the per-VM key. A host key mismatch
 * stops the wait at once (it will not fix itself); connection refusals and timeouts are retried until `timeoutMs`.
 */
export async function waitForSsh(target: VmTarget, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<void> {
  (await connectWhenUp(target, opts.timeoutMs, opts.signal)).end();
}

/** How often an idle kept login asks sshd for a sign of life; a silent peer counts as dropped after 4 (2 minutes). */
const KEEPALIVE = { keepaliveInterval: 30_000, keepaliveCountMax: 4 };

async function connectWhenUp(target: VmTarget, timeoutMs: number, signal?: AbortSignal, extra: Partial<ConnectConfig> = {}): Promise<ClientType> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (let delay = 250; Date.now() < deadline; delay = Math.min(delay * 1.5, 3000)) {
    signal?.throwIfAborted();
    try {
      return await connect(target, { readyTimeout: Math.max(1000, Math.min(20_000, deadline - Date.now())), ...extra }, signal);
    } catch (err) {
      if (err instanceof HostKeyMismatch) throw err;
      signal?.throwIfAborted();
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, delay));
  }
  throw new ProviderError(`SSH on ${target.name} (${target.host}:${target.port}) did not answer within ${Math.round(timeoutMs / 1000)} s`, {
    notes: lastError instanceof Error ? [`last error: ${lastError.message}`] : [],
    hint: `check the VM's console or the provider's status; \`spuff status ${target.name}\``,
  });
}

/**
 * One login to a VM that several steps use in turn: `up` logs in once when SSH answers and runs the cloud-init wait
 * and the first steps of the host key rotation over it (docs/adr/0008-host-key-rotation.md). It pins what `target`
 * pinned when it was made. A connection that dropped is replaced by a new login (same pins, same wait for SSH) when a
 * step next needs it; a command it dropped under runs again only if the caller says it may (`again`).
 */
export class Login {
  readonly target: VmTarget;
  private conn: ClientType | undefined;
  private closed = false;
  private ended = false;

  private constructor(
    target: VmTarget,
    conn: ClientType,
    private readonly timeoutMs: number,
  ) {
    this.target = { ...target };
    this.adopt(conn);
  }

  /** Waits for SSH as `waitForSsh` does and keeps the connection. */
  static async open(target: VmTarget, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<Login> {
    return new Login(target, await connectWhenUp(target, opts.timeoutMs, opts.signal, KEEPALIVE), opts.timeoutMs);
  }

  private adopt(conn: ClientType): void {
    this.conn = conn;
    this.closed = false;
    conn.once("close", () => {
      if (this.conn === conn) this.closed = true;
    });
  }

  /** The logged-in connection; a new login if the last one dropped. */
  async client(signal?: AbortSignal): Promise<ClientType> {
    if (this.ended) throw new Error(`the login to ${this.target.name} was ended`);
    if (this.conn && !this.closed) return this.conn;
    this.adopt(await connectWhenUp(this.target, this.timeoutMs, signal, KEEPALIVE));
    return this.conn as ClientType;
  }

  /**
   * Runs `command` (as `execOnClient`). `again`: a command that may run twice (a wait, a read) runs once more over a
   * new login when the connection drops under it, within the same `timeoutMs`; `onDrop` hears of it first.
   */
  async exec(
    command: string,
    opts: { signal?: AbortSignal; timeoutMs?: number; onStdout?: (chunk: string) => void; again?: boolean; onDrop?: (err: Error) => void } = {},
  ): Promise<ExecResult> {
    const deadline = Date.now() + (opts.timeoutMs ?? 15 * 60_000);
    const once = async () => execOnClient(await this.client(opts.signal), this.target, command, opts.signal, Math.max(1000, deadline - Date.now()), opts.onStdout);
    try {
      return await once();
    } catch (err) {
      if (!(opts.again && err instanceof ConnectionDropped) || opts.signal?.aborted) throw err;
      opts.onDrop?.(err);
      return await once();
    }
  }

  /** Ends the connection; the login cannot be used afterwards. */
  end(): void {
    this.ended = true;
    this.conn?.end();
    this.conn = undefined;
  }
}
