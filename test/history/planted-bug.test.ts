/**
 * The history checker catches a real cache bug, and passes the same run without it.
 *
 * SESSIOND_TEST_UNSAFE_FILL=1 (a switch of the test entry point, test/helpers/test-server.mjs;
 * the production server.ts does not read it) makes a cache fill take no
 * lease and install without the lease and write-marker checks: a write that commits between the
 * fill's read and its install no longer fences it, and the stale record is installed. MariaDB sits
 * behind a little latency (2±4 ms) so that every fill has such a window. Two services with the
 * bug run the history workload until the checker reports a stale read (capped at MAX_RUN_MS); then
 * two services without it run the same workload until MIN_CLEAN_OPS calls were acknowledged and
 * the history must pass. The clean run is bounded by that count, not by time: on a loaded machine
 * the same seconds hold fewer calls, and a checker that saw too few proves little.
 */
import t, { type Test } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { SERVER, stack, TEST_SERVER, type ServiceProcess } from '../helpers/service-process.js';
import { counterexample, type CheckResult } from './checker.js';
import { checkHistory, dumpHistory, FallbackMonitor, HISTORY_SERVICE_ENV, historyWorkload } from './harness.js';

/** The planted run stops at its first stale read, or after this cap (a loaded machine needs more seconds for the same calls). */
const MAX_RUN_MS = 60_000;
/** The clean run goes on until this many calls were acknowledged (and checked)… */
const MIN_CLEAN_OPS = 1_000;
/** …or until this cap, far above what that count takes on a quiet machine (~3 s). */
const CLEAN_CAP_MS = 60_000;
const CHECK_EVERY_MS = 2_000;

// The work is bounded (planted run ≤ MAX_RUN_MS, clean run ≤ CLEAN_CAP_MS, plus start-ups):
// the file's timeout covers those caps rather than a quiet machine's pace.
t.setTimeout(4 * 60_000);

const s = await stack(t, { proxy: { mariadb: true } });
s.mariadbProxy!.setLatency(2, 4);

/** Runs the workload on two fresh services; stops early once `stopWhen` says so. */
async function run(t: Test, name: string, server: string, env: Record<string, string>, stopWhen: (r: CheckResult) => boolean, maxMs = MAX_RUN_MS) {
  const services: ServiceProcess[] = await Promise.all([1, 2].map(() => s.service(t, { ...HISTORY_SERVICE_ENV, ...env }, server)));
  const w = historyWorkload(name, () => services);
  const monitor = new FallbackMonitor(() => services);
  monitor.start();
  w.start();
  let result: CheckResult | undefined;
  for (let ran = 0; ran < maxMs; ran += CHECK_EVERY_MS) {
    await sleep(CHECK_EVERY_MS);
    result = checkHistory(w, services, monitor);
    if (stopWhen(result)) break;
  }
  await w.stop();
  await monitor.stop();
  result = checkHistory(w, services, monitor);
  await dumpHistory(name, w, services, monitor, result);
  for (const svc of services) svc.kill();
  t.comment(`${name}: ${result.stats.ops} calls, ${result.stats.lineages} sessions, ${result.violations.length} violations`);
  return result;
}

/** What the planted bug is about: stale data or a destroyed session read back. */
const staleOf = (r: CheckResult) => r.violations.filter((v) => v.check === 'data' || v.check === 'resurrection');

t.test('with unfenced fills (no lease, no write marker), the checker finds a stale read', async (t) => {
  // An unfenced fill also installs an expiry older than a touch (it skips the touch register), and
  // that may be the first violation; the run goes on until a stale read shows up.
  // A slower MariaDB (10±10 ms) widens each fill's window for a racing write, so the bug shows
  // within seconds; tombstones already stop an unfenced fill from resurrecting a destroyed session.
  s.mariadbProxy!.setLatency(10, 10);
  const result = await run(t, 'planted', TEST_SERVER, { SESSIOND_TEST_UNSAFE_FILL: '1' }, (r) => staleOf(r).length > 0, MAX_RUN_MS);
  s.mariadbProxy!.setLatency(2, 4);
  t.notOk(result.ok, 'the checker rejects the history');
  t.comment(`counterexample:\n${counterexample(result, 0, 1)}`);
  const stale = staleOf(result);
  t.ok(stale.length > 0, 'as a read of data older than an acknowledged write, or of a session after its destroy');
});

t.test('the same run with leased fills passes', async (t) => {
  // Bounded by count: it stops at MIN_CLEAN_OPS acknowledged calls (or a violation), whatever the load.
  const result = await run(t, 'clean', SERVER, {}, (r) => !r.ok || r.stats.ok >= MIN_CLEAN_OPS, CLEAN_CAP_MS);
  if (!result.ok) t.comment(counterexample(result));
  t.ok(result.ok, 'the history passes the checker');
  t.ok(result.stats.ok >= MIN_CLEAN_OPS, `enough calls were checked (${result.stats.ok} acknowledged, wanted ${MIN_CLEAN_OPS})`);
});
