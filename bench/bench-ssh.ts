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
    const spuffBase = `${SPUFF.join(" ")} --config ${join(home, "spuff.yaml")} ssh bench`;
    const spuff = `${spuffBase} --`;
    const direct = `${spuffBase} --direct --`;
    // OpenSSH's own warm connection: a master started by the first run, kept by ControlPersist.
    const controlPath = join(home, "cm-%C");
    const persisted = `${openssh} -o ControlMaster=auto -o ControlPath=${controlPath} -o ControlPersist=300`;
    // spuff's: the first command starts the guard daemon, the next one logs it in (src/ssh/warm.ts).
    const sh = (cmd: string) => execFileSync("sh", ["-c", cmd], { env, stdio: ["ignore", "ignore", "inherit"] });
    sh(`${spuff} true`);
    for (let i = 0; i < 100 && !spawnSync("sh", ["-c", `${SPUFF.join(" ")} guard status`], { env, encoding: "utf8" }).stdout.includes("pid"); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    sh(`${spuff} true`);
    sh(`${persisted} true`);
    // Rounds side by side: each round times every command, so a busy moment of a shared machine hits all of them.
    // SPUFF_BENCH_BASELINE=path/to/bin.cjs[,another/bin.cjs] adds those builds (e.g. earlier commits') to the same rounds.
    const baselines = (process.env.SPUFF_BENCH_BASELINE ?? "").split(",").filter(Boolean);
    const startCmds = [
      `${spuff} true`,
      `${openssh} true`,
      `${direct} true`,
      `${persisted} true`,
      "node -e 0",
      ...baselines.map((b) => `node ${b} --config ${join(home, "spuff.yaml")} ssh bench -- true`),
    ];
    const [s, o, d, p, n, ...bs] = rounds(startCmds, { rounds: ROUNDS, runs: 10, env });
    spawnSync("ssh", ["-O", "exit", "-o", `ControlPath=${controlPath}`, "-p", String(sshd.port), "spuff-test@127.0.0.1"], { stdio: "ignore" });
    spawnSync("sh", ["-c", `${SPUFF.join(" ")} guard stop`], { env, stdio: "ignore" });
    const perRound = s.medians.map((m, i) => m / o.medians[i]);
    const perRoundDirect = d.medians.map((m, i) => m / o.medians[i]);
    const perRoundPersist = s.medians.map((m, i) => m / p.medians[i]);
    const row = (label: string, t: typeof s) => {
      const m = spread(t.medians);
      return `| ${label} | ${ms(m.median)} | ${ms(m.min)} – ${ms(m.max)} | **${ms(m.worst)}** | ${ms(t.min)} – ${ms(t.max)} | ${ms(median(t.cpus))} | ${t.runs} |`;
    };
    const out = [
      `## 3. SSH: spuff (ssh2, guarded agent) vs OpenSSH on the same loopback sshd
Goals (issue 21): \`spuff ssh -- true\` ≤ 1.1× \`ssh -A … true\` in every round; throughput ≥ 0.9× OpenSSH, sustained and
whole command, file and pipe, in every round. ${ROUNDS} rounds, each timing every command (\`hyperfine -N -w 3 -r 10\`).

"Warm": a connection already logged in is reused: spuff's guard daemon's (ssh.persist, the default) and OpenSSH's
ControlMaster with ControlPersist. "Cold": each command does its own key exchange and login (\`spuff ssh --direct\`,
plain \`ssh -A\`). \`node -e 0\` is the floor of any Node CLI. CPU is the command's own process tree (not sshd's, not
the guard daemon's): on a loaded machine it moves less than the wall time.

| command | median of the round medians | their range | worst median | all runs | CPU per run (user + sys, median of round means) | runs |
|---|---|---|---|---|---|---|
${row("`spuff ssh bench -- true` (warm, the default)", s)}
${row("`spuff ssh bench --direct -- true` (cold)", d)}
${row("`ssh -A … true` (cold)", o)}
${row("`ssh -A -o ControlPersist=300 … true` (warm)", p)}
${row("`node -e 0`", n)}${bs.map((b, k) => `\n${row(`\`spuff ssh bench -- true\`, baseline ${k + 1}`, b)}`).join("")}

- spuff (warm) ÷ \`ssh -A\` per round: ${perRound.map(ratio).join(", ")}; worst round: ${goal("`spuff ssh -- true` ÷ `ssh -A … true`, worst round", Math.max(...perRound), "≤", 1.1, ratio)}.
- spuff --direct (cold) ÷ \`ssh -A\` (cold) per round: ${perRoundDirect.map(ratio).join(", ")}; worst round: ${goal("`spuff ssh --direct -- true` ÷ `ssh -A … true`, worst round", Math.max(...perRoundDirect), "≤", 1.1, ratio)}.
- spuff (warm) ÷ OpenSSH with ControlPersist (warm) per round: ${perRoundPersist.map(ratio).join(", ")} (no goal: a Node process's start alone, \`node -e 0\`, takes ${ms(spread(n.medians).median)} against ControlPersist's ${ms(spread(p.medians).median)} for the whole command).${bs
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
    // Each round: the median of REPS transfers per tool and input, the tools taking turns, so that a busy moment of a
    // shared machine does not land on one tool's only sample (the goal holds for the worst round's median).
    const REPS = 3;
    const tools = [spuff, openssh];
    const tRounds = Math.min(ROUNDS, 3);
    const sp: { file: number; pipe: number; whole: number }[] = [];
    const os: typeof sp = [];
    for (let r = 0; r < tRounds; r++) {
      const setup = tools.map((tool) => time(`${tool} 'cat > /dev/null' < ${empty}`, 3));
      const file: number[][] = tools.map(() => []);
      const pipe: number[][] = tools.map(() => []);
      for (let k = 0; k < REPS; k++) {
        for (const [i, tool] of tools.entries()) file[i].push(time(`${tool} 'cat > /dev/null' < ${blob}`));
        for (const [i, tool] of tools.entries()) pipe[i].push(time(`cat ${blob} | ${tool} 'cat > /dev/null'`));
      }
      const at = (i: number) => ({ file: SIZE_MIB / (median(file[i]) - setup[i]), pipe: SIZE_MIB / (median(pipe[i]) - setup[i]), whole: SIZE_MIB / median(file[i]) });
      sp.push(at(0));
      os.push(at(1));
    }
    const f0 = (x: number) => x.toFixed(0);
    const line = (label: string, k: "file" | "pipe" | "whole") => {
      const rs = sp.map((x, i) => x[k] / os[i][k]);
      const a = spread(sp.map((x) => x[k]), "low");
      const c = spread(os.map((x) => x[k]), "low");
      return `| ${label} | ${f0(a.median)} (${f0(a.min)}–${f0(a.max)}) MiB/s | ${f0(c.median)} (${f0(c.min)}–${f0(c.max)}) MiB/s | ${rs.map(ratio).join(", ")} | ${goal(`throughput, ${label}, worst round`, Math.min(...rs), "≥", 0.9, ratio)} |`;
    };
    out.push(`Throughput: ${SIZE_MIB} MiB to \`cat > /dev/null\` on the remote, ${tRounds} rounds, each the median of ${REPS} transfers per
tool and input (the tools taking turns); sustained = size over the time the transfer adds to the same command with an
empty file (median of 3), which takes each tool's connection set-up out. Rates: median (range) over the rounds.

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
