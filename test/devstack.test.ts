// Proves the test harness itself: throwaway MariaDB and Redis start, answer, survive
// SIGSTOP/SIGCONT and SIGKILL + restart() on the same port, and stop cleanly.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as mariadb from 'mariadb';
import { Redis } from 'ioredis';
import { createDatabase, startMariaDb } from '../devstack/mariadb.js';
import { pingRedis, startRedis } from '../devstack/redis.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function query<T>(url: string, sql: string, values?: unknown[]): Promise<T> {
  const u = new URL(url);
  const conn = await mariadb.createConnection({
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1) || undefined,
    connectTimeout: 5_000,
    socketTimeout: 10_000,
  });
  try {
    return (await conn.query(sql, values)) as T;
  } finally {
    await conn.end();
  }
}

t.test('throwaway MariaDB and Redis', async (t) => {
  const base = await mkdtemp(path.join(os.tmpdir(), 'sessiond-devstack-test-'));
  const started = Date.now();
  const dbStart = startMariaDb({ baseDir: base });
  const redisStart = startRedis({ baseDir: base });
  t.teardown(async () => {
    await Promise.allSettled([dbStart.then((s) => s.stop()), redisStart.then((s) => s.stop())]);
    await rm(base, { recursive: true, force: true });
  });
  const [db, redis] = await Promise.all([dbStart, redisStart]);
  t.comment(`MariaDB (install-db + start) and Redis ready in ${Date.now() - started} ms`);

  t.match(db.rootUrl, /^mysql:\/\/root@127\.0\.0\.1:\d+\/$/);
  t.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
  t.ok(db.dataDir.startsWith(base) && redis.dataDir.startsWith(base), 'data lives under baseDir');
  t.not(db.port, 3306, 'not the system MariaDB');
  t.not(redis.port, 6379, 'not the system Redis');

  const [row] = await query<Array<{ one: number; tz: string; cs: string }>>(
    db.rootUrl,
    'SELECT 1 AS one, @@time_zone AS tz, @@character_set_server AS cs',
  );
  t.same(row, { one: 1, tz: '+00:00', cs: 'utf8mb4' }, 'SELECT 1 as root, UTC, utf8mb4');

  const dbUrl = await createDatabase(db.rootUrl, 'devstack_test');
  t.equal(dbUrl, `mysql://root@127.0.0.1:${db.port}/devstack_test`);
  t.equal(await createDatabase(db.rootUrl, 'devstack_test'), dbUrl, 'createDatabase is idempotent');
  await t.rejects(createDatabase(db.rootUrl, 'bad`name'), /invalid database name/);
  await query(dbUrl, 'CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB');
  await query(dbUrl, 'INSERT INTO t VALUES (?, ?)', [1, 'committed']);

  const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2_000 });
  t.teardown(() => client.disconnect());
  await client.connect();
  t.equal(await client.ping(), 'PONG', 'ioredis PING');
  await client.set('k', 'v');
  client.disconnect();

  await t.test('SIGSTOP / SIGCONT Redis', async (t) => {
    redis.kill('SIGSTOP');
    t.equal(await pingRedis(redis.port, 300), false, 'a stopped Redis does not answer');
    t.ok(redis.running, 'still running while stopped');
    redis.kill('SIGCONT');
    t.equal(await pingRedis(redis.port, 2_000), true, 'answers again after SIGCONT');
  });

  await t.test('SIGKILL + restart MariaDB keeps port and committed data', async (t) => {
    const { pid, port } = db;
    db.kill('SIGKILL');
    const started = Date.now();
    await db.restart();
    t.comment(`MariaDB restart after SIGKILL (crash recovery): ${Date.now() - started} ms`);
    t.equal(db.port, port, 'same port');
    t.not(db.pid, pid, 'new process');
    t.notOk(isAlive(pid), 'old process gone');
    t.same(await query(dbUrl, 'SELECT id, v FROM t'), [{ id: 1, v: 'committed' }], 'committed row survived');
  });

  await t.test('SIGKILL + restart Redis keeps port, loses the cache', async (t) => {
    const { pid, port } = redis;
    redis.kill('SIGKILL');
    await redis.restart();
    t.equal(redis.port, port, 'same port');
    t.not(redis.pid, pid, 'new process');
    const again = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2_000 });
    try {
      await again.connect();
      t.equal(await again.ping(), 'PONG');
      t.equal(await again.get('k'), null, 'no persistence: the key is gone');
    } finally {
      again.disconnect();
    }
  });

  await t.test('restart() of a SIGSTOPped server', async (t) => {
    const { pid } = redis;
    redis.kill('SIGSTOP');
    await redis.restart();
    t.not(redis.pid, pid);
    t.equal(await pingRedis(redis.port, 2_000), true);
  });

  await t.test('stop() is graceful and idempotent', async (t) => {
    const pids = [db.pid, redis.pid];
    db.kill('SIGSTOP'); // stop() must also end a stopped server
    await Promise.all([db.stop(), redis.stop()]);
    await Promise.all([db.stop(), redis.stop()]);
    t.notOk(db.running || redis.running, 'not running');
    for (const pid of pids) t.notOk(isAlive(pid), `pid ${pid} gone`);
    t.equal(await pingRedis(redis.port, 300), false, 'Redis port closed');
  });
});
