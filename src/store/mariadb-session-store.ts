import { and, asc, desc, eq, getTableColumns, gt, gte, inArray, isNotNull, lt, lte, ne, or, sql, type SQL } from 'drizzle-orm';
import { DUPLICATE_KEY_ERRNO, errnoOf, type Database, type Db } from '../db/database.js';
import { SessionExistsError } from '../domain/errors.js';
import { cacheOutbox, destroyedTokens, sessions, subjectRevocations, type SessionRow } from '../db/schema.js';
import { subjectHashOf } from '../domain/token.js';
import {
  decideTouch,
  isLive,
  slidIdleExpiry,
  type SessionData,
  type SessionKey,
  type SessionRecord,
} from '../domain/session.js';
import type { OutboxAction, OutboxRepository, OutboxRow } from './outbox.js';
import type {
  DataChange,
  DataWriteOptions,
  DataWritten,
  ExpectedVersion,
  PatchResult,
  SessionWrites,
  SubjectCursor,
  SubjectMark,
  PendingRevocation,
  RevocationBatch,
  RevocationCursor,
  TransactionalSessionStore,
  TransactionHooks,
  WriteResult,
} from './session-store.js';

/** How many rotation-grace hops a read follows (a session rotated twice within the grace). */
const MAX_GRACE_HOPS = 3;

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
    subjectGeneration: row.subjectGeneration,
  };
}

/**
 * The row is revoked by its subject's "log out everywhere" mark (subject_revocations): the
 * mark's generation is above the row's and the row is not the one the mark keeps. Reads and
 * conditional writes honour it, so a revocation takes effect when the mark commits, before the
 * worker revoked the rows themselves. Names are qualified: it is a correlated subquery.
 */
const COVERED_SQL =
  'EXISTS (SELECT 1 FROM `subject_revocations` `m` WHERE `m`.`namespace` = `sessions`.`namespace` AND `m`.`subject` = `sessions`.`subject`' +
  ' AND `m`.`generation` > `sessions`.`subject_generation` AND (`m`.`keep_id_hash` IS NULL OR `m`.`keep_id_hash` <> `sessions`.`id_hash`))';
const COVERED = sql.raw(COVERED_SQL);
const notCovered = sql`NOT ${COVERED}`;

/**
 * A data write's statements as text, built once (drizzle would build them per call): the
 * conditional UPDATE — live, not revoked by its subject's mark, [version matches], [fits] —,
 * the outbox row, and the read-back of selectLive(). They go to MariaDB as one batch
 * (Database.batchTransaction); values are parameters.
 */
const SESSION_COLUMNS =
  '`namespace`, `id_hash`, `subject`, `data`, `version`, `state`, `idle_timeout_seconds`, `created_at`, `last_seen_at`, `idle_expires_at`, `absolute_expires_at`, `metadata`, `rotated_to`, `subject_generation`';
const LIVE_KEY_SQL = `\`namespace\` = ? AND \`id_hash\` = ? AND \`state\` = 'active' AND \`idle_expires_at\` > ? AND \`absolute_expires_at\` > ? AND NOT ${COVERED_SQL}`;
const READ_BACK_SQL = `SELECT ${SESSION_COLUMNS} FROM \`sessions\` WHERE \`namespace\` = ? AND \`id_hash\` = ? AND \`state\` = 'active' AND NOT ${COVERED_SQL} LIMIT 1`;
const OUTBOX_INSERT_SQL = 'INSERT INTO `cache_outbox` (`namespace`, `id_hash`, `action`, `created_at`) VALUES (?, ?, ?, ?)';

/** The UPDATE's text by kind and number of accepted versions (-1: any; 0: none), built once each. */
const updateTexts = new Map<string, string>();

function updateSql(kind: DataChange['kind'], versions: number): string {
  const name = `${kind}:${versions}`;
  let text = updateTexts.get(name);
  if (text === undefined) {
    const data = kind === 'replace' ? '?' : 'JSON_MERGE_PATCH(`data`, ?)';
    const version = versions < 0 ? '' : versions === 0 ? ' AND FALSE' : ` AND \`version\` IN (${Array(versions).fill('?').join(', ')})`;
    const fits = kind === 'patch' ? ' AND OCTET_LENGTH(JSON_MERGE_PATCH(`data`, ?)) <= ?' : '';
    text = `UPDATE \`sessions\` SET \`data\` = ${data}, \`version\` = \`version\` + 1 WHERE ${LIVE_KEY_SQL}${version}${fits}`;
    // One text per version count a client sends (If-Match lists): a bounded few.
    if (updateTexts.size < 64) updateTexts.set(name, text);
  }
  return text;
}

/** A DATETIME(3) as the connector answers it (dateStrings, UTC session time zone). */
function utcDate(value: unknown): Date {
  return value instanceof Date ? value : new Date(`${String(value).replace(' ', 'T')}Z`);
}

function jsonOf<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

