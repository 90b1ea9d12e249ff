import t from 'tap';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { Redis } from 'ioredis';
import { buildApp } from '../../src/app.js';
import { Database } from '../../src/db/database.js';
import { CachedSessionStore } from '../../src/store/cached-session-store.js';
import { MariaDbOutbox, MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { OutboxWorker } from '../../src/store/outbox-worker.js';
import { testConfig } from '../helpers/app.js';
import { migratedDatabase, query } from '../helpers/mariadb.js';
import { gatewayOptions, privateRedis, sharedRedisUrl, testGateway } from '../helpers/redis.js';
import { newRecord } from './session-store-contract.js';

// The outbox worker reads the outbox only when there may be work: an idle replica backs off,
// and a write of its own that leaves a row wakes it.

t.test("an idle replica reads MariaDB a few times in 6 s, not several times a second (counted by MariaDB)", async (t) => {
  const url = await migratedDatabase(t);
  // A user of this test's own, so that MariaDB's per-user statistics count this app's statements only.
  const user = `idle_${randomBytes(4).toString('hex')}`;
  const database = new URL(url).pathname.slice(1);
  const root = new URL(url);
  root.pathname = '/';
  await query(root.toString(), `CREATE USER '${user}'@'%' IDENTIFIED BY 'idle-secret'`);
  await query(root.toString(), `GRANT SELECT, INSERT, UPDATE, DELETE ON \`${database}\`.* TO '${user}'@'%'`);
  t.teardown(() => query(root.toString(), `DROP USER '${user}'@'%'`));
  await query(root.toString(), 'SET GLOBAL userstat = 1');
  const appUrl = new URL(url);
  appUrl.username = user;
  appUrl.password = 'idle-secret';

  const config = testConfig(appUrl.toString(), {}, { REDIS_URL: await sharedRedisUrl(t), OUTBOX_REPLAY_INTERVAL_MS: '250' });
  const app = await buildApp(config, { logger: false });
  t.teardown(() => app.close());
  await app.ready();
  const selects = async () => {
    const rows = await query<{ n: number }>(root.toString(), 'SELECT SELECT_COMMANDS AS n FROM information_schema.USER_STATISTICS WHERE USER = ?', [user]);
    return Number(rows[0]?.n ?? 0);
  };
  await sleep(3000); // the first, closely spaced reads after start
  const before = await selects();
  await sleep(6000);
  const idle = (await selects()) - before;
  t.comment(`${idle} SELECTs in 6 s of an idle replica (every 250 ms would be 24)`);
  t.ok(idle <= 3, `an idle replica read MariaDB ${idle} times in 6 s`);
});

t.test('a write that leaves a row wakes its own replica: the row is paid long before the idle wait ends', async (t) => {
  const redis = await privateRedis(t);
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 4, acquireTimeoutMs: 1000, queryTimeoutMs: 2000, connectTimeoutMs: 1000 });
  t.teardown(() => database.close());
  const log = pino({ level: 'silent' });
  // A breaker that stays closed: the replay may use Redis again as soon as it answers.
  const gateway = await testGateway(t, gatewayOptions({ url: redis.url, breakerFailureThreshold: 1000 }));
  const outbox = new MariaDbOutbox(database);
  const cached = new CachedSessionStore(new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 }), outbox, gateway, { touchPersistThresholdSeconds: 60 }, log);
  const worker = new OutboxWorker(outbox, cached, { intervalMs: 50, idleMaxIntervalMs: 60_000, minAgeMs: 1000, batchSize: 10 }, log);
  cached.onOutboxRowLeft = (afterMs) => worker.wake(afterMs);
  t.teardown(() => worker.stop());
  const s = newRecord(new Date());
  await cached.create(s);
  await cached.get(s, new Date());

  worker.start();
  // Idle reads at 0.05, 0.15, 0.35, 0.75, 1.55, 3.15, 6.35 s, then the next one 12.8 s later.
  await sleep(7000);
  const idlePolls = worker.polls;
  t.ok(idlePolls <= 8, `${idlePolls} reads in 7 idle seconds`);

  // Redis holds its writes for a moment: the write's invalidation times out after its commit.
  const raw = new Redis(redis.url);
  t.teardown(() => raw.disconnect());
  await raw.call('CLIENT', 'PAUSE', '800', 'WRITE');
  const written = await cached.replaceData(s, { v: 2 }, { any: true }, new Date());
  t.equal(written.kind, 'ok', 'the write committed');
  const left = Date.now();
  let rows = await outbox.size();
  // The idle wait would end ~12 s from here; a woken worker pays the row once Redis answers.
  while (rows > 0 && Date.now() - left < 10_000) {
    await sleep(50);
    rows = await outbox.size();
  }
  t.equal(rows, 0, 'the left row was replayed (woken, not at the next idle read)');
  t.comment(`paid ${Date.now() - left} ms after the write returned`);
  t.equal((await cached.get(s, new Date()))?.data.v, 2, 'and the cache shows the write');
});
