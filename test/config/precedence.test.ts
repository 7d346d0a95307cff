import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli, tempHome } from "../helpers/cli.js";

// docs/config.md and docs/providers/aws.md: the environment overrides the config files, --provider overrides both.
describe("precedence of the environment over the config file, as documented", () => {
  const t = tempHome();
  afterAll(() => t.cleanup());
  mkdirSync(join(t.env.XDG_CONFIG_HOME as string, "spuff"), { recursive: true });
  writeFileSync(join(t.env.XDG_CONFIG_HOME as string, "spuff", "config.yaml"), "provider: hetzner\naws:\n  region: eu-west-1\n  profile: fromfile\n");
  const show = async (env: NodeJS.ProcessEnv, argv: string[] = []) => {
    const r = await runCli([...argv, "config", "show", "--json"], { env: { ...t.env, ...env } });
    expect(r.code).toBe(0);
    return (JSON.parse(r.stdout) as { config: { provider: string; aws: { region?: string; profile?: string } } }).config;
  };

  it("the file's values apply when the environment has none", async () => {
    expect((await show({})).aws).toMatchObject({ region: "eu-west-1", profile: "fromfile" });
  });

  it("AWS_REGION, AWS_DEFAULT_REGION and AWS_PROFILE win over aws.region and aws.profile", async () => {
    expect((await show({ AWS_REGION: "eu-central-1", AWS_PROFILE: "fromenv" })).aws).toMatchObject({ region: "eu-central-1", profile: "fromenv" });
    expect((await show({ AWS_DEFAULT_REGION: "us-east-2" })).aws.region).toBe("us-east-2");
    expect((await show({ AWS_REGION: "eu-north-1", AWS_DEFAULT_REGION: "us-east-2" })).aws.region).toBe("eu-north-1");
  });

  it("SPUFF_PROVIDER wins over the file, --provider over both", async () => {
    expect((await show({})).provider).toBe("hetzner");
    expect((await show({ SPUFF_PROVIDER: "aws" })).provider).toBe("aws");
    expect((await show({ SPUFF_PROVIDER: "aws" }, ["--provider", "local"])).provider).toBe("local");
  });
});
