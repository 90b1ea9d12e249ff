/**
 * TLS and logins to MariaDB and Redis, against real servers that accept nothing else: a CA made
 * here (openssl), a MariaDB with require_secure_transport and a password user who must use TLS,
 * a Redis that speaks TLS only, asks for a client certificate and knows only ACL logins (the
 * service's user with the least privileges the README documents), and a TLS Redis Cluster with
 * the same user. The service runs as `node dist/server.js` with only environment variables.
 *
 * Checked: the schema migrates over TLS (drizzle-kit), the service works end to end, a server
 * certificate from another CA, a wrong password and a missing client certificate are each
 * refused cleanly (the dependency counts as down within the configured timeouts, no hang), and
 * no password or key material ever reaches the output.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as mariadb from 'mariadb';
import { Cluster, Redis } from 'ioredis';
import pino from 'pino';
import { mintApiKey } from '../../src/auth/api-keys.js';
import { RedisGateway, type RedisGatewayOptions } from '../../src/cache/redis-gateway.js';
import { startMariaDb } from '../../devstack/mariadb.js';
import { startRedis, type RedisProcess } from '../../devstack/redis.js';
import { accessOptions, startRedisCluster } from '../../devstack/redis-cluster.js';
import { createTlsDatabaseUser, makeTestPki, mariaDbTls, redisTls } from '../../devstack/tls.js';
import { gatewayOptions } from '../helpers/redis.js';
import { startService, waitFor, type ServiceProcess } from '../helpers/service-process.js';

const run = promisify(execFile);
// Seconds on a quiet machine (servers, five service processes, a cluster); minutes when many
// test files share two cores.
t.setTimeout(6 * 60_000);
const root = process.cwd();

/** What the service needs of Redis: its keys, reads, writes, scripts, INFO (ready check) and the cluster map. */
export const SERVICE_ACL = '~sd:* ~rl:* -@all +@read +@write +@scripting +@connection -@dangerous +info +time +cluster|slots +cluster|info';
const DB_PASSWORD = 'db-Pa55/word+tls';
const REDIS_PASSWORD = 'redis-Pa55:word@acl';

const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-tls-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const pki = await makeTestPki(path.join(dir, 'pki'));
const user = { name: 'sessiond', password: REDIS_PASSWORD, rules: SERVICE_ACL };
const [db, redis] = await Promise.all([
  startMariaDb({ baseDir: dir, tls: mariaDbTls(pki) }),
  startRedis({ baseDir: dir, tls: redisTls(pki, true), user }),
]);
t.teardown(() => Promise.allSettled([db.stop(), redis.stop()]));
const databaseUrl = await createTlsDatabaseUser(db, { database: 'sessiond', user: 'sessiond', password: DB_PASSWORD });
const drizzleKit = path.join(root, 'node_modules', '.bin', 'drizzle-kit');
const migrateEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATABASE_URL: databaseUrl, DATABASE_TLS_CA_FILE: pki.caFile };
const migrated = await run(drizzleKit, ['migrate'], { cwd: root, env: migrateEnv, timeout: 60_000 });
const key = mintApiKey('tls-tests', 'tls');
const keysFile = path.join(dir, 'keys.json');
writeFileSync(keysFile, JSON.stringify([key.entry]));

const redisUrl = redis.url; // rediss://sessiond:…@127.0.0.1:PORT
const tlsEnv = {
  DATABASE_URL: databaseUrl,
  DATABASE_TLS_CA_FILE: pki.caFile,
  REDIS_URL: redisUrl,
  REDIS_TLS_CA_FILE: pki.caFile,
  REDIS_TLS_CERT_FILE: pki.clientCertFile,
  REDIS_TLS_KEY_FILE: pki.clientKeyFile,
  API_KEYS_FILE: keysFile,
  // Every request and every debug line: the most a log could ever show.
  LOG_LEVEL: 'debug',
  LOG_REQUESTS: 'all',
  // Room for TLS handshakes on a loaded machine: the pool's first connection must finish within
  // the acquire timeout of the request that asked for it, and when it times out the connector
  // keeps reporting that timeout instead of a later refusal.
  DB_CONNECT_TIMEOUT_MS: '1500',
  DB_ACQUIRE_TIMEOUT_MS: '1500',
  REDIS_CONNECT_TIMEOUT_MS: '1500',
};

