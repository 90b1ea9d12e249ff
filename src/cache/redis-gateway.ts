import type { SecureContextOptions } from 'node:tls';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { SessionKey, SubjectMark } from '../domain/session.js';
import { CircuitBreaker, type BreakerState } from './circuit-breaker.js';
import { coveredBy, markValue, sessionKeys, subjectMarkKey, type CachedFields, type Lookup } from './redis-entry.js';
import { INSTALL, INSTALL_UNFENCED, INVALIDATE, LOOKUP, MARK_WRITE, PERSISTED, SET_MARK, TOMBSTONE, TOUCH, WRITE_MARK_TTL_MS } from './redis-scripts.js';

/** Where Redis is and how long a call may take (from the configuration). */
export interface RedisConnectionOptions {
  /** Single node: redis:// or rediss:// (TLS), with the ACL user and password when it has them. */
  url?: string | undefined;
  /** Cluster mode: startup nodes. */
  clusterNodes?: { host: string; port: number }[] | undefined;
  /** ACL user and password for a cluster, or for a URL without its own (see redisEndpoint). */
  username?: string | undefined;
  password?: string | undefined;
  /** TLS to every node, the certificate verified (against `ca`, else the system's CAs); absent = plain TCP unless rediss://. */
  tls?: Pick<SecureContextOptions, 'ca' | 'cert' | 'key'> | undefined;
  commandTimeoutMs: number;
  connectTimeoutMs: number;
  breakerFailureThreshold: number;
  breakerCooldownMs: number;
}

export interface RedisGatewayOptions extends RedisConnectionOptions {
  /** Lifetime of entries and tombstones: the bound on staleness in every failure mode. */
  cacheTtlMs: number;
  /** Lifetime of a fill lease. */
  leaseMs: number;
}

/** Redis could not be used for this call; take the MariaDB path. */
export class CacheUnavailableError extends Error {
  constructor(cause?: unknown) {
    super('cache unavailable', { cause });
    this.name = 'CacheUnavailableError';
  }

  /** Why, for logs: `breaker_open` (not tried), `deadline` (the command timeout) or `error`. */
  reason(): 'breaker_open' | 'deadline' | 'error' {
    if (this.cause === undefined) return 'breaker_open';
    return this.cause instanceof Error && this.cause.message === REDIS_DEADLINE_MESSAGE ? 'deadline' : 'error';
  }
}

const REDIS_DEADLINE_MESSAGE = 'redis deadline exceeded';

export type TouchOutcome =
  | { kind: 'miss' }
  | { kind: 'tombstone' }
  | { kind: 'expired' }
  | { kind: 'hit'; fields: CachedFields };

type ScriptArg = string | number;
interface ScriptCommands {
  sdInstall(entry: string, lease: string, ...args: ScriptArg[]): Promise<[number, string, string]>;
  sdInstallUnfenced(entry: string, lease: string, ...args: ScriptArg[]): Promise<[number, string, string]>;
  sdTouch(entry: string, ...args: ScriptArg[]): Promise<string | number>;
  sdTombstone(entry: string, lease: string, ttlMs: ScriptArg): Promise<number>;
  sdPersisted(entry: string, pe: ScriptArg): Promise<number>;
  sdMarkWrite(entry: string, lease: string, ttlMs: ScriptArg, cacheTtlMs: ScriptArg): Promise<number>;
  sdInvalidate(entry: string, lease: string, ttlMs: ScriptArg): Promise<number>;
  sdLookup(entry: string, check: string, cacheTtlMs: ScriptArg): Promise<string | number>;
  sdSetMark(mark: string, generation: ScriptArg, keep: string, ttlMs: ScriptArg): Promise<number>;
}
type Client = (Redis | Cluster) & ScriptCommands;

/** TOUCH's answer when it found no live entry: -1 tombstone, -2 expired, anything else a miss. */
function touchOutcomeOf(r: number): TouchOutcome {
  return r === -1 ? { kind: 'tombstone' } : r === -2 ? { kind: 'expired' } : { kind: 'miss' };
}

