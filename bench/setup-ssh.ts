// A loopback sshd, an agent and a spuff state with one VM ("bench") for measuring by hand; prints the environment
// and the commands, and keeps running until Ctrl-C.   node --import tsx bench/setup-ssh.ts
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StateStore } from "../src/core/state.js";
import { ed25519KeyPair } from "../src/ssh/keys.js";
import { startAgent, startSshd } from "../test/helpers/sshd.js";
import { SPUFF } from "./lib.js";

const home = mkdtempSync(join(tmpdir(), "spuff-bench-ssh-"));
const key = ed25519KeyPair("bench");
const agent = startAgent(["bench-key"]);
const sshd = await startSshd({ authorizedKeys: [key.public.trim()], extraConfig: ["AllowUsers spuff-test"] });
const state = join(home, "state");
const store = new StateStore(join(state, "spuff"));
await store.save(
  { name: "bench", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: sshd.hostKey, endpoint: { host: "127.0.0.1", port: sshd.port } },
  { private: key.private, public: key.public.trim() },
);
writeFileSync(join(home, "known_hosts"), `[127.0.0.1]:${sshd.port} ${sshd.hostKey}\n`);
writeFileSync(join(home, "spuff.yaml"), "ssh:\n  user: spuff-test\n");
const keyFile = store.clientKeyPath("bench");
process.stdout.write(`export HOME=${home} XDG_STATE_HOME=${state} XDG_CONFIG_HOME=${join(home, "cfg")} SSH_AUTH_SOCK=${agent.socket} CI=true
SPUFF="${SPUFF.join(" ")} --config ${join(home, "spuff.yaml")} ssh bench --"
OSSH="ssh -F /dev/null -A -o BatchMode=yes -o IdentitiesOnly=yes -i ${keyFile} -o UserKnownHostsFile=${join(home, "known_hosts")} -o StrictHostKeyChecking=yes -p ${sshd.port} spuff-test@127.0.0.1"
`);
const stop = async () => {
  await sshd.stop();
  agent.stop();
  rmSync(home, { recursive: true, force: true });
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
setInterval(() => {}, 1 << 30);
