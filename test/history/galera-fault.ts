/**
 * The history workload on a 3-node MariaDB Galera cluster (devstack/galera.ts), with one node
 * killed -9 mid-run and restarted later.
 *
 * Two service processes on one Redis, their DATABASE_URL listing the three nodes in different
 * orders: svc A prefers node 0, svc B node 1. Node 0 is SIGKILLed: A fails over to node 1 once
 * its connections break; every write in the cluster waits while the survivors evict node 0
 * (the devstack's evs.suspect_timeout, GALERA_FAST_FAILOVER); calls that wait past the
 * services' deadline answer 503. Node 0 then restarts (position recovery, incremental state
 * transfer) and A returns to it without a restart. The checker must find nothing lost,
 * nothing resurrected, no stale read; every failed call must be a clean 503.
 *
 * Figures (calls, 5xx, slowest call, the eviction pause) are printed as a table. It runs in
 * `npm run faults` (about 2 minutes with the cluster's start), not in the suite.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { startGaleraCluster, waitForGaleraSynced } from '../../devstack/galera.js';
import { startRedis } from '../../devstack/redis.js';
import { mintApiKey } from '../../src/auth/api-keys.js';
import { migrateDatabase } from '../helpers/mariadb.js';
import { startService, table, type ServiceProcess } from '../helpers/service-process.js';
import { counterexample, isIndeterminate } from './checker.js';
import { checkHistory, dumpHistory, FallbackMonitor, HISTORY_SERVICE_ENV, historyWorkload } from './harness.js';

const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-galera-history-'));
const servers: Array<{ stop(): Promise<void> }> = [];
t.teardown(async () => {
  await Promise.allSettled(servers.map((s) => s.stop()));
  await rm(dir, { recursive: true, force: true });
});
const [cluster, redis] = await Promise.all([
  startGaleraCluster({ baseDir: dir }).then((c) => (servers.push(c), c)),
  startRedis({ baseDir: dir }).then((r) => (servers.push(r), r)),
]);
const host = (i: number) => `127.0.0.1:${cluster.nodes[i]!.port}`;
await migrateDatabase(`mysql://root@${host(0)}/`, 'sessiond');
const key = mintApiKey('galera-history', 'fault');
const keysFile = path.join(dir, 'keys.json');
writeFileSync(keysFile, JSON.stringify([key.entry]));

const serviceFor = (order: number[]) =>
  startService(
    t,
    {
      ...HISTORY_SERVICE_ENV,
      DATABASE_URL: `mysql://root@${order.map(host).join(',')}/sessiond`,
      REDIS_URL: redis.url,
      API_KEYS_FILE: keysFile,
      LOG_LEVEL: 'info',
      LOG_REQUESTS: 'none',
    },
    key.key,
  );
const pool: ServiceProcess[] = [await serviceFor([0, 1, 2]), await serviceFor([1, 2, 0])];
const everyService = new Set(pool);

t.test('a Galera node killed -9 under the workload, and rejoining', async (t) => {
  const w = historyWorkload('galera', () => pool);
  const monitor = new FallbackMonitor(() => everyService);
  monitor.start();
  w.start();
  await sleep(3_000);

  const killedAt = performance.now();
  cluster.nodes[0]!.kill('SIGKILL');
  // The survivors' view without node 0: the end of the eviction pause.
  const survivors = { ...cluster, nodes: cluster.nodes.slice(1) };
  await waitForGaleraSynced(survivors, 2, 30_000);
  const evictedAt = performance.now();
  await sleep(3_000);
  const restartAt = performance.now();
  await cluster.nodes[0]!.restart();
  await waitForGaleraSynced(cluster, 3, 60_000);
  const rejoinedAt = performance.now();
  await sleep(3_000);
  await w.stop();
  await monitor.stop();
  const final = await w.finalReads();

  const result = checkHistory(w, everyService, monitor, {
    // Nothing is excused: a database node's loss is no cache fault.
    faults: [{ name: 'galera node 0 killed', start: killedAt, end: rejoinedAt + 3_000, touchLoss: false }],
  });
  const ops = w.history.filter((o) => o.kind !== 'final-read');
  const failed = ops.filter(isIndeterminate);
  const fiveXX = ops.filter((o) => o.status >= 500);
  const not503 = ops.filter((o) => o.status >= 500 && o.status !== 503);
  const transport = ops.filter((o) => o.status === 0);
  const slowest = Math.max(...ops.map((o) => o.end - o.start));
  const firstFail = Math.min(...failed.map((o) => o.start));
  const lastFail = Math.max(...failed.map((o) => o.end));
  const failover = pool[0]!.logLines(/^mariadb node down, failing over$/);
  const recovered = pool[0]!.logLines(/^mariadb node serves again$/);
  t.comment(
    `\n${table([
      {
        calls: ops.length,
        '5xx': fiveXX.length,
        'not 503': not503.length,
        'transport errors': transport.length,
        'slowest ms': Math.round(slowest),
        'eviction pause ms': Math.round(evictedAt - killedAt),
        'failures from kill ms': failed.length > 0 ? `${Math.round(firstFail - killedAt)}..${Math.round(lastFail - killedAt)}` : '-',
        'rejoin ms': Math.round(rejoinedAt - restartAt),
        'failed after rejoin': failed.filter((o) => o.start > rejoinedAt).length,
        'tokens checked': final.checked,
        lost: final.lost.length,
        resurrected: final.resurrected.length,
        violations: result.violations.length,
      },
    ])}`,
  );
  t.comment(`svc A failovers: ${failover.map((l) => JSON.stringify({ node: l.node, reason: l.reason, now: l.now })).join(', ') || 'none'}; back: ${recovered.length}`);
  if (!result.ok) t.comment(counterexample(result, w.t0));
  if (not503.length > 0) {
    const errors = pool.flatMap((svc) => svc.logLines(/./).filter((l) => Number(l.level) >= 50).map((l) => `${svc.name} ${JSON.stringify(l).slice(0, 600)}`));
    t.comment(`5xx other than 503: ${not503.map((o) => `${o.kind} ${o.status} via ${o.via} at ${Math.round(o.start - killedAt)} ms`).join(', ')}\n${errors.slice(0, 5).join('\n')}`);
  }
  const dumped = await dumpHistory('galera node killed', w, everyService, monitor, result, { start: killedAt, healed: rejoinedAt });
  if (dumped) t.comment(`history written to ${dumped}`);

  t.ok(result.ok, 'the history passes the checker');
  t.same(final.lost, [], 'every acknowledged create that was never destroyed still reads');
  t.same(final.resurrected, [], 'no acknowledged destroy / rotate / revoke-all reads again');
  t.equal(final.undetermined, 0, 'every final read got an answer');
  t.same(not503.map((o) => `${o.kind} ${o.status}`), [], 'every 5xx is a 503');
  t.same(transport.map((o) => o.kind), [], 'no call failed at the transport level');
  t.ok(failover.length >= 1, 'svc A logged its failover');
  t.ok(recovered.length >= 1, 'svc A went back to node 0 once it served again, without a restart');
  // Recovery: the rejoin is a membership change too (a short pause of its own, a few 503s on
  // a loaded machine: counted in the table); by the end of the run every call succeeds again.
  const endOfRun = Math.max(...ops.map((o) => o.start));
  const lastSecond = ops.filter((o) => o.start > endOfRun - 1_000);
  t.same(lastSecond.filter(isIndeterminate).map((o) => `${o.kind} via ${o.via}`), [], 'every call of the last second succeeded: recovered without a restart');
  t.ok(ops.filter((o) => o.start > rejoinedAt && o.status < 300 && o.status >= 200).length > 0, 'calls succeed after the rejoin');
});
