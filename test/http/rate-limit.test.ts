import t, { type Test } from 'tap';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { Redis } from 'ioredis';
import { buildApp } from '../../src/app.js';
import { mintApiKey } from '../../src/auth/api-keys.js';
import type { Config } from '../../src/config/config.js';
import { NamespacePolicies, type PolicyOverrides } from '../../src/domain/policies.js';
import { auth, KEY_A, KEY_A2, KEY_B, testApp, testConfig } from '../helpers/app.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { privateRedis } from '../helpers/redis.js';

// Another client of tenant-a, and a client of a third namespace.
const KEY_C = mintApiKey('app-c', 'tenant-a');
const KEY_D = mintApiKey('app-d', 'tenant-d');
const DAY = 86_400;

/** Config overrides: the extra keys, and per-namespace rate limits over the env defaults. */
function overrides(namespaces: Record<string, PolicyOverrides>): Partial<Config> {
  const defaults = testConfig('mysql://root@127.0.0.1:1/none').policies.defaults;
  return {
    apiKeys: [KEY_A.entry, KEY_A2.entry, KEY_B.entry, KEY_C.entry, KEY_D.entry],
    policies: new NamespacePolicies(defaults, namespaces),
  };
}

/** Windows are aligned to the wall clock: don't start a counting test in the last seconds of one. */
async function freshWindow(windowSeconds: number): Promise<void> {
  const left = windowSeconds * 1000 - (Date.now() % (windowSeconds * 1000));
  if (left < 20_000) await sleep(left + 50);
}

/** A second replica: another app on the same database and Redis. */
async function replica(t: Test, url: string, o: Partial<Config>, env: Record<string, string>): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(url, o, env), { logger: false });
  t.teardown(() => app.close());
  await app.ready();
  return app;
}

/** A cheap authenticated call: a token of the wrong shape is answered 404 without a query. */
const probe = (app: FastifyInstance, key: { key: string } = KEY_A) =>
  app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(key), 'session-token': 'x' } });

async function createSession(app: FastifyInstance, key: { key: string } = KEY_A): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(key), 'content-type': 'application/json' }, payload: '{"data":{"n":1}}' });
  if (res.statusCode !== 201) throw new Error(`create answered ${res.statusCode}: ${res.body}`);
  return res.json().token as string;
}

const touch = (app: FastifyInstance, token: string, key: { key: string } = KEY_A) =>
  app.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: { ...auth(key), 'session-token': token } });

const statuses = (replies: LightMyRequestResponse[]) => replies.map((r) => r.statusCode).join(',');

function expect429(t: Test, res: LightMyRequestResponse, max: number, windowSeconds: number) {
  t.equal(res.statusCode, 429, 'over the limit: 429');
  t.match(res.headers['content-type'], /^application\/problem\+json/);
  t.match(res.json(), { type: 'about:blank', title: 'Too Many Requests', status: 429, code: 'rate_limited', detail: String });
  const retryAfter = Number(res.headers['retry-after']);
  t.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= windowSeconds, `Retry-After ${res.headers['retry-after']} s: until the window ends`);
  t.equal(res.headers['x-ratelimit-limit'], String(max));
  t.equal(res.headers['x-ratelimit-remaining'], '0');
  t.equal(res.headers['x-ratelimit-reset'], res.headers['retry-after']);
}

