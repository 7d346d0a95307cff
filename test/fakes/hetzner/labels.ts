/**
 * Hetzner label rules and label selectors, as documented at docs.hetzner.cloud ("Labels", "Label Selector"):
 * `k=v`, `k==v`, `k!=v`, `k` (present), `!k` (absent), `k in (a,b)`, `k notin (a,b)`, joined by commas (AND).
 */

const NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Problems with a label set (empty when valid), one message per bad key or value. */
export function labelProblems(labels: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(labels)) {
    const slash = key.lastIndexOf("/");
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if (!NAME.test(name)) out.push(`label key "${key}": the name part must be 1-63 characters [A-Za-z0-9._-], starting and ending alphanumeric`);
    if (prefix !== undefined) {
      if (prefix.length > 253 || !prefix.split(".").every((p) => DNS_LABEL.test(p))) out.push(`label key "${key}": the prefix must be a DNS subdomain`);
      if (prefix === "hetzner.cloud" || prefix.endsWith(".hetzner.cloud")) out.push(`label key "${key}": the prefix hetzner.cloud/ is reserved`);
    }
    if (value !== "" && !NAME.test(value)) out.push(`label value "${value}" of "${key}": must be empty or 1-63 characters [A-Za-z0-9._-], starting and ending alphanumeric`);
  }
  return out;
}

type Requirement =
  | { op: "eq" | "ne"; key: string; value: string }
  | { op: "in" | "notin"; key: string; values: string[] }
  | { op: "exists" | "absent"; key: string };

export class SelectorError extends Error {}

/** Splits on commas outside parentheses. */
function splitTop(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of text) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  return parts.map((p) => p.trim());
}

export function parseSelector(text: string): Requirement[] {
  if (text.trim() === "") return [];
  return splitTop(text).map((expr): Requirement => {
    let m = /^(!)?\s*([^\s!=(),]+)$/.exec(expr);
    if (m) return { op: m[1] ? "absent" : "exists", key: m[2] };
    m = /^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$/.exec(expr);
    if (m) return { op: m[2] === "!=" ? "ne" : "eq", key: m[1], value: m[3] };
    m = /^([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)$/.exec(expr);
    if (m) return { op: m[2] as "in" | "notin", key: m[1], values: m[3].split(",").map((v) => v.trim()) };
    throw new SelectorError(`invalid label selector expression "${expr}"`);
  });
}

export function matches(labels: Record<string, string>, selector: Requirement[]): boolean {
  return selector.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    switch (r.op) {
      case "exists":
        return has;
      case "absent":
        return !has;
      case "eq":
        return has && labels[r.key] === r.value;
      case "ne":
        return !has || labels[r.key] !== r.value;
      case "in":
        return has && r.values.includes(labels[r.key]);
      case "notin":
        return !has || !r.values.includes(labels[r.key]);
    }
  });
}
