import { createConnection } from "node:net";
import { join } from "node:path";
import type { AgentPolicy } from "./agent.js";
import type { GitHostPin } from "./agent-hosts.js";

// The guard daemon's protocol and paths (src/ssh/guard-daemon.ts serves it), without the guard itself: `spuff guard
// ensure` runs before every plain-OpenSSH connection and loads only this.

/** What the guard needs to serve one VM: everything settled by `ensure` (config, chosen agent, its preflight). */
export interface GuardSettings {
  vm: string;
  /** The user's agent that OpenSSH would use for this VM, and why it was chosen. */
  agent: { path: string; source: string; why: string };
  allowedKeys: string[];
  signPolicy: AgentPolicy["signPolicy"];
  logFile: string;
  /** ssh.confirm: ask through SSH_ASKPASS with these variables (SSH_ASKPASS, DISPLAY, …) of the `ensure` caller. */
  confirm?: { env: Record<string, string> };
  /**
   * The VM's pinned host key: the first hop of every plain-OpenSSH connection to it (a forwarding session-bind whose
   * host key is not this one is not this VM: the guard then refuses everything on that connection).
   */
  firstHopHostKey: string;
  /** The git hosts whose bound host keys a git-only guard signs for (the shipped ones and the config's git_hosts). */
  gitHosts: GitHostPin[];
}

export const controlSocket = (dir: string) => join(dir, "control.sock");
export const vmSocket = (dir: string, vm: string) => join(dir, `${vm}.sock`);

export interface ServedVm {
  vm: string;
  socket: string;
  agent: { path: string; source: string; why: string };
  allowedKeys: string[];
  signPolicy: string;
  armedAt: string;
  connections: number;
}

export type GuardRequest =
  | { op: "ping" }
  /** Serve the VM with these settings (settled by the caller). */
  | { op: "arm"; settings: GuardSettings }
  /** Settle the settings as the caller would (its environment and directory: config, agent, preflight), then arm. */
  | { op: "ensure"; vm: string; env: Record<string, string>; cwd: string }
  | { op: "rescan" }
  | { op: "stop" }
  /** Run a command over the warm connection to the VM (src/ssh/warm.ts); the socket then carries its frames. */
  | SessionRequest;

/** `spuff ssh [NAME] -- COMMAND` through the daemon: settled in the caller's environment, directory and --config. */
export interface SessionRequest {
  op: "session";
  /** Undefined: the only VM, as `spuff ssh` picks it. */
  vm?: string;
  env: Record<string, string>;
  cwd: string;
  configFile?: string;
  command: string;
  /** The caller's build: a daemon of another build (from before an upgrade) does not run its sessions. */
  build: string;
}
export type GuardReply =
  /** `warm`: the VMs with a warm connection (`spuff ssh` sessions reuse it). */
  | { ok: true; pid: number; build: string; vms: ServedVm[]; warm?: string[] }
  /** `quiet`: not a failure to report (ssh.forward_agent: false). */
  | { ok: false; error: string; hint?: string; quiet?: boolean };

/** One request to the running daemon; rejects when none answers on the control socket within `timeoutMs`. */
export function guardRequest(dir: string, req: GuardRequest, timeoutMs = 5000): Promise<GuardReply> {
  return new Promise((resolve, reject) => {
    const c = createConnection(controlSocket(dir));
    let buf = "";
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`the guard daemon did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    c.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.on("data", (d) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      c.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as GuardReply);
      } catch (e) {
        reject(e);
      }
    });
    c.write(`${JSON.stringify(req)}\n`);
  });
}

