/**
 * The touch register outlives the cache TTL while it leads MariaDB (docs/design.md §5.6). With a
 * 1 s cache TTL: a session touched all along past the TTL, or touched and then written (the
 * invalidation carries the register), is read back after the TTL with an idle expiry no earlier
 * than a touch already answered, though MariaDB holds the older one (the write-behind threshold
 * is not reached). Real Redis and MariaDB.
 */
import t, { type Test } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { Redis } from 'ioredis';
import { sessionKeys } from '../../src/cache/redis-entry.js';
import { WRITE_MARK_TTL_MS } from '../../src/cache/redis-scripts.js';
import { Database } from '../../src/db/database.js';
import { CachedSessionStore } from '../../src/store/cached-session-store.js';
import { MariaDbOutbox, MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { gatewayOptions, sharedRedisUrl, testGateway } from '../helpers/redis.js';
import { newRecord } from './session-store-contract.js';

const TH = 600; // write-behind threshold (s): never reached here, so MariaDB keeps the install's expiry
const CACHE_TTL_MS = 1000;

async function setup(t: Test) {
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 4, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close().catch(() => undefined));
  const db = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: TH });
  const redisUrl = await sharedRedisUrl(t);
  const gateway = await testGateway(t, gatewayOptions({ url: redisUrl, commandTimeoutMs: 2000, cacheTtlMs: CACHE_TTL_MS, leaseMs: 500 }));
  const cached = new CachedSessionStore(db, new MariaDbOutbox(database), gateway, { touchPersistThresholdSeconds: TH }, pino({ level: 'silent' }));
  const raw = new Redis(redisUrl);
  t.teardown(() => raw.disconnect());
  return { db, cached, raw };
}

/** Sleeps until `ms` have passed on the Redis server's clock, which expires its keys. */
async function redisTimePasses(raw: Redis, ms: number): Promise<void> {
  const nowOf = async () => {
    const [s, us] = await raw.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  };
  const until = (await nowOf()) + ms;
  while ((await nowOf()) < until) await sleep(100);
}

t.test('a session touched all along past the cache TTL is read back with its touched expiry', async (t) => {
  const { db, cached, raw } = await setup(t);
  const s = newRecord(new Date(), { idleTimeoutSeconds: 3600, idleExpiresAt: new Date(Date.now() + 3600_000) });
  await cached.create(s);
  t.ok(await cached.get(s, new Date()), 'filled');
  // Touches for three cache TTLs, each a little later: the register slides, MariaDB does not.
  let shown = 0;
  const { entry } = sessionKeys(s);
  for (let passed = 0; passed < 3 * CACHE_TTL_MS; passed += 150) {
    const touched = await cached.touch(s, new Date());
    t.ok(touched, 'touch answered');
    if (touched === null) return;
    shown = Math.max(shown, touched.idleExpiresAt.getTime());
    await sleep(150);
  }
  t.equal(cached.counters.touchWrites, 0, 'no write behind: MariaDB holds the install-time expiry');
  await redisTimePasses(raw, CACHE_TTL_MS + 200);
  const inDb = await db.get(s, new Date());
  t.ok(inDb !== null && inDb.idleExpiresAt.getTime() < shown, 'MariaDB lags the register');
  t.equal(await raw.exists(entry), 1, 'the entry outlived the cache TTL counted from its install and from the last touch');
  const read = await cached.get(s, new Date());
  t.ok(read !== null && read.idleExpiresAt.getTime() >= shown, `read after the TTL answers no earlier than ${new Date(shown).toISOString()}: ${read?.idleExpiresAt.toISOString()}`);
});

t.test('a register carried past an invalidation outlives the cache TTL', async (t) => {
  const { cached, raw } = await setup(t);
  const s = newRecord(new Date(), { idleTimeoutSeconds: 3600, idleExpiresAt: new Date(Date.now() + 3600_000) });
  await cached.create(s);
  await cached.get(s, new Date());
  await sleep(50);
  const touched = await cached.touch(s, new Date());
  if (touched === null) return t.fail('touch answered');
  const written = await cached.replaceData(s, { n: 2 }, { any: true }, new Date());
  t.equal(written.kind, 'ok', 'written: the invalidation dropped the entry and carried the register');
  await redisTimePasses(raw, 2 * CACHE_TTL_MS);
  const read = await cached.get(s, new Date());
  t.same(read?.data, { n: 2 }, 'the new version');
  t.ok(read !== null && read.idleExpiresAt.getTime() >= touched.idleExpiresAt.getTime(), `no earlier than the touch: ${read?.idleExpiresAt.toISOString()}`);
});

t.test("a write marker's fence ends on time though the register it carries lives on", async (t) => {
  const { cached, raw } = await setup(t);
  const s = newRecord(new Date(), { idleTimeoutSeconds: 3600, idleExpiresAt: new Date(Date.now() + 3600_000) });
  await cached.create(s);
  const { entry } = sessionKeys(s);
  const [sec] = await raw.time();
  const redisNow = Number(sec) * 1000;
  const register = { ie: String(s.idleExpiresAt.getTime() + 5000), ls: String(Date.now()) };
  // A marker set just now fences: the fill answers the register but does not install.
  await raw.hset(entry, { w: String(redisNow), ...register });
  await raw.pexpire(entry, 60_000);
  const fenced = await cached.get(s, new Date());
  t.equal(fenced?.idleExpiresAt.getTime(), Number(register.ie), 'answers the register');
  t.equal(await raw.hexists(entry, 'd'), 0, 'a fresh marker refuses the install');
  // A marker older than its lifetime (the write rolled back): the fill installs over it.
  await raw.del(entry);
  await raw.hset(entry, { w: String(redisNow - WRITE_MARK_TTL_MS - 1000), ...register });
  await raw.pexpire(entry, 60_000);
  const filled = await cached.get(s, new Date());
  t.equal(filled?.idleExpiresAt.getTime(), Number(register.ie), 'answers the register');
  t.equal(await raw.hexists(entry, 'd'), 1, 'installed over a marker past its lifetime');
  t.same(await raw.hget(entry, 'ie'), register.ie, 'with the register');
  t.ok((await raw.pttl(entry)) > CACHE_TTL_MS, 'and lives while the register leads MariaDB');
});

t.test('an entry touched all along serves its data for the cache TTL after its install, no longer', async (t) => {
  const { db, cached, raw } = await setup(t);
  const s = newRecord(new Date(), { idleTimeoutSeconds: 3600, idleExpiresAt: new Date(Date.now() + 3600_000) });
  await cached.create(s);
  await cached.get(s, new Date());
  // A change Redis never heard of (as on a Redis replica promoted without the invalidation).
  t.equal((await db.replaceData(s, { n: 2 }, { any: true }, new Date())).kind, 'ok');
  const [sec] = await raw.time();
  const until = Number(sec) * 1000 + 2 * CACHE_TTL_MS;
  let last = null;
  let shown = 0;
  for (;;) {
    last = await cached.touch(s, new Date());
    if (last === null) return t.fail('touch answered');
    t.ok(last.idleExpiresAt.getTime() >= shown, 'expiry never moves backwards');
    shown = last.idleExpiresAt.getTime();
    const [now] = await raw.time();
    if (Number(now) * 1000 > until) break;
    await sleep(150);
  }
  t.same(last.data, { n: 2 }, 'past the cache TTL the touch misses and the fill reads MariaDB');
});
