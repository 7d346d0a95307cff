import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { Script } from "node:vm";

type Main = (argv: string[]) => Promise<number>;

/**
 * The CLI's `main`, from the bundle `npm run build` makes (dist/src/cli/spuff.cjs) compiled with a V8 code cache, or
 * else from its modules (a tree built without the bundle, or `SPUFF_CODE_CACHE=0`). Node 20 has no compile cache of its
 * own: without one every run parses and compiles the same ~1 MB of code again (docs/adr/0013-code-cache.md).
 */
export async function loadMain(argv: string[], env: NodeJS.ProcessEnv): Promise<{ main: Main; done(): void }> {
  const bundle = join(__dirname, "spuff.cjs");
  let fd: number | undefined;
  try {
    if (env.SPUFF_CODE_CACHE !== "0") fd = openSync(bundle, "r");
  } catch {
    /* a tree built without the bundle */
  }
  if (fd === undefined) {
    const { main } = await import("./main.js");
    return { main, done() {} };
  }
  let source: string;
  let key: string;
  try {
    const st = fstatSync(fd);
    source = readFileSync(fd, "latin1"); // the bundle is ASCII (esbuild charset "ascii"): no UTF-8 decoding
    // The cache belongs to this bundle file and this Node: V8 itself checks only the source's length and its flags.
    key = `spuff-code-cache 1 ${process.version} ${process.arch} ${st.dev}:${st.ino} ${st.size} ${st.mtimeMs}`;
  } finally {
    closeSync(fd);
  }
  const word = cacheWord(argv);
  const file = cacheFile(env, word);
  const cached = readCache(file, key);
  const script = new Script(`(function (exports, require, module, __filename, __dirname, __spuffImport) {${source}\n})`, {
    filename: bundle,
    cachedData: cached?.data,
  });
  const module = { exports: {} as { main: Main; commandWord(argv: string[]): string | undefined; modulesRan: (1 | undefined)[] } };
  // The bundle's one import() (ink, an ES module) is this file's: Node 20 loses a vm.Script's own import callback when
  // the script comes from a code cache.
  const esmImport = (specifier: string) => import(specifier);
  // This file's own require resolves as the bundle's would: they share a directory.
  script.runInThisContext()(module.exports, require, module, bundle, dirname(bundle), esmImport);
  let saved = false;
  const save = () => {
    // Made after the run, so it holds the functions the run compiled, not only the top level; made anew (~2-8 ms)
    // only when this run ran a module the cache has not seen run: each command word's cache grows to the paths run.
    if (saved) return;
    saved = true;
    // Only for the commands there are (and none): a mistyped word gets no file of its own.
    if (word !== (module.exports.commandWord(argv) ?? "none")) return;
    const ran = module.exports.modulesRan;
    const seen = cached && !script.cachedDataRejected ? cached.ran : "";
    const union = Array.from({ length: Math.max(ran.length, seen.length) }, (_, i) => (ran[i] || seen[i] === "1" ? "1" : "0")).join("");
    if (union !== seen) writeCache(file, `${key} ${union}\n`, script.createCachedData());
  };
  // A process whose end comes at no set time (the guard daemon stops when its last VM goes, maybe as its home is
  // deleted) saves once it has started instead (src/cli/code-cache.ts).
  (globalThis as { [SAVE]?: () => void })[SAVE] = save;
  return { main: module.exports.main, done: save };
}

const SAVE = Symbol.for("spuff.saveCodeCache");

/**
 * Which cache a run uses: one per command, so each holds what that command runs. Only a guess, before the bundle is
 * loaded (a wrong one costs time, never correctness): the first word after the program's options that take a value.
 * A run writes its cache only where the bundle's own `commandWord` agrees.
 */
function cacheWord(argv: string[]): string {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--provider" || argv[i] === "--config") i++;
    else if (!argv[i].startsWith("-")) return /^[a-z][a-z-]{0,19}$/.test(argv[i]) ? argv[i] : "other";
  }
  return "none";
}

/** `$XDG_CACHE_HOME/spuff/code/WORD.v8`: the user's own cache, as trusted as the rest of their files. */
function cacheFile(env: NodeJS.ProcessEnv, word: string): string {
  return join(env.XDG_CACHE_HOME || join(env.HOME || homedir(), ".cache"), "spuff", "code", `${word}.v8`);
}

/** The cache for `key` and the modules whose runs it holds (one "0"/"1" per module of the bundle), if there is one. */
function readCache(file: string, key: string): { data: Buffer; ran: string } | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, "r");
    // Code that V8 runs: only a file of this user's that nobody else may write (never, say, one that root under sudo
    // finds in the invoking user's cache).
    if (!mine(fstatSync(fd))) return undefined;
    const bytes = readFileSync(fd);
    const nl = bytes.indexOf(10);
    const head = bytes.subarray(0, nl).toString("latin1");
    if (nl < 0 || !head.startsWith(`${key} `)) return undefined;
    return { data: bytes.subarray(nl + 1), ran: head.slice(key.length + 1) };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Owned by this process's user and writable by nobody else. */
function mine(st: { uid: number; mode: number }): boolean {
  return st.uid === process.getuid?.() && (st.mode & 0o022) === 0;
}

function writeCache(file: string, head: string, data: Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    // One level at a time, from a parent that exists: a process that outlives its home (a guard daemon stopping after
    // the home was deleted) writes nothing rather than making the directories again.
    // And only into directories of this user's that nobody else may write: root under sudo, with the user's HOME,
    // leaves the user's cache alone.
    for (const dir of [dirname(dirname(dirname(file))), dirname(dirname(file)), dirname(file)]) {
      try {
        mkdirSync(dir, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        if (!mine(statSync(dir))) return;
      }
    }
    // A new file (never through a link someone left under that name), renamed into place.
    writeFileSync(tmp, Buffer.concat([Buffer.from(head), data]), { mode: 0o600, flag: "wx" });
    renameSync(tmp, file); // atomic: a concurrent run reads the old file or the new one, never half of one
  } catch (err) {
    // A cache that cannot be written costs only time; a file of that name that was already there stays.
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return;
    try {
      rmSync(tmp, { force: true });
    } catch {}
  }
}
