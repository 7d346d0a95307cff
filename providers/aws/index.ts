import type { Instance, Subnet } from "@aws-sdk/client-ec2";
import { parseDuration } from "../../src/config/load.js";
import { backoff, showEndpoint, sleep } from "../../src/core/api.js";
import { ProviderError, SpuffError, UserError } from "../../src/core/errors.js";
import { LABEL, MANAGED_BY_VALUE } from "../../src/core/labels.js";
import { ownerId } from "../../src/core/owner.js";
import type {
  CreateSpec,
  Image,
  ImageSpec,
  Placement,
  Progress,
  Provider,
  ProviderContext,
  ProviderFactory,
  ProviderInfo,
  SshEndpoint,
  Vm,
  Volume,
  VolumeSpec,
} from "../../src/core/provider.js";
import { Ec2 } from "./client.js";
import { AwsImages } from "./images.js";
import { codeOf, isRetryable } from "./errors.js";
import {
  archOf,
  byName,
  byRequest,
  DEBIAN_ARCH,
  DEBIAN_OWNER,
  DEBIAN_RELEASE,
  debianAmiPattern,
  groupsOf,
  type LaunchPlan,
  LIVE,
  latestImage,
  MANAGED,
  MAX_USER_DATA,
  newest,
  PROVIDER,
  rootDevice,
  runInstancesInput,
  securityGroupName,
  sshCidrs,
  sshPermission,
  sshRanges,
  tagChanges,
  toTags,
  toVm,
} from "./requests.js";
import {
  attachWorkspace,
  checkAttachable,
  createWorkspaceVolume,
  deleteWorkspaceVolume,
  detached,
  listWorkspaceVolumes,
  protectWorkspaces,
  setWorkspaceVolumeTags,
  volumeDevices,
} from "./volumes.js";

/** How often a create whose outcome is unknown (lost answer, 5xx, throttling) is looked up and sent again. */
const RUN_ATTEMPTS = 4;
/** How long `down` keeps retrying DeleteSecurityGroup while EC2 still reports the group in use (DependencyViolation). */
const SG_DELETE_MS = 3 * 60_000;

class AwsProvider implements Provider {
  private ec2Client?: Ec2;
  private readonly plans = new Map<string, Promise<LaunchPlan>>();
  /** The placement `up` validated last: its --size picks the zone of a new workspace volume (createVolume). */
  private validated?: Placement;
  private readonly images = new AwsImages(() => this.ec2());

  constructor(private readonly ctx: ProviderContext) {}

  info(): ProviderInfo {
    const c = this.ctx.config.aws;
    const region = c.region ? ` (${c.region})` : "";
    return {
      name: PROVIDER,
      description: c.endpoint ? `AWS EC2 API at ${showEndpoint(c.endpoint)}${region}` : `AWS EC2${region}`,
      // A poweroff inside the VM terminates it (InstanceInitiatedShutdownBehavior=terminate): billing ends with no AWS
      // credential on the VM. A stopped instance (stopped from the console) no longer bills compute, only its EBS volume.
      // Workspace volumes: EBS, attached after RunInstances with DeleteOnTermination=false (volumes.ts).
      features: { selfTerminatesOnPoweroff: true, billsWhenStopped: false, prices: false, free: false, maxUserDataBytes: MAX_USER_DATA, userDataBinary: "bytes", volumes: true, images: true },
    };
  }

  private ec2(): Ec2 {
    if (this.ec2Client) return this.ec2Client;
    const c = this.ctx.config.aws;
    const env = this.ctx.env;
    let pollMs = 2000;
    if (env.SPUFF_AWS_POLL_INTERVAL) {
      try {
        pollMs = /^\d+ms$/.test(env.SPUFF_AWS_POLL_INTERVAL) ? Number(env.SPUFF_AWS_POLL_INTERVAL.slice(0, -2)) : parseDuration(env.SPUFF_AWS_POLL_INTERVAL);
      } catch {
        pollMs = Number.NaN;
      }
      if (!(pollMs > 0)) throw new UserError(`SPUFF_AWS_POLL_INTERVAL="${env.SPUFF_AWS_POLL_INTERVAL}" is not a duration`, { hint: 'e.g. "50ms" or "2s"' });
    }
    this.ec2Client = new Ec2({ region: c.region, profile: c.profile, endpoint: c.endpoint, pollMs, env });
    return this.ec2Client;
  }

