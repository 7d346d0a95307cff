import {
  CreateImageCommand,
  DeleteSnapshotCommand,
  DeregisterImageCommand,
  DescribeImagesCommand,
  DescribeSnapshotsCommand,
  type Image as AmiImage,
  type Snapshot,
} from "@aws-sdk/client-ec2";
import { sleep } from "../../src/core/api.js";
import { ProviderError } from "../../src/core/errors.js";
import { LABEL } from "../../src/core/labels.js";
import type { Image, ImageSpec, Progress } from "../../src/core/provider.js";
import type { Ec2 } from "./client.js";
import { codeOf } from "./errors.js";
import { type Filter, fromTags, MANAGED, PROVIDER, toTags } from "./requests.js";

/**
 * Baked images on EC2 (docs/images.md, docs/providers/aws.md): an AMI made with CreateImage from the bake instance,
 * tagged in that request for the image and for its EBS snapshot (TagSpecifications), found again with DescribeImages
 * (Owners self, tag filters), deleted with DeregisterImage and DeleteSnapshot (EC2 keeps an AMI's snapshots, and bills
 * them, after the AMI is gone). EC2 reports no price for snapshots: the monthly cost is null, never invented.
 */

export const BAKES: Filter[] = [MANAGED, { Name: `tag:${LABEL.kind}`, Values: ["bake"] }];

const STATUS: Record<string, Image["status"]> = { available: "available", pending: "creating", failed: "failed", error: "failed", invalid: "failed" };

/** The AMI's EBS snapshot ids (its block device mappings). */
export function snapshotsOf(ami: AmiImage): string[] {
  return (ami.BlockDeviceMappings ?? []).map((b) => b.Ebs?.SnapshotId).filter((id): id is string => Boolean(id));
}

export function toImage(ami: AmiImage, snapshots: Snapshot[] = []): Image {
  const labels = fromTags(ami.Tags);
  const mine = snapshots.filter((s) => snapshotsOf(ami).includes(s.SnapshotId ?? ""));
  const full = mine.map((s) => (s as { FullSnapshotSizeInBytes?: number }).FullSnapshotSizeInBytes);
  return {
    id: ami.ImageId ?? "",
    name: labels[LABEL.name] ?? ami.Name ?? ami.ImageId ?? "",
    provider: PROVIDER,
    status: STATUS[ami.State ?? ""] ?? "unknown",
    labels,
    createdAt: ami.CreationDate,
    // EC2 reports a snapshot's stored size only as FullSnapshotSizeInBytes (not every endpoint has it): else null.
    sizeGB: full.length && full.every((b) => typeof b === "number") ? Math.round((full as number[]).reduce((a, b) => a + b, 0) / 1e7) / 100 : null,
    pricePerMonth: null,
  };
}

export class AwsImages {
  constructor(private readonly ec2: () => Ec2) {}

  private async amis(filters: Filter[], signal?: AbortSignal): Promise<AmiImage[]> {
    const out = await this.ec2().command<{ Images?: AmiImage[] }>("DescribeImages", new DescribeImagesCommand({ Owners: ["self"], Filters: filters }), signal);
    return out.Images ?? [];
  }

  private async snapshots(filters: Filter[], signal?: AbortSignal): Promise<Snapshot[]> {
    const out = await this.ec2().command<{ Snapshots?: Snapshot[] }>("DescribeSnapshots", new DescribeSnapshotsCommand({ OwnerIds: ["self"], Filters: filters }), signal);
    return out.Snapshots ?? [];
  }

  async list(signal?: AbortSignal): Promise<Image[]> {
    const [amis, snaps] = await Promise.all([this.amis(BAKES, signal), this.snapshots(BAKES, signal).catch(() => [])]);
    return amis.map((a) => toImage(a, snaps));
  }

