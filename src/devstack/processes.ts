/**
 * Throwaway MariaDB and Redis servers for development, tests and fault-injection tests.
 *
 * Every server gets its own folder under a caller-chosen base directory and a free loopback
 * port. Children are never left behind: they are SIGKILLed from a process 'exit' handler and,
 * on Linux, started through `setpriv --pdeathsig SIGKILL` so that the kernel kills them even
 * when this process dies from a signal (SIGKILL included) and no JavaScript runs.
 *
 * Nothing here touches a system MariaDB/Redis: config files are ignored (`--no-defaults`,
 * explicit redis arguments) and only ports handed out by the OS are used.
 */
import { spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as mariadb from 'mariadb';

const LOOPBACK = '127.0.0.1';
const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
const KILL_WAIT_MS = 5_000;
export const INSTALL_TIMEOUT_MS = 60_000;
export const APT_TIMEOUT_MS = 15 * 60_000;
/** Name of the marker file holding the pid of the node process that owns a server folder. */
export const OWNER_FILE = 'owner.pid';

// ---------------------------------------------------------------------------------------------
// Ports

/** Asks the OS for a free loopback TCP port (bind to port 0, read it back, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: LOOPBACK, port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close((err) => (err ? reject(err) : port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

/** True when nothing listens on (and nothing holds) the given loopback port right now. */
export async function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ host: LOOPBACK, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

// ---------------------------------------------------------------------------------------------
// Binaries

const EXTRA_BIN_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/bin', '/usr/local/bin', '/bin'];

/** Absolute path of an executable found on PATH or in the usual sbin/bin folders, or undefined. */
export function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...EXTRA_BIN_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function requireBinary(name: string): string {
  const found = findBinary(name);
  if (!found) {
    throw new Error(`${name} not found (install mariadb-server and redis-server, or call ensureServerBinaries())`);
  }
  return found;
}

const SERVER_BINARIES = ['mariadbd', 'mariadb-install-db', 'redis-server'] as const;

/**
 * Installs MariaDB and Redis with apt-get when `mariadbd`, `mariadb-install-db` or `redis-server`
 * is missing (clean CI machines). Debian's packages may auto-start system services on
 * 3306/6379; we never use those.
 */
export async function ensureServerBinaries(log: (msg: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<void> {
  const missing = SERVER_BINARIES.filter((name) => !findBinary(name));
  if (missing.length === 0) return;
  log(`devstack: missing ${missing.join(', ')}; installing mariadb-server and redis-server with apt-get`);
  const aptGet = findBinary('apt-get');
  if (!aptGet) throw new Error(`missing ${missing.join(', ')} and apt-get is not available: install MariaDB (mariadbd) and Redis yourself`);
  let prefix: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    const sudo = findBinary('sudo');
    if (!sudo) throw new Error(`missing ${missing.join(', ')}; not root and no sudo: run "apt-get install -y mariadb-server redis-server" as root`);
    prefix = [sudo, '-n'];
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = async (args: string[]) => {
    const [bin, ...rest] = [...prefix, aptGet, ...args] as [string, ...string[]];
    const result = await runToCompletion(bin, rest, { env, timeoutMs: APT_TIMEOUT_MS, stdio: ['ignore', 2, 2] });
    if (result.code !== 0) throw new Error(`apt-get ${args.join(' ')} failed (${describeExit(result)})`);
  };
  await run(['update']);
  await run(['install', '-y', '--no-install-recommends', 'mariadb-server', 'redis-server']);
  const stillMissing = SERVER_BINARIES.filter((name) => !findBinary(name));
  if (stillMissing.length > 0) throw new Error(`still missing after apt-get install: ${stillMissing.join(', ')}`);
  log('devstack: mariadb-server and redis-server installed');
}

/** Packages for the headless browser tests: the browser and one font family so that text renders on a bare machine. */
const CHROMIUM_PACKAGES = ['chromium', 'fonts-liberation'] as const;
let chromiumInstall: Promise<string> | undefined;

/**
 * Installs Debian's `chromium` with apt-get when it is missing (clean CI machines) and returns
 * the path of its executable. Recommended packages are skipped: they pull in systemd, udev,
 * avahi-daemon and the printing stack, none of which a headless browser needs. Concurrent callers
 * in one process share one install; other processes wait for the dpkg lock.
 */
export function ensureChromium(log: (msg: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<string> {
  const found = findBinary('chromium');
  if (found) return Promise.resolve(found);
  chromiumInstall ??= installChromium(log).finally(() => {
    chromiumInstall = undefined;
  });
  return chromiumInstall;
}

async function installChromium(log: (msg: string) => void): Promise<string> {
  log(`devstack: chromium missing; installing ${CHROMIUM_PACKAGES.join(', ')} with apt-get`);
  const aptGet = findBinary('apt-get');
  if (!aptGet) throw new Error('chromium is missing and apt-get is not available: install Chromium yourself');
  let prefix: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    const sudo = findBinary('sudo');
    if (!sudo) throw new Error(`chromium is missing; not root and no sudo: run "apt-get install -y --no-install-recommends ${CHROMIUM_PACKAGES.join(' ')}" as root`);
    prefix = [sudo, '-n'];
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const started = Date.now();
  const run = async (args: string[]) => {
    const [bin, ...rest] = [...prefix, aptGet, '-o', 'DPkg::Lock::Timeout=300', ...args] as [string, ...string[]];
    const result = await runToCompletion(bin, rest, { env, timeoutMs: APT_TIMEOUT_MS, stdio: ['ignore', 2, 2] });
    if (result.code !== 0) throw new Error(`apt-get ${args.join(' ')} failed (${describeExit(result)})`);
  };
  await run(['update']);
  await run(['install', '-y', '--no-install-recommends', ...CHROMIUM_PACKAGES]);
  const installed = findBinary('chromium');
  if (!installed) throw new Error('still no chromium executable after apt-get install');
  log(`devstack: chromium installed at ${installed} in ${Math.round((Date.now() - started) / 1000)} s`);
  return installed;
}

// ---------------------------------------------------------------------------------------------
// Child process bookkeeping

const liveChildren = new Set<ChildProcess>();
let exitHandlerInstalled = false;

function track(child: ChildProcess): void {
  if (!exitHandlerInstalled) {
    exitHandlerInstalled = true;
    // Last resort: if the parent exits with servers still running, kill them (SIGKILL also ends
    // stopped processes). 'exit' handlers must be synchronous, which process.kill is.
    process.on('exit', () => {
      for (const c of liveChildren) {
        if (c.pid !== undefined) {
          try {
            process.kill(c.pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }
    });
  }
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  child.once('error', () => {
    if (child.pid === undefined) liveChildren.delete(child);
  });
}

let setprivPath: string | null | undefined;
/** `setpriv --pdeathsig SIGKILL --` prefix on Linux when util-linux supports it, else []. */
function deathSignalPrefix(): string[] {
  if (setprivPath === undefined) {
    setprivPath = null;
    if (process.platform === 'linux') {
      const candidate = findBinary('setpriv');
      if (candidate && spawnSync(candidate, ['--pdeathsig', 'SIGKILL', '--', 'true'], { stdio: 'ignore', timeout: 5_000 }).status === 0) {
        setprivPath = candidate;
      }
    }
  }
  return setprivPath ? [setprivPath, '--pdeathsig', 'SIGKILL', '--'] : [];
}

interface ExitResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

export function describeExit(r: ExitResult): string {
  if (r.error) return r.error.message;
  return r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
}

/** Resolves when the child has exited (or failed to spawn). Never rejects. */
function exitPromise(child: ChildProcess): Promise<ExitResult> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode as NodeJS.Signals | null });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => {
      if (child.pid === undefined) resolve({ code: null, signal: null, error });
    });
  });
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  const ac = new AbortController();
  try {
    return await Promise.race([promise, sleep(ms, undefined, { signal: ac.signal }).catch(() => undefined)]);
  } finally {
    ac.abort();
  }
}

/** Runs a command to completion with a hard time limit (SIGKILL on timeout). */
export async function runToCompletion(
  bin: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs: number; stdio: StdioOptions; cwd?: string },
): Promise<ExitResult> {
  const child = spawn(bin, args, { env: opts.env ?? process.env, stdio: opts.stdio, cwd: opts.cwd });
  track(child);
  const done = exitPromise(child);
  const result = await withTimeout(done, opts.timeoutMs);
  if (result) return result;
  child.kill('SIGKILL');
  await withTimeout(done, KILL_WAIT_MS);
  return { code: null, signal: 'SIGKILL', error: new Error(`${path.basename(bin)} timed out after ${opts.timeoutMs} ms`) };
}

/** Last lines of a log file (for error messages). */
export async function tailFile(file: string, lines = 30, maxBytes = 16_384): Promise<string> {
  try {
    const handle = await open(file, 'r');
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, maxBytes);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      return buffer.toString('utf8').split('\n').slice(-lines - 1).join('\n').trimEnd();
    } finally {
      await handle.close();
    }
  } catch (err) {
    return `(could not read ${file}: ${(err as Error).message})`;
  }
}

