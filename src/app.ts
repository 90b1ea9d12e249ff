import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import type { Config } from './config/config.js';
import { ApiKeyAuthenticator } from './http/authenticate.js';
import { installErrorHandling, registerNotFound, sendProblem } from './http/problem.js';
import { sessionRoutes } from './http/routes/sessions.js';
import { subjectRoutes } from './http/routes/subjects.js';
import { GuessingMonitor } from './http/guessing-monitor.js';
import { registerDocs } from './http/docs.js';
import { registerMetrics } from './metrics/metrics.js';
import { sharedSchemas } from './http/schemas.js';
import { databasePlugin } from './plugins/database.js';
import { sweeperPlugin } from './plugins/sweeper.js';
import { SessionService } from './service/session-service.js';
import { MariaDbOutbox, MariaDbSessionStore } from './store/mariadb-session-store.js';
import type { SessionStore } from './store/session-store.js';
import { openapiInfo } from './http/openapi-info.js';
import { CacheCounters } from './cache/cache-counters.js';
import { OutboxWorker } from './store/outbox-worker.js';
import { RevocationWorker } from './store/revocation-worker.js';
import type { SessionKey } from './domain/session.js';
import { redisPlugin } from './plugins/redis.js';
import { RateLimitCounters, registerRateLimit } from './http/rate-limit.js';
import { CachedSessionStore, OUTBOX_ROW_AGE_MS } from './store/cached-session-store.js';
import { RequestLogController } from './http/request-log.js';

export interface BuildOptions {
  /** Fastify logger options or instance settings; false silences logs (tests). */
  logger?: FastifyServerOptions['logger'];
  /** Start the background sweeper on ready (the server does; tests drive it by hand). */
  startSweeper?: boolean;
  /** The clock the service reads; tests move it. */
  clock?: () => Date;
  /** Test-only: pauses a cache fill between its MariaDB read and its Redis install. */
  beforeInstall?: (key: SessionKey) => Promise<void>;
  /** Test-only planted bug: fills without lease or marker checks (see CachedSessionStoreOptions). */
  unsafeUnfencedFill?: boolean;
}

declare module 'fastify' {
  interface FastifyInstance {
    sessionStore: SessionStore;
    sessionService: SessionService;
    cacheCounters: CacheCounters | undefined;
    rateLimitCounters: RateLimitCounters;
    guessingMonitor: GuessingMonitor;
  }
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** A request's id: its `x-request-id` when well-formed, else a new UUID (only such ids reach the logs). */
export function requestIdOf(req: { headers: Record<string, string | string[] | undefined> }): string {
  const incoming = req.headers['x-request-id'];
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
}

/** Fastify's JSON Schema validator settings: bodies are validated as sent, never coerced or trimmed. */
export const AJV_OPTIONS = { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } } as const;

/** Paths in log objects that could ever hold a secret. */
export const REDACTED_LOG_PATHS = [
  'req.headers.authorization',
  'req.headers["session-token"]',
  'headers.authorization',
  'headers["session-token"]',
  'token',
  '*.token',
  'apiKey',
];

/**
 * MariaDB alone, or Redis in front of it when Redis is configured. The cached store comes
 * with its outbox worker, started when the app is ready and stopped before the pool closes;
 * either store with the worker that revokes the rows behind "log out everywhere" marks.
 */
function sessionStore(app: FastifyInstance, config: Config, options: BuildOptions): SessionStore {
  const store = cachedOrNot(app, config, options);
  const worker = new RevocationWorker(store, REVOCATION_WORKER, app.log.child({ component: 'revocations' }) as never);
  store.onSubjectRevoked = () => worker.kick();
  app.addHook('onReady', async () => worker.start());
  app.addHook('onClose', async () => worker.stop());
  return store;
}

/** Batches of the revocation worker: short transactions, paced, and a scan a minute for leftovers. */
const REVOCATION_WORKER = { batchSize: 500, pauseMs: 5, scanIntervalMs: 60_000 };

/**
 * The longest an idle replica waits between reads of the outbox. Its own leftovers wake it; this
 * bounds how late another replica's leftovers are replayed (the cache TTL bounds staleness anyway).
 */
const OUTBOX_IDLE_MAX_INTERVAL_MS = 5_000;

function cachedOrNot(app: FastifyInstance, config: Config, options: BuildOptions): MariaDbSessionStore | CachedSessionStore {
  const threshold = config.sessions.touchPersistThreshold;
  // A mark outlives its copy in Redis: entries filled before it must not outlast it (docs/design.md §5.9).
  const db = new MariaDbSessionStore(app.database, { touchPersistThresholdSeconds: threshold, subjectMarkRetentionMs: app.redis?.subjectMarkTtlMs() ?? 0 });
  if (app.redis === undefined) return db;
  const log = app.log.child({ component: 'cache' }) as never;
  const outbox = new MariaDbOutbox(app.database);
  const cached = new CachedSessionStore(db, outbox, app.redis, {
    touchPersistThresholdSeconds: threshold,
    beforeInstall: options.beforeInstall,
    unsafeUnfencedFill: options.unsafeUnfencedFill,
  }, log);
  const worker = new OutboxWorker(
    outbox,
    cached,
    {
      intervalMs: config.cache.outboxReplayIntervalMs,
      idleMaxIntervalMs: Math.max(config.cache.outboxReplayIntervalMs, OUTBOX_IDLE_MAX_INTERVAL_MS),
      minAgeMs: OUTBOX_ROW_AGE_MS,
      batchSize: 100,
    },
    log,
  );
  cached.onOutboxRowLeft = (afterMs) => worker.wake(afterMs);
  // Redis answers again: replay what it missed before it is trusted for reads.
  app.redis.onRecover = async () => {
    await worker.replay(true);
  };
  app.cacheCounters = cached.counters;
  app.addHook('onReady', async () => {
    const redis = app.redis!;
    if (!(await redis.connected())) app.log.warn('redis not reachable at start; serving from MariaDB until it is');
    worker.start();
  });
  app.addHook('onClose', async () => {
    await cached.flushOutbox();
    await worker.stop();
  });
  return cached;
}

