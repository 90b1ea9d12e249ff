/**
 * Crashes lose nothing. Two `node dist/server.js` replicas on one private MariaDB and Redis;
 * concurrent writers create sessions, change them with PUT and merge-PATCH (If-Match, one
 * writer per session, so every version has one possible content) and now and then destroy
 * one. Mid-run MariaDB is SIGKILLed and restarted on the same data dir; in a second run one
 * replica is SIGKILLed and replaced. Afterwards Redis is flushed, so that every read comes
 * from MariaDB, and every acknowledged session must read back on every replica with its last
 * acknowledged version and exactly that version's data (a destroyed one: 404) — or as the
 * next write left it, when that write went unanswered (a 503 or no answer: it may have
 * committed).
 *
 * While MariaDB is down a write may only answer a clean 503 `store_unavailable` problem with
 * Retry-After, within a bound; writers retry it with the same If-Match, and a 412 naming the
 * next version proves the unanswered attempt committed.
 *
 * What this shows is durability across *process* crashes, not power loss: the test MariaDB
 * runs with innodb_flush_log_at_trx_commit=2 (devstack/mariadb.ts), so each commit
 * writes its redo log to the OS page cache, which survives a SIGKILL of mariadbd but not a
 * kernel crash or power cut. A production MariaDB keeps the default (1) for that
 * (deploy/README.md). With CRASH_TEST_FLUSH_LOG_AT_TRX_COMMIT=0 the test sets MariaDB to write
 * its log only once a second, and then sees acknowledged writes vanish with the SIGKILL.
 */
import t, { type Test } from 'tap';
import { performance } from 'node:perf_hooks';
import { isDeepStrictEqual } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import { hashToken } from '../../src/domain/token.js';
import { settled, stack, statusCounts, table, waitFor, type Reply, type ServiceClient, type ServiceProcess } from '../helpers/service-process.js';

/**
 * A write's own deadline is DB_ACQUIRE_TIMEOUT_MS + DB_QUERY_TIMEOUT_MS = 800 ms (TUNED_ENV);
 * the rest is room for a loaded 2-core runner (the history scenarios allow 3.5 s).
 */
const CALL_BOUND_MS = 2_500;
const WRITERS = 8;
/** Pause before a writer retries a 503 or an unanswered call (the 503's Retry-After is 1 s: too slow for a short test). */
const RETRY_MS = 50;

type Data = Record<string, string | number>;
/** A merge patch: null removes a key. */
type Patch = Record<string, string | number | null>;
type Kind = 'create' | 'put' | 'patch' | 'destroy';

interface Call {
  kind: Kind;
  r: Reply;
}

/** A write sent and not yet answered for sure: retried as it is until it is. */
interface Attempt {
  kind: 'put' | 'patch' | 'destroy';
  body: Patch;
  /** The data the session holds once this write committed; null: destroyed. */
  expected: Data | null;
}

/** What the writers were told about one session. */
interface Tracked {
  token: string;
  /** The last acknowledged version (or one a 412 proved committed) and its data; null: destroyed. */
  version: number;
  data: Data | null;
  /** Which replica acknowledged `version`. */
  via: string;
  /** A write that went unanswered: it may have committed as `version + 1`. */
  pending?: Attempt;
  /** When the first unanswered try of `pending` ended. */
  pendingSince?: number;
}

const s = await stack(t);
// One after the other, never beside the writers: a loaded 2-core runner took 6.5 s to start
// one alone, and over 20 s with two at once or beside a running workload.
const first = await s.service(t);
const second = await s.service(t);
const summary: Array<Record<string, string | number>> = [];
const fmt = (ms: number) => ms.toFixed(0);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

