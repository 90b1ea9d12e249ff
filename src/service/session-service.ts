import {
  ClientTokensDisabledError,
  InvalidRequestError,
  PayloadTooLargeError,
  PreconditionRequiredError,
  SessionNotFoundError,
  VersionMismatchError,
} from '../domain/errors.js';
import type { NamespacePolicies, NamespacePolicy } from '../domain/policies.js';
import {
  resolveTimeouts,
  slidIdleExpiry,
  type SessionData,
  type SessionKey,
  type SessionMetadata,
  type SessionRecord,
} from '../domain/session.js';
import { generateToken, hashToken, isTokenShaped, parsePublicId } from '../domain/token.js';
import type { ExpectedVersion, PatchResult, SessionStore, SubjectCursor } from '../store/session-store.js';

export interface CreateSessionInput {
  data?: SessionData | undefined;
  subject?: string | undefined;
  idleTimeout?: number | undefined;
  absoluteTimeout?: number | undefined;
  metadata?: SessionMetadata | undefined;
}

export interface IssuedSession {
  /** The bearer secret. Returned to the caller once, never stored or logged. */
  token: string;
  session: SessionRecord;
}

export interface SessionServiceOptions {
  dataMaxBytes: number;
  /** Timeouts and the per-subject cap, per namespace. */
  policies: NamespacePolicies;
}

/** Longest rotation grace a caller may ask for. */
export const MAX_GRACE_SECONDS = 60;

export interface SubjectPage {
  sessions: SessionRecord[];
  /** Opaque; pass back as `cursor` for the next page. Null on the last page. */
  nextCursor: string | null;
}

/** MariaDB refuses JSON documents nested deeper than this (objects and arrays, scalars counting as a level). */
export const MAX_DATA_DEPTH = 31;

/** Containers nested in a JSON value: 0 for a scalar, 1 for {"a":1}. */
export function jsonDepth(value: unknown, limit = MAX_DATA_DEPTH + 1): number {
  if (value === null || typeof value !== 'object') return 0;
  if (limit === 0) return 1; // deep enough to be refused; stop walking
  let deepest = 0;
  for (const child of Object.values(value)) deepest = Math.max(deepest, jsonDepth(child, limit - 1));
  return 1 + deepest;
}

/** The JSON size of session data as it is stored. */
export function dataSize(data: SessionData): number {
  return Buffer.byteLength(JSON.stringify(data), 'utf8');
}

/**
 * The rules of sessions: token issue and lookup, lifetimes, versions, rotation. It knows
 * nothing of HTTP, SQL or Redis; the store behind it may be MariaDB alone or cached.
 */
/** A read or touch by token: `rotated` when the token was rotated away and reached the new session in its grace. */
export interface TokenRead {
  session: SessionRecord;
  rotated: boolean;
}

function byToken(key: SessionKey, session: SessionRecord): TokenRead {
  return { session, rotated: !session.idHash.equals(key.idHash) };
}