/** Builds the service from a typed config. It never listens: server.ts does, tests use inject(). */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? { level: config.logLevel, redact: { paths: REDACTED_LOG_PATHS, censor: '[redacted]' } },
    logController: new RequestLogController(config.logRequests),
    // A client that trickles its request, or holds an idle connection, cannot hold a socket forever.
    requestTimeout: config.requestTimeoutMs,
    connectionTimeout: config.connectionTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    // Data is capped at dataMaxBytes as stored JSON; leave room for escaping and the envelope.
    bodyLimit: config.sessions.dataMaxBytes * 4 + 16 * 1024,
    // genReqId reads x-request-id itself so that only well-formed ids are echoed into logs.
    requestIdHeader: false,
    genReqId: requestIdOf,
    ajv: AJV_OPTIONS,
    // Subjects may be 255 characters, percent-encoded up to 12 bytes each in a path segment.
    routerOptions: { maxParamLength: 4096 },
    // Errors Fastify answers before routing (a malformed URL) get the same problem+json shape.
    frameworkErrors: (error, _request, reply) => {
      sendProblem(reply, 400, 'invalid_request', error.code === 'FST_ERR_BAD_URL' ? 'The URL is malformed.' : 'Bad request.');
    },
  });

  // While draining (after close() began), in-flight responses end their keep-alive connection,
  // so that the server can finish closing as soon as they are sent.
  let draining = false;
  app.addHook('preClose', async () => {
    draining = true;
  });
  // Callback-style hooks on every request: an async hook costs a promise and a microtask turn.
  app.addHook('onSend', (request, reply, payload, done) => {
    reply.header('x-request-id', request.id);
    if (draining) reply.header('connection', 'close');
    done(null, payload);
  });
  installErrorHandling(app);

  for (const schema of sharedSchemas) app.addSchema(schema);
  await app.register(swagger, {
    openapi: openapiInfo,
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (json.$id as string | undefined) ?? `def-${i}` },
    // Create and rotate accept an empty body; @fastify/swagger marks every body required.
    transformObject: (document) => {
      if (!('openapiObject' in document)) return document.swaggerObject;
      const paths = document.openapiObject.paths ?? {};
      for (const op of [paths['/v1/sessions']?.post, paths['/v1/sessions/current/rotate']?.post]) {
        if (op?.requestBody !== undefined && !('$ref' in op.requestBody)) op.requestBody.required = false;
      }
      return document.openapiObject;
    },
  });

  app.decorate('cacheCounters', undefined);
  app.decorate('rateLimitCounters', new RateLimitCounters());
  await app.register(databasePlugin, { url: config.databaseUrl, ...config.db });
  await app.register(redisPlugin, {
    options:
      config.redis === undefined
        ? undefined
        : { ...config.redis, cacheTtlMs: config.cache.ttlSeconds * 1000, leaseMs: config.cache.leaseMs },
  });
  const store = sessionStore(app, config, options);
  const service = new SessionService(store, { dataMaxBytes: config.sessions.dataMaxBytes, policies: config.policies }, options.clock);
  app.decorate('sessionStore', store);
  app.decorate('sessionService', service);

  await app.register(sweeperPlugin, {
    store,
    autoStart: options.startSweeper ?? false,
    intervalSeconds: config.sweeper.intervalSeconds,
    batchSize: config.sweeper.batchSize,
    maxRowsPerSecond: config.sweeper.maxRowsPerSecond,
    graceSeconds: config.sessions.touchPersistThreshold,
  });

  const authenticator = new ApiKeyAuthenticator(config.apiKeys);
  const guessing = new GuessingMonitor(config.guessing, app.log.child({ component: 'guessing' }) as never);
  app.decorate('guessingMonitor', guessing);
  await app.register(
    async (v1) => {
      v1.addHook('onRequest', authenticator.hook());
      // Sessions hold credentials: no shared cache may keep a response.
      v1.addHook('onSend', (_request, reply, payload, done) => {
        reply.header('cache-control', 'no-store');
        done(null, payload);
      });
      const chargeRateLimit = await registerRateLimit(v1, { redis: app.redis, policies: config.policies, counters: app.rateLimitCounters });
      await v1.register(sessionRoutes, { service, guessing, chargeRateLimit });
      await v1.register(subjectRoutes, { service });
    },
    { prefix: '/v1' },
  );

  if (config.docs.enabled) await registerDocs(app);
  await registerMetrics(app, { port: config.metrics.port, host: config.host, dbPoolSize: config.db.poolSize });

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  // Ready while MariaDB answers; a Redis outage keeps the pod ready (calls fall back) and says so.
  app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
    const redis = app.redis === undefined ? 'not configured' : (await app.redis.ping()) ? 'up' : 'down';
    try {
      await app.database.ping();
      return { status: redis === 'down' ? 'degraded' : 'ready', mariadb: 'up', redis };
    } catch {
      return reply.code(503).send({ status: 'unavailable', mariadb: 'down', redis });
    }
  });
  await registerNotFound(app);

  return app;
}
