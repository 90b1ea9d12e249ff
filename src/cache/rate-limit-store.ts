import type { Cluster, Redis } from 'ioredis';
import type { CircuitBreaker } from './circuit-breaker.js';

/**
 * Adds this replica's increments to one window counter. KEYS: counter. ARGV: delta, expireAtMs.
 * Returns the global count of the window. The expiry is absolute (window end + slack), so
 * setting it once, when the key has none, is enough whoever creates the key.
 */
export const RATE_LIMIT_INCR = `
local c = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return c
`;

/** What the store needs of the Redis gateway: its client and its breaker. */
export interface RateLimitRedis {
  readonly client: Redis | Cluster;
  readonly breaker: Pick<CircuitBreaker, 'allows' | 'success' | 'failure'>;
}

/** Flusher counters (monotonic), for the metrics endpoint. */
export interface RateLimitFlushCounters {
  /** Batches sent to Redis. */
  flushes: number;
  /** Window counters sent, summed over batches. */
  flushedKeys: number;
  /** Batches that failed (in part): their increments stay local and are not sent again. */
  flushFailures: number;
  /** Flushes not sent because the Redis breaker was open: the increments wait (same window). */
  flushesSkipped: number;
}

export interface RateLimitStoreOptions {
  /** Shared counters in Redis; undefined = count in this process only. */
  redis?: RateLimitRedis | undefined;
  /** How long increments may wait before they are sent (one batch per interval). Default 50 ms. */
  flushIntervalMs?: number;
  /** A batch that takes longer than this counts as failed. Default 250 ms. */
  flushDeadlineMs?: number;
  /** Redis keys outlive their window by this much (tolerates clock skew between replicas). Default 10 s. */
  expirySlackMs?: number;
  keyPrefix?: string;
  /** Wall clock in epoch ms. Windows are aligned to it, so that every replica shares one counter. */
  now?: () => number;
  counters?: RateLimitFlushCounters;
  onFlushError?: (err: unknown) => void;
}

/** The result @fastify/rate-limit expects: requests counted in this window, and ms left in it. */
export interface RateLimitCount {
  current: number;
  ttl: number;
}
type Callback = (err: Error | null, result?: RateLimitCount) => void;

/** One client's counter in one window, as this replica sees it. */
interface WindowCount {
  redisKey: string;
  windowEnd: number;
  /** The global count Redis last answered (includes every increment it acknowledged). */
  global: number;
  /** Increments of this replica that Redis acknowledged: the global count is at least this, even if Redis lost the key. */
  acked: number;
  /** Increments of this replica not yet sent. */
  unsent: number;
  /** Increments in the batch on its way to Redis. */
  sending: number;
  /** Increments whose batch failed: they may or may not have reached Redis, so they are counted here and never resent. */
  unconfirmed: number;
}

const count = (w: WindowCount): number => w.global + w.sending + w.unsent + w.unconfirmed;

interface RateLimitCommands {
  sdRateLimitIncr(key: string, delta: number, expireAtMs: number): Promise<number>;
}