const flushLog = process.env.CRASH_TEST_FLUSH_LOG_AT_TRX_COMMIT;
if (flushLog !== undefined) {
  const conn = await mysql.createConnection({ uri: s.rootUrl });
  // Only until the restart: SET GLOBAL is not persisted.
  await conn.query('SET GLOBAL innodb_flush_log_at_trx_commit = ?', [Number(flushLog)]);
  await conn.end();
}
const [durability] = await s.query<{ flush: number }>('SELECT @@innodb_flush_log_at_trx_commit AS flush');
t.comment(`MariaDB innodb_flush_log_at_trx_commit=${durability?.flush}${flushLog === undefined ? '' : ' (CRASH_TEST_FLUSH_LOG_AT_TRX_COMMIT, until the restart)'}`);
if (flushLog === undefined) {
  t.not(Number(durability?.flush), 0, 'the test MariaDB hands each commit to the OS (innodb_flush_log_at_trx_commit 1 or 2): it survives a SIGKILL');
}

/** RFC 7396 on a flat object: null removes a key. */
function mergePatch(data: Data, patch: Patch): Data {
  const next: Data = { ...data };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete next[k];
    else next[k] = v;
  }
  return next;
}

const isCleanUnavailable = (r: Reply) =>
  r.status === 503 &&
  r.body?.code === 'store_unavailable' &&
  (r.headers.get('content-type') ?? '').startsWith('application/problem+json') &&
  /^\d+$/.test(r.headers.get('retry-after') ?? '');

class Writers {
  readonly calls: Call[] = [];
  readonly sessions: Tracked[] = [];
  /** Answers that contradict what the writer was told before (wrong version or data, a stray 412 or 404). */
  readonly contradictions: string[] = [];
  /** Unanswered writes later settled: committed (a 412 named the next version) or not (a retry succeeded). */
  resolvedCommitted = 0;
  resolvedNotCommitted = 0;
  /** Each unanswered write once settled: when it first went unanswered, and when it was settled. */
  readonly resolutions: Array<{ since: number; at: number }> = [];
  private stopped = false;
  private readonly loops: Array<Promise<void>>;

