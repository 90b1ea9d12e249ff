import t from 'tap';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { RateLimitStore, type RateLimitCount, type RateLimitRedis } from '../../src/cache/rate-limit-store.js';
import { gatewayOptions, privateCluster, privateRedis, sharedRedisUrl, testGateway } from '../helpers/redis.js';

const MINUTE = 60_000;

/** incr as a value; the store answers synchronously (the callback runs before incr returns). */
function incr(store: { incr: RateLimitStore['incr'] }, key: string, windowMs = MINUTE): RateLimitCount {
  let out: RateLimitCount | undefined;
  store.incr(key, (err, res) => {
    if (err) throw err;
    out = res;
  }, windowMs, 100);
  if (out === undefined) throw new Error('incr did not answer synchronously');
  return out;
}

function read(store: RateLimitStore, key: string, windowMs = MINUTE): RateLimitCount {
  let out: RateLimitCount | undefined;
  store.read(key, (err, res) => {
    if (err) throw err;
    out = res;
  }, windowMs, 100);
  return out!;
}

const uniqueKey = () => `ns:client-${randomBytes(4).toString('hex')}`;

/** A Redis stand-in whose script answers what `reply` says, and a breaker that records calls. */
function fakeRedis(reply: (key: string, delta: number, expireAt: number) => Promise<number>) {
  const calls: Array<{ key: string; delta: number; expireAt: number }> = [];
  const breaker = { open: false, failures: 0, successes: 0 };
  const redis = {
    client: {
      defineCommand: () => undefined,
      sdRateLimitIncr: (key: string, delta: number, expireAt: number) => {
        calls.push({ key, delta, expireAt });
        return reply(key, delta, expireAt);
      },
    },
    breaker: {
      allows: () => !breaker.open,
      success: () => {
        breaker.successes += 1;
      },
      failure: () => {
        breaker.failures += 1;
      },
    },
  } as unknown as RateLimitRedis;
  return { redis, calls, breaker };
}

t.test('windows are aligned to the wall clock: every replica computes the same window', async (t) => {
  let now = 7 * MINUTE + 15_000; // 15 s into the 8th minute
  const store = new RateLimitStore({ now: () => now });
  t.same(incr(store, 'a'), { current: 1, ttl: 45_000 }, 'ttl runs to the end of the aligned window, not a minute from the first request');
  now += 44_999;
  t.same(incr(store, 'a'), { current: 2, ttl: 1 });
  now += 1; // 8 * MINUTE: a new window
  t.same(incr(store, 'a'), { current: 1, ttl: MINUTE }, 'the count starts over at the window boundary');

  const other = new RateLimitStore({ now: () => now + 30_000 });
  t.equal(incr(other, 'a').ttl, 30_000, 'another replica, later in the same window, sees the same window end');
});

t.test('local counting: per key, per window length, per route scope; read does not count', async (t) => {
  const store = new RateLimitStore({ now: () => 1_000_000 });
  t.equal(incr(store, 'a').current, 1);
  t.equal(incr(store, 'a').current, 2);
  t.equal(incr(store, 'b').current, 1, 'another client has its own count');
  t.equal(incr(store, 'a', 10_000).current, 1, 'another window length has its own count');
  t.same(read(store, 'a'), { current: 2, ttl: MINUTE - (1_000_000 % MINUTE) });
  t.same(read(store, 'a'), { current: 2, ttl: MINUTE - (1_000_000 % MINUTE) }, 'reading twice counts nothing');
  t.same(read(store, 'nobody'), { current: 0, ttl: 0 });
  const child = store.child({ routeInfo: { method: 'GET', url: '/x' } });
  t.equal(incr(child, 'a').current, 1, 'a route with its own limits has its own counters');
  t.equal(incr(child.child({ routeInfo: { method: 'GET', url: '/y' } }), 'a').current, 1);
  t.equal(incr(store, 'a').current, 3);
  t.equal(store.size, 5);
});

t.test('a local-only store forgets windows that are over', async (t) => {
  let now = 0;
  const store = new RateLimitStore({ now: () => now });
  for (let i = 0; i < 10; i++) incr(store, `k${i}`, 1000);
  t.equal(store.size, 10);
  now = 5_000;
  incr(store, 'k0', 1000);
  t.equal(store.size, 1, 'only the live window is kept');
  await store.close();
});

t.test('the Redis key: one hash tag per client, braces in a client name escaped', async (t) => {
  const { redis, calls } = fakeRedis(async (_k, delta) => delta);
  const now = 3 * MINUTE + 1;
  const store = new RateLimitStore({ redis, now: () => now, flushIntervalMs: 5 });
  incr(store, 'tenant:web');
  incr(store, 'tenant:we{b}%');
  await store.flush();
  t.same(
    calls.map((c) => c.key).sort(),
    ['rl:{tenant:we%7Bb%7D%25}:60000:3', 'rl:{tenant:web}:60000:3'],
  );
  t.ok(calls.every((c) => c.expireAt === 4 * MINUTE + 10_000), 'keys expire at the window end plus the slack, whoever creates them');
  await store.close();
});