t.test('a client over its limit gets 429 problem+json with Retry-After; other clients are not limited', async (t) => {
  const redis = await privateRedis(t);
  const o = overrides({ 'tenant-a': { rateLimit: { max: 3, windowSeconds: DAY } }, 'tenant-b': { rateLimit: { max: 0 } }, 'tenant-d': { rateLimit: { max: 5, windowSeconds: 600 } } });
  const { app } = await testApp(t, o, { env: { REDIS_URL: redis.url } });
  await freshWindow(DAY);

  const ok = [await probe(app), await probe(app), await probe(app)];
  t.equal(statuses(ok), '404,404,404', 'within the limit the call is answered as usual');
  t.same(ok.map((r) => r.headers['x-ratelimit-remaining']), ['2', '1', '0'], 'x-ratelimit-remaining counts down');
  t.ok(ok.every((r) => r.headers['x-ratelimit-limit'] === '3'), 'x-ratelimit-limit on successful answers too');
  const reset = Number(ok[0]!.headers['x-ratelimit-reset']);
  const expectedReset = Math.ceil((DAY * 1000 - (Date.now() % (DAY * 1000))) / 1000);
  t.ok(Math.abs(reset - expectedReset) <= 2, `x-ratelimit-reset ${reset} s: the end of the wall-clock-aligned window (≈ ${expectedReset})`);

  const limited = await probe(app);
  expect429(t, limited, 3, DAY);
  t.equal(app.rateLimitCounters.rejected, 1, 'the rejection is counted');
  const create = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(), 'content-type': 'application/json' }, payload: '{}' });
  t.equal(create.statusCode, 429, 'every /v1 route shares the client budget: no session created');
  expect429(t, await probe(app, KEY_A2), 3, DAY);
  t.pass('a rotated key of the same client shares its budget');

  const other = await probe(app, KEY_C);
  t.equal(other.statusCode, 404, 'another client of the same namespace, same second: not limited');
  t.equal(other.headers['x-ratelimit-remaining'], '2');

  const unlimited = await probe(app, KEY_B);
  t.equal(unlimited.statusCode, 404, 'a namespace with max 0 is not limited');
  t.equal(unlimited.headers['x-ratelimit-limit'], undefined, 'and gets no rate-limit headers');

  const ownPolicy = await probe(app, KEY_D);
  t.equal(ownPolicy.headers['x-ratelimit-limit'], '5', 'limits come from the namespace policy');
  t.ok(Number(ownPolicy.headers['x-ratelimit-reset']) <= 600, 'and so does the window');

  const anonymous = await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { 'session-token': 'x' } });
  t.equal(anonymous.statusCode, 401, 'unauthenticated: 401 from authentication, before the limiter');
  t.equal(anonymous.headers['x-ratelimit-limit'], undefined, 'not counted: no rate-limit headers');
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'probes outside /v1 are never limited');
  t.equal(app.rateLimitCounters.rejected, 3);
});

t.test('two replicas share one count per client through Redis (after a flush)', async (t) => {
  const redis = await privateRedis(t);
  const o = overrides({ 'tenant-a': { rateLimit: { max: 5, windowSeconds: DAY } } });
  const env = { REDIS_URL: redis.url };
  const { app: a, url } = await testApp(t, o, { env });
  const b = await replica(t, url, o, env);
  await freshWindow(DAY);
  const check = new Redis(redis.url);
  t.teardown(() => check.disconnect());
  const key = `rl:{tenant-a:app-a}:${DAY * 1000}:${Math.floor(Date.now() / (DAY * 1000))}`;
  /** Until Redis holds `n` (a flush went out, within ~50 ms), then a moment for the reply to be read. */
  async function flushed(n: number) {
    for (let i = 0; i < 200 && Number(await check.get(key)) < n; i++) await sleep(10);
    t.equal(await check.get(key), String(n), `Redis holds ${n}`);
    await sleep(30);
  }

  t.equal(statuses([await probe(a), await probe(a), await probe(a)]), '404,404,404');
  await flushed(3);
  t.equal((await probe(b)).statusCode, 404, 'b has not heard of a yet');
  await flushed(4);
  const fifth = await probe(b);
  t.equal(fifth.statusCode, 404);
  t.equal(fifth.headers['x-ratelimit-remaining'], '0', 'b counts the requests a answered');
  expect429(t, await probe(b), 5, DAY);
  t.pass('b rejects its third request: the limit is global, not per replica');
  t.equal((await probe(a)).statusCode, 404, 'a, not yet refreshed, lets one more through (over-admission bounded by the flush interval)');
  await flushed(7);
  expect429(t, await probe(a), 5, DAY);
  t.pass('after its flush a rejects too, having made only 5 requests itself');

  await flushed(8);
  t.same(await check.keys('rl:*'), [key], 'one Redis counter for the client and window, holding every request of both replicas (the rejected ones too)');
});

