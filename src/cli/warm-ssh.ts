import { guardDir, spuffBuild } from "../core/session.js";
import { type WarmResult, warmSession } from "../ssh/warm-client.js";
import { largeFileOnStdin, sessionInput } from "./session-input.js";

// `spuff [--config FILE] ssh [NAME] -- COMMAND` as bin.cts runs it before loading the CLI: over the guard daemon's warm
// connection (src/ssh/warm.ts), without commander, the commands or the config (the daemon settles those). Anything it
// does not run ends up in the `ssh` command as usual, which then knows what happened here.

/** The argv this path takes: only `--config FILE` before `ssh`, a name, `--`, and a command. */
export function warmArgv(argv: string[]): { vm?: string; configFile?: string; command: string } | undefined {
  let i = 0;
  let configFile: string | undefined;
  if (argv[i] === "--config" && argv[i + 1] !== undefined) {
    configFile = argv[i + 1];
    i += 2;
  } else if (argv[i]?.startsWith("--config=")) configFile = argv[i++].slice("--config=".length);
  if (argv[i++] !== "ssh") return undefined;
  let vm: string | undefined;
  if (argv[i] !== "--") {
    if (!argv[i] || argv[i].startsWith("-")) return undefined;
    vm = argv[i++];
  }
  if (argv[i++] !== "--" || i >= argv.length) return undefined;
  return { vm, configFile, command: argv.slice(i).join(" ") };
}

/**
 * Where runWarm leaves its answer for the `ssh` command: on globalThis, as bin.cts's instance of this module and the
 * bundle's (docs/adr/0013-code-cache.md) are two.
 */
const TRIED = Symbol.for("spuff.warmResult");
const slot = globalThis as { [TRIED]?: WarmResult };

/** What this process's warm attempt gave, once (the `ssh` command takes it instead of asking the daemon again). */
export function takeWarmResult(): WarmResult | undefined {
  const r = slot[TRIED];
  delete slot[TRIED];
  return r;
}

/** Runs the session on the warm connection; the exit code, or undefined when the CLI must take over. */
export async function runWarm(a: { vm?: string; configFile?: string; command: string }, io: { stdin: NodeJS.ReadableStream; stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; env: NodeJS.ProcessEnv; cwd: string }): Promise<number | undefined> {
  if (largeFileOnStdin(io.stdin)) return undefined;
  const env = Object.fromEntries(Object.entries(io.env).filter((e): e is [string, string] => e[1] !== undefined));
  const req = { op: "session" as const, vm: a.vm, env, cwd: io.cwd, configFile: a.configFile, command: a.command, build: spuffBuild() };
  const r = await warmSession(guardDir(io.env), req, { stdin: sessionInput(io.stdin), stdout: io.stdout, stderr: io.stderr });
  if (r.kind === "done") return r.code;
  slot[TRIED] = r;
  return undefined;
}
