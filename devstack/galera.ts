/**
 * A throwaway 3-node MariaDB Galera cluster for tests, built from startMariaDb() nodes on
 * loopback ports, each with its own folder under a base directory.
 *
 * Node 0 bootstraps a new cluster (--wsrep-new-cluster, on its first start only); the others
 * join one after the other and receive their data by rsync state transfer. A node is ready
 * when it is Synced and in the primary component. Every node is an ordinary ManagedProcess:
 * kill('SIGKILL') and restart() make it leave and rejoin (by incremental state transfer from
 * the gcache when it can). The root URLs of all nodes joined by commas are what DATABASE_URL
 * takes.
 *
 * Failure detection is tuned down for tests (GALERA_FAST_FAILOVER): with Galera's defaults a
 * killed node stalls every write in the cluster for the suspect timeout (5 s) before it is
 * evicted. Shorter timeouts shorten that pause, at a price: a node that merely stalls for
 * longer (a GC-like pause, a loaded machine, a slow network) is evicted too and must rejoin by
 * state transfer. On real networks keep the defaults or tune with care (README "Scaling past
 * one database").
 */
import { chownSync, existsSync, readdirSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type * as mariadb from 'mariadb';
import { describeExit, runToCompletion } from './children.js';
import { ensureGalera } from './installers.js';
import { startMariaDb, type MariaDbProcess } from './mariadb.js';
import { freePort, LOOPBACK } from './ports.js';

export const GALERA_PROVIDER_PATHS = ['/usr/lib/galera/libgalera_smm.so', '/usr/lib/libgalera_smm.so'];

/**
 * Group-communication timeouts of the devstack cluster. A node silent for `suspect` is
 * suspected, and evicted once all others agree; after `inactive` it is declared dead by each
 * node on its own. keepalive ≤ check period ≤ suspect ≤ inactive.
 */
export const GALERA_FAST_FAILOVER = {
  keepalivePeriod: 'PT0.3S',
  inactiveCheckPeriod: 'PT0.3S',
  suspectTimeout: 'PT1.5S',
  inactiveTimeout: 'PT3S',
  installTimeout: 'PT3S',
  peerTimeout: 'PT1S',
} as const;

export interface GaleraClusterProcess {
  readonly nodes: MariaDbProcess[];
  /** mysql://root@127.0.0.1:p0,127.0.0.1:p1,127.0.0.1:p2/ — every node, node 0 first. */
  readonly rootUrl: string;
  /** Stops all nodes (in parallel); idempotent. */
  stop(): Promise<void>;
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;
/** uid and gid of Debian's nobody/nogroup, whom rsync's daemon runs as when started by root. */
const NOBODY = 65_534;

interface NodePorts {
  gcomm: number;
  ist: number;
  sst: number;
}

function providerPath(): string {
  const found = GALERA_PROVIDER_PATHS.find((p) => existsSync(p));
  if (!found) throw new Error(`no Galera provider library (${GALERA_PROVIDER_PATHS.join(', ')}): install galera-4`);
  return found;
}

function chownTree(dir: string, id: number): void {
  chownSync(dir, id, id);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) chownTree(p, id);
    else if (entry.isFile()) chownSync(p, id, id);
  }
}

/**
 * What galera_recovery does before a node restarts: after a crash the saved state has no
 * position (seqno -1), and a node that does not know its position receives a full state
 * transfer. `mariadbd --wsrep-recover` reads the last committed position from InnoDB and exits;
 * started with it, the node catches up by incremental transfer from another node's gcache.
 */
async function recoverPosition(bin: string, args: string[]): Promise<string | undefined> {
  const dataDir = args.find((a) => a.startsWith('--datadir='))?.slice('--datadir='.length);
  if (dataDir === undefined) return undefined;
  const log = path.join(path.dirname(dataDir), 'wsrep-recover.log');
  await rm(log, { force: true });
  const result = await runToCompletion(bin, [...args, '--wsrep-recover', `--log-error=${log}`], { timeoutMs: 60_000, stdio: ['ignore', 'ignore', 'ignore'] });
  const text = await readFile(log, 'utf8').catch(() => '');
  const position = /WSREP: Recovered position: (\S+:-?\d+)/.exec(text)?.[1];
  if (result.code !== 0 || position === undefined) {
    throw new Error(`mariadbd --wsrep-recover failed (${describeExit(result)}). Log ${log}:\n${text.slice(-2_000)}`);
  }
  return position;
}

/** Synced and in the primary component: undefined, else the node's state. */
export async function galeraNodeState(conn: mariadb.Connection): Promise<string | undefined> {
  const rows = (await conn.query(
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_local_state_comment', 'wsrep_cluster_status', 'wsrep_cluster_size')",
  )) as Array<{ Variable_name: string; Value: string }>;
  const v = Object.fromEntries(rows.map((r) => [r.Variable_name, r.Value]));
  if (v.wsrep_ready === 'ON' && v.wsrep_local_state_comment === 'Synced' && v.wsrep_cluster_status === 'Primary') return undefined;
  return `galera: ready ${v.wsrep_ready}, state ${v.wsrep_local_state_comment}, cluster ${v.wsrep_cluster_status} (size ${v.wsrep_cluster_size})`;
}

