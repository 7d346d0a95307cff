import { createRequire } from "node:module";
import type * as SSH2 from "ssh2";

// The parts of ssh2 that `spuff ssh` uses, loaded from their own files: ssh2's index also loads its SSH server, HTTP
// agents (node:http, node:https) and key generator, ~8 ms at every start (docs/performance.md). The paths are ssh2
// 1.x's layout; test/ssh exercises each of them.
const require = createRequire(import.meta.url);

export const Client: typeof SSH2.Client = require("ssh2/lib/client.js");
export const { BaseAgent, OpenSSHAgent } = require("ssh2/lib/agent.js") as {
  BaseAgent: new () => object;
  OpenSSHAgent: new (socket: string) => {
    getIdentities(cb: (err: Error | undefined, keys?: SSH2.ParsedKey[]) => void): void;
  };
};
export const { parseKey } = require("ssh2/lib/protocol/keyParser.js") as { parseKey: typeof SSH2.utils.parseKey };

/**
 * Asks for agent forwarding on the client's next session without waiting for sshd's answer: the request goes out right
 * before the session's exec or shell request, as OpenSSH sends it. ssh2's `agentForward` option waits a round trip for
 * the reply before it sends the command (~50 ms of `spuff ssh -- true` on loopback, docs/performance.md). A refused
 * request then goes unanswered, as with OpenSSH: the session runs without an agent (`spuff doctor` reports it). The agent
 * that answers is still the one given to connect(). `onSent` hears when the request (and the command) went out. Uses ssh2 1.x's protocol object (test/ssh covers it).
 */
export function forwardAgentWithoutWaiting(client: SSH2.Client, onSent?: () => void): void {
  type Request = (id: number, ...rest: unknown[]) => void;
  const c = client as unknown as { _agentFwdEnabled?: boolean; _protocol: { exec: Request; shell: Request; openssh_agentForward(id: number, wantReply: boolean): void } };
  const proto = c._protocol;
  const original = { exec: proto.exec, shell: proto.shell };
  for (const name of ["exec", "shell"] as const) {
    proto[name] = (id, ...rest) => {
      proto.exec = original.exec;
      proto.shell = original.shell;
      c._agentFwdEnabled = true;
      proto.openssh_agentForward(id, false);
      original[name].call(proto, id, ...rest);
      onSent?.();
    };
  }
}