/** Every service started here, for the final look at what they printed. */
const services: ServiceProcess[] = [];
async function service(t: Test, env: Record<string, string>): Promise<ServiceProcess> {
  const s = await startService(t, { ...tlsEnv, ...env }, key.key);
  services.push(s);
  return s;
}

/** Root over MariaDB's Unix socket (TCP wants TLS). */
async function rootQuery<T>(sql: string): Promise<T[]> {
  const conn = await mariadb.createConnection({ socketPath: db.socketPath, user: 'root', password: '', database: 'sessiond' });
  try {
    return (await conn.query(sql)) as T[];
  } finally {
    await conn.end();
  }
}

/** An admin client of the TLS Redis (the default user's login the devstack keeps). */
function redisAdmin(server: RedisProcess): Redis {
  return new Redis({ host: '127.0.0.1', port: server.port, ...accessOptions(server.access), lazyConnect: true, maxRetriesPerRequest: 0 });
}

/** Waits (a loaded machine may take a while to connect) until /readyz says MariaDB and Redis are up. */
async function bothUp(t: Test, s: ServiceProcess): Promise<void> {
  const waited = await waitFor('MariaDB and Redis up', async () => {
    const ready = await s.client.readyz();
    return ready.body?.mariadb === 'up' && ready.body?.redis === 'up';
  });
  t.pass(`MariaDB and Redis are up (after ${Math.round(waited)} ms)`);
}

t.test('drizzle-kit migrate applies the schema over TLS with only DATABASE_URL and the CA file', async (t) => {
  t.match(migrated.stdout + migrated.stderr, /migrations applied successfully/);
  const [applied] = await rootQuery<{ n: bigint }>('SELECT COUNT(*) AS n FROM __drizzle_migrations');
  t.equal(Number(applied!.n), readdirSync(path.join(root, 'drizzle')).filter((f) => f.endsWith('.sql')).length, 'every migration applied');

  // Without the CA (plain TCP) the same user is refused: the server takes TLS only.
  const plain = await run(drizzleKit, ['migrate'], { cwd: root, env: { ...migrateEnv, DATABASE_TLS_CA_FILE: '' }, timeout: 60_000 }).then(
    (r) => r.stdout + r.stderr,
    (err: { stdout?: string; stderr?: string }) => `${err.stdout ?? ''}${err.stderr ?? ''}`,
  );
  t.notMatch(plain, /migrations applied successfully/, 'no migration over plain TCP');
  t.match(plain, /Access denied/, 'MariaDB refuses the user (REQUIRE SSL)');
  t.notOk(plain.includes(DB_PASSWORD), 'drizzle-kit does not print the password');
});

t.test('the service works end to end over TLS with passwords and a client certificate', async (t) => {
  const s = await service(t, {});
  await bothUp(t, s);

  const created = await s.client.create({ cart: ['sku-1'] }, { subject: 'user-1' });
  t.equal(created.status, 201, 'create commits in MariaDB');
  const token = created.body.token as string;
  t.equal((await s.client.read(token)).status, 200, 'read (a miss, then a fill)');
  const read = await s.client.read(token);
  t.equal(read.status, 200);
  t.same(read.body.data, { cart: ['sku-1'] });
  const touched = await s.client.touch(token);
  t.equal(touched.status, 200, 'touch');
  t.equal((await s.client.put(token, { cart: [] }, 1)).status, 200, 'PUT');

  const admin = redisAdmin(redis);
  t.teardown(() => admin.disconnect());
  await admin.connect();
  // The fill and the rate limiter's counters went through the service's own TLS connection.
  await admin.set('probe', '1'); // the admin login works; the service's user may not touch this key
  const read2 = await s.client.read(token);
  t.equal(read2.status, 200);
  const sessionKeys = await admin.keys('sd:*');
  t.ok(sessionKeys.length > 0, `the session is cached in Redis (${sessionKeys.join(', ')})`);
  t.ok((await admin.keys('rl:*')).length > 0, 'the rate limiter shares its counts through Redis');
  const [rows] = await rootQuery<{ n: bigint }>('SELECT COUNT(*) AS n FROM sessions');
  t.equal(Number(rows!.n), 1, 'the session row is in MariaDB');

  t.equal((await s.client.destroy(token)).status, 204, 'destroy');
  t.equal((await s.client.read(token)).status, 404, 'gone');

  // The ACL holds: the service's login cannot reach other keys or administrative commands.
  const asService = new Redis(redisUrl, { tls: { ca: readFileSync(pki.caFile), cert: readFileSync(pki.clientCertFile), key: readFileSync(pki.clientKeyFile) }, lazyConnect: true, maxRetriesPerRequest: 0 });
  t.teardown(() => asService.disconnect());
  await asService.connect();
  await t.rejects(asService.get('probe'), /NOPERM/, 'no key outside sd:* and rl:*');
  await t.rejects(asService.flushall(), /NOPERM/, 'no FLUSHALL');
});

