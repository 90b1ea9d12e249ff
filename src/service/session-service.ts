import {
  InvalidRequestError,
  PayloadTooLargeError,
  PreconditionRequiredError,
  SessionNotFoundError,
  VersionMismatchError,
} from '../domain/errors.js';
import {
  resolveTimeouts,
  slidIdleExpiry,
  type SessionData,
  type SessionKey,
  type SessionMetadata,
  type SessionRecord,
  type TimeoutLimits,
} from '../domain/session.js';
import { generateToken, hashToken, isTokenShaped, parsePublicId } from '../domain/token.js';
import type { ExpectedVersion, PatchResult, SessionStore } from '../store/session-store.js';

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

export interface SessionServiceOptions extends TimeoutLimits {
  dataMaxBytes: number;
}

/** The JSON size of session data as it is stored. */
export function dataSize(data: SessionData): number {
  return Buffer.byteLength(JSON.stringify(data), 'utf8');
}

/**
 * The rules of sessions: token issue and lookup, lifetimes, versions, rotation. It knows
 * nothing of HTTP, SQL or Redis; the store behind it may be MariaDB alone or cached.
 */
export class SessionService {
  constructor(
    private readonly store: SessionStore,
    private readonly options: SessionServiceOptions,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  async create(namespace: string, input: CreateSessionInput): Promise<IssuedSession> {
    const data = input.data ?? {};
    this.checkSize(data);
    const now = this.clock();
    const { idleTimeoutSeconds, absoluteTimeoutSeconds } = resolveTimeouts(input, this.options);
    const absoluteExpiresAt = new Date(now.getTime() + absoluteTimeoutSeconds * 1000);
    const token = generateToken();
    const session: SessionRecord = {
      namespace,
      idHash: hashToken(token),
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
    await this.store.create(session);
    return { token, session };
  }

  async get(namespace: string, token: string): Promise<SessionRecord> {
    return this.found(await this.store.get(this.keyForToken(namespace, token), this.clock()));
  }

  async getById(namespace: string, id: string): Promise<SessionRecord> {
    return this.found(await this.store.get(this.keyForId(namespace, id), this.clock()));
  }

  async touch(namespace: string, token: string): Promise<SessionRecord> {
    return this.found(await this.store.touch(this.keyForToken(namespace, token), this.clock()));
  }

  async replaceData(namespace: string, token: string, data: SessionData, ifMatch: string | undefined): Promise<SessionRecord> {
    if (ifMatch === undefined) throw new PreconditionRequiredError();
    const expected = parseIfMatch(ifMatch);
    this.checkSize(data);
    const key = this.keyForToken(namespace, token);
    return this.written(await this.store.replaceData(key, data, expected, this.clock()));
  }

  async patchData(namespace: string, token: string, patch: SessionData, ifMatch: string | undefined): Promise<SessionRecord> {
    const expected = ifMatch === undefined ? undefined : parseIfMatch(ifMatch);
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

  async rotate(namespace: string, token: string): Promise<IssuedSession> {
    const key = this.keyForToken(namespace, token);
    const newToken = generateToken();
    const session = this.found(await this.store.rotate(key, hashToken(newToken), this.clock()));
    return { token: newToken, session };
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
    if (dataSize(data) > this.options.dataMaxBytes) throw new PayloadTooLargeError(this.options.dataMaxBytes);
  }
}

const ENTITY_TAG = /^\s*(W\/)?"([^"]*)"\s*$/;

/**
 * Parses If-Match: `*`, or a list of strong entity tags `"<version>"`. Weak tags never match
 * (RFC 9110 uses strong comparison for If-Match), so a list of only weak tags matches nothing.
 */
export function parseIfMatch(header: string): ExpectedVersion {
  if (header.trim() === '*') return { any: true };
  const versions: number[] = [];
  for (const part of header.split(',')) {
    const m = ENTITY_TAG.exec(part);
    if (m === null) throw new InvalidRequestError('If-Match must be "*" or a list of entity tags such as "3".');
    if (m[1] !== undefined) continue;
    const tag = m[2] ?? '';
    if (/^[1-9]\d{0,15}$/.test(tag)) versions.push(Number(tag));
  }
  return { any: false, versions };
}

/** The strong ETag of a session version. */
export function etagOf(version: number): string {
  return `"${version}"`;
}
