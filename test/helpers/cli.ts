import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
  return { home, env, cleanup: () => rmSync(home, { recursive: true, force: true }) };
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