/** Splits a LOOKUP or TOUCH reply: v, it, ax, ie, pe, ls, g and mk, then d (the rest), newline-separated. */
export function entryFields(reply: string): CachedFields {
  const f: string[] = [];
  let from = 0;
  for (let i = 0; i < 8; i++) {
    const at = reply.indexOf('\n', from);
    if (at < 0) throw new Error('malformed touch reply');
    f.push(reply.slice(from, at));
    from = at + 1;
  }
  const [v, it, ax, ie, pe, ls, g, mk] = f as [string, string, string, string, string, string, string, string];
  return { v, it, ax, ie, pe, ls, g, mk, d: reply.slice(from) };
}

/** Where and as whom one Redis node is reached: the URL's parts, with the configured login as a fallback. */
export function redisEndpoint(options: Pick<RedisConnectionOptions, 'url' | 'username' | 'password'>): {
  host: string;
  port: number;
  db: number;
  username: string | undefined;
  password: string | undefined;
  tls: boolean;
} {
  const url = new URL(options.url!);
  const fromUrl = url.username !== '' || url.password !== '';
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port === '' ? 6379 : Number(url.port),
    db: url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0,
    username: fromUrl ? decodeURIComponent(url.username) || undefined : options.username,
    password: fromUrl ? decodeURIComponent(url.password) : options.password,
    tls: url.protocol === 'rediss:',
  };
}

/** TLS options for ioredis: the server's certificate is always verified (never rejectUnauthorized: false). */
function tlsOptions(options: RedisConnectionOptions, tls: boolean): RedisOptions['tls'] {
  if (!tls) return undefined;
  return { ...options.tls, rejectUnauthorized: true };
}

/** A cluster: the ACL user and TLS from the configuration, the same for every node. */
function clusterAuth(options: RedisConnectionOptions): Pick<RedisOptions, 'username' | 'password' | 'tls'> {
  return { username: options.username, password: options.password, tls: tlsOptions(options, options.tls !== undefined) };
}

/**
 * One node: host, port, database, user and TLS from REDIS_URL (its query is never read: ioredis
 * would take any parameter as a client option).
 */
function singleNode(options: RedisConnectionOptions): RedisOptions {
  const { tls, ...endpoint } = redisEndpoint(options);
  return { ...endpoint, tls: tlsOptions(options, tls || options.tls !== undefined) };
}

/**
 * The one door to Redis. Offline queue off, a short command timeout, bounded reconnect delays
 * and a breaker: while Redis is down a call costs no Redis wait at all, it throws
 * CacheUnavailableError at once and the caller serves from MariaDB.
 */
export class RedisGateway {
  readonly client: Client;
  readonly breaker: CircuitBreaker;
  /** Runs after Redis answers again, before the breaker closes (the outbox replay). */
  onRecover: () => Promise<void> = async () => undefined;
  private lastErrorLog = 0;

