import type { Image, Instance, InstanceStateName, IpPermission, RunInstancesCommandInput, Tag } from "@aws-sdk/client-ec2";
import { ProviderError, UserError } from "../../src/core/errors.js";
import { LABEL, MANAGED_BY_VALUE } from "../../src/core/labels.js";
import type { CreateSpec, Vm, VmStatus } from "../../src/core/provider.js";

/**
 * Pure request building and response reading for the AWS provider: what spuff sends to EC2 (tags, filters, the
 * RunInstances input) and how it reads instances back (status, address, labels). No I/O here.
 */

export const PROVIDER = "aws";
/** EC2 accepts at most 16 KiB of user-data before its own base64 encoding. */
export const MAX_USER_DATA = 16 * 1024;
export const SSH_PORT = 22;
/** The AWS account that publishes the official Debian AMIs (https://wiki.debian.org/Cloud/AmazonEC2Image). */
export const DEBIAN_OWNER = "136693071363";
/** Instance states that still hold (or will hold) resources; `terminated` instances are gone. */
export const LIVE_STATES: InstanceStateName[] = ["pending", "running", "stopping", "stopped", "shutting-down"];

export type Filter = { Name: string; Values: string[] };

export const MANAGED: Filter = { Name: `tag:${LABEL.managedBy}`, Values: [MANAGED_BY_VALUE] };
export const LIVE: Filter = { Name: "instance-state-name", Values: LIVE_STATES };
export const byName = (name: string): Filter[] => [MANAGED, { Name: `tag:${LABEL.name}`, Values: [name] }, LIVE];
export const byRequest = (requestId: string): Filter[] => [MANAGED, { Name: `tag:${LABEL.requestId}`, Values: [requestId] }, LIVE];

/** The per-owner security group's name (unique per VPC). */
export function securityGroupName(owner: string): string {
  return `spuff-${owner}`;
}

export function toTags(labels: Record<string, string>): Tag[] {
  return Object.entries(labels).map(([Key, Value]) => ({ Key, Value }));
}

export function fromTags(tags: Tag[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of tags ?? []) if (t.Key !== undefined) out[t.Key] = t.Value ?? "";
  return out;
}

/** What replacing a resource's tags with `labels` takes: tags to set (new or changed) and keys to delete; `aws:` tags are EC2's own. */
export function tagChanges(current: Tag[] | undefined, labels: Record<string, string>): { set: Tag[]; remove: string[] } {
  const have = fromTags(current);
  const writable = (k: string) => !k.startsWith("aws:");
  return {
    set: toTags(Object.fromEntries(Object.entries(labels).filter(([k, v]) => writable(k) && have[k] !== v))),
    remove: Object.keys(have).filter((k) => writable(k) && !(k in labels)),
  };
}

/** The Debian release spuff boots by default (aws.ami picks another image, e.g. a Debian 12 or Ubuntu 24.04 AMI). */
export const DEBIAN_RELEASE = "Debian 13";
/** Debian's AMI names for the default release: debian-13-amd64-YYYYMMDD-N (backports builds have another prefix). */
export const debianAmiPattern = (arch: "amd64" | "arm64") => `debian-13-${arch}-*`;

/** EC2's architecture name → the one in Debian's AMI names. */
export const DEBIAN_ARCH = { x86_64: "amd64", arm64: "arm64" } as const;
export type Arch = keyof typeof DEBIAN_ARCH;

/** The architecture spuff boots on an instance type, from DescribeInstanceTypes' SupportedArchitectures. */
export function archOf(instanceType: string, supported: string[]): Arch {
  if (supported.includes("arm64")) return "arm64";
  if (supported.includes("x86_64")) return "x86_64";
  throw new UserError(`instance type ${instanceType} runs ${supported.join("/") || "an unknown architecture"}; ${DEBIAN_RELEASE} AMIs exist for x86_64 and arm64`, {
    hint: "pick another type with --size or aws.instance_type, e.g. t3.small (x86_64) or t4g.small (arm64)",
  });
}

/** The newest of Debian's images (by creation date, then name: debian-13-amd64-YYYYMMDD-N sorts by date). */
export function latestImage(images: Image[]): Image | undefined {
  return [...images]
    .filter((i) => i.State === undefined || i.State === "available")
    .sort((a, b) => (b.CreationDate ?? "").localeCompare(a.CreationDate ?? "") || (b.Name ?? "").localeCompare(a.Name ?? ""))[0];
}

