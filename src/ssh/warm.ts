import { createHash } from "node:crypto";
import { closeSync, constants, fstatSync, openSync } from "node:fs";
import { Socket } from "node:net";
import type { Client, ClientChannel } from "ssh2";
import type { GuardedAgent } from "./agent.js";
import { connect, fingerprintOfLine, type VmTarget } from "./connect.js";
import { forwardAgentWithoutWaiting } from "./ssh2.js";
import { FRAME, FrameReader, frame, type PipeId, type PipeOffer, type PipesTaken, type SessionReply, writeFrame } from "./warm-client.js";

/**
 * The guard daemon's warm connections, one per VM (like OpenSSH's ControlMaster with ControlPersist): `spuff ssh NAME
 * -- COMMAND` runs its command as a new session on a connection that is already logged in, instead of a key exchange
 * and a login of its own (docs/ssh.md, docs/performance.md). The connection is opened as `spuff ssh` opens its own:
 * the pinned host key(s) only, the per-VM key only, the VM's GuardedAgent as the agent every session forwards. A
 * connection is reused only while the VM's record still names the same address, user, key and pinned host key; a
 * changed record closes it and the next login checks the new pin. It closes after `persist` with no session.
 */

interface Warm {
  /** What the connection was opened for: the record's address, user, key and pinned host key(s). */
  id: string;
  client: Promise<Client>;
  /** Logged in at least once (a session on it is a reuse). */
  ready: boolean;
  sessions: number;
  idle?: NodeJS.Timeout;
  /** Session set-ups one at a time: each asks for agent forwarding right before its exec (forwardAgentWithoutWaiting). */
  queue: Promise<unknown>;
}

export interface WarmSession {
  target: VmTarget;
  guard: GuardedAgent;
  command: string;
  persistMs: number;
}

const identity = (t: VmTarget) =>
  [t.host, t.port, t.user, fingerprintOfLine(t.hostKey), t.nextHostKey ? fingerprintOfLine(t.nextHostKey) : "", createHash("sha256").update(t.privateKey).digest("hex")].join(" ");

interface Started {
  channel: ClientChannel;
  /** The exit code once the channel closed; undefined: it closed without one (the connection went down). */
  ended: Promise<number | undefined>;
}

function ended(ch: ClientChannel): Promise<number | undefined> {
  return new Promise((resolve) => {
    let code: number | undefined;
    ch.on("exit", (x: number | null, signal?: string) => {
      code = x ?? (signal ? 128 + 1 : 255);
    });
    ch.on("close", () => resolve(code));
  });
}

/**
 * Opens the caller's stdin (fd 0, for reading) or stdout (1, for writing) if it is the pipe `id` the caller offered:
 * the same pipe (device and inode) at /proc/PID/fd/N. Non-blocking: an open of a pipe whose other end is gone would
 * wait for the next one (a pipe with no reader is refused), and reads and writes go through the event loop, not the
 * thread pool. A process of the user's could do the same; the control socket answers only the user.
 */
function openPipe(pid: number, fd: 0 | 1, id: PipeId | undefined): Socket | undefined {
  if (!id || !Number.isSafeInteger(pid) || pid <= 0) return undefined;
  let opened: number | undefined;
  try {
    opened = openSync(`/proc/${pid}/fd/${fd}`, (fd === 0 ? constants.O_RDONLY : constants.O_WRONLY) | constants.O_NONBLOCK);
    const st = fstatSync(opened);
    if (!st.isFIFO() || st.dev !== id.dev || st.ino !== id.ino) throw new Error("another pipe");
    return new Socket({ fd: opened, readable: fd === 0, writable: fd === 1 });
  } catch {
    if (opened !== undefined) closeSync(opened);
    return undefined;
  }
}

/** Why a session could not start; `fallback`: nothing ran on the VM. */
class NotStarted extends Error {
  constructor(
    message: string,
    readonly fallback: boolean,
  ) {
    super(message);
  }
}

export class WarmPool {
  private readonly conns = new Map<string, Warm>();

  constructor(private readonly log: (line: string) => void) {}

  /** Closes the VM's warm connection, if any. */
  close(vm: string, why: string): void {
    const w = this.conns.get(vm);
    if (!w) return;
    this.conns.delete(vm);
    clearTimeout(w.idle);
    void w.client.then((c) => c.end(), () => {});
    this.log(`warm connection to ${vm} closed: ${why}`);
  }

