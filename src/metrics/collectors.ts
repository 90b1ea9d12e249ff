import { Counter, Gauge, type Registry } from 'prom-client';
import type { FastifyInstance } from 'fastify';
import { sql } from 'drizzle-orm';
import type { BreakerState } from '../cache/circuit-breaker.js';
import type { Database } from '../db/database.js';
import { cacheOutbox } from '../db/schema.js';

/**
 * Metric families whose values live in the service's own objects (counters, the pool, the
 * breaker): read when Prometheus scrapes, never copied on the request path. No label here can
 * carry a token, an API key or a session id: the only label values are fixed words and API
 * client names from the keys file.
 */

const BREAKER_STATES: readonly BreakerState[] = ['closed', 'recovering', 'open'];

/** A counter whose value is a monotonic number kept elsewhere. */
function counterOf(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

function gaugeOf(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** One family per existing source. Called once the app is ready, so that every decoration is in place. */
export function registerAppCollectors(app: FastifyInstance, registry: Registry, options: { dbPoolSize?: number | undefined }): void {
  // MariaDB pool.
  const pool = app.database.pool;
  gaugeOf(registry, 'sessiond_db_pool_connections_active', 'MariaDB pool connections in use by a query or transaction.', () =>
    pool.activeConnections(),
  );
  gaugeOf(registry, 'sessiond_db_pool_connections_idle', 'MariaDB pool connections open and free.', () => pool.idleConnections());
  gaugeOf(registry, 'sessiond_db_pool_connections_open', 'MariaDB pool connections open (active + idle).', () => pool.totalConnections());
  gaugeOf(registry, 'sessiond_db_pool_queued_requests', 'Requests waiting for a MariaDB pool connection.', () => pool.taskQueueSize());
  if (options.dbPoolSize !== undefined) {
    const size = options.dbPoolSize;
    gaugeOf(registry, 'sessiond_db_pool_connections_max', 'MariaDB pool size (DB_POOL_SIZE).', () => size);
  }

  // Sweeper.
  if (app.hasDecorator('sweeper')) {
    const sweeper = app.sweeper;
    counterOf(registry, 'sessiond_sweeper_deleted_sessions_total', 'Expired or revoked session rows, and remembered destroyed ids past their expiry, deleted by this replica’s sweeper.', () =>
      sweeper.deletedTotal,
    );
  }

  // Rate limiting.
  const limits = app.rateLimitCounters;
  counterOf(registry, 'sessiond_rate_limit_rejected_requests_total', 'Requests answered 429 by the per-client rate limit.', () => limits.rejected);
  counterOf(registry, 'sessiond_rate_limit_flushes_total', 'Batches of rate-limit increments sent to Redis.', () => limits.flushes);
  counterOf(registry, 'sessiond_rate_limit_flushed_keys_total', 'Rate-limit window counters sent to Redis, summed over batches.', () =>
    limits.flushedKeys,
  );
  counterOf(
    registry,
    'sessiond_rate_limit_flush_failures_total',
    'Rate-limit batches Redis did not take: their increments were counted on this replica only.',
    () => limits.flushFailures,
  );
  counterOf(registry, 'sessiond_rate_limit_flushes_skipped_total', 'Rate-limit flushes held back because the Redis breaker was open.', () =>
    limits.flushesSkipped,
  );

  // Failed token lookups, per API client (the guessing signal).
  const guessing = app.guessingMonitor;
  new Counter({
    name: 'sessiond_failed_token_lookups_total',
    help: 'Session-token lookups that matched no live session (404), per API client.',
    labelNames: ['client'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [client, count] of guessing.failedLookups) this.inc({ client }, count);
    },
  });

  // The cache tier: only when Redis is configured.
  const counters = app.cacheCounters;
  if (counters !== undefined) {
    counterOf(registry, 'sessiond_cache_hits_total', 'Session reads answered from Redis.', () => counters.hits);
    counterOf(registry, 'sessiond_cache_misses_total', 'Session reads Redis did not hold, answered from MariaDB.', () => counters.misses);
    counterOf(
      registry,
      'sessiond_cache_refused_fills_total',
      'Cache fills refused by Redis (lease gone, newer entry or tombstone present).',
      () => counters.refusedFills,
    );
    counterOf(registry, 'sessiond_cache_fallbacks_total', 'Calls served from MariaDB because Redis was unavailable.', () =>
      counters.fallbacks,
    );
    counterOf(registry, 'sessiond_cache_outbox_replayed_total', 'Outbox invalidations replayed into Redis.', () => counters.outboxReplayed);
    counterOf(registry, 'sessiond_cache_touch_writes_total', 'Touch expiries written behind to MariaDB.', () => counters.touchWrites);
    const outbox = new OutboxRows(app.database, OUTBOX_READ_TIMEOUT_MS);
    new Gauge({
      name: 'sessiond_cache_outbox_rows',
      help: 'Cache invalidations waiting in the MariaDB outbox (NaN when MariaDB did not answer in time).',
      registers: [registry],
      async collect() {
        this.set(await outbox.read());
      },
    });
  }
  const redis = app.redis;
  if (redis !== undefined) {
    new Gauge({
      name: 'sessiond_redis_breaker_state',
      help: 'The Redis circuit breaker: 1 for its current state (closed, recovering, open), 0 for the others.',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const current = redis.breaker.state;
        for (const state of BREAKER_STATES) this.set({ state }, state === current ? 1 : 0);
      },
    });
  }
}

/** How long a scrape waits for the outbox count before it reports NaN. */
export const OUTBOX_READ_TIMEOUT_MS = 250;

/**
 * The outbox row count, the one value that needs a query. A scrape never waits on it for
 * more than `timeoutMs`, never queues behind requests for a pool connection, and never runs
 * more than one such query at a time (a slow one is joined, not repeated).
 */
export class OutboxRows {
  private inFlight: Promise<number> | undefined;

  constructor(
    private readonly database: Database,
    private readonly timeoutMs: number,
  ) {}

  async read(): Promise<number> {
    // Requests are waiting for connections: do not take one from them.
    if (this.database.pool.taskQueueSize() > 0) return NaN;
    this.inFlight ??= this.count().finally(() => {
      this.inFlight = undefined;
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<number>((resolve) => {
      timer = setTimeout(() => resolve(NaN), this.timeoutMs);
    });
    try {
      return await Promise.race([this.inFlight.catch(() => NaN), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async count(): Promise<number> {
    const rows = await this.database.run((db) => db.select({ n: sql<number>`COUNT(*)` }).from(cacheOutbox));
    return Number(rows[0]?.n ?? 0);
  }
}
