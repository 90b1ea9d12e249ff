import { InvalidRequestError } from '../domain/errors.js';
import type { ExpectedVersion } from '../store/session-store.js';

/**
 * Conditional requests (RFC 9110 §13): the session's `version` travels as a strong entity tag
 * `"<version>"`. Parsing lives here, at the HTTP edge; the service gets what the header means
 * and decides whether a call requires it (docs/design.md §3).
 */

/** The strong ETag of a session version. */
export function etagOf(version: number): string {
  return `"${version}"`;
}

const ENTITY_TAG = /^\s*(W\/)?"([^"]*)"\s*$/;
const VERSION = /^[1-9]\d{0,15}$/;

/**
 * If-Match: absent (undefined), `*` (any current version), or a list of strong entity tags
 * `"<version>"`. Weak tags never match (If-Match compares strongly), nor do tags that are no
 * version, so a list of only those matches nothing. Anything else is a 400.
 */
export function parseIfMatch(header: string | undefined): ExpectedVersion | undefined {
  if (header === undefined) return undefined;
  if (header.trim() === '*') return { any: true };
  const versions: number[] = [];
  for (const part of header.split(',')) {
    const m = ENTITY_TAG.exec(part);
    if (m === null) throw new InvalidRequestError('If-Match must be "*" or a list of entity tags such as "3".');
    if (m[1] !== undefined) continue;
    const tag = m[2] ?? '';
    if (VERSION.test(tag)) versions.push(Number(tag));
  }
  return { any: false, versions };
}

/**
 * If-None-Match on create under a chosen token: true for `*` (create only where no session holds
 * the token), false when absent. Any other value is a 400: the call never replaces a session, so
 * no entity tag could be meant.
 */
export function parseIfNoneMatch(header: string | undefined): boolean {
  if (header === undefined) return false;
  if (header.trim() === '*') return true;
  throw new InvalidRequestError('If-None-Match must be *: a session is created only under a token no session holds.');
}
