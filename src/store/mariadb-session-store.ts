import { and, eq, gt, inArray, lt, sql, type SQL } from 'drizzle-orm';
import type { Database, Db } from '../db/database.js';
import { sessions, type SessionRow } from '../db/schema.js';
import {
  isLive,
  persistThresholdMs,
  slidIdleExpiry,
  touched,
  touchNeedsWrite,
  type SessionData,
  type SessionKey,
  type SessionRecord,
} from '../domain/session.js';
import type { ExpectedVersion, PatchResult, SessionStore, WriteResult } from './session-store.js';

/** Row → domain object, in one place. */
export function toRecord(row: SessionRow): SessionRecord {
  return {
    namespace: row.namespace,
    idHash: row.idHash,
    subject: row.subject,
    data: row.data,
    version: row.version,
    idleTimeoutSeconds: row.idleTimeoutSeconds,
    createdAt: row.createdAt,
    lastSeenAt: row.lastSeenAt,
    idleExpiresAt: row.idleExpiresAt,
    absoluteExpiresAt: row.absoluteExpiresAt,
    metadata: row.metadata,
  };
}

function byKey(key: SessionKey): SQL {
  return and(eq(sessions.namespace, key.namespace), eq(sessions.idHash, key.idHash))!;
}

/** The row exists, is active and has not expired at `now`: the SQL twin of isLive(). */
function liveAt(key: SessionKey, now: Date): SQL {
  return and(byKey(key), eq(sessions.state, 'active'), gt(sessions.idleExpiresAt, now), gt(sessions.absoluteExpiresAt, now))!;
}

function versionMatches(expected: ExpectedVersion | undefined): SQL | undefined {
  if (expected === undefined || expected.any) return undefined;
  return inArray(sessions.version, expected.versions);
}

export interface MariaDbSessionStoreOptions {
  /** A touch writes only when the stored idle expiry lags by more than this (seconds). */
  touchPersistThresholdSeconds: number;
}

/** The authority: every session lives here. Conditional writes are single SQL statements. */
export class MariaDbSessionStore implements SessionStore {
  constructor(
    private readonly database: Database,
    private readonly options: MariaDbSessionStoreOptions,
  ) {}

  async create(session: SessionRecord): Promise<void> {
    await this.database.run((db) =>
      db.insert(sessions).values({
        namespace: session.namespace,
        idHash: session.idHash,
        subject: session.subject,
        data: session.data,
        version: session.version,
        state: 'active',
        idleTimeoutSeconds: session.idleTimeoutSeconds,
        createdAt: session.createdAt,
        lastSeenAt: session.lastSeenAt,
        idleExpiresAt: session.idleExpiresAt,
        absoluteExpiresAt: session.absoluteExpiresAt,
        metadata: session.metadata,
      }),
    );
  }

  async get(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    return this.database.run((db) => this.selectLive(db, key, now));
  }

  private async selectLive(db: Db, key: SessionKey, now: Date, forUpdate = false): Promise<SessionRecord | null> {
    const query = db.select().from(sessions).where(and(byKey(key), eq(sessions.state, 'active'))).limit(1);
    const rows = forUpdate ? await query.for('update') : await query;
    const row = rows[0];
    if (row === undefined) return null;
    const record = toRecord(row);
    return isLive(record, now) ? record : null;
  }

  async touch(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    return this.database.run(async (db) => {
      const current = await this.selectLive(db, key, now);
      if (current === null) return null;
      const next = touched(current, now);
      const threshold = persistThresholdMs(current.idleTimeoutSeconds, this.options.touchPersistThresholdSeconds);
      // Lazy write-behind: the stored expiry may lag the true one by at most `threshold`.
      if (!touchNeedsWrite(current.idleExpiresAt, next.idleExpiresAt, threshold)) return current;
      const result = await db
        .update(sessions)
        .set({
          // A max-register in SQL: concurrent touches can only move the expiry forward.
          idleExpiresAt: sql`GREATEST(${sessions.idleExpiresAt}, LEAST(${next.idleExpiresAt}, ${sessions.absoluteExpiresAt}))`,
          lastSeenAt: sql`GREATEST(${sessions.lastSeenAt}, ${now})`,
        })
        .where(liveAt(key, now));
      return affectedRows(result) === 1 ? next : null;
    });
  }

