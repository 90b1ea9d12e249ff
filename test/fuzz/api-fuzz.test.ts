/**
 * Fuzzes the HTTP API from its contract: random valid and invalid requests, through
 * `app.inject`, on an app with Redis and one without. Properties:
 *
 *  - no request ever gets a 5xx while MariaDB and Redis are healthy;
 *  - every response matches openapi.yaml (status documented for the operation, content type,
 *    body schema, documented headers — see contract.ts); unknown paths and methods get a 404
 *    `route_not_found` problem;
 *  - a request that is valid by the contract is never refused as malformed (400/413/415/428);
 *  - tenant B's key never sees tenant A's sessions; tenant B's tiny rate limit yields 429s
 *    whose Retry-After and x-ratelimit-* headers are checked too.
 *
 * Tenant A may create under tokens it chooses (clientTokens); tenant B may not (403).
 *
 * A small pool of real tokens and ids (kept up to date as sessions are rotated and destroyed)
 * makes valid calls hit live sessions. FUZZ_RUNS (default 250 per property; invalid requests
 * get twice that, sequences a fifth) scales the run — pass tap a longer --timeout for big runs;
 * FUZZ_SEED replays one (fast-check prints the seed, the shrunk request and the response on
 * failure).
 *
 *   FUZZ_RUNS=5000 npx tap --timeout=1800 test/fuzz/api-fuzz.test.ts
 */
import t from 'tap';
import { METHODS } from 'node:http';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { auth, KEY_A, KEY_B, testApp } from '../helpers/app.js';
import { sharedRedisUrl } from '../helpers/redis.js';
import { checkResponseFor, matchRoute } from './contract.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? '250');
/** Per property: a slow CI machine stops early (passing) rather than hit tap's file timeout. */
const TIME_LIMIT_MS = Number(process.env.FUZZ_TIME_LIMIT_MS ?? (process.env.FUZZ_RUNS === undefined ? '10000' : '3600000'));
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const fcParams = (runs = RUNS): fc.Parameters<unknown> => ({
  numRuns: runs,
  ...(SEED === undefined ? {} : { seed: SEED }),
  // Requests change the stores: shrinking replays them against a changed pool, which is fine
  // (every property holds for any pool state) but may take long; bound it.
  endOnFailure: false,
  interruptAfterTimeLimit: TIME_LIMIT_MS,
  markInterruptAsFailure: false,
});

// -------------------------------------------------------------------------------------------
// Requests as data: symbolic references to the pool are resolved when the request runs.

type TokenRef =
  | { kind: 'live'; pick: number }
  | { kind: 'missing' }
  | { kind: 'unknown' } // well-formed, names nothing
  | { kind: 'fresh'; length: number } // an app's own new token (create under a token)
  | { kind: 'raw'; value: string };
type IdRef = { kind: 'live'; pick: number } | { kind: 'raw'; segment: string };
type IfMatchRef = { kind: 'current' } | { kind: 'star' } | { kind: 'stale' } | { kind: 'list' } | { kind: 'none' } | { kind: 'raw'; value: string };
type AuthRef = 'a' | 'b' | 'none' | { raw: string };

interface Plan {
  label: string;
  method: string;
  /** Path with `{id}` / `{subject}` placeholders already filled, or containing `{id}` to resolve. */
  path: string;
  id?: IdRef;
  query?: string;
  token?: TokenRef;
  ifMatch?: IfMatchRef;
  ifNoneMatch?: string;
  auth: AuthRef;
  contentType?: string;
  /** The body text (already serialized: invalid requests carry raw text). */
  body?: string;
  /** The request is valid by the contract. */
  valid: boolean;
}

interface Live {
  token: string;
  id: string;
  version: number;
  subject: string | null;
}

const SUBJECTS = ['alice', 'bob', 'ünïcødé-👩‍💻', 'user:42/x?y'];

// -------------------------------------------------------------------------------------------
// Arbitraries built from the request schemas in openapi.yaml

/** Header-safe text: visible ASCII, space and tab, and obs-text (a real client can send these). */
const headerChar = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
  { weight: 1, arbitrary: fc.constant(0x09) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
).map((c) => String.fromCharCode(c));
const headerText = (maxLength = 80) => fc.string({ unit: headerChar, maxLength });

