import { CreateSecurityGroupCommand, DescribeVpcsCommand, RunInstancesCommand, TerminateInstancesCommand } from "@aws-sdk/client-ec2";
import { describe, expect, it } from "vitest";
import { LABEL } from "../../../src/core/labels.js";
import { SKIP, useHarness } from "./harness.js";

const EMPTY_DESCRIBE =
  '<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>lookup-miss</requestId><reservationSet/></DescribeInstancesResponse>';

/** A DescribeInstances that looks an instance up by spuff's request id tag. */
const byRequestId = (p: URLSearchParams) => [...p].some(([k, v]) => /^Filter\.\d+\.Name$/.test(k) && v === `tag:${LABEL.requestId}`);

// Retries that must never create twice (ClientToken + lookup by request id), DependencyViolation on the shared
// security group, idempotent down, and reap of orphaned groups. Real CLI, moto behind the proxy, stand-ins on 127.0.83.N.
describe.skipIf(SKIP)(`aws: retries, idempotency and reap${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.83." });

  it("the fake keeps EC2's ClientToken idempotency (moto alone does not)", async () => {
    const { EC2Client } = await import("@aws-sdk/client-ec2");
    const viaProxy = new EC2Client({ region: "us-east-1", endpoint: h.moto.endpoint, credentials: { accessKeyId: "AKIATEST", secretAccessKey: "x" } });
    try {
      const input = { ImageId: "ami-0deb13a0000000002", InstanceType: "t3.small" as const, MinCount: 1, MaxCount: 1, ClientToken: "same-token-1" };
      const a = await viaProxy.send(new RunInstancesCommand(input));
      const b = await viaProxy.send(new RunInstancesCommand(input));
      expect(b.Instances?.[0].InstanceId).toBe(a.Instances?.[0].InstanceId);
      expect(await h.live()).toHaveLength(1);
      await viaProxy.send(new TerminateInstancesCommand({ InstanceIds: [a.Instances?.[0].InstanceId as string] }));
    } finally {
      viaProxy.destroy();
    }
  });

  it("RunInstances' answer is lost: spuff finds the instance by its request id instead of launching again", async () => {
    h.moto.inject({ action: "RunInstances", when: "after", drop: true });
    const up = await h.spuff(["up", "lost"]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain("checking whether the instance was created before sending it again");
    expect(h.moto.count("RunInstances")).toBe(1);
    expect(await h.live()).toHaveLength(1);
    await h.spuffOk(["down", "lost", "--yes"]);
    expect(await h.live()).toEqual([]);
  });

  it("answer lost and the lookup misses (EC2 lists new instances late): the retry with the same ClientToken starts no second instance", async () => {
    h.moto.inject({ action: "RunInstances", when: "after", code: "ServiceUnavailable", status: 503, message: "Service Unavailable" });
    h.moto.inject({ action: "DescribeInstances", match: byRequestId, body: EMPTY_DESCRIBE });
    const up = await h.spuff(["up", "twice"]);
    expect(up.code, up.stderr).toBe(0);
    const runs = h.moto.requests.filter((r) => r.action === "RunInstances");
    expect(runs.map((r) => [r.status, r.replayed])).toEqual([
      [503, false],
      [200, true],
    ]);
    expect(runs[1].params.get("ClientToken")).toBe(runs[0].params.get("ClientToken"));
    const live = await h.live();
    expect(live).toHaveLength(1);
    const tags = Object.fromEntries((live[0].Tags ?? []).map((t) => [t.Key, t.Value]));
    expect(runs[0].params.get("ClientToken")).toBe(tags[LABEL.requestId]);
    await h.spuffOk(["down", "twice", "--yes"]);
  });

  it("throttled RunInstances (RequestLimitExceeded) is sent again after a lookup; still one instance", async () => {
    h.moto.inject({ action: "RunInstances", code: "RequestLimitExceeded", status: 503, message: "Request limit exceeded.", times: 2 });
    const up = await h.spuff(["up", "throttled"]);
    expect(up.code, up.stderr).toBe(0);
    expect(h.moto.requests.filter((r) => r.action === "RunInstances").map((r) => r.status)).toEqual([503, 503, 200]);
    expect(await h.live()).toHaveLength(1);
    await h.spuffOk(["down", "throttled", "--yes"]);
  });

  it("down retries DeleteSecurityGroup while EC2 still reports the group in use (DependencyViolation)", async () => {
    await h.spuffOk(["up", "dep"]);
    h.moto.inject({ action: "DeleteSecurityGroup", code: "DependencyViolation", message: "resource sg-x has a dependent object", times: 2 });
    const down = await h.spuff(["down", "dep", "--yes"]);
    expect(down.code, down.stderr).toBe(0);
    expect(h.moto.requests.filter((r) => r.action === "DeleteSecurityGroup").map((r) => r.code ?? r.status)).toEqual(["DependencyViolation", "DependencyViolation", 200]);
    expect(down.stderr).toContain("deleted security group spuff-testowner0001");
    expect(await h.spuffGroups()).toEqual([]);
  });

  it("down of an instance terminated behind spuff's back succeeds; the group still goes", async () => {
    await h.spuffOk(["up", "gone"]);
    const [i] = await h.live();
    await h.ec2.send(new TerminateInstancesCommand({ InstanceIds: [i.InstanceId as string] }));
    const down = await h.spuff(["down", "gone", "--yes"]);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toMatch(/already gone: gone|destroyed gone/);
    expect(await h.live()).toEqual([]);
    await h.spuffOk(["reap", "--yes"]);
    expect(await h.spuffGroups()).toEqual([]);
  });

  it("an instance that ended itself (poweroff inside the VM terminates it; spot interruption): ls says gone, reap forgets it and deletes the group", async () => {
    await h.spuffOk(["up", "selfterm"]);
    const [i] = await h.live();
    await h.ec2.send(new TerminateInstancesCommand({ InstanceIds: [i.InstanceId as string] }));
    const ls = await h.spuff(["ls", "--json"]);
    expect(JSON.parse(ls.stdout)).toMatchObject([{ name: "selfterm", provider: "aws", status: "gone", reap: "gone" }]);
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code, reap.stderr).toBe(0);
    expect(reap.stdout).toMatch(/selfterm\s+aws\s+gone\s+forget/);
    expect(reap.stdout).toContain("deleted aws security group spuff-testowner0001");
    expect(await h.spuffGroups()).toEqual([]);
    expect(JSON.parse((await h.spuff(["ls", "--json"])).stdout)).toEqual([]);
  });

  it("reap deletes spuff security groups no instance uses, and leaves other groups alone", async () => {
    const vpc = (await h.ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: "is-default", Values: ["true"] }] }))).Vpcs?.[0].VpcId;
    const tagged = (owner: string) => [{ ResourceType: "security-group" as const, Tags: [{ Key: "managed-by", Value: "spuff" }, { Key: LABEL.owner, Value: owner }] }];
    await h.ec2.send(new CreateSecurityGroupCommand({ GroupName: "spuff-someoneelse01", Description: "x", VpcId: vpc, TagSpecifications: tagged("someoneelse01") }));
    await h.ec2.send(new CreateSecurityGroupCommand({ GroupName: "spuff-lookalike", Description: "not spuff's: no tag", VpcId: vpc }));
    const dry = await h.spuff(["reap", "--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain("security group spuff-someoneelse01");
    expect(dry.stdout).not.toContain("spuff-lookalike");
    expect((await h.spuffGroups()).map((g) => g.GroupName).sort()).toEqual(["spuff-lookalike", "spuff-someoneelse01"]);
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code, reap.stderr).toBe(0);
    expect((await h.spuffGroups()).map((g) => g.GroupName)).toEqual(["spuff-lookalike"]);
  });
});