  private vm(i: Instance): Vm {
    return toVm(i);
  }

  /** Resolves (and caches) everything a launch needs, creating nothing: type, architecture, AMI, subnet. */
  private plan(over: Placement, signal?: AbortSignal): Promise<LaunchPlan> {
    const key = `${over.size ?? ""}|${over.location ?? ""}`;
    let p = this.plans.get(key);
    if (!p) {
      p = this.resolvePlan(over, signal);
      this.plans.set(key, p);
      p.catch(() => this.plans.delete(key));
    }
    return p;
  }

  private async resolvePlan(over: Placement, signal?: AbortSignal): Promise<LaunchPlan> {
    const ec2 = this.ec2();
    const c = this.ctx.config.aws;
    const instanceType = over.size ?? c.instance_type;
    const region = await ec2.region();

    const type = await ec2.instanceType(instanceType, signal);
    if (!type) {
      throw new UserError(`unknown EC2 instance type "${instanceType}" in ${region}`, {
        hint: "pass an existing type with --size or aws.instance_type, e.g. t3.small (x86_64) or t4g.small (arm64)",
      });
    }
    const arch = archOf(instanceType, type.ProcessorInfo?.SupportedArchitectures ?? []);
    const image = await this.image(arch, region, signal);
    const root = rootDevice(image);

    const zones = await ec2.zonesOffering(instanceType, signal);
    let subnet: Subnet;
    if (c.subnet_id) {
      const [found] = await ec2.subnets({ SubnetIds: [c.subnet_id] }, signal);
      if (!found) throw new UserError(`the subnet ${c.subnet_id} (aws.subnet_id) does not exist in ${region}`, { hint: "`aws ec2 describe-subnets` lists yours" });
      if (over.location && over.location !== found.AvailabilityZone) {
        throw new UserError(`--location ${over.location} conflicts with aws.subnet_id ${c.subnet_id}, which is in ${found.AvailabilityZone}`, {
          hint: "a subnet lives in one availability zone: drop --location, or set aws.subnet_id to a subnet in that zone",
        });
      }
      subnet = found;
    } else {
      const [vpc] = await ec2.vpcs([{ Name: "is-default", Values: ["true"] }], signal);
      if (!vpc?.VpcId) {
        throw new UserError(`the region ${region} has no default VPC`, {
          hint: [
            "set aws.subnet_id to a public subnet (one whose route table has an internet gateway) in this region",
            "or create a default VPC: `aws ec2 create-default-vpc`",
          ],
        });
      }
      const subnets = (await ec2.subnets({ Filters: [{ Name: "vpc-id", Values: [vpc.VpcId] }, { Name: "default-for-az", Values: ["true"] }] }, signal)).sort((a, b) =>
        (a.AvailabilityZone ?? "").localeCompare(b.AvailabilityZone ?? ""),
      );
      if (over.location) {
        const here = subnets.find((s) => s.AvailabilityZone === over.location);
        if (!here) {
          throw new UserError(`unknown availability zone "${over.location}" in ${region} (or its default VPC has no subnet there)`, {
            hint: subnets.length ? `pass one of ${subnets.map((s) => s.AvailabilityZone).join(", ")} with --location` : "set aws.subnet_id",
          });
        }
        subnet = here;
      } else {
        const usable = subnets.filter((s) => zones.includes(s.AvailabilityZone ?? ""));
        if (!usable.length) {
          throw new UserError(`the default VPC of ${region} has no subnet in a zone that offers ${instanceType}`, {
            hint: zones.length ? `${instanceType} is offered in ${zones.join(", ")}: set aws.subnet_id to a subnet there` : "pick another instance type with --size",
          });
        }
        subnet = usable[0];
      }
    }
    const az = subnet.AvailabilityZone ?? "";
    if (zones.length && !zones.includes(az)) {
      const other = zones.filter((z) => z !== az);
      throw new UserError(`EC2 does not offer ${instanceType} in ${az}`, {
        hint: other.length ? `it is offered in ${other.join(", ")}: e.g. --location ${other[0]}` : "pick another instance type with --size",
      });
    }
    const ipv6 = (subnet.Ipv6CidrBlockAssociationSet ?? []).some((a) => a.Ipv6CidrBlockState?.State === "associated" || a.Ipv6CidrBlockState === undefined);
    return {
      region,
      instanceType,
      arch,
      image: { id: image.ImageId ?? "", name: image.Name ?? image.ImageId ?? "", rootDevice: root.name, rootSizeGiB: root.sizeGiB },
      vpcId: subnet.VpcId ?? "",
      subnetId: subnet.SubnetId ?? "",
      availabilityZone: az,
      ipv6,
      ipv6Only: Boolean(subnet.Ipv6Native),
      spot: c.spot,
    };
  }

