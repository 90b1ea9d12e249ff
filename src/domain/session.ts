/** Session metadata an app server may attach for "your devices" views. */
export interface SessionMetadata {
  ip?: string;
  userAgent?: string;
  label?: string;
}

export type SessionData = Record<string, unknown>;

/** A session as the store holds it. Times are absolute instants. */
export interface SessionRecord {
  namespace: string;
  idHash: Buffer;
  subject: string | null;
  data: SessionData;
  version: number;
  idleTimeoutSeconds: number;
  createdAt: Date;
  lastSeenAt: Date;
  idleExpiresAt: Date;
  absoluteExpiresAt: Date;
  metadata: SessionMetadata | null;
  /**
   * The subject's revocation generation the session belongs to (set by the store): a "log out
   * everywhere" of a higher generation revokes it. Absent on a record not read from a store.
   */
  subjectGeneration?: number;
}

/** Addresses one session: the tenant and the hash of its token. */
export interface SessionKey {
  namespace: string;
  idHash: Buffer;
}

/**
 * A subject's "log out everywhere" mark: every session of the subject written below
 * `generation`, but `keepIdHash`, is revoked. Named by the subject's hash outside MariaDB.
 */
export interface SubjectMark {
  namespace: string;
  subjectHash: Buffer;
  generation: number;
  keepIdHash: Buffer | null;
}

export interface TimeoutLimits {
  idleTimeoutDefault: number;
  idleTimeoutMax: number;
  absoluteTimeoutDefault: number;
  absoluteTimeoutMax: number;
}

/** Effective timeouts for a new session: the request's values, or the defaults, capped by the maximums. */
export function resolveTimeouts(
  requested: { idleTimeout?: number | undefined; absoluteTimeout?: number | undefined },
  limits: TimeoutLimits,
): { idleTimeoutSeconds: number; absoluteTimeoutSeconds: number } {
  const absolute = Math.min(requested.absoluteTimeout ?? limits.absoluteTimeoutDefault, limits.absoluteTimeoutMax);
  const idle = Math.min(requested.idleTimeout ?? limits.idleTimeoutDefault, limits.idleTimeoutMax);
  return { idleTimeoutSeconds: idle, absoluteTimeoutSeconds: absolute };
}

/** The idle expiry a session gets when it is created or touched at `now`: never past the absolute expiry. */
export function slidIdleExpiry(now: Date, idleTimeoutSeconds: number, absoluteExpiresAt: Date): Date {
  return new Date(Math.min(now.getTime() + idleTimeoutSeconds * 1000, absoluteExpiresAt.getTime()));
}

/** A session is alive while both expiries lie in the future. Checked on every read. */
export function isLive(session: Pick<SessionRecord, 'idleExpiresAt' | 'absoluteExpiresAt'>, now: Date): boolean {
  const t = now.getTime();
  return t < session.idleExpiresAt.getTime() && t < session.absoluteExpiresAt.getTime();
}

/**
 * The result of touching a session at `now`: expiry slides forward but never moves backwards
 * (a max-register), and never passes the absolute expiry.
 */
export function touched<S extends TouchState>(session: S, now: Date): S {
  const candidate = slidIdleExpiry(now, session.idleTimeoutSeconds, session.absoluteExpiresAt);
  return {
    ...session,
    idleExpiresAt: candidate > session.idleExpiresAt ? candidate : session.idleExpiresAt,
    lastSeenAt: now > session.lastSeenAt ? now : session.lastSeenAt,
  };
}

/**
 * How far the stored idle expiry may lag behind the true one before a touch must write it.
 * The configured threshold, but at most a tenth of the idle timeout, so short-lived sessions
 * still slide.
 */
export function persistThresholdMs(idleTimeoutSeconds: number, thresholdSeconds: number): number {
  return Math.min(thresholdSeconds * 1000, idleTimeoutSeconds * 100);
}

/** What a touch reads and moves: the expiry register of a session. */
export type TouchState = Pick<SessionRecord, 'idleTimeoutSeconds' | 'lastSeenAt' | 'idleExpiresAt' | 'absoluteExpiresAt'>;

/** What a touch at some instant does: null when the session is no longer live. */
export interface TouchDecision {
  idleExpiresAt: Date;
  lastSeenAt: Date;
  /** The new idle expiry leads the one MariaDB holds by more than the threshold: write it. */
  persist: boolean;
}

/**
 * The touch rule, in one place: at `now` a live session's idle expiry slides to
 * min(now + idle timeout, absolute expiry) unless it is already later, last-seen to `now` unless
 * later, and the store writes the new idle expiry through once it leads `persisted` (the one
 * MariaDB holds) by more than the threshold; a session past either expiry is not touched. Both
 * stores decide by it; its twins where the data lives are the Lua TOUCH script
 * (cache/redis-scripts.ts) and persistTouch's GREATEST/LEAST (store/mariadb-session-store.ts),
 * held to it by test/store/touch-rule.test.ts. Applying it twice at one `now` changes nothing.
 */
export function decideTouch(session: TouchState, persisted: Date, now: Date, thresholdSeconds: number): TouchDecision | null {
  if (!isLive(session, now)) return null;
  const next = touched(session, now);
  const threshold = persistThresholdMs(session.idleTimeoutSeconds, thresholdSeconds);
  return {
    idleExpiresAt: next.idleExpiresAt,
    lastSeenAt: next.lastSeenAt,
    persist: next.idleExpiresAt.getTime() - persisted.getTime() > threshold,
  };
}

/** The expiry clients see: the earlier of the two. */
export function expiresAt(session: Pick<SessionRecord, 'idleExpiresAt' | 'absoluteExpiresAt'>): Date {
  return session.idleExpiresAt < session.absoluteExpiresAt ? session.idleExpiresAt : session.absoluteExpiresAt;
}
