// Where spuff's own time of `spuff up` against the Hetzner fake goes: runs `up NAME --json` (then `down`) under
// `node --cpu-prof` against the fake with a stand-in sshd per server, as bench-hetzner.ts does, and prints each run's
// phases and the heaviest files and functions by self time over all runs (idle and GC left out).
//   npm run build && node --import tsx bench/prof-up.ts [runs] [config.yaml lines...]   (as root, in a netns: run.sh)
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { HetznerFake } from "../test/fakes/hetzner/fake.js";
import { type StandinVm, standinHooks } from "../test/helpers/standin-vm.js";
import { SPUFF } from "./lib.js";

const runs = Number(process.argv[2] ?? 5);
const extra = process.argv.slice(3).join("\n");
const home = mkdtempSync(join(tmpdir(), "spuff-prof-up-"));
const profDir = join(home, "prof");
const standins = new Map<number, StandinVm>();
const fake = await HetznerFake.start({ token: "prof-token", ipv4Prefix: "127.0.98.", ...standinHooks(standins) });
mkdirSync(join(home, "cfg", "spuff"), { recursive: true });
writeFileSync(join(home, "cfg", "spuff", "config.yaml"), `ssh:\n  user: spuff-test\n  tmux: false\n${extra}\n`);
const env = { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, "cfg"), XDG_STATE_HOME: join(home, "state"), XDG_CACHE_HOME: join(home, "cache"), CI: "true", HCLOUD_ENDPOINT: fake.endpoint, HCLOUD_TOKEN: "prof-token" };

function run(args: string[], prof: boolean): Promise<{ code: number | null; lines: { t: number; line: string }[]; wall: number }> {
  return new Promise((resolve) => {
    const start = performance.now();
    const node = prof ? [SPUFF[0], "--cpu-prof", `--cpu-prof-dir=${profDir}`, ...SPUFF.slice(1)] : SPUFF;
    const child = spawn(node[0], [...node.slice(1), "--provider", "hetzner", ...args], { env, cwd: home, stdio: ["ignore", "pipe", "inherit"] });
    const lines: { t: number; line: string }[] = [];
    child.stdout?.on("data", (d: Buffer) => {
      for (const line of d.toString().split("\n").filter(Boolean)) lines.push({ t: performance.now() - start, line });
    });
    child.once("exit", (code) => resolve({ code, lines, wall: performance.now() - start }));
  });
}

try {
  await run(["up", "prof-warm", "--json"], false);
  await run(["down", "prof-warm", "--yes"], false);
  for (let i = 0; i < runs; i++) {
    const r = await run(["up", `prof-${i}`, "--json"], true);
    if (r.code !== 0) throw new Error(`up failed: ${r.lines.map((l) => l.line).join("\n")}`);
    const phases = r.lines
      .map((l) => ({ t: l.t, e: JSON.parse(l.line) as { event?: string; phase?: string; status?: string } }))
      .filter((x) => x.e.event === "phase" && x.e.status === "started");
    console.log(`run ${i}: ${Math.round(r.wall)} ms  ${phases.map((p, k) => `${p.e.phase} @${Math.round(p.t)}${k + 1 < phases.length ? ` (${Math.round(phases[k + 1].t - p.t)})` : ""}`).join(", ")}`);
    await run(["down", `prof-${i}`, "--yes"], false);
    await fake.settled();
  }
} finally {
  await fake.close();
  for (const s of standins.values()) await s.stop();
}

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
const byFile = new Map<string, number>();
const byFn = new Map<string, number>();
let total = 0;
const files = readdirSync(profDir).filter((f) => f.endsWith(".cpuprofile"));
for (const f of files) {
  const p = JSON.parse(readFileSync(join(profDir, f), "utf8")) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  for (let k = 0; k < p.samples.length; k++) {
    const n = nodes.get(p.samples[k]);
    const dt = (p.timeDeltas[k] ?? 0) / 1000;
    if (!n || ["(idle)", "(program)", "(garbage collector)"].includes(n.callFrame.functionName)) continue;
    const url = n.callFrame.url.replace(/^file:\/\//, "");
    const file = url ? relative(process.cwd(), url) : "(native)";
    total += dt;
    byFile.set(file, (byFile.get(file) ?? 0) + dt);
    const fn = `${n.callFrame.functionName || "(anonymous)"} ${file}:${n.callFrame.lineNumber + 1}`;
    byFn.set(fn, (byFn.get(fn) ?? 0) + dt);
  }
}
const top = (m: Map<string, number>, k: number) =>
  [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, k).map(([name, v]) => `  ${(v / files.length).toFixed(1).padStart(6)} ms  ${name}`).join("\n");
console.log(`\nself time per run (mean over ${files.length}), busy total ${(total / files.length).toFixed(0)} ms\nby file:\n${top(byFile, 25)}\nby function:\n${top(byFn, 30)}`);
console.log(`profiles: ${profDir}`);
