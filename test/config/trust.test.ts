import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig, UntrustedProjectError } from "../../src/config/load.js";
import { PROJECT_KEYS } from "../../src/config/project.js";
import { configSchema } from "../../src/config/schema.js";
import { ConfigError } from "../../src/core/errors.js";
import { sha256, TrustStore } from "../../src/core/trust.js";
import { tempHome, writeUserConfig } from "../helpers/cli.js";

let t: ReturnType<typeof tempHome>;
let store: TrustStore;
let proj: string;
let file: string;
beforeEach(() => {
  t = tempHome();
  store = new TrustStore(join(t.env.XDG_STATE_HOME as string, "spuff"));
  proj = join(t.home, "proj");
  mkdirSync(proj);
  file = join(proj, "spuff.yaml");
});
afterEach(() => t.cleanup());

async function project(text: string, trusted = true): Promise<void> {
  writeFileSync(file, text);
  if (trusted) await store.trust(file, sha256(readFileSync(file)));
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

/** Leaf keys of the schema: the keys of each nested object, else the top-level key. */
function schemaLeaves(): string[] {
  // biome-ignore lint/suspicious/noExplicitAny: walking zod internals
  const unwrap = (s: any) => (s?._def?.innerType ? unwrap(s._def.innerType) : s);
  return Object.entries(configSchema.shape).flatMap(([k, v]) => {
    const inner = unwrap(v);
    return inner?._def?.typeName === "ZodObject" ? Object.keys(inner.shape).map((sub) => `${k}.${sub}`) : [k];
  });
}

describe("which keys a project file may set", () => {
  it("every key of the schema is classified, and nothing else", () => {
    expect(Object.keys(PROJECT_KEYS).sort()).toEqual(schemaLeaves().sort());
  });

  it("the keys that decide access, credentials, images, endpoints and local paths are refused", () => {
    const refused = Object.entries(PROJECT_KEYS)
      .filter(([, r]) => r !== true)
      .map(([k]) => k);
    for (const k of ["hetzner.token", "hetzner.image", "aws.ami", "aws.endpoint", "aws.profile", "local.image", "local.network", "local.guest_forwards", "git_hosts", "dotfiles"]) {
      expect(refused).toContain(k);
    }
    expect(refused.filter((k) => k.startsWith("ssh."))).toHaveLength(Object.keys(configSchema.shape.ssh.unwrap().shape).length);
  });

  it("each refused key gives file:line:col, its path and where to move it, even in a trusted file", async () => {
    const refused = Object.entries(PROJECT_KEYS).filter(([, r]) => r !== true);
    for (const [key] of refused) {
      const [top, sub] = key.split(".");
      await project(sub ? `# refused: ${key}\n${top}:\n  ${sub}: x\n` : `# refused: ${key}\n${top}: x\n`);
      const err = configError(() => loadConfig({ env: t.env, cwd: proj, store }));
      expect(err).not.toBeInstanceOf(UntrustedProjectError);
      const line = err.notes.find((n) => n.includes(`: ${key}: not allowed in a project file (`));
      expect(line, key).toBe(
        `${file}:${sub ? "3:3" : "2:1"}: ${key}: not allowed in a project file (${PROJECT_KEYS[key]}); move it to your user config ${t.env.XDG_CONFIG_HOME}/spuff/config.yaml`,
      );
    }
  });
});

describe("loading a project file", () => {
  it("is refused until trusted; the refusal comes before anything of it is used", async () => {
    await project("local:\n  cpus: 4\n", false);
    const err = configError(() => loadConfig({ env: t.env, cwd: proj, store }));
    expect(err).toBeInstanceOf(UntrustedProjectError);
    expect((err as UntrustedProjectError).status).toBe("new");
    await store.trust(file, sha256("local:\n  cpus: 3\n"));
    expect((configError(() => loadConfig({ env: t.env, cwd: proj, store })) as UntrustedProjectError).status).toBe("changed");
  });

  it('under untrusted: "ignore" it is left out with a warning', async () => {
    writeUserConfig(t.env, "local:\n  cpus: 3\n");
    await project("local:\n  cpus: 4\n", false);
    const r = loadConfig({ env: t.env, cwd: proj, store, untrusted: "ignore" });
    expect(r.config.local.cpus).toBe(3);
    expect(r.files).toEqual([join(t.env.XDG_CONFIG_HOME as string, "spuff", "config.yaml")]);
    expect(r.sources.at(-1)).toMatchObject({ kind: "project", path: file, trusted: false, ignored: true });
    expect(r.warnings).toEqual([`ignoring ${file}: it is not trusted (this command needs only your user config); to use it: spuff trust ${file}`]);
  });

  it("never expands ${VAR}, trusted or not; the user config and --config FILE still do", async () => {
    const env = { ...t.env, SECRET: "s3cret", LOC: "hel1" };
    await project('setup: ["echo ${SECRET}", "echo ${UNSET:-fallback}"]\nhetzner:\n  location: ${LOC}\n');
    const r = loadConfig({ env, cwd: proj, store });
    expect(r.config.setup).toEqual(["echo ${SECRET}", "echo ${UNSET:-fallback}"]);
    expect(r.config.hetzner.location).toBe("${LOC}");
    expect(JSON.stringify(r)).not.toContain("s3cret");

    writeUserConfig(env, 'setup: ["echo ${SECRET}"]\n');
    expect(loadConfig({ env, cwd: t.home, store }).config.setup).toEqual(["echo s3cret"]);
    expect(loadConfig({ env, cwd: proj, store, configFile: file }).config.hetzner.location).toBe("hel1");
  });

  it("origins: default, user file, trusted project file, environment and flag, with line:col", async () => {
    const user = writeUserConfig(t.env, "provider: aws\nlocal:\n  memory: 4G\n");
    await project("# project\nlocal:\n  cpus: 4\npackages: [ripgrep]\n");
    const r = loadConfig({ env: { ...t.env, HCLOUD_TOKEN: "tok", AWS_DEFAULT_REGION: "eu-west-1" }, cwd: proj, store, provider: "hetzner" });
    expect(r.origins["local.memory"]).toEqual({ source: "user", file: user, line: 3, col: 3, trusted: true });
    expect(r.origins["local.cpus"]).toEqual({ source: "project", file, line: 3, col: 3, trusted: true });
    expect(r.origins.packages).toEqual({ source: "project", file, line: 4, col: 1, trusted: true });
    expect(r.origins["local.disk"]).toEqual({ source: "default" });
    expect(r.origins["hetzner.token"]).toEqual({ source: "env", name: "HCLOUD_TOKEN" });
    expect(r.origins["aws.region"]).toEqual({ source: "env", name: "AWS_DEFAULT_REGION" });
    expect(r.origins.provider).toEqual({ source: "flag", name: "--provider" });
    expect(r.sources).toEqual([
      { kind: "user", path: user, trusted: true },
      { kind: "project", path: file, trusted: true, sha256: sha256(readFileSync(file)) },
    ]);
  });
});
