import { once } from "node:events";
import { join } from "node:path";
import {
  CreateVolumeCommand,
  DescribeInstanceAttributeCommand,
  DescribeInstancesCommand,
  DescribeSubnetsCommand,
  DescribeVolumesCommand,
  ModifyInstanceAttributeCommand,
  type Tag,
  TerminateInstancesCommand,
  type Volume as EbsVolume,
} from "@aws-sdk/client-ec2";
import { describe, expect, it } from "vitest";
import { createProvider } from "../../../providers/aws/index.js";
import { loadConfig } from "../../../src/config/load.js";
import { ProviderError, UserError } from "../../../src/core/errors.js";
import { LABEL } from "../../../src/core/labels.js";
import type { CreateSpec, Progress, Provider, Volume } from "../../../src/core/provider.js";
import { SKIP, useHarness } from "./harness.js";

const tagMap = (tags: Tag[] | undefined) => Object.fromEntries((tags ?? []).map((t) => [t.Key, t.Value]));

// The real AWS provider (providers/aws, in this process) against moto behind the test proxy: workspace volumes are
// EBS gp3 volumes tagged in CreateVolume itself, the instance goes where the volume is, the volume is attached after
// RunInstances with DeleteOnTermination=false, and nothing but deleteVolume ever deletes it. No stand-in sshds (the
// addresses 127.0.87.N are never connected to).
describe.skipIf(SKIP)(`aws: workspace volumes${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.87.", standins: false });

  const log: string[] = [];
  const progress: Progress = {
    phase: (n) => log.push(`phase ${n}`),
    info: (m) => log.push(m),
    warn: (m) => log.push(`warn ${m}`),
  };

  function provider(config: Record<string, unknown> = {}): Provider {
    h.writeConfig(config);
    const { config: c } = loadConfig({ env: h.env, cwd: h.home.home });
    return createProvider({ config: c, env: h.env, stateDir: join(h.home.home, "state"), cacheDir: join(h.home.home, "cache"), verbose: false }) as Provider;
  }

  let n = 0;
  const requestId = () => `${(++n).toString(16).padStart(8, "0")}${"0".repeat(24)}`;
  const now = () => String(Math.floor(Date.now() / 1000));

  function volumeLabels(name: string, rid = requestId()): Record<string, string> {
    return {
      "managed-by": "spuff",
      [LABEL.kind]: "workspace",
      [LABEL.name]: name,
      [LABEL.owner]: "testowner0001",
      [LABEL.createdAt]: now(),
      [LABEL.requestId]: rid,
      [LABEL.keep]: String(14 * 86400),
    };
  }

  function vmSpec(name: string, volume?: Volume, extra: Partial<CreateSpec> = {}): CreateSpec {
    const rid = requestId();
    return {
      name,
      labels: { "managed-by": "spuff", [LABEL.name]: name, [LABEL.owner]: "testowner0001", [LABEL.createdAt]: now(), [LABEL.expiresAt]: now(), [LABEL.requestId]: rid },
      userData: "#!/bin/sh\n",
      publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBsBlR6Jz2VqkP0Q6rKJt7q7m0cVnXWmZ0Pq7G5a0n2b spuff-test",
      requestId: rid,
      ...(volume ? { volume } : {}),
      ...extra,
    };
  }

  async function ebs(id: string): Promise<EbsVolume | undefined> {
    return (await h.ec2.send(new DescribeVolumesCommand({ Filters: [{ Name: "volume-id", Values: [id] }] }))).Volumes?.[0];
  }

  async function defaultSubnet(zone: string): Promise<string> {
    const out = await h.ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: "default-for-az", Values: ["true"] }, { Name: "availability-zone", Values: [zone] }] }));
    const id = out.Subnets?.[0]?.SubnetId;
    if (!id) throw new Error(`moto has no default subnet in ${zone}`);
    return id;
  }

  it("creates a gp3 volume tagged in the CreateVolume request itself; listVolumes finds it by tags, never by name", async () => {
    const p = provider();
    expect(p.info().features.volumes).toBe(true);
    // Two volumes that must never be taken for the workspace "box": one only named so, one spuff-tagged without
    // spuff/kind (what an instance's root volume carries).
    await h.ec2.send(new CreateVolumeCommand({ AvailabilityZone: "us-east-1a", Size: 1, TagSpecifications: [{ ResourceType: "volume", Tags: [{ Key: "Name", Value: "box" }] }] }));
    await h.ec2.send(
      new CreateVolumeCommand({
        AvailabilityZone: "us-east-1a",
        Size: 1,
        TagSpecifications: [{ ResourceType: "volume", Tags: [{ Key: "Name", Value: "box" }, { Key: "managed-by", Value: "spuff" }, { Key: LABEL.name, Value: "box" }] }],
      }),
    );
    const calls = h.moto.requests.length;

    const labels = volumeLabels("box");
    const vol = await p.createVolume?.({ name: "box", sizeGiB: 10, labels }, progress);
    expect(vol).toMatchObject({ name: "box", provider: "aws", sizeGiB: 10, location: "us-east-1a", pricePerMonth: null });
    expect(vol?.attachedTo).toBeUndefined();
    const id = vol?.id ?? "";
    expect(id).toMatch(/^vol-[0-9a-f]+$/);

    const sent = h.moto.requests.slice(calls);
    const creates = sent.filter((r) => r.action === "CreateVolume");
    expect(creates).toHaveLength(1);
    const q = creates[0].params;
    expect([q.get("VolumeType"), q.get("Size"), q.get("AvailabilityZone"), q.get("Encrypted"), q.get("TagSpecification.1.ResourceType")]).toEqual(["gp3", "10", "us-east-1a", "true", "volume"]);
    const tagged: Record<string, string> = {};
    for (let t = 1; q.has(`TagSpecification.1.Tag.${t}.Key`); t++) tagged[q.get(`TagSpecification.1.Tag.${t}.Key`) ?? ""] = q.get(`TagSpecification.1.Tag.${t}.Value`) ?? "";
    expect(tagged).toEqual({ Name: "box", ...labels });
    // Nothing tagged it afterwards: the volume never existed without its tags.
    expect(sent.filter((r) => r.action === "CreateTags")).toEqual([]);

    const v = await ebs(id);
    expect(v).toMatchObject({ State: "available", VolumeType: "gp3", Size: 10, AvailabilityZone: "us-east-1a", Encrypted: true });
    expect(tagMap(v?.Tags)).toEqual({ Name: "box", ...labels });

    const listed = await p.listVolumes?.();
    expect(listed?.map((x) => x.id)).toEqual([id]);
    expect(listed?.[0]).toMatchObject({ name: "box", labels: { Name: "box", ...labels }, location: "us-east-1a", sizeGiB: 10 });
    expect(p.volumeDevices?.(listed?.[0] as Volume)).toEqual([`/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol${id.slice(4)}`, "/dev/xvdf"]);

    // setVolumeLabels replaces the tags: new and changed ones set, removed ones deleted.
    const { [LABEL.keep]: _keep, ...rest } = labels;
    await p.setVolumeLabels?.(listed?.[0] as Volume, { ...rest, Name: "box", [LABEL.detachedAt]: "1700000000" });
    expect(tagMap((await ebs(id))?.Tags)).toEqual({ ...rest, Name: "box", [LABEL.detachedAt]: "1700000000" });
  });

  it("puts the volume in spec.location, or in aws.subnet_id's zone", async () => {
    const there = await provider().createVolume?.({ name: "c", sizeGiB: 2, labels: volumeLabels("c"), location: "us-east-1c" }, progress);
    expect(there?.location).toBe("us-east-1c");
    const subnet = await defaultSubnet("us-east-1b");
    const sub = await provider({ aws: { subnet_id: subnet } }).createVolume?.({ name: "b", sizeGiB: 2, labels: volumeLabels("b") }, progress);
    expect(sub?.location).toBe("us-east-1b");
    expect((await ebs(sub?.id ?? ""))?.AvailabilityZone).toBe("us-east-1b");
  });

  it("a lost CreateVolume answer: the volume is found by its request id, not created twice", async () => {
    const p = provider();
    h.moto.inject({ action: "CreateVolume", when: "after", drop: true });
    const labels = volumeLabels("lost");
    const vol = await p.createVolume?.({ name: "lost", sizeGiB: 1, labels }, progress);
    expect(h.moto.count("CreateVolume")).toBe(1);
    const all = (await h.ec2.send(new DescribeVolumesCommand({ Filters: [{ Name: `tag:${LABEL.requestId}`, Values: [labels[LABEL.requestId]] }] }))).Volumes ?? [];
    expect(all.map((v) => v.VolumeId)).toEqual([vol?.id]);
  });

  it("interrupted while CreateVolume's answer is on its way: the answer is awaited and the new volume deleted again", async () => {
    const p = provider();
    h.moto.inject({ action: "CreateVolume", when: "after", delayMs: 1500 });
    const ctl = new AbortController();
    const received = new Promise<void>((res) => h.moto.events.on("received", (r) => r.action === "CreateVolume" && res()));
    const creating = p.createVolume?.({ name: "cut", sizeGiB: 1, labels: volumeLabels("cut"), signal: ctl.signal }, progress).catch((e: unknown) => e);
    await received;
    ctl.abort(new Error("interrupted by the test"));
    expect(((await creating) as Error).message).toBe("interrupted by the test");
    expect(h.moto.count("CreateVolume")).toBe(1);
    expect(h.moto.count("DeleteVolume")).toBe(1);
    expect((await h.ec2.send(new DescribeVolumesCommand({}))).Volumes).toEqual([]);
  });

  it("a volume EC2 still lists as attached to an instance that terminated (it detaches a moment later) is not attached", async () => {
    const p = provider();
    const vol = (await p.createVolume?.({ name: "late", sizeGiB: 1, labels: volumeLabels("late") }, progress)) as Volume;
    const vm = await p.create(vmSpec("late", vol), progress);
    expect((await p.listVolumes?.())?.map((v) => v.attachedTo)).toEqual([vm.id]);
    await h.ec2.send(new TerminateInstancesCommand({ InstanceIds: [vm.id] }));
    // EC2's answer in the seconds after the termination: the attachment is still there.
    const tags = Object.entries(vol.labels)
      .map(([k, v]) => `<item><key>${k}</key><value>${v}</value></item>`)
      .join("");
    const body = `<?xml version="1.0" encoding="UTF-8"?><DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><volumeSet><item><volumeId>${vol.id}</volumeId><size>1</size><availabilityZone>us-east-1a</availabilityZone><status>in-use</status><attachmentSet><item><volumeId>${vol.id}</volumeId><instanceId>${vm.id}</instanceId><device>/dev/sdf</device><status>attached</status><deleteOnTermination>false</deleteOnTermination></item></attachmentSet><tagSet>${tags}</tagSet><volumeType>gp3</volumeType></item></volumeSet></DescribeVolumesResponse>`;
    h.moto.inject({ action: "DescribeVolumes", body });
    const [late] = (await p.listVolumes?.()) ?? [];
    expect(h.moto.requests.filter((r) => r.action === "DescribeVolumes").at(-1)?.injected).toBe(true);
    expect([late.id, late.attachedTo]).toEqual([vol.id, undefined]);
  });

  it("launches in the volume's zone, attaches it after RunInstances with DeleteOnTermination false; destroy keeps it; delete removes it", async () => {
    const p = provider();
    const vol = (await p.createVolume?.({ name: "work", sizeGiB: 4, labels: volumeLabels("work"), location: "us-east-1c" }, progress)) as Volume;
    const tags = tagMap((await ebs(vol.id))?.Tags);
    log.length = 0;
    const vm = await p.create(vmSpec("work", vol), progress);
    expect(log).toContain("phase attach workspace");

    const actions = h.moto.requests.map((r) => r.action);
    const run = actions.indexOf("RunInstances");
    expect(run).toBeGreaterThan(-1);
    expect(actions.indexOf("AttachVolume")).toBeGreaterThan(run);
    const runParams = h.moto.requests[run].params;
    expect(runParams.get("NetworkInterface.1.SubnetId")).toBe(await defaultSubnet("us-east-1c"));
    const attach = h.moto.requests.find((r) => r.action === "AttachVolume")?.params;
    expect([attach?.get("VolumeId"), attach?.get("InstanceId"), attach?.get("Device")]).toEqual([vol.id, vm.id, "/dev/sdf"]);

    const desc = await h.ec2.send(new DescribeInstancesCommand({ InstanceIds: [vm.id] }));
    const instance = desc.Reservations?.[0]?.Instances?.[0];
    expect(instance?.Placement?.AvailabilityZone).toBe("us-east-1c");
    const mapping = instance?.BlockDeviceMappings?.find((m) => m.Ebs?.VolumeId === vol.id);
    expect([mapping?.DeviceName, mapping?.Ebs?.DeleteOnTermination]).toEqual(["/dev/sdf", false]);
    const attached = await ebs(vol.id);
    expect(attached?.State).toBe("in-use");
    expect(attached?.Attachments?.map((a) => [a.InstanceId, a.Device, a.State, a.DeleteOnTermination])).toEqual([[vm.id, "/dev/sdf", "attached", false]]);
    // A poweroff inside the VM terminates it (and so only detaches the volume).
    const shutdown = await h.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: vm.id, Attribute: "instanceInitiatedShutdownBehavior" }));
    expect(shutdown.InstanceInitiatedShutdownBehavior?.Value).toBe("terminate");

    const listed = await p.listVolumes?.();
    expect(listed?.map((v) => [v.id, v.attachedTo])).toEqual([[vol.id, vm.id]]);

    // Attached: deleteVolume refuses and deletes nothing; a second VM cannot take it either.
    const refused = await p.deleteVolume?.(listed?.[0] as Volume, progress).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ProviderError);
    expect((refused as Error).message).toBe(`the workspace volume ${vol.id} of work is attached to instance ${vm.id} (running); nothing was deleted`);
    expect(h.moto.count("DeleteVolume")).toBe(0);
    const runs = h.moto.count("RunInstances");
    const taken = await p.create(vmSpec("work2", listed?.[0]), progress).catch((e: unknown) => e);
    expect(taken).toBeInstanceOf(ProviderError);
    expect((taken as Error).message).toContain(`is attached to instance ${vm.id} (running)`);
    expect(h.moto.count("RunInstances")).toBe(runs);

    await p.destroy(vm, progress);
    const kept = await ebs(vol.id);
    expect(kept?.State).toBe("available");
    expect(kept?.Attachments ?? []).toEqual([]);
    expect(tagMap(kept?.Tags)).toEqual(tags);
    const after = await p.listVolumes?.();
    expect(after?.map((v) => [v.id, v.attachedTo])).toEqual([[vol.id, undefined]]);

    await p.deleteVolume?.(after?.[0] as Volume, progress);
    expect(await ebs(vol.id)).toBeUndefined();
    expect(await p.listVolumes?.()).toEqual([]);
    // Already gone = success.
    await p.deleteVolume?.(after?.[0] as Volume, progress);
  });

  it("terminated from inside (poweroff → terminate) or with DeleteOnTermination switched on behind spuff's back: the volume is kept", async () => {
    const p = provider();
    const vol = (await p.createVolume?.({ name: "keep", sizeGiB: 1, labels: volumeLabels("keep") }, progress)) as Volume;

    // The attachment is switched to DeleteOnTermination=true while AttachVolume's answer is on its way: spuff checks
    // it after the attach and sets it back.
    h.moto.inject({ action: "AttachVolume", when: "after", delayMs: 1500 });
    const launched = once(h.moto.events, "instance-launched");
    const creating = p.create(vmSpec("keep", vol), progress);
    const [{ id }] = (await launched) as [{ id: string }];
    for (;;) {
      const v = await ebs(vol.id);
      if (v?.Attachments?.length) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await h.ec2.send(new ModifyInstanceAttributeCommand({ InstanceId: id, BlockDeviceMappings: [{ DeviceName: "/dev/sdf", Ebs: { DeleteOnTermination: true } }] }));
    const vm = await creating;
    expect(vm.id).toBe(id);
    expect(h.moto.count("ModifyInstanceAttribute")).toBe(1);
    const dot = async () =>
      (await h.ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }))).Reservations?.[0]?.Instances?.[0]?.BlockDeviceMappings?.find((m) => m.DeviceName === "/dev/sdf")?.Ebs
        ?.DeleteOnTermination;
    expect(await dot()).toBe(false);

    // What InstanceInitiatedShutdownBehavior=terminate does on a poweroff: EC2 terminates the instance.
    await h.ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect((await ebs(vol.id))?.State).toBe("available");

    // And destroy switches a DeleteOnTermination=true attachment back before it terminates.
    const vm2 = await p.create(vmSpec("keep", vol), progress);
    await h.ec2.send(new ModifyInstanceAttributeCommand({ InstanceId: vm2.id, BlockDeviceMappings: [{ DeviceName: "/dev/sdf", Ebs: { DeleteOnTermination: true } }] }));
    await p.destroy(vm2, progress);
    expect((await ebs(vol.id))?.State).toBe("available");
    expect(await h.live()).toEqual([]);
  });

  it("a zone set elsewhere (--location, aws.subnet_id) is refused before anything is created", async () => {
    const vol = (await provider().createVolume?.({ name: "az", sizeGiB: 1, labels: volumeLabels("az"), location: "us-east-1c" }, progress)) as Volume;

    const loc = await provider()
      .create(vmSpec("az", vol, { location: "us-east-1a" }), progress)
      .catch((e: unknown) => e);
    expect(loc).toBeInstanceOf(UserError);
    expect((loc as Error).message).toBe(`--location us-east-1a conflicts with the workspace volume ${vol.id} of az, which is in us-east-1c`);
    expect((loc as UserError).hints[0]).toBe("drop --location: the VM goes where its workspace is (us-east-1c)");
    expect((loc as UserError).hints[1]).toContain("spuff down az --purge");

    const subnet = await defaultSubnet("us-east-1a");
    const sub = await provider({ aws: { subnet_id: subnet } })
      .create(vmSpec("az", vol), progress)
      .catch((e: unknown) => e);
    expect(sub).toBeInstanceOf(UserError);
    expect((sub as Error).message).toBe(`aws.subnet_id ${subnet} is in us-east-1a, but the workspace volume ${vol.id} of az is in us-east-1c`);
    expect((sub as UserError).hints[0]).toContain("set aws.subnet_id to a subnet in us-east-1c");

    for (const action of ["RunInstances", "CreateSecurityGroup", "AttachVolume"]) expect(h.moto.count(action)).toBe(0);
    expect((await ebs(vol.id))?.State).toBe("available");
  });

  it("interrupted between RunInstances and AttachVolume: the instance is terminated, the volume left as it was", async () => {
    const p = provider();
    const vol = (await p.createVolume?.({ name: "int", sizeGiB: 1, labels: volumeLabels("int") }, progress)) as Volume;
    const tags = tagMap((await ebs(vol.id))?.Tags);
    h.moto.bootDelayMs = 60_000;
    const ctl = new AbortController();
    const launched = once(h.moto.events, "instance-launched");
    const creating = p.create(vmSpec("int", vol, { signal: ctl.signal }), progress).catch((e: unknown) => e);
    await launched;
    // The instance is pending: spuff waits for it to run before it can attach.
    const polls = h.moto.count("DescribeInstances");
    while (h.moto.count("DescribeInstances") < polls + 3) await once(h.moto.events, "request");
    ctl.abort(new Error("interrupted by the test"));
    const err = await creating;
    expect((err as Error).message).toBe("interrupted by the test");
    h.moto.bootDelayMs = 0;
    await h.moto.settled();

    expect(h.moto.count("AttachVolume")).toBe(0);
    expect(await h.live()).toEqual([]);
    const v = await ebs(vol.id);
    expect(v?.State).toBe("available");
    expect(tagMap(v?.Tags)).toEqual(tags);
  });
});
