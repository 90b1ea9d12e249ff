import t from 'tap';
import { performance } from 'node:perf_hooks';
import mysql from 'mysql2/promise';
import pino from 'pino';
import { Database } from '../../src/db/database.js';
import { MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { Sweeper } from '../../src/sweeper/sweeper.js';
import { migratedDatabase, query } from '../helpers/mariadb.js';
import { newRecord } from '../store/session-store-contract.js';
import { lagMeter } from '../helpers/lag.js';

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
  // 60 rows in batches of 10 at 100 rows/s: batch k (from 0) may not start before k × 100 ms, so
  // the sixth may not start before 0.5 s. Each batch's start and end is recorded, so the pacing is
  // checked batch by batch: no batch starts early (the budget), and none waits longer than its
  // budget asks plus the scheduling lag measured meanwhile in this process (whose timers the
  // pauses are), so a slow machine stretches the bound fairly and an over-long pause still fails.
  const batches: Array<{ start: number; end: number }> = [];
  const timed = Object.create(stores[0]!) as MariaDbSessionStore;
  timed.sweepBatch = async (before, size) => {
    const b = { start: performance.now(), end: 0 };
    batches.push(b);
    const n = await stores[0]!.sweepBatch(before, size);
    b.end = performance.now();
    return n;
  };
  const lag = lagMeter();
  t.teardown(() => lag.stop());
  const paced = new Sweeper(databases[0]!, timed, { intervalSeconds: 1, batchSize: 10, graceSeconds: 60, maxRowsPerSecond: 100 }, log, () => now);
  let started = performance.now();
  t.equal(await paced.runOnce(), 60);
  const took = performance.now() - started;
  lag.stop();
  t.ok(took >= 480, `60 rows at 100 rows/s took ${Math.round(took)} ms (≥ 0.5 s)`);
  t.equal(batches.length, 7, 'six full batches, then an empty one ends the round');
  const first = batches[0]!.start;
  const early = batches.filter((b, k) => b.start - first < k * 100 - 20).map((b, k) => `batch ${k} at ${Math.round(b.start - first)} ms`);
  t.same(early, [], 'no batch started before its budget allowed');
  const slack = lag.maxMs + 25;
  const late = batches
    .map((b, k) => ({ k, waited: k === 0 ? 0 : b.start - Math.max(first + k * 100, batches[k - 1]!.end) }))
    .filter((w) => w.waited > slack)
    .map((w) => `batch ${w.k} waited ${Math.round(w.waited)} ms past its budget`);
  t.same(late, [], `no pause longer than the budget asks (+ ${Math.round(slack)} ms: measured lag ${Math.round(lag.maxMs)} ms + 25 ms)`);

  for (let i = 0; i < 30; i++) await stores[0]!.create(newRecord(ago(7200), { idleExpiresAt: ago(3600), absoluteExpiresAt: ago(10) }));
  // At 1 row/s, the pause after the first batch of 10 is ~10 s: stop() must end the round before it.
  const slow = new Sweeper(databases[0]!, stores[0]!, { intervalSeconds: 1, batchSize: 10, graceSeconds: 60, maxRowsPerSecond: 1 }, log, () => now);
  started = performance.now();
  const round = slow.runOnce();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const stopping = performance.now();
  await slow.stop();
  t.equal(await round, 10, 'one batch, then the 10 s pause was cut short by stop()');
  const ended = performance.now();
  t.ok(ended - started < 10_000, `stop() did not wait out the 10 s pause (the round ended ${Math.round(ended - stopping)} ms after stop())`);
  t.equal(await count(), 10 + 20, 'the rest is left for the next round');
});
