import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { referenceConfig } from "../../src/cli/commands/config.js";
import { DEFAULTS } from "../../src/config/defaults.js";
import { loadConfig, loadFile, parseDuration } from "../../src/config/load.js";
import { ConfigError } from "../../src/core/errors.js";
import { sha256, TrustStore } from "../../src/core/trust.js";
import { runCli, tempHome } from "../helpers/cli.js";

let t: ReturnType<typeof tempHome>;
beforeEach(() => {
  t = tempHome();
});
afterEach(() => t.cleanup());

function write(name: string, text: string): string {
  const file = join(t.home, name);
  writeFileSync(file, text);
  return file;
}

async function trust(file: string): Promise<void> {
  await new TrustStore(join(t.env.XDG_STATE_HOME as string, "spuff")).trust(file, sha256(readFileSync(file)));
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [(err as ConfigError).message, ...(err as ConfigError).notes, ...(err as ConfigError).hints];
  }
  throw new Error("expected a ConfigError");
}

describe("config files", () => {
  it("reports a YAML syntax error with file:line:col", () => {
    const f = write("bad.yaml", "provider: local\nhetzner:\n  location: [fsn1\n");
    const lines = problems(() => loadFile(f, t.env));
    expect(lines[0]).toBe(`${f} is not valid YAML`);
    expect(lines[1]).toMatch(new RegExp(`^${f}:\\d+:\\d+: `));
  });

  it("names an unknown key, suggests the closest one and lists the valid keys", () => {
    const f = write("typo.yaml", "provider: hetzner\nhetzner:\n  server_typ: cx22\n");
    const lines = problems(() => loadFile(f, t.env));
    expect(lines[1]).toBe(
      `${f}:3:3: hetzner.server_typ: unknown key "server_typ" (did you mean "server_type"?); valid keys here: token, location, server_type, image, ipv4`,
    );
  });

  it("names the path of a wrong type", () => {
    const f = write("type.yaml", "local:\n  cpus: two\n");
    const lines = problems(() => loadFile(f, t.env));
    expect(lines[1]).toBe(`${f}:2:9: local.cpus: expected number, got string`);
  });

  it("names the index of a bad list item", () => {
    const f = write("list.yaml", "git_hosts:\n  - host: git.example.com\n    fingerprints: [nope]\n");
    const lines = problems(() => loadFile(f, t.env));
    expect(lines[1]).toMatch(new RegExp(`^${f}:3:20: git_hosts\\[0\\]\\.fingerprints\\[0\\]: expected an OpenSSH fingerprint`));
  });

  it("lists every problem, not only the first", () => {
    const f = write("many.yaml", "provider: gcp\nssh:\n  user: root\nidle:\n  timeout: soon\n");
    const lines = problems(() => loadFile(f, t.env));
    expect(lines[0]).toBe(`${f} has 3 problems`);
    expect(lines.join("\n")).toContain(`${f}:1:11: provider: expected one of local, hetzner, aws, got "gcp"`);
    expect(lines.join("\n")).toContain(`${f}:3:9: ssh.user: must not be root`);
    expect(lines.join("\n")).toContain(`${f}:5:12: idle.timeout: expected a duration`);
  });

  it("expands ${VAR} and ${VAR:-default}", () => {
    const f = write("env.yaml", "hetzner:\n  location: ${LOC}\n  image: ${IMG:-debian-12}\n");
    const cfg = loadFile(f, { ...t.env, LOC: "hel1" });
    expect(cfg.hetzner).toEqual({ location: "hel1", image: "debian-12" });
  });

  it("refuses an unset ${VAR} and names it", () => {
    const f = write("unset.yaml", "hetzner:\n  token: ${MY_TOKEN}\n");
    const lines = problems(() => loadFile(f, t.env));
    expect(lines[1]).toBe(`${f}:2:10: hetzner.token: environment variable \${MY_TOKEN} is not set (set it, or write \${MY_TOKEN:-default})`);
  });

  it("warns when a file holding a token is readable by others, with the chmod fix", () => {
    const f = write("token.yaml", "hetzner:\n  token: abc123\n");
    chmodSync(f, 0o644);
    const warnings: string[] = [];
    loadFile(f, t.env, warnings);
    expect(warnings).toEqual([`${f} holds an API token and is readable by others (mode 644); fix: chmod 600 ${f}`]);
    chmodSync(f, 0o600);
    const none: string[] = [];
    loadFile(f, t.env, none);
    expect(none).toEqual([]);
  });
});