/** Root device name and size of an AMI, for a BlockDeviceMapping that sets DeleteOnTermination. */
export function rootDevice(image: Image): { name: string; sizeGiB: number } {
  const name = image.RootDeviceName;
  const mapping = image.BlockDeviceMappings?.find((m) => m.DeviceName === name);
  if (!name || image.RootDeviceType !== "ebs" || !mapping?.Ebs?.VolumeSize) {
    throw new UserError(`AMI ${image.ImageId} (${image.Name ?? "no name"}) has no EBS root volume spuff can manage`, {
      hint: `use an EBS-backed AMI, or remove aws.ami to use the latest official ${DEBIAN_RELEASE} image`,
    });
  }
  return { name, sizeGiB: mapping.Ebs.VolumeSize };
}

/** `aws.ssh_cidr`: one CIDR or several separated by commas. The default 0.0.0.0/0 opens IPv6 (::/0) too. */
export function sshCidrs(setting: string): { v4: string[]; v6: string[] } {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const raw of setting.split(",").map((s) => s.trim()).filter(Boolean)) {
    if (/^(\d{1,3}\.){3}\d{1,3}\/(\d|[12]\d|3[0-2])$/.test(raw) && raw.split("/")[0].split(".").every((o) => Number(o) <= 255)) v4.push(raw);
    else if (/^[0-9a-fA-F:]+\/(\d|[1-9]\d|1[01]\d|12[0-8])$/.test(raw) && raw.includes(":")) v6.push(raw.toLowerCase());
    else throw new UserError(`aws.ssh_cidr: "${raw}" is not an IPv4 or IPv6 CIDR`, { hint: 'e.g. "203.0.113.7/32", "2001:db8::/48" or the default "0.0.0.0/0"' });
  }
  if (!v4.length && !v6.length) throw new UserError("aws.ssh_cidr is empty", { hint: 'e.g. "203.0.113.7/32" or the default "0.0.0.0/0"' });
  if (v4.includes("0.0.0.0/0") && !v6.includes("::/0")) v6.push("::/0");
  return { v4, v6 };
}

/** The TCP 22 ranges a security group's rules open, as IPv4 and IPv6 CIDR lists. */
export function sshRanges(perms: IpPermission[] | undefined): { v4: string[]; v6: string[] } {
  const ssh = (perms ?? []).filter((p) => p.IpProtocol === "tcp" && p.FromPort === SSH_PORT && p.ToPort === SSH_PORT);
  return {
    v4: ssh.flatMap((p) => (p.IpRanges ?? []).map((r) => r.CidrIp ?? "")).filter(Boolean),
    v6: ssh.flatMap((p) => (p.Ipv6Ranges ?? []).map((r) => (r.CidrIpv6 ?? "").toLowerCase())).filter(Boolean),
  };
}

export function sshPermission(v4: string[], v6: string[], description: string): IpPermission {
  return {
    IpProtocol: "tcp",
    FromPort: SSH_PORT,
    ToPort: SSH_PORT,
    ...(v4.length ? { IpRanges: v4.map((CidrIp) => ({ CidrIp, Description: description })) } : {}),
    ...(v6.length ? { Ipv6Ranges: v6.map((CidrIpv6) => ({ CidrIpv6, Description: description })) } : {}),
  };
}

/** What a launch needs, resolved (and validated) before anything is created. */
export interface LaunchPlan {
  region: string;
  instanceType: string;
  arch: Arch;
  image: { id: string; name: string; rootDevice: string; rootSizeGiB: number };
  vpcId: string;
  subnetId: string;
  availabilityZone: string;
  /** The subnet has an IPv6 CIDR: the instance gets one IPv6 address. */
  ipv6: boolean;
  /** IPv6-only subnet: no public IPv4 can be associated. */
  ipv6Only: boolean;
  spot: boolean;
}

/**
 * EC2 user-data is base64 on the wire; the limit applies to the bytes before encoding. Text goes as UTF-8; gzip bytes
 * (spuff compresses user-data over the limit) go as they are: cloud-init detects gzip by its magic bytes.
 */
export function userDataBase64(userData: string | Buffer): string {
  const bytes = typeof userData === "string" ? Buffer.from(userData, "utf8") : userData;
  if (bytes.length > MAX_USER_DATA) {
    throw new UserError(`the VM's user-data is ${bytes.length} bytes, over EC2's limit of ${MAX_USER_DATA}`, {
      hint: ["shorten `setup`, `packages` or `git_hosts` in the config", "put long setup steps in a script in your dotfiles instead"],
    });
  }
  return bytes.toString("base64");
}

