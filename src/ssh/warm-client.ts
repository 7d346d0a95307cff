import { fstatSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import type { SessionRequest } from "./guard-client.js";
import { controlSocket } from "./guard-client.js";

// `spuff ssh NAME -- COMMAND` over the guard daemon's warm connection to the VM (src/ssh/warm.ts, like OpenSSH's
// ControlMaster): the command's stdio travels over the daemon's control socket in frames. This side loads node:net
// only: no ssh2, no config, no agent code; the daemon has them loaded and settles the session in this process's
// environment and directory, as `spuff guard ensure` does.

/**
 * Frame types. To the daemon: stdin data, stdin's end. From it: stdout, stderr, a spuff status line, the exit. `pipe`,
 * both ways, first: the pipes on the caller's stdin and stdout the daemon may use itself (`PipeOffer`), and which of
 * them it took (`PipesTaken`); the caller then sends no stdin frames, and gets no stdout frames, for those.
 */
export const FRAME = { stdin: 0x69, eof: 0x65, stdout: 0x6f, stderr: 0x72, status: 0x73, exit: 0x78, pipe: 0x70 } as const;

/** A pipe (FIFO): its device and inode, which tell it from any other. */
export interface PipeId {
  dev: number;
  ino: number;
}

/**
 * The pipes on the caller's stdin and stdout (`cat blob | spuff ssh vm -- 'cat > x'`, `spuff ssh vm -- cat x | tar
 * x`), as the daemon finds them on Linux: /proc/PID/fd/0 and 1, checked to be the same pipes. The daemon then reads
 * and writes them itself instead of this process passing every byte on over the control socket, a second process on
 * the data path that halved the throughput (docs/performance.md).
 */
export interface PipeOffer {
  pid: number;
  stdin?: PipeId;
  stdout?: PipeId;
}

export interface PipesTaken {
  stdin: boolean;
  stdout: boolean;
}

function pipeOn(fd: number): PipeId | undefined {
  try {
    const st = fstatSync(fd);
    return st.isFIFO() ? { dev: st.dev, ino: st.ino } : undefined;
  } catch {
    return undefined;
  }
}

/** The pipes among this process's stdin and stdout, when `io` uses them, on Linux. */
export function pipesOf(io: { stdin: unknown; stdout: unknown }): PipeOffer {
  const linux = process.platform === "linux";
  return {
    pid: process.pid,
    stdin: linux && io.stdin === process.stdin ? pipeOn(0) : undefined,
    stdout: linux && io.stdout === process.stdout ? pipeOn(1) : undefined,
  };
}

/** One frame: type (1 byte), length (4 bytes, big-endian), payload. */
export function frame(type: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload) : payload;
  return Buffer.concat([frameHead(type, body.length), body]);
}

function frameHead(type: number, length: number): Buffer {
  const head = Buffer.allocUnsafe(5);
  head[0] = type;
  head.writeUInt32BE(length, 1);
  return head;
}

/** Writes a frame without copying its payload (a file on stdin comes in 1 MiB chunks); false: wait for "drain". */
export function writeFrame(sock: { write(b: Buffer): boolean; cork(): void; uncork(): void }, type: number, payload: Buffer): boolean {
  sock.cork();
  sock.write(frameHead(type, payload.length));
  const ok = sock.write(payload);
  sock.uncork();
  return ok;
}

/** Frames whose payload is a byte stream: handed on piece by piece as it arrives, without being joined first. */
const STREAMED: ReadonlySet<number> = new Set([FRAME.stdin, FRAME.stdout, FRAME.stderr]);

/**
 * Splits a byte stream into frames. A data frame (stdin, stdout, stderr) comes out as the pieces of it each read
 * brought, views of that read (a frame of 64 KiB spans two reads of the socket: no copy of it, no garbage); any other
 * frame once whole.
 */
export class FrameReader {
  private head: Buffer = Buffer.alloc(0);
  /** The frame being read (its type and the bytes of its payload still to come), or none (-1): a header is next. */
  private type = -1;
  private left = 0;
  private parts: Buffer[] = [];
  constructor(private readonly onFrame: (type: number, payload: Buffer) => void) {}
  push(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length || (this.type >= 0 && this.left === 0)) {
      if (this.type < 0) {
        const take = Math.min(5 - this.head.length, chunk.length - off);
        this.head = this.head.length ? Buffer.concat([this.head, chunk.subarray(off, off + take)]) : chunk.subarray(off, off + take);
        off += take;
        if (this.head.length < 5) return;
        this.type = this.head[0];
        this.left = this.head.readUInt32BE(1);
        this.head = Buffer.alloc(0);
      }
      const piece = chunk.subarray(off, off + Math.min(this.left, chunk.length - off));
      off += piece.length;
      this.left -= piece.length;
      const type = this.type;
      if (STREAMED.has(type)) {
        if (this.left === 0) this.type = -1;
        if (piece.length) this.onFrame(type, piece);
      } else {
        if (piece.length) this.parts.push(piece);
        if (this.left > 0) continue;
        const payload = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts);
        this.parts = [];
        this.type = -1;
        this.onFrame(type, payload);
      }
    }
  }
}

/** The daemon's first answer to a session request (a JSON line), before any frame. */
export type SessionReply =
  | { ok: true; reused: boolean }
  /** `fallback`: nothing ran on the VM; connect directly instead. Otherwise the command may have started: do not rerun it. */
  | { ok: false; error: string; fallback: boolean };