  constructor(private readonly replicas: () => readonly ServiceClient[]) {
    this.loops = Array.from({ length: WRITERS }, (_, id) => this.loop(id));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  private readonly sending = new Map<ServiceClient, number>();

  /** Calls sent to `c` and not answered yet. */
  inFlight(c: ServiceClient): number {
    return this.sending.get(c) ?? 0;
  }

  private async send(kind: Kind, call: (c: ServiceClient) => Promise<Reply>): Promise<Reply> {
    const c = pick(this.replicas());
    this.sending.set(c, this.inFlight(c) + 1);
    const r = await call(c);
    this.sending.set(c, this.inFlight(c) - 1);
    this.calls.push({ kind, r });
    return r;
  }

  private async loop(id: number): Promise<void> {
    let current: Tracked | undefined;
    let seq = 0;
    while (!this.stopped) {
      if (current === undefined || (current.pending === undefined && Math.random() < 0.1)) {
        const data = { writer: id, seq: ++seq, note: `created by writer ${id}` };
        const r = await this.send('create', (c) => c.create(data));
        if (r.status === 201) {
          current = { token: r.body.token as string, version: 1, data, via: r.via };
          this.sessions.push(current);
        } else if (r.status === 503 || r.status === 0) {
          await sleep(RETRY_MS); // an unanswered create handed out no token: nothing to track
        } else {
          this.contradictions.push(`create answered ${r.status} ${JSON.stringify(r.body)}`);
        }
        continue;
      }
      const attempt = current.pending ?? this.nextWrite(current, id, ++seq);
      const k = current;
      const r = await this.send(attempt.kind, (c) =>
        attempt.kind === 'destroy' ? c.destroy(k.token) : attempt.kind === 'put' ? c.put(k.token, attempt.body, k.version) : c.patch(k.token, attempt.body, k.version),
      );
      if (r.status === (attempt.kind === 'destroy' ? 204 : 200)) {
        if (attempt.kind !== 'destroy' && (r.body?.version !== k.version + 1 || !isDeepStrictEqual(r.body?.data, attempt.expected))) {
          this.contradictions.push(`${k.token.slice(0, 8)}: ${attempt.kind} on v${k.version} answered v${r.body?.version} ${JSON.stringify(r.body?.data)}`);
        }
        if (k.pending !== undefined) this.resolvedNotCommitted += 1;
        this.advance(k, attempt, r, r.via);
      } else if (k.pending !== undefined && (attempt.kind === 'destroy' ? r.status === 404 : r.status === 412 && r.body?.currentVersion === k.version + 1)) {
        // Only this writer writes this session: the unanswered attempt is what made version + 1
        // (or what destroyed it).
        this.resolvedCommitted += 1;
        this.advance(k, attempt, r, `${r.via} (${r.status})`);
      } else if (r.status === 503 || r.status === 0) {
        k.pending = attempt;
        k.pendingSince ??= r.ended;
        await sleep(RETRY_MS);
      } else {
        this.contradictions.push(`${k.token.slice(0, 8)}: ${attempt.kind} on v${k.version} answered ${r.status} ${JSON.stringify(r.body)}`);
        current = undefined;
      }
      if (k.data === null) current = undefined;
    }
  }

  /** `attempt` is now known to have committed as the next version. */
  private advance(k: Tracked, attempt: Attempt, r: Reply, via: string): void {
    if (k.pendingSince !== undefined) this.resolutions.push({ since: k.pendingSince, at: r.ended });
    Object.assign(k, { version: k.version + 1, data: attempt.expected, via, pending: undefined, pendingSince: undefined });
  }

  /** Half PUTs, half merge-PATCHes, now and then a destroy. */
  private nextWrite(k: Tracked, id: number, seq: number): Attempt {
    const dice = Math.random();
    if (dice < 0.05) return { kind: 'destroy', body: {}, expected: null };
    if (dice < 0.5) {
      const body = { writer: id, seq, put: `replaced at ${seq}` };
      return { kind: 'put', body, expected: body };
    }
    const patch: Patch = { seq, [`k${seq % 4}`]: seq, ...(seq % 3 === 0 ? { note: null } : {}) };
    return { kind: 'patch', body: patch, expected: mergePatch(k.data!, patch) };
  }

  acked(kind: Kind): Call[] {
    return this.calls.filter((c) => c.kind === kind && c.r.status >= 200 && c.r.status < 300);
  }
}

async function flushRedis(): Promise<void> {
  const redis = new Redis(s.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    await redis.flushall();
  } finally {
    redis.disconnect();
  }
}

/** Reads every session through every replica; the sessions that do not read as the writers were told, and why. */
async function readBack(clients: readonly ServiceClient[], sessions: readonly Tracked[]): Promise<{ reads: number; lost: Set<Tracked>; why: string[] }> {
  const lost = new Set<Tracked>();
  const why: string[] = [];
  const queue = [...sessions];
  let reads = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let k = queue.pop(); k !== undefined; k = queue.pop()) {
        for (const c of clients) {
          const r = await c.read(k.token);
          reads += 1;
          const v = r.body?.version;
          const shows = (version: number, data: Data | null) =>
            data === null ? r.status === 404 : r.status === 200 && v === version && isDeepStrictEqual(r.body?.data, data);
          if (!shows(k.version, k.data) && !(k.pending !== undefined && shows(k.version + 1, k.pending.expected))) {
            lost.add(k);
            why.push(
              `${k.token.slice(0, 8)}: ${c.name} answered ${r.status} v${v} ${JSON.stringify(r.body?.data ?? r.body)}; ` +
                `acknowledged ${k.data === null ? 'destroy' : `v${k.version} ${JSON.stringify(k.data)}`} by ${k.via}${k.pending ? ` (${k.pending.kind} unanswered)` : ''}`,
            );
          }
        }
      }
    }),
  );
  return { reads, lost, why };
}