  constructor(
    private readonly options: RedisGatewayOptions,
    private readonly log: Logger,
  ) {
    // Deadlines are per call (see deadline()): reads get the command timeout, the invalidations
    // after a write get three times as long. A reply that arrives later is dropped.
    const redisOptions: RedisOptions = {
      enableOfflineQueue: false,
      connectTimeout: options.connectTimeoutMs,
      maxRetriesPerRequest: 0,
      // Reconnect forever, and soon: a replica that reconnects late cannot invalidate what its
      // writes changed while the other replicas already read from Redis again.
      retryStrategy: (times) => Math.min(25 * 2 ** times, 200),
      // No auto-pipelining: each command is written at once. At 16 concurrent requests it cost
      // ~10 us of CPU per warm read or touch (a Pipeline per event-loop turn of one or two
      // commands), at 64 it broke even (docs/benchmarks.md).
      enableAutoPipelining: false,
    };
    const client =
      options.clusterNodes !== undefined
        ? new Cluster(options.clusterNodes, {
            // Every node, also those learnt from CLUSTER SLOTS, gets the same user and TLS.
            redisOptions: { ...redisOptions, ...clusterAuth(options) },
            enableOfflineQueue: false,
            enableAutoPipelining: false,
            clusterRetryStrategy: (times) => Math.min(100 * times, 1000),
            slotsRefreshTimeout: Math.max(options.connectTimeoutMs, 500),
          })
        : new Redis({ ...redisOptions, ...singleNode(options) });
    client.defineCommand('sdInstall', { numberOfKeys: 2, lua: INSTALL });
    client.defineCommand('sdInstallUnfenced', { numberOfKeys: 2, lua: INSTALL_UNFENCED });
    client.defineCommand('sdTouch', { numberOfKeys: 1, lua: TOUCH });
    client.defineCommand('sdTombstone', { numberOfKeys: 2, lua: TOMBSTONE });
    client.defineCommand('sdPersisted', { numberOfKeys: 1, lua: PERSISTED });
    client.defineCommand('sdMarkWrite', { numberOfKeys: 2, lua: MARK_WRITE });
    client.defineCommand('sdInvalidate', { numberOfKeys: 2, lua: INVALIDATE });
    client.defineCommand('sdLookup', { numberOfKeys: 1, lua: LOOKUP });
    client.defineCommand('sdSetMark', { numberOfKeys: 1, lua: SET_MARK });
    client.on('error', (err: Error) => this.logError(err));
    this.client = client as Client;
    this.scriptChecksMark = options.clusterNodes === undefined ? '1' : '';
    this.breaker = new CircuitBreaker(
      { failureThreshold: options.breakerFailureThreshold, cooldownMs: options.breakerCooldownMs },
      async () => {
        await this.withTimeout(this.client.ping(), this.options.commandTimeoutMs);
        await this.onRecover();
      },
      Date.now,
      (state: BreakerState) => this.log.warn({ redis: state }, `redis breaker ${state}`),
    );
  }

