/**
 * A throwaway MariaDB: a fresh data directory under a base folder, mariadbd on a free loopback
 * port, root with an empty password. Config files are ignored (`--no-defaults`): nothing here
 * touches a system MariaDB.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as mariadb from 'mariadb';
import { requireBinary } from './binaries.js';
import { describeExit, runToCompletion, tailFile, type ExitResult } from './children.js';
import { INSTALL_TIMEOUT_MS } from './installers.js';
import {
  DEFAULT_START_TIMEOUT_MS,
  makeServerDir,
  ManagedServer,
  startWithPortRetry,
  type ManagedProcess,
  type ProbeResult,
  type ServerSpec,
} from './managed-server.js';
import { freePort, LOOPBACK } from './ports.js';

export interface MariaDbProcess extends ManagedProcess {
  /** mysql://root@127.0.0.1:PORT/ — root with an empty password over TCP, no database selected. */
  readonly rootUrl: string;
  readonly socketPath: string;
}

function currentUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? 'root';
  }
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** InnoDB sizes: small so that install and start are quick. Must match between install and start. */
const INNODB_ARGS = ['--innodb-buffer-pool-size=64M', '--innodb-log-file-size=8M'];

/** One more readiness condition on the probe's connection: undefined when ready, else what is missing. */
export type ReadyCheck = (conn: mariadb.Connection) => Promise<string | undefined>;

function mariadbProbe(port: number, pidFile: string, expectedPid: number, socketPath?: string, ready?: ReadyCheck): Promise<ProbeResult> {
  return (async () => {
    let conn: mariadb.Connection | undefined;
    try {
      const where = socketPath === undefined ? { host: LOOPBACK, port } : { socketPath };
      conn = await mariadb.createConnection({ ...where, user: 'root', password: '', connectTimeout: 1_000, socketTimeout: 5_000 });
      const rows = (await conn.query('SELECT 1 AS one, @@pid_file AS pidFile')) as Array<{ one: number; pidFile: string }>;
      if (rows[0]?.pidFile !== pidFile) {
        return { ok: false, error: `port ${port} is answered by another MariaDB (pid file ${rows[0]?.pidFile})`, fatal: true } as const;
      }
      const pid = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
      if (pid !== expectedPid) return { ok: false, error: `pid file says ${pid}, expected ${expectedPid}` } as const;
      const missing = await ready?.(conn);
      return missing === undefined ? ({ ok: true } as const) : ({ ok: false, error: missing } as const);
    } catch (err) {
      const e = err as { errno?: number; message?: string };
      // 1045 access denied, 1698 access denied (unix_socket plugin): retrying cannot help.
      return { ok: false, error: e.message ?? String(err), fatal: e.errno === 1045 || e.errno === 1698 } as const;
    } finally {
      await conn?.end().catch(() => conn?.destroy());
    }
  })();
}

/** TLS for startMariaDb: these PEM files, and TCP clients must use TLS (require_secure_transport). */
export interface MariaDbServerTls {
  certFile: string;
  keyFile: string;
  caFile: string;
}

/**
 * TLS arguments for mariadbd. With TLS required over TCP, the readiness probe and admin work go
 * through the Unix socket (root there needs no TLS).
 */
function mariadbTlsArgs(serverTls: MariaDbServerTls | undefined): string[] {
  if (!serverTls) return [];
  return [
    `--ssl-cert=${serverTls.certFile}`,
    `--ssl-key=${serverTls.keyFile}`,
    `--ssl-ca=${serverTls.caFile}`,
    '--require-secure-transport=ON',
  ];
}

/** mariadb-install-db into dataDir: root@127.0.0.1 with an empty password, no test database. */
async function installDataDir(installDb: string, dir: string, dataDir: string, tmpDir: string, installLog: string): Promise<void> {
  const installFd = openSync(installLog, 'a');
  let installed: ExitResult;
  try {
    installed = await runToCompletion(
      installDb,
      [
        '--no-defaults', // must be first
        `--datadir=${dataDir}`,
        `--tmpdir=${tmpDir}`,
        `--user=${currentUser()}`,
        '--auth-root-authentication-method=normal', // root@localhost/127.0.0.1/::1 with empty password, not unix_socket
        '--skip-test-db',
        '--skip-name-resolve',
        ...INNODB_ARGS,
      ],
      { timeoutMs: INSTALL_TIMEOUT_MS, stdio: ['ignore', installFd, installFd], cwd: dir },
    );
  } finally {
    closeSync(installFd);
  }
  if (installed.code !== 0) {
    throw new Error(`mariadb-install-db failed (${describeExit(installed)}). Log ${installLog}:\n${await tailFile(installLog)}`);
  }
}

/**
 * Initialises a fresh MariaDB data directory under baseDir and starts mariadbd on a free
 * loopback port (or opts.port). root@127.0.0.1 has an empty password; the server runs in UTC
 * with utf8mb4, no binlog and small InnoDB files. With `tls`, TCP clients must use TLS (root
 * then gets in over `socketPath` only, rootUrl does not work).
 */
