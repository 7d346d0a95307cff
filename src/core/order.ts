/** Lower-case letters, digits and '-': the names spuff gives VMs (src/core/names.ts) and the providers' names. */
const PLAIN = /^[a-z0-9-]*$/;

/**
 * `a.localeCompare(b)`, without loading ICU's collation data for the usual names: the first localeCompare of a process
 * costs ~10 ms, more than the rest of sorting a `spuff ls` (docs/performance.md). For strings of lower-case letters,
 * digits and '-' the collation order is the code-unit order (test/core/order.test.ts); any other string is compared
 * by localeCompare as before.
 */
export function compareNames(a: string, b: string): number {
  if (PLAIN.test(a) && PLAIN.test(b)) return a < b ? -1 : a > b ? 1 : 0;
  return a.localeCompare(b);
}