/** A create and /readyz on a service whose dependency refuses it: a 503 (or a fallback) within the timeouts, no hang. */
async function refusedQuickly(t: Test, s: ServiceProcess, expect: { mariadb: 'up' | 'down'; redis: 'up' | 'down' }) {
  const created = await s.client.create({});
  if (expect.mariadb === 'down') {
    t.equal(created.status, 503, 'create answers 503 store_unavailable');
    t.equal(created.body?.code, 'store_unavailable');
  } else {
    t.equal(created.status, 201, 'create still works from MariaDB');
  }
  // The 1.5 s acquire timeout above, and room for a loaded machine: never a hang.
  t.ok(created.ms < 3_000, `answered in ${Math.round(created.ms)} ms`);
  const ready = await s.client.readyz();
  t.equal(ready.body?.mariadb, expect.mariadb, `readyz: mariadb ${expect.mariadb}`);
  t.equal(ready.body?.redis, expect.redis, `readyz: redis ${expect.redis}`);
  t.ok(ready.ms < 3_000, `readyz answered in ${Math.round(ready.ms)} ms`);
}

/**
 * Waits until a log line `msg` mentions `reason`: on a loaded machine a first attempt may time
 * out before the server could refuse it, and a changed reason is logged at once.
 */
async function loggedSoon(t: Test, s: ServiceProcess, msg: RegExp, reason: RegExp, what: string): Promise<void> {
  const lines = () => s.logLines(msg).map((l) => JSON.stringify(l)).join('\n');
  await waitFor(what, async () => reason.test(lines()), 10_000).catch(() => undefined);
  t.match(lines(), reason, what);
}

t.test('a server certificate from another CA is refused', async (t) => {
  const s = await service(t, { DATABASE_TLS_CA_FILE: pki.otherCaFile, REDIS_TLS_CA_FILE: pki.otherCaFile });
  await refusedQuickly(t, s, { mariadb: 'down', redis: 'down' });
  await loggedSoon(t, s, /^redis error$/, /certificate/i, 'the Redis failure is logged, and says it is about the certificate');
  await loggedSoon(t, s, /^mariadb connection failed$/, /certificate/i, 'so is the MariaDB failure');
});

t.test('a wrong password is refused by MariaDB and by Redis', async (t) => {
  const wrongDb = new URL(databaseUrl);
  wrongDb.password = 'not-the-password';
  const wrongRedis = new URL(redisUrl);
  wrongRedis.password = 'not-the-password';
  const s = await service(t, { DATABASE_URL: wrongDb.toString(), REDIS_URL: wrongRedis.toString() });
  await refusedQuickly(t, s, { mariadb: 'down', redis: 'down' });
  await loggedSoon(t, s, /^redis error$/, /WRONGPASS/, 'Redis says the login is wrong');
  await loggedSoon(t, s, /^mariadb connection failed$/, /Access denied/, 'so does MariaDB');
});

