// How each pooled connection is set up: the statement time limit holds on every connection, and
// a connection reset while it is being set up fails that connection attempt (a 503 for the
// call), never an unhandled rejection, which would end the process.
import t from 'tap';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'drizzle-orm';
import { Database } from '../../src/db/database.js';
import { migratedDatabase } from '../helpers/mariadb.js';

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
process.on('unhandledRejection', onUnhandled);
t.teardown(() => {
  process.off('unhandledRejection', onUnhandled);
});

/** The first row of db.execute()'s answer (the proxy driver nests the connector's rows). */
function firstRow<T>(result: unknown): T {
  let r = result;
  while (Array.isArray(r)) r = r[0];
  return r as T;
}

/**
 * A loopback proxy to the server that resets the client's connection as soon as the client
 * sends `marker` (a statement of the connection's setup): what a node killed while a pool
 * (re)connects does, at a chosen moment.
 */
async function resettingProxy(target: { host: string; port: number }, marker: string): Promise<{ address: string; resets: () => number; close: () => Promise<void> }> {
  let resets = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (chunk: Buffer) => {
      if (chunk.includes(marker)) {
        resets++;
        client.resetAndDestroy();
        upstream.destroy();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    resets: () => resets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

t.test('every pooled connection has the statement time limit (DB_QUERY_TIMEOUT_MS)', async (t) => {
  const url = await migratedDatabase(t);
  const db = new Database({ url, poolSize: 2, acquireTimeoutMs: 2_000, queryTimeoutMs: 1_500, connectTimeoutMs: 2_000 });
  t.teardown(() => db.close());
  const rows = await db.run((d) => d.execute(sql`SELECT @@session.max_statement_time AS m`));
  t.equal(Number(firstRow<{ m: number | string }>(rows).m), 1.5);
});

t.test('a connection reset while the pool sets the time limit up is a 503, not an unhandled rejection', async (t) => {
  const url = new URL(await migratedDatabase(t));
  const proxy = await resettingProxy({ host: url.hostname, port: Number(url.port) }, 'max_statement_time');
  t.teardown(() => proxy.close());
  url.host = proxy.address;
  const db = new Database({ url: url.toString(), poolSize: 2, acquireTimeoutMs: 1_000, queryTimeoutMs: 2_000, connectTimeoutMs: 1_000 });
  t.teardown(() => db.close().catch(() => undefined));
  for (let i = 0; i < 3; i++) {
    await t.rejects(db.run((d) => d.execute(sql`SELECT 1`)), { status: 503, code: 'store_unavailable' }, `call ${i} answered unavailable`);
  }
  t.ok(proxy.resets() > 0, 'connections were reset during their setup');
  // A dropped rejection surfaces once the microtasks and the reset's I/O have run.
  await sleep(200);
  t.same(
    unhandled.map((e) => (e as { code?: string }).code ?? String(e)),
    [],
    'no unhandled rejection',
  );
});
