import type { SecureContextOptions } from 'node:tls';
import type { Connection, PoolConnection } from 'mariadb';
import { drizzle, type MySqlRemoteDatabase, type RemoteCallback } from 'drizzle-orm/mysql-proxy';
import { DomainError, StoreUnavailableError, type StoreUnavailableReason } from '../domain/errors.js';
import { parseDatabaseUrl } from './database-url.js';
import { NodePools, WSREP_NOT_READY_ERRNO, type DbNode } from './node-pools.js';

export type Db = MySqlRemoteDatabase;

export interface DatabaseOptions {
  url: string;
  poolSize: number;
  acquireTimeoutMs: number;
  queryTimeoutMs: number;
  connectTimeoutMs: number;
  /** TLS with the server's certificate verified (against `ca`, else the system's CAs); absent = plain TCP. */
  tls?: Pick<SecureContextOptions, 'ca' | 'cert' | 'key'> | undefined;
}

type Queryable = Pick<Connection, 'query'>;

/** A DATETIME literal in UTC, as drizzle writes a datetime column's value. */
function utcDatetime(d: Date): string {
  return d.toISOString().replace('T', ' ').replace('Z', '');
}

/**
 * Dates in raw SQL fragments (`LEAST(col, ${now})`) reach the connector unmapped, and it writes
 * a Date in the process's local time zone: the stored expiry would depend on TZ. The session
 * time zone is UTC, so every Date parameter goes out as a UTC literal.
 */
function utcParams(params: unknown[]): unknown[] {
  return params.some((p) => p instanceof Date) ? params.map((p) => (p instanceof Date ? utcDatetime(p) : p)) : params;
}

/**
 * drizzle's mysql-proxy driver over one mariadb pool or connection. drizzle has no driver for
 * the mariadb connector; the proxy driver only needs "run this SQL": rows as arrays for
 * selects, the OK packet for writes.
 */
function callbackFor(target: Queryable): RemoteCallback {
  return async (sql, rawParams, method) => {
    const params = utcParams(rawParams);
    if (method === 'all') {
      const rows = (await target.query({ sql, rowsAsArray: true }, params)) as unknown[];
      return { rows };
    }
    const result = (await target.query(sql, params)) as { affectedRows?: number; insertId?: number };
    return { rows: [result] };
  };
}

const UNAVAILABLE_CODES = new Set([
  'ER_GET_CONNECTION_TIMEOUT',
  'ER_CONNECTION_TIMEOUT',
  'ER_POOL_ALREADY_CLOSED',
  // A Galera node's pool closed by failover while a request waited for one of its connections.
  'ER_CLOSING_POOL',
  'ER_POOL_NO_CONNECTION',
  'ER_SOCKET_UNEXPECTED_CLOSE',
  'ER_SOCKET_TIMEOUT',
  'ER_CMD_CONNECTION_CLOSED',
  'ER_CONNECTION_ALREADY_CLOSED',
  'ER_STATEMENT_TIMEOUT',
  'ER_QUERY_INTERRUPTED',
  'ER_LOCK_WAIT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
]);

/** Why MariaDB could not answer a call (StoreUnavailableReason), from the driver's error code or errno. */
function reasonOf(code: string | undefined, errno: number | undefined): StoreUnavailableReason {
  if (code === 'ER_GET_CONNECTION_TIMEOUT') return 'acquire_timeout';
  if (code === 'ER_CONNECTION_TIMEOUT' || code === 'ETIMEDOUT') return 'connect_timeout';
  // 1969: max_statement_time exceeded (DB_QUERY_TIMEOUT_MS, set on each connection).
  if (code === 'ER_STATEMENT_TIMEOUT' || code === 'ER_QUERY_INTERRUPTED' || errno === 1969) return 'statement_timeout';
  if (code === 'ER_LOCK_WAIT_TIMEOUT') return 'lock_wait_timeout';
  if (errno === WSREP_NOT_READY_ERRNO) return 'node_not_ready';
  return 'connection';
}

/**
 * The StoreUnavailableError for errors that mean "MariaDB cannot answer now" rather than "this
 * query is wrong" (with why: its reason and the driver's code), or null.
 */
