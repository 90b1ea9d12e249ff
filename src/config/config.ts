import { readFileSync } from 'node:fs';
import type { ApiKeyEntry } from '../auth/api-keys.js';
import { NamespacePolicies } from '../domain/policies.js';
import { parseApiKeysFile, type KeysFile } from './api-keys-file.js';
import { checkPolicies } from './policies.js';
import { ConfigError } from './config-error.js';
import { readTlsFiles, type TlsConfig } from './tls-files.js';
import type { RedisConnectionOptions } from '../cache/redis-gateway.js';
import type { RequestLogging } from '../http/request-log.js';

export { ConfigError };
export type { TlsConfig };

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** Session limits that are not per namespace (timeouts are: see policies). */
export interface SessionLimits {
  dataMaxBytes: number;
  /** A touch writes MariaDB only when the stored idle expiry lags by more than this (seconds). */
  touchPersistThreshold: number;
}

/** Redis connection settings; absent when no cache is configured (MariaDB alone). */
export interface CacheConfig {
  /** Entries and tombstones live this long: the bound on staleness in every failure mode. */
  ttlSeconds: number;
  leaseMs: number;
  outboxReplayIntervalMs: number;
}

export interface Config {
  databaseUrl: string;
  redis: RedisConnectionOptions | undefined;
  cache: CacheConfig;
  host: string;
  port: number;
  logLevel: LogLevel;
  /** Per-request log lines at info: every answer, only 5xx answers, or none (debug shows all). */
  logRequests: RequestLogging;
  apiKeysFile: string;
  apiKeys: ApiKeyEntry[];
  /** Per-namespace limits; the environment gives the defaults. */
  policies: NamespacePolicies;
  sessions: SessionLimits;
  /** Failed token lookups per client and window past which a warning is logged. */
  guessing: { warnThreshold: number; windowSeconds: number };
  sweeper: { intervalSeconds: number; batchSize: number; maxRowsPerSecond: number };
  db: {
    poolSize: number;
    acquireTimeoutMs: number;
    queryTimeoutMs: number;
    connectTimeoutMs: number;
    /** TLS to MariaDB; absent = plain TCP. */
    tls?: TlsConfig | undefined;
  };
  shutdownTimeoutMs: number;
  /** The whole request (headers and body) must arrive within this; 0 = no limit. */
  requestTimeoutMs: number;
  /** A connection idle this long is closed (slowloris); 0 = no limit. */
  connectionTimeoutMs: number;
  /** Keep-alive idle time: longer than a load balancer's (AWS ALB 60 s), so the balancer closes first. */
  keepAliveTimeoutMs: number;
  /** /metrics: on the main port, or on a port of its own when set. */
  metrics: { port: number | undefined };
  /** The API reference page at /docs (and the document at /docs/json). */
  docs: { enabled: boolean };
}


type Env = Record<string, string | undefined>;

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const REQUEST_LOGGING: readonly RequestLogging[] = ['all', 'errors', 'none'];

function oneOf<T extends string>(env: Env, name: string, values: readonly T[], fallback: T): T {
  const value = (raw(env, name) ?? fallback) as T;
  if (!values.includes(value)) throw new ConfigError(name, `must be one of ${values.join(', ')}, got "${value}"`);
  return value;
}

