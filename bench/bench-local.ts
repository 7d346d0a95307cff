// Section 5: a local VM under this machine's accelerator (TCG here): time to SSH and to cloud-init done, by phase.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { builtImageDir } from "../providers/local/image.js";
import { SPUFF } from "./lib.js";

export async function run(want: (n: string) => boolean): Promise<string[]> {
  if (!want("local")) return [];
  const cache = process.env.SPUFF_CACHE_DIR ?? join(homedir(), ".cache", "spuff");
  if (!existsSync(join(builtImageDir(cache, "debian-13"), "disk.qcow2"))) {
    return ["## 4. Local VM\nSkipped: no image (run `sudo spuff image build` first).\n"];
  }
  const home = mkdtempSync(join(tmpdir(), "spuff-bench-local-"));
  const env = { ...process.env, HOME: home, XDG_STATE_HOME: join(home, "state"), XDG_CONFIG_HOME: join(home, "cfg"), SPUFF_CACHE_DIR: cache, CI: "true" };
  try {
    const t0 = performance.now();
    const r = spawnSync(SPUFF[0], [...SPUFF.slice(1), "--json", "--provider", "local", "up", "bench"], { env, encoding: "utf8" });
    const total = (performance.now() - t0) / 1000;
    const ready = r.stdout.trim().split("\n").map((l) => JSON.parse(l)).find((e) => e.event === "ready");
    if (!ready) throw new Error(`spuff up failed: ${r.stdout}\n${r.stderr}`);
    const info = r.stdout.trim().split("\n").map((l) => JSON.parse(l)).filter((e) => e.event === "info").map((e) => e.message);
    const rows = (ready.timings as { phase: string; ms: number }[]).map((t) => `| ${t.phase} | ${(t.ms / 1000).toFixed(1)} s |`);
    const toSsh = (ready.timings as { phase: string; ms: number }[]).slice(0, -2).reduce((s: number, t: { ms: number }) => s + t.ms, 0) / 1000;
    return [
      `## 4. Local VM (this machine's accelerator)
\`spuff --json --provider local up bench\` with the cached image; ${info.join("; ")}. Goal: shell ≤ 60 s on TCG.

| phase | time |
|---|---|
${rows.join("\n")}
| **total (wall clock of the command)** | **${total.toFixed(1)} s** |

Time to a working SSH login with the pinned host key: ${toSsh.toFixed(1)} s; cloud-init done: ${total.toFixed(1)} s.
`,
    ];
  } finally {
    spawnSync(SPUFF[0], [...SPUFF.slice(1), "down", "bench", "--yes"], { env });
    rmSync(home, { recursive: true, force: true });
  }
}
