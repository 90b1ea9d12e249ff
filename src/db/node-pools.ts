import { EventEmitter } from 'node:events';
import mariadb, { type Connection, type Pool, type PoolConfig } from 'mariadb';
import type { DatabaseHost } from './database-url.js';

/** How often a node marked down is asked whether it serves again. */
const PROBE_INTERVAL_MS = 250;

/** ER_UNKNOWN_COM_ERROR: "WSREP has not yet prepared node for application use" (not in the primary component, or not synced). */
export const WSREP_NOT_READY_ERRNO = 1047;

/** Errors after which this node is not used until a probe finds it serving again. */
const NODE_GONE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'ER_SOCKET_UNEXPECTED_CLOSE',
  'ER_CONNECTION_ALREADY_CLOSED',
  'ER_CMD_CONNECTION_CLOSED',
]);

/** Errors that may mean a dead node or only a busy one: a probe decides. */
const NODE_SLOW_CODES = new Set(['ER_GET_CONNECTION_TIMEOUT', 'ER_CONNECTION_TIMEOUT', 'ER_SOCKET_TIMEOUT', 'ETIMEDOUT']);

type ErrorLike = { code?: string; errno?: number; cause?: unknown };

function classify(err: unknown): 'gone' | 'slow' | undefined {
  for (let e = err as ErrorLike | undefined, depth = 0; typeof e === 'object' && e !== null && depth < 4; depth++) {
    if (e.errno === WSREP_NOT_READY_ERRNO || (e.code !== undefined && NODE_GONE_CODES.has(e.code))) return 'gone';
    if (e.code !== undefined && NODE_SLOW_CODES.has(e.code)) return 'slow';
    e = e.cause as ErrorLike | undefined;
  }
  return undefined;
}

export interface DbNode {
  /** host:port, for logs (never the credentials). */
  readonly label: string;
  readonly host: DatabaseHost;
  /** Replaced by a fresh pool when the node serves again (see markDown). */
  pool: Pool;
  up: boolean;
  /** When it was last marked down (ms since epoch); 0 while it never was. */
  downSince: number;
  probing: boolean;
}

export interface FailoverEvent {
  /** The node that stopped serving, and why (an error code, never a message). */
  node: string;
  reason: string;
  /** The node requests go to now. */
  now: string;
}

/**
 * One connection pool per node of a Galera cluster (DATABASE_URL lists them), the first
 * preferred. A node whose connections fail (refused, reset, closed) or that answers "WSREP not
 * ready" (1047: it left the primary component or is not synced) is marked down at once and
 * requests go to the next node up; a probe asks the node every PROBE_INTERVAL_MS, on a fresh
 * connection, whether it is ready and synced, and marks it up again: requests return to the
 * preferred node within a fraction of a second of its rejoining, without a restart. Statements
 * are never re-sent to another node (a write whose connection died may have committed): the
 * call that saw the failure answers 503, the next goes to the next node.
 *
 * With one host this is one pool and no failover (nothing is ever skipped).
 *
 * Emits 'error' (the pools' connection errors) and 'failover' (FailoverEvent) and 'recovered'
 * ({ node }). The pool counters are sums over the nodes.
 */
export class NodePools extends EventEmitter {
  readonly nodes: DbNode[];
  #closed = false;

  constructor(
    hosts: DatabaseHost[],
    private readonly config: Omit<PoolConfig, 'host' | 'port'>,
    private readonly probeConfig: { user: string; password: string; ssl: PoolConfig['ssl']; connectTimeout: number },
  ) {
    super();
    this.nodes = hosts.map(({ host, port }) => ({
      label: `${host.includes(':') ? `[${host}]` : host}:${port}`,
      host: { host, port },
      pool: this.createPool({ host, port }),
      up: true,
      downSince: 0,
      probing: false,
    }));
  }

  private createPool({ host, port }: DatabaseHost): Pool {
    const pool = mariadb.createPool({ ...this.config, host, port });
    // The connector emits 'error' (lib/pool-promise.js) but its types list only the other events.
    (pool as unknown as EventEmitter).on('error', (err: unknown) => {
      if (this.listenerCount('error') > 0) this.emit('error', err);
    });
    return pool;
  }

  get clustered(): boolean {
    return this.nodes.length > 1;
  }

