import { once } from "node:events";
import { describe, expect, it } from "vitest";
import { phaseShown, type Running } from "../../helpers/cli.js";
import { SKIP, useHarness } from "./harness.js";

// Ctrl-C (SIGINT) to a real `spuff --provider aws up` process (the built binary) at each phase, against moto behind the
// proxy: after the rollback no instance is left and no spuff security group either. A crash (SIGKILL) leaves a tagged
// instance that `spuff reap` removes. docs/providers/aws.md records this table. Without a workspace volume here: the
// same with one (whose phases differ: the instance is waited for before the attach) is test/providers/aws/workspace.test.ts.
// Addresses 127.0.84.N.
describe.skipIf(SKIP)(`aws: interrupting spuff up${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.84.", config: { workspace: { volume: false } } });


  async function nothingLeft(): Promise<void> {
    await h.moto.settled();
    expect(await h.live()).toEqual([]);
    expect(await h.spuffGroups()).toEqual([]);
    const ls = await h.spuff(["ls", "--json"]);
    expect(JSON.parse(ls.stdout)).toEqual([]);
  }

  async function rolledBack(run: Running, during: string): Promise<void> {
    const code = await run.exit;
    expect(run.stderr()).toContain("stopping and cleaning up");
    expect(run.stderr()).toContain(`interrupted during ${during}; rolled back, nothing is left`);
    expect(code, run.stderr()).toBe(130);
    await nothingLeft();
  }

  it("during the SDK waiter (instance still pending)", async () => {
    h.moto.bootDelayMs = 60_000;
    const run = h.spawn(["up", "int-wait"]);
    await phaseShown(run, "wait running");
    // Let the waiter poll a few times first.
    while (h.moto.count("DescribeInstances") < 4) await once(h.moto.events, "request");
    expect(await h.live()).toHaveLength(1);
    run.child.kill("SIGINT");
    await rolledBack(run, "wait running");
    expect(h.moto.count("TerminateInstances")).toBe(1);
  });

  it("while RunInstances' answer is on its way: the instance is found by its request id and terminated", async () => {
    h.moto.inject({ action: "RunInstances", when: "after", delayMs: 3000 });
    const run = h.spawn(["up", "int-run"]);
    await once(h.moto.events, "instance-launched");
    run.child.kill("SIGINT");
    await rolledBack(run, "launch instance");
    expect(h.moto.count("RunInstances")).toBe(1);
  });

  it("while creating the security group", async () => {
    h.moto.inject({ action: "CreateSecurityGroup", when: "after", delayMs: 3000 });
    const run = h.spawn(["up", "int-sg"]);
    await new Promise<void>((res) => h.moto.events.on("received", (r) => r.action === "CreateSecurityGroup" && res()));
    run.child.kill("SIGINT");
    await rolledBack(run, "security group");
    expect(h.moto.count("RunInstances")).toBe(0);
  });

  it("during wait SSH (nothing answers on the instance's address)", async () => {
    h.moto.standinsEnabled = false;
    const run = h.spawn(["up", "int-ssh"]);
    await phaseShown(run, "wait SSH");
    expect(await h.live()).toHaveLength(1);
    run.child.kill("SIGINT");
    await rolledBack(run, "wait SSH");
  });

  it("a crash (SIGKILL) during the waiter: ls shows it interrupted, `spuff reap` terminates it and deletes the group", async () => {
    h.moto.bootDelayMs = 60_000;
    const run = h.spawn(["up", "int-kill"]);
    await phaseShown(run, "wait running");
    run.child.kill("SIGKILL");
    await run.exit;
    expect(await h.live()).toHaveLength(1);
    const ls = JSON.parse((await h.spuff(["ls", "--json"])).stdout);
    expect(ls.map((v: { name: string; reap: string }) => [v.name, v.reap])).toEqual([["int-kill", "interrupted"]]);
    h.moto.bootDelayMs = 0;
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code, reap.stderr).toBe(0);
    expect(reap.stdout).toMatch(/int-kill\s+aws\s+interrupted\s+destroy/);
    await nothingLeft();
  });
});