/** A row of READ_BACK_SQL (column names as in the table) → domain object. */
function recordOfRaw(row: Record<string, unknown>): SessionRecord {
  const metadata = row.metadata ?? null;
  return {
    namespace: row.namespace as string,
    idHash: row.id_hash as Buffer,
    subject: (row.subject ?? null) as string | null,
    data: jsonOf<SessionData>(row.data),
    version: Number(row.version),
    idleTimeoutSeconds: Number(row.idle_timeout_seconds),
    createdAt: utcDate(row.created_at),
    lastSeenAt: utcDate(row.last_seen_at),
    idleExpiresAt: utcDate(row.idle_expires_at),
    absoluteExpiresAt: utcDate(row.absolute_expires_at),
    metadata: metadata === null ? null : jsonOf<SessionRecord['metadata']>(metadata),
    subjectGeneration: Number(row.subject_generation),
  };
}

/**
 * INSERT of a new row that takes its subject's current revocation generation in the same
 * statement (0 without a mark or a subject): a session created after a mark outlives it.
 */
function insertRow(s: SessionRecord, extra: { rotatedTo?: Buffer | null } = {}): SQL {
  return sql`INSERT INTO ${sessions} (${sql.raw(
    '`namespace`, `id_hash`, `subject`, `data`, `version`, `state`, `idle_timeout_seconds`, `created_at`, `last_seen_at`, `idle_expires_at`, `absolute_expires_at`, `metadata`, `rotated_to`, `subject_generation`',
  )}) SELECT ${s.namespace}, ${s.idHash}, ${s.subject}, ${JSON.stringify(s.data)}, ${s.version}, 'active', ${s.idleTimeoutSeconds}, ${s.createdAt}, ${s.lastSeenAt}, ${s.idleExpiresAt}, ${s.absoluteExpiresAt}, ${s.metadata === null ? null : JSON.stringify(s.metadata)}, ${extra.rotatedTo ?? null}, COALESCE(MAX(${subjectRevocations.generation}), 0) FROM ${subjectRevocations} WHERE ${subjectRevocations.namespace} = ${s.namespace} AND ${subjectRevocations.subject} = ${s.subject}`;
}

/** insertRow() as text, built once: what create() sends (values: insertParams()). */
const INSERT_ROW_SQL =
  `INSERT INTO \`sessions\` (${SESSION_COLUMNS}) SELECT ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, COALESCE(MAX(\`generation\`), 0)` +
  ' FROM `subject_revocations` WHERE `namespace` = ? AND `subject` = ?';

function insertParams(s: SessionRecord): unknown[] {
  const metadata = s.metadata === null ? null : JSON.stringify(s.metadata);
  return [s.namespace, s.idHash, s.subject, JSON.stringify(s.data), s.version, s.idleTimeoutSeconds, s.createdAt, s.lastSeenAt, s.idleExpiresAt, s.absoluteExpiresAt, metadata, null, s.namespace, s.subject];
}

/**
 * A subject's sessions by activity with their liveness columns (schema.ts). Named in the queries
 * over one subject: the optimiser otherwise prefers the primary key's namespace prefix when one
 * namespace holds most rows, and reads every row of the namespace.
 */
const SUBJECT_INDEX = 'sessions_subject_live_idx';

/** A row as resolve() reads it: whether a subject mark revokes it comes with it. */
const resolveColumns = { ...getTableColumns(sessions), covered: sql<number>`${COVERED}`.mapWith(Number) };

function byKey(key: SessionKey): SQL {
  return and(eq(sessions.namespace, key.namespace), eq(sessions.idHash, key.idHash))!;
}

/** The row exists, is active and has not expired at `now`: the SQL twin of isLive(). */
function liveAt(key: SessionKey, now: Date): SQL {
  return and(byKey(key), eq(sessions.state, 'active'), gt(sessions.idleExpiresAt, now), gt(sessions.absoluteExpiresAt, now), notCovered)!;
}

function subjectIs(namespace: string, subject: string): SQL {
  return and(eq(sessions.namespace, namespace), eq(sessions.subject, subject))!;
}

/** Active and not expired at `now` (a subject's mark aside). */
function liveState(now: Date): SQL {
  return and(eq(sessions.state, 'active'), gt(sessions.idleExpiresAt, now), gt(sessions.absoluteExpiresAt, now))!;
}

/** Active, not expired at `now`, and not revoked by the subject's mark. */
function liveRows(now: Date): SQL {
  return and(liveState(now), notCovered)!;
}

/** A subject's mark as read beforehand: what a subquery per row (COVERED) would ask, from index columns. */
type MarkState = { generation: number; keepIdHash: Buffer | null } | undefined;

function uncoveredBy(mark: MarkState): SQL | undefined {
  if (mark === undefined) return undefined;
  const above = sql`${sessions.subjectGeneration} >= ${mark.generation}`;
  return mark.keepIdHash === null ? above : or(above, eq(sessions.idHash, mark.keepIdHash));
}

/** Rows a revocation changes: active ones, and ids whose rotation grace still runs. */
function revocable(now: Date): SQL {
  return or(eq(sessions.state, 'active'), and(isNotNull(sessions.rotatedTo), gt(sessions.idleExpiresAt, now)))!;
}

function versionMatches(expected: ExpectedVersion | undefined): SQL | undefined {
  if (expected === undefined || expected.any) return undefined;
  return inArray(sessions.version, expected.versions);
}

