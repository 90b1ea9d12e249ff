import { Type, type Static } from 'typebox';
import type { RequestLogging } from '../http/request-log.js';

/**
 * Every environment variable the service reads, declared once: its type, range, default and
 * meaning. loadConfig validates the environment against it (env-schema), the README's
 * configuration table is generated from it (`npm run config-doc`), and the deploy test checks
 * the ConfigMap's names against it. Rules that tie several variables together, and the files
 * the variables name, stay in config.ts.
 *
 * Conventions the readers rely on (config.ts, devstack/config-doc.ts):
 * - `type: 'integer'` is a whole number written in digits; `type: 'boolean'` takes
 *   true/false, 1/0, yes/no, on/off; an enum lists its values; anything else is a string.
 * - A string's value is never quoted back in an error (URLs and passwords are strings).
 * - `defaultText` (documentation only) describes a default that config.ts derives from other
 *   variables, where the schema can give no `default`.
 * - Consecutive variables with the same description and default share a row of the table.
 */

const DAY = 86_400;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
const REQUEST_LOGGING = ['all', 'errors', 'none'] as const satisfies readonly RequestLogging[];

/** `a`, `b` or `c` */
const listOf = (values: readonly string[]) =>
  `${values.slice(0, -1).map((v) => `\`${v}\``).join(', ')} or \`${values.at(-1)}\``;

const TLS_CLIENT_PAIR = 'client certificate and its unencrypted key (PEM) for mutual TLS: both or neither';
const REDIS_TLS_CLIENT_PAIR = "client certificate and its unencrypted key (PEM) for Redis' `tls-auth-clients yes`: both or neither";
const REDIS_LOGIN =
  'the ACL login for a cluster (every node), or for a `REDIS_URL` without one; a username needs a password';

const integer = (minimum: number, maximum: number, fallback: number, description: string) =>
  Type.Integer({ minimum, maximum, default: fallback, description });
const optionalString = (description: string, options: { defaultText?: string } = {}) =>
  Type.Optional(Type.String({ description, ...options }));
const optionalBoolean = (description: string, defaultText: string) =>
  Type.Optional(Type.Boolean({ description, defaultText }));

