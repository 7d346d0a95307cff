import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import type { Command } from "commander";
import { UserError } from "../../core/errors.js";
import { stateDir } from "../../core/state.js";
import { canonicalPath, sha256, type TrustEntry, TrustStore } from "../../core/trust.js";
import { table } from "../../core/view.js";
import type { App } from "../app.js";

function store(app: App): TrustStore {
  return new TrustStore(stateDir(app.io.env));
}

/** Control characters, bidi overrides and zero-width characters shown as escapes, so a file cannot hide text. */
export function visible(text: string): string {
  return text.replace(
    /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g,
    (c) => `\\u{${c.charCodeAt(0).toString(16).padStart(4, "0")}}`,
  );
}

/** The file `spuff trust [PATH]` means: PATH (a spuff.yaml, or a directory holding one), else the one spuff would use here. */
async function target(app: App, path: string | undefined): Promise<string> {
  const { findProjectConfig } = await import("../../config/load.js");
  if (path === undefined) {
    const found = findProjectConfig(app.io.cwd);
    if (!found) {
      throw new UserError(`no spuff.yaml in ${app.io.cwd} or any parent directory`, { hint: "pass the file: spuff trust PATH/spuff.yaml" });
    }
    return canonicalPath(found);
  }
  let file = canonicalPath(path, app.io.cwd);
  if (existsSync(file) && statSync(file).isDirectory()) file = canonicalPath(join(file, "spuff.yaml"));
  return file;
}

function valueText(v: unknown): string {
  return v === undefined ? "(not set)" : visible(JSON.stringify(v));
}

function at(obj: unknown, path: string): unknown {
  return path.split(".").reduce<unknown>((o, k) => (o && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined), obj);
}

/**
 * Before a command that uses the config runs in a terminal: an untrusted project file is shown (its content and what
 * it would change) and the user asked. Yes trusts these exact bytes; no stops with exit 1. Nothing of the file is used
 * before the answer, and the command itself then loads the file only if its bytes still match.
 */
export async function reviewProjectFile(app: App): Promise<void> {
  const { findProjectConfig, leafPaths, loadConfig, parseConfigFile, readProjectFile, userConfigPath } = await import("../../config/load.js");
  const env = app.io.env;
  const found = findProjectConfig(app.io.cwd);
  if (!found || canonicalPath(found) === canonicalPath(userConfigPath(env))) return;
  const project = readProjectFile(found);
  const entry = store(app).entry(project.path);
  if (entry?.sha256 === project.sha256) return;
  // Problems (including keys a project file may not set) are reported as such: trusting would not make it usable.
  const parsed = parseConfigFile(project.path, project.bytes, "project", env);
  const before = loadConfig({ env, cwd: app.io.cwd, provider: app.globals.provider, untrusted: "ignore" }).config;
  const line = (p: string) => parsed.positions.get(p)?.line ?? 0;
  const changes = leafPaths(parsed.data).sort((a, b) => line(a) - line(b)).map((p) => {
    const now = at(before, p);
    const next = at(parsed.data, p);
    const same = JSON.stringify(now) === JSON.stringify(next);
    return [p, valueText(next), same ? "(unchanged)" : `(now ${valueText(now)})`];
  });
  const text = project.bytes.toString("utf8");
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const width = String(lines.length).length;
  const out = [
    entry
      ? `${project.path} changed since you trusted it (${entry.trustedAt}).`
      : `${project.path} is a project config you have not trusted yet.`,
    "A project's spuff.yaml comes with the repository: its setup commands run on the VM your agent is later forwarded to.",
    "",
    changes.length ? "It would set:" : "It sets nothing (comments only).",
    ...(changes.length ? table(["KEY", "VALUE", ""], changes).split("\n").map((l) => `  ${l}`) : []),
    ...(text.includes("${") ? ["", "${VAR} is never expanded in a project file: the VM gets such text as written."] : []),
    "",
    `${basename(project.path)} (${lines.length} line${lines.length === 1 ? "" : "s"}, sha256 ${project.sha256.slice(0, 16)}…):`,
    ...lines.map((l, i) => `  ${String(i + 1).padStart(width)} | ${visible(l)}`),
    "",
  ];
  app.err(out.join("\n"));
  const { confirm } = await import("../prompt.js");
  if (!(await confirm(app, `Trust ${project.path} and continue?`))) {
    throw new UserError(`${project.path} is not trusted; nothing was done`, { hint: `trust it later with: spuff trust ${project.path}` });
  }
  await store(app).trust(project.path, project.sha256);
  app.info(`trusted ${project.path}`);
}

