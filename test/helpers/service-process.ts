/**
 * Fault-injection helpers: a private MariaDB + Redis of the test's own (so that it may
 * SIGSTOP / SIGKILL / restart them), and `node dist/server.js` children — the production start
 * path — on free loopback ports, with a small fetch-based client that times every call.
 *
 * Never uses the runner's shared servers (SESSIOND_TEST_*): those are shared with other files.
 * `npm test` builds dist/ first; run `npm run build` before running these files by hand.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { mintApiKey, type MintedKey } from '../../src/auth/api-keys.js';
import { migrateDatabase } from './mariadb.js';
import { createFaultProxy, type FaultProxy } from '../tools/fault-proxy.js';
import { spawnReaped } from '../../devstack/children.js';
import { startMariaDb, type MariaDbProcess } from '../../devstack/mariadb.js';
import { freePort } from '../../devstack/ports.js';
import { startRedis, type RedisProcess } from '../../devstack/redis.js';

export const SERVER = path.resolve('dist/server.js');
/** The test entry point: dist/ with test-only switches such as SESSIOND_TEST_UNSAFE_FILL. */
export const TEST_SERVER = path.resolve('test/helpers/test-server.mjs');
const LOOPBACK = '127.0.0.1';

interface TapLike {
  teardown(fn: () => unknown): void;
  passing(): boolean;
  name?: string;
}

/** Short timeouts so that a dead dependency costs a test milliseconds. */
export const TUNED_ENV: Readonly<Record<string, string>> = {
  LOG_LEVEL: 'warn',
  REDIS_COMMAND_TIMEOUT_MS: '50',
  REDIS_CONNECT_TIMEOUT_MS: '300',
  REDIS_BREAKER_FAILURES: '3',
  REDIS_BREAKER_COOLDOWN_MS: '300',
  DB_ACQUIRE_TIMEOUT_MS: '300',
  DB_QUERY_TIMEOUT_MS: '500',
  DB_CONNECT_TIMEOUT_MS: '300',
  OUTBOX_REPLAY_INTERVAL_MS: '200',
  SWEEPER_INTERVAL_SECONDS: '0',
  SHUTDOWN_TIMEOUT_MS: '500',
  // These tests send thousands of calls a second with one API key: no rate limit in the way.
  RATE_LIMIT_MAX: '1000000000',
};

// ---------------------------------------------------------------------------------------------
// The private stack

export interface Stack {
  dir: string;
  mariadb: MariaDbProcess;
  redis: RedisProcess;
  /** mysql://root@127.0.0.1:PORT/ (no database). */
  rootUrl: string;
  /** The migrated database the services use. */
  databaseUrl: string;
  keysFile: string;
  key: MintedKey;
  /** One statement on the service database with a fresh connection (short timeouts). */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** A global status counter of the private MariaDB (e.g. Com_select). */
  globalStatus(name: string): Promise<number>;
  /**
   * Starts one more service process on this stack (killed at the stack's teardown at the latest),
   * running the stack's server script or `server`.
   */
  service(t: TapLike, env?: Record<string, string>, server?: string): Promise<ServiceProcess>;
  /** With `proxy.redis`: the fault proxy every service reaches Redis through. */
  redisProxy?: FaultProxy;
  /** With `proxy.mariadb`: the fault proxy every service reaches MariaDB through. */
  mariadbProxy?: FaultProxy;
  /** DATABASE_URL as the services get it (through the MariaDB proxy when there is one). */
  serviceDatabaseUrl: string;
  /** REDIS_URL as the services get it (through the Redis proxy when there is one). */
  serviceRedisUrl: string;
}

export interface StackOptions {
  /** Put a fault proxy (test/tools/fault-proxy.ts) between the services and Redis / MariaDB. */
  proxy?: { redis?: boolean; mariadb?: boolean };
  /** The server script the services run (default: dist/server.js of this checkout). */
  server?: string;
}

export { migrateDatabase };

/**
 * A private MariaDB and Redis under a temp folder, a migrated database and an API keys file;
 * all stopped and removed at teardown (service processes are SIGKILLed first).
 */
