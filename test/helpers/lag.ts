import { performance } from 'node:perf_hooks';

/**
 * Scheduling lag measured in the test's own process: a timer due every `everyMs` records how late
 * it fires. On a quiet machine that is ~0; on a starved one it is the time nothing here could
 * run, and every process of the test (services, MariaDB, Redis) is starved alike. A test that
 * bounds a configured deadline adds this measured lag, so the bound stays the deadline's and not
 * the machine's.
 */
export interface LagMeter {
  /** The latest any single tick fired, in ms. */
  readonly maxMs: number;
  /** The sum of every tick's lateness, in ms: the time this process was kept from running. */
  readonly totalMs: number;
  /** The lateness summed over the ticks that fired within [from, to] (performance.now() times). */
  between(from: number, to: number): number;
  stop(): void;
}

export function lagMeter(everyMs = 10): LagMeter {
  let due = performance.now() + everyMs;
  let maxMs = 0;
  let totalMs = 0;
  /** Each late tick: when it fired, and how late. */
  const late: Array<[number, number]> = [];
  const timer = setInterval(() => {
    const now = performance.now();
    const ms = Math.max(0, now - due);
    maxMs = Math.max(maxMs, ms);
    totalMs += ms;
    if (ms > 0) late.push([now, ms]);
    due = now + everyMs;
  }, everyMs);
  timer.unref();
  return {
    get maxMs() {
      return maxMs;
    },
    get totalMs() {
      return totalMs;
    },
    between: (from, to) => {
      let sum = 0;
      // A tick that fired just after `to` was held up during the interval too.
      for (const [at, ms] of late) if (at >= from && at - ms <= to) sum += ms;
      return sum;
    },
    stop: () => clearInterval(timer),
  };
}
