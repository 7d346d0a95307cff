import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { PassThrough } from "node:stream";
import { main } from "../../src/cli/main.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A throw-away HOME with XDG dirs, so a test never reads or writes the real user's config and state. */
export function tempHome(): { home: string; env: NodeJS.ProcessEnv; cleanup(): void } {
  const home = mkdtempSync(join(tmpdir(), "spuff-home-"));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    XDG_CONFIG_HOME: join(home, ".config"),
    XDG_STATE_HOME: join(home, ".local", "state"),
    XDG_CACHE_HOME: join(home, ".cache"),
    SPUFF_OWNER: "testowner0001",
    CI: "true",
    NO_COLOR: "1",
  };
  return {
    home,
    env,
    // Retried: a guard daemon of the test may be writing its last files (its code cache) as it stops.
    cleanup: () => rmSync(home, { recursive: true, force: true, maxRetries: 5 }),
  };
}

/** The user's own config file of a `tempHome` env ($XDG_CONFIG_HOME/spuff/config.yaml). */
export function userConfigFile(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME ?? join(env.HOME ?? tmpdir(), ".config"), "spuff", "config.yaml");
}

/**
 * Writes the user's own config. Tests put their settings there, not in a `spuff.yaml`: a project file is used only
 * once trusted and may not set ssh.*, git_hosts and the other keys of src/config/project.ts.
 */
export function writeUserConfig(env: NodeJS.ProcessEnv, text: string): string {
  const file = userConfigFile(env);
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

/** Runs the real `main(argv)` in-process with captured stdout/stderr. */
export async function runCli(argv: string[], opts: { env: NodeJS.ProcessEnv; cwd?: string; stdin?: string }): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  const stdin = new PassThrough();
  stdin.end(opts.stdin ?? "");
  const code = await main(argv, {
    stdout: { write: (s: string) => (stdout += s), isTTY: false },
    stderr: { write: (s: string) => (stderr += s), isTTY: false },
    stdin,
    env: opts.env,
    cwd: opts.cwd ?? opts.env.HOME ?? tmpdir(),
  });
  return { code, stdout, stderr };
}

/** The built CLI, as a user runs it. */
export const BIN = resolve("dist/src/cli/bin.cjs");

export interface Running {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exit: Promise<number | null>;
}

/** Starts the built `spuff` with exactly `env` (a variable set to undefined is left out), output captured. */
export function spawnCli(argv: string[], env: NodeJS.ProcessEnv, cwd: string): Running {
  const clean = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined));
  const child = spawn(process.execPath, [BIN, ...argv], { env: clean, cwd, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<number | null>((res) => child.once("close", (code) => res(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exit };
}

/** Resolves when the run's progress shows `• name…`; rejects if it exits first. */
export function phaseShown(run: Running, name: string): Promise<void> {
  return new Promise((res, rej) => {
    const check = () => {
      if (run.stderr().includes(`• ${name}…`)) res();
    };
    run.child.stderr?.on("data", check);
    check();
    run.exit.then((code) => rej(new Error(`up exited (${code}) before "${name}":\n${run.stderr()}`)));
  });
}