export async function stack(t: TapLike, options: StackOptions = {}): Promise<Stack> {
  const server = options.server ?? SERVER;
  if (!existsSync(server)) throw new Error(`${server} is missing: run "npm run build" first`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-fault-'));
  const services = new Set<ServiceProcess>();
  const started: Array<MariaDbProcess | RedisProcess> = [];
  t.teardown(async () => {
    for (const s of services) s.kill();
    await Promise.allSettled(started.map((s) => s.stop()));
    await rm(dir, { recursive: true, force: true });
  });
  const [mariadb, redis] = await Promise.all([
    startMariaDb({ baseDir: dir }).then((s) => (started.push(s), s)),
    startRedis({ baseDir: dir }).then((s) => (started.push(s), s)),
  ]);
  const databaseUrl = await migrateDatabase(mariadb.rootUrl, 'sessiond');
  const key = mintApiKey('fault-tests', 'fault');
  const keysFile = path.join(dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify([key.entry]));

  let redisProxy: FaultProxy | undefined;
  let mariadbProxy: FaultProxy | undefined;
  let serviceDatabaseUrl = databaseUrl;
  let serviceRedisUrl = redis.url;
  if (options.proxy?.redis) {
    redisProxy = await createFaultProxy({ target: { host: LOOPBACK, port: redis.port }, listenHost: LOOPBACK });
    serviceRedisUrl = `redis://${LOOPBACK}:${redisProxy.port}`;
  }
  if (options.proxy?.mariadb) {
    mariadbProxy = await createFaultProxy({ target: { host: LOOPBACK, port: mariadb.port }, listenHost: LOOPBACK });
    const u = new URL(databaseUrl);
    u.hostname = LOOPBACK;
    u.port = String(mariadbProxy.port);
    serviceDatabaseUrl = u.toString();
  }
  // Proxies close after the services are gone (teardowns run last-registered first).
  t.teardown(async () => {
    for (const s of services) s.kill();
    await Promise.allSettled([redisProxy?.close(), mariadbProxy?.close()]);
  });

  const connect = (uri: string) => mysql.createConnection({ uri, timezone: 'Z', dateStrings: true, connectTimeout: 5_000 });
  const self: Stack = {
    dir,
    mariadb,
    redis,
    rootUrl: mariadb.rootUrl,
    databaseUrl,
    keysFile,
    key,
    redisProxy,
    mariadbProxy,
    serviceDatabaseUrl,
    serviceRedisUrl,
    async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
      const conn = await connect(databaseUrl);
      try {
        const [rows] = await conn.query(sql, params);
        return rows as T[];
      } finally {
        await conn.end().catch(() => conn.destroy());
      }
    },
    async globalStatus(name: string): Promise<number> {
      const conn = await connect(mariadb.rootUrl);
      try {
        const [rows] = await conn.query('SHOW GLOBAL STATUS LIKE ?', [name]);
        return Number((rows as Array<{ Value: string }>)[0]?.Value);
      } finally {
        await conn.end().catch(() => conn.destroy());
      }
    },
    async service(st: TapLike, env: Record<string, string> = {}, script: string = server): Promise<ServiceProcess> {
      const service = await startService(st, {
        DATABASE_URL: serviceDatabaseUrl,
        REDIS_URL: serviceRedisUrl,
        API_KEYS_FILE: keysFile,
        ...env,
      }, key.key, script);
      services.add(service);
      service.child.once('exit', () => services.delete(service));
      return service;
    },
  };
  return self;
}

// ---------------------------------------------------------------------------------------------
// A service process

export class ServiceProcess {
  readonly client: ServiceClient;
  #output = '';

  constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly name: string,
    apiKey: string,
  ) {
    this.client = new ServiceClient(`http://${LOOPBACK}:${port}`, apiKey, name);
    const append = (d: Buffer) => {
      this.#output += String(d);
      if (this.#output.length > 400_000) this.#output = this.#output.slice(-200_000);
    };
    child.stdout!.on('data', append);
    child.stderr!.on('data', append);
  }

  get url(): string {
    return this.client.base;
  }

  /** Everything the process wrote (the last 200–400 kB). */
  output(): string {
    return this.#output;
  }

  /** Log lines (parsed JSON) written at or after `sinceMs` (wall clock) whose msg matches. */
  logLines(msg: RegExp, sinceMs = 0): Array<{ time: number; msg: string; [k: string]: unknown }> {
    const found: Array<{ time: number; msg: string }> = [];
    for (const line of this.#output.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const entry = JSON.parse(line) as { time: number; msg: string };
        if (entry.time >= sinceMs && msg.test(entry.msg)) found.push(entry);
      } catch {
        // not a log line
      }
    }
    return found;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.running) this.child.kill(signal);
  }
}

