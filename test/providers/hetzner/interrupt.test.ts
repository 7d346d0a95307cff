
import { once } from "node:events";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { BIN, phaseShown, type Running, spawnCli } from "../../helpers/cli.js";
import { closeEach, type Harness, harness, } from "./harness.js";

// Ctrl-C (SIGINT) to a real `spuff up --provider hetzner` process (the built binary, as a user runs it) at each phase,
// against the fake: after the rollback the fake holds no server and no SSH key. A crash (SIGKILL) leaves labelled
// resources that `spuff reap` removes. docs/providers/hetzner.md records this table.

describe.skipIf(!existsSync(BIN))("hetzner: interrupting spuff up", { timeout: 60_000 }, () => {
  let h: Harness | undefined;
  const children = closeEach(
    () => h,
    () => {
      h = undefined;
    },
  );

  function up(name: string): Running {
    if (!h) throw new Error("no harness");
    const run = spawnCli(["--provider", "hetzner", "up", name], h.env, h.home.home);
    children.push(run.child);
    return run;
  }

  async function rolledBack(run: ReturnType<typeof up>, during: string): Promise<void> {
    const code = await run.exit;
    expect(run.stderr()).toContain("stopping and cleaning up");
    expect(run.stderr()).toContain(`interrupted during ${during}; rolled back, nothing is left`);
    expect(code).toBe(130);
    await h?.fake.settled();
    expect({ servers: h?.fake.servers.size, keys: h?.fake.sshKeys.size }).toEqual({ servers: 0, keys: 0 });
    const ls = await h?.spuff(["ls", "--json"]);
    expect(JSON.parse(ls?.stdout ?? "null")).toEqual([]);
    expect(run.stderr()).not.toContain(h?.fake.token);
  }

  it("after the SSH key was registered (its answer still on the way): the key is deleted", async () => {
    h = await harness({ ipv4Prefix: "127.0.75.", standin: false });
    h.fake.inject({ method: "POST", path: "/ssh_keys", when: "after", delayMs: 3000 });
    const run = up("int-key");
    await once(h.fake.events, "ssh-key-created");
    expect(h.fake.sshKeys.size).toBe(1);
    run.child.kill("SIGINT");
    await rolledBack(run, "register SSH key");
    expect(h.fake.count("POST", "/servers")).toBe(0);
  });

  it("during create (the create action running): the server is deleted once unlocked, then its key", async () => {
    h = await harness({ ipv4Prefix: "127.0.75.", standin: false, actionDelayMs: 1500 });
    const run = up("int-create");
    await once(h.fake.events, "server-created");
    run.child.kill("SIGINT");
    await rolledBack(run, "create server");
    // The delete was refused while the create action ran (423) and retried.
    expect(h.fake.requests.filter((r) => r.method === "DELETE" && r.path.startsWith("/servers/")).map((r) => r.status)).toContain(423);
    expect(h.fake.requests.filter((r) => r.method === "DELETE" && r.path.startsWith("/servers/")).at(-1)?.status).toBe(200);
  });

  it("during wait running (the server still starting)", async () => {
    h = await harness({ ipv4Prefix: "127.0.75.", standin: false, bootDelayMs: 2000 });
    const run = up("int-running");
    await phaseShown(run, "wait running");
    run.child.kill("SIGINT");
    await rolledBack(run, "wait running");
  });

  it("during wait SSH (nothing answers on the server's address)", async () => {
    h = await harness({ ipv4Prefix: "127.0.75.", standin: false });
    const run = up("int-ssh");
    await phaseShown(run, "wait SSH");
    expect(h.fake.servers.size).toBe(1);
    run.child.kill("SIGINT");
    await rolledBack(run, "wait SSH");
  });

  it("a crash (SIGKILL) during wait SSH: `spuff reap` removes the server and its key", async () => {
    h = await harness({ ipv4Prefix: "127.0.75.", standin: false });
    const run = up("int-kill");
    await phaseShown(run, "wait SSH");
    run.child.kill("SIGKILL");
    await run.exit;
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(2);
    const ls = JSON.parse((await h.spuff(["ls", "--json"])).stdout);
    expect(ls.map((v: { name: string; reap: string }) => [v.name, v.reap])).toEqual([["int-kill", "interrupted"]]);
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code).toBe(0);
    expect(reap.stdout).toMatch(/int-kill\s+hetzner\s+interrupted\s+destroy/);
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
  });

  it("a crash (SIGKILL) after the key was registered: reap forgets the VM; the key goes once it is 5 minutes old", async () => {
    h = await harness({ ipv4Prefix: "127.0.75.", standin: false });
    h.fake.inject({ method: "POST", path: "/ssh_keys", when: "after", delayMs: 3000 });
    const run = up("int-kill-key");
    await once(h.fake.events, "ssh-key-created");
    run.child.kill("SIGKILL");
    await run.exit;
    expect((await h.spuff(["reap", "--yes"])).code).toBe(0);
    expect(h.fake.sshKeys.size).toBe(1); // young: another `up` might be about to use it
    for (const k of h.fake.sshKeys.values()) k.created = new Date(Date.now() - 6 * 60_000).toISOString().replace(/\.\d{3}Z$/, "+00:00");
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.stdout).toContain("deleted hetzner SSH key spuff-int-kill-key-");
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
  });
});
