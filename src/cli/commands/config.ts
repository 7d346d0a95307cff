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
      writeFileAtomic(target, referenceConfig(), 0o600);
      if (app.json) app.printJson({ path: target });
      else app.out(`wrote ${target}`);
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
      const { findProjectConfig, userConfigPath } = await import("../../config/load.js");
      const user = userConfigPath(app.io.env);
      const project = findProjectConfig(app.io.cwd);
      const files = app.globals.config
        ? [{ kind: "--config", path: app.globals.config, exists: existsSync(app.globals.config) }]
        : [
            { kind: "user", path: user, exists: existsSync(user) },
            ...(project ? [{ kind: "project", path: project, exists: true }] : []),
          ];
      if (app.json) app.printJson(files);
      else for (const f of files) app.out(`${f.kind.padEnd(8)} ${f.path}${f.exists ? "" : " (not present)"}`);
    });

  config
    .command("show")
    .description("print the effective config (defaults, files, environment and flags merged; secrets redacted)")
    .addHelpText(
      "after",
      `
Examples:
  $ spuff config show                 YAML
  $ spuff --provider aws config show  what an \`up --provider aws\` would use
  $ spuff config show --json | jq .ssh`,
    )
    .action(async () => {
      const { stringify } = await import("yaml");
      const effective = redact(app.config() as unknown as Record<string, unknown>);
      if (app.json) app.printJson(effective);
      else app.out(stringify(effective));
    });

  config
    .command("validate [file]")
    .description("check config files; prints every problem with file:line:col")
    .addHelpText(
      "after",
      `
Examples:
  $ spuff config validate             the user file and the project's spuff.yaml, merged as spuff uses them
  $ spuff config validate spuff.yaml  one file on its own
  $ spuff config validate --json      {"valid": true, "files": [...]}; a problem is an error (exit 1)`,
    )
    .action(async (file?: string) => {
      if (file) {
        const { loadFile } = await import("../../config/load.js");
        const warnings: string[] = [];
        loadFile(file, app.io.env, warnings);
        for (const w of warnings) app.warn(w);
        if (app.json) app.printJson({ valid: true, files: [file] });
        else app.out(`${file}: valid`);
        return;
      }
      const { files } = app.loadedConfig();
      if (app.json) app.printJson({ valid: true, files });
      else app.out(files.length ? files.map((f) => `${f}: valid`).join("\n") : "no config files; built-in defaults apply");
    });
}