function entryStatus(e: TrustEntry): "trusted" | "changed" | "missing" {
  try {
    return sha256(readFileSync(e.path)) === e.sha256 ? "trusted" : "changed";
  } catch {
    return "missing";
  }
}

export function register(program: Command, app: App): void {
  program
    .command("trust [path]")
    .description("trust a project's spuff.yaml (its exact content) so spuff uses it; list or revoke trusted files")
    .option("--list", "list the trusted project files and whether each still matches")
    .option("--revoke", "untrust PATH (default: the spuff.yaml spuff would use here)")
    .addHelpText(
      "after",
      `
A spuff.yaml in the current directory or a parent comes with a repository, so spuff uses it only after you trusted its
exact content: \`spuff trust\` records the file's absolute path and sha256, and any change makes it untrusted again.
Until then \`up\`, \`config show\` and the TUI stop (in a terminal they show the file and ask); \`ls\`, \`ssh\`, \`down\`
and other commands on existing VMs ignore it with a warning. \${VAR} is never expanded in a project file, and keys
that decide access, credentials, images, endpoints or paths on this machine (ssh.*, git_hosts, aws.ami, ...) are
refused there even when trusted (docs/config.md, docs/adr/0006-project-config-trust.md).

Examples:
  $ spuff trust                        trust ./spuff.yaml (or the nearest parent's)
  $ spuff trust ~/src/api/spuff.yaml
  $ spuff trust --list --json
  $ spuff trust --revoke ~/src/api/spuff.yaml`,
    )
    .action(async (path: string | undefined, opts: { list?: boolean; revoke?: boolean }) => {
      const loader = await import("../../config/load.js");
      const trust = store(app);
      if (opts.list) {
        if (path !== undefined || opts.revoke) throw new UserError("--list takes no path and no --revoke");
        const rows = trust.list().map((e) => ({ ...e, status: entryStatus(e) }));
        if (app.json) app.printJson(rows);
        else if (rows.length === 0) app.info("no trusted project files");
        else app.out(table(["PATH", "STATUS", "TRUSTED AT", "SHA256"], rows.map((r) => [r.path, r.status, r.trustedAt, `${r.sha256.slice(0, 16)}…`])));
        return;
      }
      const file = await target(app, path);
      if (opts.revoke) {
        if (!(await trust.revoke(file))) {
          throw new UserError(`${file} is not trusted; nothing to revoke`, { hint: "`spuff trust --list` shows the trusted files" });
        }
        if (app.json) app.printJson({ revoked: file });
        else app.out(`revoked ${file}: spuff no longer uses it until you trust it again`);
        return;
      }
      if (basename(file) !== "spuff.yaml") {
        throw new UserError(`${file} is not a project config: spuff reads a project's config only from a file named spuff.yaml`, {
          hint: "your own config needs no trust: ~/.config/spuff/config.yaml, or pass it with --config FILE",
        });
      }
      if (file === canonicalPath(loader.userConfigPath(app.io.env))) {
        throw new UserError(`${file} is your user config; it needs no trust`);
      }
      const project = loader.readProjectFile(file);
      // A file that could not be used anyway (problems, refused keys) is not recorded.
      loader.parseConfigFile(project.path, project.bytes, "project", app.io.env);
      const before = trust.entry(project.path);
      const entry = before?.sha256 === project.sha256 ? before : await trust.trust(project.path, project.sha256);
      if (app.json) app.printJson(entry);
      else {
        app.out(
          before === entry
            ? `${entry.path} is already trusted (since ${entry.trustedAt})`
            : `trusted ${entry.path} (sha256 ${entry.sha256.slice(0, 16)}…); any change to it makes it untrusted again`,
        );
      }
    });
}
