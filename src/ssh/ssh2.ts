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
