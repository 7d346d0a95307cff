import { DescribeVolumesCommand } from "@aws-sdk/client-ec2";
import { describe, expect, it } from "vitest";
import { LABEL } from "../../../src/core/labels.js";
import { events, SKIP, useHarness } from "./harness.js";

const tagMap = (tags: { Key?: string; Value?: string }[] | undefined) => Object.fromEntries((tags ?? []).map((t) => [t.Key, t.Value]));

// The real CLI (the built binary) against moto behind the test proxy, with a real OpenSSH sshd standing in for each
// instance on the loopback address the proxy hands out (127.0.81.N:22).
describe.skipIf(SKIP)(`aws: up → ls → down through the CLI${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.81." });

  it("creates an instance from the newest Debian 13 AMI with its security group, lists it, and removes both", async () => {
    const up = await h.spuff(["up", "box", "--json"]);
    expect(up.stderr).toBe("");
    expect(up.code, up.stderr).toBe(0);
    const ready = events(up.stdout).find((e) => e.event === "ready") as { vm: Record<string, unknown> };
    expect(ready.vm).toMatchObject({ name: "box", provider: "aws", status: "running", address: "127.0.81.2:22", size: "t3.small" });
    expect(ready.vm.pricePerHour ?? null).toBeNull();

    const [instance, ...more] = await h.live();
    expect(more).toEqual([]);
    expect(instance).toMatchObject({ ImageId: "ami-0deb13a0000000002", InstanceType: "t3.small" });
    const tags = Object.fromEntries((instance.Tags ?? []).map((t) => [t.Key, t.Value]));
    expect(tags).toMatchObject({ Name: "box", "managed-by": "spuff", [LABEL.name]: "box", [LABEL.owner]: "testowner0001" });
    expect(tags[LABEL.requestId]).toMatch(/^[0-9a-f]{32}$/);
    expect(Number(tags[LABEL.expiresAt]) - Number(tags[LABEL.createdAt])).toBe(24 * 3600);

    const groups = await h.spuffGroups();
    expect(groups.map((g) => g.GroupName)).toEqual(["spuff-testowner0001"]);

    const ls = await h.spuff(["ls", "--json"]);
    expect(ls.code, ls.stderr).toBe(0);
    const vms = JSON.parse(ls.stdout);
    expect(vms).toHaveLength(1);
    expect(vms[0]).toMatchObject({ name: "box", status: "running", provider: "aws", address: "127.0.81.2:22", reap: null });

    const down = await h.spuff(["down", "box", "--yes"]);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stderr).toContain("deleted security group spuff-testowner0001");
    expect(await h.live()).toEqual([]);
    expect(await h.spuffGroups()).toEqual([]);
    // The root volume went with the instance; the workspace volume is kept (test/providers/aws/workspace.test.ts).
    const vols = async () => (await h.ec2.send(new DescribeVolumesCommand({ Filters: [{ Name: "tag:managed-by", Values: ["spuff"] }] }))).Volumes ?? [];
    expect((await vols()).map((v) => [v.State, tagMap(v.Tags)[LABEL.kind]])).toEqual([["available", "workspace"]]);
    await h.spuffOk(["down", "box", "--purge", "--yes"]);
    expect(await vols()).toEqual([]);

    const again = await h.spuff(["down", "box", "--yes"]);
    expect(again.code, again.stderr).toBe(1);
    expect(again.stderr).toContain('no VM named "box"');
  });
});
