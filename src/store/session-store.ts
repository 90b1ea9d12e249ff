import type { SessionData, SessionKey, SessionRecord } from '../domain/session.js';

/** Which versions a conditional write accepts: a list from If-Match, or any version (`*`). */
export type ExpectedVersion = { any: true } | { any: false; versions: number[] };

export type WriteResult =
  | { kind: 'ok'; session: SessionRecord }
  | { kind: 'not_found' }
  | { kind: 'version_mismatch'; currentVersion: number };

export type PatchResult = WriteResult | { kind: 'too_large' };

/**
 * The storage contract every backend (MariaDB, and the Redis cache in front of it) fulfils.
 * Methods take `now` from the caller so that expiry is decided by one clock per request and
 * tests can move time. A session that is revoked or expired at `now` is "not found"
 * everywhere, and no method ever resurrects one.
 */
export interface SessionStore {
  /** Commits a new session. Resolves only once it is durable. */
  create(session: SessionRecord): Promise<void>;
  /** The live session, or null. */
  get(key: SessionKey, now: Date): Promise<SessionRecord | null>;
  /**
   * Slides the idle expiry (never backwards, never past the absolute expiry) and returns the
   * session as it now stands, or null when it is not live.
   */
  touch(key: SessionKey, now: Date): Promise<SessionRecord | null>;
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
  /** Revokes the session. True when a live session was revoked by this call. */
  destroy(key: SessionKey, now: Date): Promise<boolean>;
  /**
   * Moves a live session to a new id in one step: the new row carries the same data, subject,
   * version and absolute expiry; the old one is revoked. Null when the old one is not live.
   */
  rotate(key: SessionKey, newIdHash: Buffer, now: Date): Promise<SessionRecord | null>;
  /** Deletes up to `batchSize` rows that expired or were revoked before `before`; returns the count. */
  sweepBatch(before: Date, batchSize: number): Promise<number>;
}
