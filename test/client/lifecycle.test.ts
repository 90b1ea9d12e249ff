import t, { type Test } from 'tap';
import type { AddressInfo } from 'node:net';
import createClient from 'openapi-fetch';
import type { components, paths } from './sessiond-api.js';
import { KEY_A, testApp } from '../helpers/app.js';
import { sharedRedisUrl } from '../helpers/redis.js';

/**
 * The whole lifecycle through a client generated from openapi.yaml (openapi-typescript types,
 * openapi-fetch calls) against the real service listening on a loopback port. `npx tsc -p
 * tsconfig.test.json` checks every call, parameter, body and answer here against the contract.
 */

type Session = components['schemas']['Session'];
type Problem = components['schemas']['Problem'];

const MERGE_PATCH = { 'Content-Type': 'application/merge-patch+json' } as const;

async function listeningClient(t: Test, env: Record<string, string>) {
  const { app } = await testApp(t, {}, { env, namespaces: { 'tenant-a': { clientTokens: true } } });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  const client = createClient<paths>({ baseUrl: `http://127.0.0.1:${port}`, headers: { Authorization: `Bearer ${KEY_A.key}` } });
  return { app, client };
}

type Client = Awaited<ReturnType<typeof listeningClient>>['client'];

/** Never called: tsc proves the generated client rejects calls the contract does not allow. */
export function contractViolationsDoNotCompile(client: Client): void {
  // @ts-expect-error -- the Session-Token header is required
  void client.GET('/v1/sessions/current');
  // @ts-expect-error -- no such route
  void client.GET('/v1/sessions', {});
  // @ts-expect-error -- session data is an object, not an array
  void client.PUT('/v1/sessions/current/data', { params: { header: { 'session-token': 't' } }, body: [] });
  // @ts-expect-error -- the subject is a string
  void client.POST('/v1/sessions', { body: { subject: 42 } });
  // @ts-expect-error -- create under a token names the token
  void client.PUT('/v1/sessions/current', { params: { header: { 'if-none-match': '*' } }, body: {} });
  // @ts-expect-error -- limit is an integer
  void client.GET('/v1/subjects/{subject}/sessions', { params: { path: { subject: 's' }, query: { limit: 'ten' } } });
}

/** The problem body of an error answer, with the status the contract gave it. */
function expectProblem(t: Test, status: number, code: Problem['code'], res: { error?: Problem; response: Response }): Problem {
  t.equal(res.response.status, status, `status ${status}`);
  t.match(res.response.headers.get('content-type'), /^application\/problem\+json/);
  t.ok(res.error, 'a problem body');
  const problem = res.error!;
  t.equal(problem.code, code);
  t.equal(problem.status, status);
  return problem;
}

