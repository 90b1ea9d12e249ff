import { readFileSync } from 'node:fs';
import type { ApiKeyEntry } from '../auth/api-keys.js';
import { NamespacePolicies } from '../domain/policies.js';
import { parseApiKeysFile, type KeysFile } from './api-keys-file.js';
import { checkPolicies } from './policies.js';
import { ConfigError } from './config-error.js';
import { readTlsFiles, type TlsConfig } from './tls-files.js';
import type { RedisConnectionOptions } from '../cache/redis-gateway.js';
import type { RequestLogging } from '../http/request-log.js';
import type { EnvVariables, LogLevel } from './schema.js';
import { readEnvironment } from './environment.js';
import { DatabaseUrlError, parseDatabaseUrl as parseUrl, type DatabaseUrl } from '../db/database-url.js';

export { ConfigError };
export type { TlsConfig, LogLevel };

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

/**
 * Validates a mysql:// URL without echoing its password into errors. Several hosts,
 * comma-separated, are the nodes of a Galera cluster (src/db/database-url.ts).
 */
export function parseDatabaseUrl(value: string, name = 'DATABASE_URL'): DatabaseUrl {
  try {
    return parseUrl(value);
  } catch (err) {
    if (err instanceof DatabaseUrlError) throw new ConfigError(name, err.message);
    throw err;
  }
}

function clusterNodes(value: string | undefined): { host: string; port: number }[] | undefined {
  if (value === undefined) return undefined;
  return value.split(',').map((part, i) => {
    const m = /^\s*([^\s:@/]+|\[[0-9a-fA-F:]+\]):(\d{1,5})\s*$/.exec(part);
    if (m === null || Number(m[2]) > 65535) {
      // A URL with a login given here by mistake: its password is not quoted back.
      const got = /[@/]/.test(part) ? `entry ${i + 1} is a URL (the login goes in REDIS_USERNAME and REDIS_PASSWORD)` : `got "${part.trim()}"`;
      throw new ConfigError('REDIS_CLUSTER_NODES', `must be a comma-separated list of host:port, ${got}`);
    }
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
  });
}

function redisConfig(vars: EnvVariables): RedisConnectionOptions | undefined {
  const url = redisUrl(vars.REDIS_URL);
  const nodes = clusterNodes(vars.REDIS_CLUSTER_NODES);
  if (url !== undefined && nodes !== undefined) {
    throw new ConfigError('REDIS_CLUSTER_NODES', 'set either REDIS_URL (one node) or REDIS_CLUSTER_NODES (a cluster), not both');
  }
  if (url === undefined && nodes === undefined) return undefined;
  const { REDIS_USERNAME: username, REDIS_PASSWORD: password } = vars;
  if (username !== undefined && password === undefined) {
    throw new ConfigError('REDIS_PASSWORD', 'is required when REDIS_USERNAME is set (an ACL user logs in with a password)');
  }
  if (url !== undefined && (url.username !== '' || url.password !== '') && (username !== undefined || password !== undefined)) {
    throw new ConfigError('REDIS_PASSWORD', 'REDIS_URL carries a user or password already: set them in one place');
  }
  return {
    url: url === undefined ? undefined : vars.REDIS_URL,
    clusterNodes: nodes,
    username,
    password,
    tls: redisTls(vars, url),
    commandTimeoutMs: vars.REDIS_COMMAND_TIMEOUT_MS,
    connectTimeoutMs: vars.REDIS_CONNECT_TIMEOUT_MS,
    breakerFailureThreshold: vars.REDIS_BREAKER_FAILURES,
    breakerCooldownMs: vars.REDIS_BREAKER_COOLDOWN_MS,
  };
}

/**
 * TLS to Redis: a rediss:// URL, or REDIS_TLS=true for a cluster; a CA or client certificate
 * alone turns it on for a cluster too. Never without verifying the server's certificate.
 */
function redisTls(vars: EnvVariables, url: URL | undefined): TlsConfig | undefined {
  const files = {
    ca: { variable: 'REDIS_TLS_CA_FILE', path: vars.REDIS_TLS_CA_FILE },
    cert: { variable: 'REDIS_TLS_CERT_FILE', path: vars.REDIS_TLS_CERT_FILE },
    key: { variable: 'REDIS_TLS_KEY_FILE', path: vars.REDIS_TLS_KEY_FILE },
  };
  const someFile = Object.values(files).find((f) => f.path !== undefined);
  const fromScheme = url === undefined ? undefined : url.protocol === 'rediss:';
  const enabled = vars.REDIS_TLS ?? fromScheme ?? someFile !== undefined;
  if (fromScheme !== undefined && enabled !== fromScheme) {
    throw new ConfigError('REDIS_TLS', `is ${enabled} but REDIS_URL uses ${url!.protocol}// (rediss:// is TLS, redis:// is not)`);
  }
  if (!enabled && someFile !== undefined) {
    throw new ConfigError(someFile.variable, `is set but TLS to Redis is off (use rediss:// or REDIS_TLS=true)`);
  }
  return enabled ? readTlsFiles(files) : undefined;
}