export async function startMariaDb(opts: {
  baseDir: string;
  port?: number;
  startTimeoutMs?: number;
  tls?: MariaDbServerTls;
  /** More server arguments, asked for at every start (a Galera node's first start differs from its restarts). */
  extraArgs?: (port: number) => string[];
  /** Leave the data directory empty (a Galera joiner receives it by state transfer). */
  emptyDataDir?: boolean;
  /** Runs before every start of mariadbd, with the data directory. */
  beforeStart?: (dataDir: string) => void;
  /** Runs on restart() before mariadbd starts again, with its binary and arguments (a Galera node recovers its position). */
  beforeRestart?: (bin: string, args: string[]) => Promise<void>;
  /** Ready only when this also holds (e.g. a Galera node is synced). */
  ready?: ReadyCheck;
  /** Folder name prefix under baseDir (default "mariadb-"). */
  dirPrefix?: string;
}): Promise<MariaDbProcess> {
  const mariadbd = requireBinary('mariadbd');
  const installDb = requireBinary('mariadb-install-db');
  const dir = await makeServerDir(opts.baseDir, opts.dirPrefix ?? 'mariadb-');
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'mariadbd.log');
  const installLog = path.join(dir, 'install-db.log');
  const pidFile = path.join(dir, 'mariadbd.pid');
  // A private temp folder: the OS one is shared with every other process (and their cleanups).
  const tmpDir = path.join(dir, 'tmp');
  mkdirSync(tmpDir, { recursive: true });

  // Unix socket paths are limited to 107 bytes; fall back to a short folder under the OS temp dir.
  let socketPath = path.join(dir, 'mysqld.sock');
  let socketDir: string | undefined;
  if (Buffer.byteLength(socketPath) > 100) {
    socketDir = await mkdtemp(path.join(os.tmpdir(), 'sd-sock-'));
    socketPath = path.join(socketDir, 'mysqld.sock');
  }

  if (opts.emptyDataDir) mkdirSync(dataDir, { recursive: true });
  else await installDataDir(installDb, dir, dataDir, tmpDir, installLog);

  const server = new MariaDbServer(
    {
      name: 'mariadbd',
      bin: mariadbd,
      logFile,
      cwd: dir,
      startTimeoutMs: opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      beforeStart: () => {
        if (socketDir) mkdirSync(socketDir, { recursive: true });
        opts.beforeStart?.(dataDir);
      },
      beforeRestart: opts.beforeRestart,
      args: (port) => [
        '--no-defaults', // must be first
        `--datadir=${dataDir}`,
        `--port=${port}`,
        `--bind-address=${LOOPBACK}`,
        `--socket=${socketPath}`,
        `--pid-file=${pidFile}`,
        `--tmpdir=${tmpDir}`,
        '--skip-name-resolve',
        '--skip-log-bin',
        '--default-time-zone=+00:00',
        '--character-set-server=utf8mb4',
        '--collation-server=utf8mb4_general_ci',
        '--max-connections=500',
        // Committed transactions survive a SIGKILL of mariadbd (the log is in the OS page cache);
        // only an OS crash could lose the last second. Much faster than an fsync per commit.
        '--innodb-flush-log-at-trx-commit=2',
        ...INNODB_ARGS,
        ...(isRoot() ? ['--user=root'] : []), // mariadbd refuses to run as root without it
        ...mariadbTlsArgs(opts.tls),
        ...(opts.extraArgs?.(port) ?? []),
      ],
      probe: (port, pid) => mariadbProbe(port, pidFile, pid, opts.tls ? socketPath : undefined, opts.ready),
    },
    dir,
    opts.port ?? (await freePort()),
    socketPath,
    socketDir,
  );
  await startWithPortRetry(server, opts.port !== undefined, freePort);
  return server;
}

class MariaDbServer extends ManagedServer implements MariaDbProcess {
  constructor(
    spec: ServerSpec,
    dataDir: string,
    port: number,
    readonly socketPath: string,
    private readonly socketDir: string | undefined,
  ) {
    super(spec, dataDir, port);
  }

  get rootUrl(): string {
    return `mysql://root@${LOOPBACK}:${this.port}/`;
  }

  override async stop(): Promise<void> {
    await super.stop();
    if (this.socketDir) await rm(this.socketDir, { recursive: true, force: true });
  }
}

function parseMysqlUrl(url: string): { host: string; port: number; user: string; password: string; database: string } {
  const u = new URL(url);
  if (u.protocol !== 'mysql:' && u.protocol !== 'mariadb:') throw new Error(`not a mysql:// URL: ${u.protocol}`);
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 3306,
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')),
  };
}

/** CREATE DATABASE IF NOT EXISTS `name`; returns rootUrl with the database as its path. */
export async function createDatabase(rootUrl: string, name: string): Promise<string> {
  if (!/^[A-Za-z0-9_]{1,64}$/.test(name)) throw new Error(`invalid database name: ${JSON.stringify(name)}`);
  const { host, port, user, password } = parseMysqlUrl(rootUrl);
  const conn = await mariadb.createConnection({ host, port, user, password, connectTimeout: 5_000, socketTimeout: 30_000 });
  try {
    await conn.query(`CREATE DATABASE IF NOT EXISTS \`${name}\``);
  } finally {
    await conn.end().catch(() => conn.destroy());
  }
  const u = new URL(rootUrl);
  u.pathname = `/${name}`;
  return u.toString();
}
