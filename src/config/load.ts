import { existsSync, readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { createRequire } from "node:module";
import type { Document, LineCounter, Node } from "yaml";
import type { ZodIssue } from "zod";
import { ConfigError } from "../core/errors.js";
import type { Config } from "./defaults.js";
import { stateDir } from "../core/state.js";
import { canonicalPath, sha256, type TrustStatus, TrustStore } from "../core/trust.js";
import { allowedProjectKeys, PROJECT_KEYS } from "./project.js";
import { combine, effective, findProjectConfig, userConfigPath } from "./quick.js";
import { type ConfigFile, configSchema } from "./schema.js";

export { parseDuration, sizeMiB } from "./units.js";
export { findProjectConfig, leafPaths, merge, userConfigPath } from "./quick.js";

let yamlModule: typeof import("yaml") | undefined;
/** yaml, loaded when a file is parsed (~50 ms of start-up): with no config file, spuff never loads it. */
function yaml(): typeof import("yaml") {
  yamlModule ??= createRequire(import.meta.url)("yaml") as typeof import("yaml");
  return yamlModule;
}

export interface LoadOptions {
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** `--config FILE`: used instead of the user and project files. */
  configFile?: string;
  /** `--provider NAME`. */
  provider?: string;
}

export interface LoadedConfig {
  config: Config;
  /** Files used, lowest precedence first. */
  files: string[];
  /** Files found (used or ignored), lowest precedence first, with their trust. */
  sources: SourceFile[];
  /** Where each value of `config` came from, by dotted path ("hetzner.location", "setup"). */
  origins: Record<string, Origin>;
  warnings: string[];
}


function position(lc: LineCounter, offset: number | undefined): string {
  if (offset === undefined) return "";
  const { line, col } = lc.linePos(offset);
  return `:${line}:${col}`;
}

/** Finds the YAML node for a zod issue path, falling back to the nearest parent that exists. */
function nodeAt(doc: Document, path: (string | number)[]): Node | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as Node | undefined;
    if (node && typeof node === "object" && "range" in node) return node;
  }
  return doc.contents ?? undefined;
}

/** The node of a map key, so "unknown key" points at the key itself. */
function keyNodeAt(doc: Document, parent: (string | number)[], key: string): Node | undefined {
  const map = parent.length === 0 ? doc.contents : (doc.getIn(parent, true) as Node | undefined);
  if (map && yaml().isMap(map)) {
    for (const pair of map.items) {
      if (yaml().isScalar(pair.key) && pair.key.value === key) return pair.key;
    }
  }
  return undefined;
}

