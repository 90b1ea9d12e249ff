// Proves the throwaway Redis Cluster: three masters form a cluster that ioredis' Cluster client
// can use, keys are spread over the nodes, same-hash-tag Lua scripts work and cross-slot ones
// fail with CROSSSLOT, a SIGKILLed node rejoins after restart(), and stop() cleans up.
import t from 'tap';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { startRedisCluster, waitForClusterReady } from '../devstack/redis-cluster.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * pids of live redis-server processes running in a folder under base (Linux /proc; their
 * command line is no help, redis-server rewrites it to "redis-server 127.0.0.1:PORT [cluster]").
 */
function redisPidsUnder(base: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const comm = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (comm.startsWith('redis-server') && state !== 'Z' && readlinkSync(`/proc/${entry}/cwd`).startsWith(`${base}/`)) {
        pids.push(Number(entry));
      }
    } catch {
      // gone, or not ours to inspect
    }
  }
  return pids.sort((x, y) => x - y);
}

const SET_BOTH = `
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
`;

t.test('throwaway Redis Cluster', { timeout: 30_000 }, async (t) => {
  const base = await mkdtemp(path.join(os.tmpdir(), 'sessiond-cluster-test-'));
  const started = Date.now();
  const clusterStart = startRedisCluster({ baseDir: base, startTimeoutMs: 15_000 });
  const clients: Array<{ disconnect(): void }> = [];
  t.teardown(async () => {
    for (const c of clients) c.disconnect();
    await clusterStart.then((c) => c.stop()).catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  });
  const rc = await clusterStart;
  t.comment(`3-master cluster ready in ${Date.now() - started} ms`);

  t.equal(rc.nodes.length, 3, 'three masters');
  t.same(rc.slotRanges, [[0, 5460], [5461, 10921], [10922, 16383]], 'even slot split');
  t.same(rc.startupNodes, rc.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })));
  t.equal(rc.nodesSpec, rc.nodes.map((n) => `127.0.0.1:${n.port}`).join(','));
  t.equal(new Set(rc.nodes.map((n) => n.dataDir)).size, 3, 'one folder per node');
  for (const n of rc.nodes) {
    t.ok(n.dataDir.startsWith(base) && existsSync(path.join(n.dataDir, 'nodes.conf')), `node ${n.port} has its own nodes.conf`);
  }

  const direct = rc.nodes.map((n) => new Redis(n.url, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2_000 }));
  clients.push(...direct);
  await Promise.all(direct.map((c) => c.connect()));

  // One key per node, found with CLUSTER KEYSLOT.
  const keyForNode: string[] = [];
  for (let i = 0; keyForNode.filter(Boolean).length < 3; i++) {
    const key = `k:${i}`;
    const slot = Number(await direct[0]!.call('CLUSTER', 'KEYSLOT', key));
    const owner = rc.slotRanges.findIndex(([first, last]) => slot >= first && slot <= last);
    keyForNode[owner] ??= key;
  }

  const cluster = new Cluster(rc.startupNodes, { redisOptions: { connectTimeout: 2_000 } });
  clients.push(cluster);

  await t.test('SET/GET across the nodes', async (t) => {
    for (const [i, key] of keyForNode.entries()) {
      t.equal(await cluster.set(key, `v${i}`), 'OK');
      t.equal(await cluster.get(key), `v${i}`, `${key} via the cluster client`);
      t.equal(await direct[i]!.get(key), `v${i}`, `${key} lives on node ${i}`);
      const other = direct[(i + 1) % 3]!;
      await t.rejects(other.get(key), /MOVED/, `another node redirects ${key}`);
    }
    const sizes = await Promise.all(direct.map((c) => c.dbsize()));
    t.same(sizes, [1, 1, 1], 'one key on every node');
  });

  await t.test('Lua script on two keys with the same hash tag', async (t) => {
    const slots = await Promise.all(['{tag}a', '{tag}b'].map((k) => direct[0]!.call('CLUSTER', 'KEYSLOT', k)));
    t.equal(slots[0], slots[1], 'same slot');
    t.same(await cluster.eval(SET_BOTH, 2, '{tag}a', '{tag}b', 'x', 'y'), ['x', 'y']);
    t.same(await cluster.mget('{tag}a', '{tag}b'), ['x', 'y']);
  });

  await t.test('cross-slot Lua script fails with CROSSSLOT', async (t) => {
    await t.rejects(cluster.eval(SET_BOTH, 2, keyForNode[0]!, keyForNode[1]!, 'x', 'y'), /CROSSSLOT/);
    t.equal(await cluster.get(keyForNode[0]!), 'v0', 'nothing was written');
  });

  await t.test('SIGKILL + restart() of a node: it rejoins with its slots, without its data', async (t) => {
    const node = rc.nodes[1]!;
    const oldPid = node.pid;
    node.kill('SIGKILL');
    const restartedAt = Date.now();
    await node.restart();
    t.not(node.pid, oldPid, 'new process');
    await waitForClusterReady(rc, 15_000);
    t.comment(`cluster ok again ${Date.now() - restartedAt} ms after restart()`);
    t.equal(await cluster.get(keyForNode[1]!), null, 'no persistence: the key on the restarted node is gone');
    t.equal(await cluster.get(keyForNode[0]!), 'v0', 'other nodes keep their keys');
    t.equal(await cluster.set(keyForNode[1]!, 'again'), 'OK');
    t.equal(await cluster.get(keyForNode[1]!), 'again');
  });

  await t.test('stop() stops every node and is idempotent', async (t) => {
    cluster.disconnect();
    for (const c of direct) c.disconnect();
    const pids = rc.nodes.map((n) => n.pid);
    t.same(redisPidsUnder(base), [...pids].sort((x, y) => x - y), 'our three nodes are the only redis-servers under base');
    await Promise.all([rc.stop(), rc.stop()]);
    await rc.stop();
    t.same(rc.nodes.map((n) => n.running), [false, false, false]);
    t.same(pids.map(isAlive), [false, false, false], 'no redis-server left');
    t.same(redisPidsUnder(base), []);
  });
});

t.test('startRedisCluster with 1 master and a clear timeout error', { timeout: 30_000 }, async (t) => {
  const base = await mkdtemp(path.join(os.tmpdir(), 'sessiond-cluster-test-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const single = await startRedisCluster({ baseDir: base, masters: 1 });
  t.same(single.slotRanges, [[0, 16383]]);
  await single.stop();
  // The 2 s writable delay of a fresh master cannot be beaten: a 500 ms budget must fail cleanly.
  await t.rejects(startRedisCluster({ baseDir: base, masters: 2, startTimeoutMs: 500 }), /Redis cluster not ready after \d+ ms:\n {2}node \d+: cluster_state:fail/);
  t.same(redisPidsUnder(base), [], 'the nodes of a failed start are stopped');
});