function affectedRows(result: unknown): number {
  const first = Array.isArray(result) ? result[0] : result;
  return Number((first as { affectedRows?: number } | undefined)?.affectedRows ?? 0);
}

/** A conditional write's answer from whether its UPDATE took and the live row read back after it. */
function writeOutcome(updated: boolean, after: SessionRecord | null, expected: ExpectedVersion | undefined): PatchResult {
  if (after === null) return { kind: 'not_found' };
  if (updated) return { kind: 'ok', session: after };
  if (expected !== undefined && !expected.any && !expected.versions.includes(after.version)) {
    return { kind: 'version_mismatch', currentVersion: after.version };
  }
  return { kind: 'too_large' };
}

/**
 * The store's statements on one connection (a transaction, or the pool for single statements).
 * Conditional writes are single UPDATEs; the result is read back on the same connection.
 */
export class SessionStatements implements SessionWrites {
  constructor(private readonly db: Db) {}

  async selectLive(key: SessionKey, now: Date, forUpdate = false): Promise<SessionRecord | null> {
    const query = this.db.select().from(sessions).where(and(byKey(key), eq(sessions.state, 'active'), notCovered)).limit(1);
    const rows = forUpdate ? await query.for('update') : await query;
    const row = rows[0];
    if (row === undefined) return null;
    const record = toRecord(row);
    return isLive(record, now) ? record : null;
  }

  /**
   * What a token reads: the live session, or — while a rotation grace lasts — the session the
   * old id was rotated to. Null otherwise.
   */
  async resolve(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    let current = key;
    for (let hop = 0; hop <= MAX_GRACE_HOPS; hop++) {
      const row = (await this.db.select(resolveColumns).from(sessions).where(byKey(current)).limit(1))[0];
      if (row === undefined || row.covered !== 0) return null;
      if (row.state === 'active') {
        const record = toRecord(row);
        return isLive(record, now) ? record : null;
      }
      if (row.rotatedTo === null || now >= row.idleExpiresAt) return null;
      current = { namespace: key.namespace, idHash: row.rotatedTo };
    }
    return null;
  }

  /**
   * Moves the stored idle expiry and last-seen forward (a max-register), the idle expiry never
   * past the absolute one; true when the session was live. The SQL twin of decideTouch() (domain).
   */
  async persistTouch(key: SessionKey, idleExpiresAt: Date, lastSeenAt: Date, now: Date): Promise<boolean> {
    const result = await this.db
      .update(sessions)
      .set({
        idleExpiresAt: sql`GREATEST(${sessions.idleExpiresAt}, LEAST(${idleExpiresAt}, ${sessions.absoluteExpiresAt}))`,
        lastSeenAt: sql`GREATEST(${sessions.lastSeenAt}, ${lastSeenAt})`,
      })
      .where(liveAt(key, now));
    return affectedRows(result) === 1;
  }

  /**
   * UPDATE … WHERE live AND version matches [AND size fits], then read back the row (MariaDB has
   * no UPDATE … RETURNING). When nothing matched, the read-back says why.
   */
  async conditionalWrite(
    key: SessionKey,
    now: Date,
    expected: ExpectedVersion | undefined,
    data: SessionData | SQL,
    fits?: SQL,
  ): Promise<PatchResult> {
    const result = await this.db
      .update(sessions)
      .set({ data: data as SessionData, version: sql`${sessions.version} + 1` })
      .where(and(liveAt(key, now), versionMatches(expected), fits));
    return writeOutcome(affectedRows(result) === 1, await this.selectLive(key, now), expected);
  }

  async replaceData(key: SessionKey, data: SessionData, expected: ExpectedVersion, now: Date): Promise<WriteResult> {
    return (await this.conditionalWrite(key, now, expected, data)) as WriteResult;
  }

  async patchData(key: SessionKey, patch: SessionData, expected: ExpectedVersion | undefined, maxBytes: number, now: Date): Promise<PatchResult> {
    const merged = sql`JSON_MERGE_PATCH(${sessions.data}, ${JSON.stringify(patch)})`;
    return this.conditionalWrite(key, now, expected, merged, sql`OCTET_LENGTH(${merged}) <= ${maxBytes}`);
  }

  /**
   * Remembers the ids of the sessions `where` selects, until their absolute expiry, as ids
   * that may not be created again (docs/design.md §8: a destroyed id never returns). An id that comes back
   * after its absolute expiry and dies again is remembered for its new life.
   */
  /** remember() for the revocation worker's batches. */
  rememberWhere(where: SQL): Promise<void> {
    return this.remember(where);
  }

  private async remember(where: SQL): Promise<void> {
    await this.db.execute(sql`
      INSERT INTO ${destroyedTokens} (${sql.identifier('namespace')}, ${sql.identifier('id_hash')}, ${sql.identifier('expires_at')})
      SELECT ${sessions.namespace}, ${sessions.idHash}, ${sessions.absoluteExpiresAt} FROM ${sessions} WHERE ${where}
      ON DUPLICATE KEY UPDATE ${destroyedTokens.expiresAt} = GREATEST(${destroyedTokens.expiresAt}, VALUES(${sql.identifier('expires_at')}))`);
  }

