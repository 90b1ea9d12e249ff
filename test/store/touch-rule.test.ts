/**
 * The touch rule has one home, decideTouch() in the domain; where the data lives it has two
 * twins: the Lua TOUCH script (Redis slides the register in place) and persistTouch's
 * GREATEST/LEAST (MariaDB takes a write-behind). The same cases go through all three against a
 * real Redis and MariaDB, and must agree on the idle expiry, the last-seen and whether the
 * session was touched at all.
 */
import t from 'tap';
import { Redis } from 'ioredis';
import { encodeEntry, sessionKeys } from '../../src/cache/redis-entry.js';
import { Database } from '../../src/db/database.js';
import { decideTouch, type SessionRecord } from '../../src/domain/session.js';
import { MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { migratedDatabase, query } from '../helpers/mariadb.js';
import { gatewayOptions, sharedRedisUrl, testGateway } from '../helpers/redis.js';
import { newRecord } from './session-store-contract.js';

const TH = 60; // write-behind threshold, seconds
const T0 = new Date(Math.floor(Date.now() / 1000) * 1000);
const at = (seconds: number) => new Date(T0.getTime() + Math.round(seconds * 1000));
/** How MariaDB shows a UTC DATETIME(3). */
const utc = (d: Date) => d.toISOString().replace('T', ' ').replace('Z', '');

interface Case {
  name: string;
  state: Pick<SessionRecord, 'idleTimeoutSeconds' | 'lastSeenAt' | 'idleExpiresAt' | 'absoluteExpiresAt'>;
  now: Date;
}

const cases: Case[] = [
  { name: 'a touch slides the idle expiry', state: { idleTimeoutSeconds: 600, lastSeenAt: at(0), idleExpiresAt: at(600), absoluteExpiresAt: at(3600) }, now: at(100.683) },
  { name: 'an older touch never shortens it', state: { idleTimeoutSeconds: 600, lastSeenAt: at(100), idleExpiresAt: at(700), absoluteExpiresAt: at(3600) }, now: at(50.25) },
  { name: 'a touch at the same instant changes nothing', state: { idleTimeoutSeconds: 600, lastSeenAt: at(100), idleExpiresAt: at(700), absoluteExpiresAt: at(3600) }, now: at(100) },
  { name: 'never past the absolute expiry', state: { idleTimeoutSeconds: 600, lastSeenAt: at(2800), idleExpiresAt: at(3400), absoluteExpiresAt: at(3600) }, now: at(3300.5) },
  { name: 'last-seen ahead of now (another replica) stays', state: { idleTimeoutSeconds: 600, lastSeenAt: at(200), idleExpiresAt: at(800), absoluteExpiresAt: at(3600) }, now: at(150) },
  { name: 'at the idle expiry the session is dead: untouched', state: { idleTimeoutSeconds: 600, lastSeenAt: at(0), idleExpiresAt: at(600), absoluteExpiresAt: at(3600) }, now: at(600) },
  { name: 'at the absolute expiry the session is dead: untouched', state: { idleTimeoutSeconds: 600, lastSeenAt: at(3000), idleExpiresAt: at(3600), absoluteExpiresAt: at(3600) }, now: at(3600) },
  { name: 'a short idle timeout slides by milliseconds', state: { idleTimeoutSeconds: 1, lastSeenAt: at(0), idleExpiresAt: at(1), absoluteExpiresAt: at(12) }, now: at(0.999) },
];

const url = await migratedDatabase(t);
const database = new Database({ url, poolSize: 2, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
t.teardown(() => database.close());
const db = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: TH });
const redisUrl = await sharedRedisUrl(t);
const gateway = await testGateway(t, gatewayOptions({ url: redisUrl, commandTimeoutMs: 2000 }));
const raw = new Redis(redisUrl);
t.teardown(() => raw.disconnect());

for (const c of cases) {
  t.test(c.name, async (t) => {
    const record = newRecord(at(-1), c.state);
    const decided = decideTouch(record, record.idleExpiresAt, c.now, TH);

    // Lua: the entry as a fill installs it, then TOUCH.
    const { entry } = sessionKeys(record);
    await raw.hset(entry, { ...encodeEntry(record) });
    await raw.pexpire(entry, 60_000);
    const lua = await gateway.touch(record, c.now.getTime());
    if (decided === null) t.same(lua, { kind: 'expired' }, 'Lua: dead, untouched');
    else {
      t.equal(lua.kind, 'hit', 'Lua: touched');
      if (lua.kind === 'hit') {
        t.same([new Date(Number(lua.fields.ie)), new Date(Number(lua.fields.ls))], [decided.idleExpiresAt, decided.lastSeenAt], 'Lua: idle expiry and last-seen agree');
      }
    }

    // SQL: the row, then the write-behind with the raw candidate (uncapped): GREATEST/LEAST
    // must make of it what the rule says.
    await db.create(record);
    const candidate = new Date(c.now.getTime() + c.state.idleTimeoutSeconds * 1000);
    const live = await db.persistTouch(record, candidate, c.now, c.now);
    const [row] = await query<{ idle_expires_at: string; last_seen_at: string }>(url, 'SELECT idle_expires_at, last_seen_at FROM sessions WHERE id_hash = ?', [
      record.idHash,
    ]);
    const want = decided ?? record;
    t.equal(live, decided !== null, 'SQL: touched only while live');
    t.same([row!.idle_expires_at, row!.last_seen_at], [utc(want.idleExpiresAt), utc(want.lastSeenAt)], 'SQL: idle expiry and last-seen agree');

    // The MariaDB store's own touch writes what the rule decides, and only past the threshold.
    const touched = await db.touch(record, c.now);
    t.equal(touched === null, decided === null, 'the MariaDB store touches only while live');
  });
}

t.test('the rule writes through only past the threshold, and twice at one instant is once', async (t) => {
  const state = { idleTimeoutSeconds: 1800, lastSeenAt: at(0), idleExpiresAt: at(1800), absoluteExpiresAt: at(7200) };
  t.equal(decideTouch(state, at(1800), at(TH / 2), TH)?.persist, false, 'a lag below the threshold stays in Redis');
  t.equal(decideTouch(state, at(1800), at(TH + 1), TH)?.persist, true, 'past it, MariaDB is written');
  t.equal(decideTouch({ ...state, idleTimeoutSeconds: 10, idleExpiresAt: at(10) }, at(10), at(1.001), TH)?.persist, true, 'the threshold is at most a tenth of the idle timeout');
  const once = decideTouch(state, at(1800), at(100), TH)!;
  const twice = decideTouch({ ...state, idleExpiresAt: once.idleExpiresAt, lastSeenAt: once.lastSeenAt }, at(1800), at(100), TH)!;
  t.same(twice, once, 'idempotent: the cached store re-applies it to what TOUCH returned');
  t.equal(decideTouch(state, at(1800), at(1800), TH), null, 'a dead session is not touched');
});