let serviceCount = 0;

/**
 * How long a starting service may go without using CPU or writing output before it counts as
 * stuck: it is waiting on something that does not come (a dependency it cannot reach). A process
 * that is only starved still accrues CPU time every second, however slowly.
 */
export const START_STALL_MS = 20_000;
/** The cap on a start that keeps progressing (a process busy but never listening). */
export const START_CAP_MS = 180_000;

/** CPU time (ms) the process used so far, from /proc (Linux); undefined where it cannot be read. */
async function cpuTimeMs(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // After the command name in parentheses: state, ppid, … utime (14th field) and stime (15th), in ticks of 10 ms.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/**
 * Waits until the service answers /healthz: undefined then, else why it never will (it exited,
 * made no progress for START_STALL_MS — no CPU time, no output —, or kept busy past START_CAP_MS).
 */
async function startStall(service: ServiceProcess): Promise<string | undefined> {
  const started = performance.now();
  let lastProgress = started;
  let seen = { cpu: await cpuTimeMs(service.child.pid), output: service.output().length };
  while (service.running) {
    const ok = await fetch(`${service.url}/healthz`, { signal: AbortSignal.timeout(1_000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return undefined;
    const now = performance.now();
    const current = { cpu: await cpuTimeMs(service.child.pid), output: service.output().length };
    // Without /proc only output counts as progress: a start that writes nothing then has the stall window.
    if (current.output !== seen.output || (current.cpu !== undefined && current.cpu !== seen.cpu)) lastProgress = now;
    seen = current;
    if (now - lastProgress > START_STALL_MS) return `no progress (CPU time or output) for ${START_STALL_MS / 1000} s`;
    if (now - started > START_CAP_MS) return `still not listening after ${START_CAP_MS / 1000} s`;
    await sleep(50);
  }
  return `exited (${service.child.exitCode ?? service.child.signalCode})`;
}

/**
 * Starts `node dist/server.js` on a free loopback port with the tuned settings and `env`, and
 * waits until /healthz answers. Its output is printed if the test fails; SIGKILLed at teardown.
 */
export async function startService(t: TapLike, env: Record<string, string>, apiKey: string, server: string = SERVER): Promise<ServiceProcess> {
  const name = `svc${++serviceCount}`;
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    // Children are never left behind: SIGKILLed on exit, and (Linux) by the kernel if we die.
    const child = spawnReaped(process.execPath, [server], {
      env: { PATH: process.env.PATH ?? '', ...TUNED_ENV, HOST: LOOPBACK, PORT: String(port), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const service = new ServiceProcess(child, port, name, apiKey);
    t.teardown(() => {
      if (!t.passing() && service.output().trim() !== '') {
        process.stderr.write(`\n----- ${name} (port ${port}) output -----\n${service.output()}\n----- end of ${name} -----\n`);
      }
      service.kill();
    });
    // Never starting is the failure, and it shows as a process that exits or stops making
    // progress, not as a clock running out: a loaded 2-core runner took over 30 s of wall time
    // to load the modules of two at once (the process got a few percent of a core).
    const stalled = await startStall(service);
    if (stalled === undefined) return service;
    service.kill();
    // Another process took the port between freePort() and listen(): pick another.
    if (/EADDRINUSE/.test(service.output()) && attempt < 3) continue;
    throw new Error(`${name} did not answer /healthz (port ${port}): ${stalled}. Output:\n${service.output()}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Client

export interface Reply {
  status: number; // 0 when the call failed at the transport level or timed out
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  headers: Headers;
  /** performance.now() when the call was made and when it settled. */
  started: number;
  ended: number;
  ms: number;
  error?: string;
  via: string;
}

export interface SessionBody {
  id: string;
  data: Record<string, unknown>;
  version: number;
  expiresAt: string;
  [k: string]: unknown;
}

/** A fetch-based client for one service process; every call is timed and never throws. */
export class ServiceClient {
  constructor(
    readonly base: string,
    private readonly apiKey: string,
    readonly name: string,
    private readonly timeoutMs = 15_000,
  ) {}

  async request(
    method: string,
    urlPath: string,
    opts: { token?: string; body?: unknown; contentType?: string; ifMatch?: string; auth?: boolean } = {},
  ): Promise<Reply> {
    const headers: Record<string, string> = {};
    if (opts.auth !== false) headers.authorization = `Bearer ${this.apiKey}`;
    if (opts.token !== undefined) headers['session-token'] = opts.token;
    if (opts.ifMatch !== undefined) headers['if-match'] = opts.ifMatch;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = opts.contentType ?? 'application/json';
    }
    const started = performance.now();
    try {
      const res = await fetch(`${this.base}${urlPath}`, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs) });
      const text = await res.text();
      const ended = performance.now();
      let parsed: unknown = text;
      try {
        parsed = text === '' ? null : JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      return { status: res.status, body: parsed, headers: res.headers, started, ended, ms: ended - started, via: this.name };
    } catch (err) {
      const ended = performance.now();
      return { status: 0, body: null, headers: new Headers(), started, ended, ms: ended - started, error: (err as Error).message, via: this.name };
    }
  }

  create(data: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Promise<Reply> {
    return this.request('POST', '/v1/sessions', { body: { data, ...extra } });
  }

  read(token: string): Promise<Reply> {
    return this.request('GET', '/v1/sessions/current', { token });
  }

  touch(token: string): Promise<Reply> {
    return this.request('POST', '/v1/sessions/current/touch', { token });
  }

  put(token: string, data: Record<string, unknown>, version: number | string): Promise<Reply> {
    const ifMatch = typeof version === 'number' ? `"${version}"` : version;
    return this.request('PUT', '/v1/sessions/current/data', { token, body: data, ifMatch });
  }

  patch(token: string, patch: Record<string, unknown>, version?: number): Promise<Reply> {
    return this.request('PATCH', '/v1/sessions/current/data', {
      token,
      body: patch,
      contentType: 'application/merge-patch+json',
      ifMatch: version === undefined ? undefined : `"${version}"`,
    });
  }

  destroy(token: string): Promise<Reply> {
    return this.request('DELETE', '/v1/sessions/current', { token });
  }

  rotate(token: string): Promise<Reply> {
    return this.request('POST', '/v1/sessions/current/rotate', { token });
  }

  readyz(): Promise<Reply> {
    return this.request('GET', '/readyz', { auth: false });
  }

  healthz(): Promise<Reply> {
    return this.request('GET', '/healthz', { auth: false });
  }
}

// ---------------------------------------------------------------------------------------------
// Small utilities for the fault tests

/** A random-looking, well-formed token that names no session (43 base64url chars). */
export function unknownToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Polls `probe` every `everyMs` until it returns true; resolves to the wait in ms, or rejects after `timeoutMs`. */
export async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 15_000, everyMs = 25): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (await probe().catch(() => false)) return performance.now() - started;
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Waits until every replica says ready (MariaDB and Redis up) and the cache outbox is empty. */
export async function settled(s: Pick<Stack, 'query'>, clients: readonly ServiceClient[]): Promise<void> {
  await waitFor(
    'every replica ready and the outbox drained',
    async () => {
      const replies = await Promise.all(clients.map((c) => c.readyz()));
      if (!replies.every((r) => r.status === 200 && r.body?.status === 'ready')) return false;
      const [row] = await s.query<{ n: number }>('SELECT COUNT(*) AS n FROM cache_outbox');
      return Number(row?.n) === 0;
    },
    20_000,
    50,
  );
}

/** Formats rows of figures as an aligned text table (printed with t.comment). */
export function table(rows: Array<Record<string, string | number>>): string {
  if (rows.length === 0) return '(no rows)';
  const cols = Object.keys(rows[0]!);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(width[i]!)).join('  ');
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => String(r[c] ?? ''))))].join('\n');
}

/** Counts of statuses, e.g. "200:41 404:3 503:7". */
export function statusCounts(replies: Array<{ status: number }>): string {
  const counts = new Map<number, number>();
  for (const r of replies) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
  return [...counts.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([s, n]) => `${s}:${n}`)
    .join(' ');
}
