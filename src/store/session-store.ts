import type { SessionData, SessionKey, SessionRecord, SubjectMark } from '../domain/session.js';

export type { SubjectMark } from '../domain/session.js';
import type { OutboxAction } from './outbox.js';

/** Which versions a conditional write accepts: a list from If-Match, or any version (`*`). */
export type ExpectedVersion = { any: true } | { any: false; versions: number[] };

export type WriteResult =
  | { kind: 'ok'; session: SessionRecord }
  | { kind: 'not_found' }
  | { kind: 'version_mismatch'; currentVersion: number };

export type PatchResult = WriteResult | { kind: 'too_large' };

/** A data write as the authoritative store sends it in one batch: PUT's replacement or PATCH's merge patch. */
export type DataChange =
  | { kind: 'replace'; data: SessionData; expected: ExpectedVersion }
  | { kind: 'patch'; patch: SessionData; expected: ExpectedVersion | undefined; maxBytes: number };

export interface DataWriteOptions {
  /** The outbox row to write with the change (the cache tier's invalidation). */
  outbox?: OutboxAction | undefined;
  /** Runs right before COMMIT, only when the write took (the cache tier's write marker). */
  beforeCommit?: (() => Promise<void>) | undefined;
}

export interface DataWritten {
  result: PatchResult;
  /** The outbox row that committed with the change; null without one or when nothing changed. */
  outboxId: number | null;
}

/** Keyset position in a subject's session list (newest activity first). */
export interface SubjectCursor {
  lastSeenAt: Date;
  idHash: Buffer;
}

/**
 * The storage contract every backend (MariaDB, and the Redis cache in front of it) fulfils.
 * Methods take `now` from the caller so that expiry is decided by one clock per request and
 * tests can move time. A session that is revoked or expired at `now` is "not found"
 * everywhere, and no method ever resurrects one.
 */
export interface SessionStore {
  /**
   * Commits a new session. Resolves only once it is durable. With `maxPerSubject`, the
   * subject's least recently used live sessions are revoked in the same transaction so that it
   * holds at most that many; returns how many were.
   */
  create(session: SessionRecord, options?: { maxPerSubject?: number }): Promise<{ evicted: number }>;
  /**
   * Commits a new session under an id the caller chose (its token came from the app), like
   * create, unless the id is taken: a row of it is still there (a session live, expired or
   * revoked, not yet past its absolute expiry), or it is remembered as destroyed, revoked or
   * rotated away until that session's absolute expiry. Then it rejects with
   * SessionExistsError and changes nothing.
   */
  createIfAbsent(session: SessionRecord, options?: { maxPerSubject?: number }): Promise<{ evicted: number }>;
  /**
   * The live session, or null. During a rotation grace the old id answers with the session it
   * was rotated to (so the record's idHash may differ from the key's).
   */
  get(key: SessionKey, now: Date): Promise<SessionRecord | null>;
  /**
   * Slides the idle expiry (never backwards, never past the absolute expiry) and returns the
   * session as it now stands, or null when it is not live. Follows a rotation grace like get.
   */
  touch(key: SessionKey, now: Date): Promise<SessionRecord | null>;
  /**
   * touch() of many keys at once, each answered on its own (a failure of one is its rejection
   * alone), in the order of `keys`. Optional: a store without it is touched key by key.
   */
  touchMany?(keys: SessionKey[], now: Date): Promise<Array<PromiseSettledResult<SessionRecord | null>>>;
  /** Replaces data when the version matches; bumps the version. */
  replaceData(key: SessionKey, data: SessionData, expected: ExpectedVersion, now: Date): Promise<WriteResult>;
  /** Applies an RFC 7396 merge patch atomically; bumps the version. */
  patchData(
    key: SessionKey,
    patch: SessionData,
    expected: ExpectedVersion | undefined,
    maxBytes: number,
    now: Date,
  ): Promise<PatchResult>;
  /** Revokes the session (or ends the rotation grace of an old id). True when something changed. */
  destroy(key: SessionKey, now: Date): Promise<boolean>;
  /**
   * Moves a live session to a new id in one step: the new row carries the same data, subject,
   * version and absolute expiry; the old one is revoked — at once, or after `graceSeconds`
   * during which the old id only reads and touches the new session. Null when the old one is
   * not live.
   */
  rotate(key: SessionKey, newIdHash: Buffer, now: Date, graceSeconds?: number): Promise<SessionRecord | null>;
  /** A subject's live sessions, newest activity first, after the cursor. */
  listBySubject(namespace: string, subject: string, now: Date, limit: number, after?: SubjectCursor): Promise<SessionRecord[]>;
  /**
   * Revokes all of a subject's sessions but `keep`, at once (one mark, whatever their number:
   * the rows follow in the background); returns how many live ones were revoked.
   */
  revokeSubject(namespace: string, subject: string, keep: Buffer | undefined, now: Date): Promise<number>;
  /** Deletes up to `batchSize` rows that expired or were revoked before `before`; returns the count. */
  sweepBatch(before: Date, batchSize: number): Promise<number>;
}

