/**
 * `node --import tsx bench/rate-limit.ts`: what the rate limiter costs per request, printed only.
 * The same Fastify route three ways on a private Redis: no limiter, @fastify/rate-limit's stock
 * RedisStore (one Redis round trip per request) and sessiond's RateLimitStore (local counts,
 * flushed in batches). test/http/rate-limit.test.ts checks the round trips by counting them; the
 * times live here, where no test waits for them. ROUNDS and N are environment variables.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import Fastify, { type FastifyInstance } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { Redis } from 'ioredis';
import { startRedis } from '../devstack/redis.js';
import { RateLimitStore } from '../src/cache/rate-limit-store.js';

const N = Number(process.env.N ?? 2000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);

const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-bench-rate-'));
const redis = await startRedis({ baseDir: dir });
const client = new Redis(redis.url, { enableAutoPipelining: true });
try {
  /** µs per request: `N` sequential injects after 200 to warm up. */
  async function timed(register: (app: FastifyInstance) => Promise<void>): Promise<number> {
    const app = Fastify({ logger: false });
    await register(app);
    app.get('/x', async () => ({ ok: true }));
    await app.ready();
    for (let i = 0; i < 200; i++) await app.inject({ method: 'GET', url: '/x' });
    const started = performance.now();
    for (let i = 0; i < N; i++) await app.inject({ method: 'GET', url: '/x' });
    const ms = performance.now() - started;
    await app.close();
    return (ms / N) * 1000;
  }
  const none: number[] = [];
  const stock: number[] = [];
  const ours: number[] = [];
  // Alternated, so that warm-up and noise hit every variant.
  for (let round = 0; round < ROUNDS; round++) {
    none.push(await timed(async () => undefined));
    stock.push(
      await timed(async (app) => {
        await app.register(rateLimit, { max: 1e9, timeWindow: 60_000, keyGenerator: () => 'c', redis: client });
      }),
    );
    ours.push(
      await timed(async (app) => {
        const store = new RateLimitStore({ redis: { client, breaker: { allows: () => true, success: () => undefined, failure: () => undefined } } });
        app.addHook('onClose', () => store.close());
        await app.register(rateLimit, { max: 1e9, timeWindow: 60_000, keyGenerator: () => 'c', store: function s() { return store; } as never });
      }),
    );
  }
  const f = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(' / ');
  console.log(`µs per request (inject, sequential, ${N} per loop, ${ROUNDS} rounds): no limiter ${f(none)}; stock RedisStore ${f(stock)}; RateLimitStore ${f(ours)}`);
  console.log(`load average at the end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
} finally {
  client.disconnect();
  await redis.stop();
  await rm(dir, { recursive: true, force: true });
}
