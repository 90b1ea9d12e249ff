/**
 * Django's signed session data, read and written as django.core.signing and
 * django.contrib.sessions.backends.base do (Django 3.1 to 5.x):
 *
 * - `SessionBase.encode()`: `signing.dumps(session, salt=key_salt, compress=True)`, i.e.
 *   `[.]base64url(zlib?(payload)):base62(time):base64url(HMAC)`, where the HMAC is Django's
 *   `salted_hmac(salt + "signer", value, secret)`: key = H(salt + "signer" + secret), SHA-256
 *   (or SHA-1 under Django 3.1/3.2's `DEFAULT_HASHING_ALGORITHM = 'sha1'`). A leading "." means
 *   the payload is zlib-compressed. Django 4.1+ also accepts signatures made with any of
 *   `SECRET_KEY_FALLBACKS`.
 * - The format before Django 3.1 (`_legacy_decode`, still read by Django 3.1 and 3.2):
 *   `base64(hexHMAC-SHA1 + ":" + payload)` with key salt "django.contrib.sessions" + class name.
 *
 * The salt is `"django.contrib.sessions." + the store class's __qualname__`: "SessionStore" for
 * Django's db and cached_db engines (and for sessiond_django's engine).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { deflateSync, inflateSync } from 'node:zlib';

export const SESSION_KEY_SALT = 'django.contrib.sessions.SessionStore';
/** A decompressed payload larger than this is refused (Django signs before it compresses, so only a key holder could make one). */
const MAX_PAYLOAD_BYTES = 64 * 1024 * 1024;

export class BadSessionData extends Error {}

function saltedHmac(algorithm: 'sha1' | 'sha256', keySalt: string, value: string | Buffer, secret: string): Buffer {
  const key = createHash(algorithm).update(keySalt, 'utf8').update(secret, 'utf8').digest();
  return createHmac(algorithm, key).update(value).digest();
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export interface DecodedSession {
  /** What Django's serializer made: JSON text with JSONSerializer (as bytes, latin-1 as Django reads it). */
  payload: Buffer;
  format: 'signed' | 'legacy';
  /** Index of the key that verified: 0 is SECRET_KEY, then the fallbacks. */
  keyIndex: number;
}

/**
 * Verifies and unpacks one `session_data` value with the first of `secrets` that signed it.
 * Throws BadSessionData with a reason (never the data or a key) when none did.
 */
export function decodeSessionData(sessionData: string, secrets: readonly string[], salt = SESSION_KEY_SALT): DecodedSession {
  const signed = sessionData.lastIndexOf(':');
  if (signed > 0) {
    const value = sessionData.slice(0, signed);
    const signature = sessionData.slice(signed + 1);
    for (const [keyIndex, secret] of secrets.entries()) {
      for (const algorithm of ['sha256', 'sha1'] as const) {
        if (!sameText(signature, saltedHmac(algorithm, `${salt}signer`, value, secret).toString('base64url'))) continue;
        const base64d = value.slice(0, value.lastIndexOf(':'));
        const compressed = base64d.startsWith('.');
        const data = Buffer.from(compressed ? base64d.slice(1) : base64d, 'base64url');
        try {
          return { payload: compressed ? inflateSync(data, { maxOutputLength: MAX_PAYLOAD_BYTES }) : data, format: 'signed', keyIndex };
        } catch {
          throw new BadSessionData('the signed data does not decompress');
        }
      }
    }
  }
  const legacy = Buffer.from(sessionData, 'base64');
  const colon = legacy.indexOf(':');
  if (colon > 0) {
    const hash = legacy.subarray(0, colon).toString('latin1');
    const payload = legacy.subarray(colon + 1);
    const legacySalt = salt.replace(/^django\.contrib\.sessions\./, 'django.contrib.sessions');
    for (const [keyIndex, secret] of secrets.entries()) {
      if (sameText(hash, saltedHmac('sha1', legacySalt, payload, secret).toString('hex'))) return { payload, format: 'legacy', keyIndex };
    }
  }
  throw new BadSessionData('the signature matches neither SECRET_KEY nor any of SECRET_KEY_FALLBACKS');
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function base62(n: number): string {
  let out = '';
  do {
    out = BASE62[n % 62]! + out;
    n = Math.floor(n / 62);
  } while (n > 0);
  return out;
}

/**
 * `signing.dumps(…, salt, compress=True)` of a serialized payload with `secret`, SHA-256: what
 * `SessionBase.encode()` of Django 3.1+ returns for the same session and key.
 */
export function encodeSessionData(payload: Buffer, secret: string, salt = SESSION_KEY_SALT, now = Date.now()): string {
  const compressed = deflateSync(payload);
  const base64d = compressed.length < payload.length - 1 ? `.${compressed.toString('base64url')}` : payload.toString('base64url');
  const value = `${base64d}:${base62(Math.floor(now / 1000))}`;
  return `${value}:${saltedHmac('sha256', `${salt}signer`, value, secret).toString('base64url')}`;
}
