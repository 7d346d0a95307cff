import {
  AssociateVpcCidrBlockCommand,
  CreateSubnetCommand,
  CreateVpcCommand,
  DescribeInstanceAttributeCommand,
  DescribeNetworkInterfacesCommand,
  DescribeSecurityGroupsCommand,
  DescribeVolumesCommand,
  type Tag,
} from "@aws-sdk/client-ec2";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { LABEL } from "../../../src/core/labels.js";
import { SKIP, useHarness } from "./harness.js";

const tagMap = (tags: Tag[] | undefined) => Object.fromEntries((tags ?? []).map((t) => [t.Key, t.Value]));

// What `spuff up` asks EC2 for, read back from moto with the SDK (DescribeInstanceAttribute, DescribeVolumes, ...) and
// from the requests the proxy saw: tags, shutdown behaviour, IMDSv2, no instance profile, the AMI choice, spot,
// subnets, IPv6 and the security group's rules. Stand-in sshds on 127.0.82.N.
describe.skipIf(SKIP)(`aws: what up launches${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.82." });

  const runParams = () => {
    const runs = h.moto.requests.filter((r) => r.action === "RunInstances");
    expect(runs).toHaveLength(1);
    return runs[0].params;
  };

  it("tags instance, volume and interface alike; poweroff terminates; IMDSv2 only; no instance profile, no key pair", async () => {
    const up = await h.spuff(["up", "attrs"]);
    expect(up.code, up.stderr).toBe(0);
    const [i] = await h.live();
    const id = i.InstanceId as string;
    const tags = tagMap(i.Tags);
    expect(tags).toMatchObject({ Name: "attrs", "managed-by": "spuff", [LABEL.name]: "attrs", [LABEL.owner]: "testowner0001" });
    expect(Object.keys(tags).sort()).toEqual(["Name", "managed-by", LABEL.createdAt, LABEL.expiresAt, LABEL.name, LABEL.owner, LABEL.requestId].sort());

    const shutdown = await h.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: id, Attribute: "instanceInitiatedShutdownBehavior" }));
    expect(shutdown.InstanceInitiatedShutdownBehavior?.Value).toBe("terminate");
    const userData = await h.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: id, Attribute: "userData" }));
    // spuff gzips user-data over EC2's 16 KiB; cloud-init unpacks it by its magic bytes.
    const bytes = Buffer.from(userData.UserData?.Value ?? "", "base64");
    const text = (bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes).toString("utf8");
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    expect(text).not.toMatch(/AKIASPUFFTESTKEY0001|spuff-test-secret/);

    // moto 5.2 reports the metadata options back (5.1 does not: the request is checked below either way).
    if (i.MetadataOptions) expect(i.MetadataOptions).toMatchObject({ HttpTokens: "required", HttpEndpoint: "enabled", HttpPutResponseHopLimit: 1 });
    expect(i.IamInstanceProfile).toBeUndefined();
    expect(i.KeyName).toBeUndefined();
    expect(i.InstanceLifecycle).toBeUndefined(); // on-demand by default
    // The root volume goes with the instance; the workspace volume (test/providers/aws/workspace.test.ts) stays.
    expect(i.BlockDeviceMappings?.map((b) => [b.DeviceName, b.Ebs?.DeleteOnTermination])).toEqual([
      ["/dev/xvda", true],
      ["/dev/sdf", false],
    ]);

    const vols = await h.ec2.send(new DescribeVolumesCommand({ Filters: [{ Name: "attachment.instance-id", Values: [id] }] }));
    const root = i.BlockDeviceMappings?.[0].Ebs?.VolumeId;
    expect(vols.Volumes).toHaveLength(2);
    expect(tagMap(vols.Volumes?.find((v) => v.VolumeId === root)?.Tags)).toEqual(tags);
    const enis = await h.ec2.send(new DescribeNetworkInterfacesCommand({ Filters: [{ Name: "attachment.instance-id", Values: [id] }] }));
    expect(enis.NetworkInterfaces).toHaveLength(1);
    // moto does not apply TagSpecifications of type network-interface; the request below carries them.
    const eniTags = tagMap(enis.NetworkInterfaces?.[0].TagSet);
    if (Object.keys(eniTags).length) expect(eniTags).toEqual(tags);

    // The request itself: ClientToken is the request id; nothing that would give the VM a credential.
    const p = runParams();
    expect(p.get("ClientToken")).toBe(tags[LABEL.requestId]);
    expect(p.get("InstanceInitiatedShutdownBehavior")).toBe("terminate");
    const specs: Record<string, Record<string, string>> = {};
    for (let n = 1; p.has(`TagSpecification.${n}.ResourceType`); n++) {
      const spec: Record<string, string> = {};
      for (let t = 1; p.has(`TagSpecification.${n}.Tag.${t}.Key`); t++) spec[p.get(`TagSpecification.${n}.Tag.${t}.Key`) ?? ""] = p.get(`TagSpecification.${n}.Tag.${t}.Value`) ?? "";
      specs[p.get(`TagSpecification.${n}.ResourceType`) ?? ""] = spec;
    }
    expect(specs).toEqual({ instance: tags, volume: tags, "network-interface": tags });
    expect(p.get("MetadataOptions.HttpTokens")).toBe("required");
    expect(p.get("MetadataOptions.HttpEndpoint")).toBe("enabled");
    expect(p.get("BlockDeviceMapping.1.Ebs.DeleteOnTermination")).toBe("true");
    expect(p.get("NetworkInterface.1.DeleteOnTermination")).toBe("true");
    expect([...p.keys()].filter((k) => /IamInstanceProfile|KeyName|InstanceMarketOptions|Ipv6AddressCount/.test(k))).toEqual([]);

    // The owner's group: tagged, TCP 22 open to the default aws.ssh_cidr (0.0.0.0/0, and ::/0 with it), nothing else.
    const [sg] = (await h.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: i.NetworkInterfaces?.[0].Groups?.map((g) => g.GroupId as string) }))).SecurityGroups ?? [];
    expect(sg.GroupName).toBe("spuff-testowner0001");
    expect(tagMap(sg.Tags)).toMatchObject({ "managed-by": "spuff", [LABEL.owner]: "testowner0001" });
    expect(sg.IpPermissions?.map((r) => [r.IpProtocol, r.FromPort, r.ToPort, r.IpRanges?.map((x) => x.CidrIp), r.Ipv6Ranges?.map((x) => x.CidrIpv6)])).toEqual([
      ["tcp", 22, 22, ["0.0.0.0/0"], ["::/0"]],
    ]);
    await h.spuffOk(["down", "attrs", "--yes"]);
  });

  it("the newest official Debian 13 image per architecture: t4g (arm64) gets the arm64 build; impostors are ignored", async () => {
    const up = await h.spuff(["up", "arm", "--size", "t4g.small"]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain("t4g.small in us-east-1a, debian-13-arm64-20251117-2305 (ami-0deb13b0000000003)");
    const [i] = await h.live();
    expect(i).toMatchObject({ ImageId: "ami-0deb13b0000000003", InstanceType: "t4g.small" });
    const images = h.moto.requests.filter((r) => r.action === "DescribeImages");
    expect(images).toHaveLength(1);
    expect(Object.fromEntries(images[0].params)).toMatchObject({
      "Owner.1": "136693071363",
      "Filter.1.Name": "name",
      "Filter.1.Value.1": "debian-13-arm64-*",
      "Filter.2.Name": "architecture",
      "Filter.2.Value.1": "arm64",
    });
    await h.spuffOk(["down", "arm", "--yes"]);
  });

  it("aws.ami overrides the lookup; an AMI of the wrong architecture is refused before anything is created", async () => {
    h.writeConfig({ aws: { ami: "ami-0c0ffee000000007" } });
    const up = await h.spuff(["up", "own"]);
    expect(up.code, up.stderr).toBe(0);
    expect((await h.live())[0].ImageId).toBe("ami-0c0ffee000000007");
    expect(h.moto.requests.find((r) => r.action === "DescribeImages")?.params.get("ImageId.1")).toBe("ami-0c0ffee000000007");
    await h.spuffOk(["down", "own", "--yes"]);

    const arm = await h.spuff(["up", "wrong", "--size", "t4g.small"]);
    expect(arm.code, arm.stderr).toBe(1);
    expect(arm.stderr).toContain("error: the AMI ami-0c0ffee000000007 is built for x86_64, but the instance type runs arm64");
    expect(arm.stderr).toContain("hint: pick an x86_64 instance type with --size, or an arm64 AMI");
    expect(h.moto.count("RunInstances")).toBe(1);
  });

  it("--location picks the availability zone's default subnet; spot asks for a one-time spot instance that terminates on interruption", async () => {
    h.writeConfig({ aws: { spot: true } });
    const up = await h.spuff(["up", "sp", "--location", "us-east-1c"]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain("t3.small (spot) in us-east-1c");
    const [i] = await h.live();
    expect(i.Placement?.AvailabilityZone).toBe("us-east-1c");
    expect(i.InstanceLifecycle).toBe("spot");
    const p = runParams();
    expect(Object.fromEntries([...p].filter(([k]) => k.startsWith("InstanceMarketOptions")))).toEqual({
      "InstanceMarketOptions.MarketType": "spot",
      "InstanceMarketOptions.SpotOptions.SpotInstanceType": "one-time",
      "InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior": "terminate",
    });
    const ls = JSON.parse((await h.spuff(["ls", "--json"])).stdout);
    expect(ls[0]).toMatchObject({ name: "sp", location: "us-east-1c", size: "t3.small", pricePerHour: null });
    await h.spuffOk(["down", "sp", "--yes"]);

    const bad = await h.spuff(["up", "nowhere", "--location", "us-east-1z"]);
    expect(bad.code, bad.stderr).toBe(1);
    expect(bad.stderr).toContain('error: unknown availability zone "us-east-1z" in us-east-1');
    expect(bad.stderr).toMatch(/hint: pass one of us-east-1a, us-east-1b, .* with --location/);
  });

  it("aws.subnet_id with IPv6: the instance gets an IPv6 address too, the group lives in that VPC, ssh_cidr is honoured", async () => {
    const vpc = (await h.ec2.send(new CreateVpcCommand({ CidrBlock: "10.7.0.0/16" }))).Vpc?.VpcId as string;
    const assoc = await h.ec2.send(new AssociateVpcCidrBlockCommand({ VpcId: vpc, AmazonProvidedIpv6CidrBlock: true }));
    const v6 = assoc.Ipv6CidrBlockAssociation?.Ipv6CidrBlock as string;
    const subnet = (
      await h.ec2.send(new CreateSubnetCommand({ VpcId: vpc, CidrBlock: "10.7.1.0/24", Ipv6CidrBlock: v6.replace(/::\/56$/, "::/64"), AvailabilityZone: "us-east-1b" }))
    ).Subnet?.SubnetId as string;
    h.writeConfig({ aws: { subnet_id: subnet, ssh_cidr: "198.51.100.0/24, 2001:db8::/32" } });
    const up = await h.spuff(["up", "six"]);
    expect(up.code, up.stderr).toBe(0);
    const [i] = await h.live();
    expect(i).toMatchObject({ SubnetId: subnet, VpcId: vpc });
    expect(runParams().get("NetworkInterface.1.Ipv6AddressCount")).toBe("1");
    // The proxy reports the IPv6 address moto does not assign (::1) besides the public IPv4: spuff prefers the IPv4.
    const status = await h.spuff(["status", "six", "--json"]);
    expect(JSON.parse(status.stdout).address).toMatch(/^127\.0\.82\.\d+:22$/);
    const [sg] = (await h.ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: "group-name", Values: ["spuff-testowner0001"] }] }))).SecurityGroups ?? [];
    expect(sg.VpcId).toBe(vpc);
    expect(sg.IpPermissions?.map((r) => [r.FromPort, r.IpRanges?.map((x) => x.CidrIp), r.Ipv6Ranges?.map((x) => x.CidrIpv6)])).toEqual([
      [22, ["198.51.100.0/24"], ["2001:db8::/32"]],
    ]);
    await h.spuffOk(["down", "six", "--yes"]);
    expect(await h.spuffGroups()).toEqual([]);
  });

  it("a changed aws.ssh_cidr is applied to the existing group: new range added, old one revoked", async () => {
    h.writeConfig({ aws: { ssh_cidr: "203.0.113.7/32" } });
    await h.spuffOk(["up", "one"]);
    h.writeConfig({ aws: { ssh_cidr: "203.0.113.9/32" } });
    const up = await h.spuff(["up", "two"]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain("SSH open to 203.0.113.9/32");
    expect(up.stderr).toContain("SSH no longer open to 203.0.113.7/32 (aws.ssh_cidr changed)");
    const groups = await h.spuffGroups();
    expect(groups).toHaveLength(1);
    const [sg] = (await h.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [groups[0].GroupId as string] }))).SecurityGroups ?? [];
    expect(sg.IpPermissions?.flatMap((r) => r.IpRanges?.map((x) => x.CidrIp))).toEqual(["203.0.113.9/32"]);
    // The group is shared by the owner's VMs: it goes with the last one.
    const down1 = await h.spuff(["down", "one", "--yes"]);
    expect(down1.code, down1.stderr).toBe(0);
    expect(await h.spuffGroups()).toHaveLength(1);
    await h.spuffOk(["down", "two", "--yes"]);
    expect(await h.spuffGroups()).toEqual([]);
  });
});
