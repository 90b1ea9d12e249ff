import type { ApiKeyEntry } from '../auth/api-keys.js';
import type { PolicyOverrides } from '../domain/policies.js';
import { ConfigError } from './config-error.js';
import { parsePolicyOverrides } from './policies.js';

export interface KeysFile {
  keys: ApiKeyEntry[];
  /** Per-namespace policies; namespaces not named here use the defaults from the environment. */
  namespaces: Record<string, PolicyOverrides>;
}

const NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Parses the API keys file. Either a JSON array of {client, namespace, sha256}, or an object
 * {"keys": [...], "namespaces": {"<namespace>": {policy}}}. Several entries may share a client
 * (key rotation). At least one key is required: the service never runs open.
 */
export function parseApiKeysFile(text: string, variable: string): KeysFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ConfigError(variable, 'the keys file is not valid JSON');
  }
  if (Array.isArray(parsed)) return { keys: parseKeys(parsed, variable), namespaces: {} };
  if (typeof parsed !== 'object' || parsed === null) {
    throw new ConfigError(variable, 'the keys file must hold a JSON array of keys or an object {"keys": [...], "namespaces": {...}}');
  }
  const { keys, namespaces = {}, ...rest } = parsed as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw new ConfigError(variable, `the keys file has an unknown field "${Object.keys(rest)[0]}"`);
  if (!Array.isArray(keys)) throw new ConfigError(variable, '"keys" must be a JSON array');
  if (typeof namespaces !== 'object' || namespaces === null || Array.isArray(namespaces)) {
    throw new ConfigError(variable, '"namespaces" must be an object keyed by namespace');
  }
  const policies: Record<string, PolicyOverrides> = {};
  for (const [namespace, policy] of Object.entries(namespaces as Record<string, unknown>)) {
    if (!NAMESPACE.test(namespace)) throw new ConfigError(variable, `namespaces: "${namespace}" is not a valid namespace`);
    policies[namespace] = parsePolicyOverrides(policy, `namespaces.${namespace}`);
  }
  return { keys: parseKeys(keys, variable), namespaces: policies };
}

function parseKeys(parsed: unknown[], variable: string): ApiKeyEntry[] {
  if (parsed.length === 0) {
    throw new ConfigError(variable, 'the keys file holds no key; mint one with `npm run mint-key -- <client> <namespace>`');
  }
  const seen = new Set<string>();
  return parsed.map((item: unknown, i) => {
    const where = `entry ${i}`;
    if (typeof item !== 'object' || item === null) throw new ConfigError(variable, `${where} is not an object`);
    const { client, namespace, sha256 } = item as Record<string, unknown>;
    if (typeof client !== 'string' || client.length === 0 || client.length > 128) {
      throw new ConfigError(variable, `${where}: "client" must be a non-empty string of at most 128 characters`);
    }
    if (typeof namespace !== 'string' || !NAMESPACE.test(namespace)) {
      throw new ConfigError(variable, `${where}: "namespace" must match ${NAMESPACE.source}`);
    }
    if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256.toLowerCase())) {
      throw new ConfigError(variable, `${where}: "sha256" must be 64 hex characters (the SHA-256 of the key)`);
    }
    const hash = sha256.toLowerCase();
    if (seen.has(hash)) throw new ConfigError(variable, `${where}: the same key hash appears twice`);
    seen.add(hash);
    return { client, namespace, sha256: hash };
  });
}
