import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { CacheCounters } from '../cache/cache-counters.js';
import { decodeEntry, encodeEntry } from '../cache/redis-entry.js';
import { CacheUnavailableError, type RedisGateway, type TouchOutcome } from '../cache/redis-gateway.js';
import {
  decideTouch,
  isLive,
  type SessionData,
  type SessionKey,
  type SessionRecord,
  type SubjectMark,
} from '../domain/session.js';
import { StoreUnavailableError } from '../domain/errors.js';
import { publicIdOf } from '../domain/token.js';
import { OutboxDeletes, type OutboxAction, type OutboxRepository } from './outbox.js';
import type { OutboxReplayTarget } from './outbox-worker.js';
import type {
  DataChange,
  ExpectedVersion,
  MarkedRevocations,
  PatchResult,
  PendingRevocation,
  RevocationBatch,
  RevocationCursor,
  SessionStore,
  SessionWrites,
  SubjectCursor,
  TransactionalSessionStore,
  TransactionHooks,
  WriteResult,
} from './session-store.js';

/** A cache change owed after a commit: an outbox row until Redis took it. */
interface CacheDebt {
  key: SessionKey;
  action: OutboxAction;
  /** With 'mark': the mark to plant (the replay reads it from MariaDB). */
  mark?: SubjectMark;
}

/** How old an outbox row must be before any replica's worker replays it (app.ts: minAgeMs). */
export const OUTBOX_ROW_AGE_MS = 1000;

const sameKey = (key: SessionKey, record: SessionRecord) => record.idHash.equals(key.idHash);

export interface CachedSessionStoreOptions {
  touchPersistThresholdSeconds: number;
  /** Test-only: runs between a fill's MariaDB read and its Redis install. */
  beforeInstall?: (key: SessionKey) => Promise<void>;
  /** Test-only: runs after a write committed, before its invalidations are sent. */
  afterCommit?: (keys: SessionKey[]) => Promise<void>;
  /**
   * Test-only planted bug (set by test/helpers/test-server.mjs only): a fill takes no lease and installs
   * without the lease and write-marker checks (INSTALL_UNFENCED), the plain cache-aside fill, so
   * a record read before a write can be installed after it. The history checker must catch
   * this (test/history/planted-bug.test.ts).
   */
  unsafeUnfencedFill?: boolean;
}

/**
 * Redis in front of the MariaDB store, by the protocol of docs/design.md §5:
 * - writers never put values into Redis: after a commit they invalidate, after a destroy or
 *   rotate they plant a tombstone; an outbox row in the same transaction survives until Redis
 *   acknowledged, and a worker replays leftovers;
 * - a fill takes a lease before reading MariaDB and installs with one script that refuses when
 *   the lease is gone or something newer (or a tombstone) is there;
 * - touch moves the idle expiry in Redis at once and writes MariaDB only past the threshold;
 * - every read checks expiry from the stored fields.
 * When Redis is unavailable every call is served by MariaDB alone.
 */
export class CachedSessionStore implements SessionStore, OutboxReplayTarget, MarkedRevocations {
  readonly counters = new CacheCounters();
  /** Called after a subject's revocation mark committed (the app starts the revocation worker). */
  onSubjectRevoked: () => void = () => undefined;
  /**
   * Called when a write left a row in the outbox, due in `afterMs` (the app wakes this replica's
   * outbox worker, which backs off while the outbox is empty).
   */
  onOutboxRowLeft: (afterMs: number) => void = () => undefined;
  private readonly touchWritesInFlight = new Set<string>();
  /** Rows Redis took, deleted together (a leftover is replayed: the worker is told, once it is due). */
  private readonly paidRows: OutboxDeletes;

  constructor(
    private readonly db: TransactionalSessionStore,
    private readonly outbox: OutboxRepository,
    private readonly redis: RedisGateway,
    private readonly options: CachedSessionStoreOptions,
    private readonly log: Logger,
  ) {
    this.paidRows = new OutboxDeletes(outbox, () => this.onOutboxRowLeft(OUTBOX_ROW_AGE_MS));
  }

