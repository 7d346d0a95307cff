import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv, type ValidateFunction } from "ajv";

/**
 * The official Hetzner Cloud OpenAPI document (providers/hetzner/spec/cloud.spec.json) as a request/response validator.
 * OpenAPI 3.0 schemas are translated to JSON Schema for ajv: `nullable` becomes a `null` type (or an anyOf), and
 * annotation-only keywords (`example`, `deprecated`, `discriminator`, `x-*`) are dropped. The spec is amended to the
 * live API (changelog 2026-07-01): `datacenter` is no longer required in server payloads.
 */

type Json = Record<string, unknown>;
interface Parameter {
  name: string;
  in: "path" | "query" | "header" | "cookie";
  required?: boolean;
  schema: Json;
}
interface Operation {
  operationId: string;
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content: Record<string, { schema: Json }> };
  responses: Record<string, { content?: Record<string, { schema: Json }> }>;
}

export interface Route {
  method: string;
  /** The spec's path template, e.g. /servers/{id}. */
  template: string;
  op: Operation;
  match(path: string): Record<string, string> | undefined;
}

export interface CheckedRequest {
  route: Route;
  path: Record<string, unknown>;
  query: Record<string, unknown>;
  body: unknown;
}

function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the project root from the Hetzner fake");
    dir = up;
  }
  return dir;
}

export const SPEC_PATH = join(projectRoot(), "providers", "hetzner", "spec", "cloud.spec.json");

const DROP = new Set(["example", "examples", "deprecated", "discriminator", "xml", "externalDocs", "nullable", "readOnly", "writeOnly"]);

/** OpenAPI 3.0 schema object → JSON Schema (draft-07) ajv understands. */
export function toJsonSchema(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(toJsonSchema);
  if (!s || typeof s !== "object") return s;
  const src = s as Json;
  const out: Json = {};
  for (const [k, v] of Object.entries(src)) {
    if (DROP.has(k) || k.startsWith("x-")) continue;
    if (k === "properties" && v && typeof v === "object") {
      out[k] = Object.fromEntries(Object.entries(v as Json).map(([pk, pv]) => [pk, toJsonSchema(pv)]));
    } else if ((k === "items" || k === "additionalProperties" || k === "not") && typeof v === "object") {
      out[k] = toJsonSchema(v);
    } else if (k === "allOf" || k === "anyOf" || k === "oneOf") {
      out[k] = (v as unknown[]).map(toJsonSchema);
    } else {
      out[k] = v;
    }
  }
  if (src.nullable === true) {
    if (typeof out.type === "string") {
      out.type = [out.type, "null"];
      if (Array.isArray(out.enum)) out.enum = [...out.enum, null];
    } else {
      return { anyOf: [out, { type: "null" }] };
    }
  }
  return out;
}

