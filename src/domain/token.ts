import { hash, randomBytes } from 'node:crypto';

/** 32 CSPRNG bytes as base64url: 43 characters, no padding. */
export const TOKEN_BYTES = 32;
/** A public id: base64url of 32 bytes. */
const PUBLIC_ID_SHAPE = /^[A-Za-z0-9_-]{43}$/;
/**
 * What a token may look like: ours (43 characters) or one an app chose where its namespace
 * allows that (express-session's ids are 32 characters, Django's session keys 32).
 */
export const TOKEN_PATTERN = '^[A-Za-z0-9_-]{32,256}$';
const TOKEN_SHAPE = new RegExp(TOKEN_PATTERN);

export function generateToken(): string {
  return randomBytes(TOKEN_BYTES).toString('base64url');
}

/** True when the string could be a token (ours or an app's); anything else is answered 404 without a query. */
export function isTokenShaped(value: string): boolean {
  return TOKEN_SHAPE.test(value);
}

/**
 * SHA-256 of UTF-8 text. The one-shot `crypto.hash` skips the Hash object `createHash` builds
 * (~0.5 µs of a hot-path request, which hashes its API key and its token).
 */
export function sha256(text: string): Buffer {
  return hash('sha256', text, 'buffer');
}

/** SHA-256 of the token: the only form in which a token is ever stored. */
export const hashToken = sha256;

/** The public id of a session: base64url of SHA-256(token). Safe to log and show. */
export function publicIdOf(idHash: Buffer): string {
  return idHash.toString('base64url');
}

/** Parses a public id back into the stored hash; null when it cannot be one. */
export function parsePublicId(id: string): Buffer | null {
  if (!PUBLIC_ID_SHAPE.test(id)) return null;
  const bytes = Buffer.from(id, 'base64url');
  // Reject non-canonical encodings (stray low bits in the last character) so one session has one id.
  if (bytes.length !== TOKEN_BYTES || bytes.toString('base64url') !== id) return null;
  return bytes;
}

/** How a subject's revocation mark is named outside MariaDB (the outbox, Redis): SHA-256 of the subject. */
export const subjectHashOf = sha256;
