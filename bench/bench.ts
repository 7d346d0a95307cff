// npm run bench: measures spuff against the official tools, side by side, and writes docs/performance.md.
// Every figure is a ratio or a median of one run on this machine; tests never assert timings.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { hyperfine, machineInfo, ms, peakRss, SPUFF, type Timing } from "./lib.js";

const sections: string[] = [];
const row = (t: Timing, label = t.command) => `| \`${label}\` | ${ms(t.median)} | ${ms(t.min)} | ${ms(t.max)} | ${t.runs} |`;
const HEAD = "| command | median | min | max | runs |\n|---|---|---|---|---|";

function coldStart(): void {
  const [version, help, bare] = hyperfine([`${SPUFF.join(" ")} --version`, `${SPUFF.join(" ")} --help`, "node -e 0"], { runs: 30 });
  const rssV = peakRss([...SPUFF, "--version"]);
  const rssH = peakRss([...SPUFF, "--help"]);
  const rssN = peakRss(["node", "-e", "0"]);
  sections.push(`## 1. Cold start
Goal: ≤ 100 ms for \`spuff --version\` / \`--help\`. Node itself (\`node -e 0\`) is the floor on this machine.

${HEAD}
${row(version, "spuff --version")}
${row(help, "spuff --help")}
${row(bare, "node -e 0")}

Peak RSS (median of 5): \`--version\` ${rssV} KiB, \`--help\` ${rssH} KiB, \`node -e 0\` ${rssN} KiB.
spuff's own share over bare Node: ${ms(version.median - bare.median)} (--version), ${ms(help.median - bare.median)} (--help).
`);
}

const only = process.argv.slice(2);
const want = (name: string) => only.length === 0 || only.includes(name);
const started = Date.now();
if (want("cold")) coldStart();
for (const extra of ["./bench-hetzner.ts", "./bench-ssh.ts", "./bench-local.ts"]) {
  const mod = (await import(extra).catch((e) => (e.code === "ERR_MODULE_NOT_FOUND" ? undefined : Promise.reject(e)))) as
    | { run(want: (n: string) => boolean): Promise<string[]> }
    | undefined;
  if (mod) sections.push(...(await mod.run(want)));
}

const file = "docs/performance.md";
const previous = existsSync(file) ? readFileSync(file, "utf8") : "";
const kept = previous.match(/\n## Local VM \(TCG\)[\s\S]*?(?=\n## |\n?$)/)?.[0] ?? "";
// Written by hand, kept across runs: what profiling found behind a missed goal, and the before/after of each fix.
const notes = previous.match(/\n## Profiles and fixes[\s\S]*$/)?.[0].trimEnd() ?? "";
writeFileSync(
  file,
  `# Performance

Written by \`npm run bench\` (bench/bench.ts) on ${new Date().toISOString().slice(0, 10)}: ${machineInfo()}.
Whole-process timings use \`hyperfine -N\` (medians with min/max); peak RSS uses GNU \`time -f %M\`.
These machines are noisy: compare ratios measured in the same run, not absolute numbers across runs.
Bench run time: ${Math.round((Date.now() - started) / 1000)} s.

${sections.join("\n")}${kept}${notes ? `\n${notes}` : ""}
`,
);
console.log(`wrote ${file}`);