describe("precedence", () => {
  it("defaults < user file < project file (trusted) < environment < flags", async () => {
    mkdirSync(join(t.home, ".config", "spuff"), { recursive: true });
    writeFileSync(join(t.home, ".config", "spuff", "config.yaml"), "provider: aws\nlocal:\n  cpus: 4\n  memory: 4G\n");
    const project = join(t.home, "proj", "sub");
    mkdirSync(project, { recursive: true });
    writeFileSync(join(t.home, "proj", "spuff.yaml"), "local:\n  cpus: 8\nhetzner:\n  location: hel1\n");
    const env = { ...t.env, HCLOUD_TOKEN: "from-env" };
    await trust(join(t.home, "proj", "spuff.yaml"));
    const a = loadConfig({ env, cwd: project });
    expect(a.config.provider).toBe("aws");
    expect(a.config.local).toEqual({ cpus: 8, memory: "4G", disk: "10G", accel: "auto", image: "debian-13", network: "nat", warm: true });
    expect(a.config.hetzner).toEqual({ ...DEFAULTS.hetzner, location: "hel1", token: "from-env" });
    expect(a.files).toHaveLength(2);
    const b = loadConfig({ env: { ...env, SPUFF_PROVIDER: "hetzner" }, cwd: project });
    expect(b.config.provider).toBe("hetzner");
    const c = loadConfig({ env: { ...env, SPUFF_PROVIDER: "hetzner" }, cwd: project, provider: "local" });
    expect(c.config.provider).toBe("local");
  });

  it("an invalid --provider names the flag and the valid providers", () => {
    const lines = problems(() => loadConfig({ env: t.env, cwd: t.home, provider: "gcp" }));
    expect(lines[0]).toMatch(/^--provider: provider: /);
    expect(lines).toContain("valid providers: local, hetzner, aws");
  });
});

describe("reference config", () => {
  it("parses as written (all keys commented) and with every setting uncommented", () => {
    const ref = referenceConfig();
    const asIs = write("ref.yaml", ref);
    expect(loadFile(asIs, t.env)).toEqual({});
    const uncommented = ref
      .split("\n")
      .filter((l) => !l.startsWith("##"))
      .map((l) => l.replace(/^# ?/, ""))
      .join("\n");
    const f = write("ref-on.yaml", uncommented);
    const cfg = loadFile(f, { ...t.env, HCLOUD_TOKEN: "x" });
    // Every top-level key of the schema is documented.
    expect(Object.keys(cfg).sort()).toEqual(
      ["aws", "dotfiles", "git_hosts", "hetzner", "idle", "image", "local", "packages", "provider", "repositories", "setup", "ssh", "workspace"].sort(),
    );
    // The values shown as defaults are the real defaults.
    expect(cfg.idle).toEqual(DEFAULTS.idle);
    expect(cfg.workspace).toEqual(DEFAULTS.workspace);
    expect(cfg.local).toMatchObject(DEFAULTS.local);
    expect(cfg.ssh).toMatchObject(DEFAULTS.ssh);
    expect(cfg.provider).toBe(DEFAULTS.provider);
  });
});

describe("spuff config validate (through main)", () => {
  it("accepts a good file", async () => {
    const f = write("good.yaml", stringify({ provider: "hetzner", hetzner: { location: "nbg1" } }));
    const r = await runCli(["config", "validate", f], { env: t.env });
    expect(r).toEqual({ code: 0, stdout: `${f}: valid (as your own config)\n`, stderr: "" });
  });

  it("rejects a bad file with exit 1, every problem and a hint, no stack trace", async () => {
    const f = write("bad.yaml", "provider: hetzner\nhetzner:\n  server_typ: cx22\n");
    const r = await runCli(["config", "validate", f], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      [
        `error: ${f} has 1 problem`,
        `  ${f}:3:3: hetzner.server_typ: unknown key "server_typ" (did you mean "server_type"?); valid keys here: token, location, server_type, image, ipv4`,
        "hint: see docs/config.md or `spuff config init` for the reference of every key",
        "",
      ].join("\n"),
    );
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("shows the stack trace only with --verbose", async () => {
    const f = write("bad2.yaml", "local: {cpus: x}\n");
    const r = await runCli(["--verbose", "config", "validate", f], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\n\s+at /);
  });

  it("a bad config changes nothing: `up` fails before creating any state", async () => {
    const f = write("bad3.yaml", "idle:\n  ttl: forever\n");
    const r = await runCli(["--config", f, "up", "x"], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${f}:2:8: idle.ttl: expected a duration`);
    const { existsSync } = await import("node:fs");
    expect(existsSync(join(t.home, ".local", "state", "spuff"))).toBe(false);
  });

  it("config init writes the reference, refuses to overwrite, and the result validates", async () => {
    const a = await runCli(["config", "init"], { env: t.env });
    const path = join(t.home, ".config", "spuff", "config.yaml");
    expect(a).toEqual({ code: 0, stdout: `wrote ${path}\n`, stderr: "" });
    const b = await runCli(["config", "init"], { env: t.env });
    expect(b.code).toBe(1);
    expect(b.stderr).toContain("hint: pass --force to overwrite it");
    const c = await runCli(["config", "validate"], { env: t.env });
    expect(c).toEqual({ code: 0, stdout: `user config ${path}: valid\n`, stderr: "" });
  });

  it("config show redacts the token", async () => {
    const r = await runCli(["--json", "config", "show"], { env: { ...t.env, HCLOUD_TOKEN: "supersecret" } });
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain("supersecret");
    expect(JSON.parse(r.stdout).config.hetzner.token).toBe("<redacted>");
    expect(JSON.parse(r.stdout).origins["hetzner.token"]).toEqual({ source: "env", name: "HCLOUD_TOKEN" });
  });
});

describe("durations", () => {
  it("parses compound durations", () => {
    expect(parseDuration("1h30m")).toBe(90 * 60_000);
    expect(parseDuration("2d")).toBe(48 * 3600_000);
    expect(() => parseDuration("")).toThrow(ConfigError);
    expect(() => parseDuration("5x")).toThrow(/invalid duration "5x"/);
  });
});
