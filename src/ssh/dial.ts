import { connect as netConnect, type Socket } from "node:net";
import { UserError } from "../core/errors.js";

/**
 * A TCP connection to a VM's sshd, opened before ssh2 is loaded: sshd accepts and starts its per-connection process
 * while spuff loads the SSH library, and its first messages wait in the socket. `connect()` takes it over.
 * TCP_NODELAY, as OpenSSH sets it: SSH's handshake and requests are small writes that each wait for an answer, and with
 * Nagle's algorithm a write can sit in the kernel until the peer's delayed ACK (docs/performance.md: ~40 ms per login).
 */
export interface Dialed {
  sock: Socket;
  /** The error that ended the socket before the SSH client took it over, if any. */
  failure(): Error | undefined;
}

export function dial(host: string, port: number): Dialed {
  const sock = netConnect({ host, port, noDelay: true });
  let failure: Error | undefined;
  sock.on("error", (err) => {
    failure ??= err;
  });
  return { sock, failure: () => failure ?? (sock.destroyed ? new Error("connection closed") : undefined) };
}

// Port forwards are parsed here rather than in session.ts so that `spuff ssh` checks them before it dials or loads ssh2.
export interface Forward {
  localPort: number;
  remoteHost: string;
  remotePort: number;
}

/** Parses `-L [127.0.0.1:]LOCAL:HOST:REMOTE`. */
export function parseForward(spec: string): Forward {
  const parts = spec.split(":");
  if (parts.length === 4 && (parts[0] === "127.0.0.1" || parts[0] === "localhost")) parts.shift();
  const [l, host, r] = parts;
  const localPort = Number(l);
  const remotePort = Number(r);
  if (parts.length !== 3 || !host || !(localPort > 0 && localPort < 65536) || !(remotePort > 0 && remotePort < 65536)) {
    throw new UserError(`bad port forward "${spec}"`, { hint: "use -L LOCAL_PORT:HOST:REMOTE_PORT, e.g. -L 8080:localhost:80" });
  }
  return { localPort, remoteHost: host, remotePort };
}
