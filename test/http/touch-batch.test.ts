import t, { type Test } from 'tap';
import type { FastifyInstance } from 'fastify';
import { mintApiKey } from '../../src/auth/api-keys.js';
import type { Config } from '../../src/config/config.js';
import { NamespacePolicies, type PolicyOverrides } from '../../src/domain/policies.js';
import { auth, KEY_A, KEY_B, testApp, testConfig } from '../helpers/app.js';
import { privateRedis, sharedRedisUrl } from '../helpers/redis.js';

// POST /v1/sessions/batch/touch (docs/design.md §3), on real MariaDB and Redis: each token
// answered as the single touch answers it, in order; the batch limit; the rate limit and the
// guessing monitor counting sessions, not requests; namespaces and keys as for the single
// call; and Redis down.

const JSON_CT = { 'content-type': 'application/json' };
const KEY_C = mintApiKey('app-c', 'tenant-a');

async function create(app: FastifyInstance, key: { key: string } = KEY_A, data: Record<string, unknown> = { n: 1 }): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(key), ...JSON_CT }, payload: JSON.stringify({ data, idleTimeout: 600 }) });
  if (res.statusCode !== 201) throw new Error(`create answered ${res.statusCode}: ${res.body}`);
  return res.json().token as string;
}

const batch = (app: FastifyInstance, tokens: unknown, key: { key: string } = KEY_A) =>
  app.inject({ method: 'POST', url: '/v1/sessions/batch/touch', headers: { ...auth(key), ...JSON_CT }, payload: JSON.stringify({ tokens }) });

const single = (app: FastifyInstance, token: string, key: { key: string } = KEY_A) =>
  app.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: { ...auth(key), 'session-token': token } });

function withKeys(namespaces: Record<string, PolicyOverrides> = {}): Partial<Config> {
  const defaults = testConfig('mysql://root@127.0.0.1:1/none').policies.defaults;
  return { apiKeys: [KEY_A.entry, KEY_B.entry, KEY_C.entry], policies: new NamespacePolicies(defaults, namespaces) };
}

