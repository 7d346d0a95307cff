// Section 4 ("ssh"): `spuff ssh NAME -- true` vs `ssh -A ... true` on the same loopback sshd, and ("throughput") the
// throughput of `spuff ssh NAME -- cat > /dev/null` with a file or a pipe on stdin vs OpenSSH; each over several rounds.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StateStore } from "../src/core/state.js";
import { startAgent, startSshd } from "../test/helpers/sshd.js";
import { goal, median, ms, ratio, rounds, SPUFF, spread } from "./lib.js";

/** Rounds per figure (SPUFF_BENCH_ROUNDS, default 5): a goal holds for the worst of them. */
const ROUNDS = Number(process.env.SPUFF_BENCH_ROUNDS ?? 5);
import { ed25519KeyPair } from "../src/ssh/keys.js";

export async function run(want: (n: string) => boolean): Promise<string[]> {
  if (!want("ssh") && !want("throughput")) return [];
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
    // Rounds side by side: each round times every command, so a busy moment of a shared machine hits all of them.
    // SPUFF_BENCH_BASELINE=path/to/bin.js[,another/bin.js] adds those builds (e.g. earlier commits') to the same rounds.
    const baselines = (process.env.SPUFF_BENCH_BASELINE ?? "").split(",").filter(Boolean);
    const startCmds = [`${spuff} true`, `${openssh} true`, ...baselines.map((b) => `node ${b} --config ${join(home, "spuff.yaml")} ssh bench -- true`)];
    const [s, o, ...bs] = rounds(startCmds, { rounds: ROUNDS, runs: 10, env });
    const perRound = s.medians.map((m, i) => m / o.medians[i]);
    const row = (label: string, t: typeof s) => {
      const m = spread(t.medians);
      return `| ${label} | ${ms(m.median)} | ${ms(m.min)} – ${ms(m.max)} | **${ms(m.worst)}** | ${ms(t.min)} – ${ms(t.max)} | ${t.runs} |`;
    };
    const out = [
      `## 3. SSH: spuff (ssh2, guarded agent) vs OpenSSH on the same loopback sshd
Goals (issue 21): \`spuff ssh -- true\` ≤ 1.1× \`ssh -A … true\` in every round; throughput ≥ 0.9× OpenSSH, sustained and
whole command, file and pipe, in every round. ${ROUNDS} rounds, each timing every command (\`hyperfine -N -w 3 -r 10\`).

| command | median of the round medians | their range | worst median | all runs | runs |
|---|---|---|---|---|---|
${row("`spuff ssh bench -- true`", s)}
${row("`ssh -A … true`", o)}${bs.map((b, k) => `\n${row(`\`spuff ssh bench -- true\`, baseline ${k + 1}`, b)}`).join("")}

Ratio spuff/OpenSSH per round: ${perRound.map(ratio).join(", ")}; worst round: ${goal("`spuff ssh -- true` ÷ `ssh -A … true`, worst round", Math.max(...perRound), "≤", 1.1, ratio)}.${bs
        .map((b, k) => `\nBaseline ${k + 1} (${baselines[k]}) ÷ OpenSSH per round: ${b.medians.map((m, i) => ratio(m / o.medians[i])).join(", ")}; worst ${ratio(Math.max(...b.medians.map((m, i) => m / o.medians[i])))}.`)
        .join("")}
`,
    ];
    if (!want("throughput")) return out;

    // Throughput: a file on stdin to \`cat > /dev/null\` on the remote. Sustained = its size over the time the transfer
    // adds to the same command with an empty file (which cancels each tool's connection set-up).
    const SIZE_MIB = 500;
    const blob = join(home, "blob");
    const empty = join(home, "empty");
    execFileSync("sh", ["-c", `head -c ${SIZE_MIB * 2 ** 20} /dev/urandom > ${blob} && : > ${empty}`]);
    const time = (cmd: string, runs = 1) => {
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
      const setup = time(`${tool} 'cat > /dev/null' < ${empty}`, 3);
      const file = time(`${tool} 'cat > /dev/null' < ${blob}`);
      const pipe = time(`cat ${blob} | ${tool} 'cat > /dev/null'`);
      return { file: SIZE_MIB / (file - setup), pipe: SIZE_MIB / (pipe - setup), whole: SIZE_MIB / file };
    };
    const tRounds = Math.min(ROUNDS, 3);
    const sp: ReturnType<typeof through>[] = [];
    const os: ReturnType<typeof through>[] = [];
    for (let r = 0; r < tRounds; r++) {
      sp.push(through(spuff));
      os.push(through(openssh));
    }
    const f0 = (x: number) => x.toFixed(0);
    const line = (label: string, k: "file" | "pipe" | "whole") => {
      const rs = sp.map((x, i) => x[k] / os[i][k]);
      const a = spread(sp.map((x) => x[k]), "low");
      const c = spread(os.map((x) => x[k]), "low");
      return `| ${label} | ${f0(a.median)} (${f0(a.min)}–${f0(a.max)}) MiB/s | ${f0(c.median)} (${f0(c.min)}–${f0(c.max)}) MiB/s | ${rs.map(ratio).join(", ")} | ${goal(`throughput, ${label}, worst round`, Math.min(...rs), "≥", 0.9, ratio)} |`;
    };
    out.push(`Throughput: ${SIZE_MIB} MiB to \`cat > /dev/null\` on the remote, ${tRounds} rounds, each one transfer per tool and input;
sustained = size over the time the transfer adds to the same command with an empty file (median of 3), which takes
each tool's connection set-up out. Rates: median (range) over the rounds.

| input | spuff | OpenSSH | ratio per round | worst round |
|---|---|---|---|---|
${line("file on stdin (`< blob`), sustained", "file")}
${line("pipe on stdin (`cat blob \\| …`), sustained", "pipe")}
${line("file on stdin, whole command", "whole")}
`);
    return out;
  } finally {
    await sshd.stop();
    agent.stop();
    rmSync(home, { recursive: true, force: true });
  }
}
