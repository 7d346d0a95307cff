import { createConnection, type Socket } from "node:net";

/** The longest agent message spuff reads or buffers, in either direction (ssh-agent.c's AGENT_MAX_LEN). */
export const AGENT_MAX_MESSAGE = 256 * 1024;

export function frame(payload: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(payload.length);
  return Buffer.concat([len, payload]);
}

/**
 * One connection to the user's real agent, kept for as long as the VM's agent connection it serves: the session binds
 * passed on over it are the real agent's record of where its signatures go (it checks `ssh-add -h` destination
 * constraints against them), so the identities and sign requests that follow must use the same connection. Requests
 * are sent one at a time (the guard answers the VM strictly in order). Once it failed or closed it stays failed: a new
 * connection would have lost the binds.
 */
export class RealAgentConnection {
  private sock?: Socket;
  private chunks: Buffer[] = [];
  private have = 0;
  private pending?: { resolve: (b: Buffer) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };
  private failed?: Error;

  constructor(private readonly path: string) {}

  /** Sends one request (without its length) and returns the agent's one reply (without its length). */
  request(payload: Buffer): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.pending) return Promise.reject(new Error("one request at a time"));
    if (!this.sock) {
      const sock = createConnection(this.path);
      sock.on("data", (d: Buffer) => this.onData(d));
      sock.on("error", (e) => this.fail(e));
      sock.on("close", () => this.fail(new Error("the local agent closed the connection")));
      this.sock = sock;
    }
    return new Promise((resolve, reject) => {
      // A confirmation dialog (ssh-add -c, 1Password) may wait for the user.
      const timer = setTimeout(() => this.fail(new Error("the local agent did not answer")), 120_000);
      this.pending = { resolve, reject, timer };
      this.sock?.write(frame(payload));
    });
  }

  close(): void {
    this.fail(new Error("closed"));
  }

  private onData(d: Buffer): void {
    this.chunks.push(d);
    this.have += d.length;
    if (this.have < 4) return;
    const all = this.chunks.length > 1 ? Buffer.concat(this.chunks) : this.chunks[0];
    this.chunks = [all];
    const len = all.readUInt32BE(0);
    if (len > AGENT_MAX_MESSAGE) {
      this.fail(new Error(`the local agent sent a ${len}-byte message (limit ${AGENT_MAX_MESSAGE})`));
      return;
    }
    if (this.have < 4 + len) return;
    const p = this.pending;
    if (!p || this.have > 4 + len) {
      this.fail(new Error("the local agent sent a message nobody asked for"));
      return;
    }
    this.chunks = [];
    this.have = 0;
    this.pending = undefined;
    clearTimeout(p.timer);
    p.resolve(all.subarray(4, 4 + len));
  }

  private fail(e: Error): void {
    this.failed ??= e;
    this.sock?.destroy();
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      clearTimeout(p.timer);
      p.reject(this.failed);
    }
  }
}
