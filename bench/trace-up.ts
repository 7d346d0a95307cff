// One timeline of `spuff up NAME --json` against the Hetzner fake with a stand-in sshd: spuff's phases and each API
// request the fake answered, in ms from the spawn. Where the waits between them are.
//   npm run build && unshare -n -- sh -c 'ip link set lo up && node --import tsx bench/trace-up.ts [runs] [config.yaml lines...]'
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HetznerFake } from "../test/fakes/hetzner/fake.js";
import { type StandinVm, standinHooks } from "../test/helpers/standin-vm.js";
import { SPUFF } from "./lib.js";

const runs = Number(process.argv[2] ?? 2);
const extra = process.argv.slice(3).join("\n");
const home = mkdtempSync(join(tmpdir(), "spuff-trace-up-"));
const standins = new Map<number, StandinVm>();
const fake = await HetznerFake.start({ token: "trace-token", ipv4Prefix: "127.0.97.", ...standinHooks(standins) });
mkdirSync(join(home, "cfg", "spuff"), { recursive: true });
writeFileSync(join(home, "cfg", "spuff", "config.yaml"), `ssh:\n  user: spuff-test\n  tmux: false\n${extra}\n`);
const env = { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, "cfg"), XDG_STATE_HOME: join(home, "state"), XDG_CACHE_HOME: join(home, "cache"), CI: "true", HCLOUD_ENDPOINT: fake.endpoint, HCLOUD_TOKEN: "trace-token", SPUFF_OWNER: "traceowner01" };

function run(args: string[]): Promise<{ start: number; lines: { t: number; line: string }[] }> {
  return new Promise((resolve) => {
    const start = performance.now();
    const child = spawn(SPUFF[0], [...SPUFF.slice(1), "--provider", "hetzner", ...args], { env, cwd: home, stdio: ["ignore", "pipe", "inherit"] });
    const lines: { t: number; line: string }[] = [];
    let partial = "";
    child.stdout?.on("data", (d: Buffer) => {
      const parts = (partial + d.toString()).split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts.filter(Boolean)) lines.push({ t: performance.now(), line });
    });
    child.once("exit", () => resolve({ start, lines }));
  });
}

try {
  for (let i = -1; i < runs; i++) {
    const before = fake.requests.length;
    const r = await run(["up", `trace-${i + 1}`, "--json"]);
    if (i >= 0) {
      const rows: [number, string][] = [];
      for (const l of r.lines) {
        const e = JSON.parse(l.line) as { event?: string; phase?: string; status?: string };
        if (e.event === "phase" && e.status === "started") rows.push([l.t - r.start, `== ${e.phase}`]);
      }
      rows.push([(r.lines.at(-1)?.t ?? r.start) - r.start, "== last line"]);
      for (const q of fake.requests.slice(before)) rows.push([q.start - r.start, `   ${q.method} ${q.path}${q.search} -> ${q.status} (${((q.end ?? q.start) - q.start).toFixed(1)} ms)`]);
      rows.sort((a, b) => a[0] - b[0]);
      console.log(`--- run ${i}`);
      for (const [t, s] of rows) console.log(`${t.toFixed(1).padStart(7)}  ${s}`);
    }
    await run(["down", `trace-${i + 1}`, "--yes"]);
    await fake.settled();
  }
} finally {
  await fake.close();
  for (const s of standins.values()) await s.stop();
}