/** The 2026-07-01 amendment: server (and primary IP) payloads no longer carry `datacenter`. */
function amendDatacenter(node: unknown): void {
  if (Array.isArray(node)) return node.forEach(amendDatacenter);
  if (!node || typeof node !== "object") return;
  const o = node as Json;
  const props = o.properties as Json | undefined;
  if (props?.datacenter && Array.isArray(o.required)) o.required = (o.required as string[]).filter((k) => k !== "datacenter");
  for (const v of Object.values(o)) amendDatacenter(v);
}

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export class SpecValidator {
  readonly routes: Route[] = [];
  private readonly ajv: Ajv;
  private readonly cache = new Map<object, ValidateFunction>();

  constructor(specPath = SPEC_PATH) {
    const spec = JSON.parse(readFileSync(specPath, "utf8")) as { paths: Record<string, Record<string, unknown>> };
    amendDatacenter(spec.paths);
    this.ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictTuples: false, strictRequired: false, allowUnionTypes: true });
    this.ajv.addFormat("int64", { type: "number", validate: (n: number) => Number.isSafeInteger(n) });
    this.ajv.addFormat("int32", { type: "number", validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
    this.ajv.addFormat("double", { type: "number", validate: (n: number) => Number.isFinite(n) });
    this.ajv.addFormat("float", { type: "number", validate: (n: number) => Number.isFinite(n) });
    this.ajv.addFormat("decimal", /^-?\d+(\.\d+)?$/);
    this.ajv.addFormat("date-time", { type: "string", validate: (s: string) => DATE_TIME.test(s) && !Number.isNaN(Date.parse(s)) });
    for (const [template, item] of Object.entries(spec.paths)) {
      const shared = (item.parameters as Parameter[] | undefined) ?? [];
      const names: string[] = [];
      const re = new RegExp(
        `^${template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{(\w+)\}/g, (_, n: string) => {
          names.push(n);
          return "([^/]+)";
        })}$`,
      );
      for (const [method, op] of Object.entries(item)) {
        if (method === "parameters" || !op || typeof op !== "object") continue;
        const operation = op as Operation;
        operation.parameters = [...shared, ...(operation.parameters ?? [])];
        this.routes.push({
          method: method.toUpperCase(),
          template,
          op: operation,
          match: (path) => {
            const m = re.exec(path);
            return m ? Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1])])) : undefined;
          },
        });
      }
    }
    // Literal paths first (/servers/actions before /servers/{id}).
    this.routes.sort((a, b) => (a.template.includes("{") ? 1 : 0) - (b.template.includes("{") ? 1 : 0));
  }

  private validator(schema: object): ValidateFunction {
    let v = this.cache.get(schema);
    if (!v) {
      v = this.ajv.compile(toJsonSchema(schema) as object);
      this.cache.set(schema, v);
    }
    return v;
  }

  private errors(v: ValidateFunction, where: string): string {
    return (v.errors ?? [])
      .slice(0, 8)
      .map((e) => `${where}${e.instancePath} ${e.message}${e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ""}`)
      .join("; ");
  }

  /** The route for a method and path; `undefined` when the spec has no such operation. */
  route(method: string, path: string): { route: Route; params: Record<string, string> } | undefined {
    for (const route of this.routes) {
      if (route.method !== method) continue;
      const params = route.match(path);
      if (params) return { route, params };
    }
    return undefined;
  }

  /** Checks a request against its operation; returns the parsed parameters or throws with every problem. */
  checkRequest(method: string, path: string, search: URLSearchParams, contentType: string | undefined, rawBody: string): CheckedRequest {
    const found = this.route(method, path);
    if (!found) throw new SpecViolation(`request: ${method} ${path} is not an operation of the spec`);
    const { route, params } = found;
    const problems: string[] = [];
    const coerced = { path: {} as Record<string, unknown>, query: {} as Record<string, unknown> };
    const declared = new Set<string>();
    for (const p of route.op.parameters ?? []) {
      if (p.in !== "path" && p.in !== "query") continue;
      declared.add(`${p.in}:${p.name}`);
      const raw = p.in === "path" ? (params[p.name] === undefined ? [] : [params[p.name]]) : search.getAll(p.name);
      if (raw.length === 0) {
        if (p.required) problems.push(`request: ${p.in} parameter "${p.name}" is required`);
        continue;
      }
      const value = coerce(raw, p.schema);
      const v = this.validator(p.schema);
      if (!v(value)) problems.push(this.errors(v, `request: ${p.in} parameter "${p.name}"`) || `request: ${p.in} parameter "${p.name}" is invalid`);
      coerced[p.in][p.name] = value;
    }
    for (const key of new Set(search.keys())) {
      if (!declared.has(`query:${key}`)) problems.push(`request: query parameter "${key}" is not in the spec for ${method} ${route.template}`);
    }
    let body: unknown;
    const rb = route.op.requestBody;
    if (rawBody.length > 0) {
      if (!rb) problems.push(`request: ${method} ${route.template} takes no body`);
      else if (!contentType?.startsWith("application/json")) problems.push(`request: content-type must be application/json, got ${contentType ?? "none"}`);
      else {
        try {
          body = JSON.parse(rawBody);
        } catch (err) {
          problems.push(`request: body is not JSON: ${(err as Error).message}`);
        }
        const schema = rb.content["application/json"]?.schema;
        if (body !== undefined && schema) {
          const v = this.validator(schema);
          if (!v(body)) problems.push(this.errors(v, "request body"));
        }
      }
    } else if (rb?.required) {
      problems.push(`request: ${method} ${route.template} requires a body`);
    }
    if (problems.length) throw new SpecViolation(problems.join("; "), route.op.operationId);
    return { route, path: coerced.path, query: coerced.query, body };
  }

  /** Checks a response; throws with every problem. */
  checkResponse(route: Route, status: number, body: unknown): void {
    const responses = route.op.responses;
    const key = [String(status), `${String(status)[0]}xx`, `${String(status)[0]}XX`, "default"].find((k) => responses[k]);
    if (!key) throw new SpecViolation(`response: status ${status} is not declared for ${route.method} ${route.template}`, route.op.operationId);
    const schema = responses[key].content?.["application/json"]?.schema;
    if (!schema) {
      if (body !== undefined) throw new SpecViolation(`response: ${status} of ${route.method} ${route.template} must have no body`, route.op.operationId);
      return;
    }
    const v = this.validator(schema);
    if (!v(body)) throw new SpecViolation(this.errors(v, `response ${status} body`), route.op.operationId);
  }
}

export class SpecViolation extends Error {
  constructor(
    message: string,
    readonly operationId?: string,
  ) {
    super(message);
  }
}

/** Query/path strings → the parameter's declared type, so the schema can be checked. */
function coerce(raw: string[], schema: Json): unknown {
  if (schema.type === "array") return raw.flatMap((r) => r.split(",")).map((r) => coerceOne(r, (schema.items as Json) ?? {}));
  return coerceOne(raw[raw.length - 1], schema);
}

function coerceOne(raw: string, schema: Json): unknown {
  if (schema.type === "integer") return /^-?\d+$/.test(raw) ? Number(raw) : raw;
  if (schema.type === "number") return raw.trim() !== "" && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  if (schema.type === "boolean") return raw === "true" ? true : raw === "false" ? false : raw;
  return raw;
}