/**
 * Starts a 3-node (or `size`) Galera cluster under baseDir; resolves when every node is synced.
 * On failure the nodes started so far are stopped.
 */
export async function startGaleraCluster(opts: { baseDir: string; size?: number; startTimeoutMs?: number; clusterName?: string }): Promise<GaleraClusterProcess> {
  await ensureGalera();
  const size = opts.size ?? 3;
  const provider = providerPath();
  const ports: NodePorts[] = [];
  for (let i = 0; i < size; i++) ports.push({ gcomm: await freePort(), ist: await freePort(), sst: await freePort() });
  const clusterAddress = `gcomm://${ports.map((p) => `${LOOPBACK}:${p.gcomm}`).join(',')}`;
  const f = GALERA_FAST_FAILOVER;
  const nodes: MariaDbProcess[] = [];
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= Promise.allSettled(nodes.map((n) => n.stop())).then((results) => {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) {
        stopping = undefined;
        throw failed.reason;
      }
    });
    return stopping;
  };

  try {
    for (let i = 0; i < size; i++) {
      const p = ports[i]!;
      let bootstrap = i === 0;
      let startPosition: string | undefined;
      const node = await startMariaDb({
        baseDir: opts.baseDir,
        dirPrefix: 'mariadb-galera-',
        startTimeoutMs: opts.startTimeoutMs ?? 60_000,
        emptyDataDir: i > 0,
        ready: galeraNodeState,
        // The joiner's rsync daemon drops root for nobody: as root, let nobody write the data.
        beforeStart: (dataDir) => {
          if (isRoot()) chownTree(dataDir, NOBODY);
        },
        beforeRestart: async (bin, args) => {
          startPosition = await recoverPosition(bin, args.filter((a) => !a.startsWith('--wsrep-start-position=')));
        },
        extraArgs: () => {
          const args = [
            '--wsrep-on=ON',
            `--wsrep-provider=${provider}`,
            `--wsrep-cluster-name=${opts.clusterName ?? 'sessiond-devstack'}`,
            `--wsrep-cluster-address=${clusterAddress}`,
            `--wsrep-node-name=node${i}`,
            `--wsrep-node-address=${LOOPBACK}:${p.gcomm}`,
            '--wsrep-sst-method=rsync',
            `--wsrep-sst-receive-address=${LOOPBACK}:${p.sst}`,
            [
              '--wsrep-provider-options=',
              `gmcast.listen_addr=tcp://${LOOPBACK}:${p.gcomm}`,
              `;ist.recv_addr=${LOOPBACK}:${p.ist}`,
              `;evs.keepalive_period=${f.keepalivePeriod}`,
              `;evs.inactive_check_period=${f.inactiveCheckPeriod}`,
              `;evs.suspect_timeout=${f.suspectTimeout}`,
              `;evs.inactive_timeout=${f.inactiveTimeout}`,
              `;evs.install_timeout=${f.installTimeout}`,
              `;gmcast.peer_timeout=${f.peerTimeout}`,
              ';gcache.size=64M',
            ].join(''),
            '--binlog-format=ROW',
            '--default-storage-engine=InnoDB',
            '--innodb-autoinc-lock-mode=2',
            // Certification conflicts in the error log: what a failing test needs to see.
            '--wsrep-log-conflicts=ON',
          ];
          // Only node 0's first start founds the cluster; a restart joins the running one.
          if (bootstrap) args.push('--wsrep-new-cluster');
          if (startPosition !== undefined) args.push(`--wsrep-start-position=${startPosition}`);
          bootstrap = false;
          return args;
        },
      });
      nodes.push(node);
    }
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }

  const hosts = nodes.map((n) => `${LOOPBACK}:${n.port}`).join(',');
  return { nodes, rootUrl: `mysql://root@${hosts}/`, stop };
}

/** Polls until every running node of the cluster is synced in one primary component of `expectedSize`. */
export async function waitForGaleraSynced(cluster: GaleraClusterProcess, expectedSize: number, timeoutMs = 60_000): Promise<void> {
  const { createConnection } = await import('mariadb');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const problems: string[] = [];
    for (const node of cluster.nodes) {
      let conn: mariadb.Connection | undefined;
      try {
        conn = await createConnection({ host: LOOPBACK, port: node.port, user: 'root', password: '', connectTimeout: 1_000, socketTimeout: 3_000 });
        const state = await galeraNodeState(conn);
        const rows = (await conn.query("SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'")) as Array<{ Value: string }>;
        if (state) problems.push(`node ${node.port}: ${state}`);
        else if (Number(rows[0]?.Value) !== expectedSize) problems.push(`node ${node.port}: cluster size ${rows[0]?.Value}`);
      } catch (err) {
        problems.push(`node ${node.port}: ${err instanceof Error ? err.message : String(err)}`);
      } finally {
        await conn?.end().catch(() => conn?.destroy());
      }
    }
    if (problems.length === 0) return;
    if (Date.now() > deadline) throw new Error(`Galera cluster not synced after ${timeoutMs} ms:\n  ${problems.join('\n  ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
