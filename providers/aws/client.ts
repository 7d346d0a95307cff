import {
  AttachVolumeCommand,
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  CreateTagsCommand,
  CreateVolumeCommand,
  type CreateVolumeCommandInput,
  DeleteSecurityGroupCommand,
  DeleteTagsCommand,
  DeleteVolumeCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypeOfferingsCommand,
  DescribeInstanceTypesCommand,
  DescribeSecurityGroupsCommand,
  DescribeSubnetsCommand,
  DescribeVolumesCommand,
  DescribeVpcsCommand,
  EC2Client,
  type EC2ClientConfig,
  type Image,
  type Instance,
  type InstanceTypeInfo,
  type IpPermission,
  ModifyInstanceAttributeCommand,
  RevokeSecurityGroupIngressCommand,
  RunInstancesCommand,
  type RunInstancesCommandInput,
  type SecurityGroup,
  type Subnet,
  type Tag,
  TerminateInstancesCommand,
  type Volume as EbsVolume,
  type Vpc,
  waitUntilInstanceRunning,
  waitUntilInstanceTerminated,
} from "@aws-sdk/client-ec2";
import { showEndpoint } from "../../src/core/api.js";
import { ProviderError } from "../../src/core/errors.js";
import { codeOf, type ErrorContext, explain } from "./errors.js";
import type { Filter } from "./requests.js";

/**
 * The thin EC2 client: the only code in spuff that calls AWS. It configures the SDK (region, profile, endpoint and the
 * SDK's default credential chain), passes Ctrl-C through as an AbortSignal, and maps every failure to a spuff error
 * with a hint (errors.ts). RunInstances goes through a second SDK client that never retries by itself: the provider
 * decides (after looking the instance up by its request id) whether sending it again is safe.
 */

export interface Ec2Settings {
  region?: string;
  profile?: string;
  endpoint?: string;
  /** Base delay of waiters and backoffs (SPUFF_AWS_POLL_INTERVAL; default 2 s). */
  pollMs: number;
  env: NodeJS.ProcessEnv;
}

/** Pages a Describe call reads at most (DescribeInstances pages hold up to 1000 instances). */
const MAX_PAGES = 1000;

type Sendable = { send(command: unknown, options?: { abortSignal?: AbortSignal }): Promise<unknown> };

export class Ec2 {
  private readonly client: EC2Client;
  private readonly noRetry: EC2Client;
  readonly pollMs: number;
  readonly context: ErrorContext;