export const ENV_SCHEMA = Type.Object({
  DATABASE_URL: Type.String({
    description: '`mysql://user:pass@host:port/database` (user and password percent-encoded; no `?` parameters: TLS has its own variables). The nodes of a Galera cluster, comma-separated, the first preferred: `mysql://user:pass@db-0:3306,db-1:3306,db-2:3306/database`',
  }),
  DATABASE_TLS: optionalBoolean(
    "TLS to MariaDB, the server's certificate verified (against `DATABASE_TLS_CA_FILE`, else the system's CAs)",
    '`false`, `true` with a CA file',
  ),
  DATABASE_TLS_CA_FILE: optionalString("PEM file of the CA(s) MariaDB's certificate must chain to; setting it turns TLS on"),
  DATABASE_TLS_CERT_FILE: optionalString(TLS_CLIENT_PAIR),
  DATABASE_TLS_KEY_FILE: optionalString(TLS_CLIENT_PAIR),
  REDIS_URL: optionalString(
    'a single Redis node: `redis://host:port`, `rediss://host:port` for TLS, with an ACL login `rediss://user:pass@host:port` (or `:pass@` for `requirepass`), optionally `/db`; unset (and no cluster) = no cache, MariaDB alone',
  ),
  REDIS_CLUSTER_NODES: optionalString('Redis Cluster mode: `host:port,host:port,…` startup nodes (instead of `REDIS_URL`)'),
  REDIS_USERNAME: optionalString(REDIS_LOGIN),
  REDIS_PASSWORD: optionalString(REDIS_LOGIN),
  REDIS_TLS: optionalBoolean(
    "TLS to Redis, the server's certificate verified: `rediss://` for one node; for a cluster `true`, or set a TLS file",
    'from the scheme; `true` with a TLS file',
  ),
  REDIS_TLS_CA_FILE: optionalString("PEM file of the CA(s) Redis' certificate must chain to (else the system's CAs)"),
  REDIS_TLS_CERT_FILE: optionalString(REDIS_TLS_CLIENT_PAIR),
  REDIS_TLS_KEY_FILE: optionalString(REDIS_TLS_CLIENT_PAIR),
  REDIS_COMMAND_TIMEOUT_MS: integer(1, 10_000, 50, 'longest wait for one Redis command before the call falls back to MariaDB'),
  REDIS_CONNECT_TIMEOUT_MS: integer(10, 60_000, 500, 'longest wait for a Redis connection'),
  REDIS_BREAKER_FAILURES: integer(1, 1000, 3, 'consecutive Redis failures that open the breaker (no Redis calls at all while open)'),
  REDIS_BREAKER_COOLDOWN_MS: integer(10, 600_000, 1000, 'how long the breaker stays open before a recovery probe'),
  CACHE_TTL_SECONDS: integer(1, 7 * DAY, 300, 'how long a cached entry serves after its fill and a tombstone lingers: the bound on staleness in every failure mode'),
  CACHE_LEASE_MS: integer(10, 600_000, 2000, 'lifetime of a fill lease'),
  OUTBOX_REPLAY_INTERVAL_MS: integer(10, 600_000, 250, 'how often each replica replays invalidations Redis missed'),
  API_KEYS_FILE: Type.String({ description: 'path of the API keys file (above)' }),
  HOST: Type.String({ default: '0.0.0.0', description: 'listen address (a Kubernetes probe cannot reach 127.0.0.1)' }),
  PORT: integer(0, 65535, 8080, 'listen port'),
  REQUEST_TIMEOUT_MS: integer(
    0,
    600_000,
    10_000,
    "a request's headers and body must arrive within this, or the connection is closed (`0` = no limit)",
  ),
  CONNECTION_TIMEOUT_MS: integer(0, 3_600_000, 120_000, 'a socket idle this long is closed (`0` = no limit)'),
  KEEP_ALIVE_TIMEOUT_MS: integer(
    1,
    3_600_000,
    65_000,
    "keep-alive idle time; keep it above your load balancer's idle timeout (AWS ALB: 60 s) so the balancer closes first",
  ),
  LOG_LEVEL: Type.Enum(LOG_LEVELS, { default: 'info', description: listOf(LOG_LEVELS) }),
  LOG_REQUESTS: Type.Enum(REQUEST_LOGGING, {
    default: 'errors',
    description:
      'per-request lines at info: `all` (one line per request: method, URL, status, time, client), `errors` (5xx answers only) or `none`; at `debug` every request is logged. Logging every request costs ~30 % more CPU per warm touch (docs/benchmarks.md)',
  }),
  SESSION_IDLE_TIMEOUT_SECONDS: integer(
    1,
    365 * DAY,
    30 * 60,
    'idle timeout when create does not ask for one (the session settings here are defaults; namespace policies override them)',
  ),
  SESSION_IDLE_TIMEOUT_MAX_SECONDS: integer(1, 365 * DAY, DAY, 'cap on a requested idle timeout'),
  SESSION_ABSOLUTE_TIMEOUT_SECONDS: integer(1, 3650 * DAY, 12 * 3600, 'absolute timeout when create does not ask for one'),
  SESSION_ABSOLUTE_TIMEOUT_MAX_SECONDS: integer(1, 3650 * DAY, 30 * DAY, 'cap on a requested absolute timeout'),
  SESSION_DATA_MAX_BYTES: integer(2, 16 * 1024 * 1024, 64 * 1024, 'largest `data` as JSON (UTF-8 bytes)'),
  TOUCH_PERSIST_THRESHOLD_SECONDS: integer(0, DAY, 60, 'touch write-behind bound (see Expiry and touch)'),
  SESSIONS_PER_SUBJECT_MAX: integer(
    0,
    100_000,
    0,
    'default per-subject cap: one more create revokes the least recently used; `0` = no cap',
  ),
  RATE_LIMIT_MAX: integer(0, 1e9, 60_000, 'default requests per API client and window; `0` = no limit'),
  RATE_LIMIT_WINDOW_SECONDS: integer(1, DAY, 60, 'default rate-limit window'),
  GUESSING_WARN_THRESHOLD: integer(
    1,
    1e9,
    100,
    'token lookups of one client that match nothing, per window, before a warning is logged',
  ),
  GUESSING_WINDOW_SECONDS: integer(1, DAY, 60, 'window of that count'),
  METRICS_PORT: Type.Optional(
    Type.Integer({ minimum: 0, maximum: 65535, description: 'serve `/metrics` on this port (on `HOST`) instead of the API port' }),
  ),
  DOCS_ENABLED: Type.Boolean({ default: true, description: 'serve the API reference page at `/docs`' }),
  SWEEPER_INTERVAL_SECONDS: integer(0, DAY, 60, 'how often each replica tries to sweep; `0` turns the sweeper off'),
  SWEEPER_BATCH_SIZE: integer(1, 100_000, 500, 'rows deleted per statement'),
  SWEEPER_MAX_ROWS_PER_SECOND: integer(
    0,
    1_000_000,
    2000,
    'deletion budget: batches are spaced to stay under it (`0` = back to back); keep it above the rate sessions are created',
  ),
  DB_POOL_SIZE: integer(1, 1000, 10, 'MariaDB connections per process'),
  DB_ACQUIRE_TIMEOUT_MS: integer(10, 60_000, 1000, 'longest wait for a pooled connection before `503`'),
  DB_CONNECT_TIMEOUT_MS: integer(10, 60_000, 1000, 'longest wait for a new connection'),
  DB_QUERY_TIMEOUT_MS: integer(10, 600_000, 2000, 'longest a statement may run (MariaDB `max_statement_time`)'),
  SHUTDOWN_TIMEOUT_MS: integer(
    0,
    600_000,
    10_000,
    'on SIGTERM, how long in-flight requests may take before the process exits anyway',
  ),
  // Variables it does not declare are not the service's (env-schema drops them).
}, { additionalProperties: false });

/** The variables after validation: numbers, booleans and defaults in place. */
export type EnvVariables = Static<typeof ENV_SCHEMA>;

/** One variable's schema, as the readers of the conventions above see it (plain JSON Schema). */
export interface VariableSchema {
  type?: 'string' | 'integer' | 'boolean';
  enum?: readonly string[];
  minimum?: number;
  maximum?: number;
  default?: unknown;
  description?: string;
  defaultText?: string;
}

/** The variables in declaration order, each with its schema and whether it must be set. */
export function variables(): { name: keyof EnvVariables & string; schema: VariableSchema; required: boolean }[] {
  const required = new Set<string>(ENV_SCHEMA.required);
  return Object.entries(ENV_SCHEMA.properties).map(([name, schema]) => ({
    name: name as keyof EnvVariables & string,
    schema: schema as VariableSchema,
    required: required.has(name) && (schema as VariableSchema).default === undefined,
  }));
}
