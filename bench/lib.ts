import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, totalmem, tmpdir } from "node:os";
import { join } from "node:path";

export const SPUFF = ["node", join(process.cwd(), "dist/src/cli/bin.cjs")];

export interface Timing {
  command: string;
  median: number;
  min: number;
  max: number;
  runs: number;
  /** Mean CPU time (user + system) per run: less swayed by other work on the machine than the wall time. */
  cpu: number;
  /** Every run's wall time. */
  times: number[];
}

/** Times whole commands with hyperfine; returns seconds. */
export function hyperfine(commands: string[], opts: { runs?: number; warmup?: number; env?: NodeJS.ProcessEnv } = {}): Timing[] {
  const dir = mkdtempSync(join(tmpdir(), "spuff-bench-"));
  const out = join(dir, "h.json");
  try {
    execFileSync(
      "hyperfine",
      ["-N", "--style", "none", "-w", String(opts.warmup ?? 3), "-r", String(opts.runs ?? 20), "--export-json", out, ...commands],
      { stdio: ["ignore", "ignore", "inherit"], env: opts.env ?? process.env },
    );
    const json = JSON.parse(readFileSync(out, "utf8")) as { results: { command: string; median: number; min: number; max: number; times: number[]; user: number; system: number }[] };
    return json.results.map((r) => ({ command: r.command, median: r.median, min: r.min, max: r.max, runs: r.times.length, cpu: r.user + r.system, times: r.times }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Median peak RSS in KiB over `runs` runs, via GNU time. */
export function peakRss(argv: string[], runs = 5, env: NodeJS.ProcessEnv = process.env): number {
  const values: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = spawnSync("/usr/bin/time", ["-f", "%M", ...argv], { encoding: "utf8", env });
    const line = r.stderr.trim().split("\n").pop() ?? "";
    values.push(Number(line));
  }
  return median(values);
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export const ms = (s: number) => `${(s * 1000).toFixed(0)} ms`;

/** The CPU as /proc/cpuinfo names it, with the count: "2 × AMD EPYC 7B13". Figures are kept per CPU kind. */
export function cpuKind(): string {
  let model = cpus()[0]?.model;
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() || model;
  } catch {
    // not Linux: Node's name for it
  }
  return `${cpus().length} × ${(model ?? "unknown CPU").replace(/\s+/g, " ")}`;
}

export function machineInfo(): string {
  const kernel = execFileSync("uname", ["-sr"], { encoding: "utf8" }).trim();
  const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  return `${cpuKind()}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${kernel}, Node ${process.version}; load average at the start ${load}`;
}

/** One goal-bearing figure of this run (the per-CPU table and the list of missed goals are made of these). */
export interface Figure {
  name: string;
  goal: string;
  value: string;
  ok: boolean;
}
export const figures: Figure[] = [];

/**
 * A figure against its goal, recorded for the summary: "1.05× ✓ (goal ≤ 1.1×)", or, missed, "**1.32× ✗ misses its
 * goal ≤ 1.1×**". `value` is the figure the goal holds for (the worst median over the rounds).
 */
export function goal(name: string, value: number, op: "≤" | "≥", target: number, fmt: (v: number) => string): string {
  const ok = op === "≤" ? value <= target : value >= target;
  figures.push({ name, goal: `${op} ${fmt(target)}`, value: fmt(value), ok });
  return ok ? `${fmt(value)} ✓ (goal ${op} ${fmt(target)})` : `**${fmt(value)} ✗ misses its goal ${op} ${fmt(target)}**`;
}

export const ratio = (v: number) => `${v.toFixed(2)}×`;

/** Median, min, max and the worst of per-round medians (`worst`: the highest for times, pass "low" for rates). */
export function spread(values: number[], worst: "high" | "low" = "high") {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), worst: worst === "high" ? Math.max(...values) : Math.min(...values) };
}

/**
 * `rounds` rounds of the same commands, side by side, so a slow moment of a shared machine hits all of them: per
 * command, every round's median and the extremes of all runs. Within a round the commands take turns in blocks of 2
 * runs (one hyperfine call per block, with one warm-up run each), not `runs` runs of one command after another: a
 * busy second then lands on every command of the round, not on whichever one was running (one block per command
 * gave 1.02× and 1.73× in two rounds of the same `ls`).
 */
export function rounds(commands: string[], opts: { rounds: number; runs: number; warmup?: number; env?: NodeJS.ProcessEnv }): { medians: number[]; cpus: number[]; min: number; max: number; runs: number }[] {
  const out = commands.map(() => ({ medians: [] as number[], cpus: [] as number[], min: Infinity, max: 0, runs: 0 }));
  for (let r = 0; r < opts.rounds; r++) {
    const times = commands.map(() => [] as number[]);
    const cpu = commands.map(() => 0);
    for (let done = 0; done < opts.runs; done += 2) {
      hyperfine(commands, { runs: Math.min(2, opts.runs - done), warmup: done === 0 ? (opts.warmup ?? 3) : 1, env: opts.env }).forEach((t, i) => {
        times[i].push(...t.times);
        cpu[i] += t.cpu * t.runs;
      });
    }
    times.forEach((ts, i) => {
      out[i].medians.push(median(ts));
      out[i].cpus.push(cpu[i] / ts.length);
      out[i].min = Math.min(out[i].min, ...ts);
      out[i].max = Math.max(out[i].max, ...ts);
      out[i].runs += ts.length;
    });
  }
  return out;
}
