import type { CreateVolumeCommandInput, Volume as EbsVolume, Instance } from "@aws-sdk/client-ec2";
import { backoff, sleep } from "../../src/core/api.js";
import { ProviderError, UserError } from "../../src/core/errors.js";
import { LABEL, MANAGED_BY_VALUE } from "../../src/core/labels.js";
import type { Progress, Volume, VolumeSpec } from "../../src/core/provider.js";
import type { Ec2 } from "./client.js";
import { codeOf, isRetryable } from "./errors.js";
import { type Filter, fromTags, LIVE, MANAGED, PROVIDER, tagChanges, toTags } from "./requests.js";

/**
 * Workspace volumes on EC2 (docs/workspaces.md): one EBS gp3 volume per workspace, tagged at creation, in one
 * availability zone; the instance is launched in that zone and the volume attached after RunInstances as /dev/sdf with
 * DeleteOnTermination=false, so terminating the instance (`down`, a poweroff inside it, the TTL) detaches it and keeps it.
 */

export const WORKSPACE_KIND = "workspace";
/** Volumes spuff keeps as workspaces (instances' root volumes carry managed-by=spuff too, but no spuff/kind). */
export const WORKSPACE: Filter[] = [MANAGED, { Name: `tag:${LABEL.kind}`, Values: [WORKSPACE_KIND] }];
/** States of a volume that exists (a `deleting` one is on its way out). */
const PRESENT: Filter = { Name: "status", Values: ["creating", "available", "in-use", "error"] };
/** The device name the workspace is attached as: Xen instances show it as /dev/xvdf, Nitro ones as an NVMe disk. */
export const WORKSPACE_DEVICE = "/dev/sdf";

const CREATE_ATTEMPTS = 4;
/** How long a new volume may take to become `available`, and an attach to become `attached`. */
const AVAILABLE_MS = 5 * 60_000;
const ATTACH_MS = 3 * 60_000;
/** How long a volume whose instance is terminating may take to detach (deleteVolume, the next attach, destroy). */
const DETACH_MS = 3 * 60_000;

/** The attachment that still ties the volume to an instance (attaching, attached, busy, detaching), if any. */
function attachmentOf(v: EbsVolume) {
  return (v.Attachments ?? []).find((a) => a.State !== "detached");
}

/**
 * `live`: the instances that still hold resources (pending ... stopped). A volume counts as attached only to one of
 * them: the attachment of a terminating or terminated instance (a poweroff, a spot interruption) is on its way out.
 */
export function toVolume(v: EbsVolume, live?: ReadonlySet<string>): Volume {
  if (!v.VolumeId) throw new ProviderError("EC2 answered with a volume without an id");
  const labels = fromTags(v.Tags);
  const a = attachmentOf(v);
  const attachedTo = a?.InstanceId && (!live || (a.State !== "detaching" && live.has(a.InstanceId))) ? a.InstanceId : undefined;
  return {
    id: v.VolumeId,
    name: labels[LABEL.name] ?? v.VolumeId,
    provider: PROVIDER,
    sizeGiB: v.Size ?? 0,
    location: v.AvailabilityZone,
    labels,
    ...(attachedTo ? { attachedTo } : {}),
    createdAt: v.CreateTime ? new Date(v.CreateTime).toISOString() : undefined,
    // spuff has no EC2 price source (docs/providers/aws.md, Prices): unknown, never invented.
    pricePerMonth: null,
  };
}

/** Where the guest finds the volume: Nitro's NVMe disk is named after the volume id (without its dash), Xen's after the device. */
export function volumeDevices(id: string): string[] {
  return [`/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${id.replace("-", "")}`, "/dev/xvdf"];
}

/**
 * CreateVolume: gp3, encrypted (the account's default EBS key), tagged in the same request (a workspace volume never
 * exists untagged), `ClientToken` from the request id so a retried call never creates a second volume.
 */
export function createVolumeInput(spec: VolumeSpec, availabilityZone: string, requestId: string): CreateVolumeCommandInput {
  const tags = toTags({ Name: spec.name, ...spec.labels, [LABEL.managedBy]: MANAGED_BY_VALUE, [LABEL.kind]: WORKSPACE_KIND, [LABEL.requestId]: requestId });
  return {
    AvailabilityZone: availabilityZone,
    Size: spec.sizeGiB,
    VolumeType: "gp3",
    Encrypted: true,
    ClientToken: `spuff-ws-${requestId}`,
    TagSpecifications: [{ ResourceType: "volume", Tags: tags }],
  };
}

