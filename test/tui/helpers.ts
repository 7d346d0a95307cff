import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import type { render } from "ink-testing-library";
import { vi } from "vitest";
import { App } from "../../src/cli/app.js";
import { buildLabels } from "../../src/core/labels.js";
import { StateStore, stateDir } from "../../src/core/state.js";
import { TuiServices } from "../../src/tui/services.js";

/**
 * What a local VM leaves on disk after it powered off (idle, unless `console` says otherwise): the local provider's
 * metadata (no QEMU pid, so the provider reports it "stopped"; `workspace`: the id of its attached workspace volume), its
 * console log, and spuff's own record with the key. Nothing is mocked: the real local
 * provider and StateStore read these files.
 */
export async function stoppedLocalVm(
  env: NodeJS.ProcessEnv,
  name: string,
  opts: { ageHours?: number; ttlHours?: number; console?: string; workspace?: string } = {},
): Promise<void> {
  const dir = stateDir(env);
  const created = new Date(Date.now() - (opts.ageHours ?? 2) * 3600_000);
  const expires = new Date(created.getTime() + (opts.ttlHours ?? 24) * 3600_000);
  const labels = buildLabels({ name, owner: env.SPUFF_OWNER ?? "testowner0001", createdAt: created, expiresAt: expires, requestId: `r${name.replace(/-/g, "")}` });
  mkdirSync(join(dir, "local", name), { recursive: true });
  writeFileSync(
    join(dir, "local", name, "meta.json"),
    JSON.stringify({ name, labels, createdAt: created.toISOString(), sshPort: 2222, cpus: 2, memoryMiB: 2048, accel: "tcg", ...(opts.workspace ? { workspace: opts.workspace } : {}) }),
  );
  // The idle watcher's last words on the serial console, then the kernel's (what `ls` reads as "stopped (idle)").
  const idle = "spuff-idle: idle for 30m (timeout 30m): no ssh session, tmux client, cpu, load, network, spuff-keep or spuff-busy; poweroff\n[ 1805.1] reboot: Power down\n";
  writeFileSync(join(dir, "local", name, "console.log"), opts.console ?? idle);
  await new StateStore(dir).save(
    { name, provider: "local", id: name, user: "dev", createdAt: created.toISOString(), hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBcq4h8m7FZ7n4J0Yl8x8X7w6q2p4Rr6YV3u5X0cW6zA", endpoint: { host: "127.0.0.1", port: 2222 } },
    { private: `PRIVATE ${name}`, public: `ssh-ed25519 AAAA ${name}` },
  );
}

/** Records another spuff process left (test/fixtures/state-writer.ts): local state with no VM behind it ("gone"). */
export function goneRecords(env: NodeJS.ProcessEnv, prefix: string, count: number): void {
  const r = spawnSync("npx", ["tsx", "test/fixtures/state-writer.ts", stateDir(env), prefix, String(count)], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`state-writer failed: ${r.stderr}`);
}

/** A real App (config, state, providers) on a temp HOME, and the TUI's services on it. */
export async function servicesFor(env: NodeJS.ProcessEnv, cwd: string, globals: App["globals"] = {}): Promise<TuiServices> {
  const stdin = new PassThrough();
  const app = new App({
    stdout: { write: () => true, isTTY: false },
    stderr: { write: () => true, isTTY: false },
    stdin,
    env,
    cwd,
  });
  app.globals = globals;
  await app.prepare();
  return new TuiServices(app);
}

/** Strips colours and styles, so frames compare as text. */
export function plain(frame: string | undefined): string {
  return (frame ?? "").replace(/\u001b\[[0-9;?]*[A-Za-z]/g, "");
}

export type Rendered = ReturnType<typeof render>;

/** Waits until the last frame (colours stripped) passes `check`; returns it. */
export async function frame(r: Rendered, check: (f: string) => boolean | undefined, timeout = 10_000): Promise<string> {
  let last = "";
  await vi.waitFor(
    () => {
      last = plain(r.lastFrame());
      const ok = check(last);
      if (ok === false) throw new Error(`frame did not match:\n${last}`);
    },
    { timeout, interval: 20 },
  );
  return last;
}

export const has = (text: string) => (f: string) => f.includes(text);

/** What a terminal sends for these keys. */
export const KEY = { down: "\u001b[B", up: "\u001b[A", enter: "\r", esc: "\u001b", ctrlU: "\u0015" } as const;

/** The text inside a frame's bordered dialog, its wrapped lines joined with single spaces. */
export function dialogText(f: string): string {
  return f
    .split("\n")
    .filter((l) => l.trimStart().startsWith("│"))
    .map((l) => l.replace(/^\s*│/, "").replace(/│\s*$/, "").trim())
    .join(" ");
}
