/**
 * The response side of openapi.yaml as executable checks: every response schema (operation ×
 * status × content type, `#/components/schemas/*` refs resolved) and every documented response
 * header compiled with Ajv (draft 2020-12, which OpenAPI 3.1 uses).
 *
 * `checkResponse(method, pathTemplate, res)` returns the list of ways a response breaks the
 * contract (empty when it conforms). `matchRoute(method, url)` finds the operation a concrete
 * URL names, the way the router does (literal segments win over parameters).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse } from 'yaml';

// ajv-formats is CommonJS: its default export arrives wrapped under NodeNext.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv2020) => Ajv2020;

const OPENAPI_PATH = fileURLToPath(new URL('../../openapi.yaml', import.meta.url));
const COMPONENT_BASE = 'https://sessiond.test/components/schemas/';
const COMPONENT_REF = /^#\/components\/schemas\/(.+)$/;
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** Headers that must be present whenever a response documents them (the rest: shape only). */
const REQUIRED_WHEN_DOCUMENTED = new Set(['etag', 'retry-after']);

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface OpenApiDoc {
  components: { schemas: Record<string, Json> };
  paths: Record<string, Record<string, OpenApiOperation>>;
}
interface OpenApiOperation {
  operationId: string;
  parameters?: Array<{ name: string; in: string; required?: boolean; schema: Json }>;
  requestBody?: { required?: boolean; content: Record<string, { schema: Json }> };
  responses: Record<string, { description: string; headers?: Record<string, { schema: Json }>; content?: Record<string, { schema: Json }> }>;
}

export interface CompiledResponse {
  /** media type → body validator; empty for a body-less response (204). */
  content: Map<string, ValidateFunction>;
  /** lower-case header name → validator of the header value (integers parsed first). */
  headers: Map<string, { validate: ValidateFunction; integer: boolean }>;
}

export interface CompiledOperation {
  method: string;
  path: string;
  operationId: string;
  responses: Map<number, CompiledResponse>;
  /** The raw operation from openapi.yaml (request schemas for generators). */
  raw: OpenApiOperation;
}

/** What checkResponse needs from a response: light-my-request's Response fits as is. */
export interface ResponseLike {
  statusCode: number;
  headers: Record<string, string | string[] | number | undefined>;
  /** The raw body text. */
  payload: string;
}

/** Rewrites `#/components/schemas/X` to an absolute id Ajv knows. */
function rewriteRefs(node: Json): Json {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node === null || typeof node !== 'object') return node;
  const out: { [k: string]: Json } = {};
  for (const [k, v] of Object.entries(node)) {
    const m = k === '$ref' && typeof v === 'string' ? COMPONENT_REF.exec(v) : null;
    out[k] = m ? `${COMPONENT_BASE}${m[1]}` : rewriteRefs(v);
  }
  return out;
}

export const openapi = parse(readFileSync(OPENAPI_PATH, 'utf8')) as OpenApiDoc;

export const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
addFormats(ajv);
for (const [name, schema] of Object.entries(openapi.components.schemas)) {
  ajv.addSchema(rewriteRefs(schema) as object, `${COMPONENT_BASE}${name}`);
}

/** Compiles a schema from openapi.yaml (component refs allowed). */
export function compileSchema(schema: Json): ValidateFunction {
  return ajv.compile(rewriteRefs(schema) as object);
}

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

export const operations: CompiledOperation[] = [];
for (const [path, item] of Object.entries(openapi.paths)) {
  for (const [method, op] of Object.entries(item)) {
    if (!HTTP_METHODS.includes(method)) continue;
    const responses = new Map<number, CompiledResponse>();
    for (const [status, response] of Object.entries(op.responses)) {
      const content = new Map<string, ValidateFunction>();
      for (const [mediaType, media] of Object.entries(response.content ?? {})) content.set(mediaType, compileSchema(media.schema));
      const headers = new Map<string, { validate: ValidateFunction; integer: boolean }>();
      for (const [name, header] of Object.entries(response.headers ?? {})) {
        const schema = header.schema as { type?: string };
        headers.set(name.toLowerCase(), { validate: compileSchema(header.schema), integer: schema.type === 'integer' || schema.type === 'number' });
      }
      responses.set(Number(status), { content, headers });
    }
    operations.push({ method: method.toUpperCase(), path, operationId: op.operationId, responses, raw: op });
  }
}