  /** The first node up; when none is, the one marked down longest ago (it may be back by now). */
  pick(): DbNode {
    const first = this.nodes.find((n) => n.up);
    if (first) return first;
    return this.nodes.reduce((a, b) => (b.downSince < a.downSince ? b : a));
  }

  /** Tells the node's fate from a failed statement or connection: marks it down, or probes it. */
  failed(node: DbNode, err: unknown): void {
    if (!this.clustered || this.#closed) return;
    const kind = classify(err);
    if (kind === 'gone') this.markDown(node, reasonOf(err));
    else if (kind === 'slow') void this.probe(node, true);
  }

  /**
   * Takes the node out of rotation and closes its pool: the connector's pool backs off between
   * failed reconnects (up to 10 s), so the node gets a fresh pool once a probe finds it serving.
   */
  private markDown(node: DbNode, reason: string): void {
    if (node.up) {
      node.up = false;
      node.downSince = Date.now();
      void node.pool.end().catch(() => undefined);
      this.emit('failover', { node: node.label, reason, now: this.pick().label } satisfies FailoverEvent);
    }
    void this.probe(node, false);
  }

  /**
   * Asks the node until it is ready (with `once`, asks once and marks it down if it is not).
   * Only one probe per node runs at a time.
   */
  private async probe(node: DbNode, once: boolean): Promise<void> {
    if (node.probing) return;
    node.probing = true;
    try {
      for (;;) {
        if (this.#closed) return;
        const problem = await this.ask(node);
        if (problem === undefined) {
          if (!node.up) {
            if (this.#closed) return;
            node.pool = this.createPool(node.host);
            node.up = true;
            this.emit('recovered', { node: node.label });
          }
          return;
        }
        if (once) {
          node.probing = false;
          this.markDown(node, problem);
          return;
        }
        await new Promise((r) => setTimeout(r, PROBE_INTERVAL_MS).unref());
      }
    } finally {
      node.probing = false;
    }
  }

  /** undefined when the node serves (connects, and — under Galera — is ready and synced); else why not. */
  private async ask(node: DbNode): Promise<string | undefined> {
    const { host, port } = node.host;
    let conn: Connection | undefined;
    try {
      conn = await mariadb.createConnection({
        host,
        port,
        user: this.probeConfig.user,
        password: this.probeConfig.password,
        ssl: this.probeConfig.ssl,
        connectTimeout: this.probeConfig.connectTimeout,
        socketTimeout: Math.max(1_000, this.probeConfig.connectTimeout * 2),
      });
      const rows = (await conn.query("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_local_state')")) as Array<{
        Variable_name: string;
        Value: string;
      }>;
      const status = Object.fromEntries(rows.map((r) => [r.Variable_name.toLowerCase(), r.Value]));
      // Without Galera the variables are absent: a node that answers serves.
      if (status.wsrep_ready !== undefined && status.wsrep_ready !== 'ON') return 'wsrep_not_ready';
      // 4 = Synced; 2 (donor) still serves, 1 and 3 are catching up.
      if (status.wsrep_local_state !== undefined && !['2', '4'].includes(status.wsrep_local_state)) return 'wsrep_not_synced';
      return undefined;
    } catch (err) {
      return reasonOf(err);
    } finally {
      await conn?.end().catch(() => conn?.destroy());
    }
  }

  activeConnections(): number {
    return this.nodes.reduce((n, node) => n + node.pool.activeConnections(), 0);
  }

  idleConnections(): number {
    return this.nodes.reduce((n, node) => n + node.pool.idleConnections(), 0);
  }

  totalConnections(): number {
    return this.nodes.reduce((n, node) => n + node.pool.totalConnections(), 0);
  }

  taskQueueSize(): number {
    return this.nodes.reduce((n, node) => n + node.pool.taskQueueSize(), 0);
  }

  async end(): Promise<void> {
    this.#closed = true;
    // A node marked down has its pool closed already.
    await Promise.all(this.nodes.map((n) => (n.up ? n.pool.end() : undefined)));
  }
}

function reasonOf(err: unknown): string {
  const e = err as ErrorLike & { cause?: ErrorLike };
  return e?.code ?? e?.cause?.code ?? (e?.errno !== undefined ? `errno ${e.errno}` : 'error');
}
