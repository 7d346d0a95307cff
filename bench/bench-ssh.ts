// Section 4: `spuff ssh NAME -- true` vs `ssh -A ... true` on the same loopback sshd, and the throughput of
// `spuff ssh NAME -- cat > /dev/null < 100MB` vs OpenSSH.
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

    // Throughput: 100 MiB through stdin to `cat > /dev/null` on the remote.
    const blob = join(home, "blob");
    execFileSync("sh", ["-c", `head -c ${100 * 2 ** 20} /dev/urandom > ${blob}`]);
    const time = (cmd: string) => {
      const runs: number[] = [];
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const r = spawnSync("sh", ["-c", `${cmd} 'cat > /dev/null' < ${blob}`], { env, stdio: ["ignore", "ignore", "pipe"] });
        if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
        runs.push((performance.now() - t0) / 1000);
      }
      return median(runs);
    };
    const spuffT = time(spuff);
    const sshT = time(openssh);
    const mibs = (sec: number) => (100 / sec).toFixed(0);
    return [
      `## 4. SSH: spuff (ssh2, guarded agent) vs OpenSSH on the same loopback sshd
Goals: \`spuff ssh -- true\` ≤ 1.3× \`ssh -A … true\`; throughput ≥ 0.8× OpenSSH.

| command | median | min | max | runs |
|---|---|---|---|---|
| \`spuff ssh bench -- true\` | ${ms(s.median)} | ${ms(s.min)} | ${ms(s.max)} | ${s.runs} |
| \`ssh -A … true\` | ${ms(o.median)} | ${ms(o.min)} | ${ms(o.max)} | ${o.runs} |

Ratio spuff/OpenSSH: **${(s.median / o.median).toFixed(2)}×** (goal ≤ 1.3×).

Throughput, 100 MiB piped to \`cat > /dev/null\` on the remote (median of 3): spuff ${mibs(spuffT)} MiB/s, OpenSSH ${mibs(sshT)} MiB/s,
ratio **${(sshT / spuffT).toFixed(2)}×** of OpenSSH (goal ≥ 0.8×).
`,
    ];
  } finally {
    await sshd.stop();
    agent.stop();
    rmSync(home, { recursive: true, force: true });
  }
}