/**
 * The writes of one transaction of the authoritative store. The cache tier composes them with
 * its outbox rows, so that a change and what Redis is owed for it commit together.
 */
export interface SessionWrites {
  /** Inserts a session; with `maxPerSubject`, revokes the subject's oldest beyond it. Returns the revoked keys. */
  insert(session: SessionRecord, maxPerSubject?: number): Promise<SessionKey[]>;
  /** Like insert, unless the id is taken (SessionExistsError). */
  insertIfAbsent(session: SessionRecord, maxPerSubject?: number): Promise<SessionKey[]>;
  replaceData(key: SessionKey, data: SessionData, expected: ExpectedVersion, now: Date): Promise<WriteResult>;
  patchData(key: SessionKey, patch: SessionData, expected: ExpectedVersion | undefined, maxBytes: number, now: Date): Promise<PatchResult>;
  destroy(key: SessionKey, now: Date): Promise<boolean>;
  rotate(key: SessionKey, newIdHash: Buffer, now: Date, graceSeconds?: number): Promise<SessionRecord | null>;
  /** Raises the subject's revocation mark (the rows follow later, revokeMarkedBatch); counts the live sessions it revoked. */
  revokeSubject(namespace: string, subject: string, keep: Buffer | undefined, now: Date): Promise<{ revoked: number; mark: SubjectMark }>;
  /** Writes an outbox row in this transaction; returns its id. */
  recordOutbox(key: SessionKey, action: OutboxAction): Promise<number>;
  /** Slides the stored idle expiry and last-seen forward (never back); false when the row is not live. */
  persistTouch(key: SessionKey, idleExpiresAt: Date, lastSeenAt: Date, now: Date): Promise<boolean>;
}

/** A mark whose rows the revocation worker has still to revoke. */
export interface PendingRevocation {
  namespace: string;
  subject: string;
  generation: number;
  keepIdHash: Buffer | null;
  revokedAt: Date;
}

/** Where a mark's row work stands: at this last activity in the subject's index order. */
export interface RevocationCursor {
  lastSeenAt: Date;
}

export interface RevocationBatch {
  /** The rows this batch went through. */
  keys: SessionKey[];
  /** Null when the mark has no row left to revoke. */
  next: RevocationCursor | null;
}

/** The row work behind revocation marks, in batches (the revocation worker drives it). */
export interface MarkedRevocations {
  pendingRevocations(limit: number): Promise<PendingRevocation[]>;
  revokeMarkedBatch(mark: PendingRevocation, batchSize: number, after: RevocationCursor | null, now: Date): Promise<RevocationBatch>;
}

/** What the cache tier runs at the edge of a transaction of the authoritative store. */
export interface TransactionHooks<T> {
  /**
   * Runs once `work` succeeded, with its result, right before COMMIT, while nothing of the
   * transaction is visible to other readers yet (again on each retry of the transaction). The
   * cache tier plants its write markers here. A rejection rolls the transaction back.
   */
  beforeCommit?: ((result: T) => Promise<void>) | undefined;
}

/** The authoritative store (MariaDB) as the cache tier in front of it uses it. */
export interface TransactionalSessionStore extends SessionStore, MarkedRevocations {
  /** Runs `work` in one transaction, then `hooks.beforeCommit`: all of it commits, or none. */
  transaction<T>(work: (tx: SessionWrites) => Promise<T>, hooks?: TransactionHooks<T>): Promise<T>;
  /**
   * replaceData / patchData with the outbox row the cache tier owes the change, committed
   * together, in one round trip for the statements; rolled back when the write did not take.
   */
  writeData(key: SessionKey, change: DataChange, now: Date, options?: DataWriteOptions): Promise<DataWritten>;
  /** Moves the stored idle expiry and last-seen forward (a max-register); true when the session was live. */
  persistTouch(key: SessionKey, idleExpiresAt: Date, lastSeenAt: Date, now: Date): Promise<boolean>;
  /** A subject's revocation mark by the subject's hash; null when it has none. */
  subjectMark(namespace: string, subjectHash: Buffer): Promise<SubjectMark | null>;
}
