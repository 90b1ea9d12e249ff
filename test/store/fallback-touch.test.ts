/**
 * Breakers close replica by replica after a Redis outage. A touch one replica serves from
 * MariaDB (its breaker still open) that slides the stored expiry must reach Redis too, or
 * another replica already back on Redis goes on answering the entry it filled before, with the
 * older expiry: expiry moving backwards while Redis answers (docs/design.md §5.8, G4). Two cached
 * stores over one real MariaDB and one real Redis; replica X's breaker is held open.
 */
import t, { type Test } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { Database } from '../../src/db/database.js';
import { CachedSessionStore } from '../../src/store/cached-session-store.js';
import { MariaDbOutbox, MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { gatewayOptions, sharedRedisUrl, testGateway } from '../helpers/redis.js';
import { newRecord } from './session-store-contract.js';

const TH = 1; // write-behind threshold (s): a touch more than 1 s after the last stored one writes MariaDB

async function replicas(t: Test) {
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 4, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close().catch(() => undefined));
  const db = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: TH });
  const redisUrl = await sharedRedisUrl(t);
  const replica = async () => {
    // A breaker that stays open once tripped: the replica serves from MariaDB for the whole test.
    const gateway = await testGateway(t, gatewayOptions({ url: redisUrl, commandTimeoutMs: 2000, breakerFailureThreshold: 1, breakerCooldownMs: 600_000 }));
    const store = new CachedSessionStore(db, new MariaDbOutbox(database), gateway, { touchPersistThresholdSeconds: TH }, pino({ level: 'silent' }));
    return { gateway, store };
  };
  return { db, x: await replica(), y: await replica() };
}

t.test('a touch served by MariaDB on one replica is not undone by the entry another replica serves from Redis', async (t) => {
  const { db, x, y } = await replicas(t);
  const s = newRecord(new Date(), { idleTimeoutSeconds: 3600, idleExpiresAt: new Date(Date.now() + 3600_000) });
  await y.store.create(s);
  const filled = await y.store.get(s, new Date());
  if (filled === null) return t.fail('replica Y filled the entry');
  await sleep(TH * 1000 + 200);

  x.gateway.breaker.failure();
  t.equal(x.gateway.available(), false, "replica X's breaker is open: it serves from MariaDB");
  const fallbacksBefore = x.store.counters.fallbacks;
  const touched = await x.store.touch(s, new Date());
  if (touched === null) return t.fail('the touch on X answered the session');
  t.ok(x.store.counters.fallbacks > fallbacksBefore, 'served by MariaDB');
  t.ok(touched.idleExpiresAt > filled.idleExpiresAt, 'the touch slid the expiry');
  const stored = await db.get(s, new Date());
  t.equal(stored?.idleExpiresAt.getTime(), touched.idleExpiresAt.getTime(), 'and wrote it to MariaDB (past the threshold)');

  const read = await y.store.get(s, new Date());
  t.ok(
    read !== null && read.idleExpiresAt >= touched.idleExpiresAt,
    `a read on Y, back on Redis, answers no earlier than the touch X answered (${touched.idleExpiresAt.toISOString()}): ${read?.idleExpiresAt.toISOString()}`,
  );
});

t.test('a touch served by MariaDB that writes nothing owes Redis nothing', async (t) => {
  const { x, y } = await replicas(t);
  const s = newRecord(new Date(), { idleTimeoutSeconds: 3600, idleExpiresAt: new Date(Date.now() + 3600_000) });
  await y.store.create(s);
  await y.store.get(s, new Date());
  x.gateway.breaker.failure();
  const hitsBefore = y.store.counters.hits;
  const touched = await x.store.touch(s, new Date());
  t.ok(touched, 'touched within the threshold: MariaDB is not written');
  t.ok(await y.store.get(s, new Date()), 'Y reads the session');
  t.equal(y.store.counters.hits, hitsBefore + 1, "from its entry, which X's touch left in place");
});
