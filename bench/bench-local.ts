// Section 4: a local VM under this machine's accelerator (TCG here): `spuff up` to ready, cold (booted from the image)
// and warm (restored from the saved machine state, docs/adr/0009-local-warm-start.md), by phase, in one run.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { builtImageDir } from "../providers/local/image.js";
import { goal, ratio, SPUFF } from "./lib.js";

interface Run {
  total: number;
  timings: { phase: string; ms: number }[];
  info: string[];
}

/** Machine size of the measured VMs (the end-to-end tests' size), no network: the bench runs in its own namespace. */
const CONFIG = "provider: local\nlocal: { cpus: 2, memory: 1G, disk: 4G, network: none }\n";

export async function run(want: (n: string) => boolean): Promise<string[]> {
  if (!want("local")) return [];
  const cache = process.env.SPUFF_CACHE_DIR ?? join(homedir(), ".cache", "spuff");
  if (!existsSync(join(builtImageDir(cache, "debian-13"), "disk.qcow2"))) {
    return ["## 4. Local VM\nSkipped: no image (run `sudo spuff image build` first).\n"];
  }
  const home = mkdtempSync(join(tmpdir(), "spuff-bench-local-"));
  const env = { ...process.env, HOME: home, XDG_STATE_HOME: join(home, "state"), XDG_CONFIG_HOME: join(home, "cfg"), SPUFF_CACHE_DIR: cache, CI: "true" };
  mkdirSync(join(home, "cfg", "spuff"), { recursive: true });
  writeFileSync(join(home, "cfg", "spuff", "config.yaml"), CONFIG);
  const spuff = (...argv: string[]) => spawnSync(SPUFF[0], [...SPUFF.slice(1), ...argv], { env, encoding: "utf8" });
  const up = (name: string, ...flags: string[]): Run => {
    const t0 = performance.now();
    const r = spuff("--json", "up", name, ...flags);
    const total = (performance.now() - t0) / 1000;
    const events = r.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
    const ready = events.find((e) => e.event === "ready");
    if (!ready) throw new Error(`spuff up ${name} ${flags.join(" ")} failed: ${r.stdout}\n${r.stderr}`);
    spuff("down", name, "--yes");
    return { total, timings: ready.timings, info: events.filter((e) => e.event === "info").map((e) => e.message) };
  };
  try {
    // Not timed: the saved state for this config, made once (a cold boot of a warm-up VM) if the cache has none.
    const prep = spuff("image", "build", "--warm");
    if (prep.status !== 0) throw new Error(`spuff image build --warm failed: ${prep.stderr}`);
    const load = loadavg()[0];
    const cold = up("bench-cold", "--cold");
    const warm = up("bench-warm");
    if (warm.timings.some((t) => t.phase.startsWith("save machine state"))) throw new Error("the warm up saved the state again: it was not measured warm");
    // In the order they run: the warm-only phases (restore, identity) where the cold boot's are.
    const coldPhases = cold.timings.map((t) => t.phase);
    const warmOnly = warm.timings.map((t) => t.phase).filter((p) => !coldPhases.includes(p));
    const at0 = coldPhases.indexOf("wait running");
    const phases = [...coldPhases.slice(0, at0), ...warmOnly, ...coldPhases.slice(at0)];
    const at = (r: Run, p: string) => {
      const t = r.timings.find((x) => x.phase === p);
      return t ? `${(t.ms / 1000).toFixed(1)} s` : "–";
    };
    const rows = phases.map((p) => `| ${p} | ${at(cold, p)} | ${at(warm, p)} |`);
    const q = warm.total / cold.total;
    return [
      `## 4. Local VM (this machine's accelerator)
\`spuff --json up NAME --cold\`, then \`spuff --json up NAME\` (warm: restored from the saved machine state), one after the
other, with the cached image, \`${CONFIG.split("\n")[1]}\`; ${cold.info.join("; ")}. Load average at the start: ${load.toFixed(1)}
on ${(await import("node:os")).cpus().length} CPUs. The state itself was saved before, untimed (\`spuff image build --warm\`).

| phase | cold | warm |
|---|---|---|
${rows.join("\n")}
| **total (wall clock of the command)** | **${cold.total.toFixed(1)} s** | **${warm.total.toFixed(1)} s** |

\`spuff up\` to ready, warm ÷ cold: ${goal("local `spuff up` to ready, warm ÷ cold", q, "≤", 0.15, ratio)}.
`,
    ];
  } finally {
    for (const n of ["bench-cold", "bench-warm"]) spuff("down", n, "--yes");
    rmSync(home, { recursive: true, force: true });
  }
}