function unavailable(err: unknown): StoreUnavailableError | null {
  // drizzle wraps driver errors (DrizzleQueryError); the driver's error is the cause.
  for (let e = err as { code?: string; fatal?: boolean; errno?: number; cause?: unknown } | undefined, depth = 0; depth < 4; depth++) {
    if (typeof e !== 'object' || e === null) return null;
    if (e instanceof StoreUnavailableError) return e;
    // 1047: a Galera node that left the primary component (or is not synced yet) refuses statements.
    if (e.fatal === true || (e.code !== undefined && UNAVAILABLE_CODES.has(e.code)) || e.errno === 1969 || e.errno === WSREP_NOT_READY_ERRNO) {
      const error = new StoreUnavailableError(reasonOf(e.code, e.errno));
      error.driverCode = e.code;
      return error;
    }
    e = e.cause as typeof e;
  }
  return null;
}

/** True for errors that mean "MariaDB cannot answer now" rather than "this query is wrong". */
export function isUnavailable(err: unknown): boolean {
  return unavailable(err) !== null;
}

/** The driver's errno behind a (possibly drizzle-wrapped) error. */
export function errnoOf(err: unknown): number | undefined {
  const e = err as { errno?: number; cause?: { errno?: number } } | undefined;
  return e?.errno ?? e?.cause?.errno;
}

/**
 * A MariaDB error as it may be logged: its codes and which statement failed, never the
 * statement's values. drizzle's error message lists the parameters, and the server's message
 * can quote them ("Duplicate entry 'shop-…'"): session data, subjects and IPs would reach the
 * logs. errno stays, so callers still tell a duplicate key or a deadlock apart.
 */
export class DatabaseError extends Error {
  readonly code: string | undefined;
  readonly errno: number | undefined;
  readonly sqlState: string | undefined;
  /** The statement's verb and table, e.g. "insert sessions". */
  readonly statement: string;

  constructor(driver: { code?: string; errno?: number; sqlState?: string }, statement: string) {
    super(`MariaDB error ${driver.code ?? 'unknown'} (errno ${driver.errno ?? '?'}, SQLSTATE ${driver.sqlState ?? '?'}) in ${statement}`);
    this.name = 'DatabaseError';
    this.code = driver.code;
    this.errno = driver.errno;
    this.sqlState = driver.sqlState;
    this.statement = statement;
  }
}