  /** aws.ami, or the newest official Debian 13 AMI (owner 136693071363) for the architecture. */
  private async image(arch: "x86_64" | "arm64", region: string, signal?: AbortSignal) {
    const ec2 = this.ec2();
    const ami = this.ctx.config.aws.ami;
    if (ami) {
      const [image] = await ec2.images({ ImageIds: [ami] }, signal, { ami });
      if (!image) throw new UserError(`the AMI ${ami} (aws.ami) does not exist in ${region}`, { hint: `AMIs are per region; or remove aws.ami to use the latest ${DEBIAN_RELEASE} image` });
      if (image.Architecture && image.Architecture !== arch) {
        throw new UserError(`the AMI ${ami} is built for ${image.Architecture}, but the instance type runs ${arch}`, {
          hint: `pick an ${image.Architecture} instance type with --size, or an ${arch} AMI`,
        });
      }
      return image;
    }
    const images = await ec2.images(
      {
        Owners: [DEBIAN_OWNER],
        Filters: [
          { Name: "name", Values: [debianAmiPattern(DEBIAN_ARCH[arch])] },
          { Name: "architecture", Values: [arch] },
          { Name: "state", Values: ["available"] },
        ],
      },
      signal,
    );
    const image = latestImage(images);
    if (!image?.ImageId) {
      throw new ProviderError(`no official ${DEBIAN_RELEASE} ${arch} AMI (owner ${DEBIAN_OWNER}) found in ${region}`, {
        hint: `set aws.ami to a ${DEBIAN_RELEASE} AMI id in this region (https://wiki.debian.org/Cloud/AmazonEC2Image)`,
      });
    }
    return image;
  }

  async validate(placement: Placement, signal?: AbortSignal): Promise<void> {
    sshCidrs(this.ctx.config.aws.ssh_cidr);
    await this.plan(placement, signal);
    this.validated = placement;
  }

  async create(spec: CreateSpec, progress: Progress): Promise<Vm> {
    const { signal } = spec;
    const ec2 = this.ec2();
    const plan = await this.planFor(spec);
    if (spec.volume) await checkAttachable(ec2, spec.volume, signal);
    const owner = spec.labels[LABEL.owner] ?? ownerId(this.ctx.env);
    progress.info(`${plan.instanceType}${plan.spot ? " (spot)" : ""} in ${plan.availabilityZone}, ${plan.image.name} (${plan.image.id})`);

    progress.phase("security group");
    let groupId = await this.ensureSecurityGroup(owner, plan, progress, signal);
    signal?.throwIfAborted();

    progress.phase("launch instance");
    try {
      let vm: Vm | undefined;
      for (let attempt = 0; !vm; attempt++) {
        try {
          vm = this.vm(await ec2.runInstancesOnce(runInstancesInput(spec, plan, groupId), signal));
        } catch (err) {
          if (signal?.aborted) throw signal.reason ?? err;
          if (codeOf(err) === "InvalidGroup.NotFound" && attempt < RUN_ATTEMPTS) {
            // Another spuff (`down` of this owner's last VM) deleted the shared group between our check and the launch.
            groupId = await this.ensureSecurityGroup(owner, plan, progress, signal);
            continue;
          }
          if (!isRetryable(err) || attempt >= RUN_ATTEMPTS - 1) {
            const zones = await ec2.zonesOffering(plan.instanceType).catch(() => []);
            throw ec2.explain(err, "RunInstances", {
              instanceType: plan.instanceType,
              availabilityZone: plan.availabilityZone,
              otherZones: zones.filter((z) => z !== plan.availabilityZone),
              ami: plan.image.id,
              spot: plan.spot,
            });
          }
          progress.info(`RunInstances: ${codeOf(err) || (err as Error).message}; checking whether the instance was created before sending it again`);
          const found = await this.byRequest(spec.requestId, signal);
          if (found) vm = this.vm(found);
          else await sleep(backoff(attempt, ec2.pollMs, 15_000), signal);
        }
      }
      return spec.volume ? await this.withWorkspace(vm, spec.volume, progress, signal) : vm;
    } catch (err) {
      await this.undoCreate(spec, progress);
      throw err;
    }
  }

