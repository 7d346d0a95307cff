import { readFileSync } from "node:fs";
import { expect } from "vitest";

// The JSON shapes written in docs/json.md, and a checker for their notation (described at the top of that page). The
// doc is the one place the shapes live: test/docs/json.test.ts and the end-to-end test check outputs against it.

/** The doc's shapes: each `<!-- shape: NAME -->` followed by a ```json block. */
export function docShapes(): Map<string, unknown> {
  const text = readFileSync("docs/json.md", "utf8");
  const shapes = new Map<string, unknown>();
  for (const m of text.matchAll(/<!-- shape: ([\w-]+) -->\n```json\n([\s\S]*?)\n```/g)) {
    expect(shapes.has(m[1]), `shape ${m[1]} is defined twice`).toBe(false);
    shapes.set(m[1], JSON.parse(m[2]));
  }
  return shapes;
}

const shapes = docShapes();
/** The shape names some output has met (directly or through a `$Name` reference). */
export const used = new Set<string>();

/** Problems of `value` against `shape` (the doc's notation), as "path: what" lines; empty when it fits. */
export function mismatches(value: unknown, shape: unknown, path = "$"): string[] {
  if (typeof shape === "string") {
    const alternatives = shape.split("|").map((alt) => {
      if (alt.startsWith("$")) {
        const ref = shapes.get(alt.slice(1));
        if (ref === undefined) return [`${path}: the doc names an unknown shape ${alt}`];
        const problems = mismatches(value, ref, path);
        if (problems.length === 0) used.add(alt.slice(1));
        return problems;
      }
      if (alt.startsWith("=")) return value === alt.slice(1) ? [] : [`${path}: expected "${alt.slice(1)}", got ${JSON.stringify(value)}`];
      const ok: Record<string, (v: unknown) => boolean> = {
        string: (v) => typeof v === "string",
        number: (v) => typeof v === "number" && Number.isFinite(v),
        boolean: (v) => typeof v === "boolean",
        null: (v) => v === null,
        object: (v) => typeof v === "object" && v !== null && !Array.isArray(v),
        any: () => true,
        iso8601: (v) => typeof v === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(v) && !Number.isNaN(Date.parse(v)),
      };
      if (!ok[alt]) return [`${path}: the doc names an unknown type "${alt}"`];
      return ok[alt](value) ? [] : [`${path}: expected ${alt}, got ${JSON.stringify(value)}`];
    });
    return alternatives.find((a) => a.length === 0) ?? alternatives.flat();
  }
  if (Array.isArray(shape)) {
    if (!Array.isArray(value)) return [`${path}: expected an array, got ${JSON.stringify(value)}`];
    return value.flatMap((v, i) => mismatches(v, shape[0], `${path}[${i}]`));
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return [`${path}: expected an object, got ${JSON.stringify(value)}`];
  const spec = shape as Record<string, unknown>;
  const open = "..." in spec;
  const keys = new Map(Object.keys(spec).filter((k) => k !== "...").map((k) => [k.replace(/\?$/, ""), k]));
  const problems: string[] = [];
  for (const [key, raw] of keys) {
    if (!(key in value)) {
      if (!raw.endsWith("?")) problems.push(`${path}.${key}: missing`);
      continue;
    }
    problems.push(...mismatches((value as Record<string, unknown>)[key], spec[raw], `${path}.${key}`));
  }
  for (const key of Object.keys(value)) {
    if (keys.has(key)) continue;
    // An open object's other keys are each of the shape given for "..." (`any` for most).
    if (open) problems.push(...mismatches((value as Record<string, unknown>)[key], spec["..."], `${path}.${key}`));
    else problems.push(`${path}.${key}: not in the doc`);
  }
  return problems;
}

/** stdout is exactly one JSON document of the shape named `name`; returns it. */
export function one(name: string, stdout: string): unknown {
  const shape = shapes.get(name);
  expect(shape, `docs/json.md has no shape ${name}`).toBeDefined();
  let doc: unknown;
  expect(() => (doc = JSON.parse(stdout)), `not one JSON document:\n${stdout}`).not.toThrow();
  expect(mismatches(doc, shape)).toEqual([]);
  used.add(name);
  return doc;
}
