import { ConfigError } from "../core/errors.js";

// Durations and sizes as the config writes them. A module of its own, without yaml or zod: commands that only read
// a duration (ls, through src/core/workspace.ts) do not load the config loader (docs/performance.md).

/** Parses "1h30m", "2d", "45s" into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text);
  if (!m || text === "") throw new ConfigError(`invalid duration "${text}"`, { hint: 'use e.g. "30m", "4h", "1h30m", "2d"' });
  const [, d, h, min, s] = m.map((x) => Number(x ?? 0));
  return (((d * 24 + h) * 60 + min) * 60 + s) * 1000;
}

/** A config size ("10G", "512M", "2GiB", or a number of MiB) in MiB. */
export function sizeMiB(size: string | number): number {
  if (typeof size === "number") return size;
  const m = /^(\d+)\s*([KMGT]?)i?B?$/i.exec(size.trim());
  if (!m) throw new ConfigError(`invalid size "${size}"`, { hint: 'use e.g. "10G" or "2048M"' });
  const n = Number(m[1]);
  const unit = m[2].toUpperCase();
  return unit === "K" ? Math.ceil(n / 1024) : unit === "G" ? n * 1024 : unit === "T" ? n * 1024 * 1024 : n;
}