  closeAll(why: string): void {
    for (const vm of [...this.conns.keys()]) this.close(vm, why);
  }

  /** The VMs with a warm connection (logged in or logging in). */
  vms(): string[] {
    return [...this.conns.keys()];
  }

  private open(vm: string, target: VmTarget, guard: GuardedAgent, id: string): Warm {
    const client = connect(target, {
      agent: guard as never,
      authHandler: ["publickey"] as never,
      keepaliveInterval: 30_000,
      keepaliveCountMax: 3,
    });
    const w: Warm = { id, client, ready: false, sessions: 0, queue: Promise.resolve() };
    this.conns.set(vm, w);
    client.then(
      (c) => {
        w.ready = true;
        this.log(`warm connection to ${vm} (${target.host}:${target.port}) logged in, host key ${fingerprintOfLine(target.hostKey)} as pinned`);
        c.on("error", () => {});
        c.on("close", () => {
          if (this.conns.get(vm) === w) {
            this.conns.delete(vm);
            clearTimeout(w.idle);
            this.log(`warm connection to ${vm} closed by the other side`);
          }
        });
      },
      (err: Error) => {
        if (this.conns.get(vm) === w) this.conns.delete(vm);
        this.log(`warm connection to ${vm} refused: ${err.message}`);
      },
    );
    return w;
  }

  /**
   * Runs one session on `c` (the caller's control connection, after its request line): the reply line, then frames
   * both ways until the command exits. Never throws; a failure is told to the caller. `listeners`: the guard's
   * refusal lines reach the caller's stderr while it is in the set.
   */
  async serve(vm: string, s: WarmSession, c: Socket, rest: Buffer, listeners: Set<(line: string) => void>): Promise<void> {
    const reply = (r: SessionReply) => c.write(`${JSON.stringify(r)}\n`);
    let channel: ClientChannel;
    let ended: Started["ended"];
    let w: Warm;
    let reused: boolean;
    try {
      ({ channel, ended, w, reused } = await this.start(vm, s, c));
    } catch (err) {
      const e = err instanceof NotStarted ? err : new NotStarted((err as Error).message, false);
      reply({ ok: false, error: e.message, fallback: e.fallback });
      c.end();
      return;
    }
    reply({ ok: true, reused });
    const onStatus = (line: string) => c.write(frame(FRAME.status, line));
    listeners.add(onStatus);
    // The caller's pipes this process uses itself (FRAME.pipe, the caller's first frame): stdin to the channel and
    // the channel to stdout, as fast as the other end takes them.
    let pipeIn: Socket | undefined;
    let pipeOut: Socket | undefined;
    /** The caller's stdout pipe broke (its reader went away): the command is ended, the caller exits 0 as it would. */
    let outBroke = false;
    let offered = false;
    const out = (type: number) => (d: Buffer) => {
      if (!writeFrame(c, type, d)) {
        channel.pause();
        c.once("drain", () => channel.resume());
      }
    };
    const takePipes = (payload: Buffer) => {
      offered = true;
      let offer: PipeOffer = { pid: 0 };
      try {
        offer = JSON.parse(payload.toString()) as PipeOffer;
      } catch {}
      pipeIn = openPipe(offer.pid, 0, offer.stdin);
      pipeOut = openPipe(offer.pid, 1, offer.stdout);
      c.write(frame(FRAME.pipe, JSON.stringify({ stdin: Boolean(pipeIn), stdout: Boolean(pipeOut) } satisfies PipesTaken)));
      const pin = pipeIn;
      pin?.on("data", (d: Buffer) => {
        if (channel.writableEnded) return pin.destroy(); // the command ended (`yes | spuff ssh vm -- head -1`)
        if (!channel.write(d)) {
          pin.pause();
          channel.once("drain", () => pin.resume());
        }
      });
      // A read error ends the input, as OpenSSH's does.
      pin?.on("end", () => {
        if (!channel.writableEnded) channel.end();
      });
      pin?.on("error", () => {
        if (!channel.writableEnded) channel.end();
      });
      const pout = pipeOut;
      pout?.on("error", () => {
        outBroke = true;
        channel.close();
        // What still comes is dropped: the channel closes once all of it is read.
        channel.resume();
      });
      // Only now: stdout was held until it is known where it goes (ssh2 closes the channel after its data is read).
      channel.on(
        "data",
        pout
          ? (d: Buffer) => {
              if (!outBroke && !pout.write(d)) {
                channel.pause();
                pout.once("drain", () => channel.resume());
              }
            }
          : out(FRAME.stdout),
      );
    };
    const frames = new FrameReader((type, payload) => {
      if (type === FRAME.stdin) {
        if (channel.writableEnded) return;
        if (!channel.write(payload)) {
          c.pause();
          channel.once("drain", () => c.resume());
        }
      } else if (type === FRAME.eof) {
        if (!channel.writableEnded) channel.end();
      }
      else if (type === FRAME.pipe && !offered) takePipes(payload);
    });
    c.on("data", (d: Buffer) => frames.push(d));
    if (rest.length) frames.push(rest);
    c.resume();
    channel.stderr.on("data", out(FRAME.stderr));
    // A write that races the command's end (input still coming when it exits) must not take the daemon down; how the
    // session ended is told by "exit" and "close".
    channel.on("error", () => {});
    // The caller went away (Ctrl-C, killed): its command ends with it, as with OpenSSH.
    c.on("close", () => {
      channel.close();
      pipeIn?.destroy();
      pipeOut?.destroy();
    });
    c.on("error", () => {});
    const code = await ended;
    // What the command did not read stays in the pipe, as with OpenSSH; its writer sees the end once the caller exits.
    pipeIn?.destroy();
    // All of stdout is in the caller's pipe before the caller hears the exit.
    const po = pipeOut;
    if (po && !po.destroyed) await new Promise((r) => po.write(Buffer.alloc(0), r));
    po?.destroy();
    listeners.delete(onStatus);
    c.end(frame(FRAME.exit, JSON.stringify(outBroke ? { code: 0 } : code !== undefined ? { code } : { error: `the connection to ${vm} was lost` })));
    w.sessions--;
    if (w.sessions === 0 && this.conns.get(vm) === w) {
      clearTimeout(w.idle);
      w.idle = setTimeout(() => this.close(vm, `no session for ${Math.round(s.persistMs / 1000)} s (ssh.persist)`), s.persistMs);
    }
  }

