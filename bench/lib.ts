import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, totalmem, tmpdir } from "node:os";
import { join } from "node:path";

export const SPUFF = ["node", join(process.cwd(), "dist/src/cli/bin.js")];

export interface Timing {
  command: string;
  median: number;
  min: number;
  max: number;
  runs: number;
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
    const json = JSON.parse(readFileSync(out, "utf8")) as { results: { command: string; median: number; min: number; max: number; times: number[] }[] };
    return json.results.map((r) => ({ command: r.command, median: r.median, min: r.min, max: r.max, runs: r.times.length }));
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

export function machineInfo(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const kernel = execFileSync("uname", ["-sr"], { encoding: "utf8" }).trim();
  return `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${kernel}, Node ${process.version}`;
}