  /**
   * Resolves when the client is connected, or after `timeoutMs` regardless: a Redis that is down
   * at start must not keep the service from starting (calls fall back meanwhile).
   */
  async connected(timeoutMs = this.options.connectTimeoutMs): Promise<boolean> {
    if (this.client.status === 'ready') return true;
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.client.off('ready', onReady);
        resolve(ok);
      };
      const onReady = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.client.once('ready', onReady);
    });
  }

  /** False while the breaker is open: don't even try. */
  available(): boolean {
    return this.breaker.allows();
  }

  private logError(err: Error): void {
    // Connection errors repeat on every reconnect attempt; one line a few seconds is enough.
    const now = Date.now();
    if (now - this.lastErrorLog < 5000) return;
    this.lastErrorLog = now;
    this.log.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'redis error');
  }

  /**
   * Rejects when `p` has not settled within `ms` (the command may still run in Redis).
   *
   * The rejection waits for the poll phase of the turn in which the timer fired: after the event
   * loop was blocked (a long task, a descheduled process on a loaded machine) Node runs due
   * timers before it reads the sockets, so a reply that had arrived in time would otherwise lose
   * to its own deadline, and the call fall back to MariaDB for nothing. setImmediate runs after
   * that poll phase; a reply read there settles `p` first and the late rejection is a no-op.
   */
  private withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
    // One promise and one timer per call (Promise.race + finally made three promises more).
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => setImmediate(() => reject(new Error(REDIS_DEADLINE_MESSAGE))), ms);
      p.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err as Error);
        },
      );
    });
  }

  /**
   * Runs one Redis call under the breaker and a deadline. `force` skips the breaker check: the
   * invalidations owed after a committed write are always tried (an unreachable Redis rejects
   * them at once; a stalled one costs the write deadline), because another replica may be
   * reading from Redis while this one's breaker is open.
   */
  private async guard<T>(op: () => Promise<T>, force = false, deadlineMs = this.options.commandTimeoutMs): Promise<T> {
    if (!force && !this.breaker.allows()) throw new CacheUnavailableError();
    try {
      const result = await this.withTimeout(op(), deadlineMs);
      this.breaker.success();
      return result;
    } catch (err) {
      this.breaker.failure();
      this.logError(err as Error);
      throw new CacheUnavailableError(err);
    }
  }

  /**
   * Scripts read a subject's revocation mark themselves on one node ('1'); on Redis Cluster the
   * mark lives in another slot, and the gateway reads it after the script (markRevokes).
   */
  private readonly scriptChecksMark: string;

  /** Cluster only: true when the subject's mark revokes the entry the fields came from. */
  private async markRevokes(entry: string, f: CachedFields): Promise<boolean> {
    if (this.scriptChecksMark === '1' || f.mk === undefined || f.mk === '') return false;
    return coveredBy(await this.client.get(f.mk), entry, f.g ?? '0');
  }

  lookup(key: SessionKey): Promise<Lookup> {
    return this.guard(async () => {
      const { entry } = sessionKeys(key);
      const r = await this.client.sdLookup(entry, this.scriptChecksMark, this.options.cacheTtlMs);
      if (typeof r !== 'string') return r === -1 ? { kind: 'tombstone' } : { kind: 'miss' };
      const fields = entryFields(r);
      return (await this.markRevokes(entry, fields)) ? { kind: 'miss' } : { kind: 'hit', fields };
    });
  }

  /**
   * Plants a subject's revocation mark (unless a higher generation is there), before the mark
   * commits in MariaDB and again after: reads and fills then treat the subject's entries below
   * it as misses. It outlives every entry filled before it (their TTL) and the fills in flight.
   */
  async markSubject(mark: SubjectMark, force = false): Promise<void> {
    const keep = mark.keepIdHash === null ? '' : sessionKeys({ namespace: mark.namespace, idHash: mark.keepIdHash }).entry;
    await this.guard(() => this.client.sdSetMark(subjectMarkKey(mark.namespace, mark.subjectHash), mark.generation, keep, this.subjectMarkTtlMs()), force, this.writeDeadlineMs());
  }

  /** How long a subject's mark lives in Redis: longer than any entry filled, or fill in flight, before it. */
  subjectMarkTtlMs(): number {
    return this.options.cacheTtlMs + this.options.leaseMs + WRITE_MARK_TTL_MS;
  }

  /** SET lease NX PX: true when this caller may fill the entry. */
  takeLease(key: SessionKey, leaseId: string): Promise<boolean> {
    return this.guard(async () => (await this.client.set(sessionKeys(key).lease, leaseId, 'PX', this.options.leaseMs, 'NX')) === 'OK');
  }

  /**
   * Installs a filled entry under `leaseId`, or with `leaseId` '' only raises the touch register
   * (INSTALL). `installed` is 1 when installed; 0 no lease, -1 tombstone, -2 something as new was
   * there, -3 a write marker. The expiry and last-seen are what the fill answers: never behind
   * what Redis has shown. `unfenced` is the test-only planted bug (INSTALL_UNFENCED).
   */
  async install(
    key: SessionKey,
    leaseId: string,
    f: CachedFields,
    unfenced = false,
  ): Promise<{ installed: number; idleExpiresAtMs: number; lastSeenAtMs: number }> {
    const { entry, lease } = sessionKeys(key);
    const script = unfenced ? this.client.sdInstallUnfenced : this.client.sdInstall;
    const [installed, ie, ls] = await this.guard(() =>
      script.call(this.client, entry, lease, leaseId, this.options.cacheTtlMs, f.v, f.d, f.it, f.ax, f.ie, f.pe, f.ls, f.g, f.mk, this.scriptChecksMark),
    );
    return { installed, idleExpiresAtMs: Number(ie), lastSeenAtMs: Number(ls) };
  }

  touch(key: SessionKey, nowMs: number): Promise<TouchOutcome> {
    return this.guard(async () => {
      const args = this.touchArgs(key, nowMs);
      const entry = args[0];
      const r = await this.client.sdTouch(...args);
      if (typeof r === 'string') {
        const fields = entryFields(r);
        return (await this.markRevokes(entry, fields)) ? { kind: 'miss' } : { kind: 'hit', fields };
      }
      return touchOutcomeOf(r);
    });
  }

  /** TOUCH's key and arguments, for touch and touchMany alike. */
  private touchArgs(key: SessionKey, nowMs: number): [string, number, string, number] {
    return [sessionKeys(key).entry, nowMs, this.scriptChecksMark, this.options.cacheTtlMs];
  }

  /** False on Redis Cluster: its pipelines take keys of one slot only, so touchMany is not for it. */
  get pipelines(): boolean {
    return this.scriptChecksMark === '1';
  }

  /**
   * TOUCH for many sessions in one round trip: a pipeline of the script's calls, under one
   * breaker check and the same command deadline as one touch. A failed pipeline throws
   * CacheUnavailableError; a call that failed on its own is `undefined` in the answer (its
   * caller serves it like a touch Redis did not answer). One node only (`pipelines`): there the
   * scripts check the subject's mark themselves.
   */
  touchMany(keys: SessionKey[], nowMs: number): Promise<Array<TouchOutcome | undefined>> {
    return this.guard(async () => {
      const pipeline = this.client.pipeline();
      for (const key of keys) (pipeline as unknown as ScriptCommands).sdTouch(...this.touchArgs(key, nowMs));
      const replies = (await pipeline.exec()) ?? [];
      return keys.map((_key, i) => {
        const [err, r] = replies[i] ?? [new Error('no reply')];
        if (err !== null) return undefined;
        return typeof r === 'string' ? { kind: 'hit', fields: entryFields(r) } : touchOutcomeOf(r as number);
      });
    });
  }

  /**
   * Before a write commits: drop the entry and fence off fills until the invalidation after the
   * commit (MARK_WRITE). Unlike the invalidation it respects the breaker and has the read
   * deadline: it runs inside the transaction, and what it closes (the moment between commit and
   * invalidation) is already open while Redis misbehaves; the invalidation still always runs.
   */
  async markWrite(key: SessionKey): Promise<void> {
    const { entry, lease } = sessionKeys(key);
    await this.guard(() => this.client.sdMarkWrite(entry, lease, WRITE_MARK_TTL_MS, this.options.cacheTtlMs));
  }

  /** After a committed data change: drop the entry and any fill lease, keeping the touch register (INVALIDATE). */
  async invalidate(key: SessionKey, force = false): Promise<void> {
    const { entry, lease } = sessionKeys(key);
    await this.guard(() => this.client.sdInvalidate(entry, lease, this.options.cacheTtlMs), force, this.writeDeadlineMs());
  }

  /**
   * After a session was created under an id that lived before (a chosen token whose earlier
   * session passed its absolute expiry): drop everything under the id, its tombstone and touch
   * register too. Neither may outlive the life they belonged to: the tombstone would hide the new
   * session, the register lend it the old idle expiry.
   */
  async clear(key: SessionKey, force = false): Promise<void> {
    const { entry, lease } = sessionKeys(key);
    await this.guard(() => this.client.del(entry, lease), force, this.writeDeadlineMs());
  }

  /** After a committed destroy or rotate: a versioned-forever (until TTL) "this session is gone". */
  async tombstone(key: SessionKey, force = false): Promise<void> {
    const { entry, lease } = sessionKeys(key);
    await this.guard(() => this.client.sdTombstone(entry, lease, this.options.cacheTtlMs), force, this.writeDeadlineMs());
  }

  /** Invalidations follow a committed write, off the read hot path: they may wait longer. */
  private writeDeadlineMs(): number {
    return this.options.commandTimeoutMs * 3;
  }

  async markPersisted(key: SessionKey, idleExpiresAtMs: number): Promise<void> {
    await this.guard(() => this.client.sdPersisted(sessionKeys(key).entry, idleExpiresAtMs));
  }

  /** Redis answers PING right now (readiness; bypasses the breaker). */
  async ping(): Promise<boolean> {
    try {
      await this.withTimeout(this.client.ping(), this.options.commandTimeoutMs);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}