export async function listWorkspaceVolumes(ec2: Ec2, signal?: AbortSignal): Promise<Volume[]> {
  const volumes = await ec2.volumes({ Filters: [...WORKSPACE, PRESENT] }, signal);
  const holders = [...new Set(volumes.flatMap((v) => attachmentOf(v)?.InstanceId ?? []))];
  const live = holders.length ? await ec2.instances({ Filters: [{ Name: "instance-id", Values: holders }, LIVE] }, signal) : [];
  const ids = new Set(live.flatMap((i) => i.InstanceId ?? []));
  return volumes.map((v) => toVolume(v, ids));
}

/** Polls the volume until `done` says so; a volume in state `error` or gone ends the wait with a ProviderError. */
async function waitVolume(ec2: Ec2, id: string, what: string, ms: number, done: (v: EbsVolume) => boolean, signal?: AbortSignal): Promise<EbsVolume> {
  const deadline = Date.now() + ms;
  for (let i = 0; ; i++) {
    const v = await ec2.volume(id, signal);
    if (!v) throw new ProviderError(`the volume ${id} disappeared while spuff waited for it to be ${what}`);
    if (done(v)) return v;
    if (v.State === "error") throw new ProviderError(`the volume ${id} is in state "error" (EC2 could not create it)`, { hint: "check it in the EC2 console; `spuff down NAME --purge` deletes it" });
    if (Date.now() > deadline) {
      throw new ProviderError(`the volume ${id} is not ${what} after ${Math.round(ms / 60_000)} minutes (state ${v.State}${attachmentOf(v) ? `, ${attachmentOf(v)?.State} to ${attachmentOf(v)?.InstanceId}` : ""})`, {
        hint: "check it in the EC2 console, then run the command again",
      });
    }
    await sleep(backoff(i, ec2.pollMs / 2, 5000), signal);
  }
}

/** Waits until no instance holds the volume; false when it is gone (deleted meanwhile). */
async function untilDetached(ec2: Ec2, id: string, signal?: AbortSignal): Promise<boolean> {
  try {
    await waitVolume(ec2, id, "detached", DETACH_MS, (v) => !attachmentOf(v), signal);
    return true;
  } catch (err) {
    if (!signal?.aborted && err instanceof ProviderError && !(await ec2.volume(id, signal))) return false;
    throw err;
  }
}

/**
 * Creates the workspace volume in `availabilityZone` and waits until it is available. Like RunInstances, CreateVolume
 * is never retried blindly: after a lost answer the volume is looked up by its request id first. Ctrl-C does not cut
 * off CreateVolume's answer (it names a volume EC2 may have created already); after a failure or an interrupt the
 * volume of this request, if any, is deleted again: a new workspace holds nothing yet.
 */
export async function createWorkspaceVolume(ec2: Ec2, spec: VolumeSpec, availabilityZone: string, progress: Progress): Promise<Volume> {
  const { signal } = spec;
  const requestId = spec.labels[LABEL.requestId];
  if (!requestId) throw new ProviderError(`internal error: the workspace volume of ${spec.name} has no ${LABEL.requestId} label`);
  const input = createVolumeInput(spec, availabilityZone, requestId);
  let id: string | undefined;
  try {
    for (let attempt = 0; !id; attempt++) {
      try {
        id = (await ec2.createVolumeOnce(input)).VolumeId;
      } catch (err) {
        signal?.throwIfAborted();
        if (!isRetryable(err) || attempt >= CREATE_ATTEMPTS - 1) throw ec2.explain(err, "CreateVolume", { availabilityZone });
        progress.info(`CreateVolume: ${codeOf(err) || (err as Error).message}; checking whether the volume was created before sending it again`);
        id = (await ofRequest(ec2, requestId, signal))[0];
        if (!id) await sleep(backoff(attempt, ec2.pollMs, 15_000), signal);
      }
      signal?.throwIfAborted();
    }
    progress.info(`created volume ${id} (${spec.sizeGiB} GiB gp3 in ${availabilityZone})`);
    return toVolume(await waitVolume(ec2, id, "available", AVAILABLE_MS, (v) => v.State === "available", signal));
  } catch (err) {
    await undoCreateVolume(ec2, id, requestId, progress);
    throw err;
  }
}

