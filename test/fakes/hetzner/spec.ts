import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Ajv, type ValidateFunction } from "ajv";

/**
 * Hetzner's official OpenAPI document (providers/hetzner/spec/cloud.spec.json, fully inlined, OpenAPI 3.0) turned into
 * JSON Schema validators for the fake: every request body and query, and every response, is checked against it.
 *
 * One patch follows the live API, which changed after this copy of the spec (changelog 2026-07-01, "removing
 * datacenters"): `datacenter` is gone from servers and primary IPs, so it is dropped from their `required` lists.
 */
type Schema = Record<string, unknown>;
interface Operation {
  parameters?: { name: string; in: string; required?: boolean; schema: Schema }[];
  requestBody?: { content?: { "application/json"?: { schema: Schema } } };
  responses: Record<string, { content?: { "application/json"?: { schema: Schema } } }>;
}
type Spec = { paths: Record<string, Record<string, Operation>> };

const specFile = fileURLToPath(new URL("../../../providers/hetzner/spec/cloud.spec.json", import.meta.url).href.replace("/dist/", "/"));

/** OpenAPI 3.0 → JSON Schema: `nullable: true` becomes a null type; documentation keywords are dropped. */
function toJsonSchema(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(toJsonSchema);
  if (!s || typeof s !== "object") return s;
  const out: Schema = {};
  for (const [k, v] of Object.entries(s as Schema)) {
    if (["example", "examples", "deprecated", "description", "title", "nullable", "externalDocs", "x-deprecated"].includes(k)) continue;
    if (k === "properties") {
      out[k] = Object.fromEntries(Object.entries(v as Schema).map(([p, ps]) => [p, toJsonSchema(ps)]));
      continue;
    }
    out[k] = toJsonSchema(v);
  }
  const src = s as Schema;
  if (src.nullable === true) {
    if (typeof out.type === "string") out.type = [out.type, "null"];
    if (Array.isArray(out.enum)) out.enum = [...out.enum, null];
    if (!out.type && (out.allOf || out.oneOf || out.anyOf)) return { anyOf: [out, { type: "null" }] };
  }
  // The live API no longer sends `datacenter` (see above).
  if (Array.isArray(out.required) && out.properties && (out.properties as Schema).datacenter) {
    out.required = (out.required as string[]).filter((r) => r !== "datacenter");
  }
  return out;
}

export class HetznerSpec {
  readonly raw: Spec;
  private readonly ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  private readonly cache = new Map<string, ValidateFunction>();
  private readonly templates: { path: string; re: RegExp; names: string[] }[];

  constructor(file = specFile) {
    this.raw = JSON.parse(readFileSync(file, "utf8")) as Spec;
    this.templates = Object.keys(this.raw.paths).map((path) => {
      const names: string[] = [];
      const re = new RegExp(`^${path.replace(/\{(\w+)\}/g, (_, n: string) => (names.push(n), "([^/]+)"))}$`);
      return { path, re, names };
    });
  }

  /** The spec path template and its parameters for a concrete path, e.g. /servers/42 → /servers/{id}, {id: "42"}. */
  match(path: string): { template: string; params: Record<string, string> } | undefined {
    // Prefer literal paths over templated ones (/servers/actions before /servers/{id}).
    const hits = this.templates.filter((t) => t.re.test(path)).sort((a, b) => a.names.length - b.names.length);
    const t = hits[0];
    if (!t) return undefined;
    const m = t.re.exec(path) as RegExpExecArray;
    return { template: t.path, params: Object.fromEntries(t.names.map((n, i) => [n, decodeURIComponent(m[i + 1])])) };
  }

  operation(template: string, method: string): Operation | undefined {
    return this.raw.paths[template]?.[method.toLowerCase()];
  }

  private validator(key: string, schema: unknown): ValidateFunction {
    let v = this.cache.get(key);
    if (!v) {
      v = this.ajv.compile(toJsonSchema(schema) as Schema);
      this.cache.set(key, v);
    }
    return v;
  }