function pathString(path: (string | number)[]): string {
  return path.reduce<string>((acc, p) => (typeof p === "number" ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), "");
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

export function didYouMean(word: string, options: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = Number.POSITIVE_INFINITY;
  for (const o of options) {
    const score = levenshtein(word.toLowerCase(), o.toLowerCase());
    if (score < bestScore) {
      best = o;
      bestScore = score;
    }
  }
  return best !== undefined && bestScore <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** Valid keys of the strict object at `path` in the schema, for "unknown key" messages. */
function validKeysAt(path: (string | number)[]): string[] {
  // biome-ignore lint/suspicious/noExplicitAny: walking zod internals generically
  let schema: any = configSchema;
  for (const p of path) {
    while (schema?._def?.innerType) schema = schema._def.innerType;
    if (typeof p === "number") schema = schema?._def?.type;
    else schema = schema?.shape?.[p];
  }
  while (schema?._def?.innerType) schema = schema._def.innerType;
  if (schema?._def?.typeName === "ZodUnion") schema = schema._def.options.find((o: { shape?: unknown }) => o.shape);
  return schema?.shape ? Object.keys(schema.shape) : [];
}

function issueLines(file: string, doc: Document, lc: LineCounter, issue: ZodIssue): string[] {
  if (issue.code === "unrecognized_keys") {
    const valid = validKeysAt(issue.path);
    return issue.keys.map((key) => {
      const node = keyNodeAt(doc, issue.path, key) ?? nodeAt(doc, issue.path);
      const where = pathString([...issue.path, key]);
      const guess = didYouMean(key, valid);
      return `${file}${position(lc, node?.range?.[0])}: ${where}: unknown key "${key}"${guess ? ` (did you mean "${guess}"?)` : ""}; valid keys here: ${valid.join(", ")}`;
    });
  }
  const node = nodeAt(doc, issue.path);
  const where = pathString(issue.path) || "(top level)";
  let message = issue.message;
  if (issue.code === "invalid_type") message = `expected ${issue.expected}, got ${issue.received}`;
  if (issue.code === "invalid_enum_value") message = `expected one of ${issue.options.join(", ")}, got "${issue.received}"`;
  if (issue.code === "invalid_union") {
    const inner = issue.unionErrors.flatMap((e) => e.issues).find((i) => i.path.length > issue.path.length);
    if (inner) return issueLines(file, doc, lc, inner);
    message = "has the wrong shape";
  }
  return [`${file}${position(lc, node?.range?.[0])}: ${where}: ${message}`];
}

const VAR_RE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Expands `${VAR}` and `${VAR:-default}` in every string scalar; an unset `${VAR}` is an error naming it. */
function expandEnv(doc: Document, lc: LineCounter, file: string, env: NodeJS.ProcessEnv, problems: string[]): void {
  const visit = (node: unknown, path: (string | number)[]): void => {
    if (yaml().isMap(node)) {
      for (const pair of node.items) visit(pair.value, [...path, yaml().isScalar(pair.key) ? String(pair.key.value) : "?"]);
    } else if (yaml().isSeq(node)) {
      for (const [i, item] of node.items.entries()) visit(item, [...path, i]);
    } else if (yaml().isScalar(node) && typeof node.value === "string" && node.value.includes("${")) {
      node.value = node.value.replace(VAR_RE, (_m, name: string, fallback: string | undefined) => {
        const value = env[name];
        if (value !== undefined && value !== "") return value;
        if (fallback !== undefined) return fallback;
        problems.push(
          `${file}${position(lc, node.range?.[0])}: ${pathString(path)}: environment variable \${${name}} is not set (set it, or write \${${name}:-default})`,
        );
        return "";
      });
    }
  };
  visit(doc.contents, []);
}

/** What kind of file a config file is: the user's own (`~/.config/spuff/config.yaml`, `--config FILE`) or a project's. */
export type FileKind = "user" | "config" | "project";

export interface ParsedFile {
  data: ConfigFile;
  /** Where each key set by the file is, by dotted path ("hetzner.location", "setup"). */
  positions: Map<string, { line: number; col: number }>;
}

function readBytes(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot read config file ${file}: ${code === "ENOENT" ? "no such file" : code}`, {
      hint: code === "ENOENT" ? "create one with `spuff config init`, or check the path" : undefined,
    });
  }
}

/** Positions of the keys a file sets, down to the leaves the merge replaces whole (scalars and lists). */
function keyPositions(doc: Document, lc: LineCounter): Map<string, { line: number; col: number }> {
  const out = new Map<string, { line: number; col: number }>();
  const visit = (node: unknown, path: string[]): void => {
    if (!yaml().isMap(node)) return;
    for (const pair of node.items) {
      if (!yaml().isScalar(pair.key)) continue;
      const p = [...path, String(pair.key.value)];
      if (yaml().isMap(pair.value)) visit(pair.value, p);
      else if (pair.key.range) out.set(p.join("."), lc.linePos(pair.key.range[0]));
    }
  };
  visit(doc.contents, []);
  return out;
}

/** Keys a project file may not set (src/config/project.ts), one problem each, pointing at the key. */
function refusedKeys(doc: Document, lc: LineCounter, file: string, userFile: string): string[] {
  const problems: string[] = [];
  const visit = (node: unknown, path: string[]): void => {
    if (!yaml().isMap(node)) return;
    for (const pair of node.items) {
      if (!yaml().isScalar(pair.key)) continue;
      const p = [...path, String(pair.key.value)];
      const rule = PROJECT_KEYS[p.join(".")];
      if (typeof rule === "string") {
        problems.push(
          `${file}${position(lc, pair.key.range?.[0])}: ${p.join(".")}: not allowed in a project file (${rule}); move it to your user config ${userFile}`,
        );
      } else if (rule === undefined && yaml().isMap(pair.value)) visit(pair.value, p);
    }
  };
  visit(doc.contents, []);
  return problems;
}

/**
 * Parses and validates one config file's bytes. A user file (`kind` user or config) expands `${VAR}` from `env`; a
 * project file never does (its text is used as written) and may set only the keys of src/config/project.ts. Throws a
 * ConfigError listing every problem with file:line:col.
 */
export function parseConfigFile(file: string, bytes: Buffer, kind: FileKind, env: NodeJS.ProcessEnv, warnings: string[] = []): ParsedFile {
  const text = bytes.toString("utf8");
  const lc = new (yaml().LineCounter)();
  const doc = yaml().parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(`${file} is not valid YAML`, {
      notes: doc.errors.map((e) => `${file}${position(lc, e.pos[0])}: ${e.message.split("\n")[0]}`),
      hint: "fix the YAML syntax at the position shown",
    });
  }
  const problems: string[] = [];
  if (kind === "project") problems.push(...refusedKeys(doc, lc, file, userConfigPath(env)));
  else expandEnv(doc, lc, file, env, problems);
  const raw = doc.toJS() ?? {};
  const result = configSchema.safeParse(raw);
  if (!result.success) problems.push(...result.error.issues.flatMap((i) => issueLines(file, doc, lc, i)));
  if (problems.length > 0) {
    throw new ConfigError(`${file} has ${problems.length} problem${problems.length === 1 ? "" : "s"}`, {
      notes: problems,
      hint:
        kind === "project" && problems.some((p) => p.includes("not allowed in a project file"))
          ? [
              `a project file may set only: ${allowedProjectKeys().join(", ")} (docs/config.md, "Project files")`,
              "see docs/config.md or `spuff config init` for the reference of every key",
            ]
          : "see docs/config.md or `spuff config init` for the reference of every key",
    });
  }
  const parsed = result.data as ConfigFile;
  if (parsed.hetzner?.token && /\bhetzner:[\s\S]*\btoken:/.test(text)) {
    try {
      const mode = statSync(file).mode;
      if (mode & 0o077) {
        warnings.push(
          `${file} holds an API token and is readable by others (mode ${(mode & 0o777).toString(8)}); fix: chmod 600 ${file}`,
        );
      }
    } catch {
      /* unreadable stat is not worth an error */
    }
  }
  return { data: parsed, positions: keyPositions(doc, lc) };
}

/** Reads and validates one config file (see parseConfigFile). */
export function loadFile(file: string, env: NodeJS.ProcessEnv, warnings: string[] = [], kind: FileKind = "user"): ConfigFile {
  return parseConfigFile(file, readBytes(file), kind, env, warnings).data;
}


/** Where a value of the effective config came from. */
export type Origin =
  | { source: "default" }
  | { source: FileKind; file: string; line: number; col: number; trusted: boolean }
  | { source: "env"; name: string }
  | { source: "flag"; name: string };

/** A config file spuff found, whether it used it, and whether it is trusted (the user's own files always are). */
export interface SourceFile {
  kind: FileKind;
  path: string;
  trusted: boolean;
  /** Left out: an untrusted project file under `untrusted: "ignore"`. */
  ignored?: boolean;
  sha256?: string;
}

export interface TrustOptions {
  /**
   * What to do with a project file whose exact content is not trusted: "refuse" (default) throws an
   * UntrustedProjectError before any of it is used; "ignore" leaves it out with a warning (commands that only act on
   * VMs that already exist).
   */
  untrusted?: "refuse" | "ignore";
  /** Where trusted project files are recorded; default: the store in spuff's state dir. */
  store?: TrustStore;
}

/** A project file whose exact content the user has not trusted (`spuff trust`). Exit code 1; nothing of it was used. */
export class UntrustedProjectError extends ConfigError {
  constructor(
    readonly file: string,
    readonly status: Exclude<TrustStatus, "trusted">,
    readonly trustedAt?: string,
  ) {
    super(
      status === "changed"
        ? `${file} changed since you trusted it${trustedAt ? ` (${trustedAt})` : ""}; spuff stopped before using it`
        : `${file} is a project config you have not trusted; spuff stopped before using it`,
      {
        notes: [
          "a project's spuff.yaml comes with the repository: its setup commands run on the VM your agent is later forwarded to",
        ],
        hint: [`review the file, then trust this exact content: spuff trust ${file}`, "or run the command in a terminal: spuff shows the file and asks"],
      },
    );
  }
}

/** The project file's bytes, its canonical path and digest. */
export function readProjectFile(file: string): { path: string; bytes: Buffer; sha256: string } {
  const path = canonicalPath(file);
  const bytes = readBytes(path);
  return { path, bytes, sha256: sha256(bytes) };
}

/**
 * Precedence, lowest first: built-in defaults < user config (`$XDG_CONFIG_HOME/spuff/config.yaml`) < project
 * `spuff.yaml` (cwd or nearest parent) < environment variables < command-line flags. `--config FILE` replaces both
 * files. Each file is validated on its own so every problem points at its file, line and column. A project file is
 * used only when the user trusted its exact bytes, and never expands `${VAR}` (docs/adr/0006-project-config-trust.md).
 */
export function loadConfig(opts: LoadOptions & TrustOptions): LoadedConfig {
  const warnings: string[] = [];
  const sources: SourceFile[] = [];
  const layers: { source: SourceFile; parsed: ParsedFile }[] = [];
  if (opts.configFile) {
    const path = resolve(opts.cwd, opts.configFile);
    const source: SourceFile = { kind: "config", path, trusted: true };
    sources.push(source);
    layers.push({ source, parsed: parseConfigFile(path, readBytes(path), "config", opts.env, warnings) });
  } else {
    const user = userConfigPath(opts.env);
    if (existsSync(user)) {
      const source: SourceFile = { kind: "user", path: user, trusted: true };
      sources.push(source);
      layers.push({ source, parsed: parseConfigFile(user, readBytes(user), "user", opts.env, warnings) });
    }
    const found = findProjectConfig(opts.cwd);
    if (found && canonicalPath(found) !== canonicalPath(user)) {
      const project = readProjectFile(found);
      const store = opts.store ?? new TrustStore(stateDir(opts.env));
      const entry = store.entry(project.path);
      const status: TrustStatus = !entry ? "new" : entry.sha256 === project.sha256 ? "trusted" : "changed";
      const source: SourceFile = { kind: "project", path: project.path, trusted: status === "trusted", sha256: project.sha256 };
      sources.push(source);
      if (status !== "trusted" && opts.untrusted === "ignore") {
        source.ignored = true;
        warnings.push(
          `ignoring ${project.path}: it is ${status === "changed" ? "changed since you trusted it" : "not trusted"} (this command needs only your user config); to use it: spuff trust ${project.path}`,
        );
      } else {
        // Validated before the trust check: a file with problems (or refused keys) is reported as such, trusted or not.
        const parsed = parseConfigFile(project.path, project.bytes, "project", opts.env, warnings);
        if (status !== "trusted") throw new UntrustedProjectError(project.path, status, entry?.trustedAt);
        layers.push({ source, parsed });
      }
    }
  }
  const { merged, origins } = combine(layers, opts.env, opts.provider);
  const check = configSchema.safeParse(merged);
  if (!check.success) {
    const issue = check.error.issues[0];
    const source = issue.path[0] === "provider" ? (opts.provider !== undefined ? "--provider" : "SPUFF_PROVIDER") : "environment";
    throw new ConfigError(`${source}: ${pathString(issue.path)}: ${issue.message}`, {
      hint: issue.path[0] === "provider" ? "valid providers: local, hetzner, aws" : undefined,
    });
  }
  return effective(check.data, origins, sources, warnings);
}