  /** Sends the outbox deletes that wait (at shutdown). */
  flushOutbox(): Promise<void> {
    return this.paidRows.flush();
  }

  async create(session: SessionRecord, options: { maxPerSubject?: number } = {}): Promise<{ evicted: number }> {
    const cap = options.maxPerSubject ?? 0;
    // A new id cannot be cached anywhere yet; the first read fills it.
    if (cap === 0 || session.subject === null) return this.db.create(session);
    return this.write(async (tx) => {
      const evicted = await tx.insert(session, cap);
      return { result: { evicted: evicted.length }, debts: evicted.map((key) => ({ key, action: 'tombstone' as const })) };
    });
  }

  /**
   * Unlike a random id, a chosen one may have had a life before (a session past its absolute
   * expiry, its tombstone or touch register still in Redis): everything Redis holds for it is
   * cleared after the commit, through the outbox like every write, so a late replay of the old
   * tombstone comes before the clearing.
   */
  createIfAbsent(session: SessionRecord, options: { maxPerSubject?: number } = {}): Promise<{ evicted: number }> {
    const key = { namespace: session.namespace, idHash: session.idHash };
    return this.write(async (tx) => {
      const evicted = await tx.insertIfAbsent(session, options.maxPerSubject ?? 0);
      const debts: CacheDebt[] = [{ key, action: 'clear' }, ...evicted.map((k) => ({ key: k, action: 'tombstone' as const }))];
      return { result: { evicted: evicted.length }, debts };
    });
  }

  async get(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    if (!this.redis.available()) return this.fallback(() => this.db.get(key, now));
    let found;
    try {
      found = await this.redis.lookup(key);
    } catch (err) {
      if (err instanceof CacheUnavailableError) return this.fallback(() => this.db.get(key, now), err);
      throw err;
    }
    if (found.kind === 'tombstone') {
      this.counters.hits += 1;
      return null;
    }
    if (found.kind === 'hit') {
      const record = decodeEntry(key, found.fields);
      if (isLive(record, now)) {
        this.counters.hits += 1;
        return record;
      }
      return this.expiredInCache(key, () => this.db.get(key, now));
    }
    this.counters.misses += 1;
    const record = await this.fill(key, () => this.db.get(key, now));
    // An old id in its rotation grace: answer from the new session's entry.
    return record !== null && !sameKey(key, record) ? this.get({ namespace: key.namespace, idHash: record.idHash }, now) : record;
  }

  async touch(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    if (!this.redis.available()) return this.fallback(() => this.touchInMariaDb(key, now));
    let outcome;
    try {
      outcome = await this.redis.touch(key, now.getTime());
    } catch (err) {
      if (err instanceof CacheUnavailableError) return this.fallback(() => this.touchInMariaDb(key, now), err);
      throw err;
    }
    return this.touched(key, now, outcome);
  }

  /**
   * touch() of many sessions (the batch route): one Redis round trip for all of them (a
   * pipeline of TOUCH), then each is served as touch() serves its outcome. Each answer stands
   * alone: one that failed does not fail the others. Without Redis (breaker open, the pipeline
   * failed) each is served by MariaDB, as touch() is; on Redis Cluster each is a touch() of its own.
   */
  async touchMany(keys: SessionKey[], now: Date): Promise<Array<PromiseSettledResult<SessionRecord | null>>> {
    if (!this.redis.available() || !this.redis.pipelines) return Promise.allSettled(keys.map((key) => this.touch(key, now)));
    let outcomes: Array<TouchOutcome | undefined>;
    try {
      outcomes = await this.redis.touchMany(keys, now.getTime());
    } catch (err) {
      if (!(err instanceof CacheUnavailableError)) throw err;
      return Promise.allSettled(keys.map((key) => this.fallback(() => this.touchInMariaDb(key, now))));
    }
    return Promise.allSettled(
      keys.map((key, i) => {
        const outcome = outcomes[i];
        return outcome === undefined ? this.fallback(() => this.touchInMariaDb(key, now)) : this.touched(key, now, outcome);
      }),
    );
  }

