import { Command, CommanderError, Option } from "commander";
import { SpuffError } from "../core/errors.js";
import { App, type Io } from "./app.js";
import { commandWord, COMMAND_WORDS } from "./commands/table.js";
import { VERSION } from "./version.js";

// For src/cli/launch.cts: which command a run of the bundle ran.
export { commandWord };

const EXIT_CODES = `
Exit codes:
  0    success
  1    user error (bad flag, bad config, unknown VM) — the message says how to fix it
  2    provider or API error (cloud API, QEMU, SSH to the VM)
  130  interrupted (Ctrl-C)
  255  spuff ssh only: spuff itself failed (any other code is the remote command's, as with OpenSSH's ssh)

Examples:
  $ spuff up                      create a VM with the configured provider (default: local QEMU)
  $ spuff ssh                     open a shell on your only VM, agent forwarded
  $ spuff ls --json               list VMs for scripts
  $ spuff down my-vm              destroy a VM and everything spuff made for it

Docs: README.md, docs/config.md, docs/json.md`;

/**
 * `spuff ssh` passes the remote command's exit code through, so its own failures cannot use 1 and 2 (a failing `make`
 * exits 2): like OpenSSH's ssh, it exits 255 when spuff itself failed.
 */
export const SSH_OWN_FAILURE = 255;

/** Commands that call `app.prepare()` themselves: `ssh` loads the config while its connection is being set up. */
const LOADS_CONFIG_ITSELF = new Set(["ssh"]);

/**
 * What a command does with a project spuff.yaml the user has not trusted (docs/adr/0006-project-config-trust.md).
 * Not listed: "refuse" (stop before anything is created; in a terminal, show the file and ask). "ignore": the command
 * works on VMs that already exist, which a project file cannot configure, so it leaves the file out with a warning.
 * "unused": the command reads no config.
 */
const UNTRUSTED_PROJECT: Record<string, "ignore" | "unused" | ((args: unknown[]) => "refuse" | "unused")> = {
  ls: "ignore",
  status: "ignore",
  down: "ignore",
  extend: "ignore",
  reap: "ignore",
  ssh: "ignore",
  "ssh-config": "ignore",
  doctor: "ignore",
  "image pull": "ignore",
  "image build": "ignore",
  trust: "unused",
  "config init": "unused",
  "config path": "unused",
  // `config validate FILE` checks that file as it is (a spuff.yaml by a project file's rules) and uses none of it.
  "config validate": (args) => (args[0] === undefined ? "refuse" : "unused"),
};

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

type Register = (program: Command, app: App) => void;

/** The program with the commands `registers` register (all of them: commands/index.ts). */
export function buildProgram(app: App, registers: Register[]): Command {
  const program = new Command("spuff")
    .description("Ephemeral development VMs with pinned host keys and a guarded, forwarded SSH agent")
    .version(VERSION, "--version", "print the version")
    .addOption(new Option("--provider <name>", "provider to use: local, hetzner, aws (default from config)"))
    .option("--config <file>", "use this config file instead of the user and project files")
    .option("--json", "machine-readable output on stdout (see docs/json.md)")
    .option("-y, --yes", "answer yes to confirmations (needed when not interactive)")
    .option("-v, --verbose", "more detail, and stack traces on errors")
    .showHelpAfterError("(run with --help for usage)")
    .addHelpText("after", EXIT_CODES)
    .configureOutput({
      writeOut: (s) => app.io.stdout.write(s),
      writeErr: (s) => app.io.stderr.write(s),
    })
    .exitOverride();
  program.hook("preSubcommand", (_this, sub) => {
    app.command = sub.name();
  });
  program.hook("preAction", async (_this, action) => {
    app.globals = action.optsWithGlobals();
    const policy = UNTRUSTED_PROJECT[commandPath(action)] ?? "refuse";
    app.untrustedProject = typeof policy === "function" ? policy(action.processedArgs) : policy;
    if (!LOADS_CONFIG_ITSELF.has(action.name())) await app.prepare();
  });
  for (const register of registers) register(program, app);
  for (const cmd of program.commands) {
    cmd.exitOverride().configureOutput({
      writeOut: (s) => app.io.stdout.write(s),
      writeErr: (s) => app.io.stderr.write(s),
    });
    cmd.showHelpAfterError("(run with --help for usage)");
  }
  return program;
}

/** `spuff` alone: the interactive picker in a terminal (Ink is loaded only then), else the help. */
async function noArguments(app: App, program: Command): Promise<number> {
  if (!app.interactive) {
    program.outputHelp();
    return 0;
  }
  await app.prepare({ longLived: true });
  const { loadTui } = await import("../tui/load.js");
  const { runTui } = await loadTui(() => import("../tui/run.js"));
  return runTui(app);
}

/**
 * The process's streams, env and cwd, where `io` gives none. `process.stdin` is made only when read (~3 ms: Node builds
 * its stream on first access), which `ls --json` and most commands never do.
 */
function processIo(io: Partial<Io>): Io {
  return {
    stdout: io.stdout ?? process.stdout,
    stderr: io.stderr ?? process.stderr,
    get stdin() {
      return io.stdin ?? process.stdin;
    },
    env: io.env ?? process.env,
    cwd: io.cwd ?? process.cwd(),
  };
}

/** Runs spuff with `argv` (without node and script) and returns the exit code. Never throws. */
export async function main(argv: string[], io: Partial<Io> = {}): Promise<number> {
  const app = new App(processIo(io));
  // Only the command being run is registered (and its module loaded); help, errors and suggestions get all of them.
  const word = commandWord(argv);
  const registers = word ? [(await COMMAND_WORDS[word]()).register] : (await import("./commands/index.js")).commands;
  const program = buildProgram(app, registers);
  const before = process.exitCode;
  process.exitCode = undefined;
  try {
    if (argv.length === 0) return await noArguments(app, program);
    await program.parseAsync(argv, { from: "user" });
    const code = typeof process.exitCode === "number" ? process.exitCode : 0;
    return code;
  } catch (err) {
    const code = handleError(app, err);
    return app.command === "ssh" && code !== 0 ? SSH_OWN_FAILURE : code;
  } finally {
    process.exitCode = before;
  }
}

/** The one top-level error handler: message, notes, hints; stack only with --verbose. */
export function handleError(app: App, err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help") return 0;
    return err.exitCode === 0 ? 0 : 1;
  }
  const verbose = app.verbose || app.io.env.SPUFF_DEBUG === "1";
  if (err instanceof SpuffError) {
    if (app.json) {
      app.out(JSON.stringify({ error: { type: err.name, message: err.message, notes: err.notes, hints: err.hints, exitCode: err.exitCode } }));
    }
    const red = app.color ? (s: string) => `\u001b[31m${s}\u001b[0m` : (s: string) => s;
    const lines = [`${red("error:")} ${err.message}`, ...err.notes.map((n) => `  ${n}`), ...err.hints.map((h) => `hint: ${h}`)];
    if (verbose && err.stack) lines.push(err.stack);
    app.err(lines.join("\n"));
    return err.exitCode;
  }
  const e = err instanceof Error ? err : new Error(String(err));
  app.err(`error: ${e.message}`);
  if (verbose) app.err(e.stack ?? "");
  else app.err("hint: this is a bug or an unexpected failure; run again with --verbose for details");
  return 2;
}
