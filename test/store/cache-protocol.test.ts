import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { Redis } from 'ioredis';
import { sessionKeys } from '../../src/cache/redis-entry.js';
import { Database } from '../../src/db/database.js';
import type { SessionKey } from '../../src/domain/session.js';
import { CachedSessionStore } from '../../src/store/cached-session-store.js';
import { MariaDbOutbox, MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { OutboxWorker } from '../../src/store/outbox-worker.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { gatewayOptions, privateRedis, sharedRedisUrl, testGateway } from '../helpers/redis.js';
import { newRecord } from './session-store-contract.js';

const log = pino({ level: 'silent' });
const TH = 60; // touch write-behind threshold, seconds

interface SetupOptions {
  redisUrl?: string;
  beforeInstall?: (key: SessionKey) => Promise<void>;
  afterCommit?: (keys: SessionKey[]) => Promise<void>;
}

async function setup(t: Test, opts: SetupOptions = {}) {
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 8, acquireTimeoutMs: 500, queryTimeoutMs: 2000, connectTimeoutMs: 500 });
  t.teardown(() => database.close().catch(() => undefined));
  const db = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: TH });
  const redisUrl = opts.redisUrl ?? (await sharedRedisUrl(t));
  const gateway = await testGateway(t, gatewayOptions({ url: redisUrl }));
  const outbox = new MariaDbOutbox(database);
  const cached = new CachedSessionStore(
    db,
    outbox,
    gateway,
    { touchPersistThresholdSeconds: TH, beforeInstall: opts.beforeInstall, afterCommit: opts.afterCommit },
    log,
  );
  const raw = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  raw.on('error', () => undefined); // tests kill this Redis on purpose
  t.teardown(() => raw.disconnect());
  return { database, db, outbox, gateway, cached, raw };
}

/** A gate a test opens by hand: a fill waits on it between its MariaDB read and its Redis install. */
function gate() {
  let open!: () => void;
  let reached!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const arrived = new Promise<void>((r) => (reached = r));
  return { open, arrived, wait: async () => (reached(), opened) };
}

t.test('warm reads are served by Redis alone: they still work with the MariaDB pool closed', async (t) => {
  const { database, cached } = await setup(t);
  const now = new Date();
  const s = newRecord(now);
  await cached.create(s);
  t.ok(await cached.get(s, now), 'the first read misses and fills');
  t.equal(cached.counters.misses, 1);
  await database.close();
  for (let i = 0; i < 5; i++) t.same((await cached.get(s, now))?.data, s.data, `warm read ${i} answered without MariaDB`);
  t.equal(cached.counters.hits, 5);
  const touched = await cached.touch(s, new Date(now.getTime() + 1000));
  t.ok(touched, 'a touch is served from Redis alone too');
  await t.rejects(cached.get({ namespace: s.namespace, idHash: randomBytes(32) }, now), { code: 'store_unavailable' }, 'a miss cannot be proven: 503');
  await t.rejects(cached.replaceData(s, {}, { any: true }, now), { code: 'store_unavailable' }, 'writes need MariaDB');
});

t.test('the resurrection race: a fill paused across a destroy never installs', async (t) => {
  const g = gate();
  let pauseNext = true;
  const { cached, raw } = await setup(t, { beforeInstall: async () => (pauseNext ? ((pauseNext = false), g.wait()) : undefined) });
  const now = new Date();
  const s = newRecord(now);
  await cached.create(s);
  const reader = cached.get(s, now); // misses, takes the lease, reads the live row, then waits
  await g.arrived;
  t.equal(await cached.destroy(s, now), true, 'destroy commits while the fill is paused');
  g.open();
  t.ok(await reader, 'the paused reader answers what it read before the destroy');
  t.equal(cached.counters.refusedFills, 1, 'but its install was refused');
  t.same(await raw.hgetall(sessionKeys(s).entry), { t: '1' }, 'Redis holds the tombstone, not the session');
  t.equal(await cached.get(s, now), null, 'and the session stays gone');
  t.equal(await cached.touch(s, now), null);
});

t.test('a fill paused across an update installs nothing stale', async (t) => {
  const g = gate();
  let pauseNext = true;
  const { cached } = await setup(t, { beforeInstall: async () => (pauseNext ? ((pauseNext = false), g.wait()) : undefined) });
  const now = new Date();
  const s = newRecord(now, { data: { v: 1 } });
  await cached.create(s);
  const reader = cached.get(s, now);
  await g.arrived;
  const written = await cached.replaceData(s, { v: 2 }, { any: false, versions: [1] }, now);
  t.equal(written.kind, 'ok');
  g.open();
  t.same((await reader)?.data, { v: 1 });
  t.equal(cached.counters.refusedFills, 1);
  t.same((await cached.get(s, now))?.data, { v: 2 }, 'the next read sees the update');
  t.same((await cached.get(s, now))?.data, { v: 2 }, 'also once warm');
});

