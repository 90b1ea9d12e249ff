import type { Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { createHash } from 'node:crypto';
import { auth, KEY_A, KEY_B, testApp } from '../helpers/app.js';
import { query } from '../helpers/mariadb.js';

const JSON_CT = { 'content-type': 'application/json' };
type Reply = Awaited<ReturnType<FastifyInstance['inject']>>;

/** A token as express-session makes them: 32 characters (uid-safe of 24 bytes). */
export function clientToken(label: string, length = 32): string {
  return createHash('sha256').update(label).digest('base64url').slice(0, length).padEnd(length, 'x');
}

/**
 * Create under a token the app chose (PUT /v1/sessions/current), through inject(). Run on
 * MariaDB alone and with the Redis cache in front (`env` carries REDIS_URL). tenant-a has the
 * clientTokens policy on; tenant-b keeps the default (off).
 */
export async function clientTokensHttpSuite(t: Test, env: Record<string, string>): Promise<FastifyInstance> {
  let offsetMs = 0;
  const clock = () => new Date(Date.now() + offsetMs);
  const { app, url } = await testApp(t, {}, { clock, env, namespaces: { 'tenant-a': { clientTokens: true, maxSessionsPerSubject: 2 } } });

  const put = (token: string, body: unknown = {}, headers: Record<string, string> = { 'if-none-match': '*' }, key = KEY_A) =>
    app.inject({ method: 'PUT', url: '/v1/sessions/current', headers: { ...auth(key), ...JSON_CT, 'session-token': token, ...headers }, payload: JSON.stringify(body) });
  const read = (token: string) => app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': token } });
  const destroy = (token: string) => app.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': token } });

  function expectProblem(t: Test, res: Reply, status: number, code: string) {
    t.equal(res.statusCode, status, `status ${status}`);
    t.match(res.headers['content-type'], /^application\/problem\+json/);
    t.equal(res.json().code, code);
    return res.json() as { detail: string };
  }

  const rows = async (token: string) =>
    (await query<{ n: number }>(url, 'SELECT COUNT(*) AS n FROM sessions WHERE id_hash = ?', [createHash('sha256').update(token).digest()]))[0]!.n;

  t.test("creates under express-session's 32-character id: 201, the same response as create, only the hash stored", async (t) => {
    const token = clientToken('first');
    const res = await put(token, { data: { cart: ['sku-1'] }, subject: 'user-1', idleTimeout: 600, metadata: { label: 'phone' } });
    t.equal(res.statusCode, 201);
    t.equal(res.headers.etag, '"1"');
    t.equal(res.headers['cache-control'], 'no-store');
    const body = res.json() as { token: string; session: Record<string, string> };
    t.equal(body.token, token);
    t.equal(body.session.id, createHash('sha256').update(token).digest('base64url'), 'the id is base64url(SHA-256(token))');
    t.match(body.session, { subject: 'user-1', data: { cart: ['sku-1'] }, version: 1, metadata: { label: 'phone' } });
    t.equal(Date.parse(body.session.expiresAt!) - Date.parse(body.session.createdAt!), 600_000);
    const again = await read(token);
    t.equal(again.statusCode, 200);
    t.same(again.json().data, { cart: ['sku-1'] });
    t.equal(await rows(token), 1);
    const stored = await query<{ hit: number }>(url, 'SELECT COUNT(*) AS hit FROM sessions WHERE INSTR(CONCAT(id_hash, data), ?) > 0', [token]);
    t.equal(stored[0]!.hit, 0, 'the token itself is stored nowhere');
  });

  t.test('tokens of 43 (sessiond-made) and 256 characters are accepted; an empty body makes an empty session', async (t) => {
    for (const token of [clientToken('forty-three', 43), 'A-_z'.repeat(64)]) {
      const res = await app.inject({ method: 'PUT', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': token, 'if-none-match': '*' } });
      t.equal(res.statusCode, 201, `${token.length} characters`);
      t.same(res.json().session.data, {});
    }
  });

  t.test('a token in use is 412 session_exists and the session is left as it was', async (t) => {
    const token = clientToken('taken');
    t.equal((await put(token, { data: { mine: true } })).statusCode, 201);
    expectProblem(t, await put(token, { data: { theirs: true } }), 412, 'session_exists');
    t.same((await read(token)).json().data, { mine: true });
    t.equal(await rows(token), 1);
  });

  t.test('without If-None-Match: * it is 428; another If-None-Match is 400; nothing is written', async (t) => {
    const token = clientToken('preconditions');
    expectProblem(t, await put(token, {}, {}), 428, 'precondition_required');
    expectProblem(t, await put(token, {}, { 'if-none-match': '"1"' }), 400, 'invalid_request');
    t.equal(await rows(token), 0);
  });

  t.test('a token of the wrong shape is 400 naming the header', async (t) => {
    for (const token of ['a'.repeat(31), 'a'.repeat(257), `${'a'.repeat(40)}.x`, `${'a'.repeat(40)}==`, `${'a'.repeat(40)}/+`]) {
      const body = expectProblem(t, await put(token), 400, 'invalid_request');
      t.match(body.detail, /session-token/i, `names the header (${token.length} characters)`);
    }
  });

  t.test('bad bodies get the answers create gives', async (t) => {
    expectProblem(t, await put(clientToken('bad-body'), { data: [1] }), 400, 'invalid_request');
    expectProblem(t, await put(clientToken('bad-body'), { data: { big: 'x'.repeat(70_000) } }), 413, 'payload_too_large');
    t.equal(await rows(clientToken('bad-body')), 0);
  });

  t.test('a namespace without the clientTokens policy is 403 client_tokens_disabled', async (t) => {
    const token = clientToken('tenant-b');
    expectProblem(t, await put(token, {}, { 'if-none-match': '*' }, KEY_B), 403, 'client_tokens_disabled');
    t.equal(await rows(token), 0);
  });

  t.test('a destroyed token cannot be created again until its absolute expiry', async (t) => {
    const token = clientToken('destroyed');
    t.equal((await put(token, { data: { n: 1 }, absoluteTimeout: 3600 })).statusCode, 201);
    t.equal((await read(token)).statusCode, 200, 'read once: cached where there is a cache');
    t.equal((await destroy(token)).statusCode, 204);
    expectProblem(t, await put(token, { data: { n: 2 } }), 412, 'session_exists');
    t.equal((await read(token)).statusCode, 404, 'and it stays gone');
    offsetMs += 3_600_000 + 1000;
    try {
      const res = await put(token, { data: { n: 3 } });
      t.equal(res.statusCode, 201, 'free again after the absolute expiry of the destroyed session');
      const after = await read(token);
      t.equal(after.statusCode, 200, 'a tombstone left in Redis does not hide the new session');
      t.same(after.json().data, { n: 3 });
    } finally {
      offsetMs = 0;
    }
  });

  return app;
}