t.test('a replica that shuts down sends its last counts first', async (t) => {
  const redis = await privateRedis(t);
  const o = overrides({ 'tenant-a': { rateLimit: { max: 100, windowSeconds: DAY } } });
  const url = await migratedDatabase(t);
  const app = await buildApp(testConfig(url, o, { REDIS_URL: redis.url }), { logger: false });
  await app.ready();
  await freshWindow(DAY);
  t.equal(statuses([await probe(app), await probe(app), await probe(app)]), '404,404,404');
  await app.close(); // at once: the flush interval has not passed
  const check = new Redis(redis.url);
  t.teardown(() => check.disconnect());
  t.equal(await check.get(`rl:{tenant-a:app-a}:${DAY * 1000}:${Math.floor(Date.now() / (DAY * 1000))}`), '3');
});

t.test('Redis down: no 500, each replica limits on its own counts', async (t) => {
  const redis = await privateRedis(t);
  const o = overrides({ 'tenant-a': { rateLimit: { max: 5, windowSeconds: DAY } } });
  const env = { REDIS_URL: redis.url };
  const { app: a, url } = await testApp(t, o, { env });
  const b = await replica(t, url, o, env);
  await freshWindow(DAY);

  const token = await createSession(a); // 1 request on a
  await sleep(200); // flushed: Redis holds 1
  redis.kill('SIGKILL');
  await sleep(50);

  const started = performance.now();
  const onA: LightMyRequestResponse[] = [];
  for (let i = 0; i < 6; i++) onA.push(await touch(a, token));
  const onB: LightMyRequestResponse[] = [];
  for (let i = 0; i < 7; i++) onB.push(await touch(b, token));
  const ms = performance.now() - started;

  t.equal(statuses(onA), '200,200,200,200,429,429', 'a: its 4 remaining requests served from MariaDB, then limited on its own count');
  t.equal(statuses(onB), '200,200,200,200,200,429,429', 'b: the full limit on its own count, then limited');
  t.ok([...onA, ...onB].every((r) => r.statusCode < 500), 'never a 5xx from the limiter');
  expect429(t, onB[5]!, 5, DAY);
  t.ok(ms < 3000, `13 calls with Redis dead took ${ms.toFixed(0)} ms: no request waits on Redis`);
  await sleep(200); // the flushers ran into the dead Redis meanwhile
  const failed = a.rateLimitCounters.flushFailures + b.rateLimitCounters.flushFailures;
  const skipped = a.rateLimitCounters.flushesSkipped + b.rateLimitCounters.flushesSkipped;
  t.ok(failed + skipped >= 1, `the outage is visible in the counters: ${failed} flushes failed, ${skipped} held back by the open breaker`);
  t.comment(`Redis down: the effective limit is up to replicas × max (here 2 × 5); a's last flush before the outage made it count 1 + 4`);
});

t.test('no Redis configured: the limit is enforced in the process', async (t) => {
  const { app } = await testApp(t, overrides({ 'tenant-a': { rateLimit: { max: 2, windowSeconds: DAY } } }));
  t.equal(app.redis, undefined);
  await freshWindow(DAY);
  t.equal(statuses([await probe(app), await probe(app)]), '404,404');
  expect429(t, await probe(app), 2, DAY);
  t.equal((await probe(app, KEY_C)).statusCode, 404, 'another client is not limited');
  t.equal(app.rateLimitCounters.flushes, 0, 'nothing to flush to');
});

