/**
 * Baseline servers for `npm run bench`: the same Fastify package as the service, one route,
 * the same response size as a session read. Started as a child process by bench/bench.mjs:
 *
 *   BASELINE=A  GET /  answers a fixed session-sized JSON (the framework ceiling)
 *   BASELINE=B  GET /  one Redis GET of a session-sized value (the cache ceiling; ioredis
 *                      without auto-pipelining, as the service uses it)
 *   BASELINE=C  GET /  one MariaDB primary-key SELECT of a session row (no cache; the mariadb
 *                      driver pool, as the service uses it), answered as the session view
 *   BASELINE=F  GET /v1/floor  the floor: B's one Redis GET behind sessiond's own framework
 *                      path — its Fastify options (logger, request ids, log controller), its hooks
 *                      (API key authentication, rate limiter, request metrics, the onSend
 *                      headers) and its Redis client (RedisGateway), all from dist/ and configured
 *                      from the service's environment. What sessiond spends above F is its own
 *                      session work; what F spends above B is the route path sessiond shares.
 *
 * Env: PORT, BODY (the JSON to answer / store), REDIS_URL (B, F), DATABASE_URL, NAMESPACE, ID_HASH_HEX (C);
 * F also reads the service's variables (API_KEYS_FILE, RATE_LIMIT_MAX, LOG_LEVEL, ...), and
 * FLOOR_WITHOUT, a comma-separated list of its parts to leave out (logger, auth, ratelimit,
 * metrics, onsend), to price each part.
 * Prints "listening" on stdout when ready.
 */
import Fastify from 'fastify';

const mode = process.env.BASELINE;
const port = Number(process.env.PORT);
const body = process.env.BODY ?? '{}';
const app = mode === 'F' ? await floorApp() : Fastify({ logger: false });
const json = (reply, text) => reply.header('content-type', 'application/json; charset=utf-8').send(text);

/**
 * buildApp's (src/app.ts) framework setup and per-request hooks, without the session routes:
 * the same Fastify options, the root onSend and metrics hooks, and in /v1 the authentication,
 * cache-control and rate-limit hooks, with one route answering B's Redis GET.
 */
async function floorApp() {
  const { loadConfig } = await import('../dist/config/config.js');
  const { AJV_OPTIONS, REDACTED_LOG_PATHS, requestIdOf } = await import('../dist/app.js');
  const { RequestLogController } = await import('../dist/http/request-log.js');
  const { ApiKeyAuthenticator } = await import('../dist/http/authenticate.js');
  const { RateLimitCounters, registerRateLimit } = await import('../dist/http/rate-limit.js');
  const { registerMetrics } = await import('../dist/metrics/metrics.js');
  const { RedisGateway } = await import('../dist/cache/redis-gateway.js');
  const config = loadConfig(process.env);
  const without = new Set((process.env.FLOOR_WITHOUT ?? '').split(',').filter((p) => p !== ''));
  const floor = Fastify({
    logger: without.has('logger') ? false : { level: config.logLevel, redact: { paths: REDACTED_LOG_PATHS, censor: '[redacted]' } },
    logController: new RequestLogController(config.logRequests),
    requestIdHeader: false,
    genReqId: requestIdOf,
    ajv: AJV_OPTIONS,
    routerOptions: { maxParamLength: 4096 },
  });
  if (!without.has('onsend')) {
    floor.addHook('onSend', (request, reply, payload, done) => {
      reply.header('x-request-id', request.id);
      done(null, payload);
    });
  }
  const gateway = new RedisGateway(
    { ...config.redis, cacheTtlMs: config.cache.ttlSeconds * 1000, leaseMs: config.cache.leaseMs },
    floor.log.child({ component: 'redis' }),
  );
  await gateway.connected();
  await gateway.client.set('bench:session', body);
  floor.addHook('onClose', async () => gateway.close());
  const authenticator = new ApiKeyAuthenticator(config.apiKeys);
  const counters = new RateLimitCounters();
  await floor.register(
    async (v1) => {
      if (!without.has('auth')) v1.addHook('onRequest', authenticator.hook());
      if (!without.has('onsend')) {
        v1.addHook('onSend', (_request, reply, payload, done) => {
          reply.header('cache-control', 'no-store');
          done(null, payload);
        });
      }
      // The limiter keys by the authenticated caller.
      if (!without.has('ratelimit') && !without.has('auth')) {
        await registerRateLimit(v1, { redis: gateway, policies: config.policies, counters });
      }
      v1.get('/floor', async (_request, reply) => json(reply, await gateway.client.get('bench:session')));
    },
    { prefix: '/v1' },
  );
  // What registerMetrics' collectors read when the app is ready (they sample it per scrape only).
  floor.decorate('database', { pool: {} });
  floor.decorate('cacheCounters', undefined);
  floor.decorate('rateLimitCounters', counters);
  floor.decorate('guessingMonitor', { failedLookups: new Map() });
  floor.decorate('redis', gateway);
  if (!without.has('metrics')) await registerMetrics(floor, { port: undefined, host: config.host });
  return floor;
}

if (mode === 'F') {
  // Routes registered by floorApp().
} else if (mode === 'A') {
  const fixed = JSON.parse(body);
  // Serialised by Fastify per request, like the service's reply objects.
  app.get('/', async () => fixed);
} else if (mode === 'B') {
  const { Redis } = await import('ioredis');
  const redis = new Redis(process.env.REDIS_URL, { enableAutoPipelining: false, maxRetriesPerRequest: 0 });
  await redis.set('bench:session', body);
  app.get('/', async (_request, reply) => json(reply, await redis.get('bench:session')));
  app.addHook('onClose', async () => redis.disconnect());
} else if (mode === 'C') {
  const mariadb = await import('mariadb');
  const u = new URL(process.env.DATABASE_URL);
  const pool = mariadb.createPool({
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
    connectionLimit: 10,
    timezone: 'Z',
  });
  const namespace = process.env.NAMESPACE;
  const idHash = Buffer.from(process.env.ID_HASH_HEX, 'hex');
  const sql =
    'SELECT subject, data, version, created_at, last_seen_at, idle_expires_at, absolute_expires_at, metadata ' +
    'FROM sessions WHERE namespace = ? AND id_hash = ? LIMIT 1';
  app.get('/', async (_request, reply) => {
    const rows = await pool.query(sql, [namespace, idHash]);
    const r = rows[0];
    if (r === undefined) return reply.code(404).send({ code: 'session_not_found' });
    return {
      id: idHash.toString('base64url'),
      subject: r.subject,
      data: typeof r.data === 'string' ? JSON.parse(r.data) : r.data,
      version: Number(r.version),
      createdAt: new Date(r.created_at).toISOString(),
      lastSeenAt: new Date(r.last_seen_at).toISOString(),
      expiresAt: new Date(r.idle_expires_at).toISOString(),
      absoluteExpiresAt: new Date(r.absolute_expires_at).toISOString(),
      metadata: typeof r.metadata === 'string' ? JSON.parse(r.metadata) : r.metadata,
    };
  });
  app.addHook('onClose', async () => pool.end());
} else {
  process.stderr.write(`unknown BASELINE ${mode}\n`);
  process.exit(2);
}

process.on('SIGTERM', () => {
  app.close().finally(() => process.exit(0));
});
await app.listen({ host: '127.0.0.1', port });
process.stdout.write('listening\n');