  /** True when an id is remembered as destroyed and its session could still be alive at `now`. */
  private async remembered(key: SessionKey, now: Date): Promise<boolean> {
    const rows = await this.db
      .select({ expiresAt: destroyedTokens.expiresAt })
      .from(destroyedTokens)
      .where(and(eq(destroyedTokens.namespace, key.namespace), eq(destroyedTokens.idHash, key.idHash), gt(destroyedTokens.expiresAt, now)))
      .limit(1);
    return rows.length > 0;
  }

  /** Revokes a live session, or ends the grace of a rotated-away id. True when a row changed. */
  async destroy(key: SessionKey, now: Date): Promise<boolean> {
    await this.remember(byKey(key));
    const result = await this.db
      .update(sessions)
      // The idle expiry becomes the revocation time, so the sweeper's one range finds the row.
      .set({ state: 'revoked', idleExpiresAt: sql`LEAST(${sessions.idleExpiresAt}, ${now})` })
      .where(and(byKey(key), revocable(now), notCovered));
    return affectedRows(result) === 1;
  }

  async rotate(key: SessionKey, newIdHash: Buffer, now: Date, graceSeconds = 0): Promise<SessionRecord | null> {
    const current = await this.selectLive(key, now, true);
    if (current === null) return null;
    const rotated: SessionRecord = {
      ...current,
      idHash: newIdHash,
      lastSeenAt: now,
      idleExpiresAt: slidIdleExpiry(now, current.idleTimeoutSeconds, current.absoluteExpiresAt),
    };
    // With a grace the old row points at the new one until the grace ends (its idle expiry).
    const graceEnd = new Date(Math.min(now.getTime() + graceSeconds * 1000, current.absoluteExpiresAt.getTime()));
    await this.remember(byKey(key));
    await this.db
      .update(sessions)
      .set({ state: 'revoked', idleExpiresAt: graceSeconds > 0 ? graceEnd : now, rotatedTo: graceSeconds > 0 ? newIdHash : null })
      .where(byKey(key));
    await this.db.execute(insertRow(rotated));
    return rotated;
  }

  /**
   * Inserts a new session; with a cap, first revokes the subject's least recently used live
   * sessions so that it holds at most `maxPerSubject` afterwards. The subject's rows are
   * locked, so concurrent creates for one subject serialise. Returns the evicted keys.
   */
  async insert(session: SessionRecord, maxPerSubject = 0): Promise<SessionKey[]> {
    let evicted: SessionKey[] = [];
    if (maxPerSubject > 0 && session.subject !== null) {
      const rows = await this.db
        .select({ idHash: sessions.idHash })
        .from(sessions)
        .where(and(subjectIs(session.namespace, session.subject), liveRows(session.createdAt)))
        .orderBy(asc(sessions.lastSeenAt), asc(sessions.createdAt))
        .for('update');
      const excess = rows.length - maxPerSubject + 1;
      if (excess > 0) {
        evicted = rows.slice(0, excess).map((r) => ({ namespace: session.namespace, idHash: r.idHash }));
        const evictedRows = and(eq(sessions.namespace, session.namespace), inArray(sessions.idHash, evicted.map((k) => k.idHash)))!;
        await this.remember(evictedRows);
        await this.db
          .update(sessions)
          .set({ state: 'revoked', idleExpiresAt: session.createdAt })
          .where(evictedRows);
      }
    }
    await this.db.execute(insertRow(session));
    return evicted;
  }

  /**
   * insert() under an id the caller chose: throws SessionExistsError (rolling the transaction
   * back, evictions included) when a row of that id is still there or the id is remembered as
   * destroyed.
   */
  async insertIfAbsent(session: SessionRecord, maxPerSubject = 0): Promise<SessionKey[]> {
    const key = { namespace: session.namespace, idHash: session.idHash };
    const now = session.createdAt;
    // A row past its absolute expiry can never be live again (touch never moves that expiry):
    // it no longer holds its id, swept or not.
    await this.db.delete(sessions).where(and(byKey(key), lte(sessions.absoluteExpiresAt, now)));
    let evicted: SessionKey[];
    try {
      evicted = await this.insert(session, maxPerSubject);
    } catch (err) {
      if (errnoOf(err) === DUPLICATE_KEY_ERRNO) throw new SessionExistsError();
      throw err;
    }
    // Asked after the insert, whose key check sees every commit: a revoked row vanishes (swept)
    // only after the revocation that remembered it committed, so the row or its memory is seen.
    if (await this.remembered(key, now)) throw new SessionExistsError();
    return evicted;
  }

  /** The subject's revocation mark, if it has one. */
  private async markOf(namespace: string, subject: string): Promise<MarkState> {
    const rows = await this.db
      .select({ generation: subjectRevocations.generation, keepIdHash: subjectRevocations.keepIdHash })
      .from(subjectRevocations)
      .where(and(eq(subjectRevocations.namespace, namespace), eq(subjectRevocations.subject, subject)))
      .limit(1);
    return rows[0];
  }

