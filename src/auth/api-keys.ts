import { randomBytes, timingSafeEqual } from 'node:crypto';
import { sha256 } from '../domain/token.js';

/** One entry of the API keys file: who the caller is and which namespace it reaches. */
export interface ApiKeyEntry {
  client: string;
  namespace: string;
  /** Lower-case hex SHA-256 of the key. The key itself is never stored. */
  sha256: string;
}

export interface MintedKey {
  /** The secret, shown once. */
  key: string;
  entry: ApiKeyEntry;
}

export function sha256Hex(value: string): string {
  return sha256(value).toString('hex');
}

/** Mints a new API key: 32 CSPRNG bytes, base64url, prefixed so that leaked keys are recognisable. */
export function mintApiKey(client: string, namespace: string): MintedKey {
  const key = `sk_${randomBytes(32).toString('base64url')}`;
  return { key, entry: { client, namespace, sha256: sha256Hex(key) } };
}

export { timingSafeEqual };
