/**
 * A throwaway Redis Cluster (N masters, no replicas) for tests, built from startRedis() nodes.
 *
 * The cluster is formed by hand over the normal Redis protocol — no `redis-cli --cluster create`
 * and its prompts: every node gets an even, contiguous share of the 16384 hash slots
 * (CLUSTER ADDSLOTSRANGE) and its own config epoch, all nodes MEET each other, and we poll until
 * every node says `cluster_state:ok`, knows all N nodes and serves the same, complete
 * CLUSTER SLOTS map. Ready takes ~2.1 s, nearly all of it Redis' hard-coded
 * CLUSTER_WRITABLE_DELAY: a master stays `cluster_state:fail` for 2 s after it starts.
 *
 * The nodes are ordinary ManagedProcess servers: SIGKILL/SIGSTOP/restart() work as for a
 * single Redis, and a restarted node rejoins with its slots from its nodes.conf
 * (data is not persisted). Use waitForClusterReady() after such fault injection.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOOPBACK } from './ports.js';
import { startRedis, type RedisAccess, type RedisProcess, type RedisServerTls, type RedisServerUser } from './redis.js';

const SLOT_COUNT = 16_384;
const DEFAULT_MASTERS = 3;
const DEFAULT_CLUSTER_START_TIMEOUT_MS = 30_000;
const POLL_MS = 50;
/** Milliseconds before a silent node is flagged PFAIL (and, by a majority, FAIL). */
export const CLUSTER_NODE_TIMEOUT_MS = 2_000;

export interface RedisClusterProcess {
  /** The masters, in slot order: nodes[i] owns slotRanges[i]. */
  readonly nodes: RedisProcess[];
  /** For `new Cluster(startupNodes)` from ioredis. */
  readonly startupNodes: { host: string; port: number }[];
  /** "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3" */
  readonly nodesSpec: string;
  /** Inclusive [first, last] slot range owned by each node (same order as nodes). */
  readonly slotRanges: ReadonlyArray<readonly [number, number]>;
  /** Stops all nodes (in parallel); idempotent. */
  stop(): Promise<void>;
}

/** Even, contiguous split of 0..16383 over n masters: [[0, 5460], [5461, 10921], [10922, 16383]] for 3. */
export function splitSlots(n: number): Array<[number, number]> {
  if (!Number.isInteger(n) || n < 1 || n > SLOT_COUNT) throw new Error(`invalid number of masters: ${n}`);
  return Array.from({ length: n }, (_, i) => [Math.floor((i * SLOT_COUNT) / n), Math.floor(((i + 1) * SLOT_COUNT) / n) - 1]);
}

/** Arguments for a cluster node: quick start, nothing persisted except the node's own nodes.conf. */
function clusterNodeArgs(): string[] {
  return [
    '--cluster-enabled', 'yes',
    // Relative to the node's --dir (its own folder under baseDir), so every node has its own file.
    '--cluster-config-file', 'nodes.conf',
    '--cluster-node-timeout', String(CLUSTER_NODE_TIMEOUT_MS),
    // Advertise the loopback address from the start: otherwise a node learns its own IP only
    // from the first MEET it receives, and CLUSTER SLOTS may briefly report an empty host.
    '--cluster-announce-ip', LOOPBACK,
    '--appendonly', 'no',
    '--save', '',
  ];
}