/** Stops the writers, waits for the outbox, flushes Redis and reads every session back. */
async function finish(t: Test, name: string, w: Writers, clients: readonly ServiceClient[]): Promise<{ reads: number; lost: number }> {
  await w.stop();
  await settled(s, clients);
  await flushRedis();
  const { reads, lost, why } = await readBack(clients, w.sessions);
  t.same(w.contradictions.slice(0, 10), [], `${name}: every answer agreed with what the writer was told before`);
  t.same(why.slice(0, 20), [], `${name}: with Redis flushed, all ${w.sessions.length} acknowledged sessions read back as acknowledged on ${clients.map((c) => c.name).join(' and ')} (${lost.size} did not)`);
  return { reads, lost: lost.size };
}

/** No answer or a 5xx (any other answer is checked against what the writer knew). */
const failedCall = (c: Call) => c.r.status === 0 || c.r.status >= 500;
const describe = (c: Call) => `${c.kind} via ${c.r.via}: ${c.r.status} in ${fmt(c.r.ms)} ms ${c.r.error ?? JSON.stringify(c.r.body)}`;

function figures(w: Writers): Record<string, string | number> {
  const slowest503 = Math.max(0, ...w.calls.filter((c) => c.r.status === 503).map((c) => c.r.ms));
  return {
    sessions: w.sessions.length,
    PUTs: w.acked('put').length,
    PATCHes: w.acked('patch').length,
    destroys: w.acked('destroy').length,
    '503s': w.calls.filter((c) => c.r.status === 503).length,
    'no answer': w.calls.filter((c) => c.r.status === 0).length,
    'unanswered: committed/not/open': `${w.resolvedCommitted}/${w.resolvedNotCommitted}/${w.sessions.filter((k) => k.pending !== undefined).length}`,
    'slowest ms': `${fmt(Math.max(0, ...w.calls.map((c) => c.r.ms)))} (503: ${fmt(slowest503)})`,
  };
}

/** First acknowledged write through each replica that started after `since`: how long each took to write again. */
function recoveryMs(w: Writers, clients: readonly ServiceClient[], since: number): number {
  return Math.max(
    ...clients.map((c) => {
      const first = w.calls.filter((x) => x.r.via === c.name && x.r.started >= since && x.r.status >= 200 && x.r.status < 300);
      return Math.min(...first.map((x) => x.r.ended)) - since;
    }),
  );
}

/** From the crash until the last write it left unanswered was settled (0 when none was). */
function settledWithin(w: Writers, crashedAt: number): number {
  return Math.max(0, ...w.resolutions.filter((x) => x.since >= crashedAt).map((x) => x.at - crashedAt));
}

t.test('MariaDB SIGKILLed mid-writes and restarted: every acknowledged write reads back, failures are clean 503s', async (t) => {
  const clients = [first.client, second.client];
  await settled(s, clients);
  const w = new Writers(() => clients);
  await sleep(1_500);
  const acksBefore = w.calls.filter((c) => c.r.status >= 200 && c.r.status < 300).length;
  const killedAt = performance.now();
  s.mariadb.kill('SIGKILL');
  await sleep(1_000);
  const restartAt = performance.now();
  await s.mariadb.restart(); // InnoDB crash recovery on the same data dir
  const restartedAt = performance.now();
  // Until both replicas acknowledge writes again, then a little steady traffic.
  await waitFor('both replicas to acknowledge writes again', async () => Number.isFinite(recoveryMs(w, clients, restartedAt)), 20_000, 50);
  await sleep(1_000);
  const name = 'mariadb SIGKILL+restart';
  const { reads, lost } = await finish(t, name, w, clients);

  const failed = w.calls.filter(failedCall);
  t.ok(acksBefore > 0, `${name}: ${acksBefore} writes acknowledged before the kill`);
  t.ok(failed.length > 0, `${name}: the kill was felt (${failed.length} calls failed: ${statusCounts(failed.map((c) => c.r))})`);
  t.same(
    failed.filter((c) => !isCleanUnavailable(c.r)).slice(0, 10).map(describe),
    [],
    `${name}: every failure was a 503 store_unavailable problem with Retry-After (never a 500, never a dropped call)`,
  );
  const slowest = Math.max(...w.calls.map((c) => c.r.ms));
  t.ok(slowest < CALL_BOUND_MS, `${name}: every call answered within ${CALL_BOUND_MS} ms (slowest ${fmt(slowest)} ms)`);
  summary.push({
    scenario: name,
    ...figures(w),
    fault: `down ${fmt(restartedAt - killedAt)} ms (restart ${fmt(restartedAt - restartAt)})`,
    'recovery ms': `${fmt(recoveryMs(w, clients, restartedAt))} (settled ${fmt(settledWithin(w, killedAt))})`,
    reads,
    lost,
  });
});