/** Workspace volumes labelled with this request id. */
async function ofRequest(ec2: Ec2, requestId: string, signal?: AbortSignal): Promise<string[]> {
  const found = await ec2.volumes({ Filters: [...WORKSPACE, PRESENT, { Name: `tag:${LABEL.requestId}`, Values: [requestId] }] }, signal);
  return found.flatMap((v) => v.VolumeId ?? []);
}

/**
 * After a failed or interrupted createVolume: deletes the volume it made (by id, else by its request id; EC2 may need
 * a moment to list a new one). No signal: the user's Ctrl-C must not stop the cleanup.
 */
async function undoCreateVolume(ec2: Ec2, id: string | undefined, requestId: string, progress: Progress): Promise<void> {
  try {
    const ids = id ? [id] : [];
    for (let i = 0; !ids.length && i < 3; i++) {
      if (i) await sleep(ec2.pollMs / 2);
      ids.push(...(await ofRequest(ec2, requestId)));
    }
    for (const v of ids) {
      await waitVolume(ec2, v, "available", AVAILABLE_MS, (x) => x.State !== "creating");
      await ec2.deleteVolume(v);
      progress.info(`deleted the new volume ${v} again`);
    }
  } catch (err) {
    progress.warn(`deleting the new workspace volume failed: ${(err as Error).message}; it carries the label ${LABEL.requestId}=${requestId}`);
  }
}

/** Which instance holds the volume and whether that instance still lives (not shutting down or terminated). */
async function holder(ec2: Ec2, v: EbsVolume, signal?: AbortSignal): Promise<{ instanceId: string; state: string; live: boolean } | undefined> {
  const a = attachmentOf(v);
  if (!a?.InstanceId) return undefined;
  if (a.State === "detaching") return { instanceId: a.InstanceId, state: "detaching", live: false };
  const state = (await ec2.instance(a.InstanceId, signal))?.State?.Name ?? "terminated";
  return { instanceId: a.InstanceId, state, live: state !== "shutting-down" && state !== "terminated" };
}

/**
 * Before RunInstances: the volume still exists and no live instance holds it. (One whose instance is terminating is
 * fine: it detaches, and attachWorkspace waits for that.)
 */
export async function checkAttachable(ec2: Ec2, volume: Volume, signal?: AbortSignal): Promise<void> {
  const v = await ec2.volume(volume.id, signal);
  if (!v || v.State === "deleting" || v.State === "deleted") {
    throw new UserError(`the workspace volume ${volume.id} of ${volume.name} no longer exists`, { hint: `run \`spuff up ${volume.name}\` again: it creates a new, empty workspace` });
  }
  const h = await holder(ec2, v, signal);
  if (h?.live) {
    throw new ProviderError(`the workspace volume ${volume.id} of ${volume.name} is attached to instance ${h.instanceId} (${h.state})`, {
      hint: `\`spuff down ${volume.name}\` if that is its spuff VM; otherwise detach it in the EC2 console`,
    });
  }
}

/**
 * Attaches the workspace to the (running) instance as /dev/sdf, waits until EC2 reports it attached, and makes sure the
 * attachment has DeleteOnTermination=false (EC2's default for AttachVolume; checked, and set when it is not).
 */
export async function attachWorkspace(ec2: Ec2, volume: Volume, instanceId: string, progress: Progress, signal?: AbortSignal): Promise<void> {
  await waitVolume(ec2, volume.id, "detached from its last instance", DETACH_MS, (v) => v.State === "available" && !attachmentOf(v), signal);
  await ec2.attachVolume(volume.id, instanceId, WORKSPACE_DEVICE, signal);
  progress.info(`attaching volume ${volume.id} to ${instanceId} as ${WORKSPACE_DEVICE}`);
  const v = await waitVolume(ec2, volume.id, `attached to ${instanceId}`, ATTACH_MS, (x) => attachmentOf(x)?.InstanceId === instanceId && attachmentOf(x)?.State === "attached", signal);
  await keepWorkspaces(ec2, (await ec2.instance(instanceId, signal)) ?? { InstanceId: instanceId }, [volume.id], signal, attachmentOf(v)?.DeleteOnTermination);
}

/**
 * Sets DeleteOnTermination=false on every attachment of `volumeIds` to the instance whose mapping (DescribeInstances,
 * else the volume's own attachment record `fallback`) does not already say false.
 */
