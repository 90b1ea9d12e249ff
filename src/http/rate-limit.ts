import rateLimit, { type FastifyRateLimitStoreCtor } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RedisGateway } from '../cache/redis-gateway.js';
import { RateLimitStore, type RateLimitFlushCounters } from '../cache/rate-limit-store.js';
import type { NamespacePolicies } from '../domain/policies.js';
import { DomainError } from '../domain/errors.js';

/** Rate-limit counters, per process and monotonic, for the metrics endpoint. */
export class RateLimitCounters implements RateLimitFlushCounters {
  /** Requests answered 429. */
  rejected = 0;
  /** Batches of increments sent to Redis (at most one per flush interval). */
  flushes = 0;
  /** Window counters sent, summed over batches. */
  flushedKeys = 0;
  /** Batches that failed: their increments were counted locally only. */
  flushFailures = 0;
  /** Flushes held back because the Redis breaker was open. */
  flushesSkipped = 0;
}

export interface RateLimitOptions {
  redis: RedisGateway | undefined;
  policies: NamespacePolicies;
  counters: RateLimitCounters;
  /** How long increments may wait before they are sent to Redis. Default 50 ms. */
  flushIntervalMs?: number;
}

/** The client's rate-limit identity. A namespace has no ':', so the pair maps one-to-one. */
function clientKey(request: FastifyRequest): string {
  const caller = request.caller as FastifyRequest['caller'] | undefined;
  return caller === undefined ? '' : `${caller.namespace}:${caller.client}`;
}

/**
 * Counts `extra` more requests of the caller, for a call that stands for several (a batch of N
 * sessions counts N; the plugin counted one), and sets the rate-limit headers to the count after
 * it. Answers the 429 to throw when that count is over the limit (counted, with Retry-After, as
 * the plugin's own), else null; a namespace without a limit counts nothing.
 */
export type RateLimitCharge = (request: FastifyRequest, reply: FastifyReply, extra: number) => Promise<DomainError | null>;

/**
 * Per-client rate limiting for the /v1 routes, registered after authentication (so a 401 is
 * never counted) and keyed by the API client, never by IP: the callers are app servers.
 * Limits come from the caller's namespace policy; `max: 0` means no limit (and no headers).
 *
 * Counting never waits on Redis (see RateLimitStore): each request is answered from local
 * counts that a background flusher merges with the shared Redis counters once per interval.
 * When Redis is down each replica goes on limiting on its own counts: never a 500, never
 * silently unlimited. Answers the charge for calls that count for several (RateLimitCharge).
 */
export async function registerRateLimit(v1: FastifyInstance, options: RateLimitOptions): Promise<RateLimitCharge> {
  const { policies, counters } = options;
  const log = v1.log.child({ component: 'rate-limit' });
  let lastErrorLog = 0;
  const store = new RateLimitStore({
    redis: options.redis,
    flushIntervalMs: options.flushIntervalMs,
    counters,
    onFlushError: (err) => {
      // While Redis is down every flush fails: one line a few seconds is enough.
      const now = Date.now();
      if (now - lastErrorLog < 5000) return;
      lastErrorLog = now;
      log.warn({ err: { message: (err as Error | undefined)?.message } }, 'rate-limit counters not shared: Redis flush failed; limiting on local counts');
    },
  });
  v1.addHook('onClose', async () => store.close());

  const policy = (request: FastifyRequest) => policies.for(request.caller.namespace).rateLimit;
  await v1.register(rateLimit, {
    global: true,
    hook: 'onRequest',
    // `new Store(options)` hands back our instance: a constructor may return an object.
    store: function sharedStore() {
      return store;
    } as unknown as FastifyRateLimitStoreCtor,
    keyGenerator: clientKey,
    // Unauthenticated requests were answered 401 already; unlimited namespaces are not counted.
    allowList: (request) => (request.caller as unknown) === undefined || policy(request).max === 0,
    max: (request) => policy(request).max,
    timeWindow: (request) => policy(request).windowSeconds * 1000,
    // The store never fails; should it ever, the request goes through rather than a 500.
    skipOnError: true,
    onExceeded: () => {
      counters.rejected += 1;
    },
    errorResponseBuilder: (request, context) => tooMany(request, context.max, context.ttl),
  });

  function tooMany(request: FastifyRequest, max: number, ttlMs: number): DomainError {
    const seconds = Math.max(1, Math.ceil(ttlMs / 1000));
    return new DomainError(429, 'rate_limited', `This API client made more than ${max} requests in ${policy(request).windowSeconds} s; retry in ${seconds} s.`);
  }

  return (request, reply, extra) => {
    const caller = request.caller as FastifyRequest['caller'] | undefined;
    if (caller === undefined || extra <= 0) return Promise.resolve(null);
    const { max, windowSeconds } = policy(request);
    if (max === 0) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      store.increment(
        '',
        clientKey(request),
        (err, count) => {
          if (err !== null || count === undefined) return reject(err ?? new Error('no count'));
          reply.header('x-ratelimit-remaining', String(Math.max(0, max - count.current)));
          if (count.current <= max) return resolve(null);
          counters.rejected += 1;
          reply.header('retry-after', String(Math.max(1, Math.ceil(count.ttl / 1000))));
          resolve(tooMany(request, max, count.ttl));
        },
        windowSeconds * 1000,
        extra,
      );
    });
  };
}
