// The process runs in a zone far from UTC (with summer time): every DATETIME the store writes
// must still be UTC, and read back as the same instant. Node applies a TZ set at run time.
process.env.TZ = 'America/Los_Angeles';

import t from 'tap';
import { Database } from '../../src/db/database.js';
import { MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { migratedDatabase, query } from '../helpers/mariadb.js';
import { drainRevocations, newRecord } from './session-store-contract.js';

const SECOND = 1000;
const at = (base: Date, seconds: number) => new Date(base.getTime() + seconds * SECOND);
/** How MariaDB shows a UTC DATETIME(3). */
const utc = (d: Date) => d.toISOString().replace('T', ' ').replace('Z', '');

interface Times {
  created_at: string;
  last_seen_at: string;
  idle_expires_at: string;
  absolute_expires_at: string;
}

t.test('stored DATETIMEs are UTC whatever the process time zone', async (t) => {
  t.not(new Date(Date.UTC(2026, 6, 1)).getTimezoneOffset(), 0, 'the process is not on UTC');
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 2, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  const store = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 });
  const stored = async (idHash: Buffer) =>
    (await query<Times>(url, 'SELECT created_at, last_seen_at, idle_expires_at, absolute_expires_at FROM sessions WHERE id_hash = ?', [idHash]))[0]!;

  const t0 = new Date(Math.floor(Date.now() / 1000) * 1000);
  const s = newRecord(t0, { subject: 'tz-user' });
  await store.create(s);
  t.same(await stored(s.idHash), {
    created_at: utc(t0),
    last_seen_at: utc(t0),
    idle_expires_at: utc(s.idleExpiresAt),
    absolute_expires_at: utc(s.absoluteExpiresAt),
  });

  // A touch past the threshold writes the expiry behind (a statement with computed times).
  const later = at(t0, 120);
  const touched = await store.touch(s, later);
  t.same(touched?.idleExpiresAt, at(later, 1800));
  const afterTouch = await stored(s.idHash);
  t.equal(afterTouch.idle_expires_at, utc(at(later, 1800)), 'the touched expiry is stored as UTC');
  t.equal(afterTouch.last_seen_at, utc(later));
  t.same((await store.get(s, later))?.idleExpiresAt, at(later, 1800), 'and reads back as the same instant');

  // Revocation writes the revocation time as the idle expiry.
  const end = at(t0, 300);
  await store.destroy(s, end);
  t.equal((await stored(s.idHash)).idle_expires_at, utc(end), 'a destroy stores its time as UTC');

  const other = newRecord(t0, { subject: 'tz-user' });
  await store.create(other);
  await store.revokeSubject('ns-a', 'tz-user', undefined, end);
  await drainRevocations(store, end);
  t.equal((await stored(other.idHash)).idle_expires_at, utc(end), 'revoke-all stores its time as UTC');
});
