import { existsSync } from "node:fs";
import { join } from "node:path";
import { DescribeInstancesCommand, DescribeSecurityGroupsCommand, EC2Client, type Instance } from "@aws-sdk/client-ec2";
import { stringify } from "yaml";
import { afterAll, afterEach, beforeAll, beforeEach, expect } from "vitest";
import { Moto, MOTO_SKIP_REASON, type MotoOptions, motoPython } from "../../fakes/moto.js";
import { BIN, type CliResult, type Running, spawnCli, tempHome, writeUserConfig } from "../../helpers/cli.js";

/**
 * moto (the real EC2 emulator) behind the test proxy (test/fakes/moto.ts), plus a throw-away HOME, for driving the
 * REAL built CLI (`node dist/src/cli/bin.cjs`, a child process with exactly the environment given here, so nothing of
 * the developer's AWS setup leaks in) against it. Each test file passes its own `ipv4Prefix` (127.0.8X.), so
 * stand-in sshds of files running in parallel never share an address.
 */

export const PYTHON = motoPython();
/** Why the AWS tests are skipped, or "" when they run. */
export const SKIP = !PYTHON ? MOTO_SKIP_REASON : !existsSync(BIN) ? "the CLI is not built (npm run build)" : "";
export const REGION = "us-east-1";

export interface Harness {
  moto: Moto;
  home: ReturnType<typeof tempHome>;
  env: NodeJS.ProcessEnv;
  /** A test-side SDK client talking to moto directly (not through the proxy), to read state back. */
  ec2: EC2Client;
  spuff(args: string[], extraEnv?: NodeJS.ProcessEnv): Promise<CliResult>;
  /** `spuff` that must succeed: a failure throws with the run's output. */
  spuffOk(args: string[], extraEnv?: NodeJS.ProcessEnv): Promise<CliResult>;
  /** Starts `spuff --provider aws ...args` without waiting for it. */
  spawn(args: string[], extraEnv?: NodeJS.ProcessEnv): Running;
  writeConfig(config: Record<string, unknown>): void;
  /** Instances not terminated, as moto holds them. */
  live(): Promise<Instance[]>;
  /** Security groups named spuff-*. */
  spuffGroups(): Promise<{ GroupId?: string; GroupName?: string }[]>;
  /** Starts a fresh HOME and resets moto (between tests). */
  reset(): Promise<void>;
  close(): Promise<void>;
}

/** The environment every spuff run gets: fake keys, the proxy as endpoint, no instance metadata, quick polls. */
function awsEnv(moto: Moto, home: ReturnType<typeof tempHome>): NodeJS.ProcessEnv {
  return {
    ...home.env,
    AWS_ACCESS_KEY_ID: "AKIASPUFFTESTKEY0001",
    AWS_SECRET_ACCESS_KEY: "spuff-test-secret-not-a-real-one",
    AWS_REGION: REGION,
    AWS_ENDPOINT_URL_EC2: moto.endpoint,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: join(home.home, ".aws", "config"),
    AWS_SHARED_CREDENTIALS_FILE: join(home.home, ".aws", "credentials"),
    SPUFF_AWS_POLL_INTERVAL: "50ms",
    SPUFF_BOOT_TIMEOUT: "30s",
  };
}

export async function harness(opts: MotoOptions & { config?: Record<string, unknown> }): Promise<Harness> {
  const { config, ...motoOpts } = opts;
  const moto = await Moto.start(motoOpts);
  // The SDK's notice about its future Node 22 requirement (spuff's client silences it the same way).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const ec2 = new EC2Client({
    region: REGION,
    endpoint: moto.motoEndpoint,
    credentials: { accessKeyId: "AKIASPUFFTESTKEY0001", secretAccessKey: "spuff-test-secret-not-a-real-one" },
  });
  const children: ChildProcess[] = [];
  const h: Harness = {
    moto,
    home: tempHome(),
    env: {},
    ec2,
    writeConfig(cfg) {
      writeUserConfig(h.home.env, stringify({ ssh: { user: "spuff-test", tmux: false }, ...cfg }));
    },
    spawn(args, extraEnv = {}) {
      const r = spawnCli(["--provider", "aws", ...args], { ...h.env, ...extraEnv }, h.home.home);
      children.push(r.child);
      return r;
    },
    async spuff(args, extraEnv = {}) {
      const r = h.spawn(args, extraEnv);
      const code = await r.exit;
      return { code: code ?? -1, stdout: r.stdout(), stderr: r.stderr() };
    },
    async spuffOk(args, extraEnv = {}) {
      const r = await h.spuff(args, extraEnv);
      if (r.code !== 0) throw new Error(`spuff ${args.join(" ")} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
      return r;
    },
    async live() {
      const out = await ec2.send(new DescribeInstancesCommand({}));
      return (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).filter((i) => i.State?.Name !== "terminated");
    },
    async spuffGroups() {
      const out = await ec2.send(new DescribeSecurityGroupsCommand({}));
      return (out.SecurityGroups ?? []).filter((g) => g.GroupName?.startsWith("spuff-"));
    },
    async reset() {
      for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      h.home.cleanup();
      h.home = tempHome();
      h.env = awsEnv(moto, h.home);
      h.writeConfig(config ?? {});
      await moto.reset();
    },
    async close() {
      for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      ec2.destroy();
      await moto.close();
      h.home.cleanup();
    },
  };
  h.env = awsEnv(moto, h.home);
  h.writeConfig(config ?? {});
  return h;
}

/** Parses `--json` event lines. */
export function events(stdout: string): { event?: string; [k: string]: unknown }[] {
  return stdout
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l));
}

/**
 * One harness for the enclosing `describe`: started before its tests, reset before each, checked after each (the proxy
 * saw no problem and every request settled), closed after all. The returned object forwards to the live harness.
 */
export function useHarness(opts: MotoOptions & { config?: Record<string, unknown> }): Harness {
  let current: Harness | undefined;
  beforeAll(async () => {
    current = await harness(opts);
  });
  beforeEach(async () => {
    await current?.reset();
  });
  afterEach(async () => {
    await current?.moto.settled();
    expect(current?.moto.problems).toEqual([]);
  });
  afterAll(async () => {
    await current?.close();
  });
  return new Proxy({} as Harness, {
    get(_, key) {
      if (!current) throw new Error("the AWS harness is not started (use it inside a test)");
      return Reflect.get(current, key);
    },
  });
}
