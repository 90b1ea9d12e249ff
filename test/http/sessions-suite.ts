import type { Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { createHash } from 'node:crypto';
import { auth, KEY_A, KEY_A2, KEY_B, testApp } from '../helpers/app.js';
import { query } from '../helpers/mariadb.js';

const JSON_CT = { 'content-type': 'application/json' };
const PATCH_CT = { 'content-type': 'application/merge-patch+json' };

/**
 * The HTTP contract, through inject(), for every status code. Run once on MariaDB alone and
 * once with the Redis cache in front (`env` carries REDIS_URL): the answers must not differ.
 */
export async function sessionsHttpSuite(t: Test, env: Record<string, string>): Promise<FastifyInstance> {
  let offsetMs = 0;
  const clock = () => new Date(Date.now() + offsetMs);
  const { app, url, logs } = await testApp(t, {}, { clock, env });

  async function create(body: unknown = { data: { user: 42 } }, key = KEY_A) {
    const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(key), ...JSON_CT }, payload: JSON.stringify(body) });
    return { res, body: res.json() as { token: string; session: Record<string, unknown> } };
  }

  function expectProblem(t: Test, res: Awaited<ReturnType<typeof app.inject>>, status: number, code: string) {
    t.equal(res.statusCode, status, `status ${status}`);
    t.match(res.headers['content-type'], /^application\/problem\+json/);
    const body = res.json();
    t.equal(body.code, code);
    t.equal(body.status, status);
    t.type(body.title, 'string');
    return body;
  }

  const withToken = (token: string, key = KEY_A) => ({ ...auth(key), 'session-token': token });

  t.test('create returns 201 with a token, the session, an ETag and no-store', async (t) => {
    const { res, body } = await create({ data: { a: 1 }, subject: 'user-7', metadata: { ip: '203.0.113.9', userAgent: 'UA', label: 'phone' } });
    t.equal(res.statusCode, 201);
    t.match(body.token, /^[A-Za-z0-9_-]{43}$/);
    t.equal(res.headers.etag, '"1"');
    t.equal(res.headers['cache-control'], 'no-store');
    t.match(body.session, { subject: 'user-7', data: { a: 1 }, version: 1, metadata: { ip: '203.0.113.9', userAgent: 'UA', label: 'phone' } });
    t.equal(body.session.id, createHash('sha256').update(body.token).digest('base64url'), 'the id is the hash, not the token');
    t.equal(Date.parse(body.session.expiresAt as string) - Date.parse(body.session.createdAt as string), 1800 * 1000);
    t.equal(Date.parse(body.session.absoluteExpiresAt as string) - Date.parse(body.session.createdAt as string), 43_200 * 1000);
  });

  t.test('create with no body makes an empty session; timeouts are capped', async (t) => {
    const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: auth() });
    t.equal(res.statusCode, 201);
    t.same(res.json().session.data, {});
    const { body } = await create({ idleTimeout: 10_000_000, absoluteTimeout: 10_000_000 });
    const s = body.session as { createdAt: string; expiresAt: string; absoluteExpiresAt: string };
    t.equal(Date.parse(s.absoluteExpiresAt) - Date.parse(s.createdAt), 30 * 86_400 * 1000, 'absolute capped at the maximum');
    t.equal(Date.parse(s.expiresAt) - Date.parse(s.createdAt), 86_400 * 1000, 'idle capped at the maximum');
  });

  t.test('create rejects bad input with 400 and loses nothing', async (t) => {
    const before = (await query<{ n: number }>(url, 'SELECT COUNT(*) AS n FROM sessions'))[0]!.n;
    for (const body of [
      { data: [1, 2] },
      { data: 'x' },
      { subject: '' },
      { subject: 'x'.repeat(256) },
      { idleTimeout: 0 },
      { idleTimeout: 1.5 },
      { absoluteTimeout: '60' },
      { metadata: { ip: 1 } },
      { metadata: { other: 'x' } },
      { unknown: true },
    ]) {
      const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(), ...JSON_CT }, payload: JSON.stringify(body) });
      expectProblem(t, res, 400, 'invalid_request');
    }
    const malformed = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(), ...JSON_CT }, payload: '{"data":' });
    expectProblem(t, malformed, 400, 'invalid_request');
    const after = (await query<{ n: number }>(url, 'SELECT COUNT(*) AS n FROM sessions'))[0]!.n;
    t.equal(after, before, 'no row was written');
  });

  t.test('a schema error names each failing field by its JSON pointer, never echoing a secret', async (t) => {
    const cases: [Record<string, unknown>, string][] = [
      [{ idleTimeout: -1 }, '/idleTimeout'],
      [{ metadata: { ip: 1 } }, '/metadata/ip'],
      [{ unknown: true }, '/unknown'],
    ];
    for (const [body, pointer] of cases) {
      const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(), ...JSON_CT }, payload: JSON.stringify(body) });
      expectProblem(t, res, 400, 'invalid_request');
      const problem = res.json();
      t.equal(problem.errors?.[0]?.in, 'body', `${pointer}: in body`);
      t.equal(problem.errors?.[0]?.pointer, pointer, `${pointer}: named by its pointer`);
      t.match(problem.detail, pointer, `${pointer}: the detail names it too`);
    }
    const secret = 'not-a-token!' + 'x'.repeat(40);
    const res = await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': secret } });
    if (res.statusCode === 400) {
      t.equal(res.json().errors?.[0]?.in, 'headers');
      t.equal(res.json().errors?.[0]?.pointer, '/session-token');
    }
    t.notOk(res.body.includes(secret), 'the header value is not echoed');
  });

  t.test('data nested deeper than MariaDB stores is a 400, not a 500', async (t) => {
    const nest = (n: number): unknown => (n === 0 ? 1 : { a: nest(n - 1) });
    expectProblem(t, (await create({ data: nest(32) })).res, 400, 'invalid_request');
    const { res, body } = await create({ data: nest(31) });
    t.equal(res.statusCode, 201, '31 levels are stored');
    const patch = await app.inject({
      method: 'PATCH',
      url: '/v1/sessions/current/data',
      headers: { ...auth(), 'session-token': body.token, ...PATCH_CT },
      payload: JSON.stringify({ b: nest(32) }),
    });
    expectProblem(t, patch, 400, 'invalid_request');
  });

  t.test('a malformed URL is a problem+json 400', async (t) => {
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/%zz', headers: auth() }), 400, 'invalid_request');
  });

  t.test('data over the limit is 413', async (t) => {
    const big = { data: { blob: 'x'.repeat(64 * 1024) } };
    expectProblem(t, (await create(big)).res, 413, 'payload_too_large');
    const huge = 'y'.repeat(400 * 1024);
    const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(), ...JSON_CT }, payload: JSON.stringify({ data: { huge } }) });
    expectProblem(t, res, 413, 'payload_too_large');
  });

  t.test('read by token: 200, 404 for unknown, malformed, or another namespace; 400 without the header', async (t) => {
    const { body } = await create();
    const ok = await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token) });
    t.equal(ok.statusCode, 200);
    t.equal(ok.headers.etag, '"1"');
    t.same(ok.json(), body.session);
    const rotatedKey = await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token, KEY_A2) });
    t.equal(rotatedKey.statusCode, 200, "a client's second key reaches the same namespace");

    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token, KEY_B) }), 404, 'session_not_found');
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken('A'.repeat(43)) }), 404, 'session_not_found');
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken('not-a-token') }), 404, 'session_not_found');
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: auth() }), 400, 'invalid_request');
  });

  t.test('read and revoke by public id', async (t) => {
    const { body } = await create();
    const id = body.session.id as string;
    const ok = await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth() });
    t.equal(ok.statusCode, 200);
    t.equal(ok.json().id, id);
    expectProblem(t, await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth(KEY_B) }), 404, 'session_not_found');
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/nope', headers: auth() }), 404, 'session_not_found');
    t.equal((await app.inject({ method: 'DELETE', url: `/v1/sessions/${id}`, headers: auth(KEY_B) })).statusCode, 204, 'another tenant learns nothing');
    t.equal((await app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: auth() })).statusCode, 200, '…and changes nothing');
    t.equal((await app.inject({ method: 'DELETE', url: `/v1/sessions/${id}`, headers: auth() })).statusCode, 204);
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token) }), 404, 'session_not_found');
    t.equal((await app.inject({ method: 'DELETE', url: `/v1/sessions/${id}`, headers: auth() })).statusCode, 204, 'idempotent');
  });

  t.test('touch slides the expiry and never bumps the version', async (t) => {
    const { body } = await create();
    offsetMs = 120_000;
    t.teardown(() => (offsetMs = 0));
    const res = await app.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: withToken(body.token) });
    t.equal(res.statusCode, 200);
    const s = res.json();
    t.equal(s.version, 1);
    t.ok(Date.parse(s.expiresAt) > Date.parse(body.session.expiresAt as string), 'expiry moved forward');
    t.equal(Date.parse(s.lastSeenAt), Date.parse(s.expiresAt) - 1800 * 1000);
    expectProblem(t, await app.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: withToken(body.token, KEY_B) }), 404, 'session_not_found');
  });

  t.test('a session with a 1-second idle timeout is 404 two seconds later, and touch cannot revive it', async (t) => {
    const { body } = await create({ idleTimeout: 1 });
    offsetMs = 2000;
    t.teardown(() => (offsetMs = 0));
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token) }), 404, 'session_not_found');
    expectProblem(t, await app.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: withToken(body.token) }), 404, 'session_not_found');
    offsetMs = 0;
    t.equal((await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token) })).statusCode, 200, 'it was live before');
  });

  t.test('PUT data: 428 without If-Match, 412 with a stale one, 200 and a new ETag with the right one', async (t) => {
    const { body } = await create();
    const put = (headers: Record<string, string>, payload = '{"b":2}') =>
      app.inject({ method: 'PUT', url: '/v1/sessions/current/data', headers: { ...withToken(body.token), ...JSON_CT, ...headers }, payload });
    expectProblem(t, await put({}), 428, 'precondition_required');
    const stale = expectProblem(t, await put({ 'if-match': '"7"' }), 412, 'version_mismatch');
    t.equal(stale.currentVersion, 1, '412 carries the current version');
    expectProblem(t, await put({ 'if-match': 'garbage' }), 400, 'invalid_request');
    expectProblem(t, await put({ 'if-match': '"1"' }, '[1]'), 400, 'invalid_request');
    expectProblem(t, await put({ 'if-match': '"1"' }, JSON.stringify({ x: 'x'.repeat(70_000) })), 413, 'payload_too_large');
    const ok = await put({ 'if-match': '"1"' });
    t.equal(ok.statusCode, 200);
    t.equal(ok.headers.etag, '"2"');
    t.same(ok.json().data, { b: 2 });
    expectProblem(t, await put({ 'if-match': '"1"' }, '{"c":3}'), 412, 'version_mismatch');
    const wrongType = await app.inject({ method: 'PUT', url: '/v1/sessions/current/data', headers: { ...withToken(body.token), 'content-type': 'text/plain', 'if-match': '"2"' }, payload: 'x' });
    expectProblem(t, wrongType, 415, 'unsupported_media_type');
    expectProblem(t, await app.inject({ method: 'PUT', url: '/v1/sessions/current/data', headers: { ...withToken('B'.repeat(43)), ...JSON_CT, 'if-match': '"1"' }, payload: '{}' }), 404, 'session_not_found');
  });

  t.test('concurrent PUTs with the same If-Match: exactly one 200, the rest 412, and the winner is what remains', async (t) => {
    const { body } = await create();
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        app.inject({ method: 'PUT', url: '/v1/sessions/current/data', headers: { ...withToken(body.token), ...JSON_CT, 'if-match': '"1"' }, payload: JSON.stringify({ writer: i }) }),
      ),
    );
    const winners = results.filter((r) => r.statusCode === 200);
    t.equal(winners.length, 1);
    t.equal(results.filter((r) => r.statusCode === 412).length, 9);
    const final = await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token) });
    t.same(final.json().data, winners[0]!.json().data);
  });

  t.test('PATCH merges (RFC 7396), honours If-Match, needs the merge-patch content type', async (t) => {
    const { body } = await create({ data: { a: 1, b: { c: 2, d: 3 } } });
    const patch = (payload: unknown, headers: Record<string, string> = PATCH_CT) =>
      app.inject({ method: 'PATCH', url: '/v1/sessions/current/data', headers: { ...withToken(body.token), ...headers }, payload: JSON.stringify(payload) });
    const ok = await patch({ a: null, b: { d: 4 }, e: [5] });
    t.equal(ok.statusCode, 200);
    t.same(ok.json().data, { b: { c: 2, d: 4 }, e: [5] });
    t.equal(ok.headers.etag, '"2"');
    expectProblem(t, await patch({ x: 1 }, { ...PATCH_CT, 'if-match': '"1"' }), 412, 'version_mismatch');
    t.equal((await patch({ x: 1 }, { ...PATCH_CT, 'if-match': '"2"' })).statusCode, 200);
    expectProblem(t, await patch({ x: 1 }, JSON_CT), 415, 'unsupported_media_type');
    expectProblem(t, await patch([1]), 400, 'invalid_request');
    expectProblem(t, await patch({ big: 'x'.repeat(70_000) }), 413, 'payload_too_large');
    const parallel = await Promise.all(Array.from({ length: 8 }, (_, i) => patch({ [`k${i}`]: i })));
    t.ok(parallel.every((r) => r.statusCode === 200));
    const final = (await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token) })).json();
    for (let i = 0; i < 8; i++) t.equal(final.data[`k${i}`], i, `concurrent patch k${i} survived`);
  });

  t.test('rotate: new token works, old token is dead, data and absolute expiry carry over', async (t) => {
    const { body } = await create({ data: { role: 'user' }, subject: 'u-1' });
    const res = await app.inject({ method: 'POST', url: '/v1/sessions/current/rotate', headers: withToken(body.token) });
    t.equal(res.statusCode, 201);
    const rotated = res.json();
    t.not(rotated.token, body.token);
    t.not(rotated.session.id, body.session.id);
    t.same(rotated.session.data, { role: 'user' });
    t.equal(rotated.session.subject, 'u-1');
    t.equal(rotated.session.absoluteExpiresAt, body.session.absoluteExpiresAt);
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token) }), 404, 'session_not_found');
    t.equal((await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(rotated.token) })).statusCode, 200);
    expectProblem(t, await app.inject({ method: 'POST', url: '/v1/sessions/current/rotate', headers: withToken(body.token) }), 404, 'session_not_found');
    const withBody = await app.inject({ method: 'POST', url: '/v1/sessions/current/rotate', headers: { ...withToken(rotated.token), ...JSON_CT }, payload: '{"nope":1}' });
    expectProblem(t, withBody, 400, 'invalid_request');
  });

  t.test('DELETE current: 204, idempotent, and the token is dead', async (t) => {
    const { body } = await create();
    t.equal((await app.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: withToken(body.token) })).statusCode, 204);
    t.equal((await app.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: withToken(body.token) })).statusCode, 204);
    t.equal((await app.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: withToken('junk') })).statusCode, 204);
    for (const [method, path] of [['GET', '/v1/sessions/current'], ['POST', '/v1/sessions/current/touch'], ['POST', '/v1/sessions/current/rotate']] as const) {
      expectProblem(t, await app.inject({ method, url: path, headers: withToken(body.token) }), 404, 'session_not_found');
    }
    const put = await app.inject({ method: 'PUT', url: '/v1/sessions/current/data', headers: { ...withToken(body.token), ...JSON_CT, 'if-match': '*' }, payload: '{}' });
    expectProblem(t, put, 404, 'session_not_found');
  });

  t.test('authentication: 401 problem with WWW-Authenticate', async (t) => {
    const none = await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { 'session-token': 'x' } });
    expectProblem(t, none, 401, 'unauthorized');
    t.equal(none.headers['www-authenticate'], 'Bearer realm="sessiond"');
    const wrong = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { authorization: `Bearer ${KEY_A.key}x` } });
    expectProblem(t, wrong, 401, 'unauthorized');
    t.match(wrong.headers['www-authenticate'], /error="invalid_token"/);
    expectProblem(t, await app.inject({ method: 'POST', url: '/v1/sessions', headers: { authorization: `Basic ${KEY_A.key}` } }), 401, 'unauthorized');
    expectProblem(t, await app.inject({ method: 'POST', url: '/v1/sessions', headers: { authorization: 'Bearer ' } }), 401, 'unauthorized');
  });

  t.test('unknown routes and methods answer problem+json', async (t) => {
    expectProblem(t, await app.inject({ method: 'GET', url: '/v1/nothing-here', headers: auth() }), 404, 'route_not_found');
    expectProblem(t, await app.inject({ method: 'PUT', url: '/v1/sessions', headers: auth() }), 404, 'route_not_found');
    expectProblem(t, await app.inject({ method: 'GET', url: '/' }), 404, 'route_not_found');
    // Whatever the body: an unknown route never reads it (no 400, 413 or 415 instead of 404).
    const bodies = [
      { 'content-type': 'application/json', payload: '[' },
      { 'content-type': 'application/x-unknown', payload: 'x' },
      { 'content-type': 'application/json', payload: 'x'.repeat(2 * 1024 * 1024) },
      { 'content-type': 'not a media type', payload: '{}' },
    ];
    for (const { payload, ...headers } of bodies) {
      const res = await app.inject({ method: 'OPTIONS', url: '/v1/', headers: { ...auth(), ...headers }, payload });
      expectProblem(t, res, 404, 'route_not_found');
      t.ok(res.headers['x-request-id'], 'and it carries a request id');
    }
    // QUERY must carry a Content-Type (RFC 10008), but an unknown route is a 404 first.
    for (const url of ['/v1/sessions', '/nothing']) {
      const res = await app.inject({ method: 'QUERY' as 'GET', url, headers: auth() });
      expectProblem(t, res, 404, 'route_not_found');
      t.ok(res.headers['x-request-id'], 'and it carries a request id');
    }
  });

  t.test('responses carry a request id, echoed when the caller sent a sane one', async (t) => {
    const res = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'req-123' } });
    t.equal(res.headers['x-request-id'], 'req-123');
    const fresh = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'bad id with spaces' } });
    t.match(fresh.headers['x-request-id'], /^[0-9a-f-]{36}$/);
  });

  t.test('neither the table nor the logs hold a raw token or API key', async (t) => {
    const { body } = await create({ data: { x: 1 } });
    await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(body.token) });
    await app.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: withToken(body.token) });
    await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: withToken(`${body.token.slice(0, 42)}!`) });
    const rows = await query<{ dump: string }>(url, 'SELECT CONCAT_WS("|", namespace COLLATE utf8mb4_bin, HEX(id_hash), subject COLLATE utf8mb4_bin, data, metadata) AS dump FROM sessions');
    const tokenHex = Buffer.from(body.token).toString('hex').toUpperCase();
    for (const { dump } of rows) {
      t.notOk(dump.includes(body.token) || dump.includes(tokenHex), 'no raw token in a row');
    }
    const text = logs.join('');
    t.ok(text.length > 0, 'there are logs to look at');
    t.notOk(text.includes(body.token), 'no token in the logs');
    for (const key of [KEY_A, KEY_A2, KEY_B]) t.notOk(text.includes(key.key), 'no API key in the logs');
    t.match(text, body.session.id as string, 'sessions are named by their public id');
  });

  return app;
}
