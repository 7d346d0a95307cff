import { existsSync, readFileSync } from "node:fs";
import type { Command } from "commander";
import { UserError } from "../../core/errors.js";
import { writeFileAtomic } from "../../core/state.js";
import type { App } from "../app.js";

export function referenceConfig(): string {
  for (const rel of ["../../config/reference.yaml", "../../../src/config/reference.yaml"]) {
    const url = new URL(rel, import.meta.url);
    if (existsSync(url)) return readFileSync(url, "utf8");
  }
  throw new Error("reference.yaml is missing from this installation");
}

/** Removes secrets before config is shown. */
function redact(config: Record<string, unknown>): Record<string, unknown> {
  const copy = structuredClone(config) as { hetzner?: { token?: string } };
  if (copy.hetzner?.token) copy.hetzner.token = "<redacted>";
  return copy as Record<string, unknown>;
}

export function register(program: Command, app: App): void {
  const config = program
    .command("config")
    .description("create, show and check spuff's configuration")
    .addHelpText(
      "after",
      `
Examples:
  $ spuff config init             write a commented reference config to ~/.config/spuff/config.yaml
  $ spuff config validate         check the config files spuff would use
  $ spuff config show --json      the effective config after all layers`,
    );

  config
    .command("init")
    .description("write a commented reference config file (every key, with its default)")
    .option("--project", "write ./spuff.yaml instead of the user config")
    .option("--force", "overwrite an existing file")
    .addHelpText(
      "after",
      `
Examples:
  $ spuff config init                 write ~/.config/spuff/config.yaml (mode 600)
  $ spuff config init --project       write ./spuff.yaml for this project
  $ spuff config init --force --json  overwrite it and print {"path": ...}`,
    )
    .action(async (opts: { project?: boolean; force?: boolean }) => {
      const { userConfigPath } = await import("../../config/load.js");
      const target = opts.project ? `${app.io.cwd}/spuff.yaml` : userConfigPath(app.io.env);
      if (existsSync(target) && !opts.force) {
        throw new UserError(`${target} already exists`, { hint: "pass --force to overwrite it, or edit it" });
      }
      const text = referenceConfig();
      writeFileAtomic(target, text, 0o600);
      if (opts.project) {
        // spuff wrote this content itself (every key commented out): trusted until the first edit.
        const { canonicalPath, sha256, TrustStore } = await import("../../core/trust.js");
        const { stateDir } = await import("../../core/state.js");
        await new TrustStore(stateDir(app.io.env)).trust(canonicalPath(target), sha256(text));
      }
      if (app.json) app.printJson({ path: target });
      else app.out(`wrote ${target}${opts.project ? " (trusted as written; after you edit it, `spuff trust` it)" : ""}`);
    });

  config
    .command("path")
    .description("print the config files spuff reads, in precedence order")
    .addHelpText(
      "after",
      `
Examples:
  $ spuff config path                 user file, then the project's spuff.yaml (nearest parent directory)
  $ spuff config path --json          [{"kind": "user", "path": ..., "exists": true}, ...]`,
    )
    .action(async () => {
      const { findProjectConfig, readProjectFile, userConfigPath } = await import("../../config/load.js");
      const user = userConfigPath(app.io.env);
      const found = findProjectConfig(app.io.cwd);
      let project: { kind: string; path: string; exists: boolean; trusted: boolean } | undefined;
      if (found) {
        const { TrustStore } = await import("../../core/trust.js");
        const { stateDir } = await import("../../core/state.js");
        const p = readProjectFile(found);
        project = { kind: "project", path: p.path, exists: true, trusted: new TrustStore(stateDir(app.io.env)).status(p.path, p.sha256) === "trusted" };
      }
      const files = app.globals.config
        ? [{ kind: "--config", path: app.globals.config, exists: existsSync(app.globals.config) }]
        : [{ kind: "user", path: user, exists: existsSync(user) }, ...(project ? [project] : [])];
      if (app.json) app.printJson(files);
      else {
        for (const f of files) {
          const trust = "trusted" in f ? (f.trusted ? " (trusted)" : ` (not trusted: spuff trust ${f.path})`) : "";
          app.out(`${f.kind.padEnd(8)} ${f.path}${f.exists ? "" : " (not present)"}${trust}`);
        }
      }
    });

  config
    .command("show")
    .description("print the effective config and where each value came from (defaults, files, environment, flags; secrets redacted)")
    .addHelpText(
      "after",
      `
Each value is marked with its source: default, user (~/.config/spuff/config.yaml), config (--config FILE), project
(spuff.yaml, with its trust), env VAR or --provider, and the file's line:col. --json prints {config, origins, files}.

Examples:
  $ spuff config show
  $ spuff config show --json | jq .origins`,
    )
    .action(async () => {
      const loaded = app.loadedConfig();
      const effective = redact(loaded.config as unknown as Record<string, unknown>);
      if (app.json) {
        app.printJson({ config: effective, origins: loaded.origins, files: loaded.sources });
        return;
      }
      const { Document, isSeq } = await import("yaml");
      const doc = new Document(effective);
      for (const [path, origin] of Object.entries(loaded.origins)) {
        const node = doc.getIn(path.split("."), true) as { comment?: string | null; flow?: boolean; items?: unknown[] } | undefined;
        if (!node || typeof node !== "object") continue;
        if (isSeq(node) && node.items.length === 0) node.flow = true;
        if (isSeq(node) && node.items.length > 0) {
          // A block list's own comment would land below its items: put it on its key instead.
          const parent = doc.getIn(path.split(".").slice(0, -1), true) as { items?: { key: { comment?: string; value?: unknown } }[] } | undefined;
          const pair = (parent ?? (doc.contents as unknown as typeof parent))?.items?.find((p) => String(p.key.value) === path.split(".").at(-1));
          if (pair && typeof pair.key === "object") pair.key.comment = ` ${originText(origin)}`;
        } else node.comment = ` ${originText(origin)}`;
      }
      const header = loaded.sources.length
        ? loaded.sources.map((f) => `# ${sourceLine(f)}`)
        : ["# no config files: built-in defaults, environment and flags only"];
      app.out(`${header.join("\n")}\n${doc.toString({ lineWidth: 0 })}`);
    });

  config
    .command("validate [file]")
    .description("check config files; prints every problem with file:line:col")
    .addHelpText(
      "after",
      `
Without FILE: the files spuff would use here (a project spuff.yaml must be trusted: \`spuff trust\`), each with the
keys it sets. With FILE: that file alone; a file named spuff.yaml is checked as a project file (no \${VAR} expansion,
only the keys a project may set), any other as your own config.

Examples:
  $ spuff config validate
  $ spuff config validate ./spuff.yaml
  $ spuff config validate ~/.config/spuff/config.yaml --json`,
    )
    .action(async (file?: string) => {
      if (file) {
        const { loadFile } = await import("../../config/load.js");
        const { basename, resolve } = await import("node:path");
        const kind = basename(file) === "spuff.yaml" ? "project" : "config";
        const warnings: string[] = [];
        loadFile(resolve(app.io.cwd, file), app.io.env, warnings, kind);
        for (const w of warnings) app.warn(w);
        if (app.json) app.printJson({ valid: true, files: [{ kind, path: file }] });
        else app.out(`${file}: valid (${kind === "project" ? "as a project file" : "as your own config"})`);
        return;
      }
      const loaded = app.loadedConfig();
      const used = loaded.sources.filter((f) => !f.ignored);
      const keysOf = (path: string) =>
        Object.entries(loaded.origins)
          .filter(([, o]) => "file" in o && o.file === path)
          .map(([k]) => k);
      if (app.json) {
        app.printJson({ valid: true, files: used.map((f) => ({ ...f, keys: keysOf(f.path) })) });
        return;
      }
      if (used.length === 0) {
        app.out("no config files; built-in defaults apply");
        return;
      }
      for (const f of used) {
        const keys = keysOf(f.path);
        app.out(`${sourceLine(f)}: valid${keys.length ? `; sets ${keys.join(", ")}` : ""}`);
      }
    });
}

type Loaded = ReturnType<App["loadedConfig"]>;

function sourceLine(f: Loaded["sources"][number]): string {
  const kind = f.kind === "user" ? "user config" : f.kind === "config" ? "--config file" : "project file";
  const trust = f.kind !== "project" ? "" : f.ignored ? " (not trusted: ignored)" : f.trusted ? " (trusted)" : " (not trusted)";
  return `${kind} ${f.path}${trust}`;
}

function originText(o: Loaded["origins"][string]): string {
  switch (o.source) {
    case "default":
      return "default";
    case "env":
      return `env ${o.name}`;
    case "flag":
      return o.name;
    default:
      return `${o.source === "config" ? "--config" : o.source}:${o.line}:${o.col}${o.source === "project" ? (o.trusted ? " (trusted)" : " (not trusted)") : ""}`;
  }
}