const jsonValue = fc.oneof(fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }), fc.jsonValue({ maxDepth: 4 }));
const dataKey = fc.oneof({ weight: 4, arbitrary: fc.string({ maxLength: 12 }) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) });
/**
 * Deeply nested JSON up to the documented limit: session data nests at most 31 levels of
 * objects and arrays (the data object, this value and a container leaf included).
 */
const deepValue = fc
  .record({ depth: fc.integer({ min: 1, max: 29 }), arrays: fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }), leaf: fc.jsonValue({ maxDepth: 1 }) })
  .map(({ depth, arrays, leaf }) => {
    let v: unknown = leaf;
    for (let i = 0; i < depth; i++) v = arrays[i] ? [v] : { k: v };
    return v as fc.JsonValue;
  });
/** SessionData: an arbitrary JSON object (kept well under the 64 KiB cap). */
const sessionData = fc.dictionary(dataKey, fc.oneof({ weight: 6, arbitrary: jsonValue }, { weight: 1, arbitrary: deepValue }), { maxKeys: 6 });
/** A merge patch: like data, with nulls to delete keys. */
const mergePatch = fc.dictionary(dataKey, fc.oneof({ weight: 6, arbitrary: jsonValue }, { weight: 1, arbitrary: deepValue }, { weight: 2, arbitrary: fc.constant(null) }), { maxKeys: 6 });

const codePointString = (min: number, max: number) => fc.string({ unit: 'binary', minLength: min, maxLength: max });
const metadata = fc.record(
  { ip: codePointString(0, 64), userAgent: codePointString(0, 512), label: codePointString(0, 128) },
  { requiredKeys: [] },
);
const timeout = fc.oneof(fc.integer({ min: 1, max: 100_000 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }));
const createBody = fc.record(
  {
    data: sessionData,
    subject: fc.oneof(fc.constantFrom(...SUBJECTS), codePointString(1, 255)),
    idleTimeout: timeout,
    absoluteTimeout: timeout,
    metadata,
  },
  { requiredKeys: [] },
);

const liveToken: fc.Arbitrary<TokenRef> = fc.nat().map((pick) => ({ kind: 'live', pick }));
const liveId: fc.Arbitrary<IdRef> = fc.nat().map((pick) => ({ kind: 'live', pick }));
const jsonType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'Application/JSON');
const subjectSegment = fc
  .oneof(
    { weight: 6, arbitrary: fc.constantFrom(...SUBJECTS) },
    { weight: 2, arbitrary: codePointString(1, 60) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 255 }).map((n) => 'u'.repeat(n)) },
  )
  .map(encodeURIComponent);

