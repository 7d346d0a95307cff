import type { ChildProcess } from "node:child_process";
import { afterAll, afterEach, expect } from "vitest";
import { stringify } from "yaml";
import { HetznerFake, type FakeOptions } from "../../fakes/hetzner/fake.js";
import { type CliResult, runCli, tempHome, writeUserConfig } from "../../helpers/cli.js";
import { type StandinVm, standinHooks } from "../../helpers/standin-vm.js";

/**
 * One Hetzner fake plus a throw-away HOME, for driving the real CLI against it. Each test file passes its own
 * `ipv4Prefix` (127.0.7X.), so stand-in sshds of files running in parallel never share an address.
 */
export interface Harness {
  fake: HetznerFake;
  home: ReturnType<typeof tempHome>;
  env: NodeJS.ProcessEnv;
  standins: Map<number, StandinVm>;
  spuff(args: string[], extraEnv?: NodeJS.ProcessEnv): Promise<CliResult>;
  close(): Promise<void>;
}

export async function harness(opts: FakeOptions & { standin?: boolean; config?: Record<string, unknown> } = {}): Promise<Harness> {
  const standins = new Map<number, StandinVm>();
  const { standin = true, config, ...fakeOpts } = opts;
  const fake = await HetznerFake.start({
    ...fakeOpts,
    ...(standin
      ? standinHooks(standins)
      : {}),
  });
  const home = tempHome();
  writeUserConfig(home.env, stringify({ ssh: { user: "spuff-test", tmux: false }, ...config }));
  const env: NodeJS.ProcessEnv = {
    ...home.env,
    HCLOUD_ENDPOINT: fake.endpoint,
    HCLOUD_TOKEN: fake.token,
    HCLOUD_POLL_INTERVAL: "20ms",
    SPUFF_BOOT_TIMEOUT: "30s",
  };
  return {
    fake,
    home,
    env,
    standins,
    spuff: (args, extraEnv = {}) => runCli(["--provider", "hetzner", ...args], { env: { ...env, ...extraEnv }, cwd: home.home }),
    async close() {
      await fake.close();
      for (const s of standins.values()) await s.stop();
      home.cleanup();
    },
  };
}

/** Everything the fake saw that must never happen: spec violations, unimplemented calls, root passwords, /datacenters. */
export function problems(fake: HetznerFake): string[] {
  return [
    ...fake.violations.map((v) => `spec violation (${v.where}) ${v.method} ${v.path}: ${v.message}`),
    ...fake.unimplemented.map((u) => `unimplemented: ${u}`),
    ...fake.hookErrors.map((e) => `hook: ${e}`),
    ...(fake.rootPasswordsIssued ? [`${fake.rootPasswordsIssued} server(s) created without ssh_keys (root password e-mailed)`] : []),
    ...fake.requests.filter((r) => r.path.startsWith("/datacenters")).map((r) => `called ${r.method} ${r.path}`),
  ];
}

/**
 * The per-test lifecycle of a describe block whose tests each make their own harness: after each test, the fake saw no
 * problem and the harness is closed (`reset` clears the test's variable); after all, the CLI processes the tests
 * spawned (pushed onto the returned array) are killed if still running.
 */
export function closeEach(current: () => Harness | undefined, reset: () => void): ChildProcess[] {
  const children: ChildProcess[] = [];
  afterEach(async () => {
    const h = current();
    if (h) {
      expect(problems(h.fake)).toEqual([]);
      await h.close();
    }
    reset();
  });
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  });
  return children;
}
