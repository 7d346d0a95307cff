// Section 4: `spuff ssh NAME -- true` vs `ssh -A ... true` on the same loopback sshd, and the throughput of
// `spuff ssh NAME -- cat > /dev/null` with a file or a pipe on stdin vs OpenSSH.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StateStore } from "../src/core/state.js";
import { startAgent, startSshd } from "../test/helpers/sshd.js";
import { hyperfine, median, ms, SPUFF } from "./lib.js";
import { ed25519KeyPair } from "../src/ssh/keys.js";

export async function run(want: (n: string) => boolean): Promise<string[]> {
  if (!want("ssh")) return [];
  const home = mkdtempSync(join(tmpdir(), "spuff-bench-ssh-"));
  const key = ed25519KeyPair("bench");
  const agent = startAgent(["bench-key"]);
  const sshd = await startSshd({ authorizedKeys: [key.public.trim()], extraConfig: ["AllowUsers spuff-test"] });
  try {
    const state = join(home, "state");
    const store = new StateStore(join(state, "spuff"));
    await store.save(
      { name: "bench", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: sshd.hostKey, endpoint: { host: "127.0.0.1", port: sshd.port } },
      { private: key.private, public: key.public.trim() },
    );
    const keyFile = store.clientKeyPath("bench");
    writeFileSync(join(home, "known_hosts"), `[127.0.0.1]:${sshd.port} ${sshd.hostKey}\n`);
    const env = { ...process.env, HOME: home, XDG_STATE_HOME: state, XDG_CONFIG_HOME: join(home, "cfg"), SSH_AUTH_SOCK: agent.socket, CI: "true" };
    writeFileSync(join(home, "spuff.yaml"), "ssh:\n  user: spuff-test\n");
    const openssh = `ssh -F /dev/null -A -o BatchMode=yes -o IdentitiesOnly=yes -i ${keyFile} -o UserKnownHostsFile=${join(home, "known_hosts")} -o StrictHostKeyChecking=yes -p ${sshd.port} spuff-test@127.0.0.1`;
    const spuff = `${SPUFF.join(" ")} --config ${join(home, "spuff.yaml")} ssh bench --`;
    const [s, o] = hyperfine([`${spuff} true`, `${openssh} true`], { runs: 20, env });

    // Throughput: a file on stdin to `cat > /dev/null` on the remote. Sustained = its size over the time the transfer
    // adds to the same command with an empty file (which cancels each tool's connection set-up).
    const SIZE_MIB = 500;
    const blob = join(home, "blob");
    const empty = join(home, "empty");
    execFileSync("sh", ["-c", `head -c ${SIZE_MIB * 2 ** 20} /dev/urandom > ${blob} && : > ${empty}`]);
    const time = (cmd: string, runs = 3) => {
      const t: number[] = [];
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        const r = spawnSync("sh", ["-c", cmd], { env, stdio: ["ignore", "ignore", "pipe"] });
        if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
        t.push((performance.now() - t0) / 1000);
      }
      return median(t);
    };
    const through = (tool: string) => {
      const setup = time(`${tool} 'cat > /dev/null' < ${empty}`, 5);
      const file = time(`${tool} 'cat > /dev/null' < ${blob}`);
      const pipe = time(`cat ${blob} | ${tool} 'cat > /dev/null'`);
      return { file: SIZE_MIB / (file - setup), pipe: SIZE_MIB / (pipe - setup), whole: SIZE_MIB / file };
    };
    const sp = through(spuff);
    const os = through(openssh);
    const f0 = (x: number) => x.toFixed(0);
    return [
      `## 3. SSH: spuff (ssh2, guarded agent) vs OpenSSH on the same loopback sshd
Goals: \`spuff ssh -- true\` ≤ 1.3× \`ssh -A … true\`; throughput ≥ 0.8× OpenSSH.

| command | median | min | max | runs |
|---|---|---|---|---|
| \`spuff ssh bench -- true\` | ${ms(s.median)} | ${ms(s.min)} | ${ms(s.max)} | ${s.runs} |
| \`ssh -A … true\` | ${ms(o.median)} | ${ms(o.min)} | ${ms(o.max)} | ${o.runs} |

Ratio spuff/OpenSSH: **${(s.median / o.median).toFixed(2)}×** (goal ≤ 1.3×).

Throughput: ${SIZE_MIB} MiB to \`cat > /dev/null\` on the remote, median of 3; sustained = size over the time the
transfer adds to the same command with an empty file (median of 5), which takes each tool's connection set-up out.

| input | spuff | OpenSSH | ratio (goal ≥ 0.8×) |
|---|---|---|---|
| file on stdin (\`< blob\`), sustained | ${f0(sp.file)} MiB/s | ${f0(os.file)} MiB/s | **${(sp.file / os.file).toFixed(2)}×** |
| pipe on stdin (\`cat blob \\| …\`), sustained | ${f0(sp.pipe)} MiB/s | ${f0(os.pipe)} MiB/s | **${(sp.pipe / os.pipe).toFixed(2)}×** |
| file on stdin, whole command | ${f0(sp.whole)} MiB/s | ${f0(os.whole)} MiB/s | ${(sp.whole / os.whole).toFixed(2)}× |
`,
    ];
  } finally {
    await sshd.stop();
    agent.stop();
    rmSync(home, { recursive: true, force: true });
  }
}
