import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { CacheCounters } from '../cache/cache-counters.js';
import { decodeEntry, encodeEntry } from '../cache/redis-entry.js';
import { CacheUnavailableError, type RedisGateway } from '../cache/redis-gateway.js';
import {
  isLive,
  persistThresholdMs,
  type SessionData,
  type SessionKey,
  type SessionRecord,
} from '../domain/session.js';
import { publicIdOf } from '../domain/token.js';
import type { MariaDbSessionStore, OutboxAction, SessionStatements } from './mariadb-session-store.js';
import type { ExpectedVersion, PatchResult, SessionStore, WriteResult } from './session-store.js';

export interface CachedSessionStoreOptions {
  touchPersistThresholdSeconds: number;
  /** Test-only: runs between a fill's MariaDB read and its Redis install. */
  beforeInstall?: (key: SessionKey) => Promise<void>;
}

/**
 * Redis in front of the MariaDB store, by the protocol of DESIGN §4:
 * - writers never put values into Redis: after a commit they invalidate, after a destroy or
 *   rotate they plant a tombstone; an outbox row in the same transaction survives until Redis
 *   acknowledged, and a worker replays leftovers;
 * - a fill takes a lease before reading MariaDB and installs with one script that refuses when
 *   the lease is gone or something newer (or a tombstone) is there;
 * - touch moves the idle expiry in Redis at once and writes MariaDB only past the threshold;
 * - every read checks expiry from the stored fields.
 * When Redis is unavailable every call is served by MariaDB alone.
 */
export class CachedSessionStore implements SessionStore {
  readonly counters = new CacheCounters();
  private readonly touchWritesInFlight = new Set<string>();

  constructor(
    private readonly db: MariaDbSessionStore,
    private readonly redis: RedisGateway,
    private readonly options: CachedSessionStoreOptions,
    private readonly log: Logger,
  ) {}

  create(session: SessionRecord): Promise<void> {
    // A new id cannot be cached anywhere yet; the first read fills it.
    return this.db.create(session);
  }

  async get(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    if (!this.redis.available()) return this.fallback(() => this.db.get(key, now));
    let found;
    try {
      found = await this.redis.lookup(key);
    } catch (err) {
      if (err instanceof CacheUnavailableError) return this.fallback(() => this.db.get(key, now));
      throw err;
    }
    if (found.kind === 'tombstone') {
      this.counters.hits += 1;
      return null;
    }
    if (found.kind === 'hit') {
      this.counters.hits += 1;
      const record = decodeEntry(key, found.fields);
      return isLive(record, now) ? record : null;
    }
    this.counters.misses += 1;
    return this.fill(key, () => this.db.get(key, now));
  }

  async touch(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    if (!this.redis.available()) return this.fallback(() => this.db.touch(key, now));
    let outcome;
    try {
      outcome = await this.redis.touch(key, now.getTime());
    } catch (err) {
      if (err instanceof CacheUnavailableError) return this.fallback(() => this.db.touch(key, now));
      throw err;
    }
    switch (outcome.kind) {
      case 'tombstone':
      case 'expired':
        this.counters.hits += 1;
        return null;
      case 'miss':
        this.counters.misses += 1;
        return this.fill(key, () => this.db.touch(key, now));
      case 'hit': {
        this.counters.hits += 1;
        const record = decodeEntry(key, outcome.fields);
        const persisted = Number(outcome.fields.pe);
        const threshold = persistThresholdMs(record.idleTimeoutSeconds, this.options.touchPersistThresholdSeconds);
        if (record.idleExpiresAt.getTime() - persisted > threshold) this.writeBehind(key, record, now);
        return record;
      }
    }
  }

  /**
   * Writes the slid expiry to MariaDB without holding up the touch: if MariaDB is slow or down
   * the touch is still served from Redis, and the next touch past the threshold tries again.
   */
  private writeBehind(key: SessionKey, record: SessionRecord, now: Date): void {
    const id = publicIdOf(key.idHash) + key.namespace;
    if (this.touchWritesInFlight.has(id)) return;
    this.touchWritesInFlight.add(id);
    this.db
      .persistTouch(key, record.idleExpiresAt, record.lastSeenAt, now)
      .then(async (live) => {
        this.counters.touchWrites += 1;
        if (live) await this.redis.markPersisted(key, record.idleExpiresAt.getTime());
      })
      .catch((err) => this.log.debug({ err: (err as Error).message }, 'touch write-behind failed'))
      .finally(() => this.touchWritesInFlight.delete(id));
  }

