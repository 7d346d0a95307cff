
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LABEL } from "../../../src/core/labels.js";
import { BIN, type CliResult, spawnCli, tempHome, userConfigFile, writeUserConfig } from "../../helpers/cli.js";
import { closeEach, type Harness, harness, } from "./harness.js";

// One VM, one identity, against the Hetzner fake through the built CLI: a run destroys only what it created (found by
// its spuff/request-id), never what it finds by name; a stopped server is started again; a reaper with only a token
// and no local state deletes exactly the expired and idle-stopped servers.
describe.skipIf(!existsSync(BIN))("hetzner: identity, not names", { timeout: 60_000 }, () => {
  let h: Harness | undefined;
  const children = closeEach(
    () => h,
    () => {
      h = undefined;
    },
  );

  /** The built CLI with `env`, in `cwd`. */
  async function cli(argv: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<CliResult> {
    const run = spawnCli(argv, env, cwd);
    children.push(run.child);
    const code = await run.exit;
    return { code: code ?? -1, stdout: run.stdout(), stderr: run.stderr() };
  }

  it("two `spuff up same` at once on one machine: one wins, the other fails before any API call; the winner answers on ssh", async () => {
    h = await harness({ ipv4Prefix: "127.0.87." });
    // The first to reserve the name is slowed down at its first API call, so the second surely comes while it creates.
    h.fake.inject({ method: "GET", path: "/server_types", delayMs: 500 });
    const env = h.env;
    const [a, b] = await Promise.all([
      cli(["--provider", "hetzner", "up", "same"], env, h.home.home),
      cli(["--provider", "hetzner", "up", "same"], env, h.home.home),
    ]);
    const [won, lost] = a.code === 0 ? [a, b] : [b, a];
    expect(won.code, won.stderr).toBe(0);
    expect(lost.code).toBe(1);
    expect(lost.stderr).toMatch(/error: a VM named "same" is being created right now \(by spuff process \d+\)/);
    expect(lost.stderr).toContain("hint: wait for it, then `spuff ssh same`");
    expect(h.fake.count("POST", "/servers")).toBe(1);
    expect(h.fake.count("POST", "/ssh_keys")).toBe(1);
    const ssh = await h.spuff(["ssh", "same", "--no-agent", "--", "echo", "still-mine"]);
    expect(ssh.stdout, ssh.stderr).toBe("still-mine\n");
    // A later `up` of the same name says it exists.
    const again = await h.spuff(["up", "same"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('a VM named "same" already exists');
    expect((await h.spuff(["down", "same", "--yes"])).code).toBe(0);
  });

  it("two machines race for one name in a project: the loser's 409 deletes nothing of the winner's", async () => {
    h = await harness({ ipv4Prefix: "127.0.87." });
    // Both pass the "does a VM of that name exist" check before either creates its server.
    h.fake.inject({ method: "POST", path: "/ssh_keys", delayMs: 400, times: 2 });
    const other = tempHome();
    try {
      const envA = h.env;
      const envB = { ...h.env, HOME: other.home, XDG_CONFIG_HOME: join(other.home, ".config"), XDG_STATE_HOME: join(other.home, ".local", "state"), SPUFF_OWNER: "teammate0002" };
      // The teammate's own user config, with the same settings (the stand-in VMs' login user).
      writeUserConfig(envB, readFileSync(userConfigFile(h.env), "utf8"));
      const [a, b] = await Promise.all([
        cli(["--provider", "hetzner", "up", "same"], envA, h.home.home),
        cli(["--provider", "hetzner", "up", "same"], envB, h.home.home),
      ]);
      const [won, lost, lostEnv] = a.code === 0 ? [a, b, envB] : [b, a, envA];
      expect(won.code, won.stderr).toBe(0);
      expect(lost.code).toBe(1);
      expect(lost.stderr).toContain("create server same: the name is already taken in this Hetzner project (409 uniqueness_error");
      await h.fake.settled();
      // The winner's server and key are there; the loser's key is gone; the loser kept no record.
      const servers = [...h.fake.servers.values()];
      expect(servers.map((s) => s.name)).toEqual(["same"]);
      const keys = [...h.fake.sshKeys.values()];
      expect(keys.map((k) => k.labels[LABEL.requestId])).toEqual([servers[0].labels[LABEL.requestId]]);
      expect(h.fake.count("DELETE", `/servers/${servers[0].id}`)).toBe(0);
      expect(readdirSync(join(lostEnv.XDG_STATE_HOME as string, "spuff", "vms"))).toEqual([]);
      const winnerEnv = lostEnv === envA ? envB : envA;
      const ssh = await cli(["--provider", "hetzner", "ssh", "same", "--no-agent", "--", "echo", "reachable"], winnerEnv, h.home.home);
      expect(ssh.stdout, ssh.stderr).toBe("reachable\n");
      // From the loser's machine the server is another owner's: `down` refuses it without --all-owners.
      const down = await cli(["--provider", "hetzner", "down", "same", "--yes"], lostEnv, h.home.home);
      expect(down.code).toBe(1);
      expect(down.stderr).toMatch(/refusing to destroy another owner's VM: same \(hetzner id \d+\) belongs to owner \S+/);
      expect(h.fake.servers.size).toBe(1);
      expect((await cli(["--provider", "hetzner", "down", "same", "--yes"], winnerEnv, h.home.home)).code).toBe(0);
      expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
    } finally {
      other.cleanup();
    }
  });

  it("a failed up with --keep-on-failure keeps the server and is not reaped as interrupted", async () => {
    h = await harness({ ipv4Prefix: "127.0.87.", standin: false });
    // The built CLI, so the `up` process is gone afterwards (as after any real run).
    const up = await cli(["--provider", "hetzner", "up", "kept", "--keep-on-failure"], { ...h.env, SPUFF_BOOT_TIMEOUT: "2s" }, h.home.home);
    expect(up.code).toBe(2);
    expect(up.stderr).toContain("keeping kept as asked (--keep-on-failure)");
    const ls = JSON.parse((await h.spuff(["ls", "--json"])).stdout);
    expect(ls).toMatchObject([{ name: "kept", status: "running", reap: null, mine: true }]);
    const reap = await h.spuff(["reap", "--dry-run"]);
    expect(reap.stdout).toBe("nothing to reap\n");
    expect((await h.spuff(["down", "kept", "--yes"])).code).toBe(0);
  });

  it("spuff start powers a stopped server on; ssh works again with the same pinned host key", async () => {
    h = await harness({ ipv4Prefix: "127.0.87." });
    expect((await h.spuff(["up", "nap"])).code).toBe(0);
    h.fake.powerOff("nap");
    const status = await h.spuff(["status", "nap"]);
    expect(status.stdout).toMatch(/^status\s+idle-stopped$/m);
    expect(status.stdout).toMatch(/^to reap\s+idle-stopped: powered off; the provider bills it until it is deleted; `spuff reap` deletes it$/m);
    const start = await h.spuff(["start", "nap"]);
    expect(start.code, start.stderr).toBe(0);
    expect(start.stderr).toContain("✓ power on");
    expect(start.stdout).toContain("nap is running again (127.0.87.2:22)");
    expect(h.fake.count("POST", `/servers/${[...h.fake.servers.values()][0].id}/actions/poweron`)).toBe(1);
    const ssh = await h.spuff(["ssh", "nap", "--no-agent", "--", "echo", "awake"]);
    expect(ssh.stdout, ssh.stderr).toBe("awake\n");
    const again = await h.spuff(["start", "nap"]);
    expect(again).toMatchObject({ code: 0, stdout: expect.stringContaining("nap is already running") });
    expect((await h.spuff(["down", "nap", "--yes"])).code).toBe(0);
  });

  it("a reaper with only a token and an empty state directory deletes the expired and the idle-stopped server of another owner, nothing else", async () => {
    h = await harness({ ipv4Prefix: "127.0.87.", standin: false });
    const now = Math.floor(Date.now() / 1000);
    const labels = (name: string, expiresIn: number, owner = "teammate0003") => ({
      "managed-by": "spuff",
      [LABEL.name]: name,
      [LABEL.owner]: owner,
      [LABEL.createdAt]: String(now - 7200),
      [LABEL.expiresAt]: String(now + expiresIn),
      [LABEL.requestId]: `req${name.replaceAll("-", "")}`,
    });
    const seeds: [string, Record<string, string>][] = [
      ["expired", labels("expired", -60)],
      ["idle-off", labels("idle-off", 3600)],
      ["busy", labels("busy", 3600)],
      ["mine-elsewhere", labels("mine-elsewhere", 3600, "anotherowner")],
      ["not-spuff", { [LABEL.expiresAt]: String(now - 60) }],
    ];
    const ids = new Map(seeds.map(([name, l]) => [name, h?.fake.seedServers(1, { namePrefix: name, labels: () => l })[0] ?? 0]));
    h.fake.powerOff(ids.get("idle-off") ?? 0);
    h.fake.powerOff(ids.get("not-spuff") ?? 0);
    const ci = tempHome();
    try {
      // What a scheduled CI job has: a token (and here the fake's endpoint), no config, no state, no owner override.
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: ci.home, SPUFF_PROVIDER: "hetzner", HCLOUD_TOKEN: h.fake.token, HCLOUD_ENDPOINT: h.fake.endpoint, HCLOUD_POLL_INTERVAL: "20ms" };
      const mineOnly = await cli(["reap", "--json"], env, ci.home);
      expect(mineOnly.code, mineOnly.stderr).toBe(0);
      expect(JSON.parse(mineOnly.stdout).plan).toEqual([]);
      const r = await cli(["reap", "--all-owners", "--json"], env, ci.home);
      expect(r.code, r.stderr).toBe(0);
      const result = JSON.parse(r.stdout);
      expect(result.plan.map((i: { name: string; reason: string; done: boolean }) => [i.name, i.reason, i.done])).toEqual([
        ["expired", "expired", true],
        ["idle-off", "idle-stopped", true],
      ]);
      expect(result.errors).toEqual([]);
      await h.fake.settled();
      expect([...h.fake.servers.values()].map((s) => s.name).sort()).toEqual(["busy-1", "mine-elsewhere-1", "not-spuff-1"]);
    } finally {
      ci.cleanup();
    }
  });
});