const templates = Object.keys(openapi.paths).map((template) => {
  const segments = template.split('/');
  return { template, segments, params: segments.filter((s) => s.startsWith('{')).length };
});

export type RouteMatch =
  | { kind: 'operation'; operation: CompiledOperation; params: Record<string, string> }
  /** A documented path but an undocumented method, or no documented path at all. */
  | { kind: 'unknown' }
  /** A path whose percent-encoding is broken: the router may answer 400 before routing. */
  | { kind: 'malformed' };

/** The documented operation a concrete request names, like the router resolves it. */
export function matchRoute(method: string, url: string): RouteMatch {
  // Dot segments are resolved the way a client's URL parser (and light-my-request) does.
  let rawPath = url.split('?')[0]!;
  try {
    rawPath = new URL(rawPath, 'http://localhost').pathname;
  } catch {
    // leave it
  }
  const rawSegments = rawPath.split('/');
  let segments: string[];
  try {
    segments = rawSegments.map((s) => decodeURIComponent(s));
  } catch {
    return { kind: 'malformed' };
  }
  const candidates = templates
    .filter((t) => t.segments.length === segments.length)
    .map((t) => {
      const params: Record<string, string> = {};
      for (let i = 0; i < t.segments.length; i++) {
        const want = t.segments[i]!;
        if (want.startsWith('{')) {
          // An empty segment still reaches a parametric route (the router passes '').
          params[want.slice(1, -1)] = segments[i]!;
        } else if (want !== rawSegments[i]) {
          return null;
        }
      }
      return { t, params };
    })
    .filter((c): c is NonNullable<typeof c> => c !== null)
    .sort((a, b) => a.t.params - b.t.params);
  // The router prefers static segments: /v1/sessions/current never reaches /v1/sessions/{id}
  // for a method the static path has; for another method it falls through to the parametric one.
  const m = method.toUpperCase() === 'HEAD' ? 'GET' : method.toUpperCase();
  for (const c of candidates) {
    const operation = operations.find((o) => o.path === c.t.template && o.method === m);
    if (operation) return { kind: 'operation', operation, params: c.params };
  }
  return { kind: 'unknown' };
}

function headerValue(res: ResponseLike, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(', ') : String(v);
}

function ajvErrors(validate: ValidateFunction): string {
  return (validate.errors ?? [])
    .slice(0, 5)
    .map((e) => `${e.instancePath || '/'} ${e.message ?? ''}${e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ''}`)
    .join('; ');
}

function mediaTypeOf(res: ResponseLike): string | undefined {
  return headerValue(res, 'content-type')?.split(';')[0]!.trim().toLowerCase();
}

/** Checks a problem document (used for route_not_found answers, which no operation documents). */
function checkProblem(res: ResponseLike, expectCode: string[] | undefined, problems: string[]): void {
  const type = mediaTypeOf(res);
  if (type !== PROBLEM_CONTENT_TYPE) problems.push(`content-type ${String(type)}, expected ${PROBLEM_CONTENT_TYPE}`);
  let body: unknown;
  try {
    body = JSON.parse(res.payload);
  } catch {
    problems.push(`body is not JSON: ${res.payload.slice(0, 200)}`);
    return;
  }
  const validate = ajv.getSchema(`${COMPONENT_BASE}Problem`)!;
  if (!validate(body)) problems.push(`body breaks Problem: ${ajvErrors(validate)}`);
  const p = body as { status?: unknown; code?: unknown };
  if (p.status !== res.statusCode) problems.push(`problem status ${String(p.status)} != HTTP status ${res.statusCode}`);
  if (expectCode !== undefined && !expectCode.includes(String(p.code))) problems.push(`problem code ${String(p.code)}, expected ${expectCode.join(' or ')}`);
}

/**
 * The ways `res` breaks the contract of `method pathTemplate` (empty = conforms). With
 * pathTemplate `undefined` (no documented operation: unknown path or method) the only
 * acceptable answer is 404 `route_not_found` as a problem document.
 */
