import t from 'tap';
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
