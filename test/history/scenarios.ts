/**
 * History checks under injected faults, with figures (issue #6).
 *
 * One private MariaDB and Redis, each behind a fault proxy (test/tools/fault-proxy.ts), and 2–3
 * service processes (`node dist/server.js`) on them. For each scenario many concurrent clients
 * run the history workload (workload.ts) over every replica; the fault is injected mid-run and
 * healed; then every token ever handed out is read through every replica, and the whole
 * history goes through the checker (checker.ts). A failing history prints its smallest
 * counterexample.
 *
 *   npm run faults                      all scenarios (FAULTS_FULL=1), prints the fault table
 *   npx tap test/history/scenarios.ts        the short version: two faults (not in CI yet: the process sometimes does not exit)
 *
 * Options (environment): HISTORY_SCENARIOS=name,name (a subset, by the names in the table);
 * SESSIOND_HISTORY_SERVER=/path/to/dist/server.js (run the services from another build, e.g. a
 * scratch copy with a planted bug); SESSIOND_TEST_UNSAFE_FILL is passed on to the services.
 */
import t from 'tap';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { stack, table, type ServiceProcess } from '../helpers/service-process.js';
import { check, counterexample, isIndeterminate, type FaultWindow } from './checker.js';
import { Workload } from './workload.js';

const FULL = process.env.FAULTS_FULL === '1';
const only = process.env.HISTORY_SCENARIOS?.split(',').map((x) => x.trim()).filter(Boolean);
const TOUCH_THRESHOLD_S = 5;
const serviceEnv: Record<string, string> = {
  TOUCH_PERSIST_THRESHOLD_SECONDS: String(TOUCH_THRESHOLD_S),
  // Loaded CI machines stall Redis replies past 50 ms now and then; every such timeout is a
  // (legitimate) fallback to MariaDB the checker would have to excuse. 200 ms keeps the
  // fault-free stretches strict; the faults below are far beyond it.
  REDIS_COMMAND_TIMEOUT_MS: '200',
  // With Redis gone MariaDB serves every call of 16 busy clients: on a loaded 2-core runner the
  // tuned 300 ms pool wait turns queueing into 503s. The defaults-like 1 s keep the figures
  // about the fault, not the runner (a paused MariaDB still answers 503 within ~2 s).
  DB_ACQUIRE_TIMEOUT_MS: '1000',
  DB_QUERY_TIMEOUT_MS: '1000',
  ...(process.env.SESSIOND_TEST_UNSAFE_FILL ? { SESSIOND_TEST_UNSAFE_FILL: process.env.SESSIOND_TEST_UNSAFE_FILL } : {}),
};

const s = await stack(t, { proxy: { redis: true, mariadb: true }, server: process.env.SESSIOND_HISTORY_SERVER });
const pool: ServiceProcess[] = await Promise.all(Array.from({ length: FULL ? 3 : 2 }, () => s.service(t, serviceEnv)));
const everyService = new Set<ServiceProcess>(pool);
const redisProxy = s.redisProxy!;
const mariadbProxy = s.mariadbProxy!;

interface Scenario {
  name: string;
  ci: boolean;
  holdMs: number;
  /** Redis lost touches or could not take them: expiry may regress within the write-behind bound. */
  touchLoss: boolean;
  /** Documented invalidation delay that applies to this fault (README "Limits worth knowing"). */
  staleToleranceMs?: number;
  inject(w: Workload): Promise<void>;
  heal(w: Workload): Promise<void>;
  /** Bounds asserted on the figures. */
  expect: { maxFailedShare: number; maxSlowestMs: number; maxRecoverMs: number };
}

let killed: ServiceProcess | undefined;

