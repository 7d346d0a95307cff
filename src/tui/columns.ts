import { formatDuration, formatMoney, statusText, type VmView } from "../core/view.js";
import type { WorkspaceView } from "../core/workspace.js";

/** One column of one of the picker's tables. */
export interface Column<T = VmView> {
  header: string;
  cell(v: T): string;
  /** Numbers and money line up on the right. */
  right?: boolean;
}

/** Every column, in display order. */
export const COLUMNS: Column[] = [
  { header: "NAME", cell: (v) => v.name },
  { header: "STATUS", cell: (v) => statusText(v) },
  { header: "PROVIDER", cell: (v) => v.provider },
  { header: "LOCATION", cell: (v) => v.location ?? "-" },
  { header: "SIZE", cell: (v) => v.size ?? "-" },
  { header: "ADDRESS", cell: (v) => v.address ?? "-" },
  { header: "AGE", cell: (v) => formatDuration(v.ageSeconds), right: true },
  { header: "TTL", cell: (v) => formatDuration(v.ttlSeconds), right: true },
  { header: "PRICE/H", cell: (v) => formatMoney(v.pricePerHour), right: true },
  { header: "COST", cell: (v) => formatMoney(v.accruedCost), right: true },
];

/**
 * When the terminal is too narrow, columns go in this order (docs/tui.md). NAME, STATUS and TTL always stay: they say
 * which VM, whether it runs and how long it has left.
 */
export const DROP_ORDER = ["ADDRESS", "AGE", "LOCATION", "SIZE", "PRICE/H", "PROVIDER", "COST"];

/** How long ago `iso` was, as the picker writes durations ("3d2h ago"); "-" when unknown. */
export function ago(iso: string | null, now = Date.now()): string {
  if (!iso) return "-";
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  return s < 60 ? "just now" : `${formatDuration(s)} ago`;
}

/** When the reaper deletes a kept workspace: "13d23h", "due" once its keep period is over, "-" when not known yet. */
export function deletedIn(w: WorkspaceView): string {
  if (w.deleteInSeconds === null) return "-";
  return w.deleteInSeconds <= 0 ? "due" : formatDuration(w.deleteInSeconds);
}

/** The kept workspaces' table, under the VMs. */
export const WORKSPACE_COLUMNS: Column<WorkspaceView>[] = [
  { header: "KEPT WORKSPACE", cell: (w) => w.name },
  { header: "PROVIDER", cell: (w) => w.provider },
  { header: "LOCATION", cell: (w) => w.location ?? "-" },
  { header: "SIZE", cell: (w) => `${w.sizeGiB}G`, right: true },
  { header: "LAST USED", cell: (w) => ago(w.lastUsedAt), right: true },
  { header: "PRICE/MONTH", cell: (w) => formatMoney(w.pricePerMonth), right: true },
  { header: "DELETED IN", cell: deletedIn, right: true },
];

/** KEPT WORKSPACE and DELETED IN always stay: which work, and how long it is kept. */
export const WORKSPACE_DROP_ORDER = ["LOCATION", "LAST USED", "PRICE/MONTH", "SIZE", "PROVIDER"];

/** Two characters of selection marker before each row, two spaces between columns. */
export const MARKER = 2;
const GAP = 2;

export interface Layout<T = VmView> {
  columns: Column<T>[];
  widths: number[];
  /** The width of a full row, marker included. */
  total: number;
}

/** The columns that fit `width`, dropping them in `dropOrder`; widths are the widest cell (header included). */
export function layout(vms: VmView[], width: number): Layout;
export function layout<T>(items: T[], width: number, all: Column<T>[], dropOrder: string[]): Layout<T>;
export function layout<T>(items: T[], width: number, all = COLUMNS as unknown as Column<T>[], dropOrder = DROP_ORDER): Layout<T> {
  let columns = all;
  for (const drop of ["", ...dropOrder]) {
    if (drop) columns = columns.filter((c) => c.header !== drop);
    const widths = columns.map((c) => Math.max(c.header.length, ...items.map((v) => c.cell(v).length)));
    const total = MARKER + widths.reduce((a, b) => a + b, 0) + GAP * (widths.length - 1);
    if (total <= width || drop === dropOrder[dropOrder.length - 1]) return { columns, widths, total };
  }
  throw new Error("unreachable");
}

/** One row of text for these columns (without the marker). */
export function row<T>(cells: string[], l: Layout<T>): string {
  return cells
    .map((c, i) => (l.columns[i].right ? c.padStart(l.widths[i]) : i === cells.length - 1 ? c : c.padEnd(l.widths[i])))
    .join(" ".repeat(GAP))
    .trimEnd();
}