function adminClient({ port, access }: Pick<RedisProcess, 'port' | 'access'>): Redis {
  return new Redis({
    host: LOOPBACK,
    port,
    ...accessOptions(access),
    lazyConnect: true,
    // RESP2: CLUSTER INFO is a plain bulk string (RESP3 would make it a verbatim string).
    protocol: 2,
    connectTimeout: 2_000,
    commandTimeout: 2_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
}

/** ioredis options for a node's TLS and login (startRedis' `tls` and `user`). */
export function accessOptions(access: RedisAccess): { tls?: RedisAccess['tls']; username?: string; password?: string } {
  return { tls: access.tls, username: access.user?.name, password: access.user?.password };
}

async function withAdminClients<T>(nodes: readonly RedisProcess[], fn: (clients: Redis[]) => Promise<T>): Promise<T> {
  const clients = nodes.map(adminClient);
  try {
    await Promise.all(clients.map((c) => c.connect()));
    return await fn(clients);
  } finally {
    for (const c of clients) c.disconnect();
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function addSlots(client: Redis, [first, last]: readonly [number, number]): Promise<void> {
  try {
    await client.call('CLUSTER', 'ADDSLOTSRANGE', String(first), String(last));
  } catch (err) {
    // Redis < 7.0 has no ADDSLOTSRANGE.
    if (!/unknown subcommand|unknown command/i.test(errorMessage(err))) throw err;
    const slots: string[] = [];
    for (let s = first; s <= last; s++) slots.push(String(s));
    await client.call('CLUSTER', 'ADDSLOTS', ...slots);
  }
}

type SlotsReply = Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>;

/** undefined when this node is ready, else what is missing. owners[slot] is the expected "host:port". */
async function checkNode(client: Redis, port: number, owners: readonly string[], nodeCount: number): Promise<string | undefined> {
  const info = String(await client.call('CLUSTER', 'INFO'));
  const field = (name: string) => new RegExp(`^${name}:(\\S+)`, 'm').exec(info)?.[1];
  const state = field('cluster_state');
  const known = Number(field('cluster_known_nodes'));
  const assigned = Number(field('cluster_slots_assigned'));
  if (state !== 'ok' || known !== nodeCount || assigned !== SLOT_COUNT) {
    return `node ${port}: cluster_state:${state} known_nodes:${known}/${nodeCount} slots_assigned:${assigned}`;
  }
  // Every slot must be served by the master we gave it to, at an address a client can use.
  const covered = new Uint8Array(SLOT_COUNT);
  for (const [first, last, [host, masterPort]] of (await client.call('CLUSTER', 'SLOTS')) as SlotsReply) {
    const addr = `${host}:${masterPort}`;
    for (let s = first; s <= last; s++) {
      if (owners[s] !== addr) return `node ${port}: CLUSTER SLOTS puts slot ${s} at ${addr}, expected ${owners[s]}`;
      covered[s] = 1;
    }
  }
  const missing = covered.indexOf(0);
  return missing >= 0 ? `node ${port}: CLUSTER SLOTS does not cover slot ${missing}` : undefined;
}

/**
 * Polls until every node reports cluster_state:ok, knows all nodes and serves a complete
 * CLUSTER SLOTS map that matches slotRanges. Throws after timeoutMs with each node's last state.
 * Also for after SIGKILL + restart() of a node: an immediate restart is ok again in ~2 s (the
 * restarted master's own writable delay); a node that was down long enough to be flagged FAIL
 * (> node timeout) takes longer, as the others clear FAIL of a master with slots only
 * 2 x node timeout after flagging it.
 */
export async function waitForClusterReady(
  cluster: Pick<RedisClusterProcess, 'nodes' | 'slotRanges'>,
  timeoutMs = DEFAULT_CLUSTER_START_TIMEOUT_MS,
): Promise<void> {
  return pollUntilReady(cluster, Date.now() + timeoutMs, timeoutMs);
}

async function pollUntilReady(cluster: Pick<RedisClusterProcess, 'nodes' | 'slotRanges'>, deadline: number, budgetMs: number): Promise<void> {
  const owners: string[] = new Array<string>(SLOT_COUNT).fill('(nobody)');
  cluster.slotRanges.forEach(([first, last], i) => owners.fill(`${LOOPBACK}:${cluster.nodes[i]!.port}`, first, last + 1));
  for (;;) {
    const problems: string[] = [];
    await Promise.all(
      cluster.nodes.map(async (node) => {
        const { port } = node;
        const client = adminClient(node);
        try {
          await client.connect();
          const problem = await checkNode(client, port, owners, cluster.nodes.length);
          if (problem) problems.push(problem);
        } catch (err) {
          problems.push(`node ${port}: ${errorMessage(err)}`);
        } finally {
          client.disconnect();
        }
      }),
    );
    if (problems.length === 0) return;
    if (Date.now() >= deadline) {
      throw new Error(`Redis cluster not ready after ${budgetMs} ms:\n  ${problems.sort().join('\n  ')}`);
    }
    await sleep(POLL_MS);
  }
}

/**
 * Starts `masters` (default 3) cluster-enabled redis-server processes under baseDir, each in its
 * own folder on a free port (with a free bus port, port + 10000), and forms a cluster with no
 * replicas. Resolves once every node serves the complete slot map; on failure all nodes are
 * stopped and the error says which node was not ready and why. With `tls` every node speaks TLS
 * only, the cluster bus included; with `user` every node wants that ACL login (see startRedis).
 */
export async function startRedisCluster(opts: {
  baseDir: string;
  masters?: number;
  startTimeoutMs?: number;
  tls?: RedisServerTls;
  user?: RedisServerUser;
}): Promise<RedisClusterProcess> {
  const n = opts.masters ?? DEFAULT_MASTERS;
  const slotRanges = splitSlots(n);
  const timeoutMs = opts.startTimeoutMs ?? DEFAULT_CLUSTER_START_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;

  // Admin clients log in to every node with one password.
  const adminPassword = randomBytes(18).toString('base64url');
  const started = await Promise.allSettled(
    slotRanges.map(() =>
      startRedis({
        baseDir: opts.baseDir,
        extraArgs: [...clusterNodeArgs(), ...(opts.tls ? ['--tls-cluster', 'yes'] : [])],
        startTimeoutMs: timeoutMs,
        tls: opts.tls,
        user: opts.user,
        adminPassword,
      }),
    ),
  );
  const nodes = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= Promise.allSettled(nodes.map((node) => node.stop())).then((results) => {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) {
        stopping = undefined; // let a later stop() try again
        throw failed.reason;
      }
    });
    return stopping;
  };
  const failedStart = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failedStart) {
    await stop().catch(() => undefined);
    throw failedStart.reason;
  }

  const cluster: RedisClusterProcess = {
    nodes,
    startupNodes: nodes.map((node) => ({ host: LOOPBACK, port: node.port })),
    nodesSpec: nodes.map((node) => `${LOOPBACK}:${node.port}`).join(','),
    slotRanges,
    stop,
  };

  try {
    await withAdminClients(
      nodes,
      async (clients) => {
        await Promise.all(
          clients.map(async (client, i) => {
            await addSlots(client, slotRanges[i]!);
            // Distinct epochs up front (what redis-cli does): no epoch-collision round needed.
            await client.call('CLUSTER', 'SET-CONFIG-EPOCH', String(i + 1));
          }),
        );
        // Every node MEETs every other: one node meeting the rest would be enough, but then gossip
        // (about one ping per node per second) needs ~2 s to spread the slot map; a full mesh
        // converges in ~0.3 s. The duplicate handshakes are dropped by Redis within ~0.2 s.
        await Promise.all(
          clients.flatMap((client, i) =>
            nodes.filter((_, j) => j !== i).map((node) => client.call('CLUSTER', 'MEET', LOOPBACK, String(node.port))),
          ),
        );
      },
    );
    await pollUntilReady(cluster, deadline, timeoutMs);
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  return cluster;
}