/** Names a statement by its verb and first table, from its SQL text (values are placeholders there, never read). */
export function statementName(sql: string | undefined): string {
  const verb = /^\s*(\w+)/.exec(sql ?? '')?.[1]?.toLowerCase() ?? 'statement';
  const table = /\b(?:from|into|update)\s+`?(\w+)/i.exec(sql ?? '')?.[1];
  return table === undefined ? verb : `${verb} ${table}`;
}

type DriverError = { code?: string; errno?: number; sqlState?: string; query?: string; sql?: string; cause?: unknown };

/**
 * What leaves this module: StoreUnavailableError, a DatabaseError without values, or a
 * non-database error as it was. A deadlock or lost certification (1213) that is still there
 * after the retries is contention, not a bad request: the caller gets a 503 to retry later
 * (the statement was rolled back, nothing of it was applied).
 */
function storeError(err: unknown): unknown {
  const down = unavailable(err);
  if (down !== null) return down;
  if (errnoOf(err) === DEADLOCK_ERRNO) return new StoreUnavailableError('contention');
  if (err instanceof DatabaseError || err instanceof DomainError || typeof err !== 'object' || err === null) return err;
  // drizzle's DrizzleQueryError carries the SQL text (`query`); the connector's error, its cause, the codes.
  let sql: string | undefined;
  for (let e = err as DriverError | undefined, depth = 0; typeof e === 'object' && e !== null && depth < 4; depth++) {
    sql ??= e.query ?? e.sql;
    if (e.errno !== undefined || e.sqlState !== undefined) return new DatabaseError(e, statementName(sql));
    e = e.cause as DriverError | undefined;
  }
  return (err as DriverError).query === undefined ? err : new DatabaseError({}, statementName(sql));
}

/**
 * ER_LOCK_DEADLOCK: InnoDB chose this transaction as a deadlock victim, or — under Galera — it
 * lost certification against a conflicting write committed on another node (reported at the
 * statement or at COMMIT). Either way it was rolled back and may run again.
 */
const DEADLOCK_ERRNO = 1213;

/**
 * Under Galera (several hosts in DATABASE_URL) every statement first waits until this node has
 * applied every transaction the cluster committed before it started (wsrep_sync_wait: 1 reads
 * and BEGIN, 2 UPDATE and DELETE, 4 INSERT and REPLACE). Replicas on different nodes then read
 * their own and each other's acknowledged writes, and a conditional write never misses a row
 * committed elsewhere. Its cost is one round of the group communication per statement
 * (docs/benchmarks.md, README "Scaling past one database").
 */
const GALERA_SYNC_WAIT = 7;

/**
 * The wait before attempt `attempt + 1` after a deadlock: random, so that contending
 * transactions (creates for one capped subject) retry apart, not in step, and doubling, so
 * that a hot row written through several Galera nodes (whose conflicts show only at
 * certification, a replication round later) gets room: at most 5, 10, 20, 40, 80 ms.
 */
function retryPause(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.random() * 5 * 2 ** (attempt - 1)));
}

/** What runs at the edge of a transaction, besides its statements. */
export interface TransactionHooks<T> {
  /**
   * Runs once the statements succeeded, with their result, on the still-open transaction right
   * before COMMIT: nothing of the transaction is visible to others yet. A rejection rolls it back.
   */
  beforeCommit?: ((result: T) => Promise<void>) | undefined;
}

/** Where one transaction stands against its deadline. */
interface TransactionDeadline {
  /** The caller's deadline passed. */
  expired: boolean;
  /** COMMIT was sent. */
  committing: boolean;
  /** Waiting for a connection, or running the statements (logged when the deadline fires). */
  stage: 'acquire' | 'statements';
}

/** `err` with the stage its call was at. */
function staged(err: StoreUnavailableError, stage: string): StoreUnavailableError {
  err.stage = stage;
  return err;
}

/** ER_DUP_ENTRY: a primary or unique key is taken. */
export const DUPLICATE_KEY_ERRNO = 1062;

/** What one attempt of a transaction's body decided: commit it, or roll it back (it changed nothing the caller wants). */
interface Settled<T> {
  commit: boolean;
  value: T;
}

export class Database {
  /** One pool per host of DATABASE_URL (one, without Galera); requests go to the first one up. */
  readonly pool: NodePools;
  /** drizzle over the node serving now: each statement goes to the node picked when it runs. */
  readonly db: Db;
  /**
   * The longest any call may take, enforced here: queryTimeout is server-side
   * (max_statement_time), so a server that stopped answering (paused, partitioned) would
   * otherwise hold a request forever.
   */
  private readonly deadlineMs: number;
  /** How long a COMMIT sent at the deadline is waited for (the statement timeout). */
  private readonly commitWaitMs: number;

  constructor(options: DatabaseOptions) {
    const url = parseDatabaseUrl(options.url);
    const ssl = options.tls === undefined ? undefined : { ...options.tls, rejectUnauthorized: true };
    // max_statement_time is set here, not through the connector's queryTimeout option: mariadb
    // 3.5's connection drops the promise of its SET max_statement_time (lib/connection.js
    // executeSessionTimeout), so a connection reset right then (a node killed while pools
    // reconnect) was an unhandledRejection, which would end the process. initSql's failure
    // rejects the connection attempt like any other connect error.
    const initSql = ["SET time_zone = '+00:00'", `SET SESSION max_statement_time = ${options.queryTimeoutMs / 1000}`];
    if (url.hosts.length > 1) initSql.push(`SET SESSION wsrep_sync_wait = ${GALERA_SYNC_WAIT}`);
    this.pool = new NodePools(
      url.hosts,
      {
        user: url.user,
        password: url.password,
        ssl,
        database: url.database,
        connectionLimit: options.poolSize,
        // Keep every connection once made (the connector's default, stated): with Redis down all
        // calls come here, and a pool that must first open connections answers 503s.
        minimumIdle: options.poolSize,
        // A connection idle for 500 ms is pinged before it is handed out, and one whose ping
        // misses pingTimeout is closed. The connector's 250 ms is a few turns of a starved event
        // loop (a loaded machine): healthy connections were closed one after the other, new ones
        // missed DB_CONNECT_TIMEOUT_MS the same way, and pools of 10 held 0–2 when Redis went
        // away. A ping is a statement: it gets the statement timeout.
        pingTimeout: options.queryTimeoutMs,
        acquireTimeout: options.acquireTimeoutMs,
        connectTimeout: options.connectTimeoutMs,
        // Without dateStrings DATETIME reads go through the local time zone and lose milliseconds.
        dateStrings: true,
        insertIdAsNumber: true,
        bigIntAsNumber: true,
        initSql,
        // A dead server must cost a request milliseconds; do not queue behind reconnect attempts.
        initializationTimeout: options.connectTimeoutMs,
        leakDetectionTimeout: 0,
        // The connector's error messages would list the statement's values.
        logParam: false,
        // A data write sends its transaction's statements in one query (batchTransaction). Values
        // still go as parameters, escaped by the connector: no statement text is built from input.
        multipleStatements: true,
      },
      { user: url.user, password: url.password, ssl, connectTimeout: options.connectTimeoutMs },
    );
    this.db = drizzle(callbackFor(this.routed()));
    this.deadlineMs = options.acquireTimeoutMs + options.queryTimeoutMs;
    this.commitWaitMs = options.queryTimeoutMs;
  }

  /** A Queryable that sends each statement to the node up now and reports a failing node. */
  private routed(): Queryable {
    return {
      query: (async (sql: unknown, values?: unknown) => {
        const node = this.pool.pick();
        try {
          return await node.pool.query(sql as string, values);
        } catch (err) {
          this.pool.failed(node, err);
          throw err;
        }
      }) as Queryable['query'],
    };
  }

  /** A connection of the node up now; a node that cannot give one is reported. */
  private async connection(): Promise<{ node: DbNode; conn: PoolConnection }> {
    const node = this.pool.pick();
    try {
      return { node, conn: await node.pool.getConnection() };
    } catch (err) {
      this.pool.failed(node, err);
      throw err;
    }
  }

  /** `err` with the pool's state now (a deadline fired: was the call waiting for a connection?). */
  private withPool(err: StoreUnavailableError): StoreUnavailableError {
    err.pool ??= { active: this.pool.activeConnections(), idle: this.pool.idleConnections(), waiting: this.pool.taskQueueSize() };
    return err;
  }

  /** What leaves this module (storeError), a 503 with the pool's state. */
  private failure(err: unknown): unknown {
    const e = storeError(err);
    return e instanceof StoreUnavailableError ? this.withPool(e) : e;
  }

  /** Rejects with StoreUnavailableError when `work` has not settled within the deadline. */
  private withDeadline<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.withPool(new StoreUnavailableError('call_deadline'))), this.deadlineMs);
    });
    return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
  }

  /**
   * Runs `work` (autocommitted statements) and turns connection-level failures into
   * StoreUnavailableError. A statement that lost a deadlock or — under Galera — certification
   * was rolled back on its own: `work` runs again, as a transaction would.
   */
  async run<T>(work: (db: Db) => Promise<T>, attempts = 6): Promise<T> {
    try {
      return await this.withDeadline(this.runAttempts(work, attempts));
    } catch (err) {
      throw this.failure(err);
    }
  }

  private async runAttempts<T>(work: (db: Db) => Promise<T>, attempts: number): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await work(this.db);
      } catch (err) {
        if (errnoOf(err) !== DEADLOCK_ERRNO || attempt >= attempts) throw err;
        await retryPause(attempt);
      }
    }
  }

  /**
   * One transaction on one pooled connection (the proxy driver has no db.transaction()).
   * Retried on deadlock, which InnoDB resolves by rolling one side back, and on a Galera
   * certification failure (the same 1213, often at COMMIT); each attempt runs `work` and
   * `beforeCommit` again.
   */
  transaction<T>(work: (tx: Db) => Promise<T>, hooks: TransactionHooks<T> = {}, attempts = 6): Promise<T> {
    return this.withTransactionDeadline((deadline) =>
      this.transactionAttempts(
        async (conn) => {
          await conn.beginTransaction();
          return { commit: true, value: await work(drizzle(callbackFor(conn))) };
        },
        hooks,
        attempts,
        deadline,
      ),
    );
  }

  /**
   * One transaction whose statements (`sql`, several separated by semicolons) go to MariaDB in
   * one query, with its START TRANSACTION: one round trip where statement after statement took
   * one each. `settle` reads the statements' results (one per statement, in order) and says
   * whether to commit — a write that did not take rolls back, its outbox row with it — and what
   * to answer. `hooks.beforeCommit` runs before a COMMIT only. Retried and bounded like
   * transaction().
   */
  batchTransaction<T>(sql: string, params: unknown[], settle: (results: unknown[]) => Settled<T>, hooks: TransactionHooks<T> = {}, attempts = 6): Promise<T> {
    const text = `START TRANSACTION;${sql}`;
    return this.withTransactionDeadline((deadline) =>
      this.transactionAttempts(
        async (conn) => {
          const results = (await conn.query(text, utcParams(params))) as unknown[];
          // The first result is START TRANSACTION's.
          return settle(results.slice(1));
        },
        hooks,
        attempts,
        deadline,
      ),
    );
  }

  /** One statement from its text and values (no query builder per call), autocommitted; like run(). */
  query(sql: string, params: unknown[]): Promise<unknown> {
    return this.run(() => this.routed().query(sql, utcParams(params)));
  }

  private withTransactionDeadline<T>(attempts: (deadline: TransactionDeadline) => Promise<T>): Promise<T> {
    // Past the deadline the caller gets a 503, and the transaction rolls back instead of
    // committing: a 503 never hides a committed change. Once COMMIT is sent the caller waits for
    // its answer instead (a committed change is answered as such), up to the statement timeout:
    // a server that does not answer a COMMIT leaves its outcome unknown, and only that is a 503
    // after which the change may have happened (the cache outbox covers it).
    const attempt: TransactionDeadline = { expired: false, committing: false, stage: 'acquire' };
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        attempt.expired = true;
        if (!attempt.committing) reject(this.withPool(staged(new StoreUnavailableError('call_deadline'), attempt.stage)));
        else timer = setTimeout(() => reject(this.withPool(staged(new StoreUnavailableError('commit_wait'), 'commit'))), this.commitWaitMs);
      }, this.deadlineMs);
    });
    return Promise.race([attempts(attempt), deadline]).finally(() => clearTimeout(timer));
  }

  private async transactionAttempts<T>(
    body: (conn: PoolConnection) => Promise<Settled<T>>,
    hooks: TransactionHooks<T>,
    attempts: number,
    deadline: TransactionDeadline,
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let conn: PoolConnection | undefined;
      let node: DbNode | undefined;
      try {
        deadline.stage = 'acquire';
        ({ node, conn } = await this.connection());
        deadline.stage = 'statements';
        const { commit, value } = await body(conn);
        if (!commit) {
          await conn.rollback();
          return value;
        }
        await hooks.beforeCommit?.(value);
        // The caller was answered 503 already: roll back rather than commit behind its back.
        if (deadline.expired) throw new StoreUnavailableError('call_deadline');
        deadline.committing = true;
        await conn.commit();
        return value;
      } catch (err) {
        deadline.committing = false;
        if (conn !== undefined) {
          this.pool.failed(node!, err);
          await conn.rollback().catch(() => undefined);
        }
        // Past the deadline the caller has its 503: no retry commits behind it.
        if (errnoOf(err) === DEADLOCK_ERRNO && attempt < attempts && !deadline.expired) {
          await retryPause(attempt);
          continue;
        }
        throw this.failure(err);
      } finally {
        if (conn !== undefined) await conn.release().catch(() => undefined);
      }
    }
  }

  /** Runs `work` on one dedicated connection (for GET_LOCK, which is held per connection). */
  async withConnection<T>(work: (conn: PoolConnection) => Promise<T>): Promise<T> {
    let conn: PoolConnection | undefined;
    let node: DbNode | undefined;
    try {
      ({ node, conn } = await this.connection());
      return await work(conn);
    } catch (err) {
      if (conn !== undefined) this.pool.failed(node!, err);
      throw this.failure(err);
    } finally {
      if (conn !== undefined) await conn.release().catch(() => undefined);
    }
  }

  async ping(): Promise<void> {
    await this.run(async () => {
      await this.routed().query('SELECT 1');
    });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