  async listBySubject(namespace: string, subject: string, now: Date, limit: number, after?: SubjectCursor): Promise<SessionRecord[]> {
    const position =
      after === undefined
        ? undefined
        : or(lt(sessions.lastSeenAt, after.lastSeenAt), and(eq(sessions.lastSeenAt, after.lastSeenAt), lt(sessions.idHash, after.idHash)));
    const mark = await this.markOf(namespace, subject);
    // The page's ids first, from the index alone (its columns decide liveness): revoked and
    // expired rows cost index entries, not row reads (MariaDB does not push conditions into a
    // backward index scan). Then the rows of the page.
    const page = await this.db
      .select({ idHash: sessions.idHash })
      .from(sessions, { forceIndex: SUBJECT_INDEX })
      .where(and(subjectIs(namespace, subject), liveState(now), uncoveredBy(mark), position))
      .orderBy(desc(sessions.lastSeenAt), desc(sessions.idHash))
      .limit(limit);
    if (page.length === 0) return [];
    const rows = await this.db
      .select()
      .from(sessions)
      .where(and(eq(sessions.namespace, namespace), inArray(sessions.idHash, page.map((r) => r.idHash)), liveState(now)));
    const byId = new Map(rows.map((r) => [r.idHash.toString('hex'), r]));
    return page.flatMap((p) => {
      const row = byId.get(p.idHash.toString('hex'));
      return row === undefined ? [] : [toRecord(row)];
    });
  }

  /**
   * Log out everywhere, at a cost that does not grow with the subject's sessions: raises the
   * subject's revocation mark (every session of the subject written before it, but `keep`, is
   * revoked from this commit on: reads honour the mark) and counts the live sessions it revoked.
   * The rows themselves are revoked later, in batches (revokeMarkedBatch). `keep` is kept only
   * while it is a live session of the subject: a mark never brings a revoked one back.
   */
  async revokeSubject(namespace: string, subject: string, keep: Buffer | undefined, now: Date): Promise<{ revoked: number; mark: SubjectMark }> {
    const ours = and(eq(subjectRevocations.namespace, namespace), eq(subjectRevocations.subject, subject))!;
    // The mark's row lock orders revocations of one subject; reads after it see the latest mark.
    const current = (
      await this.db.select({ generation: subjectRevocations.generation, keepIdHash: subjectRevocations.keepIdHash }).from(subjectRevocations).where(ours).for('update')
    )[0];
    let kept: Buffer | null = null;
    if (keep !== undefined) {
      const live = await this.db
        .select({ idHash: sessions.idHash })
        .from(sessions)
        .where(and(byKey({ namespace, idHash: keep }), eq(sessions.subject, subject), liveState(now), uncoveredBy(current)))
        .limit(1);
      if (live.length > 0) kept = keep;
    }
    // One index-only range over the subject: the live sessions it revokes, and the highest
    // generation of any row. A generation is at least the revocation's time in ms, and above
    // every row's and the previous mark's: once the sweeper deleted a mark, sessions created
    // under it still carry its generation, and its copy in Redis refuses a lower one
    // (docs/design.md §5.9).
    const revokes = and(liveState(now), uncoveredBy(current), kept === null ? undefined : ne(sessions.idHash, kept))!;
    const counted = await this.db
      .select({
        n: sql<number>`COALESCE(SUM(${revokes}), 0)`.mapWith(Number),
        highest: sql<number>`COALESCE(MAX(${sessions.subjectGeneration}), 0)`.mapWith(Number),
      })
      .from(sessions, { forceIndex: SUBJECT_INDEX })
      .where(subjectIs(namespace, subject));
    const generation = Math.max((current?.generation ?? 0) + 1, (counted[0]?.highest ?? 0) + 1, now.getTime());
    const mark: SubjectMark = { namespace, subjectHash: subjectHashOf(subject), generation, keepIdHash: kept };
    await this.db
      .insert(subjectRevocations)
      .values({ namespace, subject, subjectHash: mark.subjectHash, generation: mark.generation, keepIdHash: kept, revokedAt: now, pending: 1 })
      .onDuplicateKeyUpdate({ set: { generation: mark.generation, keepIdHash: kept, revokedAt: now, pending: 1 } });
    return { revoked: counted[0]?.n ?? 0, mark };
  }

  /** Records a cache invalidation to be acknowledged by Redis; returns the row id. */
  /**
   * Stamped with the wall clock at the insert, not the request's `now`: a row becomes due for
   * replay a fixed age after it was written, however long the request waited before (pool,
   * locks, deadlock retries). Stamped with an old `now`, a row could be replayed while its
   * writer was still delivering it, and the late replay dropped touches made after the write.
   */
  async recordOutbox(key: SessionKey, action: OutboxAction): Promise<number> {
    const result = await this.db.insert(cacheOutbox).values({ namespace: key.namespace, idHash: key.idHash, action, createdAt: new Date() });
    return Number((Array.isArray(result) ? result[0] : result)?.insertId);
  }
}

export interface MariaDbSessionStoreOptions {
  /** A touch writes only when the stored idle expiry lags by more than this (seconds). */
  touchPersistThresholdSeconds: number;
  /**
   * How long a revocation mark is kept at least, in ms: the lifetime of its copy in Redis
   * (0 without a cache). The sweeper deletes a mark only once it is older.
   */
  subjectMarkRetentionMs?: number;
}