t.test('Redis refuses a client without its password, or without a client certificate', async (t) => {
  const tls = { ca: readFileSync(pki.caFile, 'utf8'), cert: readFileSync(pki.clientCertFile, 'utf8'), key: readFileSync(pki.clientKeyFile, 'utf8') };
  const anonymous = new URL(redisUrl);
  anonymous.username = '';
  anonymous.password = '';
  /** Connects a gateway for up to 3 s; its log lines come back (nothing is logged while all is well). */
  const attempt = async (options: Partial<RedisGatewayOptions>) => {
    const lines: string[] = [];
    const gateway = new RedisGateway(gatewayOptions(options), pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) }));
    const connected = await gateway.connected(3_000);
    gateway.close();
    return { connected, log: lines.join('') };
  };
  const noLogin = await attempt({ url: anonymous.toString(), tls });
  t.notOk(noLogin.connected, 'no login: refused');
  t.match(noLogin.log, /redis error/, 'and logged');
  t.match(noLogin.log, /NOAUTH/, '… as Redis asking for a login');
  const noCert = await attempt({ url: redisUrl, tls: { ca: tls.ca } });
  t.notOk(noCert.connected, 'no client certificate: refused');
  t.match(noCert.log, /"msg":"redis error"/, `and logged (${/"message":"([^"]*)"/.exec(noCert.log)?.[1]})`);
  const both = await attempt({ url: redisUrl, tls });
  t.ok(both.connected, 'the login and the certificate together: connected');
  t.equal(both.log, '', 'nothing logged');
});

t.test('a TLS Redis Cluster with an ACL user', async (t) => {
  const cluster = await startRedisCluster({ baseDir: dir, tls: redisTls(pki), user });
  t.teardown(() => cluster.stop());
  const s = await service(t, {
    REDIS_URL: '',
    REDIS_CLUSTER_NODES: cluster.nodesSpec,
    REDIS_USERNAME: user.name,
    REDIS_PASSWORD: user.password,
    // TLS follows from the CA file; no client certificate (these nodes ask for none).
    REDIS_TLS_CERT_FILE: '',
    REDIS_TLS_KEY_FILE: '',
  });
  await bothUp(t, s);
  const tokens: string[] = [];
  for (let i = 0; i < 6; i++) {
    const created = await s.client.create({ i });
    t.equal(created.status, 201);
    tokens.push(created.body.token as string);
  }
  for (const token of tokens) {
    t.equal((await s.client.read(token)).status, 200);
    t.equal((await s.client.read(token)).status, 200);
  }
  const admin = new Cluster(cluster.startupNodes, { redisOptions: accessOptions(cluster.nodes[0]!.access), lazyConnect: true });
  t.teardown(() => admin.disconnect());
  await admin.connect();
  const cached = (await Promise.all(admin.nodes('master').map((n) => n.keys('sd:*')))).map((keys) => keys.length);
  t.ok(cached.reduce((a, b) => a + b, 0) >= tokens.length, `sessions are cached on the cluster (${cached.join(' + ')} keys per node)`);
  for (const token of tokens) t.equal((await s.client.destroy(token)).status, 204);
  for (const token of tokens) t.equal((await s.client.read(token)).status, 404);
});

t.test('no password or key material reaches the output', async (t) => {
  t.ok(services.length >= 4, `${services.length} services looked at`);
  const pemBody = (file: string) => readFileSync(file, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('-----')).join('');
  const secrets: Record<string, string> = {
    'the MariaDB password': DB_PASSWORD,
    'the MariaDB password, URL-encoded': encodeURIComponent(DB_PASSWORD),
    'the Redis password': REDIS_PASSWORD,
    'the Redis password, URL-encoded': encodeURIComponent(REDIS_PASSWORD),
    'the API key': key.key,
  };
  for (const file of [pki.clientKeyFile, pki.serverKeyFile]) {
    const body = pemBody(file);
    for (let i = 0; i + 24 <= body.length; i += 24) secrets[`${path.basename(file)} bytes ${i}–${i + 24}`] = body.slice(i, i + 24);
  }
  const output = services.map((s) => s.output()).join('\n');
  t.ok(output.length > 1000, `${output.length} characters of output`);
  for (const [what, secret] of Object.entries(secrets)) {
    if (output.includes(secret)) t.fail(`${what} is in the output`);
  }
  t.notMatch(output, /PRIVATE KEY/, 'no PEM key');
  t.pass('none of them');
});