const validPlan: fc.Arbitrary<Plan> = fc.oneof(
  // create, with or without a body
  fc.record({ body: fc.option(createBody, { nil: undefined }), ct: jsonType }).map(({ body, ct }): Plan => ({
    label: 'create',
    method: 'POST',
    path: '/v1/sessions',
    auth: 'a',
    valid: true,
    ...(body === undefined ? {} : { body: JSON.stringify(body), contentType: ct }),
  })),
  // create under a token the app chose: a new one (201) or one in use (412)
  fc
    .record({
      token: fc.oneof(
        { weight: 3, arbitrary: fc.integer({ min: 32, max: 256 }).map((length): TokenRef => ({ kind: 'fresh', length })) },
        { weight: 1, arbitrary: liveToken },
      ),
      body: fc.option(createBody, { nil: undefined }),
      ct: jsonType,
    })
    .map(({ token, body, ct }): Plan => ({
      label: 'createWithToken',
      method: 'PUT',
      path: '/v1/sessions/current',
      token,
      ifNoneMatch: '*',
      auth: 'a',
      valid: true,
      ...(body === undefined ? {} : { body: JSON.stringify(body), contentType: ct }),
    })),
  liveToken.map((token): Plan => ({ label: 'read', method: 'GET', path: '/v1/sessions/current', token, auth: 'a', valid: true })),
  { arbitrary: liveToken.map((token): Plan => ({ label: 'touch', method: 'POST', path: '/v1/sessions/current/touch', token, auth: 'a', valid: true })), weight: 2 },
  fc
    .record({ token: liveToken, data: sessionData, ifMatch: fc.constantFrom<IfMatchRef>({ kind: 'current' }, { kind: 'star' }, { kind: 'stale' }, { kind: 'list' }), ct: jsonType })
    .map(({ token, data, ifMatch, ct }): Plan => ({ label: 'put', method: 'PUT', path: '/v1/sessions/current/data', token, ifMatch, auth: 'a', contentType: ct, body: JSON.stringify(data), valid: true })),
  fc
    .record({ token: liveToken, patch: mergePatch, ifMatch: fc.constantFrom<IfMatchRef>({ kind: 'none' }, { kind: 'current' }, { kind: 'star' }, { kind: 'stale' }) })
    .map(({ token, patch, ifMatch }): Plan => ({
      label: 'patch',
      method: 'PATCH',
      path: '/v1/sessions/current/data',
      token,
      ifMatch,
      auth: 'a',
      contentType: 'application/merge-patch+json',
      body: JSON.stringify(patch),
      valid: true,
    })),
  fc
    .record({ token: liveToken, body: fc.option(fc.record({ graceSeconds: fc.integer({ min: 0, max: 60 }) }, { requiredKeys: [] }), { nil: undefined }) })
    .map(({ token, body }): Plan => ({
      label: 'rotate',
      method: 'POST',
      path: '/v1/sessions/current/rotate',
      token,
      auth: 'a',
      valid: true,
      ...(body === undefined ? {} : { body: JSON.stringify(body), contentType: 'application/json' }),
    })),
  liveToken.map((token): Plan => ({ label: 'destroy', method: 'DELETE', path: '/v1/sessions/current', token, auth: 'a', valid: true })),
  liveId.map((id): Plan => ({ label: 'getById', method: 'GET', path: '/v1/sessions/{id}', id, auth: 'a', valid: true })),
  liveId.map((id): Plan => ({ label: 'revokeById', method: 'DELETE', path: '/v1/sessions/{id}', id, auth: 'a', valid: true })),
  fc
    .record({ subject: subjectSegment, limit: fc.option(fc.integer({ min: 1, max: 100 }), { nil: undefined }) })
    .map(({ subject, limit }): Plan => ({
      label: 'listSubject',
      method: 'GET',
      path: `/v1/subjects/${subject}/sessions`,
      ...(limit === undefined ? {} : { query: `limit=${limit}` }),
      auth: 'a',
      valid: true,
    })),
  fc
    .record({ subject: subjectSegment, keep: fc.option(liveId, { nil: undefined }) })
    .map(({ subject, keep }): Plan => ({
      label: 'revokeSubject',
      method: 'DELETE',
      path: `/v1/subjects/${subject}/sessions`,
      ...(keep === undefined ? {} : { id: keep, query: 'keep={id}' }),
      auth: 'a',
      valid: true,
    })),
);

