import { ProviderError, UserError } from "../../src/core/errors.js";
import { LABEL, MANAGED_BY_VALUE } from "../../src/core/labels.js";
import type { CatalogSize, CreateSpec, Volume, VolumeSpec, Vm, VmStatus } from "../../src/core/provider.js";
import type { CreateServerBody, CreateSshKeyBody, CreateVolumeBody, HVolume, Location, Pricing, Server, ServerType } from "./client.js";

/**
 * Pure request building and response reading for the Hetzner provider: what spuff sends (labels, bodies, label
 * selectors) and how it reads servers back (status, address, price). No I/O here; unit-tested on its own.
 */

export const PROVIDER = "hetzner";
/** Hetzner limits user_data to 32 KiB. */
export const MAX_USER_DATA = 32 * 1024;
export const SSH_PORT = 22;

/** A Hetzner label selector from `key=value` pairs (the API's `label_selector` syntax, AND-ed with commas). */
export function labelSelector(match: Record<string, string>): string {
  return Object.entries(match)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

export const MANAGED = labelSelector({ [LABEL.managedBy]: MANAGED_BY_VALUE });
export const byName = (name: string) => labelSelector({ [LABEL.managedBy]: MANAGED_BY_VALUE, [LABEL.name]: name });
export const byRequest = (requestId: string) => labelSelector({ [LABEL.managedBy]: MANAGED_BY_VALUE, [LABEL.requestId]: requestId });
/** Workspace volumes (docs/workspaces.md): managed by spuff and of kind "workspace". */
export const WORKSPACES = labelSelector({ [LABEL.managedBy]: MANAGED_BY_VALUE, [LABEL.kind]: "workspace" });
export const workspacesOfRequest = (requestId: string) =>
  labelSelector({ [LABEL.managedBy]: MANAGED_BY_VALUE, [LABEL.kind]: "workspace", [LABEL.requestId]: requestId });

/** Hetzner's volume sizes, in GB: at least 10, at most 10 TB. */
export const MIN_VOLUME_GB = 10;
export const MAX_VOLUME_GB = 10240;

/** The SSH key resource's name: unique per `up` (Hetzner names must be unique per project). */
export function sshKeyName(vmName: string, requestId: string): string {
  return `spuff-${vmName}-${requestId.slice(0, 8)}`;
}

export function sshKeyBody(spec: Pick<CreateSpec, "name" | "requestId" | "publicKey" | "labels">): CreateSshKeyBody {
  return { name: sshKeyName(spec.name, spec.requestId), public_key: spec.publicKey.trim(), labels: { ...spec.labels } };
}

/**
 * Hetzner's user_data is a JSON string. Text goes as is; gzip (spuff compresses user-data over the limit) goes base64:
 * cloud-init's Hetzner datasource base64-decodes user-data when it can and then detects gzip by its magic bytes.
 */
export function userDataString(userData: string | Buffer): string {
  const text = typeof userData === "string" ? userData : userData.toString("base64");
  if (Buffer.byteLength(text) > MAX_USER_DATA) {
    throw new UserError(`the VM's user-data is ${Buffer.byteLength(text)} bytes as sent to Hetzner, over its limit of ${MAX_USER_DATA}`, {
      hint: ["shorten `setup`, `packages` or `git_hosts` in the config", "put long setup steps in a script in your dotfiles instead"],
    });
  }
  return text;
}

export interface Placement {
  serverType: string;
  location: string;
  image: string;
  ipv4: boolean;
}

/**
 * POST /servers: always with the per-VM SSH key (without one Hetzner e-mails a root password), never `datacenter`.
 * A workspace volume is attached in the same request, automount off (the guest mounts it by its id).
 */
export function serverBody(
  spec: Pick<CreateSpec, "name" | "labels" | "userData" | "image">,
  placement: Placement,
  sshKeyId: number,
  volumeId?: number,
): CreateServerBody {
  return {
    ...(volumeId === undefined ? {} : { volumes: [volumeId], automount: false }),
    name: spec.name,
    server_type: placement.serverType,
    // A baked snapshot by its id (docs/images.md), else the configured image by name.
    image: spec.image ? spec.image.id : placement.image,
    location: placement.location,
    ssh_keys: [String(sshKeyId)],
    user_data: userDataString(spec.userData),
    labels: { ...spec.labels },
    start_after_create: true,
    public_net: { enable_ipv4: placement.ipv4, enable_ipv6: true },
  };
}

const STATUS: Record<Server["status"], VmStatus> = {
  initializing: "creating",
  starting: "creating",
  rebuilding: "creating",
  running: "running",
  migrating: "running",
  stopping: "stopping",
  off: "stopped",
  deleting: "deleting",
  unknown: "unknown",
};

/** The address spuff connects to: the IPv4, else the first host (`::1`) of the server's IPv6 /64. */
export function serverAddress(server: Pick<Server, "public_net">): string | undefined {
  const v4 = server.public_net.ipv4?.ip;
  if (v4) return v4;
  const v6 = server.public_net.ipv6?.ip;
  if (!v6) return undefined;
  const net = v6.split("/")[0];
  return net.endsWith("::") ? `${net}1` : net;
}

/** Hourly price of a server type in a location (gross, EUR), or null when Hetzner lists none. */
export function hourlyPrice(type: Pick<ServerType, "prices">, location: string): { amount: number; currency: string } | null {
  const p = type.prices.find((x) => x.location === location);
  const amount = p ? Number(p.price_hourly.gross) : Number.NaN;
  return Number.isFinite(amount) ? { amount, currency: "EUR" } : null;
}

/**
 * A server as a spuff VM. Reads `location`, never `datacenter` (gone from the live API). Servers created by spuff keep
 * their VM name in the `spuff/name` label.
 */
export function toVm(server: Server): Vm {
  const host = serverAddress(server);
  return {
    id: String(server.id),
    name: server.labels[LABEL.name] ?? server.name,
    provider: PROVIDER,
    status: STATUS[server.status] ?? "unknown",
    endpoint: host ? { host, port: SSH_PORT } : undefined,
    location: server.location?.name,
    size: server.server_type?.name,
    labels: { ...server.labels },
    createdAt: server.created,
    pricePerHour: server.server_type && server.location ? hourlyPrice(server.server_type, server.location.name) : null,
  };
}

/** A server type as a catalog size: availability per location from `locations[].available` (not /datacenters). */
export function toCatalogSize(t: ServerType): CatalogSize {
  return {
    name: t.name,
    description: `${t.cores} ${t.cpu_type} vCPU, ${t.memory} GB RAM, ${t.disk} GB ${t.storage_type} disk, ${t.architecture}`,
    vcpus: t.cores,
    memoryGiB: t.memory,
    diskGiB: t.disk,
    deprecated: isDeprecated(t),
    locations: (t.locations ?? []).filter((l) => l.available).map((l) => l.name),
    prices: t.prices.map((p) => ({
      location: p.location,
      hourly: Number(p.price_hourly.gross),
      monthly: Number(p.price_monthly.gross),
      currency: "EUR",
    })),
  };
}

export function isDeprecated(t: Pick<ServerType, "deprecated" | "deprecation">): boolean {
  return Boolean(t.deprecated || t.deprecation);
}

export function locationDescription(l: Location): string {
  return `${l.city}, ${l.country} (${l.network_zone})`;
}

/** The volume resource's name: unique per `up` (names are unique per project); identity is in its labels. */
export function volumeName(vmName: string, requestId: string): string {
  return `spuff-${vmName}-${requestId.slice(0, 8)}`;
}

/**
 * POST /volumes: labels in the same request (a volume never exists without them), a location (not a server: it is
 * attached when its server is created), no `format` (the guest formats it on first use) and no `automount`.
 */
export function volumeBody(spec: Pick<VolumeSpec, "name" | "labels" | "sizeGiB">, location: string): CreateVolumeBody {
  const requestId = spec.labels[LABEL.requestId];
  if (!requestId) throw new Error("a workspace volume needs its spuff/request-id label");
  return { name: volumeName(spec.name, requestId), size: spec.sizeGiB, location, labels: { ...spec.labels } };
}

/** A positive integer id from the API (ids end up in device paths and URLs: never trusted as they come). */
export function apiId(value: unknown, what: string): number {
  if (typeof value === "number" && Number.isSafeInteger(value) && value > 0) return value;
  if (typeof value === "string" && /^[1-9]\d{0,15}$/.test(value) && Number.isSafeInteger(Number(value))) return Number(value);
  throw new ProviderError(`${what}: the Hetzner API answered an invalid id ${JSON.stringify(value)?.slice(0, 40)}`, {
    hint: "the answers do not come from a working Hetzner API: check HCLOUD_ENDPOINT and any proxy in between",
  });
}

/** The gross price of a volume's GB per month, or null when /pricing has none (never invented). */
export function volumePricePerGb(pricing: Pick<Pricing, "currency" | "volume"> | undefined): { amount: number; currency: string } | null {
  const gross = pricing?.volume?.price_per_gb_month?.gross;
  const amount = typeof gross === "string" && /^\d+(\.\d+)?$/.test(gross) ? Number(gross) : Number.NaN;
  const currency = typeof pricing?.currency === "string" && /^[A-Z]{3}$/.test(pricing.currency) ? pricing.currency : undefined;
  return Number.isFinite(amount) && currency ? { amount, currency } : null;
}

/** A Hetzner volume as a spuff workspace volume; its name is the `spuff/name` label, never the volume's own name. */
export function toVolume(v: HVolume, perGb: { amount: number; currency: string } | null): Volume {
  const id = apiId(v.id, "list volumes");
  const size = typeof v.size === "number" && Number.isFinite(v.size) && v.size > 0 ? v.size : undefined;
  if (size === undefined) throw new ProviderError(`list volumes: the Hetzner API answered volume ${id} without a valid size`);
  const labels = v.labels && typeof v.labels === "object" ? { ...v.labels } : {};
  return {
    id: String(id),
    name: labels[LABEL.name] ?? "",
    provider: PROVIDER,
    sizeGiB: size,
    location: typeof v.location?.name === "string" ? v.location.name : undefined,
    labels,
    attachedTo: v.server === null || v.server === undefined ? undefined : String(apiId(v.server, `volume ${id}`)),
    createdAt: v.created,
    pricePerMonth: perGb ? { amount: Math.round(perGb.amount * size * 10000) / 10000, currency: perGb.currency } : null,
  };
}