function raw(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function required(env: Env, name: string): string {
  const value = raw(env, name);
  if (value === undefined) throw new ConfigError(name, 'is required but not set');
  return value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new ConfigError(name, `must be a whole number, got "${value}"`);
  const n = Number(value);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  if (/^(true|1|yes|on)$/i.test(value)) return true;
  if (/^(false|0|no|off)$/i.test(value)) return false;
  throw new ConfigError(name, `must be true or false, got "${value}"`);
}

/** Validates a mysql:// URL without echoing its password into errors. */
export function parseDatabaseUrl(value: string, name = 'DATABASE_URL'): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(name, 'is not a valid URL (expected mysql://user:pass@host:port/database)');
  }
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:') {
    throw new ConfigError(name, `must use the mysql:// scheme, got "${url.protocol}//"`);
  }
  if (url.hostname === '') throw new ConfigError(name, 'has no host');
  if (url.pathname.replace(/^\//, '') === '') throw new ConfigError(name, 'names no database (mysql://…/database)');
  // Nothing reads them: an ignored ?ssl=true would mean plain TCP where TLS was asked for.
  if (url.search !== '') {
    throw new ConfigError(name, `takes no query parameters (TLS is set with DATABASE_TLS and DATABASE_TLS_CA_FILE), got "?${[...url.searchParams.keys()].join('&')}"`);
  }
  return url;
}

function clusterNodes(env: Env): { host: string; port: number }[] | undefined {
  const value = raw(env, 'REDIS_CLUSTER_NODES');
  if (value === undefined) return undefined;
  return value.split(',').map((part) => {
    const m = /^\s*([^\s:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})\s*$/.exec(part);
    if (m === null || Number(m[2]) > 65535) {
      throw new ConfigError('REDIS_CLUSTER_NODES', `must be a comma-separated list of host:port, got "${part.trim()}"`);
    }
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
  });
}

function redisConfig(env: Env): RedisConnectionOptions | undefined {
  const url = redisUrl(env);
  const nodes = clusterNodes(env);
  if (url !== undefined && nodes !== undefined) {
    throw new ConfigError('REDIS_CLUSTER_NODES', 'set either REDIS_URL (one node) or REDIS_CLUSTER_NODES (a cluster), not both');
  }
  if (url === undefined && nodes === undefined) return undefined;
  const username = raw(env, 'REDIS_USERNAME');
  const password = raw(env, 'REDIS_PASSWORD');
  if (username !== undefined && password === undefined) {
    throw new ConfigError('REDIS_PASSWORD', 'is required when REDIS_USERNAME is set (an ACL user logs in with a password)');
  }
  if (url !== undefined && (url.username !== '' || url.password !== '') && (username !== undefined || password !== undefined)) {
    throw new ConfigError('REDIS_PASSWORD', 'REDIS_URL carries a user or password already: set them in one place');
  }
  return {
    url: url === undefined ? undefined : raw(env, 'REDIS_URL'),
    clusterNodes: nodes,
    username,
    password,
    tls: redisTls(env, url),
    commandTimeoutMs: integer(env, 'REDIS_COMMAND_TIMEOUT_MS', 50, 1, 10_000),
    connectTimeoutMs: integer(env, 'REDIS_CONNECT_TIMEOUT_MS', 500, 10, 60_000),
    breakerFailureThreshold: integer(env, 'REDIS_BREAKER_FAILURES', 3, 1, 1000),
    breakerCooldownMs: integer(env, 'REDIS_BREAKER_COOLDOWN_MS', 1000, 10, 600_000),
  };
}

/**
 * TLS to Redis: a rediss:// URL, or REDIS_TLS=true for a cluster; a CA or client certificate
 * alone turns it on for a cluster too. Never without verifying the server's certificate.
 */
function redisTls(env: Env, url: URL | undefined): TlsConfig | undefined {
  const files = {
    ca: { variable: 'REDIS_TLS_CA_FILE', path: raw(env, 'REDIS_TLS_CA_FILE') },
    cert: { variable: 'REDIS_TLS_CERT_FILE', path: raw(env, 'REDIS_TLS_CERT_FILE') },
    key: { variable: 'REDIS_TLS_KEY_FILE', path: raw(env, 'REDIS_TLS_KEY_FILE') },
  };
  const someFile = Object.values(files).find((f) => f.path !== undefined);
  const fromScheme = url === undefined ? undefined : url.protocol === 'rediss:';
  const enabled = boolean(env, 'REDIS_TLS', fromScheme ?? someFile !== undefined);
  if (fromScheme !== undefined && enabled !== fromScheme) {
    throw new ConfigError('REDIS_TLS', `is ${enabled} but REDIS_URL uses ${url!.protocol}// (rediss:// is TLS, redis:// is not)`);
  }
  if (!enabled && someFile !== undefined) {
    throw new ConfigError(someFile.variable, `is set but TLS to Redis is off (use rediss:// or REDIS_TLS=true)`);
  }
  return enabled ? readTlsFiles(files) : undefined;
}

/** TLS to MariaDB: DATABASE_TLS=true (the system's CAs), or a CA file. */
function databaseTls(env: Env): TlsConfig | undefined {
  const files = {
    ca: { variable: 'DATABASE_TLS_CA_FILE', path: raw(env, 'DATABASE_TLS_CA_FILE') },
    cert: { variable: 'DATABASE_TLS_CERT_FILE', path: raw(env, 'DATABASE_TLS_CERT_FILE') },
    key: { variable: 'DATABASE_TLS_KEY_FILE', path: raw(env, 'DATABASE_TLS_KEY_FILE') },
  };
  const someFile = Object.values(files).find((f) => f.path !== undefined);
  const enabled = boolean(env, 'DATABASE_TLS', someFile !== undefined);
  if (!enabled && someFile !== undefined) throw new ConfigError(someFile.variable, 'is set but DATABASE_TLS is false');
  return enabled ? readTlsFiles(files) : undefined;
}

/** Validates REDIS_URL without echoing its password into errors. */
function redisUrl(env: Env): URL | undefined {
  const value = raw(env, 'REDIS_URL');
  if (value === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError('REDIS_URL', 'is not a valid URL (expected redis://host:port or rediss://user:pass@host:port)');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigError('REDIS_URL', `must use the redis:// or rediss:// scheme, got "${url.protocol}//"`);
  }
  if (url.hostname === '') throw new ConfigError('REDIS_URL', 'has no host');
  if (!/^(\/\d{0,2})?$/.test(url.pathname)) throw new ConfigError('REDIS_URL', 'may name a database number only (redis://host:port/0)');
  // ioredis would take any query parameter as a client option.
  if (url.search !== '') throw new ConfigError('REDIS_URL', 'takes no query parameters');
  if (url.username !== '' && url.password === '') {
    throw new ConfigError('REDIS_URL', 'names a user without a password (rediss://user:pass@host:port)');
  }
  return url;
}

const DAY = 86_400;

/**
 * Reads and validates the whole configuration once. Any bad value throws a ConfigError naming
 * the variable; the server prints it and exits.
 */
export function loadConfig(env: Env = process.env): Config {
  const apiKeysFile = required(env, 'API_KEYS_FILE');
  let text: string;
  try {
    text = readFileSync(apiKeysFile, 'utf8');
  } catch (err) {
    throw new ConfigError('API_KEYS_FILE', `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return buildConfig(env, parseApiKeysFile(text, 'API_KEYS_FILE'), apiKeysFile);
}

/** The configuration from variables and already-loaded keys (tests and tools use it directly). */
export function buildConfig(env: Env, keysFile: KeysFile | ApiKeyEntry[], apiKeysFile = '(inline)'): Config {
  const { keys: apiKeys, namespaces } = Array.isArray(keysFile) ? { keys: keysFile, namespaces: {} } : keysFile;
  const databaseUrl = required(env, 'DATABASE_URL');
  parseDatabaseUrl(databaseUrl);

  const logLevel = oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info');
  const logRequests = oneOf(env, 'LOG_REQUESTS', REQUEST_LOGGING, 'errors');

  const idleTimeoutMax = integer(env, 'SESSION_IDLE_TIMEOUT_MAX_SECONDS', DAY, 1, 365 * DAY);
  const idleTimeoutDefault = integer(env, 'SESSION_IDLE_TIMEOUT_SECONDS', 30 * 60, 1, 365 * DAY);
  const absoluteTimeoutMax = integer(env, 'SESSION_ABSOLUTE_TIMEOUT_MAX_SECONDS', 30 * DAY, 1, 3650 * DAY);
  const absoluteTimeoutDefault = integer(env, 'SESSION_ABSOLUTE_TIMEOUT_SECONDS', 12 * 3600, 1, 3650 * DAY);
  if (idleTimeoutDefault > idleTimeoutMax) {
    throw new ConfigError('SESSION_IDLE_TIMEOUT_SECONDS', `must not exceed SESSION_IDLE_TIMEOUT_MAX_SECONDS (${idleTimeoutMax})`);
  }
  if (absoluteTimeoutDefault > absoluteTimeoutMax) {
    throw new ConfigError(
      'SESSION_ABSOLUTE_TIMEOUT_SECONDS',
      `must not exceed SESSION_ABSOLUTE_TIMEOUT_MAX_SECONDS (${absoluteTimeoutMax})`,
    );
  }

  const policies = new NamespacePolicies(
    {
      idleTimeoutDefault,
      idleTimeoutMax,
      absoluteTimeoutDefault,
      absoluteTimeoutMax,
      maxSessionsPerSubject: integer(env, 'SESSIONS_PER_SUBJECT_MAX', 0, 0, 100_000),
      rateLimit: {
        max: integer(env, 'RATE_LIMIT_MAX', 60_000, 0, 1e9),
        windowSeconds: integer(env, 'RATE_LIMIT_WINDOW_SECONDS', 60, 1, DAY),
      },
      // Off unless a namespace asks: tokens are then 256-bit and made by sessiond.
      clientTokens: false,
    },
    namespaces,
  );
  checkPolicies(policies);

  const host = raw(env, 'HOST') ?? '0.0.0.0';
  return {
    databaseUrl,
    redis: redisConfig(env),
    cache: {
      ttlSeconds: integer(env, 'CACHE_TTL_SECONDS', 300, 1, 7 * DAY),
      leaseMs: integer(env, 'CACHE_LEASE_MS', 2000, 10, 600_000),
      outboxReplayIntervalMs: integer(env, 'OUTBOX_REPLAY_INTERVAL_MS', 250, 10, 600_000),
    },
    host,
    port: integer(env, 'PORT', 8080, 0, 65535),
    logLevel,
    logRequests,
    apiKeysFile,
    apiKeys,
    policies,
    guessing: {
      warnThreshold: integer(env, 'GUESSING_WARN_THRESHOLD', 100, 1, 1e9),
      windowSeconds: integer(env, 'GUESSING_WINDOW_SECONDS', 60, 1, DAY),
    },
    sessions: {
      dataMaxBytes: integer(env, 'SESSION_DATA_MAX_BYTES', 64 * 1024, 2, 16 * 1024 * 1024),
      touchPersistThreshold: integer(env, 'TOUCH_PERSIST_THRESHOLD_SECONDS', 60, 0, DAY),
    },
    sweeper: {
      intervalSeconds: integer(env, 'SWEEPER_INTERVAL_SECONDS', 60, 0, DAY),
      batchSize: integer(env, 'SWEEPER_BATCH_SIZE', 500, 1, 100_000),
      maxRowsPerSecond: integer(env, 'SWEEPER_MAX_ROWS_PER_SECOND', 2000, 0, 1_000_000),
    },
    db: {
      poolSize: integer(env, 'DB_POOL_SIZE', 10, 1, 1000),
      acquireTimeoutMs: integer(env, 'DB_ACQUIRE_TIMEOUT_MS', 1000, 10, 60_000),
      queryTimeoutMs: integer(env, 'DB_QUERY_TIMEOUT_MS', 2000, 10, 600_000),
      connectTimeoutMs: integer(env, 'DB_CONNECT_TIMEOUT_MS', 1000, 10, 60_000),
      tls: databaseTls(env),
    },
    shutdownTimeoutMs: integer(env, 'SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
    requestTimeoutMs: integer(env, 'REQUEST_TIMEOUT_MS', 10_000, 0, 600_000),
    connectionTimeoutMs: integer(env, 'CONNECTION_TIMEOUT_MS', 120_000, 0, 3_600_000),
    keepAliveTimeoutMs: integer(env, 'KEEP_ALIVE_TIMEOUT_MS', 65_000, 1, 3_600_000),
    metrics: { port: raw(env, 'METRICS_PORT') === undefined ? undefined : integer(env, 'METRICS_PORT', 0, 0, 65535) },
    docs: { enabled: boolean(env, 'DOCS_ENABLED', true) },
  };
}
