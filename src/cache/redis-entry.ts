import type { SessionKey, SessionMetadata, SessionRecord } from '../domain/session.js';
import { publicIdOf } from '../domain/token.js';

/**
 * All keys of one session share the hash tag `{<namespace>:<id>}`, so every script touching
 * them runs on one Redis Cluster slot. Namespaces cannot contain ':' or braces.
 */
export function sessionKeys(key: SessionKey): { entry: string; lease: string } {
  const tag = `{${key.namespace}:${publicIdOf(key.idHash)}}`;
  return { entry: `sd:${tag}:s`, lease: `sd:${tag}:l` };
}

/**
 * A cached session is a Redis hash. `d` holds what only changes with the version; the
 * expiry fields are separate so that touch can move them in place (a max-register):
 *   v  version          d  JSON of the versioned part      it idle timeout (s)
 *   ax absolute expiry  ie idle expiry (ms, max-register) pe idle expiry MariaDB has
 *   ls last seen (ms)   t  present on a tombstone   w  present on a write marker
 * A hash without `d` is a miss: a marker, or `ie`/`ls` kept past an invalidation (the touch
 * register, redis-scripts.ts CARRY) for the next fill to take.
 */
export interface CachedFields {
  v: string;
  d: string;
  it: string;
  ax: string;
  ie: string;
  pe: string;
  ls: string;
}

interface Versioned {
  subject: string | null;
  data: Record<string, unknown>;
  createdAt: number;
  metadata: SessionMetadata | null;
}

export function encodeEntry(s: SessionRecord): CachedFields {
  const versioned: Versioned = { subject: s.subject, data: s.data, createdAt: s.createdAt.getTime(), metadata: s.metadata };
  return {
    v: String(s.version),
    d: JSON.stringify(versioned),
    it: String(s.idleTimeoutSeconds),
    ax: String(s.absoluteExpiresAt.getTime()),
    ie: String(s.idleExpiresAt.getTime()),
    pe: String(s.idleExpiresAt.getTime()),
    ls: String(s.lastSeenAt.getTime()),
  };
}

export function decodeEntry(key: SessionKey, f: CachedFields): SessionRecord {
  const versioned = JSON.parse(f.d) as Versioned;
  return {
    namespace: key.namespace,
    idHash: key.idHash,
    subject: versioned.subject,
    data: versioned.data,
    version: Number(f.v),
    idleTimeoutSeconds: Number(f.it),
    createdAt: new Date(versioned.createdAt),
    lastSeenAt: new Date(Number(f.ls)),
    idleExpiresAt: new Date(Number(f.ie)),
    absoluteExpiresAt: new Date(Number(f.ax)),
    metadata: versioned.metadata,
  };
}

export type Lookup = { kind: 'hit'; fields: CachedFields } | { kind: 'tombstone' } | { kind: 'miss' };

/** Reads an HGETALL / HMGET-style reply. */
export function lookupOf(hash: Record<string, string>): Lookup {
  if (hash.t !== undefined) return { kind: 'tombstone' };
  if (hash.d === undefined || hash.v === undefined) return { kind: 'miss' };
  return { kind: 'hit', fields: hash as unknown as CachedFields };
}