t.test('flush merges the counts of replicas through Redis', async (t) => {
  const url = await sharedRedisUrl(t);
  const gateway = await testGateway(t, gatewayOptions({ url }));
  const now = Date.now();
  const a = new RateLimitStore({ redis: gateway, now: () => now, flushIntervalMs: 1_000_000 });
  const b = new RateLimitStore({ redis: gateway, now: () => now, flushIntervalMs: 1_000_000 });
  const key = uniqueKey();

  for (let i = 1; i <= 3; i++) t.equal(incr(a, key).current, i);
  await a.flush();
  t.equal(incr(b, key).current, 1, 'b has not heard of a yet: it decides on its own count (bounded over-admission)');
  await b.flush();
  t.equal(read(b, key).current, 4, 'after its flush b knows the global count');
  t.equal(incr(b, key).current, 5);
  t.equal(incr(a, key).current, 4, 'a still decides on what it knew');
  await a.flush();
  await b.flush();
  t.equal(read(a, key).current, 5, 'each replica knows the global count as of its own last flush');
  t.equal(read(b, key).current, 6);

  const check = new Redis(url);
  t.teardown(() => check.disconnect());
  const redisKey = `rl:{${key}}:60000:${Math.floor(now / MINUTE)}`;
  t.equal(await check.get(redisKey), '6', 'one shared counter per client and window');
  const pttl = await check.pttl(redisKey);
  const expected = (Math.floor(now / MINUTE) + 1) * MINUTE + 10_000 - Date.now();
  t.ok(pttl > 0 && Math.abs(pttl - expected) < 1000, `the counter expires after its window (pttl ${pttl}, expected ≈ ${expected})`);
  t.equal(a.counters.flushFailures + b.counters.flushFailures, 0);
  await a.close();
  await b.close();
});

t.test('the flusher sends one batch per interval, whatever the request rate', async (t) => {
  const url = await sharedRedisUrl(t);
  const gateway = await testGateway(t, gatewayOptions({ url }));
  const store = new RateLimitStore({ redis: gateway, flushIntervalMs: 30 });
  t.teardown(() => store.close());
  const keys = Array.from({ length: 10 }, uniqueKey);
  for (let i = 0; i < 1000; i++) incr(store, keys[i % keys.length]!, 3_600_000);
  t.equal(store.counters.flushes, 0, 'nothing was sent while counting');
  await sleep(120);
  t.equal(store.counters.flushes, 1, 'one batch for 1000 requests');
  t.equal(store.counters.flushedKeys, 10, 'one command per client counter');
  const check = new Redis(url);
  t.teardown(() => check.disconnect());
  const windowId = Math.floor(Date.now() / 3_600_000);
  const values = await Promise.all(keys.map((k) => check.get(`rl:{${k}}:3600000:${windowId}`)));
  t.same(values, keys.map(() => '100'));
  await sleep(100);
  t.equal(store.counters.flushes, 1, 'an idle store sends nothing');
});

t.test('a failed batch: its increments stay counted locally and are never sent twice', async (t) => {
  let fail = true;
  let global = 0;
  const { redis, calls, breaker } = fakeRedis(async (_k, delta) => {
    if (fail) throw new Error('Connection is closed.');
    global += delta;
    return global;
  });
  const errors: unknown[] = [];
  const store = new RateLimitStore({ redis, now: () => 1_000_000, flushIntervalMs: 1_000_000, onFlushError: (e) => errors.push(e) });
  for (let i = 0; i < 3; i++) incr(store, 'k');
  await store.flush();
  t.equal(breaker.failures, 1, 'the failure is reported to the Redis breaker');
  t.equal(store.counters.flushFailures, 1);
  t.equal(errors.length, 1);
  t.equal(incr(store, 'k').current, 4, 'local counting goes on: the limit is still enforced by this replica');
  fail = false;
  await store.flush();
  t.same(calls.map((c) => c.delta), [3, 1], 'only the new increment is sent after the failure');
  t.equal(breaker.successes, 1);
  t.equal(read(store, 'k').current, 4, 'global 1 + 3 kept locally');
});