  /** Opens the session's channel and sends its command, on the warm connection or (once) on a new one. */
  private async start(vm: string, s: WarmSession, c: Socket): Promise<Started & { w: Warm; reused: boolean }> {
    const id = identity(s.target);
    for (let attempt = 0; ; attempt++) {
      let w = this.conns.get(vm);
      if (w && w.id !== id) {
        this.close(vm, "its VM record changed (address, user, key or pinned host key)");
        w = undefined;
      }
      const reused = w?.ready === true;
      w ??= this.open(vm, s.target, s.guard, id);
      w.sessions++;
      clearTimeout(w.idle);
      const warm = w;
      const setup = warm.queue.then(async () => {
        const client = await warm.client.catch((err: Error) => {
          throw new NotStarted(err.message, true);
        });
        let sent = false;
        return new Promise<Started>((resolve, reject) => {
          if (c.destroyed) return reject(new NotStarted("the caller went away", true));
          forwardAgentWithoutWaiting(client, () => (sent = true));
          try {
            client.exec(s.command, (err, ch) => {
              if (err) return reject(new NotStarted(err.message, !sent));
              // At once: sshd's exit status and close can come in the same read as the exec's answer.
              resolve({ channel: ch, ended: ended(ch) });
            });
          } catch (err) {
            reject(new NotStarted((err as Error).message, !sent)); // ssh2 throws when the connection is gone
          }
        });
      });
      warm.queue = setup.catch(() => {});
      try {
        return { ...(await setup), w: warm, reused };
      } catch (err) {
        warm.sessions--;
        // A reused connection that died unnoticed (the VM rebooted): once more on a new one, if nothing ran.
        if (reused && attempt === 0 && err instanceof NotStarted && err.fallback) {
          this.close(vm, `unusable (${err.message})`);
          continue;
        }
        if (warm.sessions === 0 && !reused) this.close(vm, `${(err as Error).message}`);
        throw err;
      }
    }
  }
}