t.test('a fill that read the old row cannot install it between a write\'s commit and its invalidation', async (t) => {
  const fill = gate();
  const commit = gate();
  let pauseFill = true;
  let pauseWrite = true;
  const { cached, db, raw } = await setup(t, {
    beforeInstall: async () => (pauseFill ? ((pauseFill = false), fill.wait()) : undefined),
    afterCommit: async () => (pauseWrite ? ((pauseWrite = false), commit.wait()) : undefined),
  });
  const now = new Date();
  const s = newRecord(now, { data: { v: 1 } });
  await cached.create(s);
  const reader = cached.get(s, now); // misses, takes the lease, reads version 1, then waits
  await fill.arrived;
  const writer = cached.replaceData(s, { v: 2 }, { any: false, versions: [1] }, now);
  await commit.arrived; // version 2 is committed; its invalidation has not been sent
  t.same((await db.get(s, now))?.data, { v: 2 }, 'MariaDB answers the new version');
  fill.open();
  t.same((await reader)?.data, { v: 1 }, 'the paused reader answers what it read before the write');
  t.equal(cached.counters.refusedFills, 1, 'but the write marker refused its install');
  const held = await raw.hgetall(sessionKeys(s).entry);
  t.same(Object.keys(held), ['w'], 'Redis holds the marker, not the old record');
  t.match(held.w, /^\d{13}$/, "the marker holds Redis's time when it was set (its fence ends 10 s after)");
  t.same((await cached.get(s, now))?.data, { v: 2 }, 'a read in that moment sees the new version, not the old');
  commit.open();
  t.equal((await writer).kind, 'ok');
  t.same(await raw.hgetall(sessionKeys(s).entry), {}, 'the invalidation after the commit removed the marker');
  t.same((await cached.get(s, now))?.data, { v: 2 }, 'and the cache fills with the new version');
  t.same((await cached.get(s, now))?.data, { v: 2 }, 'also once warm');
});

t.test('a write marker never replaces a tombstone', async (t) => {
  const { cached, gateway, raw } = await setup(t);
  const now = new Date();
  const s = newRecord(now);
  await cached.create(s);
  t.equal(await cached.destroy(s, now), true);
  await gateway.markWrite(s);
  t.same(await raw.hgetall(sessionKeys(s).entry), { t: '1' }, 'the tombstone stays');
  t.equal(await cached.get(s, now), null);
});

t.test('a destroy of a session an unreplayed write already revoked still tombstones its stale entry', async (t) => {
  const { cached, db, raw } = await setup(t);
  const now = new Date();
  const s = newRecord(now);
  const entry = sessionKeys(s).entry;
  await cached.create(s);
  // Warm: Redis holds the live entry (a loaded machine may time out an install; fill again).
  for (let i = 0; i < 20 && (await raw.hexists(entry, 'd')) === 0; i++) await cached.get(s, now);
  t.equal(await raw.hexists(entry, 'd'), 1, 'Redis holds the entry');
  // A rotate whose request timed out (503) commits late: MariaDB revoked the id, and its
  // tombstone waits in the outbox (here: was never sent).
  t.ok(await db.rotate(s, randomBytes(32), now));
  t.ok(await cached.get(s, now), 'the stale entry still answers until the outbox is replayed');
  t.equal(await cached.destroy(s, now), false, 'the destroy finds nothing live to revoke');
  t.same(await raw.hgetall(entry), { t: '1' }, 'yet plants the tombstone');
  t.equal(await cached.get(s, now), null, 'so after its 204 no read shows the session again');
});

t.test('rotate tombstones the old id in Redis', async (t) => {
  const { cached, raw } = await setup(t);
  const now = new Date();
  const s = newRecord(now);
  await cached.create(s);
  await cached.get(s, now); // warm
  const newHash = randomBytes(32);
  t.ok(await cached.rotate(s, newHash, now));
  t.same(await raw.hgetall(sessionKeys(s).entry), { t: '1' });
  t.equal(await cached.get(s, now), null);
  t.ok(await cached.get({ namespace: s.namespace, idHash: newHash }, now));
});