  /**
   * Cache-aside fill behind a lease (DESIGN §4.2). The lease is taken before MariaDB is read;
   * an invalidate or destroy in between deletes it, and the install script then refuses.
   */
  private async fill(key: SessionKey, read: () => Promise<SessionRecord | null>): Promise<SessionRecord | null> {
    const leaseId = randomBytes(12).toString('base64url');
    let leased = false;
    try {
      leased = await this.redis.takeLease(key, leaseId);
    } catch (err) {
      if (!(err instanceof CacheUnavailableError)) throw err;
      return this.fallback(read);
    }
    const record = await read();
    if (!leased || record === null) return record;
    await this.options.beforeInstall?.(key);
    try {
      const installed = await this.redis.install(key, leaseId, encodeEntry(record));
      if (installed !== 1) this.counters.refusedFills += 1;
    } catch (err) {
      if (!(err instanceof CacheUnavailableError)) throw err;
    }
    return record;
  }

  private fallback<T>(read: () => Promise<T>): Promise<T> {
    this.counters.fallbacks += 1;
    return read();
  }

  replaceData(key: SessionKey, data: SessionData, expected: ExpectedVersion, now: Date): Promise<WriteResult> {
    return this.write(key, 'invalidate', now, async (tx) => {
      const result = await tx.replaceData(key, data, expected, now);
      return { result, changed: result.kind === 'ok' };
    });
  }

  patchData(key: SessionKey, patch: SessionData, expected: ExpectedVersion | undefined, maxBytes: number, now: Date): Promise<PatchResult> {
    return this.write(key, 'invalidate', now, async (tx) => {
      const result = await tx.patchData(key, patch, expected, maxBytes, now);
      return { result, changed: result.kind === 'ok' };
    });
  }

  destroy(key: SessionKey, now: Date): Promise<boolean> {
    return this.write(key, 'tombstone', now, async (tx) => {
      const result = await tx.destroy(key, now);
      return { result, changed: result };
    });
  }

  rotate(key: SessionKey, newIdHash: Buffer, now: Date): Promise<SessionRecord | null> {
    return this.write(key, 'tombstone', now, async (tx) => {
      const result = await tx.rotate(key, newIdHash, now);
      return { result, changed: result !== null };
    });
  }

  /**
   * A change and its outbox row commit together; then Redis is told. Only once Redis
   * acknowledged is the row deleted — otherwise the outbox worker replays it.
   */
  private async write<T>(
    key: SessionKey,
    action: OutboxAction,
    now: Date,
    change: (tx: SessionStatements) => Promise<{ result: T; changed: boolean }>,
  ): Promise<T> {
    const { result, outboxId } = await this.db.transaction(async (tx) => {
      const { result, changed } = await change(tx);
      return { result, outboxId: changed ? await tx.recordOutbox(key, action, now) : undefined };
    });
    if (outboxId !== undefined && (await this.applyToCache(key, action))) {
      this.db.deleteOutbox([outboxId]).catch(() => undefined); // a leftover row is replayed: harmless
    }
    return result;
  }

  /** True when Redis took the invalidation or tombstone. `force` is for the recovery replay. */
  async applyToCache(key: SessionKey, action: OutboxAction, force = false): Promise<boolean> {
    if (!force && !this.redis.available()) {
      this.counters.fallbacks += 1;
      return false;
    }
    try {
      if (action === 'tombstone') await this.redis.tombstone(key, force);
      else await this.redis.invalidate(key, force);
      return true;
    } catch (err) {
      if (err instanceof CacheUnavailableError) return false;
      throw err;
    }
  }

  sweepBatch(before: Date, batchSize: number): Promise<number> {
    return this.db.sweepBatch(before, batchSize);
  }
}
