import type { Command } from "commander";
import type { App } from "../app.js";

type Module = Promise<{ register(program: Command, app: App): void }>;

/**
 * Each top-level command by the words that run it (its name and aliases), with its module. main.ts registers only
 * the command being run (each command file and its imports cost start-up time: docs/performance.md); `--help`, an
 * unknown word and no word register all of them (index.ts). test/cli/commands-table.test.ts holds this table to the
 * registered commands.
 */
export const COMMAND_WORDS: Record<string, () => Module> = {
  up: () => import("./up.js"),
  ssh: () => import("./ssh.js"),
  ls: () => import("./ls.js"),
  list: () => import("./ls.js"),
  status: () => import("./status.js"),
  start: () => import("./start.js"),
  down: () => import("./down.js"),
  destroy: () => import("./down.js"),
  extend: () => import("./extend.js"),
  workspace: () => import("./workspace.js"),
  ws: () => import("./workspace.js"),
  reap: () => import("./reap.js"),
  config: () => import("./config.js"),
  trust: () => import("./trust.js"),
  "ssh-config": () => import("./ssh-config.js"),
  doctor: () => import("./doctor.js"),
  image: () => import("./image.js"),
  guard: () => import("./guard.js"),
};

/**
 * The command word of `argv` (`--provider hetzner ls --json` → "ls"): the first word, after only the program's own
 * options (`--provider NAME`, `--config FILE`, `--json`, `-y`, `-v`). Undefined when anything else comes first, when
 * help is asked for anywhere, or for a word that is not a command: then every command is registered, as commander's
 * help, suggestions and errors need.
 */
export function commandWord(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--provider" || a === "--config") i++;
    else if (a.startsWith("--provider=") || a.startsWith("--config=") || a === "--json" || a === "--yes" || a === "--verbose" || /^-[yv]+$/.test(a)) continue;
    else if (a.startsWith("-") || !Object.hasOwn(COMMAND_WORDS, a)) return undefined;
    else return argv.some((x) => x === "-h" || x === "--help" || x === "help") ? undefined : a;
  }
  return undefined;
}
