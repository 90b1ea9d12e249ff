/**
 * What Galera costs per call, on loopback: `node --import tsx bench/galera.ts`.
 *
 * Starts one standalone MariaDB and a 3-node Galera cluster (devstack), and runs the same
 * sequential store calls through sessiond's MariaDB store on three databases: the standalone
 * server; one Galera node alone (URL with one host: no wsrep_sync_wait); the cluster as the
 * service runs on it (URL with three hosts: wsrep_sync_wait=7 on every statement). Prints the
 * mean per call and the ratios against the standalone server measured in the same run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { startGaleraCluster } from '../devstack/galera.js';
import { createDatabase, startMariaDb } from '../devstack/mariadb.js';
import { Database } from '../src/db/database.js';
import { MariaDbSessionStore } from '../src/store/mariadb-session-store.js';
import mysql from 'mysql2/promise';
import { drizzle } from 'drizzle-orm/mysql2';
import { migrate } from 'drizzle-orm/mysql2/migrator';
import { newRecord } from '../test/store/session-store-contract.js';

/** drizzle/ applied as drizzle-kit migrate does (test/helpers/mariadb.ts would load tap). */
async function migrateDatabase(rootUrl: string, name: string): Promise<void> {
  const conn = await mysql.createConnection({ uri: await createDatabase(rootUrl, name), timezone: 'Z' });
  try {
    await migrate(drizzle(conn), { migrationsFolder: 'drizzle', migrationsTable: '__drizzle_migrations' });
  } finally {
    await conn.end();
  }
}

const N = Number(process.env.BENCH_N ?? 400);
const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-bench-galera-'));
const [single, cluster] = await Promise.all([startMariaDb({ baseDir: dir }), startGaleraCluster({ baseDir: dir })]);
try {
  await migrateDatabase(single.rootUrl, 'sessiond');
  const host = (i: number) => `127.0.0.1:${cluster.nodes[i]!.port}`;
  await migrateDatabase(`mysql://root@${host(0)}/`, 'sessiond');
  const targets = {
    standalone: `mysql://root@127.0.0.1:${single.port}/sessiond`,
    'galera, one host': `mysql://root@${host(0)}/sessiond`,
    'galera, 3 hosts (sync wait)': `mysql://root@${host(0)},${host(1)},${host(2)}/sessiond`,
  };
  const rows: Array<Record<string, string | number>> = [];
  let base: Record<string, number> | undefined;
  for (const round of [1, 2]) {
    for (const [name, url] of Object.entries(targets)) {
      const db = new Database({ url, poolSize: 4, acquireTimeoutMs: 5_000, queryTimeoutMs: 10_000, connectTimeoutMs: 2_000 });
      const store = new MariaDbSessionStore(db, { touchPersistThresholdSeconds: 60 });
      const recs = Array.from({ length: N }, () => newRecord(new Date()));
      const time = async (work: (i: number) => Promise<unknown>) => {
        const t0 = performance.now();
        for (let i = 0; i < N; i++) await work(i);
        return (performance.now() - t0) / N;
      };
      const create = await time((i) => store.create(recs[i]!));
      const read = await time((i) => store.get(recs[i]!, new Date()));
      const patch = await time((i) => store.patchData(recs[i]!, { n: i }, undefined, 4096, new Date()));
      const destroy = await time((i) => store.destroy(recs[i]!, new Date()));
      await db.close();
      if (round === 1) continue; // warm-up
      base ??= { create, read, patch, destroy };
      const cell = (ms: number, b: number) => `${ms.toFixed(2)} (${(ms / b).toFixed(2)}x)`;
      rows.push({ database: name, 'create ms': cell(create, base.create), 'read ms': cell(read, base.read), 'patch ms': cell(patch, base.patch), 'destroy ms': cell(destroy, base.destroy) });
    }
  }
  const cols = Object.keys(rows[0]!);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  console.log(cols.map((c, i) => c.padEnd(width[i]!)).join('  '));
  for (const r of rows) console.log(cols.map((c, i) => String(r[c]).padEnd(width[i]!)).join('  '));
  console.log(`${N} sequential calls each, one client, loopback; ratios against the standalone server`);
} finally {
  await Promise.allSettled([single.stop(), cluster.stop()]);
  await rm(dir, { recursive: true, force: true });
}