/** The authority: every session lives here. */
export class MariaDbSessionStore implements TransactionalSessionStore {
  /** Called after a subject's revocation mark committed (the app starts the revocation worker). */
  onSubjectRevoked: () => void = () => undefined;

  private readonly options: Required<MariaDbSessionStoreOptions>;

  constructor(
    private readonly database: Database,
    options: MariaDbSessionStoreOptions,
  ) {
    this.options = { subjectMarkRetentionMs: 0, ...options };
  }

  /**
   * Runs several statements in one transaction (the cache tier adds its outbox rows this way),
   * and `hooks.beforeCommit` right before its COMMIT (the cache tier's write markers).
   */
  transaction<T>(work: (tx: SessionWrites) => Promise<T>, hooks?: TransactionHooks<T>): Promise<T> {
    return this.database.transaction((db) => work(new SessionStatements(db)), hooks);
  }

  private single<T>(work: (s: SessionStatements) => Promise<T>): Promise<T> {
    return this.database.run((db) => work(new SessionStatements(db)));
  }

  async create(session: SessionRecord, options: { maxPerSubject?: number } = {}): Promise<{ evicted: number }> {
    const cap = options.maxPerSubject ?? 0;
    if (cap === 0 || session.subject === null) {
      await this.database.query(INSERT_ROW_SQL, insertParams(session));
      return { evicted: 0 };
    }
    const evicted = await this.transaction((tx) => tx.insert(session, cap));
    return { evicted: evicted.length };
  }

  async createIfAbsent(session: SessionRecord, options: { maxPerSubject?: number } = {}): Promise<{ evicted: number }> {
    const evicted = await this.transaction((tx) => tx.insertIfAbsent(session, options.maxPerSubject ?? 0));
    return { evicted: evicted.length };
  }

  get(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    return this.single((s) => s.resolve(key, now));
  }

  async touch(key: SessionKey, now: Date): Promise<SessionRecord | null> {
    return this.single(async (s) => {
      const current = await s.resolve(key, now);
      if (current === null) return null;
      // Lazy write-behind: the stored expiry may lag the true one by at most the threshold.
      const touch = decideTouch(current, current.idleExpiresAt, now, this.options.touchPersistThresholdSeconds);
      if (touch === null || !touch.persist) return current;
      const resolved = { namespace: current.namespace, idHash: current.idHash };
      const live = await s.persistTouch(resolved, touch.idleExpiresAt, touch.lastSeenAt, now);
      return live ? { ...current, idleExpiresAt: touch.idleExpiresAt, lastSeenAt: touch.lastSeenAt } : null;
    });
  }

  persistTouch(key: SessionKey, idleExpiresAt: Date, lastSeenAt: Date, now: Date): Promise<boolean> {
    return this.single((s) => s.persistTouch(key, idleExpiresAt, lastSeenAt, now));
  }

  async replaceData(key: SessionKey, data: SessionData, expected: ExpectedVersion, now: Date): Promise<WriteResult> {
    return (await this.writeData(key, { kind: 'replace', data, expected }, now)).result as WriteResult;
  }

  async patchData(key: SessionKey, patch: SessionData, expected: ExpectedVersion | undefined, maxBytes: number, now: Date): Promise<PatchResult> {
    return (await this.writeData(key, { kind: 'patch', patch, expected, maxBytes }, now)).result;
  }

  /**
   * replaceData / patchData as one batch: START TRANSACTION, the conditional UPDATE, with
   * `outbox` its outbox row, and the read-back go to MariaDB in one round trip (SessionStatements
   * sends them one by one); then COMMIT when the write took, after `beforeCommit` (the cache
   * tier's write marker), or ROLLBACK when it did not — it changed nothing, and its outbox row
   * goes with it. Returns the outbox row's id when one committed.
   */
  writeData(key: SessionKey, change: DataChange, now: Date, options: DataWriteOptions = {}): Promise<DataWritten> {
    const { expected } = change;
    const versions = expected === undefined || expected.any ? [] : expected.versions;
    const json = JSON.stringify(change.kind === 'replace' ? change.data : change.patch);
    const params: unknown[] = [json, key.namespace, key.idHash, now, now, ...versions];
    if (change.kind === 'patch') params.push(json, change.maxBytes);
    let text = updateSql(change.kind, expected === undefined || expected.any ? -1 : versions.length);
    if (options.outbox !== undefined) {
      // Stamped with the wall clock, like recordOutbox().
      text += `;${OUTBOX_INSERT_SQL}`;
      params.push(key.namespace, key.idHash, options.outbox, new Date());
    }
    text += `;${READ_BACK_SQL}`;
    params.push(key.namespace, key.idHash);
    const { beforeCommit } = options;
    return this.database.batchTransaction(
      text,
      params,
      (results) => {
        const row = (results[results.length - 1] as Array<Record<string, unknown>>)[0];
        const after = row === undefined ? null : recordOfRaw(row);
        const result = writeOutcome(affectedRows(results[0]) === 1, after !== null && isLive(after, now) ? after : null, expected);
        const committed = result.kind === 'ok';
        const outboxId = committed && options.outbox !== undefined ? Number((results[1] as { insertId?: number }).insertId) : null;
        return { commit: committed, value: { result, outboxId } };
      },
      { beforeCommit: beforeCommit === undefined ? undefined : () => beforeCommit() },
    );
  }