  async replaceData(key: SessionKey, data: SessionData, expected: ExpectedVersion, now: Date): Promise<WriteResult> {
    return this.conditionalWrite(key, now, expected, { data }).then((r) => r as WriteResult);
  }

  async patchData(
    key: SessionKey,
    patch: SessionData,
    expected: ExpectedVersion | undefined,
    maxBytes: number,
    now: Date,
  ): Promise<PatchResult> {
    const merged = sql`JSON_MERGE_PATCH(${sessions.data}, ${JSON.stringify(patch)})`;
    return this.conditionalWrite(key, now, expected, { data: merged }, sql`OCTET_LENGTH(${merged}) <= ${maxBytes}`);
  }

  /**
   * UPDATE … WHERE live AND version matches [AND size fits], then read back the row in the same
   * transaction (MariaDB has no UPDATE … RETURNING). When nothing matched, the read-back says why.
   */
  private async conditionalWrite(
    key: SessionKey,
    now: Date,
    expected: ExpectedVersion | undefined,
    set: { data: SessionData | SQL },
    fits?: SQL,
  ): Promise<PatchResult> {
    return this.database.transaction(async (tx) => {
      const result = await tx
        .update(sessions)
        .set({ data: set.data as SessionData, version: sql`${sessions.version} + 1` })
        .where(and(liveAt(key, now), versionMatches(expected), fits));
      const after = await this.selectLive(tx, key, now);
      if (after === null) return { kind: 'not_found' };
      if (affectedRows(result) === 1) return { kind: 'ok', session: after };
      if (expected !== undefined && !expected.any && !expected.versions.includes(after.version)) {
        return { kind: 'version_mismatch', currentVersion: after.version };
      }
      return { kind: 'too_large' };
    });
  }

  async destroy(key: SessionKey, now: Date): Promise<boolean> {
    const result = await this.database.run((db) =>
      db
        .update(sessions)
        // The idle expiry becomes the revocation time, so the sweeper's one range finds the row.
        .set({ state: 'revoked', idleExpiresAt: now })
        .where(and(byKey(key), eq(sessions.state, 'active'))),
    );
    return affectedRows(result) === 1;
  }

  async rotate(key: SessionKey, newIdHash: Buffer, now: Date): Promise<SessionRecord | null> {
    return this.database.transaction(async (tx) => {
      const current = await this.selectLive(tx, key, now, true);
      if (current === null) return null;
      const rotated: SessionRecord = {
        ...current,
        idHash: newIdHash,
        lastSeenAt: now,
        idleExpiresAt: slidIdleExpiry(now, current.idleTimeoutSeconds, current.absoluteExpiresAt),
      };
      await tx
        .update(sessions)
        .set({ state: 'revoked', idleExpiresAt: now })
        .where(byKey(key));
      await tx.insert(sessions).values({ ...rotated, state: 'active' });
      return rotated;
    });
  }

  async sweepBatch(before: Date, batchSize: number): Promise<number> {
    // MariaDB supports ORDER BY … LIMIT on single-table DELETE; drizzle's builder does not.
    const result = await this.database.run((db) =>
      db.execute(
        sql`DELETE FROM ${sessions} WHERE ${lt(sessions.idleExpiresAt, before)} ORDER BY ${sessions.idleExpiresAt} LIMIT ${batchSize}`,
      ),
    );
    return affectedRows(result);
  }
}

function affectedRows(result: unknown): number {
  const first = Array.isArray(result) ? result[0] : result;
  return Number((first as { affectedRows?: number } | undefined)?.affectedRows ?? 0);
}