  /**
   * Where a VM with a workspace volume goes: the volume's availability zone. A zone the user chose elsewhere (--location,
   * aws.subnet_id) is refused here, before anything is created.
   */
  private async planFor(spec: CreateSpec): Promise<LaunchPlan> {
    const { volume, signal } = spec;
    if (!volume) return this.plan(spec, signal);
    const zone = volume.location ?? "";
    const purge = `or \`spuff down ${spec.name} --purge\` deletes the workspace and the work on it; the next \`up\` creates a new one`;
    if (spec.location && spec.location !== zone) {
      throw new UserError(`--location ${spec.location} conflicts with the workspace volume ${volume.id} of ${spec.name}, which is in ${zone}`, {
        hint: [`drop --location: the VM goes where its workspace is (${zone})`, purge],
      });
    }
    const subnet = this.ctx.config.aws.subnet_id;
    if (subnet) {
      const plan = await this.plan({ size: spec.size }, signal);
      if (plan.availabilityZone !== zone) {
        throw new UserError(`aws.subnet_id ${subnet} is in ${plan.availabilityZone}, but the workspace volume ${volume.id} of ${spec.name} is in ${zone}`, {
          hint: [`set aws.subnet_id to a subnet in ${zone} (an EBS volume attaches only to instances in its own zone)`, purge],
        });
      }
      return plan;
    }
    try {
      // Usually the plan `up` validated already lands there (the volume was created for it).
      const validated = await this.plan({ size: spec.size, location: spec.location }, signal);
      return validated.availabilityZone === zone ? validated : await this.plan({ size: spec.size, location: zone }, signal);
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      throw new UserError(`the workspace volume ${volume.id} of ${spec.name} is in ${zone}, and there: ${err.message}`, {
        hint: [...err.hints.filter((h) => !h.includes("--location")), purge],
        cause: err,
      });
    }
  }

  /** After RunInstances: waits until the instance runs, then attaches the workspace (volumes.ts). */
  private async withWorkspace(vm: Vm, volume: Volume, progress: Progress, signal?: AbortSignal): Promise<Vm> {
    progress.phase("attach workspace");
    const running = await this.waitReady(vm, progress, signal);
    await attachWorkspace(this.ec2(), volume, running.id, progress, signal);
    return running;
  }

  private async byRequest(requestId: string, signal?: AbortSignal): Promise<Instance | undefined> {
    return newest(await this.ec2().instances({ Filters: byRequest(requestId) }, signal));
  }

  /**
   * After a failed or interrupted launch: terminate whatever this request started (found by its request id; EC2 may
   * need a moment to list a fresh instance, so look a few times). The security group is left to `reapOrphans`.
   */
  private async undoCreate(spec: CreateSpec, progress: Progress): Promise<void> {
    try {
      for (let i = 0; i < 3; i++) {
        const found = await this.byRequest(spec.requestId);
        if (found?.InstanceId) {
          await this.destroy(this.vm(found), progress);
          return;
        }
        if (i < 2) await sleep(this.ec2().pollMs / 2);
      }
    } catch (err) {
      progress.warn(`cleaning up the failed launch of ${spec.name} failed: ${(err as Error).message}; \`spuff reap\` removes what is left`);
    }
  }