t.test('touch moves the expiry in Redis at once and writes MariaDB only past the threshold', async (t) => {
  const { cached, db } = await setup(t);
  const t0 = new Date(Math.floor(Date.now() / 1000) * 1000);
  const at = (s: number) => new Date(t0.getTime() + s * 1000);
  const s = newRecord(t0, { idleTimeoutSeconds: 1800, idleExpiresAt: at(1800), absoluteExpiresAt: at(3600) });
  await cached.create(s);
  await cached.get(s, t0); // warm
  const small = await cached.touch(s, at(TH / 2));
  t.same(small?.idleExpiresAt, at(TH / 2 + 1800), 'Redis slid the expiry at once');
  t.same((await db.get(s, at(TH / 2)))?.idleExpiresAt, at(1800), 'MariaDB was not written');
  t.equal(cached.counters.touchWrites, 0);
  const big = await cached.touch(s, at(TH + 10));
  t.same(big?.idleExpiresAt, at(TH + 10 + 1800));
  for (let i = 0; i < 50 && cached.counters.touchWrites === 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.same((await db.get(s, at(TH + 10)))?.idleExpiresAt, at(TH + 10 + 1800), 'past the threshold it was written behind');
  const capped = await cached.touch(s, at(1850));
  t.same(capped?.idleExpiresAt, at(3600), 'never past the absolute expiry');
  t.equal(await cached.touch(s, at(3600)), null, 'dead at the absolute expiry');
});

/** A session with a long idle timeout at whole seconds from `t0`, and `at(s)` for times in it. */
function longSession(): { s: ReturnType<typeof newRecord>; at: (seconds: number) => Date } {
  const t0 = new Date(Math.floor(Date.now() / 1000) * 1000);
  const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
  return { s: newRecord(t0, { idleTimeoutSeconds: 1800, idleExpiresAt: at(1800), absoluteExpiresAt: at(3600) }), at };
}

t.test('an outbox replay of an invalidation Redis already took keeps the touches MariaDB lacks', async (t) => {
  const { cached, db, outbox } = await setup(t);
  const { s, at } = longSession();
  await cached.create(s);
  t.equal((await cached.replaceData(s, { v: 2 }, { any: true }, at(0))).kind, 'ok');
  // The write's own row, paid, is deleted with others a few milliseconds later: send it now.
  await cached.flushOutbox();
  // The write's invalidation reached Redis but the delete of its outbox row did not reach
  // MariaDB (paused at that moment): the row is left for the outbox worker to replay.
  await db.transaction((tx) => tx.recordOutbox(s, 'invalidate'));
  t.equal((await cached.get(s, at(1)))?.version, 2, 'the cache fills with version 2');
  const touched = await cached.touch(s, at(TH / 2));
  t.same(touched?.idleExpiresAt, at(TH / 2 + 1800), 'the touch slid the expiry in Redis');
  t.same((await db.get(s, at(TH / 2)))?.idleExpiresAt, at(1800), 'below the threshold: not written to MariaDB');
  const worker = new OutboxWorker(outbox, cached, { intervalMs: 50, idleMaxIntervalMs: 50, minAgeMs: 0, batchSize: 10 }, log);
  t.equal(await worker.replay(), 1, 'the worker replays the leftover row');
  const read = await cached.get(s, at(TH / 2 + 1));
  t.same(read?.idleExpiresAt, at(TH / 2 + 1800), 'a read after the replay shows the touched expiry, not MariaDB\'s older one');
  t.same((await cached.get(s, at(TH / 2 + 1)))?.idleExpiresAt, at(TH / 2 + 1800), 'also once warm');
  t.same((await cached.touch(s, at(TH / 2 + 1)))?.idleExpiresAt, at(TH / 2 + 1 + 1800), 'and touch slides on from there');
});

t.test('a data write keeps the touches MariaDB lacks: the next read shows the touched expiry', async (t) => {
  const { cached, db, raw } = await setup(t);
  const { s, at } = longSession();
  await cached.create(s);
  await cached.get(s, at(0)); // warm
  t.same((await cached.touch(s, at(TH / 2)))?.idleExpiresAt, at(TH / 2 + 1800));
  t.equal((await cached.replaceData(s, { v: 2 }, { any: true }, at(TH / 2))).kind, 'ok');
  t.same(await raw.hgetall(sessionKeys(s).entry), { ie: String(at(TH / 2 + 1800).getTime()), ls: String(at(TH / 2).getTime()) }, 'the invalidation left the touch register only');
  const read = await cached.get(s, at(TH / 2 + 1));
  t.same(read?.data, { v: 2 }, 'the read sees the write');
  t.same(read?.idleExpiresAt, at(TH / 2 + 1800), 'and the touched expiry');
  t.same((await db.get(s, at(TH / 2 + 1)))?.idleExpiresAt, at(1800), 'which MariaDB still lacks (below the threshold)');
});

t.test('a fill that read MariaDB before a touch wrote it through cannot install the older expiry', async (t) => {
  const g = gate();
  let pauseNext = true;
  const { cached, db } = await setup(t, { beforeInstall: async () => (pauseNext ? ((pauseNext = false), g.wait()) : undefined) });
  const { s, at } = longSession();
  await cached.create(s);
  const reader = cached.get(s, at(0)); // misses, takes the lease, reads the row, then waits
  await g.arrived;
  // Past the threshold: the touch misses too, finds the lease taken and slides MariaDB itself.
  const touched = await cached.touch(s, at(TH + 10));
  t.same(touched?.idleExpiresAt, at(TH + 10 + 1800), 'the touch answers the slid expiry');
  t.same((await db.get(s, at(TH + 10)))?.idleExpiresAt, at(TH + 10 + 1800), 'written to MariaDB');
  g.open();
  t.ok(await reader, 'the paused reader answers');
  t.same((await cached.get(s, at(TH + 11)))?.idleExpiresAt, at(TH + 10 + 1800), 'the entry it installed does not show the older expiry');
});

t.test('a fill whose install Redis does not answer is a counted fallback, its expiry within the write-behind bound', async (t) => {
  const redis = await privateRedis(t);
  let stallNext = false;
  const { cached, db, gateway } = await setup(t, {
    redisUrl: redis.url,
    // Redis stops between the fill's MariaDB read and its install: the install times out.
    beforeInstall: async () => {
      if (stallNext) {
        stallNext = false;
        redis.kill('SIGSTOP');
      }
    },
  });
  t.teardown(() => redis.kill('SIGCONT'));
  const { s, at } = longSession();
  await cached.create(s);
  await cached.get(s, at(0)); // warm
  const touched = await cached.touch(s, at(TH / 2));
  t.same(touched?.idleExpiresAt, at(TH / 2 + 1800), 'Redis took the touch');
  t.equal((await cached.replaceData(s, { v: 2 }, { any: true }, at(TH / 2))).kind, 'ok', 'a write drops the entry (the touch register stays)');
  const before = cached.counters.fallbacks;
  stallNext = true;
  const read = await cached.get(s, at(TH / 2 + 1));
  t.same(read?.data, { v: 2 }, 'the read is still answered, by MariaDB');
  t.same(read?.idleExpiresAt, (await db.get(s, at(TH / 2 + 1)))?.idleExpiresAt, "with MariaDB's expiry, which lacks the touch");
  const lagMs = touched!.idleExpiresAt.getTime() - read!.idleExpiresAt.getTime();
  t.ok(lagMs > 0 && lagMs <= TH * 1000, `behind the acknowledged touch by ${lagMs / 1000} s: within the ${TH} s bound`);
  t.equal(cached.counters.fallbacks, before + 1, 'and counted as a call served from MariaDB because Redis was unavailable');
  redis.kill('SIGCONT');
  for (let i = 0; i < 100 && !gateway.available(); i++) await new Promise((r) => setTimeout(r, 20));
  t.same((await cached.get(s, at(TH / 2 + 2)))?.idleExpiresAt, at(TH / 2 + 1800), 'once Redis answers, reads show the touched expiry again');
});

t.test('a touch lost with Redis costs at most the write-behind threshold', async (t) => {
  const redis = await privateRedis(t);
  const { cached } = await setup(t, { redisUrl: redis.url });
  const t0 = new Date(Math.floor(Date.now() / 1000) * 1000);
  const at = (s: number) => new Date(t0.getTime() + s * 1000);
  const s = newRecord(t0, { idleTimeoutSeconds: 600, idleExpiresAt: at(600), absoluteExpiresAt: at(3600) });
  await cached.create(s);
  await cached.get(s, t0);
  let last = t0;
  for (let i = 1; i <= 10; i++) {
    last = at(i * 7);
    await cached.touch(s, last); // 7 s apart: below the threshold each time
  }
  await new Promise((r) => setTimeout(r, 200)); // let any write-behind land
  redis.kill('SIGKILL');
  const fromDb = await cached.get(s, last);
  t.ok(fromDb, 'still served, by MariaDB');
  const trueExpiry = last.getTime() + 600_000;
  const lostMs = trueExpiry - fromDb!.idleExpiresAt.getTime();
  t.ok(lostMs >= 0 && lostMs <= TH * 1000, `the session expires ${lostMs / 1000} s early: within the ${TH} s bound`);
  t.ok(fromDb!.idleExpiresAt <= s.absoluteExpiresAt, 'never past the absolute expiry');
  t.ok(cached.counters.fallbacks >= 1);
});

t.test('Redis killed: every call succeeds from MariaDB, the outbox keeps the invalidations, recovery replays them', async (t) => {
  const redis = await privateRedis(t);
  const { cached, db, raw: _raw, outbox } = await setup(t, { redisUrl: redis.url });
  const now = new Date();
  const a = newRecord(now, { data: { n: 1 } });
  const b = newRecord(now);
  await cached.create(a);
  await cached.create(b);
  await cached.get(a, now);
  await cached.get(b, now); // both warm
  redis.kill('SIGKILL');
  const started = Date.now();
  t.equal((await cached.replaceData(a, { n: 2 }, { any: false, versions: [1] }, now)).kind, 'ok');
  t.equal(await cached.destroy(b, now), true);
  t.same((await cached.get(a, now))?.data, { n: 2 });
  t.equal(await cached.get(b, now), null);
  t.ok(await cached.touch(a, now));
  const c = newRecord(now);
  await cached.create(c);
  t.ok(await cached.get(c, now));
  t.ok(Date.now() - started < 2000, `no call waited on the dead Redis (${Date.now() - started} ms in all)`);
  t.equal(await outbox.size(), 2, 'two invalidations wait in the outbox');

  // Redis comes back empty (no persistence); the worker replays and empties the outbox.
  await redis.restart();
  const worker = new OutboxWorker(outbox, cached, { intervalMs: 50, idleMaxIntervalMs: 50, minAgeMs: 0, batchSize: 10 }, log);
  for (let i = 0; i < 100 && (await outbox.size()) > 0; i++) {
    await worker.replay().catch(() => 0);
    await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(await outbox.size(), 0, 'outbox drained after recovery');
  t.ok(cached.counters.outboxReplayed >= 2);
  t.equal(await cached.get(b, now), null, 'the destroyed session stays gone');
});

t.test('Redis paused across a destroy: the stale entry is fenced and replaced by the tombstone on recovery', async (t) => {
  const redis = await privateRedis(t);
  const { cached, db, gateway, raw, outbox } = await setup(t, { redisUrl: redis.url });
  const worker = new OutboxWorker(outbox, cached, { intervalMs: 50, idleMaxIntervalMs: 50, minAgeMs: 0, batchSize: 10 }, log);
  gateway.onRecover = async () => {
    await worker.replay(true);
  };
  const now = new Date();
  const s = newRecord(now);
  await cached.create(s);
  await cached.get(s, now); // warm: Redis holds the live entry
  redis.kill('SIGSTOP');
  const started = Date.now();
  t.equal(await cached.destroy(s, now), true, 'destroy succeeds with Redis paused');
  t.ok(Date.now() - started < 1000, `within the Redis timeouts (${Date.now() - started} ms)`);
  t.equal(await outbox.size(), 1, 'the tombstone waits in the outbox');
  t.equal(await cached.get(s, now), null, 'reads fall back to MariaDB: gone');
  redis.kill('SIGCONT');
  // Until the breaker's recovery probe has replayed the outbox, reads stay on MariaDB.
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    t.equal(await cached.get(s, now), null);
    if ((await outbox.size()) === 0 && gateway.breaker.state === 'closed') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(gateway.breaker.state, 'closed', 'Redis is trusted again');
  t.same(await raw.hgetall(sessionKeys(s).entry), { t: '1' }, 'the stale entry was replaced by the tombstone');
  t.equal(await cached.get(s, now), null, 'and the session never came back');
});

t.test('concurrent PUTs with the same version through the cache: exactly one wins, and the cache shows the winner', async (t) => {
  const { cached } = await setup(t);
  const now = new Date();
  const s = newRecord(now);
  await cached.create(s);
  await cached.get(s, now);
  const results = await Promise.all(Array.from({ length: 10 }, (_, i) => cached.replaceData(s, { w: i }, { any: false, versions: [1] }, now)));
  const winners = results.filter((r) => r.kind === 'ok');
  t.equal(winners.length, 1);
  const final = await cached.get(s, now);
  t.same(final?.data, winners[0]!.kind === 'ok' ? winners[0]!.session.data : undefined);
  t.same((await cached.get(s, now))?.data, final?.data, 'warm read agrees');
});