/** Malformed JSON text and other bodies that are not what anyone should send. */
const badBodyText = fc.oneof(
  fc.constantFrom('', '{', '{"data":', 'null', '[]', '"x"', '1', 'true', '{"a":1,}', "{'a':1}", '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', '\u0000', '{"a":"\ud800"}'),
  fc.string({ maxLength: 60 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null'),
  fc.array(fc.constant('['), { minLength: 1, maxLength: 2000 }).map((a) => a.join('')), // deep nesting
);
const wrongType = fc.oneof(fc.constant(null), fc.boolean(), fc.double(), fc.string({ maxLength: 10 }), fc.array(fc.nat(), { maxLength: 3 }), fc.constant({}));
const badCreateBody = fc.oneof(
  fc.record({ data: wrongType.filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)) }),
  fc.record({ subject: fc.oneof(wrongType.filter((v) => typeof v !== 'string'), fc.constant(''), codePointString(256, 400)) }),
  fc.record({ idleTimeout: fc.oneof(wrongType, fc.integer({ max: 0 }), fc.double({ noInteger: true }), fc.constant('60')) }),
  fc.record({ absoluteTimeout: fc.oneof(wrongType, fc.integer({ max: 0 }), fc.constant(1e300)) }),
  fc.record({ metadata: fc.oneof(wrongType, fc.record({ ip: codePointString(65, 100) }), fc.record({ extra: fc.string() }), fc.record({ label: fc.nat() })) }),
  fc.record({ extraField: jsonValue }),
);
const badContentType = fc.oneof(
  fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/json-patch+json', 'application/merge-patch+json', 'application/json', 'application/problem+json', '*/*', '', 'application/json; charset=latin1', 'application/jsonx', ';'),
  headerText(40),
);
const badToken: fc.Arbitrary<TokenRef> = fc.oneof(
  fc.constant<TokenRef>({ kind: 'missing' }),
  fc.constant<TokenRef>({ kind: 'unknown' }),
  headerText(100).map((value): TokenRef => ({ kind: 'raw', value })),
  fc.constantFrom('', ' ', 'null', 'a'.repeat(43), 'a'.repeat(44), '+'.repeat(43), 'x'.repeat(5000)).map((value): TokenRef => ({ kind: 'raw', value })),
);
const badIfMatch: fc.Arbitrary<IfMatchRef> = fc.oneof(
  fc.constantFrom('W/"1"', '"abc"', '1', '""', '"-1"', '"0"', '"1.5"', '"99999999999999999999999"', '"1", W/"2"', '*, "1"', '', ' ', '"1"garbage', '"' + '9'.repeat(400) + '"').map((value): IfMatchRef => ({ kind: 'raw', value })),
  headerText(60).map((value): IfMatchRef => ({ kind: 'raw', value })),
);
const badAuth: fc.Arbitrary<AuthRef> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<AuthRef>('b') }, // another tenant (whose budget is 5 calls: 429s)
  fc.constantFrom<AuthRef>('none', { raw: 'Bearer' }, { raw: 'Bearer ' }, { raw: `Basic ${Buffer.from('a:b').toString('base64')}` }, { raw: `bearer ${KEY_A.key}` }, { raw: `Bearer ${KEY_A.key} ` }, { raw: `Bearer ${'k'.repeat(600)}` }),
  headerText(80).map((raw): AuthRef => ({ raw })),
);
const pathSegment = fc.oneof(
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
  fc.string({ unit: 'binary', maxLength: 20 }).map(encodeURIComponent),
  fc.constantFrom('', '.', '..', '%', '%zz', '%00', '%2F', 'current', 'sessions', 'v1', 'touch', 'data', 'rotate', '%E0%A4%A', 'x'.repeat(2000), ';', '*', '~'),
);
const oddMethod = fc.constantFrom(...METHODS.filter((m) => m !== 'CONNECT'));

/** Invalid requests: a valid one with one thing (or several) broken. */
const invalidPlan: fc.Arbitrary<Plan> = fc.oneof(
  // body: wrong types, extra fields, out-of-range values
  fc.record({ body: badCreateBody, ct: jsonType }).map(({ body, ct }): Plan => ({ label: 'create/bad-field', method: 'POST', path: '/v1/sessions', auth: 'a', contentType: ct, body: JSON.stringify(body), valid: false })),
  // malformed JSON on every body-taking operation
  fc
    .record({
      target: fc.constantFrom(
        { method: 'POST', path: '/v1/sessions', ct: 'application/json' },
        { method: 'POST', path: '/v1/sessions/current/rotate', ct: 'application/json' },
        { method: 'PUT', path: '/v1/sessions/current/data', ct: 'application/json' },
        { method: 'PATCH', path: '/v1/sessions/current/data', ct: 'application/merge-patch+json' },
      ),
      body: badBodyText,
      token: liveToken,
    })
    .map(({ target, body, token }): Plan => ({ label: 'bad-json', method: target.method, path: target.path, token, ifMatch: { kind: 'star' }, auth: 'a', contentType: target.ct, body, valid: false })),
  // wrong content types, with and without a body, on every operation
  fc
    .record({ plan: validPlan, ct: badContentType, body: fc.option(fc.oneof(badBodyText, sessionData.map((d) => JSON.stringify(d))), { nil: undefined }) })
    .map(({ plan, ct, body }): Plan => ({ ...plan, label: `${plan.label}/content-type`, contentType: ct, body: body ?? plan.body, valid: false })),
  // a body on operations that take none
  fc
    .record({ plan: validPlan.filter((p) => p.body === undefined), body: fc.oneof(badBodyText, sessionData.map((d) => JSON.stringify(d))), ct: fc.option(badContentType, { nil: undefined }) })
    .map(({ plan, body, ct }): Plan => ({ ...plan, label: `${plan.label}/unexpected-body`, body, contentType: ct ?? 'application/json', valid: false })),
  // huge strings: data over the cap, bodies over the body limit, long subjects and headers
  fc
    .record({
      token: liveToken,
      size: fc.constantFrom(70_000, 300_000),
      where: fc.constantFrom('create', 'put', 'patch'),
      unicode: fc.boolean(),
    })
    .map(({ token, size, where, unicode }): Plan => {
      const big = { blob: (unicode ? 'é' : 'x').repeat(size) };
      if (where === 'create') return { label: `huge/${where}`, method: 'POST', path: '/v1/sessions', auth: 'a', contentType: 'application/json', body: JSON.stringify({ data: big }), valid: false };
      return {
        label: `huge/${where}`,
        method: where === 'put' ? 'PUT' : 'PATCH',
        path: '/v1/sessions/current/data',
        token,
        ifMatch: { kind: 'star' },
        auth: 'a',
        contentType: where === 'put' ? 'application/json' : 'application/merge-patch+json',
        body: JSON.stringify(big),
        valid: false,
      };
    }),
  // missing / garbage Session-Token
  fc.record({ plan: validPlan.filter((p) => p.token !== undefined), token: badToken }).map(({ plan, token }): Plan => ({ ...plan, label: `${plan.label}/token`, token, valid: false })),
  // missing / garbage If-Match
  fc
    .record({ plan: validPlan.filter((p) => p.ifMatch !== undefined), ifMatch: fc.oneof(badIfMatch, fc.constant<IfMatchRef>({ kind: 'none' })) })
    .map(({ plan, ifMatch }): Plan => ({ ...plan, label: `${plan.label}/if-match`, ifMatch, valid: false })),
  // missing / garbage If-None-Match on create under a token
  fc
    .record({ plan: validPlan.filter((p) => p.ifNoneMatch !== undefined), ifNoneMatch: fc.option(fc.oneof(fc.constantFrom('"1"', 'W/"1"', '', ' ', '**', '*, "1"'), headerText(40)), { nil: undefined }) })
    .map(({ plan, ifNoneMatch }): Plan => {
      const { ifNoneMatch: _dropped, ...rest } = plan;
      return { ...rest, label: `${plan.label}/if-none-match`, ...(ifNoneMatch === undefined ? {} : { ifNoneMatch }), valid: false };
    }),
  // missing / garbage / another tenant's API key
  fc.record({ plan: validPlan, auth: badAuth }).map(({ plan, auth }): Plan => ({ ...plan, label: `${plan.label}/auth`, auth, valid: false })),
  // random path segments where ids and subjects go
  fc
    .record({ segment: pathSegment, op: fc.constantFrom('GET /v1/sessions/{id}', 'DELETE /v1/sessions/{id}', 'GET /v1/subjects/{id}/sessions', 'DELETE /v1/subjects/{id}/sessions') })
    .map(({ segment, op }): Plan => {
      const [method, path] = op.split(' ') as [string, string];
      return { label: 'path-param', method, path, id: { kind: 'raw', segment }, auth: 'a', valid: false };
    }),
  // garbage query strings
  fc
    .record({
      subject: subjectSegment,
      method: fc.constantFrom('GET', 'DELETE'),
      query: fc.oneof(
        fc.constantFrom('limit=0', 'limit=101', 'limit=-1', 'limit=abc', 'limit=1.5', 'limit=', 'limit=1&limit=2', 'limit=99999999999', 'cursor=', 'cursor=!!!', `cursor=${'A'.repeat(201)}`, 'cursor=eyJ4IjoxfQ', 'keep=', 'keep=a&keep=b', 'extra=1', '%zz=1', 'limit[]=1', 'cursor[a]=1'),
        fc.string({ maxLength: 40 }).map((q) => `cursor=${encodeURIComponent(q)}`),
        fc.string({ maxLength: 40 }).map((q) => `keep=${encodeURIComponent(q)}`),
        fc.string({ unit: 'binary', maxLength: 30 }).map((q) => encodeURIComponent(q)),
      ),
    })
    .map(({ subject, method, query }): Plan => ({ label: 'query', method, path: `/v1/subjects/${subject}/sessions`, query, auth: 'a', valid: false })),
  // odd methods on documented paths, and random paths
  fc
    .record({
      method: oddMethod,
      path: fc.oneof(
        fc.constantFrom('/v1/sessions', '/v1/sessions/current', '/v1/sessions/current/touch', '/v1/sessions/current/data', '/v1/sessions/current/rotate', '/v1/sessions/abc', '/v1/subjects/alice/sessions', '/v1', '/v1/', '/v1/sessions/', '/v1/sessions/current/', '//v1/sessions', '/V1/sessions', '/v1/sessions/current/touch/extra'),
        fc.array(pathSegment, { minLength: 1, maxLength: 5 }).map((segs) => `/v1/${segs.join('/')}`),
        fc.array(pathSegment, { minLength: 1, maxLength: 3 }).map((segs) => `/${segs.join('/')}`).filter((p) => !/^\/(healthz|readyz|metrics|docs)(\/|$|\?)/.test(p)),
      ),
      token: fc.oneof(liveToken, badToken),
      body: fc.option(badBodyText, { nil: undefined }),
    })
    .map(({ method, path, token, body }): Plan => ({ label: `method/${method}`, method, path, token, auth: 'a', valid: false, ...(body === undefined ? {} : { body, contentType: 'application/json' }) })),
);

// -------------------------------------------------------------------------------------------
// Running plans

interface Outcome {
  request: { method: string; url: string; headers: Record<string, string>; payload?: string };
  status: number;
  payload: string;
  problems: string[];
}

class Fuzzer {
  readonly pool: Live[] = [];
  readonly statuses = new Map<string, number>();
  requests = 0;
  readonly seen5xx: Outcome[] = [];
  readonly violations: Outcome[] = [];

  constructor(readonly app: FastifyInstance) {}

  async create(subject: string | null = null): Promise<void> {
    const res = await this.app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: { ...auth(), 'content-type': 'application/json' },
      payload: JSON.stringify({ data: { seed: true }, ...(subject === null ? {} : { subject }) }),
    });
    if (res.statusCode !== 201) throw new Error(`pool create failed: ${res.statusCode} ${res.payload}`);
    this.adopt(res.json());
  }

  adopt(issued: { token: string; session: { id: string; version: number; subject: string | null } }): void {
    this.pool.push({ token: issued.token, id: issued.session.id, version: issued.session.version, subject: issued.session.subject });
    if (this.pool.length > 24) this.pool.shift();
  }

  async refill(): Promise<void> {
    let i = 0;
    while (this.pool.length < 8) await this.create(SUBJECTS[i++ % SUBJECTS.length]!);
  }

  live(pick: number): Live {
    return this.pool[pick % this.pool.length]!;
  }

  async run(plan: Plan): Promise<Outcome> {
    await this.refill();
    const headers: Record<string, string> = {};
    if (plan.auth === 'a') Object.assign(headers, auth(KEY_A));
    else if (plan.auth === 'b') Object.assign(headers, auth(KEY_B));
    else if (plan.auth !== 'none') headers.authorization = plan.auth.raw;

    let live: Live | undefined;
    if (plan.token !== undefined) {
      const ref = plan.token;
      if (ref.kind === 'live') {
        live = this.live(ref.pick);
        headers['session-token'] = live.token;
      } else if (ref.kind === 'unknown') headers['session-token'] = randomBytes(32).toString('base64url');
      else if (ref.kind === 'fresh') headers['session-token'] = randomBytes(192).toString('base64url').slice(0, ref.length);
      else if (ref.kind === 'raw') headers['session-token'] = ref.value;
    }
    let idLive: Live | undefined;
    let id = '';
    if (plan.id !== undefined) {
      if (plan.id.kind === 'live') {
        idLive = this.live(plan.id.pick);
        id = idLive.id;
      } else id = plan.id.segment;
    }
    if (plan.ifMatch !== undefined) {
      const version = live?.version ?? 1;
      const m = plan.ifMatch;
      if (m.kind === 'current') headers['if-match'] = `"${version}"`;
      else if (m.kind === 'star') headers['if-match'] = '*';
      else if (m.kind === 'stale') headers['if-match'] = `"${version + 7}"`;
      else if (m.kind === 'list') headers['if-match'] = `"${version + 3}", "${version}"`;
      else if (m.kind === 'raw') headers['if-match'] = m.value;
    }
    if (plan.ifNoneMatch !== undefined) headers['if-none-match'] = plan.ifNoneMatch;
    if (plan.contentType !== undefined) headers['content-type'] = plan.contentType;
    const path = plan.path.replace('{id}', id);
    const query = plan.query?.replace('{id}', encodeURIComponent(id));
    const url = query === undefined ? path : `${path}?${query}`;
    const request = { method: plan.method, url, headers, ...(plan.body === undefined ? {} : { payload: plan.body }) };

    const res = await this.app.inject(request as never);
    this.requests++;
    const key = `${plan.label.split('/')[0]} ${res.statusCode}`;
    this.statuses.set(key, (this.statuses.get(key) ?? 0) + 1);

    // Keep the pool in step with what the service did.
    const route = matchRoute(plan.method, url);
    const op = route.kind === 'operation' ? route.operation.operationId : undefined;
    if (res.statusCode === 201 && plan.auth === 'a' && (op === 'createSession' || op === 'createSessionWithToken' || op === 'rotateCurrentSession')) {
      try {
        this.adopt(res.json());
      } catch {
        // contract check below reports it
      }
    }
    const forget = (l: Live | undefined) => {
      if (l === undefined) return;
      const i = this.pool.indexOf(l);
      if (i >= 0) this.pool.splice(i, 1);
    };
    if (live !== undefined) {
      if (res.statusCode === 404 && op !== undefined) forget(live);
      if (op === 'rotateCurrentSession' && res.statusCode === 201) forget(live);
      if (op === 'destroyCurrentSession' && res.statusCode === 204) forget(live);
      if (res.statusCode === 200 && (op === 'replaceCurrentSessionData' || op === 'patchCurrentSessionData')) {
        try {
          live.version = (res.json() as { version: number }).version;
        } catch {
          // reported below
        }
      }
      if (res.statusCode === 412 && op !== 'createSessionWithToken') {
        try {
          live.version = (res.json() as { currentVersion: number }).currentVersion;
        } catch {
          // reported below
        }
      }
    }
    if (idLive !== undefined) {
      if (op === 'revokeSessionById' && res.statusCode === 204) forget(idLive);
      if (op === 'getSessionById' && res.statusCode === 404) forget(idLive);
    }

    const problems = checkResponseFor(plan.method, url, { statusCode: res.statusCode, headers: res.headers as never, payload: res.payload });
    // Keys named __proto__ / constructor are valid JSON and valid data, but Fastify's parser
    // refuses them on purpose (prototype poisoning): such a body is not held against the service.
    const poisonous = plan.body !== undefined && /"(__proto__|constructor)"\s*:/.test(plan.body);
    if (plan.valid && !poisonous && [400, 413, 415, 428].includes(res.statusCode)) problems.push(`a valid request was refused with ${res.statusCode}`);
    // Tenant isolation: with tenant B's key, tenant A's sessions (the pool) never show.
    if (plan.auth === 'b' && res.statusCode < 300 && (live !== undefined || idLive !== undefined)) {
      const leaked = [live, idLive].some((l) => l !== undefined && res.payload.includes(l.id));
      if (leaked || (res.statusCode === 200 && op !== 'revokeSubjectSessions' && op !== 'listSubjectSessions')) problems.push(`tenant B got ${res.statusCode} for tenant A's session`);
    }
    const outcome: Outcome = { request, status: res.statusCode, payload: res.payload, problems };
    if (res.statusCode >= 500 && this.seen5xx.length < 20) this.seen5xx.push(outcome);
    if (problems.length > 0 && this.violations.length < 50) this.violations.push(outcome);
    return outcome;
  }
}

