/**
 * The service runs with a database user that has no DDL rights: SELECT, INSERT, UPDATE and DELETE
 * on its own database, nothing else (deploy/README.md, "Database users"). Only the migration Job
 * holds DDL rights. Every kind of call, Redis in front, the sweeper and the outbox worker run here
 * on such a user; a statement that needed more would answer 5xx and log "denied".
 */
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { stack } from '../helpers/service-process.js';

const s = await stack(t);
const database = new URL(s.databaseUrl).pathname.slice(1);
const password = 'runtime-only-secret';
await s.query("CREATE USER IF NOT EXISTS 'sessiond_app'@'127.0.0.1' IDENTIFIED BY '" + password + "'");
await s.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON \`${database}\`.* TO 'sessiond_app'@'127.0.0.1'`);
const runtimeUrl = new URL(s.serviceDatabaseUrl);
runtimeUrl.username = 'sessiond_app';
runtimeUrl.password = password;

const svc = await s.service(t, { DATABASE_URL: runtimeUrl.toString(), SWEEPER_INTERVAL_SECONDS: '1' });
const c = svc.client;

t.test('a DML-only user can run every call', async (t) => {
  t.equal((await c.readyz()).status, 200, 'ready');
  const created = await c.create({ cart: [] }, { subject: 'grants-user' });
  t.equal(created.status, 201, 'create');
  const token = (created.body as { token: string }).token;
  t.equal((await c.read(token)).status, 200, 'read');
  t.equal((await c.touch(token)).status, 200, 'touch');
  t.equal((await c.put(token, { cart: ['a'] }, 1)).status, 200, 'PUT');
  t.equal((await c.patch(token, { coupon: 'x' })).status, 200, 'PATCH');
  const rotated = await c.rotate(token);
  t.equal(rotated.status, 201, 'rotate');
  const fresh = (rotated.body as { token: string }).token;
  t.equal((await c.request('GET', '/v1/subjects/grants-user/sessions')).status, 200, 'list a subject');
  t.equal((await c.request('DELETE', '/v1/subjects/grants-user/sessions')).status, 200, 'revoke all');
  t.equal((await c.read(fresh)).status, 404, 'revoked');
  const other = (await c.create({}, {})).body as { token: string };
  t.equal((await c.destroy(other.token)).status, 204, 'destroy');
  await sleep(1_500); // a sweeper round (interval 1 s) runs on the same user
  t.notMatch(svc.output(), /denied|ER_[A-Z_]*ACCESS/i, 'no statement was refused');
  t.notMatch(svc.output(), password, 'the password is never logged');
});

t.test('the user cannot change the schema', async (t) => {
  const { createConnection } = await import('mariadb');
  const conn = await createConnection({ host: runtimeUrl.hostname, port: Number(runtimeUrl.port), user: 'sessiond_app', password, database });
  try {
    await t.rejects(conn.query('ALTER TABLE sessions ADD COLUMN x INT'), /denied/i, 'ALTER is refused');
    await t.rejects(conn.query('DROP TABLE sessions'), /denied/i, 'DROP is refused');
  } finally {
    await conn.end();
  }
});
