import { formatDuration, formatMoney, statusText, type VmView } from "../core/view.js";

/** One column of the picker's table. */
export interface Column {
  header: string;
  cell(v: VmView): string;
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

/** Two characters of selection marker before each row, two spaces between columns. */
export const MARKER = 2;
const GAP = 2;

export interface Layout {
  columns: Column[];
  widths: number[];
  /** The width of a full row, marker included. */
  total: number;
}

/** The columns that fit `width`, dropping them in DROP_ORDER; widths are the widest cell (header included). */
export function layout(vms: VmView[], width: number): Layout {
  let columns = COLUMNS;
  for (const drop of ["", ...DROP_ORDER]) {
    if (drop) columns = columns.filter((c) => c.header !== drop);
    const widths = columns.map((c) => Math.max(c.header.length, ...vms.map((v) => c.cell(v).length)));
    const total = MARKER + widths.reduce((a, b) => a + b, 0) + GAP * (widths.length - 1);
    if (total <= width || drop === DROP_ORDER[DROP_ORDER.length - 1]) return { columns, widths, total };
  }
  throw new Error("unreachable");
}

/** One row of text for these columns (without the marker). */
export function row(cells: string[], l: Layout): string {
  return cells
    .map((c, i) => (l.columns[i].right ? c.padStart(l.widths[i]) : i === cells.length - 1 ? c : c.padEnd(l.widths[i])))
    .join(" ".repeat(GAP))
    .trimEnd();
}