export function checkResponse(method: string, pathTemplate: string | undefined, res: ResponseLike): string[] {
  const problems: string[] = [];
  const upper = method.toUpperCase();
  const isHead = upper === 'HEAD';
  const operation = pathTemplate === undefined ? undefined : operations.find((o) => o.path === pathTemplate && o.method === (isHead ? 'GET' : upper));
  if (pathTemplate !== undefined && operation === undefined) {
    // An undocumented method on a documented path.
    return checkResponse(method, undefined, res);
  }
  if (operation === undefined) {
    if (res.statusCode !== 404) return [`status ${res.statusCode} for an undocumented route, expected 404 route_not_found`];
    if (!isHead) checkProblem(res, ['route_not_found'], problems);
    return problems;
  }
  const documented = operation.responses.get(res.statusCode);
  if (documented === undefined) {
    let detail = '';
    try {
      detail = ` (${JSON.stringify(JSON.parse(res.payload)).slice(0, 300)})`;
    } catch {
      detail = res.payload === '' ? '' : ` (${res.payload.slice(0, 200)})`;
    }
    return [`status ${res.statusCode} is not documented for ${operation.method} ${operation.path}; documented: ${[...operation.responses.keys()].join(', ')}${detail}`];
  }

  // Headers.
  for (const [name, { validate, integer }] of documented.headers) {
    const raw = headerValue(res, name);
    if (raw === undefined) {
      if (REQUIRED_WHEN_DOCUMENTED.has(name)) problems.push(`header ${name} is documented for ${res.statusCode} but missing`);
      continue;
    }
    let value: unknown = raw;
    if (integer) {
      if (!/^-?\d+$/.test(raw.trim())) {
        problems.push(`header ${name}: ${JSON.stringify(raw)} is not an integer`);
        continue;
      }
      value = Number(raw.trim());
    }
    if (!validate(value)) problems.push(`header ${name}: ${JSON.stringify(raw)} ${ajvErrors(validate)}`);
  }
  const etag = headerValue(res, 'etag');
  if (etag !== undefined && documented.headers.has('etag') && !/^"\d+"$/.test(etag)) problems.push(`ETag ${JSON.stringify(etag)} is not a strong tag "<version>"`);

  // Body.
  if (documented.content.size === 0) {
    if (res.payload !== '') problems.push(`${res.statusCode} documents no body but got ${JSON.stringify(res.payload.slice(0, 200))}`);
    return problems;
  }
  if (isHead) return problems;
  const type = mediaTypeOf(res);
  const validate = type === undefined ? undefined : documented.content.get(type);
  if (validate === undefined) {
    problems.push(`content-type ${String(type)} is not documented for ${res.statusCode} (documented: ${[...documented.content.keys()].join(', ')})`);
    return problems;
  }
  let body: unknown;
  try {
    body = JSON.parse(res.payload);
  } catch {
    problems.push(`body is not JSON: ${res.payload.slice(0, 200)}`);
    return problems;
  }
  if (!validate(body)) problems.push(`body breaks the ${res.statusCode} schema: ${ajvErrors(validate)}`);
  if (type === PROBLEM_CONTENT_TYPE) {
    const p = body as { status?: unknown };
    if (p.status !== res.statusCode) problems.push(`problem status ${String(p.status)} != HTTP status ${res.statusCode}`);
  }
  // The ETag names the version of the session in the body.
  if (etag !== undefined && body !== null && typeof body === 'object') {
    const version = (body as { version?: unknown; session?: { version?: unknown } }).version ?? (body as { session?: { version?: unknown } }).session?.version;
    if (typeof version === 'number' && etag !== `"${version}"`) problems.push(`ETag ${etag} does not name version ${version}`);
  }
  return problems;
}

/** checkResponse for a concrete URL: finds the operation first (route_not_found otherwise). */
export function checkResponseFor(method: string, url: string, res: ResponseLike): string[] {
  const route = matchRoute(method, url);
  if (route.kind === 'operation') return checkResponse(method, route.operation.path, res);
  if (route.kind === 'malformed') {
    if (res.statusCode !== 400 && res.statusCode !== 404) return [`status ${res.statusCode} for a malformed URL, expected 400 or 404`];
    const problems: string[] = [];
    if (method.toUpperCase() !== 'HEAD') checkProblem(res, ['invalid_request', 'route_not_found'], problems);
    return problems;
  }
  return checkResponse(method, undefined, res);
}
