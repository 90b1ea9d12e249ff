import t from 'tap';
import { performance } from 'node:perf_hooks';
import mysql from 'mysql2/promise';
import pino from 'pino';
import { Database } from '../../src/db/database.js';
import { MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { Sweeper } from '../../src/sweeper/sweeper.js';
import { migratedDatabase, query } from '../helpers/mariadb.js';
import { newRecord } from '../store/session-store-contract.js';

const url = await migratedDatabase(t);
const log = pino({ level: 'silent' });
const databases = [0, 1].map(() => new Database({ url, poolSize: 3, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 }));
t.teardown(() => Promise.all(databases.map((d) => d.close())));
const stores = databases.map((d) => new MariaDbSessionStore(d, { touchPersistThresholdSeconds: 60 }));
const now = new Date();
const ago = (s: number) => new Date(now.getTime() - s * 1000);
const sweeper = (i: number) => new Sweeper(databases[i]!, stores[i]!, { intervalSeconds: 1, batchSize: 7, graceSeconds: 60 }, log, () => now);
const count = async () => Number((await query<{ n: number }>(url, 'SELECT COUNT(*) AS n FROM sessions'))[0]!.n);

t.test('two replicas: the one without the lock skips the round; rows within the grace survive', async (t) => {
  const store = stores[0]!;
  // 30 expired long ago, 5 expired within the grace period, 5 live.
  for (let i = 0; i < 30; i++) await store.create(newRecord(ago(7200), { idleExpiresAt: ago(3600), absoluteExpiresAt: ago(10) }));
  for (let i = 0; i < 5; i++) await store.create(newRecord(ago(7200), { idleExpiresAt: ago(30) }));
  for (let i = 0; i < 5; i++) await store.create(newRecord(now));
  t.equal(await count(), 40);

  // Another replica holds the sweeper lock on its own connection.
  const holder = await mysql.createConnection({ uri: url });
  t.teardown(() => holder.end());
  await holder.query("SELECT GET_LOCK('sessiond.sweeper', 0)");
  t.equal(await sweeper(1).runOnce(), null, 'skipped while another replica sweeps');
  t.equal(await count(), 40, 'and deleted nothing');
  await holder.query("SELECT RELEASE_LOCK('sessiond.sweeper')");

  const s = sweeper(0);
  t.equal(await s.runOnce(), 30, 'deleted every expired row, in batches of 7');
  t.equal(s.deletedTotal, 30);
  t.equal(await count(), 10, 'rows inside the write-behind grace and live rows remain');
});

t.test('replicas sweeping at the same moment never both run, and never fail', async (t) => {
  for (let i = 0; i < 20; i++) await stores[0]!.create(newRecord(ago(7200), { idleExpiresAt: ago(3600), absoluteExpiresAt: ago(10) }));
  const results = await Promise.all([sweeper(0).runOnce(), sweeper(1).runOnce()]);
  const total = results.reduce<number>((sum, r) => sum + (r ?? 0), 0);
  t.equal(total, 20, 'every row deleted exactly once');
  t.equal(await count(), 10);
});

t.test('a deletion budget spaces the batches; stop() ends a paced round at once', async (t) => {
  for (let i = 0; i < 60; i++) await stores[0]!.create(newRecord(ago(7200), { idleExpiresAt: ago(3600), absoluteExpiresAt: ago(10) }));
  // 60 rows in batches of 10 at 100 rows/s: the sixth batch may not start before 0.5 s.
  const paced = new Sweeper(databases[0]!, stores[0]!, { intervalSeconds: 1, batchSize: 10, graceSeconds: 60, maxRowsPerSecond: 100 }, log, () => now);
  let started = performance.now();
  t.equal(await paced.runOnce(), 60);
  const took = performance.now() - started;
  t.ok(took >= 480, `60 rows at 100 rows/s took ${Math.round(took)} ms (≥ 0.5 s)`);
  t.ok(took < 5_000, 'and not much longer');

  for (let i = 0; i < 30; i++) await stores[0]!.create(newRecord(ago(7200), { idleExpiresAt: ago(3600), absoluteExpiresAt: ago(10) }));
  const slow = new Sweeper(databases[0]!, stores[0]!, { intervalSeconds: 1, batchSize: 10, graceSeconds: 60, maxRowsPerSecond: 1 }, log, () => now);
  started = performance.now();
  const round = slow.runOnce();
  await new Promise((resolve) => setTimeout(resolve, 300));
  await slow.stop();
  t.equal(await round, 10, 'one batch, then the 10 s pause was cut short by stop()');
  t.ok(performance.now() - started < 3_000, 'stop() did not wait out the pause');
  t.equal(await count(), 10 + 20, 'the rest is left for the next round');
});
