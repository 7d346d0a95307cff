import { once } from "node:events";
import { CreateTagsCommand, DescribeVolumesCommand, type Tag, type Volume } from "@aws-sdk/client-ec2";
import { describe, expect, it } from "vitest";
import { LABEL } from "../../../src/core/labels.js";
import { phaseShown, type Running } from "../../helpers/cli.js";
import { SKIP, useHarness } from "./harness.js";

const tagMap = (tags: Tag[] | undefined) => Object.fromEntries((tags ?? []).map((t) => [t.Key, t.Value]));

// Workspace volumes through the real CLI (the built binary) against moto behind the test proxy, with a stand-in sshd
// per instance (127.0.93.N): up creates and attaches an EBS volume, down keeps it, the next up attaches the same one,
// down --purge deletes it; Ctrl-C in up never deletes a volume that existed before it and never leaves one untagged.
describe.skipIf(SKIP)(`aws: workspace volumes through the CLI${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.93." });

  /** Every volume moto holds (spuff's or not). */
  async function volumes(): Promise<Volume[]> {
    return (await h.ec2.send(new DescribeVolumesCommand({}))).Volumes ?? [];
  }

  /** The workspace volumes, found as spuff finds them: by tags. */
  async function workspaces(): Promise<Volume[]> {
    const filters = [
      { Name: "tag:managed-by", Values: ["spuff"] },
      { Name: `tag:${LABEL.kind}`, Values: ["workspace"] },
    ];
    return (await h.ec2.send(new DescribeVolumesCommand({ Filters: filters }))).Volumes ?? [];
  }

  /** No volume without spuff's tags: every volume left is a tagged workspace (root volumes go with their instances). */
  async function noUntagged(): Promise<void> {
    for (const v of await volumes()) expect(tagMap(v.Tags)).toMatchObject({ "managed-by": "spuff", [LABEL.kind]: "workspace" });
  }

  async function interrupted(run: Running): Promise<void> {
    run.child.kill("SIGINT");
    const code = await run.exit;
    expect(code, run.stderr()).toBe(130);
    await h.moto.settled();
    expect(await h.live()).toEqual([]);
    expect(await h.spuffGroups()).toEqual([]);
  }

  it("up creates a tagged volume and attaches it; down keeps it; up attaches the same volume; down --purge deletes it", async () => {
    const up = await h.spuffOk(["up", "box"]);
    const [first] = await h.live();
    const [ws, ...more] = await workspaces();
    expect(more).toEqual([]);
    const id = ws.VolumeId as string;
    expect(up.stdout).toContain(`~/work is a new workspace volume ${id} (10 GiB)`);
    const tags = tagMap(ws.Tags);
    expect(tags).toMatchObject({ Name: "box", [LABEL.name]: "box", [LABEL.owner]: "testowner0001", [LABEL.keep]: String(14 * 86400) });
    expect(tags[LABEL.requestId]).toBe(tagMap(first.Tags)[LABEL.requestId]);
    expect([ws.VolumeType, ws.Size, ws.AvailabilityZone]).toEqual(["gp3", 10, first.Placement?.AvailabilityZone]);
    expect(ws.Attachments?.map((a) => [a.InstanceId, a.Device, a.State, a.DeleteOnTermination])).toEqual([[first.InstanceId, "/dev/sdf", "attached", false]]);

    const down = await h.spuffOk(["down", "box", "--yes"]);
    expect(down.stdout).toContain(`kept the workspace volume ${id} (10 GiB)`);
    expect(down.stdout).toContain("spuff down box --purge");
    expect(await h.live()).toEqual([]);
    const [kept, ...others] = await volumes();
    expect(others).toEqual([]);
    expect([kept.VolumeId, kept.State, kept.Attachments ?? []]).toEqual([id, "available", []]);
    expect(tagMap(kept.Tags)).toMatchObject(tags);
    expect(Number(tagMap(kept.Tags)[LABEL.detachedAt])).toBeGreaterThan(0);
    const ls = JSON.parse((await h.spuffOk(["workspace", "ls", "--json"])).stdout);
    expect(ls.map((w: { id: string; status: string; pricePerMonth: unknown }) => [w.id, w.status, w.pricePerMonth])).toEqual([[id, "kept", null]]);

    const again = await h.spuffOk(["up", "box"]);
    expect(again.stdout).toContain(`~/work is the kept workspace volume ${id}`);
    expect(h.moto.count("CreateVolume")).toBe(1);
    const [second] = await h.live();
    expect(second.InstanceId).not.toBe(first.InstanceId);
    const [back] = await workspaces();
    expect([back.VolumeId, back.Attachments?.map((a) => [a.InstanceId, a.State, a.DeleteOnTermination])]).toEqual([id, [[second.InstanceId, "attached", false]]]);
    expect(tagMap(back.Tags)[LABEL.detachedAt]).toBeUndefined();

    const purge = await h.spuffOk(["down", "box", "--purge", "--yes"]);
    expect(purge.stdout).toContain(`deleted the workspace volume ${id} of box`);
    expect(await h.live()).toEqual([]);
    expect(await volumes()).toEqual([]);
    expect(await h.spuffGroups()).toEqual([]);
  });

  it("reap keeps a kept workspace until spuff/keep has passed since its detach, then deletes it; never an attached one", async () => {
    await h.spuffOk(["up", "old"]);
    const [attached] = await workspaces();
    const id = attached.VolumeId as string;
    // Attached: never reaped, whatever its keep says.
    await h.ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: LABEL.keep, Value: "0" }] }));
    await h.spuffOk(["reap", "--yes"]);
    expect((await workspaces()).map((v) => v.State)).toEqual(["in-use"]);

    await h.spuffOk(["down", "old", "--yes"]);
    await h.ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: LABEL.keep, Value: String(14 * 86400) }] }));
    await h.spuffOk(["reap", "--yes"]);
    expect((await workspaces()).map((v) => [v.VolumeId, v.State])).toEqual([[id, "available"]]);
    expect(h.moto.count("DeleteVolume")).toBe(0);

    // Its keep period over (as if 14 days had passed since the detach): reap deletes it.
    await h.ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: LABEL.keep, Value: "0" }] }));
    const reap = await h.spuffOk(["reap", "--yes"]);
    expect(reap.stdout).toContain(id);
    expect(await volumes()).toEqual([]);
  });

  it("Ctrl-C while the instance starts, with a kept workspace: the instance goes, the old volume stays with its tags", async () => {
    await h.spuffOk(["up", "kept"]);
    await h.spuffOk(["down", "kept", "--yes"]);
    const [before] = await workspaces();
    h.moto.bootDelayMs = 60_000;
    const run = h.spawn(["up", "kept"]);
    await phaseShown(run, "attach workspace");
    while ((await h.live()).length === 0) await once(h.moto.events, "request");
    await interrupted(run);
    expect(run.stderr()).toContain(`kept the workspace volume ${before.VolumeId} of kept: it existed before this up`);
    expect(h.moto.count("DeleteVolume")).toBe(0);
    const [after, ...more] = await volumes();
    expect(more).toEqual([]);
    expect([after.VolumeId, after.State]).toEqual([before.VolumeId, "available"]);
    const { [LABEL.attachedAt]: _a, [LABEL.detachedAt]: _d, ...kept } = tagMap(before.Tags);
    expect(tagMap(after.Tags)).toMatchObject(kept);
    await noUntagged();
  });

  it("Ctrl-C while CreateVolume's answer is on its way: the answer is awaited and the new volume deleted", async () => {
    h.moto.inject({ action: "CreateVolume", when: "after", delayMs: 3000 });
    const run = h.spawn(["up", "fresh"]);
    await new Promise<void>((res) => h.moto.events.on("received", (r) => r.action === "CreateVolume" && res()));
    await interrupted(run);
    expect(h.moto.count("RunInstances")).toBe(0);
    expect(await volumes(), run.stderr()).toEqual([]);
  });

  it("Ctrl-C while the instance starts, with a new workspace: instance and volume both go", async () => {
    h.moto.bootDelayMs = 60_000;
    const run = h.spawn(["up", "new"]);
    await phaseShown(run, "attach workspace");
    while ((await h.live()).length === 0) await once(h.moto.events, "request");
    await interrupted(run);
    expect(h.moto.count("CreateVolume")).toBe(1);
    expect(await volumes()).toEqual([]);
  });

  it("Ctrl-C during wait SSH, with the workspace attached: a kept one is detached and stays", async () => {
    await h.spuffOk(["up", "ssh"]);
    await h.spuffOk(["down", "ssh", "--yes"]);
    const [before] = await workspaces();
    h.moto.standinsEnabled = false;
    const run = h.spawn(["up", "ssh"]);
    await phaseShown(run, "wait SSH");
    expect((await workspaces())[0].Attachments?.map((a) => a.State)).toEqual(["attached"]);
    await interrupted(run);
    const [after, ...more] = await volumes();
    expect(more).toEqual([]);
    expect([after.VolumeId, after.State]).toEqual([before.VolumeId, "available"]);
    await noUntagged();
  });
});