async function lifecycle(t: Test, env: Record<string, string>) {
  const { app, client } = await listeningClient(t, env);
  const subject = `user-${Math.random().toString(36).slice(2)}`;
  const as = (token: string) => ({ header: { 'session-token': token } });

  // create, with a subject and metadata
  const created = await client.POST('/v1/sessions', {
    body: { data: { cart: [], theme: 'dark' }, subject, idleTimeout: 1800, metadata: { ip: '203.0.113.7', userAgent: 'Mozilla/5.0', label: 'laptop' } },
  });
  t.equal(created.response.status, 201);
  t.notOk(created.error);
  const issued: components['schemas']['IssuedSession'] = created.data!;
  t.match(issued.token, /^[A-Za-z0-9_-]{43}$/);
  t.match(issued.session, { subject, version: 1, data: { cart: [], theme: 'dark' }, metadata: { label: 'laptop' } });
  t.equal(created.response.headers.get('etag'), '"1"');
  t.ok(Number(created.response.headers.get('x-ratelimit-limit')) > 0, 'rate-limit headers');
  const first = issued.token;
  const firstId = issued.session.id;

  // read, by token and by public id
  const read = await client.GET('/v1/sessions/current', { params: as(first) });
  t.equal(read.response.status, 200);
  t.equal(read.data?.id, firstId);
  t.equal(read.response.headers.get('etag'), '"1"');
  const byId = await client.GET('/v1/sessions/{id}', { params: { path: { id: firstId } } });
  t.equal(byId.data?.subject, subject);

  // touch: the idle expiry never moves backwards
  const touched = await client.POST('/v1/sessions/current/touch', { params: as(first) });
  t.equal(touched.response.status, 200);
  const afterTouch: Session = touched.data!;
  t.ok(Date.parse(afterTouch.expiresAt) >= Date.parse(issued.session.expiresAt));
  t.ok(Date.parse(afterTouch.expiresAt) <= Date.parse(afterTouch.absoluteExpiresAt));

  // PUT: compare-and-set on the version
  const stale = await client.PUT('/v1/sessions/current/data', {
    params: { header: { 'session-token': first, 'if-match': '"7"' } },
    body: { cart: ['lost-update'] },
  });
  t.equal(expectProblem(t, 412, 'version_mismatch', stale).currentVersion, 1, 'the problem names the current version');
  const noIfMatch = await client.PUT('/v1/sessions/current/data', { params: as(first), body: { cart: [] } });
  expectProblem(t, 428, 'precondition_required', noIfMatch);
  const replaced = await client.PUT('/v1/sessions/current/data', {
    params: { header: { 'session-token': first, 'if-match': read.response.headers.get('etag')! } },
    body: { cart: ['sku-1'], theme: 'dark' },
  });
  t.equal(replaced.response.status, 200);
  t.equal(replaced.response.headers.get('etag'), '"2"');
  t.same(replaced.data?.data, { cart: ['sku-1'], theme: 'dark' });
  t.equal(replaced.data?.version, 2);

  // PATCH: RFC 7396 merge patch; openapi-fetch JSON-serializes the body, the header names the media type
  const patched = await client.PATCH('/v1/sessions/current/data', {
    params: { header: { 'session-token': first, 'if-match': '"2"' } },
    headers: MERGE_PATCH,
    body: { coupon: 'WELCOME', theme: null },
  });
  t.equal(patched.response.status, 200);
  t.equal(patched.response.headers.get('etag'), '"3"');
  t.same(patched.data?.data, { cart: ['sku-1'], coupon: 'WELCOME' }, 'null removed the key');
  const plainJson = await client.PATCH('/v1/sessions/current/data', { params: as(first), body: { coupon: null } });
  expectProblem(t, 415, 'unsupported_media_type', plainJson);

  // two more devices of the same subject, then the device list
  const second = (await client.POST('/v1/sessions', { body: { subject, metadata: { label: 'phone' } } })).data!;
  const third = (await client.POST('/v1/sessions', { body: { subject, metadata: { label: 'tablet' } } })).data!;
  const listed = await client.GET('/v1/subjects/{subject}/sessions', { params: { path: { subject }, query: { limit: 10 } } });
  t.equal(listed.response.status, 200);
  const page: components['schemas']['SubjectSessionPage'] = listed.data!;
  t.same(page.sessions.map((s) => s.id).sort(), [firstId, second.session.id, third.session.id].sort());
  t.equal(page.nextCursor, null);
  t.notOk('token' in page.sessions[0]! || 'data' in page.sessions[0]!, 'never a token or data');
  const small = await client.GET('/v1/subjects/{subject}/sessions', { params: { path: { subject }, query: { limit: 2 } } });
  t.equal(small.data?.sessions.length, 2);
  const rest = await client.GET('/v1/subjects/{subject}/sessions', { params: { path: { subject }, query: { limit: 2, cursor: small.data!.nextCursor! } } });
  t.equal(rest.data?.sessions.length, 1, 'the cursor reaches the last page');

  // revoke one device by its public id
  const revokedOne = await client.DELETE('/v1/sessions/{id}', { params: { path: { id: third.session.id } } });
  t.equal(revokedOne.response.status, 204);
  expectProblem(t, 404, 'session_not_found', await client.GET('/v1/sessions/current', { params: as(third.token) }));

  // rotate: the old token dies, the new one carries the data and version over
  const rotated = await client.POST('/v1/sessions/current/rotate', { params: as(first), body: {} });
  t.equal(rotated.response.status, 201);
  const current = rotated.data!;
  t.not(current.token, first);
  t.not(current.session.id, firstId);
  t.match(current.session, { subject, version: 3, data: { cart: ['sku-1'], coupon: 'WELCOME' } });
  expectProblem(t, 404, 'session_not_found', await client.GET('/v1/sessions/current', { params: as(first) }));
  t.equal((await client.GET('/v1/sessions/current', { params: as(current.token) })).data?.id, current.session.id, 'the new token works');

  // log out everywhere else
  const everywhere = await client.DELETE('/v1/subjects/{subject}/sessions', { params: { path: { subject }, query: { keep: current.session.id } } });
  t.equal(everywhere.response.status, 200);
  t.same(everywhere.data, { revoked: 1 }, 'only the phone was still live');
  expectProblem(t, 404, 'session_not_found', await client.GET('/v1/sessions/current', { params: as(second.token) }));
  const left = await client.GET('/v1/subjects/{subject}/sessions', { params: { path: { subject } } });
  t.same(left.data?.sessions.map((s) => s.id), [current.session.id], 'the kept session is the only device');

  // destroy (log out): idempotent, and the token reads no more
  const destroyed = await client.DELETE('/v1/sessions/current', { params: as(current.token) });
  t.equal(destroyed.response.status, 204);
  t.equal((await client.DELETE('/v1/sessions/current', { params: as(current.token) })).response.status, 204, 'idempotent');
  expectProblem(t, 404, 'session_not_found', await client.GET('/v1/sessions/current', { params: as(current.token) }));

  // an id the app chose (express-session's are 32 characters): once; then taken, also once destroyed
  const own = `own-${Math.random().toString(36).slice(2)}`.padEnd(32, '0');
  const claim = (body = {}) => client.PUT('/v1/sessions/current', { params: { header: { 'session-token': own, 'if-none-match': '*' } }, body });
  const claimed = await claim({ data: { cart: [] } });
  t.equal(claimed.response.status, 201);
  t.equal(claimed.data?.token, own);
  t.same((await client.GET('/v1/sessions/current', { params: as(own) })).data?.data, { cart: [] });
  expectProblem(t, 412, 'session_exists', await claim());
  await client.DELETE('/v1/sessions/current', { params: as(own) });
  expectProblem(t, 412, 'session_exists', await claim());
  expectProblem(t, 404, 'session_not_found', await client.GET('/v1/sessions/current', { params: as(own) }));

  // a wrong API key is a typed 401 problem
  const stranger = createClient<paths>({ baseUrl: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, headers: { Authorization: 'Bearer nope' } });
  expectProblem(t, 401, 'unauthorized', await stranger.GET('/v1/sessions/{id}', { params: { path: { id: firstId } } }));

  return app;
}

t.test('the generated client drives the whole lifecycle (MariaDB alone)', async (t) => {
  await lifecycle(t, {});
});

t.test('the generated client drives the whole lifecycle (with the Redis cache)', async (t) => {
  const app = await lifecycle(t, { REDIS_URL: await sharedRedisUrl(t) });
  const counters = app.cacheCounters!;
  t.ok(counters.hits + counters.misses > 0, 'the cache was in play');
});
