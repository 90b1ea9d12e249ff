import t from 'tap';
import pino from 'pino';
import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { Database, DUPLICATE_KEY_ERRNO, errnoOf } from '../../src/db/database.js';
import { StoreUnavailableError } from '../../src/domain/errors.js';
import { MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { auth, testApp } from '../helpers/app.js';
import { migratedDatabase, query } from '../helpers/mariadb.js';
import { newRecord } from '../store/session-store-contract.js';

// Values no log line may ever hold: a subject, session data and an IP.
const SUBJECT = 'marked-subject-7f3a9c';
const DATA = 'data-value-5c1e0b';
const IP = '198.51.100.77';

t.test('a failing statement is logged with its codes and name, never its values', async (t) => {
  const { app, url, logs } = await testApp(t);
  // The table refuses this subject: the INSERT fails inside MariaDB, not for want of a connection.
  await query(url, "ALTER TABLE sessions ADD CONSTRAINT refuse_marked CHECK (subject IS NULL OR subject NOT LIKE 'marked-%')");
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: { ...auth(), 'content-type': 'application/json' },
    payload: JSON.stringify({ subject: SUBJECT, data: { secret: DATA }, metadata: { ip: IP } }),
  });
  t.equal(res.statusCode, 500);
  t.equal(res.json().code, 'internal_error');
  for (const value of [SUBJECT, DATA, IP]) t.notOk(res.body.includes(value), `the answer does not hold ${value}`);
  const all = logs.join('');
  for (const value of [SUBJECT, DATA, IP]) t.notOk(all.includes(value), `no log line holds ${value}`);
  const line = logs.map((l) => JSON.parse(l) as { msg: string; err?: Record<string, unknown> }).find((l) => l.msg === 'unhandled error');
  t.ok(line, 'the error was logged');
  t.match(line?.err, { type: 'DatabaseError', errno: 4025, sqlState: '23000', statement: 'insert sessions' }, 'with its codes and which statement');
});

t.test("a server message quoting a value (a duplicate key) is not logged, and errno still says what happened", async (t) => {
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 2, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  const store = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 });
  const namespace = `ns-${randomBytes(4).toString('hex')}`;
  const s = newRecord(new Date(), { namespace, subject: SUBJECT });
  await store.create(s);
  const err = await store.create(s).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof Error, 'the second insert of one id fails');
  t.equal(errnoOf(err), DUPLICATE_KEY_ERRNO);
  const logged = JSON.stringify(pino.stdSerializers.err(err as Error));
  for (const value of [namespace, SUBJECT, IP, s.idHash.toString('hex')]) t.notOk(logged.includes(value), `the logged error does not hold ${value}`);
  t.match(logged, /insert sessions/);
});

t.test('a deadlock still there after every retry answers 503 store_unavailable (retry later), not a 500', async (t) => {
  const { app, url, logs } = await testApp(t);
  // Every insert into sessions loses "a deadlock" (errno 1213, as a lost Galera certification
  // reports too): the retries cannot get past it.
  await query(url, "CREATE TRIGGER always_deadlock BEFORE INSERT ON sessions FOR EACH ROW SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'Deadlock found'");
  const res = await app.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: { ...auth(), 'content-type': 'application/json' },
    payload: JSON.stringify({ subject: SUBJECT, data: { secret: DATA } }),
  });
  t.equal(res.statusCode, 503);
  t.equal(res.json().code, 'store_unavailable');
  t.ok(res.headers['retry-after'], 'with Retry-After');
  const lines = logs.map((l) => JSON.parse(l) as { msg: string; reason?: string });
  t.notOk(lines.some((l) => l.msg === 'unhandled error'), 'not logged as an unhandled error');
  t.equal(lines.find((l) => l.msg === 'store unavailable')?.reason, 'contention', 'logged as contention');
  t.equal((await query<{ n: number }>(url, 'SELECT COUNT(*) AS n FROM sessions'))[0]!.n, 0, 'nothing was stored');
});

t.test('a 503 says which deadline fired: the pool acquire or the statement', async (t) => {
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 1, acquireTimeoutMs: 300, queryTimeoutMs: 400, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  const statement = await database.run((db) => db.execute(sql`SELECT SLEEP(3)`)).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(statement instanceof StoreUnavailableError, 'a statement past DB_QUERY_TIMEOUT_MS: 503');
  t.equal((statement as StoreUnavailableError).reason, 'statement_timeout', 'stopped by max_statement_time');
  // The one connection held: the next call waits for the pool until its acquire deadline.
  let release!: () => void;
  const held = database.withConnection(() => new Promise<void>((r) => (release = r)));
  const acquire = await database.run((db) => db.execute(sql`SELECT 1`)).then(
    () => undefined,
    (e: unknown) => e,
  );
  release();
  await held;
  t.ok(acquire instanceof StoreUnavailableError, 'no connection within DB_ACQUIRE_TIMEOUT_MS: 503');
  t.equal((acquire as StoreUnavailableError).reason, 'acquire_timeout');
  t.equal((acquire as StoreUnavailableError).driverCode, 'ER_GET_CONNECTION_TIMEOUT');
});