t.test('breaker open: nothing is sent, increments wait and go out together when Redis is back', async (t) => {
  const { redis, calls, breaker } = fakeRedis(async (_k, delta) => delta);
  const store = new RateLimitStore({ redis, now: () => 1_000_000, flushIntervalMs: 1_000_000 });
  breaker.open = true;
  incr(store, 'k');
  await store.flush();
  incr(store, 'k');
  await store.flush();
  t.equal(calls.length, 0, 'no Redis call while the breaker is open');
  t.equal(store.counters.flushesSkipped, 2);
  t.equal(incr(store, 'k').current, 3);
  breaker.open = false;
  await store.flush();
  t.same(calls.map((c) => c.delta), [3], 'the held-back increments, in one command');
});

t.test('a batch that never answers fails at the deadline; requests never wait for it', async (t) => {
  const { redis } = fakeRedis(() => new Promise<number>(() => undefined));
  const store = new RateLimitStore({ redis, now: () => 1_000_000, flushIntervalMs: 1_000_000, flushDeadlineMs: 50 });
  incr(store, 'k');
  const started = Date.now();
  const flushing = store.flush();
  t.equal(incr(store, 'k').current, 2, 'counting goes on while a batch is in flight');
  await flushing;
  t.ok(Date.now() - started < 1000, `the flush gave up after its deadline (${Date.now() - started} ms)`);
  t.equal(store.counters.flushFailures, 1);
  t.equal(read(store, 'k').current, 2);
});

t.test('flushes never overlap: a flush during a flush joins it', async (t) => {
  let release: () => void = () => undefined;
  const { redis, calls } = fakeRedis((_k, delta) => new Promise<number>((resolve) => (release = () => resolve(delta))));
  const store = new RateLimitStore({ redis, now: () => 1_000_000, flushIntervalMs: 1_000_000 });
  incr(store, 'k');
  const first = store.flush();
  incr(store, 'k');
  const second = store.flush();
  t.equal(first, second);
  release();
  await first;
  t.equal(calls.length, 1);
  await store.flush();
  t.same(calls.map((c) => c.delta), [1, 1]);
  t.equal(read(store, 'k').current, 2);
});

t.test('a real Redis killed: flushes fail fast, counts stay local, then resume sharing', async (t) => {
  const server = await privateRedis(t);
  const gateway = await testGateway(t, gatewayOptions({ url: server.url, breakerFailureThreshold: 2, breakerCooldownMs: 200 }));
  const now = Date.now();
  const store = new RateLimitStore({ redis: gateway, now: () => now, flushIntervalMs: 1_000_000 });
  const key = uniqueKey();
  incr(store, key);
  await store.flush();
  server.kill('SIGKILL');
  await sleep(50);
  for (let i = 0; i < 2; i++) {
    incr(store, key);
    const started = Date.now();
    await store.flush();
    t.ok(Date.now() - started < 500, `a failed flush costs no long wait (${Date.now() - started} ms)`);
  }
  t.equal(store.counters.flushFailures, 2);
  t.equal(gateway.breaker.state, 'open', 'the failures opened the gateway breaker');
  incr(store, key);
  await store.flush();
  t.equal(store.counters.flushesSkipped, 1, 'with the breaker open, not even tried');
  t.equal(read(store, key).current, 4, 'every request counted');

  await server.restart();
  // The breaker probes after its cooldown (started by allows()); wait until it closes.
  for (let i = 0; i < 100 && gateway.breaker.state !== 'closed'; i++) {
    gateway.breaker.allows();
    await sleep(50);
  }
  t.equal(gateway.breaker.state, 'closed');
  await store.flush();
  t.equal(store.counters.flushes, 4, 'the held-back increment went out');
  const check = new Redis(server.url);
  t.teardown(() => check.disconnect());
  t.equal(await check.get(`rl:{${key}}:60000:${Math.floor(now / MINUTE)}`), '1', 'the restarted (empty) Redis got only what had not been sent');
  t.equal(read(store, key).current, 4, 'the local count never goes down: what Redis lost and acknowledged before still counts');
  await store.close();
});

t.test('on Redis Cluster: counters of many clients, spread over all masters, in one flush', async (t) => {
  const cluster = await privateCluster(t);
  const gateway = await testGateway(t, gatewayOptions({ clusterNodes: cluster.startupNodes, commandTimeoutMs: 200 }));
  const now = Date.now();
  const a = new RateLimitStore({ redis: gateway, now: () => now, flushIntervalMs: 1_000_000 });
  const b = new RateLimitStore({ redis: gateway, now: () => now, flushIntervalMs: 1_000_000 });
  const keys = Array.from({ length: 30 }, uniqueKey);
  for (const k of keys) {
    incr(a, k);
    incr(a, k);
    incr(b, k);
  }
  await a.flush();
  await b.flush();
  t.equal(a.counters.flushFailures + b.counters.flushFailures, 0, 'no cross-slot error');
  t.equal(b.counters.flushes, 1);
  t.ok(keys.every((k) => read(b, k).current === 3), 'b learned every global count');
  await a.close();
  await b.close();
});