/** TLS to MariaDB: DATABASE_TLS=true (the system's CAs), or a CA file. */
function databaseTls(vars: EnvVariables): TlsConfig | undefined {
  const files = {
    ca: { variable: 'DATABASE_TLS_CA_FILE', path: vars.DATABASE_TLS_CA_FILE },
    cert: { variable: 'DATABASE_TLS_CERT_FILE', path: vars.DATABASE_TLS_CERT_FILE },
    key: { variable: 'DATABASE_TLS_KEY_FILE', path: vars.DATABASE_TLS_KEY_FILE },
  };
  const someFile = Object.values(files).find((f) => f.path !== undefined);
  const enabled = vars.DATABASE_TLS ?? someFile !== undefined;
  if (!enabled && someFile !== undefined) throw new ConfigError(someFile.variable, 'is set but DATABASE_TLS is false');
  return enabled ? readTlsFiles(files) : undefined;
}

/** Validates REDIS_URL without echoing its password into errors. */
function redisUrl(value: string | undefined): URL | undefined {
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

/**
 * Reads and validates the whole configuration once. Any bad value throws a ConfigError naming
 * the variable; the server prints it and exits.
 */
export function loadConfig(env: Env = process.env): Config {
  const vars = readEnvironment(env);
  let text: string;
  try {
    text = readFileSync(vars.API_KEYS_FILE, 'utf8');
  } catch (err) {
    throw new ConfigError('API_KEYS_FILE', `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return fromVariables(vars, parseApiKeysFile(text, 'API_KEYS_FILE'));
}

/** The configuration from variables and already-loaded keys (tests and tools use it directly). */
export function buildConfig(env: Env, keysFile: KeysFile | ApiKeyEntry[], apiKeysFile = '(inline)'): Config {
  return fromVariables(readEnvironment({ ...env, API_KEYS_FILE: apiKeysFile }), keysFile);
}

/** What the schema cannot say: rules between variables, the URLs' shapes, the TLS files. */
function fromVariables(vars: EnvVariables, keysFile: KeysFile | ApiKeyEntry[]): Config {
  const { keys: apiKeys, namespaces } = Array.isArray(keysFile) ? { keys: keysFile, namespaces: {} } : keysFile;
  parseDatabaseUrl(vars.DATABASE_URL);

  const idleTimeoutMax = vars.SESSION_IDLE_TIMEOUT_MAX_SECONDS;
  const idleTimeoutDefault = vars.SESSION_IDLE_TIMEOUT_SECONDS;
  const absoluteTimeoutMax = vars.SESSION_ABSOLUTE_TIMEOUT_MAX_SECONDS;
  const absoluteTimeoutDefault = vars.SESSION_ABSOLUTE_TIMEOUT_SECONDS;
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
      maxSessionsPerSubject: vars.SESSIONS_PER_SUBJECT_MAX,
      rateLimit: { max: vars.RATE_LIMIT_MAX, windowSeconds: vars.RATE_LIMIT_WINDOW_SECONDS },
      // Off unless a namespace asks: tokens are then 256-bit and made by sessiond.
      clientTokens: false,
    },
    namespaces,
  );
  checkPolicies(policies);

  return {
    databaseUrl: vars.DATABASE_URL,
    redis: redisConfig(vars),
    cache: {
      ttlSeconds: vars.CACHE_TTL_SECONDS,
      leaseMs: vars.CACHE_LEASE_MS,
      outboxReplayIntervalMs: vars.OUTBOX_REPLAY_INTERVAL_MS,
    },
    host: vars.HOST,
    port: vars.PORT,
    logLevel: vars.LOG_LEVEL,
    logRequests: vars.LOG_REQUESTS,
    apiKeysFile: vars.API_KEYS_FILE,
    apiKeys,
    policies,
    guessing: { warnThreshold: vars.GUESSING_WARN_THRESHOLD, windowSeconds: vars.GUESSING_WINDOW_SECONDS },
    sessions: { dataMaxBytes: vars.SESSION_DATA_MAX_BYTES, touchPersistThreshold: vars.TOUCH_PERSIST_THRESHOLD_SECONDS },
    sweeper: {
      intervalSeconds: vars.SWEEPER_INTERVAL_SECONDS,
      batchSize: vars.SWEEPER_BATCH_SIZE,
      maxRowsPerSecond: vars.SWEEPER_MAX_ROWS_PER_SECOND,
    },
    db: {
      poolSize: vars.DB_POOL_SIZE,
      acquireTimeoutMs: vars.DB_ACQUIRE_TIMEOUT_MS,
      queryTimeoutMs: vars.DB_QUERY_TIMEOUT_MS,
      connectTimeoutMs: vars.DB_CONNECT_TIMEOUT_MS,
      tls: databaseTls(vars),
    },
    shutdownTimeoutMs: vars.SHUTDOWN_TIMEOUT_MS,
    requestTimeoutMs: vars.REQUEST_TIMEOUT_MS,
    connectionTimeoutMs: vars.CONNECTION_TIMEOUT_MS,
    keepAliveTimeoutMs: vars.KEEP_ALIVE_TIMEOUT_MS,
    metrics: { port: vars.METRICS_PORT },
    docs: { enabled: vars.DOCS_ENABLED },
  };
}