  destroy(key: SessionKey, now: Date): Promise<boolean> {
    return this.transaction((tx) => tx.destroy(key, now));
  }

  rotate(key: SessionKey, newIdHash: Buffer, now: Date, graceSeconds = 0): Promise<SessionRecord | null> {
    return this.transaction((tx) => tx.rotate(key, newIdHash, now, graceSeconds));
  }

  listBySubject(namespace: string, subject: string, now: Date, limit: number, after?: SubjectCursor): Promise<SessionRecord[]> {
    return this.single((s) => s.listBySubject(namespace, subject, now, limit, after));
  }

  async revokeSubject(namespace: string, subject: string, keep: Buffer | undefined, now: Date): Promise<number> {
    const { revoked } = await this.transaction((tx) => tx.revokeSubject(namespace, subject, keep, now));
    this.onSubjectRevoked();
    return revoked;
  }

  /** A subject's revocation mark by the subject's hash (the outbox replays it to Redis); null when it has none. */
  async subjectMark(namespace: string, subjectHash: Buffer): Promise<SubjectMark | null> {
    const rows = await this.database.run((db) =>
      db
        .select({ generation: subjectRevocations.generation, keepIdHash: subjectRevocations.keepIdHash })
        .from(subjectRevocations)
        .where(and(eq(subjectRevocations.namespace, namespace), eq(subjectRevocations.subjectHash, subjectHash)))
        .limit(1),
    );
    const row = rows[0];
    return row === undefined ? null : { namespace, subjectHash, ...row };
  }

  /** Marks whose rows may still be active, for the revocation worker. */
  pendingRevocations(limit: number): Promise<PendingRevocation[]> {
    return this.database.run((db) =>
      db
        .select({
          namespace: subjectRevocations.namespace,
          subject: subjectRevocations.subject,
          generation: subjectRevocations.generation,
          keepIdHash: subjectRevocations.keepIdHash,
          revokedAt: subjectRevocations.revokedAt,
        })
        .from(subjectRevocations)
        .where(eq(subjectRevocations.pending, 1))
        .limit(limit),
    );
  }

  /**
   * Revokes up to `batchSize` active rows a mark covers, from `after` on in the subject's index
   * order (rows a mark covers no longer move: every write and touch honours the mark), and
   * remembers their ids, in one short transaction. A batch only takes active rows, so each
   * makes progress; ids in a rotation grace need nothing (reads see the mark). With none left,
   * clears the mark's `pending` (unless a newer generation replaced it). Returns the keys it
   * revoked (the cache tombstones them) and where to go on (null: done).
   */
  revokeMarkedBatch(mark: PendingRevocation, batchSize: number, after: RevocationCursor | null, now: Date): Promise<RevocationBatch> {
    const { namespace, subject, generation } = mark;
    return this.database.transaction(async (db) => {
      const covered = and(
        subjectIs(namespace, subject),
        eq(sessions.state, 'active'),
        lt(sessions.subjectGeneration, generation),
        mark.keepIdHash === null ? undefined : ne(sessions.idHash, mark.keepIdHash),
      )!;
      // Index order, no tie-break: rows at the cursor's instant are looked at again, and are
      // revoked by then.
      const rows = await db
        .select({ idHash: sessions.idHash, lastSeenAt: sessions.lastSeenAt })
        .from(sessions, { forceIndex: SUBJECT_INDEX })
        .where(and(covered, after === null ? undefined : gte(sessions.lastSeenAt, after.lastSeenAt)))
        .orderBy(asc(sessions.lastSeenAt))
        .limit(batchSize);
      if (rows.length === 0) {
        await db
          .update(subjectRevocations)
          .set({ pending: 0 })
          .where(and(eq(subjectRevocations.namespace, namespace), eq(subjectRevocations.subject, subject), eq(subjectRevocations.generation, generation)));
        return { keys: [], next: null };
      }
      const selected = and(covered, inArray(sessions.idHash, rows.map((r) => r.idHash)))!;
      await new SessionStatements(db).rememberWhere(selected);
      // Revoked as of the mark (the sweeper's range), never later than now.
      const at = mark.revokedAt < now ? mark.revokedAt : now;
      await db
        .update(sessions)
        .set({ state: 'revoked', idleExpiresAt: sql`LEAST(${sessions.idleExpiresAt}, ${at})` })
        .where(selected);
      const last = rows[rows.length - 1]!;
      return { keys: rows.map((r) => ({ namespace, idHash: r.idHash })), next: { lastSeenAt: last.lastSeenAt } };
    });
  }