/** The per-item answers every variant must give, on an app with a movable clock. */
async function perItemAnswers(t: Test, app: FastifyInstance, move: (ms: number) => void) {
  const a = await create(app, KEY_A, { who: 'a' });
  const b = await create(app, KEY_A, { who: 'b' });
  const other = await create(app, KEY_B, { who: 'tenant-b' });
  const gone = await create(app);
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': gone } })).statusCode, 204);
  const old = await create(app, KEY_A, { who: 'rotated' });
  const before = (await single(app, a)).json();
  // Past the touch persist threshold: MariaDB alone shows a touch only beyond it.
  move(120_000);
  const rot = await app.inject({ method: 'POST', url: '/v1/sessions/current/rotate', headers: { ...auth(), 'session-token': old, ...JSON_CT }, payload: '{"graceSeconds":30}' });
  t.equal(rot.statusCode, 201);

  const unknown = 'U'.repeat(43);
  const res = await batch(app, [a, unknown, b, 'short', other, gone, old, a]);
  t.equal(res.statusCode, 200);
  t.equal(res.headers['cache-control'], 'no-store');
  const { results } = res.json() as { results: Array<Record<string, any>> };
  t.equal(results.length, 8, 'one result per token');
  t.match(results[0], { status: 200, rotated: false, session: { data: { who: 'a' }, version: 1 } }, 'a live session: its view');
  t.notOk('code' in results[0]!, 'no code on a live session');
  t.ok(Date.parse(results[0]!.session.expiresAt) > Date.parse(before.expiresAt), 'the touch slid the idle expiry');
  t.same(results[1], { status: 404, code: 'session_not_found', detail: results[1]!.detail }, 'unknown token: 404, no session');
  t.match(results[2], { status: 200, session: { data: { who: 'b' } } }, 'in request order');
  t.match(results[3], { status: 404, code: 'session_not_found' }, 'a token of the wrong shape: 404');
  t.match(results[4], { status: 404, code: 'session_not_found' }, "another namespace's session is not found, as for the single call");
  t.match(results[5], { status: 404, code: 'session_not_found' }, 'a destroyed session: 404');
  t.match(results[6], { status: 200, rotated: true, session: { data: { who: 'rotated' } } }, 'a token in its rotation grace: the new session, rotated');
  t.match(results[7], { status: 200, session: { id: results[0]!.session.id } }, 'a token given twice is answered twice');
  t.notOk(res.body.includes(a) || res.body.includes(old), 'no token in the answer');

  // What the single call answers now agrees.
  const now = (await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': a } })).json();
  t.equal(now.expiresAt, results[7]!.session.expiresAt, 'the batch touch is stored like a single touch');
  t.equal((await single(app, other, KEY_B)).statusCode, 200, "tenant-b's session is untouched by tenant-a's batch and still there");
}

function clock() {
  let offset = 0;
  return { now: () => new Date(Date.now() + offset), move: (ms: number) => void (offset += ms) };
}

t.test('per-item answers, MariaDB alone', async (t) => {
  const c = clock();
  const { app } = await testApp(t, withKeys(), { clock: c.now });
  await perItemAnswers(t, app, c.move);
});

t.test('per-item answers, with Redis (one pipeline for the batch)', async (t) => {
  const c = clock();
  const { app } = await testApp(t, withKeys(), { clock: c.now, env: { REDIS_URL: await sharedRedisUrl(t) } });
  await perItemAnswers(t, app, c.move);
  t.equal(app.cacheCounters!.fallbacks, 0, 'Redis never failed');
  // Warm entries: a batch of hits is one pipeline, no MariaDB read.
  const tokens = await Promise.all([create(app), create(app), create(app)]);
  await batch(app, tokens);
  const hits = app.cacheCounters!.hits;
  const misses = app.cacheCounters!.misses;
  const res = await batch(app, tokens);
  t.same(res.json().results.map((r: { status: number }) => r.status), [200, 200, 200]);
  t.equal(app.cacheCounters!.hits - hits, 3, 'three hits');
  t.equal(app.cacheCounters!.misses, misses, 'no miss');
});

t.test('the batch limit, and malformed bodies', async (t) => {
  const { app } = await testApp(t, withKeys());
  const token = await create(app);
  const full = await batch(app, Array.from({ length: 100 }, () => token));
  t.equal(full.statusCode, 200, '100 tokens are taken');
  t.equal(full.json().results.length, 100);
  const over = await batch(app, Array.from({ length: 101 }, () => token));
  t.equal(over.statusCode, 400, '101 are not');
  t.match(over.headers['content-type'], /^application\/problem\+json/);
  t.match(over.json(), { status: 400, code: 'batch_too_large', maxBatch: 100 });
  t.notOk(over.body.includes(token), 'the problem names no token');
  t.match((await batch(app, [])).json(), { status: 400, code: 'invalid_request' }, 'an empty batch is invalid');
  t.match((await batch(app, [42])).json(), { status: 400, code: 'invalid_request' }, 'tokens are strings');
  t.match((await batch(app, 'x')).json(), { status: 400, code: 'invalid_request' });
  const noBody = await app.inject({ method: 'POST', url: '/v1/sessions/batch/touch', headers: auth() });
  t.ok(noBody.statusCode === 400 || noBody.statusCode === 415, `no body: ${noBody.statusCode}`);
  const extra = await app.inject({ method: 'POST', url: '/v1/sessions/batch/touch', headers: { ...auth(), ...JSON_CT }, payload: JSON.stringify({ tokens: [token], more: 1 }) });
  t.equal(extra.statusCode, 400, 'unknown members are refused');
});

t.test('auth: a key is required; each key reaches only its namespace', async (t) => {
  const { app } = await testApp(t, withKeys());
  const token = await create(app);
  const none = await app.inject({ method: 'POST', url: '/v1/sessions/batch/touch', headers: JSON_CT, payload: JSON.stringify({ tokens: [token] }) });
  t.equal(none.statusCode, 401);
  t.equal(none.json().code, 'unauthorized');
  const wrong = await app.inject({ method: 'POST', url: '/v1/sessions/batch/touch', headers: { authorization: 'Bearer nope', ...JSON_CT }, payload: JSON.stringify({ tokens: [token] }) });
  t.equal(wrong.statusCode, 401);
  t.match((await batch(app, [token], KEY_B)).json(), { results: [{ status: 404, code: 'session_not_found' }] }, "tenant-b's key does not reach tenant-a's session");
  t.match((await batch(app, [token], KEY_C)).json(), { results: [{ status: 200 }] }, "another client of tenant-a does");
});

t.test('the rate limit counts each session of a batch', async (t) => {
  const { app } = await testApp(t, withKeys({ 'tenant-a': { rateLimit: { max: 5, windowSeconds: 86_400 } } }));
  // Windows are aligned to the wall clock; a day-long one does not end during this test
  // unless it started in its last minute.
  const left = 86_400_000 - (Date.now() % 86_400_000);
  if (left < 60_000) await new Promise((r) => setTimeout(r, left + 50));
  const token = await create(app); // 1
  const three = await batch(app, [token, token, token]); // 4
  t.equal(three.statusCode, 200);
  t.equal(three.headers['x-ratelimit-remaining'], '1', 'a batch of 3 counted 3');
  const two = await batch(app, [token, token]); // 6 > 5
  t.equal(two.statusCode, 429, 'a batch that passes the limit is refused whole');
  t.match(two.json(), { status: 429, code: 'rate_limited' });
  t.equal(two.headers['x-ratelimit-remaining'], '0');
  t.ok(Number(two.headers['retry-after']) >= 1, 'with Retry-After');
  t.equal((await single(app, token)).statusCode, 429, 'and single calls are over the limit too');
  t.equal((await batch(app, [token], KEY_B)).statusCode, 200, 'another namespace is not limited by it');
  t.ok(app.rateLimitCounters.rejected >= 2, 'the refusals are counted');
});

t.test('the guessing monitor counts each token that matched nothing', async (t) => {
  const { app, logs } = await testApp(t, withKeys(), { env: { GUESSING_WARN_THRESHOLD: '4' } });
  const token = await create(app);
  const guesses = ['G'.repeat(43), 'H'.repeat(43), 'bad', 'I'.repeat(43)];
  const res = await batch(app, [token, ...guesses], KEY_C);
  t.equal(res.statusCode, 200, 'the batch itself is a 200');
  t.equal(app.guessingMonitor.failedLookups.get('app-c'), 4, 'four failed lookups for one request');
  const warnings = logs.filter((l) => l.includes('token guessing') && l.includes('"client":"app-c"'));
  t.equal(warnings.length, 1, 'the threshold is reached within one batch');
  t.notOk(logs.join('').includes(guesses[0]!) || logs.join('').includes(token), 'never a token in the logs');
  await batch(app, [token], KEY_C);
  t.equal(app.guessingMonitor.failedLookups.get('app-c'), 4, 'a batch of live sessions counts nothing');
});

t.test('Redis down: each session is served by MariaDB, as single touches are', async (t) => {
  const redis = await privateRedis(t);
  const { app } = await testApp(t, withKeys(), { env: { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '100' } });
  const a = await create(app, KEY_A, { who: 'a' });
  const b = await create(app, KEY_A, { who: 'b' });
  t.same((await batch(app, [a, b])).json().results.map((r: { status: number }) => r.status), [200, 200], 'warm');
  redis.kill('SIGSTOP'); // a stalled Redis: the pipeline hits its deadline
  t.teardown(() => redis.kill('SIGCONT'));
  const before = app.cacheCounters!.fallbacks;
  const stalled = await batch(app, [a, 'U'.repeat(43), b]);
  t.equal(stalled.statusCode, 200);
  t.match(stalled.json().results, [{ status: 200, session: { data: { who: 'a' } } }, { status: 404, code: 'session_not_found' }, { status: 200, session: { data: { who: 'b' } } }]);
  t.ok(app.cacheCounters!.fallbacks - before >= 3, 'each session served from MariaDB, counted');
  redis.kill('SIGKILL'); // gone: the breaker opens and no Redis call is tried
  for (let i = 0; i < 3; i++) await batch(app, [a]);
  const down = await batch(app, [b, a]);
  t.match(down.json().results, [{ status: 200, session: { data: { who: 'b' } } }, { status: 200, session: { data: { who: 'a' } } }]);
});