/**
 * RunInstances: one instance from the plan, the per-VM key only in user-data (cloud-init installs it; no EC2 key pair),
 * labels as tags on the instance, its root volume and its network interface, a poweroff inside the VM terminates it,
 * IMDSv2 only, no instance profile, the root volume deleted with the instance, and `ClientToken` = the request id so a
 * retried call can never start a second instance.
 */
export function runInstancesInput(spec: Pick<CreateSpec, "name" | "labels" | "userData" | "requestId" | "image">, plan: LaunchPlan, securityGroupId: string): RunInstancesCommandInput {
  const tags = toTags({ Name: spec.name, ...spec.labels });
  return {
    // A baked AMI of this base (docs/images.md): same root device, same size.
    ImageId: spec.image?.id ?? plan.image.id,
    InstanceType: plan.instanceType as RunInstancesCommandInput["InstanceType"],
    MinCount: 1,
    MaxCount: 1,
    ClientToken: spec.requestId,
    UserData: userDataBase64(spec.userData),
    InstanceInitiatedShutdownBehavior: "terminate",
    MetadataOptions: { HttpTokens: "required", HttpEndpoint: "enabled", HttpPutResponseHopLimit: 1, InstanceMetadataTags: "disabled" },
    NetworkInterfaces: [
      {
        DeviceIndex: 0,
        SubnetId: plan.subnetId,
        Groups: [securityGroupId],
        AssociatePublicIpAddress: !plan.ipv6Only,
        DeleteOnTermination: true,
        ...(plan.ipv6 ? { Ipv6AddressCount: 1 } : {}),
      },
    ],
    BlockDeviceMappings: [{ DeviceName: plan.image.rootDevice, Ebs: { DeleteOnTermination: true, VolumeType: "gp3", VolumeSize: plan.image.rootSizeGiB } }],
    TagSpecifications: [
      { ResourceType: "instance", Tags: tags },
      { ResourceType: "volume", Tags: tags },
      { ResourceType: "network-interface", Tags: tags },
    ],
    ...(plan.spot
      ? { InstanceMarketOptions: { MarketType: "spot", SpotOptions: { SpotInstanceType: "one-time", InstanceInterruptionBehavior: "terminate" } } }
      : {}),
  };
}

const STATUS: Record<string, VmStatus> = {
  pending: "creating",
  running: "running",
  stopping: "stopping",
  stopped: "stopped",
  "shutting-down": "deleting",
  terminated: "gone",
};

export function statusOf(state: string | undefined): VmStatus {
  return (state && STATUS[state]) || "unknown";
}

/** The public address spuff connects to: IPv4, else IPv6, else the public DNS name. */
export function publicAddress(i: Instance): string | undefined {
  const v6 = i.Ipv6Address ?? i.NetworkInterfaces?.flatMap((n) => n.Ipv6Addresses ?? []).find((a) => a.Ipv6Address)?.Ipv6Address;
  return i.PublicIpAddress || v6 || i.PublicDnsName || undefined;
}

/** Security groups an instance uses, from the instance and its network interfaces. */
export function groupsOf(i: Instance): string[] {
  const ids = [...(i.SecurityGroups ?? []), ...(i.NetworkInterfaces ?? []).flatMap((n) => n.Groups ?? [])].map((g) => g.GroupId ?? "");
  return [...new Set(ids.filter(Boolean))];
}

export function toVm(i: Instance): Vm {
  if (!i.InstanceId) throw new ProviderError("EC2 answered with an instance without an id");
  const labels = fromTags(i.Tags);
  const address = publicAddress(i);
  const live = i.State?.Name !== "terminated" && i.State?.Name !== "shutting-down";
  return {
    id: i.InstanceId,
    name: labels[LABEL.name] ?? labels.Name ?? i.InstanceId,
    provider: PROVIDER,
    status: statusOf(i.State?.Name),
    endpoint: live && address ? { host: address, port: SSH_PORT } : undefined,
    location: i.Placement?.AvailabilityZone,
    size: i.InstanceType,
    labels,
    createdAt: i.LaunchTime ? new Date(i.LaunchTime).toISOString() : undefined,
    pricePerHour: null,
  };
}

/** Newest first: two live instances with one name only happen when someone else made one; take the latest. */
export function newest(instances: Instance[]): Instance | undefined {
  return [...instances].sort((a, b) => new Date(b.LaunchTime ?? 0).getTime() - new Date(a.LaunchTime ?? 0).getTime())[0];
}
