import { RunInstancesCommand } from "@aws-sdk/client-ec2";
import { describe, expect, it } from "vitest";
import { LABEL } from "../../../src/core/labels.js";
import { phaseShown } from "../../helpers/cli.js";
import { SKIP, useHarness } from "./harness.js";

// One VM, one identity on EC2 (moto behind the proxy, the built CLI): EC2 names are not unique, so spuff acts on the
// instance id it listed and on its own request id, never on "the newest instance of that name". Addresses 127.0.88.N.
describe.skipIf(SKIP)(`aws: identity, not names${SKIP ? ` (skipped: ${SKIP})` : ""}`, { timeout: 120_000 }, () => {
  const h = useHarness({ ipv4Prefix: "127.0.88." });

  it("two `spuff up same` at once on one machine: one wins, the other fails before any EC2 call", async () => {
    const a = h.spawn(["up", "same"]);
    const b = h.spawn(["up", "same"]);
    const [ca, cb] = await Promise.all([a.exit, b.exit]);
    const [won, lost] = ca === 0 ? [a, b] : [b, a];
    expect([ca, cb].sort(), `${a.stderr()}\n---\n${b.stderr()}`).toEqual([0, 1]);
    expect(lost.stderr()).toMatch(/error: a VM named "same" is being created right now \(by spuff process \d+\)/);
    expect(lost.stderr()).not.toContain("rolling back");
    expect(won.stdout()).toContain("same is ready");
    expect(h.moto.count("RunInstances")).toBe(1);
    expect(await h.live()).toHaveLength(1);
    const ssh = await h.spuff(["ssh", "same", "--no-agent", "--", "echo", "reachable"]);
    expect(ssh.stdout, ssh.stderr).toBe("reachable\n");
    await h.spuffOk(["down", "same", "--yes"]);
    expect(await h.live()).toEqual([]);
  });

  it("a teammate's newer instance of the same name: down destroys this machine's instance, by the id it showed", async () => {
    const run = h.spawn(["up", "same"]);
    await phaseShown(run, "wait running");
    // While our instance boots, a teammate (another owner, same account) launches one named "same" too: it is newer.
    await new Promise((r) => setTimeout(r, 1100));
    const now = Math.floor(Date.now() / 1000);
    const tags = { Name: "same", "managed-by": "spuff", [LABEL.name]: "same", [LABEL.owner]: "teammate0004", [LABEL.createdAt]: String(now), [LABEL.expiresAt]: String(now + 3600), [LABEL.requestId]: "teammatesrequest" };
    const theirs = await h.ec2.send(
      new RunInstancesCommand({
        ImageId: "ami-0deb12a0000000002",
        InstanceType: "t3.small",
        MinCount: 1,
        MaxCount: 1,
        TagSpecifications: [{ ResourceType: "instance", Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) }],
      }),
    );
    const theirId = theirs.Instances?.[0]?.InstanceId;
    expect(await run.exit, run.stderr()).toBe(0);
    const mine = (await h.live()).find((i) => i.InstanceId !== theirId)?.InstanceId;
    expect(mine).toMatch(/^i-/);

    const ls = JSON.parse((await h.spuffOk(["ls", "--json"])).stdout) as { name: string; id: string; mine: boolean; owner: string }[];
    expect(ls.map((v) => [v.name, v.id === theirId ? "theirs" : "mine", v.mine]).sort()).toEqual([
      ["same", "mine", true],
      ["same", "theirs", false],
    ]);
    const down = await h.spuffOk(["down", "same", "--yes"]);
    expect(down.stdout).toContain(`destroyed same (aws id ${mine})`);
    expect((await h.live()).map((i) => i.InstanceId)).toEqual([theirId]);
    // Theirs is left to them: `down` refuses it without --all-owners, and nothing is destroyed.
    const refused = await h.spuff(["down", "same", "--yes"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`refusing to destroy another owner's VM: same (aws id ${theirId}) belongs to owner teammate0004`);
    expect((await h.live()).map((i) => i.InstanceId)).toEqual([theirId]);
  });

  it("spuff start says why an AWS VM cannot be started", async () => {
    await h.spuffOk(["up", "once"]);
    const r = await h.spuff(["start", "once"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: the aws provider cannot start a stopped VM");
    expect(r.stderr).toContain("its VMs are deleted when they power off");
    await h.spuffOk(["down", "once", "--yes"]);
  });
});