const scenarios: Scenario[] = [
  {
    // No fault as such: MariaDB a little slow, so that every fill has a window for a racing write.
    name: 'mariadb latency 2±4ms',
    ci: false,
    holdMs: 4_000,
    touchLoss: false,
    inject: async () => mariadbProxy.setLatency(2, 4),
    heal: async () => mariadbProxy.heal(),
    expect: { maxFailedShare: 0.01, maxSlowestMs: 3_500, maxRecoverMs: 5_000 },
  },
  {
    name: 'redis killed+restarted',
    ci: true,
    holdMs: 3_000,
    touchLoss: true,
    inject: async () => s.redis.kill('SIGKILL'),
    heal: () => s.redis.restart(),
    expect: { maxFailedShare: 0.05, maxSlowestMs: 3_500, maxRecoverMs: 5_000 },
  },
  {
    name: 'redis paused',
    ci: false,
    holdMs: 3_000,
    touchLoss: true,
    inject: async () => s.redis.kill('SIGSTOP'),
    heal: async () => s.redis.kill('SIGCONT'),
    expect: { maxFailedShare: 0.05, maxSlowestMs: 3_500, maxRecoverMs: 5_000 },
  },
  {
    // Commands time out (50 ms) while others get through: one replica may miss an invalidation
    // another replica's read still sees, until the outbox replays it (README limits).
    name: 'redis latency 150±200ms',
    ci: false,
    holdMs: 5_000,
    touchLoss: true,
    staleToleranceMs: 2_000,
    inject: async () => redisProxy.setLatency(150, 200),
    heal: async () => redisProxy.heal(),
    expect: { maxFailedShare: 0.05, maxSlowestMs: 3_500, maxRecoverMs: 5_000 },
  },
  {
    name: 'mariadb paused 1.5s',
    ci: true,
    holdMs: 1_500,
    touchLoss: false,
    inject: async () => s.mariadb.kill('SIGSTOP'),
    heal: async () => s.mariadb.kill('SIGCONT'),
    expect: { maxFailedShare: 1, maxSlowestMs: 3_500, maxRecoverMs: 5_000 },
  },
  {
    // A replica SIGKILLed while destroys are in flight through it: those destroys are never
    // acknowledged; a committed one may leave its cache entry until an outbox worker replays it.
    name: 'service killed mid-destroy',
    ci: false,
    holdMs: 1_000,
    touchLoss: false,
    staleToleranceMs: 2_500,
    inject: async (w) => {
      killed = pool.shift()!;
      const burst = w.destroyBurst(killed.client, 20);
      await sleep(3);
      killed.kill('SIGKILL');
      await burst;
    },
    heal: async () => {
      const fresh = await s.service(t, serviceEnv);
      everyService.add(fresh);
      pool.push(fresh);
    },
    expect: { maxFailedShare: 0.1, maxSlowestMs: 3_500, maxRecoverMs: 5_000 },
  },
];

/**
 * Stretches in which a replica's Redis breaker was open (from the services' logs): touches
 * went to MariaDB, which holds the write-behind expiry, so a later read from Redis may show an
 * earlier expiry (within the write-behind bound; README "The Redis cache", limits).
 */
function breakerWindows(sinceWall: number): FaultWindow[] {
  const windows: FaultWindow[] = [];
  for (const svc of everyService) {
    let openedAt: number | undefined;
    for (const line of svc.logLines(/^redis (breaker|error)/, sinceWall)) {
      const at = line.time - performance.timeOrigin;
      if (line.msg === 'redis error') windows.push({ name: `${svc.name} redis error`, start: at - 1_000, end: at + 1_000, touchLoss: true });
      else if (line.msg === 'redis breaker open' && openedAt === undefined) openedAt = at;
      else if (line.msg === 'redis breaker closed' && openedAt !== undefined) {
        windows.push({ name: `${svc.name} breaker open`, start: openedAt - 1_000, end: at + 1_000, touchLoss: true });
        openedAt = undefined;
      }
    }
    if (openedAt !== undefined) windows.push({ name: `${svc.name} breaker open`, start: openedAt - 1_000, end: Infinity, touchLoss: true });
  }
  return windows;
}

/**
 * Polls every replica's `sessiond_cache_fallbacks_total` (a write whose invalidation Redis did
 * not take, or a call served from MariaDB because Redis did not answer): the stretches in
 * which it grew are where the documented invalidation delay applies (README "Limits worth
 * knowing": an acknowledged write whose invalidation was not delivered is replayed by the
 * outbox within about OUTBOX_REPLAY_INTERVAL_MS).
 */
class FallbackMonitor {
  readonly windows: Array<{ start: number; end: number }> = [];
  private readonly last = new Map<ServiceProcess, { at: number; count: number }>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  start(): void {
    this.timer = setInterval(() => void this.poll(), 200);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.poll();
  }

  private async poll(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await Promise.all(
        [...everyService].filter((svc) => svc.running).map(async (svc) => {
          const at = performance.now();
          const text = await fetch(`${svc.url}/metrics`, { signal: AbortSignal.timeout(1_000) }).then((r) => r.text(), () => '');
          const m = /^sessiond_cache_fallbacks_total (\d+)/m.exec(text);
          if (!m) return;
          const count = Number(m[1]);
          const prev = this.last.get(svc);
          if (prev !== undefined && count > prev.count) this.windows.push({ start: prev.at, end: performance.now() });
          this.last.set(svc, { at, count });
        }),
      );
    } finally {
      this.busy = false;
    }
  }
}

const rows: Array<Record<string, string | number>> = [];
const selected = scenarios.filter((sc) => (only ? only.includes(sc.name) : FULL || sc.ci));