  /**
   * A touch served by MariaDB (Redis skipped or failed). When the touch rule says the stored
   * expiry is due, the slid expiry is written as a write is: with an outbox `invalidate`, a write
   * marker before the COMMIT and the invalidation tried after it whatever this replica's breaker
   * says. Another replica whose breaker closed sooner may be serving, from Redis, an entry it
   * filled before this touch; left alone, its next read would answer the older expiry
   * (docs/design.md §5.6, G4). A touch that writes nothing owes Redis nothing.
   */
  private async touchInMariaDb(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    const current = await this.db.get(key, now);
    if (current === null) return null;
    const touch = decideTouch(current, current.idleExpiresAt, now, this.options.touchPersistThresholdSeconds);
    if (touch === null || !touch.persist) return current;
    // An old id in its rotation grace touches the session it resolved to.
    const resolved = { namespace: current.namespace, idHash: current.idHash };
    const live = await this.write(async (tx) => {
      const live = await tx.persistTouch(resolved, touch.idleExpiresAt, touch.lastSeenAt, now);
      return { result: live, debts: live ? [{ key: resolved, action: 'invalidate' as const }] : [] };
    });
    return live ? { ...current, idleExpiresAt: touch.idleExpiresAt, lastSeenAt: touch.lastSeenAt } : null;
  }

  /** Serves a touch by what Redis's TOUCH found. */
  private async touched(key: SessionKey, now: Date, outcome: TouchOutcome): Promise<SessionRecord | null> {
    switch (outcome.kind) {
      case 'tombstone':
        this.counters.hits += 1;
        return null;
      case 'expired':
        return this.expiredInCache(key, () => this.db.touch(key, now));
      case 'miss': {
        this.counters.misses += 1;
        const record = await this.fill(key, () => this.db.touch(key, now));
        // An old id in its rotation grace touches the new session, in Redis like any touch.
        return record !== null && !sameKey(key, record) ? this.touch({ namespace: key.namespace, idHash: record.idHash }, now) : record;
      }
      case 'hit': {
        this.counters.hits += 1;
        // Redis applied the touch rule (TOUCH, its Lua twin); applied again here at the same
        // `now` it changes nothing and says whether MariaDB's copy (pe) lags too far behind.
        const record = decodeEntry(key, outcome.fields);
        const touch = decideTouch(record, new Date(Number(outcome.fields.pe)), now, this.options.touchPersistThresholdSeconds);
        if (touch?.persist === true) this.writeBehind(key, record, now);
        return record;
      }
    }
  }

