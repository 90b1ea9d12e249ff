/**
 * The pool keeps healthy connections when replies come slowly (docs/design.md §6): a connection
 * idle for 500 ms is pinged before it is handed out, and the connector closes one whose ping misses
 * its pingTimeout (250 ms by default). On a loaded machine replies come that late (a starved event
 * loop reads them late), so healthy connections were closed one after the other and pools of 10
 * held 0–2 when Redis went away and every call needed one. Here a proxy delays every reply by
 * 300 ms: each idle connection's ping takes that long, and the same connections must serve.
 */
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { Database } from '../../src/db/database.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { createFaultProxy } from '../tools/fault-proxy.js';

const POOL = 3;

t.test('connections idle past the validation delay survive pings slower than 250 ms', async (t) => {
  const url = new URL(await migratedDatabase(t));
  const proxy = await createFaultProxy({ target: { host: url.hostname, port: Number(url.port) }, listenHost: '127.0.0.1' });
  t.teardown(() => proxy.close());
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  const database = new Database({ url: url.toString(), poolSize: POOL, acquireTimeoutMs: 3000, queryTimeoutMs: 3000, connectTimeoutMs: 3000 });
  t.teardown(() => database.close());
  const connectionId = () =>
    database.withConnection(async (conn) => Number(((await conn.query('SELECT CONNECTION_ID() AS id')) as Array<{ id: number }>)[0]!.id));
  // The pool opens its connections; each is used once.
  while (database.pool.totalConnections() < POOL) await sleep(20);
  const before = new Set<number>();
  for (let i = 0; i < 20 && before.size < POOL; i++) {
    const ids = await Promise.all(Array.from({ length: POOL }, connectionId));
    ids.forEach((id) => before.add(id));
  }
  t.equal(before.size, POOL, `the pool holds ${POOL} connections`);
  proxy.setLatency(300);
  for (let round = 0; round < 2; round++) {
    await sleep(700); // idle past the connector's 500 ms: the next hand-out pings first
    const ids = await Promise.all(Array.from({ length: POOL }, connectionId));
    t.ok(
      ids.every((id) => before.has(id)),
      `round ${round}: served by the same connections (${ids.join(', ')} of ${[...before].join(', ')}), none closed for a slow ping`,
    );
  }
  proxy.heal();
});
