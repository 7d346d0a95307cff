/**
 * The label scheme (docs/adr/0001-architecture.md). Every resource spuff creates carries these labels (Hetzner
 * labels, EC2 tags, local VM metadata), so the provider itself is the source of truth for `ls` and `reap`.
 * Values are restricted to what every provider accepts: [A-Za-z0-9._-], at most 63 characters; times are Unix seconds.
 */
export const LABEL = {
  managedBy: "managed-by",
  name: "spuff/name",
  owner: "spuff/owner",
  createdAt: "spuff/created-at",
  expiresAt: "spuff/expires-at",
  requestId: "spuff/request-id",
  /** "workspace" on workspace volumes (docs/workspaces.md), "bake" on baked images and their VMs (docs/images.md). */
  kind: "spuff/kind",
  /** Workspace volumes: when a VM last had it attached (set by `up`) and when it was last seen detached. */
  attachedAt: "spuff/attached-at",
  detachedAt: "spuff/detached-at",
  /** Workspace volumes: seconds to keep it after its last detach (workspace.keep when it was created or attached). */
  keep: "spuff/keep",
  /** Baked images and the VMs that bake them: the hash of the bake's inputs (src/core/bake.ts). */
  bake: "spuff/bake",
  /** Baked images: when an `up` last matched it (set by the bake and moved by `up`); the reaper counts image.keep from it. */
  lastMatched: "spuff/last-matched",
} as const;

export const MANAGED_BY_VALUE = "spuff";

export interface LabelInput {
  name: string;
  owner: string;
  createdAt: Date;
  expiresAt: Date;
  requestId: string;
}

export function buildLabels(input: LabelInput): Record<string, string> {
  return {
    [LABEL.managedBy]: MANAGED_BY_VALUE,
    [LABEL.name]: input.name,
    [LABEL.owner]: input.owner,
    [LABEL.createdAt]: String(Math.floor(input.createdAt.getTime() / 1000)),
    [LABEL.expiresAt]: String(Math.floor(input.expiresAt.getTime() / 1000)),
    [LABEL.requestId]: input.requestId,
  };
}

export function labelTime(labels: Record<string, string>, key: string): Date | undefined {
  const v = labels[key];
  if (!v || !/^\d+$/.test(v)) return undefined;
  return new Date(Number(v) * 1000);
}

const LABEL_VALUE_RE = /^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/;
export function isValidLabelValue(v: string): boolean {
  return LABEL_VALUE_RE.test(v);
}