/** Why a daemon does not run a session: it is another build of spuff (the caller starts this build's instead). */
export const OTHER_BUILD = "the guard daemon is another build of spuff";

export type WarmResult =
  | { kind: "done"; code: number }
  /** No daemon answers: connect directly (and start one for the next time). */
  | { kind: "absent" }
  /** The daemon answered but will not run this session (persist off, another build, no VM, a failed login): go direct. */
  | { kind: "fallback"; why: string }
  /** The session started and then failed: spuff's own failure, exit 255. */
  | { kind: "failed"; error: string };

export interface WarmIo {
  stdin: NodeJS.ReadableStream;
  stdout: { write(chunk: Buffer | string): unknown };
  stderr: { write(chunk: Buffer | string): unknown };
}

/**
 * Runs `req.command` over the daemon's warm connection. Resolves with the remote exit code, or with why it did not run
 * (then nothing ran on the VM and the caller connects directly). `replyTimeoutMs`: how long the daemon may take to
 * settle the session and, when it has no warm connection yet, to log in.
 */
export function warmSession(dir: string, req: SessionRequest, io: WarmIo, replyTimeoutMs = 30_000): Promise<WarmResult> {
  return new Promise((resolve) => {
    let settled = false;
    let started = false;
    const sock: Socket = createConnection(controlSocket(dir));
    const finish = (r: WarmResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      io.stdin.off("data", onStdin);
      io.stdin.off("end", onStdinEnd);
      if (started && typeof (io.stdin as { pause?: () => void }).pause === "function") io.stdin.pause();
      sock.end();
      // A session whose daemon went away mid-way: nothing more will come.
      if (r.kind !== "done") sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ kind: "fallback", why: `the guard daemon did not answer within ${replyTimeoutMs / 1000} s` }), replyTimeoutMs);
    const onStdin = (d: Buffer | string) => {
      if (!writeFrame(sock, FRAME.stdin, typeof d === "string" ? Buffer.from(d) : d)) {
        io.stdin.pause();
        sock.once("drain", () => io.stdin.resume());
      }
    };
    const onStdinEnd = () => sock.write(frame(FRAME.eof));
    const relayStdin = () => {
      io.stdin.on("data", onStdin);
      io.stdin.on("end", onStdinEnd);
      io.stdin.resume();
    };
    // A pipe on stdin the daemon may read itself: this process reads none of it unless the daemon answers it cannot.
    const offer = pipesOf(io);
    // A slow reader of this process's stdout or stderr holds the daemon back, frames and all, instead of this process
    // buffering what the command writes.
    let held = false;
    const write = (w: WarmIo["stdout"], payload: Buffer) => {
      const out = w as Partial<NodeJS.WritableStream>;
      if (w.write(payload) === false && !held && typeof out.once === "function") {
        held = true;
        sock.pause();
        out.once("drain", () => {
          held = false;
          sock.resume();
        });
      }
    };
    const frames = new FrameReader((type, payload) => {
      if (type === FRAME.stdout) write(io.stdout, payload);
      else if (type === FRAME.pipe) {
        if (offer.stdin && !(JSON.parse(payload.toString()) as PipesTaken).stdin) relayStdin();
      }
      else if (type === FRAME.stderr) write(io.stderr, payload);
      else if (type === FRAME.status) io.stderr.write(`${payload.toString()}\n`);
      else if (type === FRAME.exit) {
        const x = JSON.parse(payload.toString()) as { code?: number; error?: string };
        finish(x.error !== undefined ? { kind: "failed", error: x.error } : { kind: "done", code: x.code ?? 255 });
      }
    });
    let head = "";
    const onData = (d: Buffer) => {
      if (started) return frames.push(d);
      head += d.toString("latin1");
      const nl = head.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      let reply: SessionReply;
      try {
        reply = JSON.parse(Buffer.from(head.slice(0, nl), "latin1").toString()) as SessionReply;
      } catch {
        return finish({ kind: "fallback", why: "the guard daemon answered something else" });
      }
      if (!reply.ok) return finish(reply.fallback ? { kind: "fallback", why: reply.error } : { kind: "failed", error: reply.error });
      // A daemon from before warm sessions answers a request it does not know with its status: nothing ran.
      if (typeof reply.reused !== "boolean") return finish({ kind: "fallback", why: OTHER_BUILD });
      started = true;
      if (!offer.stdin) relayStdin();
      const rest = Buffer.from(head.slice(nl + 1), "latin1");
      if (rest.length) frames.push(rest);
    };
    sock.on("data", onData);
    sock.on("error", (err: NodeJS.ErrnoException) => {
      if (!started) finish(err.code === "ENOENT" || err.code === "ECONNREFUSED" ? { kind: "absent" } : { kind: "fallback", why: err.message });
      else finish({ kind: "failed", error: `the guard daemon's connection failed: ${err.message}` });
    });
    sock.on("close", () => {
      if (!started) finish({ kind: "fallback", why: "the guard daemon closed the connection" });
      else finish({ kind: "failed", error: "the guard daemon went away during the session" });
    });
    sock.write(`${JSON.stringify(req)}\n`);
    sock.write(frame(FRAME.pipe, JSON.stringify(offer)));
  });
}
