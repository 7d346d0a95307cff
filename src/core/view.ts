import { LABEL, labelTime } from "./labels.js";
import type { ProviderFeatures, StopReason, Vm } from "./provider.js";

/** The stable JSON shape of a VM in `ls --json`, `status --json` and `up --json` (docs/json.md). */
export interface VmView {
  name: string;
  provider: string;
  id: string;
  status: string;
  address: string | null;
  location: string | null;
  size: string | null;
  createdAt: string | null;
  expiresAt: string | null;
  ageSeconds: number | null;
  ttlSeconds: number | null;
  pricePerHour: { amount: number; currency: string } | null;
  accruedCost: { amount: number; currency: string } | null;
  /** For a stopped VM, why, when the provider can tell: "idle", "poweroff" or "host-restarted" (see Vm.stopReason). */
  stopReason: StopReason | null;
  /**
   * Set when something needs `spuff reap`: "interrupted" (its `spuff up` died before it was ready), "expired" (past its
   * TTL), "idle-stopped" (powered off, still billed until deleted), "stopped" (powered off, no longer billed for compute
   * but still holding a paid disk), "gone" (only local state is left). A stopped VM of a `free` provider is kept until
   * its TTL (`spuff start` boots it again).
   */
  reap: string | null;
  /** The owner id in its labels (`spuff/owner`), if any. */
  owner: string | null;
  /** This machine's VM: it carries one of this machine's owner ids, or this machine holds its record (keys). */
  mine: boolean;
  labels: Record<string, string>;
}

/** What `toView` needs of the provider's feature flags. */
export type ViewFeatures = Pick<ProviderFeatures, "billsWhenStopped" | "free">;

export function toView(vm: Vm, now: Date, features: ViewFeatures, mine = false): VmView {
  const { billsWhenStopped, free } = features;
  const created = labelTime(vm.labels, LABEL.createdAt) ?? (vm.createdAt ? new Date(vm.createdAt) : undefined);
  const expires = labelTime(vm.labels, LABEL.expiresAt);
  const ageSeconds = created ? Math.max(0, Math.floor((now.getTime() - created.getTime()) / 1000)) : null;
  const price = vm.pricePerHour ?? null;
  const accrued =
    price && ageSeconds !== null
      ? { amount: Math.round(price.amount * Math.max(1, Math.ceil(ageSeconds / 3600)) * 10000) / 10000, currency: price.currency }
      : null;
  let reap: string | null = null;
  if (vm.status === "gone") reap = "gone";
  else if (expires && expires.getTime() < now.getTime()) reap = "expired";
  // A bake VM (docs/images.md) is powered off on purpose while its image is made: reaped only once expired.
  else if (vm.status === "stopped" && !free && vm.labels[LABEL.kind] !== "bake") reap = billsWhenStopped ? "idle-stopped" : "stopped";
  return {
    name: vm.name,
    provider: vm.provider,
    id: vm.id,
    status: vm.status === "stopped" && billsWhenStopped ? "idle-stopped" : vm.status,
    address: vm.endpoint ? `${vm.endpoint.host.includes(":") ? `[${vm.endpoint.host}]` : vm.endpoint.host}:${vm.endpoint.port}` : null,
    location: vm.location ?? null,
    size: vm.size ?? null,
    createdAt: created ? created.toISOString() : null,
    expiresAt: expires ? expires.toISOString() : null,
    ageSeconds,
    ttlSeconds: expires ? Math.floor((expires.getTime() - now.getTime()) / 1000) : null,
    pricePerHour: price,
    accruedCost: accrued,
    stopReason: vm.status === "stopped" ? (vm.stopReason ?? null) : null,
    reap,
    owner: vm.labels[LABEL.owner] ?? null,
    mine,
    labels: vm.labels,
  };
}

/** What each reap reason means, in words (status, reap --help, docs/idle.md). */
export const REAP_REASON: Record<string, string> = {
  interrupted: "its `spuff up` died before the VM was ready",
  expired: "past its hard TTL (label spuff/expires-at)",
  "idle-stopped": "powered off; the provider bills it until it is deleted",
  stopped: "powered off; its disk is still billed",
  gone: "the VM no longer exists; only its local state (keys, known_hosts line) is left",
};

const STOP_TEXT: Record<StopReason, string> = { idle: "idle", poweroff: "powered off", "host-restarted": "host restarted" };

/** The status as people read it: "stopped (host restarted)", "idle-stopped", "running". */
export function statusText(v: Pick<VmView, "status" | "stopReason">): string {
  return v.stopReason ? `${v.status} (${STOP_TEXT[v.stopReason]})` : v.status;
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null) return "-";
  const neg = seconds < 0;
  let s = Math.abs(seconds);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  const text = d ? `${d}d${h}h` : h ? `${h}h${m}m` : m ? `${m}m` : `${s}s`;
  return neg ? `-${text}` : text;
}

/** "€1.05", "$0.0071": small amounts with four decimals (hourly prices), unless `decimals` says otherwise. */
export function formatMoney(m: { amount: number; currency: string } | null, decimals?: number): string {
  if (!m) return "-";
  const symbol = m.currency === "EUR" ? "€" : m.currency === "USD" ? "$" : `${m.currency} `;
  return `${symbol}${m.amount.toFixed(decimals ?? (m.amount < 0.1 ? 4 : 2))}`;
}

/** A plain text table, columns padded to their widest cell. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}
