// Where the time of one `ssh -- true` goes with ssh2 against a loopback sshd, in-process: TCP connect, handshake,
// auth, session open, exec reply, exit, close; with Nagle on and off, with and without agent forwarding, interleaved.
//   node --import tsx bench/prof-ssh.ts [rounds]
import { connect as netConnect } from "node:net";
import { startAgent, startSshd } from "../test/helpers/sshd.js";
import { ed25519KeyPair } from "../src/ssh/keys.js";
import { Client } from "../src/ssh/ssh2.js";
import { median } from "./lib.js";

const key = ed25519KeyPair("prof");
const agent = startAgent(["prof-key"]);
const sshd = await startSshd({ authorizedKeys: [key.public.trim()], extraConfig: ["AllowUsers spuff-test"] });

type Marks = Record<string, number>;
/**
 * `pipelined`: the agent request goes out right before exec without asking for a reply (as OpenSSH sends it), instead
 * of ssh2's agentForward option, which waits for sshd's reply before it sends exec. Reaches into ssh2's protocol object:
 * a measurement only.
 */
function once(noDelay: boolean, agentFwd: boolean, pipelined = false): Promise<Marks> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const m: Marks = {};
    const mark = (k: string) => (m[k] ??= performance.now() - t0);
    const sock = netConnect({ host: "127.0.0.1", port: sshd.port, noDelay });
    sock.once("connect", () => mark("tcp"));
    const c = new Client();
    c.on("error", reject);
    c.once("handshake", () => mark("kex"));
    c.once("ready", () => {
      mark("auth");
      if (pipelined) {
        const proto = (c as unknown as { _protocol: { exec(id: number, cmd: string, reply: boolean): void; openssh_agentForward(id: number, reply: boolean): void } })._protocol;
        const exec = proto.exec.bind(proto);
        proto.exec = (id, cmd, reply) => {
          (c as unknown as { _agentFwdEnabled: boolean })._agentFwdEnabled = true;
          proto.openssh_agentForward(id, false);
          exec(id, cmd, reply);
        };
      }
      c.exec("true", (agentFwd && !pipelined ? { agentForward: true } : {}) as never, (err, ch) => {
        if (err) return reject(err);
        mark("exec");
        ch.on("exit", () => mark("exit"));
        ch.on("close", () => {
          mark("close");
          c.end();
        });
        ch.resume();
        ch.stderr.resume();
      });
    });
    c.on("close", () => {
      mark("end");
      resolve(m);
    });
    c.connect({ sock, username: "spuff-test", privateKey: key.private, authHandler: ["publickey"] as never, ...(agentFwd ? { agent: agent.socket } : {}), hostVerifier: () => true });
  });
}

const rounds = Number(process.argv[2] ?? 10);
const variants = [
  ["nagle", false, false, false],
  ["nodelay", true, false, false],
  ["nagle+agent", false, true, false],
  ["nodelay+agent", true, true, false],
  ["nodelay+agent pipelined", true, true, true],
] as const;
const all: Record<string, Marks[]> = {};
for (let i = 0; i < rounds; i++) for (const [name, nd, ag, pl] of variants) (all[name] ??= []).push(await once(nd, ag, pl));
const keys = ["tcp", "kex", "auth", "exec", "exit", "close", "end"];
console.log(`| variant | ${keys.join(" | ")} |\n|---|${keys.map(() => "---").join("|")}|`);
for (const [name] of variants) console.log(`| ${name} | ${keys.map((k) => median(all[name].map((x) => x[k])).toFixed(1)).join(" | ")} |`);
await sshd.stop();
agent.stop();