/** `{`, `}` and `%` escaped: the client part is then exactly one hash tag, and the mapping stays one-to-one. */
function escapeTag(key: string): string {
  return /[{}%]/.test(key) ? key.replace(/[{}%]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`) : key;
}

/**
 * A @fastify/rate-limit store with fixed windows aligned to the wall clock (window id =
 * floor(now / window)), so that all replicas count one client's window in one Redis key,
 * `rl:{<client>}:<window ms>:<window id>` (a hash tag per client: cluster-safe).
 *
 * `incr` never waits on Redis: it answers from local state, the last global count Redis gave
 * for the window plus this replica's increments not yet confirmed. A flusher sends the pending
 * increments of all clients at most once per interval, one small script per counter, all
 * issued in the same tick (written back to back, without waiting for each other), and
 * takes the global counts from the replies. A request therefore never adds a Redis round trip;
 * the cost is one batch per interval per process, whatever the request rate.
 *
 * The price is bounded over-admission: a replica decides on a global count at most one
 * interval (plus a round trip) old, so beyond the limit at most the requests that arrive in
 * that time, across all replicas, get through.
 *
 * When Redis cannot be used (breaker open, batch failed) counting goes on locally: each replica
 * enforces the limit on what it saw itself. Increments held back by an open breaker are sent
 * when Redis is back in the same window; those of a failed batch are kept locally only (they
 * may have been applied), so a failure can only make counts higher, never lower.
 */
export class RateLimitStore {
  private readonly entries = new Map<string, WindowCount>();
  private readonly redis: RateLimitRedis | undefined;
  private readonly flushIntervalMs: number;
  private readonly flushDeadlineMs: number;
  private readonly expirySlackMs: number;
  private readonly keyPrefix: string;
  private readonly now: () => number;
  private readonly onFlushError: (err: unknown) => void;
  readonly counters: RateLimitFlushCounters;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private closed = false;
  private lastPrune = 0;

  constructor(options: RateLimitStoreOptions = {}) {
    this.redis = options.redis;
    this.flushIntervalMs = options.flushIntervalMs ?? 50;
    this.flushDeadlineMs = options.flushDeadlineMs ?? 250;
    this.expirySlackMs = options.expirySlackMs ?? 10_000;
    this.keyPrefix = options.keyPrefix ?? 'rl:';
    this.now = options.now ?? Date.now;
    this.onFlushError = options.onFlushError ?? (() => undefined);
    this.counters = options.counters ?? { flushes: 0, flushedKeys: 0, flushFailures: 0, flushesSkipped: 0 };
    const client = this.redis?.client as (Redis & Partial<RateLimitCommands>) | undefined;
    if (client !== undefined && typeof client.sdRateLimitIncr !== 'function') {
      client.defineCommand('sdRateLimitIncr', { numberOfKeys: 1, lua: RATE_LIMIT_INCR });
    }
  }

  /** @fastify/rate-limit: count one request of `key` and answer at once from local state. */
  incr(key: string, cb: Callback, timeWindow: number, _max?: number): void {
    this.increment('', key, cb, timeWindow);
  }

  /** @fastify/rate-limit: the count so far, without counting. */
  read(key: string, cb: Callback, timeWindow: number, _max?: number): void {
    this.peek('', key, cb, timeWindow);
  }

  /** @fastify/rate-limit: a route with its own limits gets its own counters (same flusher). */
  child(routeOptions: { routeInfo?: { method?: unknown; url?: unknown } }): ScopedRateLimitStore {
    const info = routeOptions.routeInfo ?? {};
    return new ScopedRateLimitStore(this, `${String(info.method ?? '')}${String(info.url ?? '')}:`);
  }

  /** @internal `delta`: what the request counts for (a batch counts each of its items). */
  increment(scope: string, key: string, cb: Callback, timeWindow: number, delta = 1): void {
    let result: RateLimitCount;
    try {
      const now = this.now();
      const w = this.window(scope, key, timeWindow, now, true)!;
      w.unsent += delta;
      this.schedule();
      result = { current: count(w), ttl: w.windowEnd - now };
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb(null, result);
  }

  /** @internal */
  peek(scope: string, key: string, cb: Callback, timeWindow: number): void {
    let result: RateLimitCount;
    try {
      const now = this.now();
      const w = this.window(scope, key, timeWindow, now, false);
      result = w === undefined ? { current: 0, ttl: 0 } : { current: count(w), ttl: w.windowEnd - now };
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb(null, result);
  }

  /** Window counters held in memory (tests, metrics). */
  get size(): number {
    return this.entries.size;
  }

  private window(scope: string, key: string, timeWindow: number, now: number, create: boolean): WindowCount | undefined {
    const windowMs = Number.isFinite(timeWindow) && timeWindow >= 1 ? Math.trunc(timeWindow) : 1000;
    const windowId = Math.floor(now / windowMs);
    const redisKey = `${this.keyPrefix}{${escapeTag(key)}}:${scope}${windowMs}:${windowId}`;
    let w = this.entries.get(redisKey);
    if (w === undefined && create) {
      if (this.redis === undefined && now - this.lastPrune >= 1000) this.prune(now);
      w = { redisKey, windowEnd: (windowId + 1) * windowMs, global: 0, acked: 0, unsent: 0, sending: 0, unconfirmed: 0 };
      this.entries.set(redisKey, w);
    }
    return w;
  }

  /** Forgets windows that are over (and not waiting for a reply). */
  private prune(now: number): void {
    this.lastPrune = now;
    for (const [k, w] of this.entries) {
      if (w.windowEnd <= now && w.sending === 0) this.entries.delete(k);
    }
  }

  private schedule(): void {
    if (this.redis === undefined || this.closed || this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush().then(() => {
        if (this.hasUnsent()) this.schedule();
      });
    }, this.flushIntervalMs);
    this.timer.unref();
  }

  private hasUnsent(): boolean {
    for (const w of this.entries.values()) if (w.unsent > 0) return true;
    return false;
  }

  /**
   * Sends the pending increments of every counter as one batch and takes the global counts
   * from the replies. One batch at a time; never rejects.
   */
  flush(): Promise<void> {
    this.flushing ??= this.flushOnce().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  private async flushOnce(): Promise<void> {
    const now = this.now();
    this.prune(now);
    const redis = this.redis;
    if (redis === undefined) return;
    const batch = [...this.entries.values()].filter((w) => w.unsent > 0);
    if (batch.length === 0) return;
    if (!redis.breaker.allows()) {
      this.counters.flushesSkipped += 1;
      return;
    }
    const client = redis.client as unknown as RateLimitCommands;
    for (const w of batch) {
      w.sending = w.unsent;
      w.unsent = 0;
    }
    this.counters.flushes += 1;
    this.counters.flushedKeys += batch.length;
    // Issued in one tick, written back to back; one per counter (on a cluster they hash to different slots).
    const replies = await Promise.allSettled(
      batch.map((w) => this.deadline(client.sdRateLimitIncr(w.redisKey, w.sending, w.windowEnd + this.expirySlackMs))),
    );
    let failure: unknown;
    let failed = false;
    replies.forEach((reply, i) => {
      const w = batch[i]!;
      const global = reply.status === 'fulfilled' ? Number(reply.value) : NaN;
      if (Number.isFinite(global)) {
        w.acked += w.sending;
        // A count only grows within a window. Should Redis have lost the key (restart, failover),
        // its answer can be lower: keep what we knew and what we sent ourselves.
        w.global = Math.max(w.global, global, w.acked);
      } else {
        w.unconfirmed += w.sending;
        if (!failed) failure = reply.status === 'rejected' ? reply.reason : new Error(`unexpected reply ${String(reply.status === 'fulfilled' ? reply.value : '')}`);
        failed = true;
      }
      w.sending = 0;
    });
    if (failed) {
      this.counters.flushFailures += 1;
      redis.breaker.failure();
      try {
        this.onFlushError(failure);
      } catch {
        // a logging problem must not break the flusher
      }
    } else {
      redis.breaker.success();
    }
  }

  private deadline<T>(p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('rate-limit flush deadline exceeded')), this.flushDeadlineMs);
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }

  /** Stops the flusher after one last batch (best effort), so that other replicas see this one's last counts. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}

/** The store of one route with its own rate-limit config: own counters, shared flusher. */
export class ScopedRateLimitStore {
  constructor(
    private readonly root: RateLimitStore,
    private readonly scope: string,
  ) {}

  incr(key: string, cb: Callback, timeWindow: number, _max?: number): void {
    this.root.increment(this.scope, key, cb, timeWindow);
  }

  read(key: string, cb: Callback, timeWindow: number, _max?: number): void {
    this.root.peek(this.scope, key, cb, timeWindow);
  }

  child(routeOptions: { routeInfo?: { method?: unknown; url?: unknown } }): ScopedRateLimitStore {
    return this.root.child(routeOptions);
  }
}