  constructor(settings: Ec2Settings) {
    // The SDK warns on every start under Node 20 about its future Node 22 requirement; spuff pins the SDK version, so
    // the warning tells a spuff user nothing they can act on.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
    const { env } = settings;
    // Static keys from spuff's environment (the same variables the SDK reads); otherwise the SDK's default chain
    // (shared config and credentials files, `profile`, SSO, credential_process, web identity, container and instance roles).
    const staticKeys =
      !settings.profile && env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY
        ? { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) }
        : undefined;
    const config: EC2ClientConfig = {
      ...(settings.region ? { region: settings.region } : {}),
      ...(settings.profile ? { profile: settings.profile } : {}),
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      ...(staticKeys ? { credentials: staticKeys } : {}),
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 60_000 },
    };
    this.client = new EC2Client({ ...config, maxAttempts: 4 });
    this.noRetry = new EC2Client({ ...config, maxAttempts: 1 });
    this.pollMs = settings.pollMs;
    this.context = {
      region: settings.region,
      profile: settings.profile,
      endpoint: settings.endpoint ? showEndpoint(settings.endpoint) : undefined,
    };
  }

  /** The region the SDK resolved (config, AWS_REGION, or the profile's region). */
  async region(): Promise<string> {
    try {
      return await this.client.config.region();
    } catch (err) {
      throw explain(err, "DescribeRegions", this.context);
    }
  }

  private async call<T>(action: string, run: (signal?: AbortSignal) => Promise<T>, signal?: AbortSignal, ctx: ErrorContext = {}): Promise<T> {
    try {
      return await run(signal);
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err;
      throw explain(err, action, { ...this.context, ...ctx });
    }
  }

  private send<T>(client: EC2Client, command: unknown, signal?: AbortSignal): Promise<T> {
    return (client as unknown as Sendable).send(command, { abortSignal: signal }) as Promise<T>;
  }

  /**
   * Every page of a Describe call, following NextToken. It always ends: a token EC2 already sent (the same pages again)
   * or more than MAX_PAGES pages is an error, never a loop and never a partial list passed off as whole.
   */
  private async pages<P extends { NextToken?: string }>(action: string, page: (token: string | undefined) => Promise<P>, each: (p: P) => void): Promise<void> {
    const seen = new Set<string>();
    let token: string | undefined;
    for (let n = 1; ; n++) {
      const out = await page(token);
      each(out);
      token = out.NextToken;
      if (!token) return;
      const broken = seen.has(token)
        ? `EC2 answered page ${n} with a NextToken it had sent before: the pages would repeat for ever`
        : n >= MAX_PAGES
          ? `EC2's answer goes on past ${MAX_PAGES} pages`
          : undefined;
      if (broken) {
        throw new ProviderError(`${action}: ${broken}`, {
          hint: `the answers do not come from a working EC2 endpoint: check ${this.context.endpoint ? `the endpoint ${this.context.endpoint}` : "AWS_ENDPOINT_URL_EC2"} and any proxy in between, or https://health.aws.amazon.com`,
        });
      }
      seen.add(token);
    }
  }

  async instanceType(name: string, signal?: AbortSignal): Promise<InstanceTypeInfo | undefined> {
    const out = await this.call(
      "DescribeInstanceTypes",
      (s) => this.send<{ InstanceTypes?: InstanceTypeInfo[] }>(this.client, new DescribeInstanceTypesCommand({ InstanceTypes: [name as never] }), s),
      signal,
      { instanceType: name },
    );
    return out.InstanceTypes?.[0];
  }

  /** Availability zones of the region that offer `instanceType`. */
  async zonesOffering(instanceType: string, signal?: AbortSignal): Promise<string[]> {
    const zones: string[] = [];
    await this.pages(
      "DescribeInstanceTypeOfferings",
      (NextToken) =>
        this.call(
          "DescribeInstanceTypeOfferings",
          (s) =>
            this.send<{ InstanceTypeOfferings?: { Location?: string }[]; NextToken?: string }>(
              this.client,
              new DescribeInstanceTypeOfferingsCommand({ LocationType: "availability-zone", Filters: [{ Name: "instance-type", Values: [instanceType] }], NextToken }),
              s,
            ),
          signal,
        ),
      (out) => zones.push(...(out.InstanceTypeOfferings ?? []).map((o) => o.Location ?? "").filter(Boolean)),
    );
    return [...new Set(zones)].sort();
  }

  async images(input: { ImageIds?: string[]; Owners?: string[]; Filters?: Filter[] }, signal?: AbortSignal, ctx: ErrorContext = {}): Promise<Image[]> {
    const out = await this.call("DescribeImages", (s) => this.send<{ Images?: Image[] }>(this.client, new DescribeImagesCommand(input), s), signal, ctx);
    return out.Images ?? [];
  }

  async vpcs(filters: Filter[], signal?: AbortSignal): Promise<Vpc[]> {
    const out = await this.call("DescribeVpcs", (s) => this.send<{ Vpcs?: Vpc[] }>(this.client, new DescribeVpcsCommand({ Filters: filters }), s), signal);
    return out.Vpcs ?? [];
  }

  async subnets(input: { SubnetIds?: string[]; Filters?: Filter[] }, signal?: AbortSignal): Promise<Subnet[]> {
    const out = await this.call("DescribeSubnets", (s) => this.send<{ Subnets?: Subnet[] }>(this.client, new DescribeSubnetsCommand(input), s), signal);
    return out.Subnets ?? [];
  }

  async securityGroups(filters: Filter[], signal?: AbortSignal): Promise<SecurityGroup[]> {
    const groups: SecurityGroup[] = [];
    await this.pages(
      "DescribeSecurityGroups",
      (NextToken) =>
        this.call(
          "DescribeSecurityGroups",
          (s) => this.send<{ SecurityGroups?: SecurityGroup[]; NextToken?: string }>(this.client, new DescribeSecurityGroupsCommand({ Filters: filters, NextToken }), s),
          signal,
        ),
      (out) => groups.push(...(out.SecurityGroups ?? [])),
    );
    return groups;
  }

  async createSecurityGroup(input: { GroupName: string; Description: string; VpcId: string; tags: Tag[] }, signal?: AbortSignal): Promise<string> {
    const out = await this.call(
      "CreateSecurityGroup",
      (s) =>
        this.send<{ GroupId?: string }>(
          this.client,
          new CreateSecurityGroupCommand({
            GroupName: input.GroupName,
            Description: input.Description,
            VpcId: input.VpcId,
            TagSpecifications: [{ ResourceType: "security-group", Tags: input.tags }],
          }),
          s,
        ),
      signal,
    );
    if (!out.GroupId) throw new ProviderError("EC2 created a security group but answered without its id");
    return out.GroupId;
  }

  async authorizeIngress(groupId: string, permission: IpPermission, signal?: AbortSignal): Promise<void> {
    await this.call(
      "AuthorizeSecurityGroupIngress",
      (s) => this.send(this.client, new AuthorizeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: [permission] }), s),
      signal,
    );
  }

  async revokeIngress(groupId: string, permission: IpPermission, signal?: AbortSignal): Promise<void> {
    await this.call(
      "RevokeSecurityGroupIngress",
      (s) => this.send(this.client, new RevokeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: [permission] }), s),
      signal,
    );
  }

  async deleteSecurityGroup(groupId: string, signal?: AbortSignal): Promise<void> {
    await this.call("DeleteSecurityGroup", (s) => this.send(this.client, new DeleteSecurityGroupCommand({ GroupId: groupId }), s), signal);
  }

  /** All instances matching `filters`, every page. */
  async instances(input: { InstanceIds?: string[]; Filters?: Filter[] }, signal?: AbortSignal): Promise<Instance[]> {
    const out: Instance[] = [];
    await this.pages(
      "DescribeInstances",
      (NextToken) =>
        this.call(
          "DescribeInstances",
          (s) =>
            this.send<{ Reservations?: { Instances?: Instance[] }[]; NextToken?: string }>(
              this.client,
              new DescribeInstancesCommand({ ...input, ...(input.InstanceIds ? {} : { MaxResults: 1000 }), NextToken }),
              s,
            ),
          signal,
        ),
      (page) => {
        for (const r of page.Reservations ?? []) out.push(...(r.Instances ?? []));
      },
    );
    return out;
  }

  /** One instance by id; undefined when EC2 does not know it (never created, or terminated long ago). */
  async instance(id: string, signal?: AbortSignal): Promise<Instance | undefined> {
    try {
      return (await this.instances({ InstanceIds: [id] }, signal))[0];
    } catch (err) {
      if (codeOf((err as { cause?: unknown }).cause) === "InvalidInstanceID.NotFound") return undefined;
      throw err;
    }
  }

  /** RunInstances exactly once (no SDK retries); the raw SDK error is thrown so the caller can tell whether it may retry. */
  async runInstancesOnce(input: RunInstancesCommandInput, signal?: AbortSignal): Promise<Instance> {
    const out = await this.send<{ Instances?: Instance[] }>(this.noRetry, new RunInstancesCommand(input), signal);
    const instance = out.Instances?.[0];
    if (!instance?.InstanceId) throw new ProviderError("EC2 accepted RunInstances but answered without an instance");
    return instance;
  }

  /** Any EC2 command (providers/aws/images.ts), errors explained; `once`: without SDK retries (creates). */
  command<T>(action: string, command: unknown, signal?: AbortSignal, once = false): Promise<T> {
    return this.call(action, (s) => this.send<T>(once ? this.noRetry : this.client, command, s), signal);
  }

  explain(err: unknown, action: string, ctx: ErrorContext = {}) {
    return explain(err, action, { ...this.context, ...ctx });
  }

  async terminate(id: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.call("TerminateInstances", (s) => this.send(this.client, new TerminateInstancesCommand({ InstanceIds: [id] }), s), signal);
    } catch (err) {
      if (codeOf((err as { cause?: unknown }).cause) === "InvalidInstanceID.NotFound") return;
      throw err;
    }
  }

  async createTags(id: string, tags: Tag[], signal?: AbortSignal): Promise<void> {
    if (!tags.length) return;
    await this.call("CreateTags", (s) => this.send(this.client, new CreateTagsCommand({ Resources: [id], Tags: tags }), s), signal);
  }

  async deleteTags(id: string, keys: string[], signal?: AbortSignal): Promise<void> {
    if (!keys.length) return;
    await this.call("DeleteTags", (s) => this.send(this.client, new DeleteTagsCommand({ Resources: [id], Tags: keys.map((Key) => ({ Key })) }), s), signal);
  }

  // Workspace volumes (providers/aws/volumes.ts).

  /** All volumes matching `input`, every page. */
  async volumes(input: { VolumeIds?: string[]; Filters?: Filter[] }, signal?: AbortSignal): Promise<EbsVolume[]> {
    const out: EbsVolume[] = [];
    await this.pages(
      "DescribeVolumes",
      (NextToken) =>
        this.call(
          "DescribeVolumes",
          (s) =>
            this.send<{ Volumes?: EbsVolume[]; NextToken?: string }>(
              this.client,
              new DescribeVolumesCommand({ ...input, ...(input.VolumeIds ? {} : { MaxResults: 500 }), NextToken }),
              s,
            ),
          signal,
        ),
      (page) => out.push(...(page.Volumes ?? [])),
    );
    return out;
  }

  /** One volume by id; undefined when EC2 does not know it (deleted). */
  async volume(id: string, signal?: AbortSignal): Promise<EbsVolume | undefined> {
    try {
      return (await this.volumes({ VolumeIds: [id] }, signal))[0];
    } catch (err) {
      if (codeOf((err as { cause?: unknown }).cause) === "InvalidVolume.NotFound") return undefined;
      throw err;
    }
  }

  /** CreateVolume exactly once (no SDK retries); the raw SDK error is thrown so the caller can tell whether it may retry. */
  async createVolumeOnce(input: CreateVolumeCommandInput, signal?: AbortSignal): Promise<EbsVolume> {
    const out = await this.send<EbsVolume>(this.noRetry, new CreateVolumeCommand(input), signal);
    if (!out.VolumeId) throw new ProviderError("EC2 accepted CreateVolume but answered without a volume id");
    return out;
  }

  async attachVolume(volumeId: string, instanceId: string, device: string, signal?: AbortSignal): Promise<void> {
    await this.call("AttachVolume", (s) => this.send(this.client, new AttachVolumeCommand({ VolumeId: volumeId, InstanceId: instanceId, Device: device }), s), signal);
  }

  /** Sets DeleteOnTermination=false on the instance's attachment `device`: terminating the instance then detaches the volume. */
  async keepOnTermination(instanceId: string, device: string, signal?: AbortSignal): Promise<void> {
    await this.call(
      "ModifyInstanceAttribute",
      (s) =>
        this.send(
          this.client,
          new ModifyInstanceAttributeCommand({ InstanceId: instanceId, BlockDeviceMappings: [{ DeviceName: device, Ebs: { DeleteOnTermination: false } }] }),
          s,
        ),
      signal,
    );
  }

  /** Deletes a volume. Already gone = success; the rest (VolumeInUse...) is thrown, explained. */
  async deleteVolume(id: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.call("DeleteVolume", (s) => this.send(this.client, new DeleteVolumeCommand({ VolumeId: id }), s), signal);
    } catch (err) {
      if (codeOf((err as { cause?: unknown }).cause) === "InvalidVolume.NotFound") return;
      throw err;
    }
  }

  /**
   * Runs an SDK waiter. The SDK's EC2 waiters retry on *any* error until they time out; here an error other than
   * "not found yet" (expired credentials, a missing permission) ends the wait at once with its own message.
   */
  async wait(
    kind: "running" | "terminated",
    id: string,
    opts: { maxWaitSeconds: number; signal?: AbortSignal },
  ): Promise<{ state: "success" | "failure" | "timeout"; instance?: Instance }> {
    const stop = new AbortController();
    const onAbort = () => stop.abort(opts.signal?.reason);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let fatal: unknown;
    const client = this.client;
    const watching = {
      config: client.config,
      send: async (command: unknown) => {
        try {
          return await (client as unknown as Sendable).send(command, { abortSignal: stop.signal });
        } catch (err) {
          if (codeOf(err) !== "InvalidInstanceID.NotFound" && !stop.signal.aborted) {
            fatal = err;
            stop.abort();
          }
          throw err;
        }
      },
    } as unknown as EC2Client;
    const minDelay = Math.max(0.01, this.pollMs / 1000);
    const params = { client: watching, maxWaitTime: opts.maxWaitSeconds, minDelay, maxDelay: Math.max(minDelay, Math.min(15, minDelay * 8)), abortSignal: stop.signal };
    const waiter = kind === "running" ? waitUntilInstanceRunning : waitUntilInstanceTerminated;
    try {
      const result = await waiter(params, { InstanceIds: [id] });
      const final = result.reason as { Reservations?: { Instances?: Instance[] }[] } | undefined;
      return { state: "success", instance: final?.Reservations?.[0]?.Instances?.[0] };
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? err;
      if (fatal) throw explain(fatal, "DescribeInstances", this.context);
      const name = (err as Error).name;
      if (name === "TimeoutError") return { state: "timeout" };
      return { state: "failure", instance: await this.instance(id) };
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }
}