  /**
   * The owner's security group `spuff-<owner>` in the plan's VPC (created when missing, tagged), with TCP 22 open to
   * exactly aws.ssh_cidr: missing ranges are added, ranges no longer configured are revoked.
   */
  private async ensureSecurityGroup(owner: string, plan: LaunchPlan, progress: Progress, signal?: AbortSignal): Promise<string> {
    const ec2 = this.ec2();
    const name = securityGroupName(owner);
    const want = sshCidrs(this.ctx.config.aws.ssh_cidr);
    const find = async () =>
      (await ec2.securityGroups([{ Name: "group-name", Values: [name] }, { Name: "vpc-id", Values: [plan.vpcId] }], signal)).find((g) => g.GroupName === name);
    let group = await find();
    if (!group?.GroupId) {
      try {
        const id = await ec2.createSecurityGroup(
          {
            GroupName: name,
            Description: `spuff: SSH to the spuff VMs of owner ${owner}`,
            VpcId: plan.vpcId,
            tags: toTags({ Name: name, [LABEL.managedBy]: MANAGED_BY_VALUE, [LABEL.owner]: owner }),
          },
          signal,
        );
        progress.info(`created security group ${name} (${id})`);
        group = { GroupId: id, GroupName: name, IpPermissions: [] };
      } catch (err) {
        if (codeOf((err as { cause?: unknown }).cause) !== "InvalidGroup.Duplicate") throw err;
        group = await find();
        if (!group?.GroupId) throw err;
      }
    }
    const groupId = group.GroupId as string;
    const have = sshRanges(group.IpPermissions);
    const add = { v4: want.v4.filter((c) => !have.v4.includes(c)), v6: want.v6.filter((c) => !have.v6.includes(c)) };
    const drop = { v4: have.v4.filter((c) => !want.v4.includes(c)), v6: have.v6.filter((c) => !want.v6.includes(c)) };
    if (add.v4.length || add.v6.length) {
      try {
        await ec2.authorizeIngress(groupId, sshPermission(add.v4, add.v6, "spuff ssh"), signal);
      } catch (err) {
        if (codeOf((err as { cause?: unknown }).cause) !== "InvalidPermission.Duplicate") throw err;
      }
      progress.info(`security group ${name}: SSH open to ${[...add.v4, ...add.v6].join(", ")}`);
    }
    if (drop.v4.length || drop.v6.length) {
      await ec2.revokeIngress(groupId, sshPermission(drop.v4, drop.v6, "spuff ssh"), signal).catch((err) => {
        if (codeOf((err as { cause?: unknown }).cause) !== "InvalidPermission.NotFound") throw err;
      });
      progress.info(`security group ${name}: SSH no longer open to ${[...drop.v4, ...drop.v6].join(", ")} (aws.ssh_cidr changed)`);
    }
    return groupId;
  }

  async list(signal?: AbortSignal): Promise<Vm[]> {
    return (await this.ec2().instances({ Filters: [MANAGED, LIVE] }, signal)).map((i) => this.vm(i));
  }

  async get(name: string, signal?: AbortSignal): Promise<Vm | undefined> {
    const found = newest(await this.ec2().instances({ Filters: byName(name) }, signal));
    return found ? this.vm(found) : undefined;
  }

