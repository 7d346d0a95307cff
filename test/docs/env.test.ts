import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

// docs/troubleshooting.md's table lists every SPUFF_* variable spuff's own code (src/, providers/) reads, and only those.
function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) return sources(p);
    return /\.(ts|tsx|mjs|sh)$/.test(n) ? [p] : [];
  });
}

function readByCode(): Map<string, string> {
  const found = new Map<string, string>();
  for (const file of [...sources("src"), ...sources("providers")]) {
    for (const m of readFileSync(file, "utf8").matchAll(/\bSPUFF_[A-Z0-9_]*[A-Z0-9]\b/g)) if (!found.has(m[0])) found.set(m[0], file);
  }
  return found;
}

function documented(): Set<string> {
  const text = readFileSync("docs/troubleshooting.md", "utf8");
  const section = text.slice(text.indexOf("## Environment variables"), text.indexOf("\n## ", text.indexOf("## Environment variables") + 1));
  return new Set([...section.matchAll(/^\| `(SPUFF_[A-Z0-9_]+)`/gm)].map((m) => m[1]));
}

describe("SPUFF_* environment variables", () => {
  const code = readByCode();
  const doc = documented();

  it("finds what it looks for", () => {
    expect(code.has("SPUFF_BOOT_TIMEOUT")).toBe(true);
    expect(doc.has("SPUFF_BOOT_TIMEOUT")).toBe(true);
  });

  it("every variable the code reads has a row in docs/troubleshooting.md", () => {
    expect([...code].filter(([v]) => !doc.has(v)).map(([v, file]) => `${v} (read in ${file})`)).toEqual([]);
  });

  it("every row is a variable the code still reads", () => {
    expect([...doc].filter((v) => !code.has(v))).toEqual([]);
  });
});