  /**
   * CreateImage once, tagged for the image and its snapshot; EC2 shuts the instance down cleanly for it (NoReboot
   * false) and the caller terminates it afterwards. A failed or unanswered call is looked up by the request id tag
   * before anything else happens (it may have made the AMI). Waits until the AMI is available.
   */
  async create(instanceId: string, spec: ImageSpec, progress: Progress): Promise<Image> {
    const ec2 = this.ec2();
    const { signal } = spec;
    const tags = toTags({ Name: spec.name, ...spec.labels });
    const rid = spec.labels[LABEL.requestId] ?? "";
    const byRid: Filter[] = [MANAGED, { Name: `tag:${LABEL.requestId}`, Values: [rid] }];
    let id: string | undefined;
    try {
      const out = await ec2.command<{ ImageId?: string }>(
        "CreateImage",
        new CreateImageCommand({
          InstanceId: instanceId,
          Name: spec.name,
          Description: `spuff bake ${spec.labels[LABEL.bake] ?? ""}`.trim(),
          NoReboot: false,
          TagSpecifications: [
            { ResourceType: "image", Tags: tags },
            { ResourceType: "snapshot", Tags: tags },
          ],
        }),
        signal,
        true,
      );
      id = out.ImageId;
    } catch (err) {
      if (signal?.aborted) throw err;
      id = (await this.amis(byRid))[0]?.ImageId;
      if (!id) throw err;
    }
    if (!id) throw new ProviderError("EC2 accepted CreateImage but answered without an image id");
    progress.info(`AMI ${id} is being created`);
    const until = Date.now() + 60 * 60_000;
    for (let i = 0; ; i++) {
      const [ami] = await this.amis([{ Name: "image-id", Values: [id] }], signal);
      const state = ami?.State;
      if (ami && state === "available") return toImage(ami, await this.snapshots(byRid, signal).catch(() => []));
      if (state === "failed" || state === "error" || state === "invalid") {
        throw new ProviderError(`EC2 could not create the AMI ${id} (${state}: ${ami?.StateReason?.Message ?? "no reason given"})`, { hint: "run `spuff image bake` again" });
      }
      if (Date.now() > until) throw new ProviderError(`the AMI ${id} is still ${state ?? "missing"} after an hour`, { hint: "check it in the EC2 console (AMIs)" });
      await sleep(Math.min(15_000, ec2.pollMs * 2 ** Math.min(i, 5)), signal);
    }
  }

  /** DeregisterImage, then DeleteSnapshot for each of its snapshots. Already gone = success. */
  async delete(image: Image, signal?: AbortSignal): Promise<void> {
    const ec2 = this.ec2();
    const [ami] = await this.amis([{ Name: "image-id", Values: [image.id] }], signal);
    const rid = image.labels[LABEL.requestId];
    const tagged = rid ? await this.snapshots([MANAGED, { Name: `tag:${LABEL.requestId}`, Values: [rid] }], signal) : [];
    const snapshots = [...new Set([...(ami ? snapshotsOf(ami) : []), ...tagged.map((s) => s.SnapshotId ?? "").filter(Boolean)])];
    if (ami) {
      try {
        await ec2.command("DeregisterImage", new DeregisterImageCommand({ ImageId: image.id }), signal);
      } catch (err) {
        if (!/InvalidAMIID\.(NotFound|Unavailable)/.test(codeOf((err as { cause?: unknown }).cause) ?? "")) throw err;
      }
    }
    for (const id of snapshots) {
      try {
        await ec2.command("DeleteSnapshot", new DeleteSnapshotCommand({ SnapshotId: id }), signal);
      } catch (err) {
        if (codeOf((err as { cause?: unknown }).cause) !== "InvalidSnapshot.NotFound") throw err;
      }
    }
  }

  async setLabels(image: Image, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    const ec2 = this.ec2();
    const gone = Object.keys(image.labels).filter((k) => !(k in labels));
    await ec2.createTags(image.id, toTags(labels), signal);
    await ec2.deleteTags(image.id, gone, signal);
  }
}
