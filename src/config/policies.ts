import type { NamespacePolicies, NamespacePolicy, PolicyOverrides } from '../domain/policies.js';
import { ConfigError } from './config-error.js';

type NumericPolicyField = Exclude<keyof NamespacePolicy, 'rateLimit' | 'clientTokens'>;

/** Every namespace's resolved policy is consistent (a default within its maximum). */
export function checkPolicies(policies: NamespacePolicies): void {
  for (const [namespace, policy] of policies.overridden()) checkPolicy(policy, `namespaces.${namespace}`);
}

function checkPolicy(p: NamespacePolicy, where: string): void {
  if (p.idleTimeoutDefault > p.idleTimeoutMax) {
    throw new ConfigError('API_KEYS_FILE', `${where}: idleTimeoutSeconds must not exceed idleTimeoutMaxSeconds (${p.idleTimeoutMax})`);
  }
  if (p.absoluteTimeoutDefault > p.absoluteTimeoutMax) {
    throw new ConfigError('API_KEYS_FILE', `${where}: absoluteTimeoutSeconds must not exceed absoluteTimeoutMaxSeconds (${p.absoluteTimeoutMax})`);
  }
}

const FIELDS: Record<string, { key: NumericPolicyField; min: number; max: number }> = {
  idleTimeoutSeconds: { key: 'idleTimeoutDefault', min: 1, max: 365 * 86_400 },
  idleTimeoutMaxSeconds: { key: 'idleTimeoutMax', min: 1, max: 365 * 86_400 },
  absoluteTimeoutSeconds: { key: 'absoluteTimeoutDefault', min: 1, max: 3650 * 86_400 },
  absoluteTimeoutMaxSeconds: { key: 'absoluteTimeoutMax', min: 1, max: 3650 * 86_400 },
  maxSessionsPerSubject: { key: 'maxSessionsPerSubject', min: 0, max: 100_000 },
};

function wholeNumber(value: unknown, min: number, max: number, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError('API_KEYS_FILE', `${where} must be a whole number between ${min} and ${max}`);
  }
  return value;
}

/** Validates one namespace's policy object from the keys file. */
export function parsePolicyOverrides(value: unknown, where: string): PolicyOverrides {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError('API_KEYS_FILE', `${where} must be an object`);
  const out: PolicyOverrides = {};
  for (const [name, v] of Object.entries(value as Record<string, unknown>)) {
    if (name === 'rateLimit') {
      if (typeof v !== 'object' || v === null) throw new ConfigError('API_KEYS_FILE', `${where}.rateLimit must be an object`);
      const { max, windowSeconds, ...rest } = v as Record<string, unknown>;
      if (Object.keys(rest).length > 0) throw new ConfigError('API_KEYS_FILE', `${where}.rateLimit has unknown field "${Object.keys(rest)[0]}"`);
      out.rateLimit = {};
      if (max !== undefined) out.rateLimit.max = wholeNumber(max, 0, 1e9, `${where}.rateLimit.max`);
      if (windowSeconds !== undefined) out.rateLimit.windowSeconds = wholeNumber(windowSeconds, 1, 86_400, `${where}.rateLimit.windowSeconds`);
      continue;
    }
    if (name === 'clientTokens') {
      if (typeof v !== 'boolean') throw new ConfigError('API_KEYS_FILE', `${where}.clientTokens must be true or false`);
      out.clientTokens = v;
      continue;
    }
    const field = FIELDS[name];
    if (field === undefined) throw new ConfigError('API_KEYS_FILE', `${where} has unknown field "${name}"`);
    out[field.key] = wholeNumber(v, field.min, field.max, `${where}.${name}`);
  }
  return out;
}