  /** Problems with a request: unknown operation, unknown or mistyped query parameters, an invalid JSON body. */
  checkRequest(method: string, path: string, query: URLSearchParams, body: unknown): string[] {
    const m = this.match(path);
    const op = m && this.operation(m.template, method);
    if (!m || !op) return [`${method} ${path} is not an operation of the Hetzner Cloud API`];
    const problems: string[] = [];
    const params = (op.parameters ?? []).filter((p) => p.in === "query");
    for (const name of new Set(query.keys())) {
      const p = params.find((x) => x.name === name);
      if (!p) {
        problems.push(`query parameter "${name}" is not in the spec for ${method} ${m.template}`);
        continue;
      }
      const values = query.getAll(name);
      const itemSchema = (p.schema.type === "array" ? p.schema.items : p.schema) as Schema;
      for (const v of values) {
        const typed = itemSchema.type === "integer" || itemSchema.type === "number" ? Number(v) : itemSchema.type === "boolean" ? v === "true" : v;
        const check = this.validator(`q ${m.template} ${method} ${name}`, itemSchema);
        if (!check(typed)) problems.push(`query ${name}=${v}: ${this.ajv.errorsText(check.errors)}`);
      }
    }
    const bodySchema = op.requestBody?.content?.["application/json"]?.schema;
    if (bodySchema) {
      const check = this.validator(`req ${m.template} ${method}`, bodySchema);
      if (!check(body)) problems.push(`request body: ${this.ajv.errorsText(check.errors, { dataVar: "body" })}`);
    } else if (body !== undefined) problems.push(`${method} ${m.template} takes no request body`);
    return problems;
  }

  /** Problems with a response: a status the operation does not declare, or a body not matching its schema. */
  checkResponse(method: string, path: string, status: number, body: unknown): string[] {
    const m = this.match(path);
    const op = m && this.operation(m.template, method);
    if (!m || !op) return [];
    const key = op.responses[String(status)] ? String(status) : `${String(status)[0]}xx`;
    const resp = op.responses[key];
    if (!resp) return [`${method} ${m.template} does not declare a ${status} response`];
    const schema = resp.content?.["application/json"]?.schema;
    if (!schema) return body === undefined ? [] : [`${method} ${m.template} ${status} has no body in the spec`];
    const check = this.validator(`res ${m.template} ${method} ${key}`, schema);
    return check(body) ? [] : [`response ${status}: ${this.ajv.errorsText(check.errors, { dataVar: "response" })}`];
  }

  /** The response schema of an operation (for building realistic objects from the spec's own examples). */
  responseSchema(template: string, method: string, status: string): Schema {
    return this.operation(template, method)?.responses[status]?.content?.["application/json"]?.schema as Schema;
  }
}

/**
 * A value that satisfies `schema`, built from the spec's own examples: every required property, taking the example
 * where the spec gives one. The fake starts each object from this and sets the fields it manages.
 */
export function exampleOf(schema: Schema | undefined): unknown {
  if (!schema) return null;
  if ("example" in schema && (schema.type !== "object" || !schema.properties)) return structuredClone(schema.example);
  if (schema.type === "object" || schema.properties) {
    const out: Record<string, unknown> = {};
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const name of (schema.required as string[] | undefined) ?? []) {
      if (name === "datacenter") continue;
      out[name] = exampleOf(props[name]);
    }
    return out;
  }
  if (schema.type === "array") return [];
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if (schema.nullable) return null;
  if (schema.type === "integer" || schema.type === "number") return 1;
  if (schema.type === "boolean") return false;
  if (schema.type === "string") return "";
  const alt = (schema.oneOf ?? schema.anyOf ?? schema.allOf) as Schema[] | undefined;
  return alt ? exampleOf(alt[0]) : null;
}
