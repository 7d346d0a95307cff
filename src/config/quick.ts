import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { type Config, DEFAULTS } from "./defaults.js";
import type { LoadedConfig, LoadOptions, Origin, SourceFile } from "./load.js";
import type { ConfigFile } from "./schema.js";

// The parts of the config loader that need neither yaml nor zod (~30 ms of CPU at start-up, docs/performance.md),
// and the config of a run that has no config file to read (configWithoutFiles).

/** The providers spuff knows (the schema's `provider` enum is built from this list). */
export const providerNames = ["local", "hetzner", "aws"] as const;

export function userConfigPath(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), ".config");
  return join(base, "spuff", "config.yaml");
}

/** `spuff.yaml` in `cwd` or the nearest parent directory that has one. */
export function findProjectConfig(cwd: string): string | undefined {
  let dir = resolve(cwd);
  for (;;) {
    const candidate = join(dir, "spuff.yaml");
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Objects merge key by key; arrays and scalars from the higher layer replace the lower one. */
export function merge<T>(lower: T, higher: unknown): T {
  if (!isPlainObject(lower) || !isPlainObject(higher)) return (higher === undefined ? lower : higher) as T;
  const out: Record<string, unknown> = { ...lower };
  for (const [k, v] of Object.entries(higher)) {
    if (v === undefined) continue;
    out[k] = merge(out[k], v);
  }
  return out as T;
}

/** Dotted paths of the leaves of a layer (scalars and lists: what the merge replaces whole). */
export function leafPaths(value: unknown, prefix = ""): string[] {
  if (!isPlainObject(value)) return prefix ? [prefix] : [];
  return Object.entries(value).flatMap(([k, v]) => (v === undefined ? [] : leafPaths(v, prefix ? `${prefix}.${k}` : k)));
}

export const ENV_VARS: Record<string, (env: NodeJS.ProcessEnv) => string | undefined> = {
  provider: (env) => (env.SPUFF_PROVIDER ? "SPUFF_PROVIDER" : undefined),
  "hetzner.token": (env) => (env.HCLOUD_TOKEN ? "HCLOUD_TOKEN" : undefined),
  "aws.region": (env) => (env.AWS_REGION ? "AWS_REGION" : env.AWS_DEFAULT_REGION ? "AWS_DEFAULT_REGION" : undefined),
  "aws.profile": (env) => (env.AWS_PROFILE ? "AWS_PROFILE" : undefined),
  "aws.endpoint": (env) => (env.AWS_ENDPOINT_URL_EC2 ? "AWS_ENDPOINT_URL_EC2" : undefined),
};

/** Environment layer: SPUFF_PROVIDER, HCLOUD_TOKEN, AWS_REGION/AWS_DEFAULT_REGION, AWS_PROFILE, AWS_ENDPOINT_URL_EC2. */
export function envLayer(env: NodeJS.ProcessEnv): ConfigFile {
  const layer: Record<string, Record<string, unknown> | string> = {};
  if (env.SPUFF_PROVIDER) layer.provider = env.SPUFF_PROVIDER;
  if (env.HCLOUD_TOKEN) layer.hetzner = { token: env.HCLOUD_TOKEN };
  const aws: Record<string, unknown> = {};
  if (env.AWS_REGION || env.AWS_DEFAULT_REGION) aws.region = env.AWS_REGION || env.AWS_DEFAULT_REGION;
  if (env.AWS_PROFILE) aws.profile = env.AWS_PROFILE;
  if (env.AWS_ENDPOINT_URL_EC2) aws.endpoint = env.AWS_ENDPOINT_URL_EC2;
  if (Object.keys(aws).length) layer.aws = aws;
  return layer as ConfigFile;
}

/** The layers merged in precedence order (files, then the environment, then `--provider`), and where each leaf came from. */
export function combine(
  layers: { source: SourceFile; parsed: { data: ConfigFile; positions: Map<string, { line: number; col: number }> } }[],
  env: NodeJS.ProcessEnv,
  provider: string | undefined,
): { merged: ConfigFile; origins: Record<string, Origin> } {
  const origins: Record<string, Origin> = {};
  for (const p of leafPaths(DEFAULTS)) origins[p] = { source: "default" };
  let merged: ConfigFile = {};
  for (const { source, parsed } of layers) {
    merged = merge(merged, parsed.data);
    for (const p of leafPaths(parsed.data)) {
      const at = parsed.positions.get(p) ?? parsed.positions.get(p.split(".")[0]) ?? { line: 1, col: 1 };
      origins[p] = { source: source.kind, file: source.path, line: at.line, col: at.col, trusted: source.trusted };
    }
  }
  const fromEnv = envLayer(env);
  merged = merge(merged, fromEnv);
  for (const p of leafPaths(fromEnv)) origins[p] = { source: "env", name: ENV_VARS[p]?.(env) ?? "environment" };
  if (provider !== undefined) {
    merged = merge(merged, { provider });
    origins.provider = { source: "flag", name: "--provider" };
  }
  return { merged, origins };
}

/** The effective config: the validated layers over the defaults. */
export function effective(valid: ConfigFile, origins: Record<string, Origin>, sources: SourceFile[], warnings: string[]): LoadedConfig {
  const config = merge(structuredClone(DEFAULTS) as unknown as Config, valid);
  // A leaf of the defaults that a file replaced with an object (dotfiles) or the reverse keeps only current paths.
  const leaves = new Set(leafPaths(config));
  for (const p of Object.keys(origins)) if (!leaves.has(p)) delete origins[p];
  const files = sources.filter((s) => !s.ignored).map((s) => s.path);
  return { config, files, sources, origins, warnings };
}

/**
 * Values of the environment layer and `--provider` that the schema accepts whatever they hold (any non-empty string),
 * and the check of the one that it does not (`provider`, one of providerNames). Every other leaf (a new env var, a URL
 * in AWS_ENDPOINT_URL_EC2) goes through the schema. test/config/quick.test.ts holds this to the schema's verdicts.
 */
const ANY_STRING = new Set(["hetzner.token", "aws.region", "aws.profile"]);

function accepted(merged: ConfigFile): boolean {
  return leafPaths(merged).every((p) => {
    const v = p.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], merged);
    if (typeof v !== "string" || v === "") return false;
    return p === "provider" ? (providerNames as readonly string[]).includes(v) : ANY_STRING.has(p);
  });
}

/**
 * loadConfig's answer for a run with no config file (no --config, no user config, no project spuff.yaml) whose
 * environment and flags hold only values the schema accepts as they are: the same config, origins and (no) warnings,
 * without loading yaml or zod. Else undefined: loadConfig reads and validates as always.
 */
export function configWithoutFiles(opts: LoadOptions): LoadedConfig | undefined {
  if (opts.configFile || existsSync(userConfigPath(opts.env)) || findProjectConfig(opts.cwd)) return undefined;
  const { merged, origins } = combine([], opts.env, opts.provider);
  return accepted(merged) ? effective(merged, origins, [], []) : undefined;
}
