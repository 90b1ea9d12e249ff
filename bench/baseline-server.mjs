/**
 * Baseline servers for `npm run bench`: the same Fastify package as the service, one route,
 * the same response size as a session read. Started as a child process by bench/bench.mjs:
 *
 *   BASELINE=A  GET /  answers a fixed session-sized JSON (the framework ceiling)
 *   BASELINE=B  GET /  one Redis GET of a session-sized value (the cache ceiling; ioredis
 *                      without auto-pipelining, as the service uses it)
 *   BASELINE=C  GET /  one MariaDB primary-key SELECT of a session row (no cache; the mariadb
 *                      driver pool, as the service uses it), answered as the session view
 *
 * Env: PORT, BODY (the JSON to answer / store), REDIS_URL (B), DATABASE_URL, NAMESPACE, ID_HASH_HEX (C).
 * Prints "listening" on stdout when ready.
 */
import Fastify from 'fastify';

const mode = process.env.BASELINE;
const port = Number(process.env.PORT);
const body = process.env.BODY ?? '{}';
const app = Fastify({ logger: false });
const json = (reply, text) => reply.header('content-type', 'application/json; charset=utf-8').send(text);

if (mode === 'A') {
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