export class SessionService {
  constructor(
    private readonly store: SessionStore,
    private readonly options: SessionServiceOptions,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  async create(namespace: string, input: CreateSessionInput): Promise<IssuedSession> {
    const policy = this.options.policies.for(namespace);
    const token = generateToken();
    const session = this.newSession(namespace, hashToken(token), input, policy);
    await this.store.create(session, { maxPerSubject: policy.maxSessionsPerSubject });
    return { token, session };
  }

  /**
   * Create under a token the app chose (namespace policy `clientTokens`), only where no session
   * holds it or held it and could still be alive: `onlyIfAbsent` (If-None-Match: *) says the
   * caller means that, and is required.
   */
  async createWithToken(namespace: string, token: string, input: CreateSessionInput, onlyIfAbsent: boolean): Promise<IssuedSession> {
    const policy = this.options.policies.for(namespace);
    if (!policy.clientTokens) throw new ClientTokensDisabledError();
    if (!isTokenShaped(token)) throw new InvalidRequestError('Session-Token must be 32 to 256 characters of A-Z, a-z, 0-9, "_" and "-".');
    if (!onlyIfAbsent) throw new PreconditionRequiredError('Creating a session under a given token requires If-None-Match: *.');
    const session = this.newSession(namespace, hashToken(token), input, policy);
    await this.store.createIfAbsent(session, { maxPerSubject: policy.maxSessionsPerSubject });
    return { token, session };
  }

  private newSession(namespace: string, idHash: Buffer, input: CreateSessionInput, policy: NamespacePolicy): SessionRecord {
    const data = input.data ?? {};
    this.checkSize(data);
    const now = this.clock();
    const { idleTimeoutSeconds, absoluteTimeoutSeconds } = resolveTimeouts(input, policy);
    const absoluteExpiresAt = new Date(now.getTime() + absoluteTimeoutSeconds * 1000);
    return {
      namespace,
      idHash,
      subject: input.subject ?? null,
      data,
      version: 1,
      idleTimeoutSeconds,
      createdAt: now,
      lastSeenAt: now,
      idleExpiresAt: slidIdleExpiry(now, idleTimeoutSeconds, absoluteExpiresAt),
      absoluteExpiresAt,
      metadata: input.metadata ?? null,
    };
  }

  async get(namespace: string, token: string): Promise<TokenRead> {
    const key = this.keyForToken(namespace, token);
    return byToken(key, this.found(await this.store.get(key, this.clock())));
  }

  async getById(namespace: string, id: string): Promise<SessionRecord> {
    return this.found(await this.store.get(this.keyForId(namespace, id), this.clock()));
  }

  async touch(namespace: string, token: string): Promise<TokenRead> {
    const key = this.keyForToken(namespace, token);
    return byToken(key, this.found(await this.store.touch(key, this.clock())));
  }

  /**
   * touch() of many tokens at once (the batch route, docs/design.md §3): one answer per token,
   * in order, each a TokenRead or the error the single touch would have thrown for it
   * (session_not_found for an unknown or malformed token). All at one `now`.
   */
  async touchMany(namespace: string, tokens: string[]): Promise<Array<PromiseSettledResult<TokenRead>>> {
    const now = this.clock();
    const keys = tokens.map((token): SessionKey | null => (isTokenShaped(token) ? { namespace, idHash: hashToken(token) } : null));
    const live = keys.filter((key): key is SessionKey => key !== null);
    const store = this.store;
    const answers =
      live.length === 0
        ? []
        : store.touchMany !== undefined
          ? await store.touchMany(live, now)
          : await Promise.allSettled(live.map((key) => store.touch(key, now)));
    let next = 0;
    return keys.map((key): PromiseSettledResult<TokenRead> => {
      if (key === null) return { status: 'rejected', reason: new SessionNotFoundError() };
      const answer = answers[next++]!;
      if (answer.status === 'rejected') return answer;
      if (answer.value === null) return { status: 'rejected', reason: new SessionNotFoundError() };
      return { status: 'fulfilled', value: byToken(key, answer.value) };
    });
  }

  /** Compare-and-set: `expected` (If-Match) is required. */
  async replaceData(namespace: string, token: string, data: SessionData, expected: ExpectedVersion | undefined): Promise<SessionRecord> {
    if (expected === undefined) throw new PreconditionRequiredError();
    this.checkSize(data);
    const key = this.keyForToken(namespace, token);
    return this.written(await this.store.replaceData(key, data, expected, this.clock()));
  }

  /** A merge patch; with `expected` (If-Match) only onto those versions. */
  async patchData(namespace: string, token: string, patch: SessionData, expected: ExpectedVersion | undefined): Promise<SessionRecord> {
    this.checkDepth(patch);
    const key = this.keyForToken(namespace, token);
    return this.written(await this.store.patchData(key, patch, expected, this.options.dataMaxBytes, this.clock()));
  }

  /** Idempotent: destroying an unknown or dead session is not an error. Returns whether one was live. */
  async destroy(namespace: string, token: string): Promise<boolean> {
    if (!isTokenShaped(token)) return false;
    return this.store.destroy({ namespace, idHash: hashToken(token) }, this.clock());
  }

  async destroyById(namespace: string, id: string): Promise<boolean> {
    const idHash = parsePublicId(id);
    if (idHash === null) return false;
    return this.store.destroy({ namespace, idHash }, this.clock());
  }

  /**
   * New token, same session. With `graceSeconds` (at most 60) the old token keeps reading and
   * touching the new session until the grace ends, for requests already in flight; it can
   * never write.
   */
  async rotate(namespace: string, token: string, graceSeconds = 0): Promise<IssuedSession> {
    if (!Number.isInteger(graceSeconds) || graceSeconds < 0 || graceSeconds > MAX_GRACE_SECONDS) {
      throw new InvalidRequestError(`graceSeconds must be a whole number from 0 to ${MAX_GRACE_SECONDS}.`);
    }
    const key = this.keyForToken(namespace, token);
    const newToken = generateToken();
    const session = this.found(await this.store.rotate(key, hashToken(newToken), this.clock(), graceSeconds));
    return { token: newToken, session };
  }

  /** A subject's live sessions, newest activity first. */
  async listSubject(namespace: string, subject: string, limit: number, cursor: string | undefined): Promise<SubjectPage> {
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    // One extra row tells whether another page follows.
    const rows = await this.store.listBySubject(namespace, subject, this.clock(), limit + 1, after);
    const sessions = rows.slice(0, limit);
    const last = sessions.at(-1);
    return { sessions, nextCursor: rows.length > limit && last !== undefined ? encodeCursor(last) : null };
  }

  /** Log out everywhere: revokes all of a subject's sessions, but the one with public id `keep`. */
  async revokeSubject(namespace: string, subject: string, keep: string | undefined): Promise<number> {
    let keepHash: Buffer | undefined;
    if (keep !== undefined) {
      const parsed = parsePublicId(keep);
      if (parsed === null) throw new InvalidRequestError('keep must be a session id.');
      keepHash = parsed;
    }
    return this.store.revokeSubject(namespace, subject, keepHash, this.clock());
  }

  private keyForToken(namespace: string, token: string): SessionKey {
    // A malformed token cannot match anything: answer without touching the store.
    if (!isTokenShaped(token)) throw new SessionNotFoundError();
    return { namespace, idHash: hashToken(token) };
  }

  private keyForId(namespace: string, id: string): SessionKey {
    const idHash = parsePublicId(id);
    if (idHash === null) throw new SessionNotFoundError();
    return { namespace, idHash };
  }

  private found(session: SessionRecord | null): SessionRecord {
    if (session === null) throw new SessionNotFoundError();
    return session;
  }

  private written(result: PatchResult): SessionRecord {
    switch (result.kind) {
      case 'ok':
        return result.session;
      case 'not_found':
        throw new SessionNotFoundError();
      case 'version_mismatch':
        throw new VersionMismatchError(result.currentVersion);
      case 'too_large':
        throw new PayloadTooLargeError(this.options.dataMaxBytes);
    }
  }

  private checkSize(data: SessionData): void {
    this.checkDepth(data);
    if (dataSize(data) > this.options.dataMaxBytes) throw new PayloadTooLargeError(this.options.dataMaxBytes);
  }

  /** A merge patch never nests deeper than the deeper of its two documents, so checking both suffices. */
  private checkDepth(data: SessionData): void {
    if (jsonDepth(data) > MAX_DATA_DEPTH) {
      throw new InvalidRequestError(`Session data may nest at most ${MAX_DATA_DEPTH} levels of objects and arrays.`);
    }
  }
}

export function encodeCursor(s: Pick<SessionRecord, 'lastSeenAt' | 'idHash'>): string {
  return Buffer.from(JSON.stringify([s.lastSeenAt.getTime(), s.idHash.toString('base64url')])).toString('base64url');
}

/** The last millisecond a DATETIME(3) holds (9999-12-31 23:59:59.999 UTC). */
const DATETIME_MAX_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/** A cursor's position must be one a stored row can have: a forged one past it is a 400, not a SQL error. */
export function decodeCursor(cursor: string): SubjectCursor {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (!Array.isArray(parsed) || parsed.length !== 2) throw new Error('bad cursor');
    const [ms, id] = parsed as [unknown, unknown];
    const idHash = typeof id === 'string' ? parsePublicId(id) : null;
    if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0 || ms > DATETIME_MAX_MS || idHash === null) throw new Error('bad cursor');
    return { lastSeenAt: new Date(ms), idHash };
  } catch {
    throw new InvalidRequestError('cursor is not one this service returned.');
  }
}