t.test('measured: the limiter adds no Redis round trip per request', async (t) => {
  const K = 200;
  const redis = await privateRedis(t);
  // tenant-a is limited (a limit it never reaches), tenant-b is not limited at all (max 0: the limiter skips it).
  const o = overrides({ 'tenant-a': { rateLimit: { max: 1_000_000_000, windowSeconds: DAY } }, 'tenant-b': { rateLimit: { max: 0 } } });
  const { app } = await testApp(t, o, { env: { REDIS_URL: redis.url } });
  const info = new Redis(redis.url);
  t.teardown(() => info.disconnect());
  /**
   * total_commands_processed counts the commands run inside Lua scripts too (a warm touch is
   * one EVALSHA that runs HMGET and HSET: 3). The requests the app sends are the top-level
   * commands: here every one of them is a script call (EVALSHA, or EVAL once per script).
   */
  const stats = async () => {
    const text = (await info.call('INFO', 'stats', 'commandstats')) as string;
    const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(text)?.[1] ?? 0);
    // INCRBY and PEXPIREAT run only in the limiter's flush script (the session scripts use neither).
    return {
      all: Number(/total_commands_processed:(\d+)/.exec(text)![1]),
      scripts: calls('evalsha') + calls('eval'),
      incrby: calls('incrby'),
      pexpireat: calls('pexpireat'),
    };
  };

  const limitedToken = await createSession(app, KEY_A);
  const freeToken = await createSession(app, KEY_B);
  // Warm both sessions into Redis (the first touch misses and fills) and let pending flushes go out.
  for (let i = 0; i < 20; i++) {
    t.equal((await touch(app, limitedToken, KEY_A)).statusCode, 200);
    t.equal((await touch(app, freeToken, KEY_B)).statusCode, 200);
  }
  await sleep(200);

  async function loop(token: string, key: { key: string }, n: number): Promise<number> {
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      const res = await touch(app, token, key);
      if (res.statusCode !== 200) throw new Error(`touch answered ${res.statusCode}`);
    }
    return performance.now() - started;
  }

  async function run(token: string, key: { key: string }) {
    await sleep(200);
    const flushesBefore = app.rateLimitCounters.flushes;
    const before = await stats();
    const ms = await loop(token, key, K);
    await sleep(200); // the last flush goes out
    const after = await stats();
    // INFO itself is one top-level command, not a script call.
    return {
      all: after.all - before.all - 1,
      scripts: after.scripts - before.scripts,
      incrby: after.incrby - before.incrby,
      pexpireat: after.pexpireat - before.pexpireat,
      ms,
      flushes: app.rateLimitCounters.flushes - flushesBefore,
    };
  }

  const off = await run(freeToken, KEY_B);
  const on = await run(limitedToken, KEY_A);
  const off2 = await run(freeToken, KEY_B);
  const on2 = await run(limitedToken, KEY_A);
  t.comment(`${K} warm touches, Redis requests (script calls): limiter off ${off.scripts} / ${off2.scripts}, on ${on.scripts} / ${on2.scripts} in ${on.flushes} / ${on2.flushes} flushes`);
  t.comment(`${K} warm touches, total_commands_processed (incl. inside scripts): off ${off.all} / ${off2.all}, on ${on.all} / ${on2.all}`);
  t.comment(`the limiter added ${on.scripts - off.scripts} / ${on2.scripts - off2.scripts} Redis requests for ${K} requests (a per-request Redis store would add ${K}, as round trips on the hot path)`);
  t.equal(off.scripts, K, 'without the limiter a warm touch is exactly one Redis request');
  t.equal(off2.scripts, K);
  t.ok(on.scripts - off.scripts <= on.flushes, 'with it: one Redis request per flush (one client), not one per request');
  t.ok(on2.scripts - off2.scripts <= on2.flushes, 'same on the second run');
  // Flushes are timed, not counted per request: one starts at most every flush interval (50 ms)
  // from the loop's first request until the 200 ms after it, however slowly the requests come.
  for (const r of [on, on2]) {
    t.ok(r.flushes >= 1 && r.flushes <= Math.floor((r.ms + 200) / 50) + 1, `${r.flushes} flushes for ${K} requests in ${r.ms.toFixed(0)} ms: at most one per flush interval`);
  }
  // Inside Redis a flush is one INCRBY per client key (and a PEXPIREAT when the key is new); the
  // session scripts' own inner commands vary with each entry's state (a register to keep, a
  // write-behind due), so the limiter's share is counted by the commands only it runs.
  t.equal(off.incrby + off2.incrby + off.pexpireat + off2.pexpireat, 0, 'an unlimited client runs no limiter command inside Redis');
  for (const r of [on, on2]) {
    t.ok(r.incrby <= r.flushes && r.pexpireat <= r.flushes, `${r.incrby} INCRBY and ${r.pexpireat} PEXPIREAT in ${r.flushes} flushes: at most one of each per flush`);
  }

  // What the limiter costs in time is printed by bench/rate-limit.ts, not waited for here.
});