t.test('a replica SIGKILLed mid-writes: every write it acknowledged reads back', async (t) => {
  // The replacement the Deployment would start, started first (see above).
  const [killed, survivor, replacement] = [first, second, await s.service(t)];
  let clients: ServiceClient[] = [killed.client, survivor.client];
  await settled(s, [...clients, replacement.client]);
  const w = new Writers(() => clients);
  await sleep(1_500);
  await waitFor('writes in flight on the replica to kill', async () => w.inFlight(killed.client) >= 2, 5_000, 1);
  const killedAt = performance.now();
  killed.kill('SIGKILL');
  clients = [survivor.client];
  await sleep(1_000);
  clients = [survivor.client, replacement.client];
  await waitFor('the replacement to acknowledge writes', async () => Number.isFinite(recoveryMs(w, [replacement.client], killedAt)), 20_000, 50);
  await sleep(500);
  const name = 'replica SIGKILL';
  const { reads, lost } = await finish(t, name, w, clients);

  const fromKilled = w.calls.filter((c) => c.r.via === killed.client.name && c.r.status >= 200 && c.r.status < 300);
  const inFlight = w.calls.filter((c) => c.r.via === killed.client.name && c.r.status === 0);
  t.ok(fromKilled.length > 0, `${name}: ${fromKilled.length} writes acknowledged by the killed replica, all among those read back`);
  const failed = w.calls.filter(failedCall);
  t.same(
    failed.filter((c) => !(c.r.status === 0 && c.r.via === killed.client.name) && !isCleanUnavailable(c.r)).slice(0, 10).map(describe),
    [],
    `${name}: only calls to the killed replica went unanswered (${inFlight.length}, retried through the survivor); anything else that failed was a clean 503 (${statusCounts(failed.map((c) => c.r))})`,
  );
  const slowest = Math.max(...w.calls.map((c) => c.r.ms));
  t.ok(slowest < CALL_BOUND_MS, `${name}: every call answered within ${CALL_BOUND_MS} ms (slowest ${fmt(slowest)} ms)`);
  summary.push({
    scenario: name,
    ...figures(w),
    fault: `${inFlight.length} calls in flight`,
    'recovery ms': `(settled ${fmt(settledWithin(w, killedAt))})`,
    reads,
    lost,
  });

  // Control: the read-back does see a lost write. Undo one acknowledged update and one create
  // in MariaDB, behind the replicas' backs; exactly those two must be reported.
  const intact = w.sessions.filter((k) => k.pending === undefined && k.data !== null);
  const updated = intact.find((k) => k.version >= 2)!;
  const created = intact.find((k) => k !== updated)!;
  await s.query("UPDATE sessions SET version = version - 1, data = '{}' WHERE id_hash = ?", [hashToken(updated.token)]);
  await s.query('DELETE FROM sessions WHERE id_hash = ?', [hashToken(created.token)]);
  await flushRedis();
  const control = await readBack(clients, [updated, created, ...intact.filter((k) => k !== updated && k !== created).slice(0, 10)]);
  t.comment(`control:\n${control.why.join('\n')}`);
  t.ok(control.lost.has(updated) && control.lost.has(created) && control.lost.size === 2, 'control: the undone update and the deleted create are reported, nothing else');
  t.equal(control.why.length, 4, 'control: each on both replicas');
});

t.test('figures', async (t) => {
  t.comment(`\n${table(summary)}`);
  t.equal(summary.length, 2, 'both crashes ran');
});