function describe(o: Outcome): string {
  const payload = o.request.payload === undefined ? '' : ` payload=${JSON.stringify(o.request.payload.length > 300 ? `${o.request.payload.slice(0, 300)}…(${o.request.payload.length} chars)` : o.request.payload)}`;
  const headers = Object.fromEntries(Object.entries(o.request.headers).map(([k, v]) => [k, k === 'authorization' && v.includes(KEY_A.key) ? v.replace(KEY_A.key, '<KEY_A>') : v.length > 200 ? `${v.slice(0, 200)}…` : v]));
  return `${o.request.method} ${o.request.url.length > 300 ? `${o.request.url.slice(0, 300)}…` : o.request.url} headers=${JSON.stringify(headers)}${payload}\n  → ${o.status} ${o.payload.slice(0, 400)}\n  problems: ${o.problems.join(' | ')}`;
}



/** The property: no 5xx, the response matches the contract. Throws with the reproduction. */
async function holds(fuzzer: Fuzzer, plan: Plan): Promise<void> {
  const o = await fuzzer.run(plan);
  if (o.status < 500 && o.problems.length === 0) return;
  throw new Error(`${o.status >= 500 ? '5xx' : 'contract violation'} (${plan.label}):\n${describe(o)}`);
}

function summary(fuzzer: Fuzzer): string {
  return [...fuzzer.statuses.entries()]
    .sort()
    .map(([k, v]) => `${k}:${v}`)
    .join('  ');
}

