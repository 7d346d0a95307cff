// npm run bench: measures spuff against the official tools, side by side, and writes docs/performance.md.
// Every figure is a ratio or a median of one run on this machine; tests never assert timings.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { cpuKind, figures, goal, machineInfo, ms, peakRss, rounds, SPUFF, spread } from "./lib.js";

const sections: string[] = [];
/** Rounds per figure (SPUFF_BENCH_ROUNDS, default 5): a goal holds for the worst median over them. */
const ROUNDS = Number(process.env.SPUFF_BENCH_ROUNDS ?? 5);

function coldStart(): void {
  const [version, help, bare] = rounds([`${SPUFF.join(" ")} --version`, `${SPUFF.join(" ")} --help`, "node -e 0"], { rounds: ROUNDS, runs: 10 });
  const rssV = peakRss([...SPUFF, "--version"]);
  const rssH = peakRss([...SPUFF, "--help"]);
  const rssN = peakRss(["node", "-e", "0"]);
  const row = (label: string, t: typeof version) => {
    const m = spread(t.medians);
    return `| \`${label}\` | ${ms(m.median)} | ${ms(m.min)} – ${ms(m.max)} | ${ms(m.worst)} | ${ms(t.min)} – ${ms(t.max)} | ${t.runs} |`;
  };
  const worst = (t: typeof version) => Math.max(...t.medians);
  sections.push(`## 1. Cold start
Goal: ≤ 100 ms for \`spuff --version\` / \`--help\` (worst median over ${ROUNDS} rounds of 10 runs each). Node itself
(\`node -e 0\`) is the floor on this machine.

| command | median of the round medians | their range | worst median | all runs | runs |
|---|---|---|---|---|---|
${row("spuff --version", version)}
${row("spuff --help", help)}
${row("node -e 0", bare)}

\`--version\`: ${goal("`spuff --version`, worst median", worst(version), "≤", 0.1, ms)}; \`--help\`: ${goal("`spuff --help`, worst median", worst(help), "≤", 0.1, ms)}.
Peak RSS (median of 5): \`--version\` ${rssV} KiB, \`--help\` ${rssH} KiB, \`node -e 0\` ${rssN} KiB.
spuff's own share over bare Node (medians): ${ms(spread(version.medians).median - spread(bare.medians).median)} (--version), ${ms(spread(help.medians).median - spread(bare.medians).median)} (--help).
`);
}

/**
 * The per-CPU-kind tables, kept across runs: this run's figures replace their rows in its own kind's table (rows it did
 * not measure stay, with their date), the other kinds' tables stay, so a regression on one kind of machine shows.
 */
function byCpuKind(previous: string, date: string, loaded: string): string {
  const kind = cpuKind();
  const old = previous.match(/\n## By CPU kind\n[\s\S]*?(?=\n## (?!#)|$)/)?.[0] ?? "";
  const tables = new Map<string, string>();
  for (const m of old.matchAll(/\n### (.+)\n([\s\S]*?)(?=\n### |$)/g)) tables.set(m[1].trim(), m[2].trimEnd());
  const rows = new Map<string, string>();
  for (const line of (tables.get(kind) ?? "").split("\n")) {
    const cells = line.split(" | ");
    if (line.startsWith("| ") && cells.length === 4 && !line.startsWith("| figure ")) rows.set(cells[0].slice(2), line);
  }
  for (const f of figures) rows.set(f.name, `| ${f.name} | ${f.goal} | ${f.ok ? `${f.value} ✓` : `**${f.value} ✗**`} | ${date}${loaded ? " (loaded)" : ""} |`);
  tables.set(kind, `| figure | goal | value | run |\n|---|---|---|---|\n${[...rows.values()].join("\n")}`);
  return `
## By CPU kind
One table per kind of CPU this bench has run on (\`/proc/cpuinfo\`), each row from the latest run that measured it there;
✗ = goal missed. A goal met on one kind and missed on another is missed. "(loaded)": the machine was busy with other
work during that run (load average above its CPU count), so its absolute figures are inflated.
${[...tables.entries()].map(([k, t]) => `\n### ${k}\n${t}\n`).join("")}`;
}

/** A warning when other work kept this machine busy at the start (load average above the CPU count), else "". */
function loadWarning(): string {
  const load = Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  const n = cpus().length;
  return load > n
    ? `**Loaded machine:** load average ${load.toFixed(1)} on ${n} CPUs when this run started: absolute figures are inflated (\`node -e 0\` shows by how much); ratios of commands timed side by side in the same round still compare, with a wide spread.`
    : "";
}

const only = process.argv.slice(2);
const want = (name: string) => only.length === 0 || only.includes(name);
const started = Date.now();
const loaded = loadWarning();
if (want("cold")) coldStart();
for (const extra of ["./bench-hetzner.ts", "./bench-ssh.ts", "./bench-local.ts"]) {
  const mod = (await import(extra).catch((e) => (e.code === "ERR_MODULE_NOT_FOUND" ? undefined : Promise.reject(e)))) as
    | { run(want: (n: string) => boolean): Promise<string[]> }
    | undefined;
  if (mod) sections.push(...(await mod.run(want)));
}

const file = "docs/performance.md";
const previous = existsSync(file) ? readFileSync(file, "utf8") : "";
// Numbered sections this run did not measure (\`bench.ts ssh\` runs one) stay as the previous run wrote them.
const numbered = (text: string) => new Map([...text.matchAll(/\n?(## (\d+)\. [\s\S]*?)(?=\n## |$)/g)].map((m) => [Number(m[2]), m[1].trimEnd()]));
const fresh = numbered(`\n${sections.join("\n")}`);
const KEPT = "_Not measured in this run: kept from an earlier one._";
for (const [n, text] of numbered(previous.split(/\n## By CPU kind\n|\n## Profiles and fixes/)[0])) {
  if (!fresh.has(n)) fresh.set(n, text.includes(KEPT) ? text : text.replace(/\n/, `\n${KEPT}\n`));
}
// Written by hand, kept across runs: what profiling found behind a missed goal, and the before/after of each fix.
const notes = previous.match(/\n## Profiles and fixes[\s\S]*$/)?.[0].trimEnd() ?? "";
const date = new Date().toISOString().slice(0, 10);
const missed = figures.filter((f) => !f.ok);
writeFileSync(
  file,
  `# Performance

Written by \`npm run bench\` (bench/bench.ts) on ${date}: ${machineInfo()}.
Whole-process timings use \`hyperfine -N\`, in rounds that time every compared command side by side (taking turns in blocks of 2 runs); a goal holds for the
worst median over the rounds. Peak RSS uses GNU \`time -f %M\`. These machines are noisy (often shared): compare ratios
measured in the same run, not absolute numbers across runs.
Bench run time: ${Math.round((Date.now() - started) / 1000)} s.
${loaded ? `\n${loaded}\n` : ""}${missed.length ? `\n**Goals missed in this run:** ${missed.map((f) => `${f.name} ${f.value} (goal ${f.goal})`).join("; ")}.\n` : figures.length ? "\nEvery goal measured in this run was met.\n" : ""}
${[...fresh.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => `${t}\n`).join("\n")}${byCpuKind(previous, date, loaded)}${notes ? `\n${notes}` : ""}
`,
);
console.log(`wrote ${file}${missed.length ? `; goals missed: ${missed.map((f) => f.name).join(", ")}` : ""}`);