async function keepWorkspaces(ec2: Ec2, instance: Instance, volumeIds: string[], signal?: AbortSignal, fallback?: boolean): Promise<void> {
  const id = instance.InstanceId as string;
  for (const volumeId of volumeIds) {
    const mapping = instance.BlockDeviceMappings?.find((m) => m.Ebs?.VolumeId === volumeId);
    const deleteOnTermination = mapping ? mapping.Ebs?.DeleteOnTermination : fallback;
    if (deleteOnTermination === false) continue;
    await ec2.keepOnTermination(id, mapping?.DeviceName ?? WORKSPACE_DEVICE, signal);
  }
}

/** Workspace volumes attached to the instance (spuff-tagged, by its block device mappings). */
async function workspacesOf(ec2: Ec2, instance: Instance, signal?: AbortSignal): Promise<string[]> {
  const ids = (instance.BlockDeviceMappings ?? []).filter((m) => m.DeviceName !== instance.RootDeviceName).flatMap((m) => (m.Ebs?.VolumeId ? [m.Ebs.VolumeId] : []));
  if (!ids.length) return [];
  return (await ec2.volumes({ Filters: [...WORKSPACE, { Name: "volume-id", Values: ids }] }, signal)).flatMap((v) => (v.VolumeId ? [v.VolumeId] : []));
}

/**
 * Before TerminateInstances: makes sure no workspace attached to the instance would be deleted with it (an attachment
 * someone switched to DeleteOnTermination=true). Returns the workspaces' ids, for `detached`.
 */
export async function protectWorkspaces(ec2: Ec2, instance: Instance, signal?: AbortSignal): Promise<string[]> {
  const ids = await workspacesOf(ec2, instance, signal);
  await keepWorkspaces(ec2, instance, ids, signal);
  return ids;
}

/** After the instance terminated: waits until its workspaces are detached (`available`), so `ls` and `up` see them free. */
export async function detached(ec2: Ec2, volumeIds: string[], progress: Progress, signal?: AbortSignal): Promise<void> {
  for (const id of volumeIds) {
    try {
      if (await untilDetached(ec2, id, signal)) progress.info(`kept workspace volume ${id}`);
    } catch (err) {
      if (signal?.aborted || !(err instanceof ProviderError)) throw err;
      progress.warn(`${err.message}; it is kept, and \`spuff ls\` shows it once EC2 has detached it`);
    }
  }
}

/**
 * Deletes a detached workspace volume. One whose instance is terminating is waited for; one attached to a live
 * instance is refused (ProviderError, nothing deleted). Already gone = success.
 */
export async function deleteWorkspaceVolume(ec2: Ec2, volume: Volume, progress: Progress, signal?: AbortSignal): Promise<void> {
  const refuse = (instanceId: string, state: string) =>
    new ProviderError(`the workspace volume ${volume.id} of ${volume.name} is attached to instance ${instanceId} (${state}); nothing was deleted`, {
      hint: `\`spuff down ${volume.name} --purge\` removes its VM first; a volume attached to an instance spuff did not start: detach it in the EC2 console`,
    });
  let v = await ec2.volume(volume.id, signal);
  if (v?.State === "creating") v = await waitVolume(ec2, volume.id, "created", AVAILABLE_MS, (x) => x.State !== "creating", signal);
  if (!v || v.State === "deleting" || v.State === "deleted") return;
  const h = await holder(ec2, v, signal);
  if (h?.live) throw refuse(h.instanceId, h.state);
  if (h) {
    progress.info(`waiting for volume ${volume.id} to detach from ${h.instanceId}`);
    if (!(await untilDetached(ec2, volume.id, signal))) return;
  }
  try {
    await ec2.deleteVolume(volume.id, signal);
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    if (codeOf(cause) === "VolumeInUse" || codeOf(cause) === "IncorrectState") {
      const now = await ec2.volume(volume.id, signal);
      throw refuse(now ? (attachmentOf(now)?.InstanceId ?? "an instance") : "an instance", now ? (attachmentOf(now)?.State ?? "attached") : "attached");
    }
    throw err;
  }
  progress.info(`deleted workspace volume ${volume.id}`);
}

/** Replaces the volume's tags with `labels` (CreateTags for new and changed ones, DeleteTags for removed ones). */
export async function setWorkspaceVolumeTags(ec2: Ec2, volume: Volume, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
  const v = await ec2.volume(volume.id, signal);
  if (!v) throw new ProviderError(`the workspace volume ${volume.id} of ${volume.name} no longer exists`);
  const { set, remove } = tagChanges(v.Tags, labels);
  await ec2.createTags(volume.id, set, signal);
  await ec2.deleteTags(volume.id, remove, signal);
}
