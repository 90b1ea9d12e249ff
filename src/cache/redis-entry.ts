import type { SessionKey, SessionMetadata, SessionRecord } from '../domain/session.js';
import { publicIdOf, subjectHashOf } from '../domain/token.js';

/**
 * All keys of one session share the hash tag `{<namespace>:<id>}`, so every script touching
 * them runs on one Redis Cluster slot. Namespaces cannot contain ':' or braces.
 */
export function sessionKeys(key: SessionKey): { entry: string; lease: string } {
  const tag = `{${key.namespace}:${publicIdOf(key.idHash)}}`;
  return { entry: `sd:${tag}:s`, lease: `sd:${tag}:l` };
}

/** A subject's revocation mark in Redis (redis-scripts.ts COVERED), named by the subject's hash. */
export function subjectMarkKey(namespace: string, subjectHash: Buffer): string {
  return `sd:{${namespace}:${publicIdOf(subjectHash)}}:m`;
}

/** A mark's value: its generation, a space, and the entry key of the session it keeps ('' for none). */
export function markValue(generation: number, keepEntry: string): string {
  return `${generation} ${keepEntry}`;
}

/**
 * True when the mark (`markValue`, null for none) revokes the entry `entry` of generation `g`:
 * COVERED in redis-scripts.ts, for Redis Cluster, where a script cannot read the mark's key.
 */
export function coveredBy(mark: string | null, entry: string, g: string): boolean {
  if (mark === null) return false;
  const space = mark.indexOf(' ');
  return Number(mark.slice(0, space)) > Number(g) && mark.slice(space + 1) !== entry;
}

/**
 * A cached session is a Redis hash. `d` holds what only changes with the version; the
 * expiry fields are separate so that touch can move them in place (a max-register):
 *   v  version          d  JSON of the versioned part      it idle timeout (s)
 *   ax absolute expiry  ie idle expiry (ms, max-register) pe idle expiry MariaDB has
 *   ls last seen (ms)   t  present on a tombstone   w  present on a write marker
 *   g  the subject's revocation generation of the row  mk the subject's mark key ('' without a subject)
 *   at when it was installed (Redis time, ms): past the cache TTL the entry is a miss, though the
 *      hash may live on for its touch register (redis-scripts.ts AGED, OUTLIVE)
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
  g: string;
  mk: string;
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
    g: String(s.subjectGeneration ?? 0),
    mk: s.subject === null ? '' : subjectMarkKey(s.namespace, subjectHashOf(s.subject)),
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
    subjectGeneration: Number(f.g ?? 0),
  };
}

/** What a LOOKUP found (redis-scripts.ts): an entry's fields, a tombstone, or nothing to answer from. */
export type Lookup = { kind: 'hit'; fields: CachedFields } | { kind: 'tombstone' } | { kind: 'miss' };