  /** Waits (SDK waiter) until EC2 reports the instance running, then until it has a public address. */
  async waitReady(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<Vm> {
    const ec2 = this.ec2();
    progress.info(`waiting for ${vm.id} to run`);
    const result = await ec2.wait("running", vm.id, { maxWaitSeconds: 10 * 60, signal });
    if (result.state === "timeout") {
      throw new ProviderError(`instance ${vm.id} (${vm.name}) is not running after 10 minutes`, { hint: "check it in the EC2 console; `spuff down` removes it" });
    }
    if (result.state === "failure") {
      const i = result.instance;
      const reason = i?.StateReason?.Message ?? i?.StateReason?.Code ?? "no reason given";
      throw new ProviderError(`instance ${vm.id} (${vm.name}) ${i?.State?.Name ?? "stopped"} while starting: ${reason}`, {
        hint: /Spot|capacity/i.test(reason)
          ? "EC2 took the capacity back: try again, another zone (--location) or on-demand (aws.spot: false)"
          : "check the instance's system log in the EC2 console",
      });
    }
    for (let i = 0; ; i++) {
      const found = await ec2.instance(vm.id, signal);
      if (!found) throw new ProviderError(`instance ${vm.id} (${vm.name}) disappeared while starting`);
      const ready = this.vm(found);
      if (ready.endpoint) return ready;
      if (i >= 10) {
        throw new ProviderError(`instance ${vm.id} (${vm.name}) runs but has no public address`, {
          hint: "use a public subnet (aws.subnet_id) whose instances get a public IPv4 or IPv6 address",
        });
      }
      await sleep(backoff(i, ec2.pollMs / 2, 5000), signal);
    }
  }

  sshEndpoint(vm: Vm): SshEndpoint {
    if (!vm.endpoint) throw new ProviderError(`${vm.name} has no public address`, { hint: "wait until it runs: `spuff ls`" });
    return vm.endpoint;
  }

  /**
   * Terminates the instance and waits until it is gone, then deletes the owner's security group when no live
   * instance uses it any more. Already terminated (or unknown) = success. Workspace volumes are kept: their
   * DeleteOnTermination is made sure to be false first, and spuff waits until EC2 has detached them.
   */
  async destroy(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<void> {
    const ec2 = this.ec2();
    const instance = vm.id.startsWith("i-") ? await ec2.instance(vm.id, signal) : undefined;
    const groups = instance ? groupsOf(instance) : [];
    let workspaces: string[] = [];
    if (instance && instance.State?.Name !== "terminated") {
      workspaces = await protectWorkspaces(ec2, instance, signal);
      await ec2.terminate(vm.id, signal);
      progress.info(`terminating ${vm.id}`);
      const result = await ec2.wait("terminated", vm.id, { maxWaitSeconds: 10 * 60, signal });
      if (result.state !== "success") {
        throw new ProviderError(`instance ${vm.id} (${vm.name}) did not terminate within 10 minutes`, { hint: "check it in the EC2 console; `spuff reap` tries again" });
      }
      await detached(ec2, workspaces, progress, signal);
    }
    const managed = groups.length
      ? (await ec2.securityGroups([MANAGED, { Name: "group-id", Values: groups }], signal)).filter((g) => g.GroupId && groups.includes(g.GroupId))
      : [];
    for (const g of managed) await this.deleteGroupWhenUnused(g.GroupId as string, g.GroupName ?? "", progress, signal);
  }

  /** Groups used by a live instance (spuff's or not). */
  private async usedGroups(signal?: AbortSignal): Promise<Set<string>> {
    const live = await this.ec2().instances({ Filters: [LIVE] }, signal);
    return new Set(live.flatMap(groupsOf));
  }

  private async deleteGroupWhenUnused(id: string, name: string, progress: Progress, signal?: AbortSignal): Promise<void> {
    const ec2 = this.ec2();
    if ((await this.usedGroups(signal)).has(id)) return;
    const deadline = Date.now() + SG_DELETE_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        await ec2.deleteSecurityGroup(id, signal);
        progress.info(`deleted security group ${name} (${id})`);
        return;
      } catch (err) {
        const code = codeOf((err as { cause?: unknown }).cause);
        if (code === "InvalidGroup.NotFound") return;
        if (code !== "DependencyViolation") throw err;
        // EC2 releases a terminated instance's network interface a little later; another VM may also have started.
        if (Date.now() > deadline || (await this.usedGroups(signal)).has(id)) {
          if (Date.now() > deadline) progress.warn(`security group ${name} (${id}) is still in use; \`spuff reap\` deletes it later`);
          return;
        }
        await sleep(backoff(attempt, Math.min(this.ec2().pollMs, 1000), 15_000), signal);
      }
    }
  }