for (const withRedis of [false, true]) {
  t.test(`API fuzz ${withRedis ? 'with Redis' : 'MariaDB only'}`, async (t) => {
    // Tenant A may make plenty of calls (so the x-ratelimit-* headers show); tenant B's key
    // runs out after a few, so 429 answers and their Retry-After are checked too.
    const env: Record<string, string> = { RATE_LIMIT_MAX: '1000000', RATE_LIMIT_WINDOW_SECONDS: '3600' };
    if (withRedis) env.REDIS_URL = await sharedRedisUrl(t);
    const { app } = await testApp(t, {}, { env, namespaces: { 'tenant-a': { clientTokens: true }, 'tenant-b': { rateLimit: { max: 5, windowSeconds: 3600 } } } });
    const fuzzer = new Fuzzer(app);
    await fuzzer.refill();
    const started = Date.now();

    await t.test('valid requests: no 5xx, responses match the contract, none refused as malformed', async (t) => {
      const before = fuzzer.requests;
      await fc.assert(fc.asyncProperty(validPlan, (plan) => holds(fuzzer, plan)), fcParams());
      t.pass(`${fuzzer.requests - before} requests`);
    });
    await t.test('invalid requests: no 5xx, responses match the contract', async (t) => {
      const before = fuzzer.requests;
      await fc.assert(fc.asyncProperty(invalidPlan, (plan) => holds(fuzzer, plan)), fcParams(RUNS * 2));
      t.pass(`${fuzzer.requests - before} requests`);
    });
    await t.test('sequences of valid and invalid requests', async (t) => {
      const before = fuzzer.requests;
      await fc.assert(
        fc.asyncProperty(fc.array(fc.oneof(validPlan, invalidPlan), { minLength: 1, maxLength: 12 }), async (plans) => {
          for (const plan of plans) await holds(fuzzer, plan);
        }),
        fcParams(Math.max(10, Math.round(RUNS / 5))),
      );
      t.pass(`${fuzzer.requests - before} requests`);
    });
    t.comment(`${withRedis ? 'redis' : 'mariadb'}: ${fuzzer.requests} requests in ${((Date.now() - started) / 1000).toFixed(1)} s; statuses: ${summary(fuzzer)}`);
    if (fuzzer.seen5xx.length > 0) t.comment(`5xx seen:\n${fuzzer.seen5xx.map(describe).join('\n')}`);
  });
}
