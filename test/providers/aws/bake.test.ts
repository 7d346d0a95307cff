import { once } from "node:events";
import { gunzipSync } from "node:zlib";
import { DescribeImagesCommand, DescribeInstanceAttributeCommand, DescribeSnapshotsCommand, type Tag } from "@aws-sdk/client-ec2";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { LABEL } from "../../../src/core/labels.js";
import { SKIP, useHarness } from "./harness.js";

// `spuff image bake` against moto behind the test proxy (the built binary), with a real sshd standing in for the bake
// instance on 127.0.98.N: CreateImage tagged for the AMI and its EBS snapshot, `up` from the AMI without package or
// image.setup work, `image ls`/`image rm` (AMI deregistered, snapshot deleted), and Ctrl-C while the AMI is made.
const tagMap = (tags: Tag[] | undefined) => Object.fromEntries((tags ?? []).map((t) => [t.Key, t.Value]));

describe.skipIf(SKIP)(`aws: baked images through the CLI${SKIP ? ` (skipped: ${SKIP})` : ""}`, { timeout: 90_000 }, () => {
  const h = useHarness({ ipv4Prefix: "127.0.98.", config: { packages: ["jq"], image: { setup: ["mkdir -p ~/.cache/baked"] } } });

  const spuffAmis = async () => (await h.ec2.send(new DescribeImagesCommand({ Owners: ["self"], Filters: [{ Name: "tag:managed-by", Values: ["spuff"] }] }))).Images ?? [];
  const spuffSnapshots = async () =>
    (await h.ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ["self"], Filters: [{ Name: "tag:managed-by", Values: ["spuff"] }] }))).Snapshots ?? [];
  async function userDataOf(id: string): Promise<string> {
    const attr = await h.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: id, Attribute: "userData" }));
    const bytes = Buffer.from(attr.UserData?.Value ?? "", "base64");
    return (bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes).toString("utf8");
  }

  it("bakes a tagged AMI (its snapshot tagged too), `up` boots it without package or image.setup work, `image rm` deletes AMI and snapshot", async () => {
    const bake = await h.spuff(["image", "bake", "--json"]);
    expect(bake.code, bake.stderr).toBe(0);
    const baked = JSON.parse(bake.stdout);
    expect(baked).toMatchObject({ provider: "aws", status: "available", current: true, created: true, pricePerMonth: null });
    expect(baked.id).toMatch(/^ami-[0-9a-f]+$/);
    expect(await h.live()).toEqual([]);

    // One CreateImage, tagged for the image and for its snapshot in that request.
    const [req, ...more] = h.moto.requests.filter((r) => r.action === "CreateImage");
    expect(more).toEqual([]);
    const types = [...req.params].filter(([k]) => /^TagSpecification\.\d+\.ResourceType$/.test(k)).map(([, v]) => v);
    expect(types.sort()).toEqual(["image", "snapshot"]);
    expect(req.params.get("NoReboot")).toBe("false");

    const [ami, ...others] = await spuffAmis();
    expect(others).toEqual([]);
    expect(ami.ImageId).toBe(baked.id);
    const tags = tagMap(ami.Tags);
    expect(tags).toMatchObject({ "managed-by": "spuff", [LABEL.kind]: "bake", [LABEL.owner]: "testowner0001" });
    expect(tags[LABEL.bake]).toMatch(/^[0-9a-f]{20}$/);
    const snaps = await spuffSnapshots();
    expect(snaps.map((s) => s.SnapshotId)).toEqual(ami.BlockDeviceMappings?.map((b) => b.Ebs?.SnapshotId));
    expect(tagMap(snaps[0].Tags)).toMatchObject({ [LABEL.kind]: "bake", [LABEL.bake]: tags[LABEL.bake], [LABEL.requestId]: tags[LABEL.requestId] });

    const up = await h.spuff(["up", "box"]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain(`booting the baked image ${baked.name} (${baked.id})`);
    const [vm] = await h.live();
    expect(vm.ImageId).toBe(baked.id);
    const text = await userDataOf(vm.InstanceId as string);
    expect(text.startsWith("#cloud-config")).toBe(true);
    const cfg = parse(text) as { runcmd: (string | string[])[]; write_files: { path: string; content: string }[] };
    expect(cfg.runcmd.map((c) => (Array.isArray(c) ? c.join(" ") : c)).join("\n")).not.toContain("spuff-install-packages");
    expect(cfg.write_files.map((f) => f.path)).not.toContain("/usr/local/bin/spuff-install-packages");
    expect(text).not.toContain(".cache/baked");
    expect(text).not.toMatch(/\bjq\b/);

    const ls = await h.spuff(["image", "ls", "--json"]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([expect.objectContaining({ id: baked.id, provider: "aws", current: true, pricePerMonth: null })]);

    expect((await h.spuff(["down", "box", "--yes"])).code).toBe(0);
    const rm = await h.spuff(["image", "rm", baked.id]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(await spuffAmis()).toEqual([]);
    expect(await spuffSnapshots()).toEqual([]);
  });

  it("Ctrl-C while CreateImage's answer is on its way: the AMI (found by its request id tag), its snapshot and the instance are deleted", async () => {
    h.moto.inject({ action: "CreateImage", when: "after", delayMs: 4000 });
    const run = h.spawn(["image", "bake"]);
    await once(h.moto.events, "image-created");
    expect(await spuffAmis()).toHaveLength(1);
    run.child.kill("SIGINT");
    const code = await run.exit;
    expect(run.stderr()).toContain("interrupted during create image; rolled back: no bake VM and no image are left");
    expect(code, run.stderr()).toBe(130);
    await h.moto.settled();
    expect(await h.live()).toEqual([]);
    expect(await spuffAmis()).toEqual([]);
    expect(await spuffSnapshots()).toEqual([]);
    expect(await h.spuffGroups()).toEqual([]);
  });
});
