/**
 * What the history tests share: the services' settings, the workload's shape, and the windows
 * in which the documented cache limits apply (read from the services' logs and metrics).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ServiceProcess } from '../helpers/service-process.js';
import { check, type CheckResult, type FaultWindow } from './checker.js';
import { Workload } from './workload.js';

export const TOUCH_THRESHOLD_S = 5;

export const HISTORY_SERVICE_ENV: Readonly<Record<string, string>> = {
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
  // A new connection's handshake (several round trips through this process's fault proxy, then
  // the session setup, each waiting for a turn of two starved event loops) took 1.0–4.4 s on a
  // runner at load 15–18 (the services' "mariadb connection failed" lines). With 300 ms, and
  // then 1 s, every attempt failed and the connector backed off further after each: a replica's
  // pool stayed at one connection of ten, and calls answered 503 at the acquire timeout before
  // any fault. Calls still wait at most DB_ACQUIRE_TIMEOUT_MS for a connection.
  DB_CONNECT_TIMEOUT_MS: '5000',
};

/** 16 clients on 12 shared sessions of 4 subjects; every 5th with a 12 s absolute expiry. */
export function historyWorkload(run: string, services: () => ServiceProcess[]): Workload {
  return new Workload({
    run,
    clients: 16,
    slots: 12,
    subjects: 4,
    services: () => services().filter((p) => p.running).map((p) => p.client),
    idleTimeout: 300,
    shortAbsoluteEvery: 5,
    shortAbsoluteTimeout: 12,
  });
}

/**
 * Stretches in which a replica's Redis breaker was open (from the services' logs): touches
 * went to MariaDB, which holds the write-behind expiry, so a later read from Redis may show an
 * earlier expiry (within the write-behind bound; README "The Redis cache", limits).
 */
export function breakerWindows(everyService: Iterable<ServiceProcess>, sinceWall: number): FaultWindow[] {
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
export class FallbackMonitor {
  readonly windows: Array<{ start: number; end: number }> = [];
  private readonly last = new Map<ServiceProcess, { at: number; count: number }>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(private readonly everyService: () => Iterable<ServiceProcess>) {}

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
        [...this.everyService()].filter((svc) => svc.running).map(async (svc) => {
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

/**
 * Checks a finished run: `faults` are the injected ones; the windows in which a replica's
 * breaker was open or a call fell back to MariaDB are added from the services' logs and metrics.
 */
export function checkHistory(
  w: Workload,
  everyService: Iterable<ServiceProcess>,
  monitor: FallbackMonitor,
  extra: { faults?: FaultWindow[]; staleToleranceMs?: number; staleWindows?: Array<{ start: number; end: number }> } = {},
): CheckResult {
  const faults: FaultWindow[] = [...(extra.faults ?? []), ...breakerWindows(everyService, performance.timeOrigin + w.t0)];
  // Where a replica served a call from MariaDB because Redis did not answer, touches went to
  // MariaDB's write-behind expiry: the documented expiry bound applies there too.
  faults.push(...monitor.windows.map((x) => ({ name: 'redis fallback', start: x.start - 500, end: x.end, touchLoss: true })));
  return check(w.history, {
    touchThresholdMs: TOUCH_THRESHOLD_S * 1000,
    faults,
    staleToleranceMs: extra.staleToleranceMs ?? 1_500,
    staleWindows: [...monitor.windows, ...(extra.staleWindows ?? [])],
  });
}

/**
 * With HISTORY_DUMP=dir: writes a run's whole history, its fault times, the fallback windows and
 * the services' logs to dir/<name>.json (times in ms since the workload's start), to study a
 * counterexample in full. Returns the file, or undefined when not asked to.
 */
export async function dumpHistory(
  name: string,
  w: Workload,
  everyService: Iterable<ServiceProcess>,
  monitor: FallbackMonitor,
  result: CheckResult,
  fault?: { start: number; healed: number },
): Promise<string | undefined> {
  const dir = process.env.HISTORY_DUMP;
  if (!dir) return undefined;
  const file = path.join(dir, `${name.replace(/[^a-z0-9]+/gi, '-')}.json`);
  const rel = (at: number) => at - w.t0;
  const dump = {
    fault: fault && { start: rel(fault.start), healed: rel(fault.healed) },
    fallbackWindows: monitor.windows.map((x) => ({ start: rel(x.start), end: rel(x.end) })),
    violations: result.violations.map((v) => v.message),
    history: w.history.map((o) => ({ ...o, start: rel(o.start), end: rel(o.end) })),
    logs: Object.fromEntries([...everyService].map((svc) => [svc.name, svc.output()])),
  };
  await mkdir(dir, { recursive: true });
  await writeFile(file, JSON.stringify(dump, null, 1));
  return file;
}