function writeOwnerFile(dir: string): void {
  writeFileSync(path.join(dir, OWNER_FILE), `${process.pid}\n`);
}

/**
 * Removes `<prefix>-*` server folders under baseDir whose owning node process (see OWNER_FILE)
 * is gone, e.g. after a run that was SIGKILLed. Folders of live owners are left alone.
 */
export async function removeStaleServerDirs(baseDir: string, prefixes: readonly string[] = ['mariadb-', 'redis-']): Promise<string[]> {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = await readdir(baseDir);
  } catch {
    return removed;
  }
  for (const entry of entries) {
    if (!prefixes.some((p) => entry.startsWith(p))) continue;
    const dir = path.join(baseDir, entry);
    let ownerAlive = false;
    try {
      const pid = Number.parseInt(await readFile(path.join(dir, OWNER_FILE), 'utf8'), 10);
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          ownerAlive = true;
        } catch (err) {
          ownerAlive = (err as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
    } catch {
      ownerAlive = false;
    }
    if (!ownerAlive) {
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------
// Managed servers

export interface ManagedProcess {
  /** pid of the current server process (changes on restart()); 0 when it was never started. */
  readonly pid: number;
  readonly port: number;
  /** This server's own folder under baseDir (logs, data, pid/socket files). */
  readonly dataDir: string;
  /** Path of the server's stdout/stderr log. */
  readonly logFile: string;
  /** True while the current server process has not exited (a SIGSTOPped server is running). */
  readonly running: boolean;
  /** Sends a raw signal (SIGKILL, SIGSTOP, SIGCONT, ...) to the server. No-op when not running. */
  kill(signal?: NodeJS.Signals): void;
  /** Starts the server again on the same port and data dir (stopping it first if it still runs) and waits until ready. */
  restart(): Promise<void>;
  /** Graceful stop: SIGTERM (+SIGCONT), SIGKILL after a grace period; waits for exit. Idempotent. */
  stop(): Promise<void>;
}

export interface MariaDbProcess extends ManagedProcess {
  /** mysql://root@127.0.0.1:PORT/ — root with an empty password over TCP, no database selected. */
  readonly rootUrl: string;
  readonly socketPath: string;
}

export interface RedisProcess extends ManagedProcess {
  /** redis://127.0.0.1:PORT */
  readonly url: string;
}

type ProbeResult = { ok: true } | { ok: false; error: string; fatal?: boolean };

interface ServerSpec {
  name: string;
  bin: string;
  args(port: number): string[];
  /** One readiness check. Must make sure that the server answering is ours (pid), not some other listener. */
  probe(port: number, pid: number): Promise<ProbeResult>;
  logFile: string;
  cwd: string;
  beforeStart?(): void;
  startTimeoutMs: number;
}

class StartupError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

const ADDRESS_IN_USE = /address already in use|bind on tcp\/ip port|errno: 98|could not create server tcp listening socket/i;

class ManagedServer implements ManagedProcess {
  #child: ChildProcess | undefined;
  #exited: Promise<ExitResult> = Promise.resolve({ code: null, signal: null });
  #stopping: Promise<void> | undefined;
  #port: number;

  constructor(
    private readonly spec: ServerSpec,
    readonly dataDir: string,
    port: number,
  ) {
    this.#port = port;
  }

  get pid(): number {
    return this.#child?.pid ?? 0;
  }

  get port(): number {
    return this.#port;
  }

  get logFile(): string {
    return this.spec.logFile;
  }

  get running(): boolean {
    const c = this.#child;
    return c !== undefined && c.pid !== undefined && c.exitCode === null && c.signalCode === null;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.running) return;
    try {
      process.kill(this.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  /** Picks another port; only used before the first successful start (port collisions). */
  setPort(port: number): void {
    this.#port = port;
  }

  async start(): Promise<void> {
    if (this.running) throw new Error(`${this.spec.name} is already running (pid ${this.pid})`);
    if (!(await isPortFree(this.#port))) {
      throw new StartupError(`${this.spec.name}: port ${this.#port} is already in use`, true);
    }
    this.spec.beforeStart?.();
    const fd = openSync(this.spec.logFile, 'a');
    let child: ChildProcess;
    try {
      const [bin, ...args] = [...deathSignalPrefix(), this.spec.bin, ...this.spec.args(this.#port)] as [string, ...string[]];
      child = spawn(bin, args, { cwd: this.spec.cwd, stdio: ['ignore', fd, fd], detached: false, env: process.env });
    } finally {
      closeSync(fd);
    }
    track(child);
    this.#child = child;
    this.#exited = exitPromise(child);

    const deadline = Date.now() + this.spec.startTimeoutMs;
    let lastError = 'not probed yet';
    for (;;) {
      if (!this.running) {
        const result = await this.#exited;
        const tail = await tailFile(this.spec.logFile);
        throw new StartupError(
          `${this.spec.name} on port ${this.#port} exited during startup (${describeExit(result)}). Log ${this.spec.logFile}:\n${tail}`,
          ADDRESS_IN_USE.test(tail),
        );
      }
      const probe = await this.spec.probe(this.#port, this.pid);
      if (probe.ok) return;
      lastError = probe.error;
      if (probe.fatal || Date.now() > deadline) {
        this.kill('SIGKILL');
        await withTimeout(this.#exited, KILL_WAIT_MS);
        const tail = await tailFile(this.spec.logFile);
        const why = probe.fatal ? 'is not usable' : `not ready after ${this.spec.startTimeoutMs} ms`;
        throw new StartupError(
          `${this.spec.name} on port ${this.#port} ${why} (last error: ${lastError}). Log ${this.spec.logFile}:\n${tail}`,
          ADDRESS_IN_USE.test(tail) || /answered by another/.test(lastError),
        );
      }
      await sleep(50);
    }
  }

  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.start();
  }

  stop(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = this.#stop().finally(() => {
        this.#stopping = undefined;
      });
    }
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (!this.#child) return;
    if (this.running) {
      this.kill('SIGTERM');
      this.kill('SIGCONT'); // a SIGSTOPped server must wake up to act on SIGTERM
    }
    if (await withTimeout(this.#exited, STOP_GRACE_MS)) return;
    this.kill('SIGKILL');
    if (await withTimeout(this.#exited, KILL_WAIT_MS)) return;
    throw new Error(`${this.spec.name} (pid ${this.pid}) did not exit after SIGKILL`);
  }
}

async function startWithPortRetry(server: ManagedServer, explicitPort: boolean, pickPort: () => Promise<number>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await server.start();
      return;
    } catch (err) {
      if (!(err instanceof StartupError) || !err.addressInUse || explicitPort || attempt >= 3) throw err;
      server.setPort(await pickPort());
    }
  }
}

async function makeServerDir(baseDir: string, prefix: string): Promise<string> {
  const base = path.resolve(baseDir);
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(path.join(base, prefix));
  writeOwnerFile(dir);
  return dir;
}

// ---------------------------------------------------------------------------------------------
// MariaDB

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

function mariadbProbe(port: number, pidFile: string, expectedPid: number): Promise<ProbeResult> {
  return (async () => {
    let conn: mariadb.Connection | undefined;
    try {
      conn = await mariadb.createConnection({ host: LOOPBACK, port, user: 'root', password: '', connectTimeout: 1_000, socketTimeout: 5_000 });
      const rows = (await conn.query('SELECT 1 AS one, @@pid_file AS pidFile')) as Array<{ one: number; pidFile: string }>;
      if (rows[0]?.pidFile !== pidFile) {
        return { ok: false, error: `port ${port} is answered by another MariaDB (pid file ${rows[0]?.pidFile})`, fatal: true } as const;
      }
      const pid = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
      if (pid !== expectedPid) return { ok: false, error: `pid file says ${pid}, expected ${expectedPid}` } as const;
      return { ok: true } as const;
    } catch (err) {
      const e = err as { errno?: number; message?: string };
      // 1045 access denied, 1698 access denied (unix_socket plugin): retrying cannot help.
      return { ok: false, error: e.message ?? String(err), fatal: e.errno === 1045 || e.errno === 1698 } as const;
    } finally {
      await conn?.end().catch(() => conn?.destroy());
    }
  })();
}

/**
 * Initialises a fresh MariaDB data directory under baseDir and starts mariadbd on a free
 * loopback port (or opts.port). root@127.0.0.1 has an empty password; the server runs in UTC
 * with utf8mb4, no binlog and small InnoDB files.
 */
export async function startMariaDb(opts: { baseDir: string; port?: number; startTimeoutMs?: number }): Promise<MariaDbProcess> {
  const mariadbd = requireBinary('mariadbd');
  const installDb = requireBinary('mariadb-install-db');
  const dir = await makeServerDir(opts.baseDir, 'mariadb-');
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'mariadbd.log');
  const installLog = path.join(dir, 'install-db.log');
  const pidFile = path.join(dir, 'mariadbd.pid');

  // Unix socket paths are limited to 107 bytes; fall back to a short folder under the OS temp dir.
  let socketPath = path.join(dir, 'mysqld.sock');
  let socketDir: string | undefined;
  if (Buffer.byteLength(socketPath) > 100) {
    socketDir = await mkdtemp(path.join(os.tmpdir(), 'sd-sock-'));
    socketPath = path.join(socketDir, 'mysqld.sock');
  }

  const installFd = openSync(installLog, 'a');
  let installed: ExitResult;
  try {
    installed = await runToCompletion(
      installDb,
      [
        '--no-defaults', // must be first
        `--datadir=${dataDir}`,
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

  const server = new MariaDbServer(
    {
      name: 'mariadbd',
      bin: mariadbd,
      logFile,
      cwd: dir,
      startTimeoutMs: opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      beforeStart: () => {
        if (socketDir) mkdirSync(socketDir, { recursive: true });
      },
      args: (port) => [
        '--no-defaults', // must be first
        `--datadir=${dataDir}`,
        `--port=${port}`,
        `--bind-address=${LOOPBACK}`,
        `--socket=${socketPath}`,
        `--pid-file=${pidFile}`,
        `--tmpdir=${os.tmpdir()}`,
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
      ],
      probe: (port, pid) => mariadbProbe(port, pidFile, pid),
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

// ---------------------------------------------------------------------------------------------
// Redis

/** Sends PING over a raw socket; true on +PONG within timeoutMs. A SIGSTOPped server yields false. */
export function pingRedis(port: number, timeoutMs = 1_000, host = LOOPBACK): Promise<boolean> {
  return pingRedisDetailed(port, timeoutMs, host).then((r) => r.ok);
}

type RedisReply = { ok: true; reply: string } | { ok: false; error: string };

/**
 * Sends one command over a raw socket and reads one reply (a simple string, an error or a bulk
 * string). Raw on purpose: a probe must not queue or retry the way a client library does.
 */
function rawRedisCommand(port: number, args: string[], timeoutMs: number, host = LOOPBACK): Promise<RedisReply> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ host, port });
    let buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (result: RedisReply) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ ok: false, error: `no ${args[0]} reply within ${timeoutMs} ms` }), timeoutMs);
    socket.on('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n');
      if (end < 0) return;
      const header = buffer.subarray(0, end).toString('latin1');
      if (header.startsWith('+')) return finish({ ok: true, reply: header.slice(1) });
      if (!header.startsWith('$')) return finish({ ok: false, error: `${args[0]} answered ${header}` }); // e.g. -LOADING
      const length = Number(header.slice(1));
      if (buffer.length < end + 2 + length) return;
      finish({ ok: true, reply: buffer.subarray(end + 2, end + 2 + length).toString('utf8') });
    });
    socket.on('error', (err) => finish({ ok: false, error: err.message }));
    socket.on('close', () => finish({ ok: false, error: 'connection closed' }));
  });
}

async function pingRedisDetailed(port: number, timeoutMs: number, host = LOOPBACK): Promise<ProbeResult> {
  const r = await rawRedisCommand(port, ['PING'], timeoutMs, host);
  if (!r.ok) return r;
  return r.reply === 'PONG' ? { ok: true } : { ok: false, error: `PING answered ${r.reply}` };
}

/** Readiness: `INFO server` answers and its process_id is our child's pid (not another Redis). */
async function redisProbe(port: number, expectedPid: number, timeoutMs = 1_000): Promise<ProbeResult> {
  const r = await rawRedisCommand(port, ['INFO', 'server'], timeoutMs);
  if (!r.ok) return r;
  const pid = Number(/^process_id:(\d+)/m.exec(r.reply)?.[1]);
  return pid === expectedPid
    ? { ok: true }
    : { ok: false, error: `port ${port} is answered by another Redis (pid ${pid}, ours is ${expectedPid})`, fatal: true };
}

function clusterEnabled(args: readonly string[]): boolean {
  const i = args.indexOf('--cluster-enabled');
  return i >= 0 && /^yes$/i.test(args[i + 1] ?? '');
}

/**
 * Starts redis-server on a free loopback port (or opts.port) without persistence, in its own
 * folder under baseDir. extraArgs are appended (later options win), e.g.
 * ['--cluster-enabled', 'yes'] — then the port is chosen so that the cluster bus port
 * (port + 10000) is valid and free, and nodes.conf lives in the server's folder.
 */
export async function startRedis(opts: { baseDir: string; extraArgs?: string[]; port?: number; startTimeoutMs?: number }): Promise<RedisProcess> {
  const redisServer = requireBinary('redis-server');
  const extraArgs = [...(opts.extraArgs ?? [])];
  const dir = await makeServerDir(opts.baseDir, 'redis-');
  const logFile = path.join(dir, 'redis-server.log');
  const cluster = clusterEnabled(extraArgs);

  const pickPort = async (): Promise<number> => {
    for (let i = 0; i < 50; i++) {
      const port = await freePort();
      if (!cluster) return port;
      if (port + 10_000 <= 65_535 && (await isPortFree(port + 10_000))) return port;
    }
    throw new Error('could not find a free port pair (port, port + 10000) for a Redis cluster node');
  };

  const server = new RedisServer(
    {
      name: 'redis-server',
      bin: redisServer,
      logFile,
      cwd: dir,
      startTimeoutMs: opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      args: (port) => [
        '--port', String(port),
        '--bind', LOOPBACK,
        '--save', '',
        '--appendonly', 'no',
        '--dir', dir,
        '--daemonize', 'no',
        '--logfile', '',
        ...extraArgs,
      ],
      probe: (port, pid) => redisProbe(port, pid),
    },
    dir,
    opts.port ?? (await pickPort()),
  );
  await startWithPortRetry(server, opts.port !== undefined, pickPort);
  return server;
}

class RedisServer extends ManagedServer implements RedisProcess {
  get url(): string {
    return `redis://${LOOPBACK}:${this.port}`;
  }
}

/** Best-effort synchronous removal (used from signal paths). */
export function removeDirSync(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    // ignore
  }
}