  /**
   * Sessions first; what is left of the batch goes to remembered ids past their absolute expiry,
   * then to revocation marks that cover no row any more. A row its subject's mark revoked but
   * the revocation worker did not reach yet is still `active`: its id is remembered here, in the
   * transaction that deletes it, as the worker would have (docs/design.md §8).
   */
  async sweepBatch(before: Date, batchSize: number): Promise<number> {
    const sessionsDeleted = await this.database.transaction(async (db) => {
      const rows = await db
        .select({ namespace: sessions.namespace, idHash: sessions.idHash })
        .from(sessions)
        .where(lt(sessions.idleExpiresAt, before))
        .orderBy(asc(sessions.idleExpiresAt))
        .limit(batchSize)
        .for('update');
      const byNamespace = new Map<string, Buffer[]>();
      for (const r of rows) byNamespace.set(r.namespace, [...(byNamespace.get(r.namespace) ?? []), r.idHash]);
      for (const [namespace, ids] of byNamespace) {
        const these = and(eq(sessions.namespace, namespace), inArray(sessions.idHash, ids))!;
        await new SessionStatements(db).rememberWhere(and(these, eq(sessions.state, 'active'), COVERED, gt(sessions.absoluteExpiresAt, before))!);
        await db.delete(sessions).where(these);
      }
      return rows.length;
    });
    if (sessionsDeleted >= batchSize) return sessionsDeleted;
    // MariaDB supports ORDER BY … LIMIT on single-table DELETE; drizzle's builder does not.
    const forgotten = affectedRows(
      await this.database.run((db) =>
        db.execute(
          sql`DELETE FROM ${destroyedTokens} WHERE ${lt(destroyedTokens.expiresAt, before)} ORDER BY ${destroyedTokens.expiresAt} LIMIT ${batchSize - sessionsDeleted}`,
        ),
      ),
    );
    const left = batchSize - sessionsDeleted - forgotten;
    if (left <= 0) return sessionsDeleted + forgotten;
    return sessionsDeleted + forgotten + (await this.sweepMarks(before, left));
  }

  /**
   * Deletes revocation marks that have nothing left to do (docs/design.md §5.9): the worker is
   * done (not `pending`), no row the mark covers is left in the table (all were revoked, their
   * ids remembered, and swept), and the mark is older than its copy in Redis lives. The next
   * mark of the subject still covers the sessions created under this one: revokeSubject counts
   * its generation above every live row's.
   */
  private async sweepMarks(before: Date, limit: number): Promise<number> {
    const olderThan = new Date(before.getTime() - this.options.subjectMarkRetentionMs);
    const candidates = await this.database.run((db) =>
      db
        .select({ namespace: subjectRevocations.namespace, subject: subjectRevocations.subject, generation: subjectRevocations.generation })
        .from(subjectRevocations)
        .where(and(eq(subjectRevocations.pending, 0), lt(subjectRevocations.revokedAt, olderThan)))
        .orderBy(asc(subjectRevocations.revokedAt))
        .limit(limit),
    );
    let deleted = 0;
    for (const c of candidates) {
      deleted += await this.database.transaction(async (db) => {
        const ours = and(eq(subjectRevocations.namespace, c.namespace), eq(subjectRevocations.subject, c.subject), eq(subjectRevocations.generation, c.generation))!;
        // The mark's row lock orders this against a revocation or an insert of the subject (which
        // reads the mark); rows below the generation are never written again, only deleted.
        const mark = (await db.select({ keepIdHash: subjectRevocations.keepIdHash, pending: subjectRevocations.pending }).from(subjectRevocations).where(ours).for('update'))[0];
        if (mark === undefined || mark.pending !== 0) return 0;
        const covered = await db
          .select({ idHash: sessions.idHash })
          .from(sessions, { forceIndex: SUBJECT_INDEX })
          .where(
            and(
              subjectIs(c.namespace, c.subject),
              lt(sessions.subjectGeneration, c.generation),
              mark.keepIdHash === null ? undefined : ne(sessions.idHash, mark.keepIdHash),
            ),
          )
          .limit(1);
        if (covered.length > 0) return 0;
        return affectedRows(await db.delete(subjectRevocations).where(ours));
      });
    }
    return deleted;
  }
}

/** The cache's outbox in MariaDB (the cache_outbox table); rows are written by SessionWrites.recordOutbox. */
export class MariaDbOutbox implements OutboxRepository {
  constructor(private readonly database: Database) {}

  /** Outbox rows older than `before`, oldest first. */
  async due(before: Date, limit: number): Promise<OutboxRow[]> {
    const rows = await this.database.run((db) =>
      db.select().from(cacheOutbox).where(lt(cacheOutbox.createdAt, before)).orderBy(asc(cacheOutbox.id)).limit(limit),
    );
    return rows.map((r) => ({ id: r.id, key: { namespace: r.namespace, idHash: r.idHash }, action: r.action }));
  }

  async delete(ids: number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.database.run((db) => db.delete(cacheOutbox).where(inArray(cacheOutbox.id, ids)));
  }

  /** Makes rows due for replay now, ahead of the age that normally lets their writer finish. */
  async markDue(ids: number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.database.run((db) => db.update(cacheOutbox).set({ createdAt: new Date(0) }).where(inArray(cacheOutbox.id, ids)));
  }

  /** Rows in the outbox (for metrics and tests). */
  async size(): Promise<number> {
    const rows = await this.database.run((db) => db.select({ n: sql<number>`COUNT(*)` }).from(cacheOutbox));
    return Number(rows[0]?.n ?? 0);
  }
}