for (const [index, sc] of selected.entries()) {
  await t.test(sc.name, async (t) => {
    const w = new Workload({
      run: `h${index}`,
      clients: 16,
      slots: 12,
      subjects: 4,
      services: () => pool.filter((p) => p.running).map((p) => p.client),
      idleTimeout: 300,
      shortAbsoluteEvery: 5,
      shortAbsoluteTimeout: 12,
    });
    const monitor = new FallbackMonitor();
    monitor.start();
    w.start();
    await sleep(FULL ? 3_000 : 2_500);
    const faultStart = performance.now();
    await sc.inject(w);
    await sleep(sc.holdMs);
    await sc.heal(w);
    const healedAt = performance.now();
    await sleep(FULL ? 5_000 : 3_000);
    await w.stop();
    await monitor.stop();
    const final = await w.finalReads();

    const faults: FaultWindow[] = [{ name: sc.name, start: faultStart, end: healedAt + 5_000, touchLoss: sc.touchLoss }];
    faults.push(...breakerWindows(performance.timeOrigin + w.t0));
    // Where a replica served a call from MariaDB because Redis did not answer, touches went to
    // MariaDB's write-behind expiry: the documented expiry bound applies there too.
    faults.push(...monitor.windows.map((x) => ({ name: 'redis fallback', start: x.start - 500, end: x.end, touchLoss: true })));
    const result = check(w.history, {
      touchThresholdMs: TOUCH_THRESHOLD_S * 1000,
      faults,
      staleToleranceMs: sc.staleToleranceMs ?? 1_500,
      staleWindows: [...monitor.windows, ...(sc.staleToleranceMs ? [{ start: faultStart, end: healedAt + 1_000 }] : [])],
    });

    const during = w.history.filter((o) => o.kind !== 'final-read' && o.start >= faultStart && o.start <= healedAt);
    const failed = during.filter(isIndeterminate);
    const slowest = Math.max(0, ...during.map((o) => o.end - o.start));
    // Recovery: the run of failures that follows the heal (each within 500 ms of the last);
    // an isolated failure later (a loaded runner) is counted apart, not as "not recovered".
    const after = w.history.filter((o) => o.kind !== 'final-read' && o.start > healedAt && isIndeterminate(o)).sort((a, b) => a.start - b.start);
    let recoveredAt = healedAt;
    for (const o of after) {
      if (o.start - recoveredAt > 500) break;
      recoveredAt = Math.max(recoveredAt, o.end);
    }
    const recoverMs = recoveredAt - healedAt;
    const laterFailures = after.filter((o) => o.start > recoveredAt).length;
    const workOps = w.history.filter((o) => o.kind !== 'final-read');
    rows.push({
      scenario: sc.name,
      ops: workOps.length,
      'ops in fault': during.length,
      'failed in fault': failed.length,
      'slowest ms': Math.round(slowest),
      'recover ms': Math.round(recoverMs),
      'failed later': laterFailures,
      'tokens checked': final.checked,
      lost: final.lost.length,
      resurrected: final.resurrected.length,
      violations: result.violations.length,
      tolerated: result.tolerated.length,
    });
    t.comment(
      `${sc.name}: ${result.stats.ops} calls (${result.stats.ok} 2xx, ${result.stats.indeterminate} failed), ${result.stats.lineages} sessions, ${result.stats.tokens} tokens`,
    );
    if (result.tolerated.length > 0) {
      t.comment(`tolerated (documented invalidation delay, ${monitor.windows.length} Redis-fallback windows): ${result.tolerated.length}; first:\n${counterexample({ ...result, violations: result.tolerated }, w.t0, 1)}`);
    }
    if (!result.ok) t.comment(counterexample(result, w.t0));
    t.ok(result.ok, 'the history passes the checker');
    t.same(final.lost, [], 'every acknowledged create that was never destroyed still reads');
    t.same(final.resurrected, [], 'no acknowledged destroy / rotate / revoke-all reads again');
    t.equal(final.undetermined, 0, 'every final read got an answer');
    t.ok(during.length > 0, 'calls were made during the fault');
    t.ok(failed.length <= Math.ceil(sc.expect.maxFailedShare * during.length), `failed during the fault: ${failed.length} of ${during.length}`);
    t.ok(slowest <= sc.expect.maxSlowestMs, `slowest call during the fault: ${Math.round(slowest)} ms`);
    t.ok(recoverMs <= sc.expect.maxRecoverMs, `recovered ${Math.round(recoverMs)} ms after healing`);
  });
}

t.teardown(() => {
  if (process.env.HISTORY_DEBUG_HANDLES) {
    const show = () => {
      const handles = (process as unknown as { _getActiveHandles(): Array<{ constructor: { name: string }; remotePort?: number; localPort?: number }> })._getActiveHandles();
      process.stderr.write(`HANDLES ${handles.map((h) => `${h.constructor.name}:${h.remotePort ?? h.localPort ?? ''}`).join(' ')}\n`);
    };
    show();
    setInterval(show, 5_000).unref();
  }
});
t.test('fault table', async (t) => {
  t.comment(`\n${table(rows)}`);
  t.equal(rows.reduce((n, r) => n + Number(r.lost), 0), 0, 'zero lost acknowledged writes');
  t.equal(rows.reduce((n, r) => n + Number(r.resurrected), 0), 0, 'zero resurrected sessions');
});