  /**
   * Redis says expired, but touches served by MariaDB while Redis was unreachable may have
   * slid the expiry there: MariaDB decides, and a stale entry is dropped so the next read fills
   * afresh. (A tombstone, by contrast, is final.)
   */
  private async expiredInCache(key: SessionKey, read: () => Promise<SessionRecord | null>): Promise<SessionRecord | null> {
    this.counters.misses += 1;
    const record = await read();
    if (record !== null) await this.redis.invalidate(key).catch(() => undefined);
    return record;
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
   * Cache-aside fill behind a lease (docs/design.md §5.4). The lease is taken before MariaDB is read;
   * an invalidate or destroy in between deletes it, and the install script then refuses.
   * Installed or not, the answer takes the max of the row's idle expiry and the touch register
   * Redis still holds (touches not yet written behind survive an invalidation there), and raises
   * the register to it: no later answer can show an earlier expiry (G4).
   */
  private async fill(key: SessionKey, read: () => Promise<SessionRecord | null>): Promise<SessionRecord | null> {
    const leaseId = randomBytes(12).toString('base64url');
    let leased = false;
    const unfenced = this.options.unsafeUnfencedFill === true;
    try {
      leased = unfenced || (await this.redis.takeLease(key, leaseId));
    } catch (err) {
      if (!(err instanceof CacheUnavailableError)) throw err;
      return this.fallback(read, err);
    }
    const record = await read();
    // Never install another session under this key (an old id in its rotation grace).
    if (record === null || !sameKey(key, record)) return record;
    if (leased) await this.options.beforeInstall?.(key);
    try {
      const r = await this.redis.install(key, leased ? leaseId : '', encodeEntry(record), unfenced);
      if (leased && r.installed !== 1) this.counters.refusedFills += 1;
      return { ...record, idleExpiresAt: new Date(r.idleExpiresAtMs), lastSeenAt: new Date(r.lastSeenAtMs) };
    } catch (err) {
      if (!(err instanceof CacheUnavailableError)) throw err;
    }
    // Redis did not answer the install: this answer is MariaDB's alone, without the touch
    // register, so its expiry may lag touches Redis acknowledged (by at most the write-behind
    // threshold). That is a call served from MariaDB because Redis was unavailable, and counts
    // as one: unseen, it looked like expiry moving backwards with Redis healthy.
    this.counters.fallbacks += 1;
    return record;
  }

  /**
   * A call served by MariaDB alone, Redis being unavailable (`err`: the Redis call that failed;
   * none while the breaker is open). A 503 of it says why Redis was skipped.
   */
  private fallback<T>(read: () => Promise<T>, err?: CacheUnavailableError): Promise<T> {
    this.counters.fallbacks += 1;
    return read().catch((e: unknown) => {
      if (e instanceof StoreUnavailableError) e.redis ??= err === undefined ? 'breaker_open' : err.reason();
      throw e;
    });
  }

  async replaceData(key: SessionKey, data: SessionData, expected: ExpectedVersion, now: Date): Promise<WriteResult> {
    return (await this.writeData(key, { kind: 'replace', data, expected }, now)) as WriteResult;
  }

  patchData(key: SessionKey, patch: SessionData, expected: ExpectedVersion | undefined, maxBytes: number, now: Date): Promise<PatchResult> {
    return this.writeData(key, { kind: 'patch', patch, expected, maxBytes }, now);
  }

  /**
   * write() for a data change, in fewer round trips: the change, its outbox row and the
   * read-back go to MariaDB as one batch; the write marker before the COMMIT, the invalidation
   * after it, as for every write. A write that did not take rolls back and owes Redis nothing.
   */
  private async writeData(key: SessionKey, change: DataChange, now: Date): Promise<PatchResult> {
    const owed: CacheDebt[] = [{ key, action: 'invalidate' }];
    const { result, outboxId } = await this.db.writeData(key, change, now, {
      outbox: 'invalidate',
      beforeCommit: () => this.fenceFills.beforeCommit!({ owed }),
    });
    if (outboxId !== null) await this.settle([{ key, action: 'invalidate', id: outboxId }]);
    return result;
  }

  destroy(key: SessionKey, now: Date): Promise<boolean> {
    return this.write(async (tx) => {
      const result = await tx.destroy(key, now);
      // A tombstone even when nothing was live: an earlier write that revoked the session (a
      // rotate answered 503 that committed late) may not have reached Redis yet, and after a
      // 204 no replica may show the session again (G2). Unknown ids cost a short-lived key.
      return { result, debts: [{ key, action: 'tombstone' }] };
    });
  }

  rotate(key: SessionKey, newIdHash: Buffer, now: Date, graceSeconds = 0): Promise<SessionRecord | null> {
    return this.write(async (tx) => {
      const result = await tx.rotate(key, newIdHash, now, graceSeconds);
      // With a grace the old id must keep answering (from MariaDB, which follows it to the new
      // session) until the grace ends: drop its entry instead of planting a tombstone.
      const action = graceSeconds > 0 ? 'invalidate' : 'tombstone';
      return { result, debts: result !== null ? [{ key, action }] : [] };
    });
  }

  listBySubject(namespace: string, subject: string, now: Date, limit: number, after?: SubjectCursor): Promise<SessionRecord[]> {
    return this.db.listBySubject(namespace, subject, now, limit, after);
  }

  /**
   * The subject's mark goes to Redis like an invalidation: planted before the commit (reads and
   * fills of the subject's older entries miss from then on), and through the outbox after it.
   */
  async revokeSubject(namespace: string, subject: string, keep: Buffer | undefined, now: Date): Promise<number> {
    const revoked = await this.write(async (tx) => {
      const { revoked, mark } = await tx.revokeSubject(namespace, subject, keep, now);
      return { result: revoked, debts: [{ key: { namespace, idHash: mark.subjectHash }, action: 'mark' as const, mark }] };
    });
    this.onSubjectRevoked();
    return revoked;
  }

  pendingRevocations(limit: number): Promise<PendingRevocation[]> {
    return this.db.pendingRevocations(limit);
  }

  /**
   * One batch of a mark's row work, then tombstones for the rows it revoked (best effort: the
   * mark already makes their entries misses; a tombstone spares each a MariaDB read).
   */
  async revokeMarkedBatch(mark: PendingRevocation, batchSize: number, after: RevocationCursor | null, now: Date): Promise<RevocationBatch> {
    const batch = await this.db.revokeMarkedBatch(mark, batchSize, after, now);
    await Promise.all(batch.keys.map((key) => this.applyToCache(key, 'tombstone')));
    return batch;
  }

  /**
   * Right before a write's COMMIT: fence off fills before the commit makes the change visible
   * (MARK_WRITE). Otherwise a fill that read the old row could install it between the commit and
   * the invalidation, while MariaDB already answers the new one — a reader could see the new
   * version and the next the old. Best effort: should Redis not take it, the invalidation after
   * the commit still runs.
   */
  private readonly fenceFills: TransactionHooks<{ owed: CacheDebt[] }> = {
    beforeCommit: async ({ owed }) => {
      await Promise.all(
        owed.map((o) => (o.mark !== undefined ? this.redis.markSubject(o.mark) : this.redis.markWrite(o.key)).catch(() => undefined)),
      );
    },
  };

  /**
   * A change and its outbox rows commit together; then Redis is told. Only what Redis
   * acknowledged leaves the outbox — the outbox worker replays the rest.
   */
  private async write<T>(change: (tx: SessionWrites) => Promise<{ result: T; debts: CacheDebt[] }>): Promise<T> {
    const { result, owed } = await this.db.transaction(async (tx) => {
      const { result, debts } = await change(tx);
      const owed: Array<CacheDebt & { id: number }> = [];
      for (const debt of debts) owed.push({ ...debt, id: await tx.recordOutbox(debt.key, debt.action) });
      return { result, owed };
    }, this.fenceFills);
    if (owed.length > 0) await this.settle(owed);
    return result;
  }

  /** After a commit: Redis is told what the change owes it; only what it took leaves the outbox. */
  private async settle(owed: Array<CacheDebt & { id: number }>): Promise<void> {
    await this.options.afterCommit?.(owed.map((o) => o.key));
    // Always tried, whatever this replica's breaker says: another replica may be reading
    // from Redis right now.
    const results = await Promise.all(owed.map(async (o) => ({ id: o.id, paid: await this.applyToCache(o.key, o.action, true, o.mark) })));
    const paid = results.filter((r) => r.paid).map((r) => r.id);
    const unpaid = results.filter((r) => !r.paid).map((r) => r.id);
    if (paid.length > 0) this.paidRows.add(paid);
    // Redis did not take it: make the row due at once, so that the outbox worker of any
    // replica that reaches Redis replays it at its next tick.
    if (unpaid.length > 0) {
      this.counters.fallbacks += 1;
      this.outbox.markDue(unpaid).then(
        () => this.onOutboxRowLeft(0),
        () => this.onOutboxRowLeft(OUTBOX_ROW_AGE_MS),
      );
    }
  }

  /** True when Redis took the invalidation or tombstone. `force` is for the recovery replay. */
  async applyToCache(key: SessionKey, action: OutboxAction, force = false, mark?: SubjectMark): Promise<boolean> {
    if (!force && !this.redis.available()) {
      this.counters.fallbacks += 1;
      return false;
    }
    if (action === 'mark' && mark === undefined) {
      // A replay: the subject's mark as it stands now (a newer generation than the row's is fine).
      const current = await this.db.subjectMark(key.namespace, key.idHash);
      if (current === null) return true;
      mark = current;
    }
    try {
      if (action === 'mark') await this.redis.markSubject(mark!, force);
      else if (action === 'tombstone') await this.redis.tombstone(key, force);
      else if (action === 'clear') await this.redis.clear(key, force);
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
