import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { App } from "../../src/cli/app.js";
import { loadConfig } from "../../src/config/load.js";
import { configWithoutFiles } from "../../src/config/quick.js";
import { runCli, tempHome, userConfigFile } from "../helpers/cli.js";

// src/config/quick.ts: a run with no config file gets its config without yaml and zod. It must be loadConfig's answer
// exactly, and must step aside (undefined) for anything loadConfig would refuse or that needs the schema.
describe("the config of a run without config files", () => {
  const t = tempHome();
  afterAll(() => t.cleanup());
  const cwd = join(t.home, "work");
  mkdirSync(cwd, { recursive: true });

  const envs: NodeJS.ProcessEnv[] = [
    {},
    { HCLOUD_TOKEN: "tok-123" },
    { HCLOUD_TOKEN: "" },
    { SPUFF_PROVIDER: "hetzner", HCLOUD_TOKEN: "tok" },
    { SPUFF_PROVIDER: "nope" },
    { SPUFF_PROVIDER: "" },
    { AWS_REGION: "eu-central-1", AWS_PROFILE: "p" },
    { AWS_DEFAULT_REGION: "us-east-2" },
    { AWS_ENDPOINT_URL_EC2: "http://127.0.0.1:5000" },
    { AWS_ENDPOINT_URL_EC2: "not a url" },
  ];
  const providers = [undefined, "aws", "local", "bogus"];

  it("equals loadConfig's answer whenever it gives one, and gives none where loadConfig refuses", () => {
    let answered = 0;
    for (const extra of envs) {
      for (const provider of providers) {
        const env = { ...t.env, ...extra };
        const quick = configWithoutFiles({ env, cwd, provider });
        let full: ReturnType<typeof loadConfig> | Error;
        try {
          full = loadConfig({ env, cwd, provider });
        } catch (err) {
          full = err as Error;
        }
        if (full instanceof Error) expect(quick, `${JSON.stringify(extra)} --provider ${provider}: ${full.message}`).toBeUndefined();
        else if (quick) {
          answered++;
          expect(quick, `${JSON.stringify(extra)} --provider ${provider}`).toEqual(full);
        }
      }
    }
    // Not vacuous: the common cases (a token in the environment, --provider) are answered without the schema.
    expect(answered).toBeGreaterThan(15);
    expect(configWithoutFiles({ env: { ...t.env, HCLOUD_TOKEN: "t" }, cwd, provider: "hetzner" })?.config.hetzner.token).toBe("t");
    // A URL is the schema's to check, valid or not.
    expect(configWithoutFiles({ env: { ...t.env, AWS_ENDPOINT_URL_EC2: "http://127.0.0.1:5000" }, cwd })).toBeUndefined();
  });

  it("steps aside for --config, a user config file and a project spuff.yaml", () => {
    const file = join(t.home, "other.yaml");
    writeFileSync(file, "provider: aws\n");
    expect(configWithoutFiles({ env: t.env, cwd, configFile: file })).toBeUndefined();
    const project = join(t.home, "proj", "deep");
    mkdirSync(project, { recursive: true });
    writeFileSync(join(t.home, "proj", "spuff.yaml"), "packages: [jq]\n");
    expect(configWithoutFiles({ env: t.env, cwd: project })).toBeUndefined();
    expect(configWithoutFiles({ env: t.env, cwd })).toBeDefined();
    mkdirSync(join(t.env.XDG_CONFIG_HOME as string, "spuff"), { recursive: true });
    writeFileSync(userConfigFile(t.env), "provider: hetzner\n");
    try {
      expect(configWithoutFiles({ env: t.env, cwd })).toBeUndefined();
    } finally {
      rmSync(userConfigFile(t.env));
    }
  });
});

describe("a config file that appears after start-up", () => {
  const t = tempHome();
  afterAll(() => t.cleanup());
  const app = () => new App({ stdout: { write: () => true }, stderr: { write: () => true }, stdin: process.stdin, env: t.env, cwd: t.home });

  it("is never passed over: the command stops and says to run it again, the next run reads it", async () => {
    const first = app();
    await first.prepare();
    mkdirSync(join(t.env.XDG_CONFIG_HOME as string, "spuff"), { recursive: true });
    writeFileSync(userConfigFile(t.env), "provider: aws\n");
    expect(() => first.loadedConfig()).toThrow(/a config file appeared while spuff was starting/);
    const next = app();
    await next.prepare();
    expect(next.config().provider).toBe("aws");
  });

  it("the picker (long-lived) reads files that appear after it started", async () => {
    rmSync(userConfigFile(t.env));
    const picker = app();
    await picker.prepare({ longLived: true });
    writeFileSync(userConfigFile(t.env), "provider: hetzner\n");
    expect(picker.config().provider).toBe("hetzner");
  });
});

describe("through the CLI, without config files", () => {
  const t = tempHome();
  afterAll(() => t.cleanup());

  it("config show reports the environment's and the flag's values with their origins", async () => {
    const r = await runCli(["--provider", "hetzner", "config", "show", "--json"], { env: { ...t.env, HCLOUD_TOKEN: "tok-abc" }, cwd: t.home });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { config: { provider: string; hetzner: { location: string } }; origins?: Record<string, unknown> };
    expect(out.config.provider).toBe("hetzner");
    expect(out.config.hetzner.location).toBe("fsn1");
  });

  it("an invalid value in the environment is still refused by the schema, with its name", async () => {
    const r = await runCli(["--provider", "aws", "config", "show", "--json"], { env: { ...t.env, AWS_ENDPOINT_URL_EC2: "not a url" }, cwd: t.home });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("aws.endpoint");
  });

  it("an unknown --provider is refused in spuff's words", async () => {
    const r = await runCli(["--provider", "bogus", "ls"], { env: t.env, cwd: t.home });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--provider: unknown provider "bogus"');
    expect(r.stderr).toContain("valid providers: local, hetzner, aws");
  });
});