  /** Replaces the instance's tags (`spuff extend`): changed and new ones with CreateTags, removed ones with DeleteTags. */
  async setLabels(vm: Vm, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    const ec2 = this.ec2();
    const { set, remove } = tagChanges((await ec2.instance(vm.id, signal))?.Tags, labels);
    await ec2.createTags(vm.id, set, signal);
    await ec2.deleteTags(vm.id, remove, signal);
  }

  async listVolumes(signal?: AbortSignal): Promise<Volume[]> {
    return listWorkspaceVolumes(this.ec2(), signal);
  }

  /**
   * In spec.location, else the zone spuff launches the instance type in (aws.subnet_id's, else the first default-VPC
   * zone that offers the type, --size's if `up` validated one).
   */
  async createVolume(spec: VolumeSpec, progress: Progress): Promise<Volume> {
    const plan = await this.plan({ size: this.validated?.size, location: spec.location }, spec.signal);
    return createWorkspaceVolume(this.ec2(), spec, plan.availabilityZone, progress);
  }

  async deleteVolume(volume: Volume, progress: Progress, signal?: AbortSignal): Promise<void> {
    await deleteWorkspaceVolume(this.ec2(), volume, progress, signal);
  }

  async setVolumeLabels(volume: Volume, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    await setWorkspaceVolumeTags(this.ec2(), volume, labels, signal);
  }

  volumeDevices(volume: Volume): string[] {
    return volumeDevices(volume.id);
  }

  /**
   * Security groups tagged managed-by=spuff that no live instance uses. Workspace volumes outlive their instances on
   * purpose and are never touched here (core's reap deletes them after workspace.keep); spuff creates nothing else that
   * can outlive an instance (the per-VM key goes in user-data, the root volume and network interface go with it).
   * While an `up` of this owner runs here (`busy`), the owner's group is left alone: that `up` may be about to use it.
   */
  // ---- baked images (providers/aws/images.ts) ----

  /** The region and the AMI the plan boots (aws.ami, or the newest official Debian AMI): a newer base makes bakes stale. */
  async imageBase(over: Placement, signal?: AbortSignal): Promise<string> {
    const plan = await this.plan(over, signal);
    return `${plan.region}:${plan.image.id}`;
  }

  listImages(signal?: AbortSignal): Promise<Image[]> {
    return this.images.list(signal);
  }

  createImage(vm: Vm, spec: ImageSpec, progress: Progress): Promise<Image> {
    return this.images.create(vm.id, spec, progress);
  }

  async deleteImage(image: Image, progress: Progress, signal?: AbortSignal): Promise<void> {
    await this.images.delete(image, signal);
    progress.info(`deleted AMI ${image.id} and its snapshots`);
  }

  setImageLabels(image: Image, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    return this.images.setLabels(image, labels, signal);
  }

  async reapOrphans(dryRun: boolean, progress: Progress, busy: ReadonlySet<string> = new Set()): Promise<string[]> {
    const ec2 = this.ec2();
    const me = ownerId(this.ctx.env);
    const [groups, used] = await Promise.all([ec2.securityGroups([MANAGED]), this.usedGroups()]);
    const removed: string[] = [];
    for (const g of groups) {
      if (!g.GroupId || used.has(g.GroupId)) continue;
      const owner = (g.Tags ?? []).find((t) => t.Key === LABEL.owner)?.Value;
      if (busy.size && owner === me) continue;
      const what = `security group ${g.GroupName} (${g.GroupId})`;
      if (dryRun) {
        removed.push(what);
        continue;
      }
      try {
        await ec2.deleteSecurityGroup(g.GroupId);
        removed.push(what);
        progress.info(`deleted orphaned ${what}`);
      } catch (err) {
        const code = err instanceof SpuffError ? codeOf(err.cause) : codeOf(err);
        if (code === "InvalidGroup.NotFound") continue;
        if (code === "DependencyViolation") {
          progress.info(`${what} is still in use by a network interface; trying again next time`);
          continue;
        }
        throw err;
      }
    }
    return removed;
  }
}

export const createProvider: ProviderFactory = (ctx) => new AwsProvider(ctx);
