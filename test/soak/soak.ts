/**
 * Soak: steady mixed load on one `node dist/server.js` (private MariaDB + Redis, REDIS_URL set)
 * for SOAK_MINUTES (default 10), sampling the service's RSS, heap, open file descriptors, the
 * Redis and MariaDB connection counts and the outbox size. After a warm-up (the first 20 %),
 * a least-squares slope per series (units per minute) is printed, and the run fails when any
 * series keeps growing.
 *
 *   npm run soak                       # 10 minutes (builds first)
 *   SOAK_MINUTES=1 npm run soak        # a quick check
 *
 * Other knobs: SOAK_CONCURRENCY (8), SOAK_SAMPLE_SECONDS (5, less for short runs),
 * SOAK_WARMUP (0.2). Not part of `npm test` (the file name does not match *.test.ts).
 */
import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import { stack, table, type Reply } from '../helpers/service-process.js';

const MINUTES = Number(process.env.SOAK_MINUTES ?? '10');
const CONCURRENCY = Number(process.env.SOAK_CONCURRENCY ?? '8');
const WARMUP = Number(process.env.SOAK_WARMUP ?? '0.2');
const SAMPLE_SECONDS = Number(process.env.SOAK_SAMPLE_SECONDS ?? String(Math.max(1, Math.min(5, (MINUTES * 60) / 40))));
const POOL_MAX = 2_000;
const MiB = 1024 * 1024;

if (!(MINUTES > 0) || !(CONCURRENCY >= 1) || !(SAMPLE_SECONDS > 0) || !(WARMUP >= 0 && WARMUP < 1)) {
  throw new Error('SOAK_MINUTES, SOAK_CONCURRENCY, SOAK_SAMPLE_SECONDS must be positive and SOAK_WARMUP in [0, 1)');
}

interface Sample {
  minute: number; // since the load started
  rss: number; // bytes
  heap: number; // bytes
  fds: number;
  redisClients: number;
  mariadbThreads: number;
  outbox: number;
}

type Series = Exclude<keyof Sample, 'minute'>;

/**
 * When a series counts as growing: slope (per minute, after warm-up) above `slope`, and — for
 * the noisy memory series — a total rise over the measured window above `relative` of its
 * mean, and the last quarter's median above the first quarter's (sustained, not one spike).
 */
const LIMITS: Record<Series, { slope: number; relative?: number; max?: number; floor?: boolean; unit: string; scale: number }> = {
  // Memory saws up and down with GC: judged on its floor (the minimum of each of 8 blocks of
  // samples), which only rises when what survives GC does.
  rss: { slope: 1 * MiB, relative: 0.05, floor: true, unit: 'MiB', scale: MiB },
  heap: { slope: 1 * MiB, relative: 0.1, floor: true, unit: 'MiB', scale: MiB },
  fds: { slope: 0.5, unit: '', scale: 1 },
  redisClients: { slope: 0.5, unit: '', scale: 1 },
  mariadbThreads: { slope: 0.5, unit: '', scale: 1 },
  outbox: { slope: 1, max: 50, unit: 'rows', scale: 1 },
};

/** Least-squares slope of y over x. */
export function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function procStatus(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s*kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)`, 'm').exec(text);
  if (!m) throw new Error(`metric ${name} not found`);
  return Number(m[1]);
}

t.test(`soak: ${MINUTES} min of mixed load, concurrency ${CONCURRENCY}`, async (t) => {
  if (process.platform !== 'linux') {
    t.pass('skipped: reads /proc, Linux only');
    return;
  }
  const s = await stack(t);
  const svc = await s.service(t, {
    // Production-like settings, not the fault tests' hair-trigger ones; the limiter stays off.
    LOG_LEVEL: 'warn',
    DB_ACQUIRE_TIMEOUT_MS: '1000',
    DB_QUERY_TIMEOUT_MS: '2000',
    DB_CONNECT_TIMEOUT_MS: '1000',
    SWEEPER_INTERVAL_SECONDS: '60',
  });
  const pid = svc.child.pid!;
  const client = svc.client;

  const redis = new Redis(s.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  const db = await mysql.createConnection({ uri: s.databaseUrl, timezone: 'Z' });
  t.teardown(async () => {
    redis.disconnect();
    await db.end().catch(() => db.destroy());
  });

  const sampleOnce = async (minute: number): Promise<Sample> => {
    const metrics = await fetch(`${svc.url}/metrics`, { signal: AbortSignal.timeout(5_000) }).then((r) => r.text());
    const info = await redis.info('clients');
    const [threads] = await db.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'");
    const [outbox] = await db.query('SELECT COUNT(*) AS n FROM cache_outbox');
    return {
      minute,
      rss: procStatus(pid, 'VmRSS'),
      heap: metricValue(metrics, 'nodejs_heap_size_used_bytes'),
      fds: openFds(pid),
      redisClients: Number(/^connected_clients:(\d+)/m.exec(info)?.[1]),
      mariadbThreads: Number((threads as Array<{ Value: string }>)[0]?.Value),
      outbox: Number((outbox as Array<{ n: number | string }>)[0]?.n),
    };
  };

  // A pool of live sessions; the load keeps it between a few hundred and POOL_MAX.
  interface Live {
    token: string;
    version: number;
  }
  const pool: Live[] = [];
  const statuses = new Map<string, number>();
  const failures: string[] = [];
  const record = (op: string, r: Reply) => {
    const key = `${op} ${r.status}`;
    statuses.set(key, (statuses.get(key) ?? 0) + 1);
    if ((r.status === 0 || r.status >= 500) && failures.length < 20) failures.push(`${op}: ${r.status} ${r.error ?? JSON.stringify(r.body)}`);
  };
  let seq = 0;
  const create = async () => {
    const n = ++seq;
    const r = await client.create({ cart: [`sku-${n % 97}`], visits: 0 }, { subject: `soak-user-${n % 500}`, metadata: { label: 'soak', ip: '192.0.2.1' } });
    record('create', r);
    if (r.status === 201) {
      const live = { token: r.body.token as string, version: r.body.session.version as number };
      if (pool.length < POOL_MAX) pool.push(live);
      else pool[Math.floor(Math.random() * pool.length)] = live;
    }
  };
  for (let i = 0; i < 200; i++) await create();

  const pick = () => pool[Math.floor(Math.random() * pool.length)]!;
  const step = async () => {
    const roll = Math.random() * 100;
    if (roll < 80) {
      const live = pick();
      const r = await client.touch(live.token);
      record('touch', r);
    } else if (roll < 90) {
      const live = pick();
      record('read', await client.read(live.token));
    } else if (roll < 95) {
      const live = pick();
      const r = await client.patch(live.token, { visits: seq, last: new Date().toISOString() });
      record('patch', r);
      if (r.status === 200) live.version = r.body.version as number;
    } else if (roll < 99) {
      await create();
    } else if (pool.length > 50) {
      const i = Math.floor(Math.random() * pool.length);
      const [live] = pool.splice(i, 1);
      record('destroy', await client.destroy(live!.token));
    } else {
      await create();
    }
  };

  const started = performance.now();
  const endAt = started + MINUTES * 60_000;
  const minuteNow = () => (performance.now() - started) / 60_000;
  let requests = 0;
  const workers = Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() < endAt && svc.running) {
      await step();
      requests++;
    }
  });

  const samples: Sample[] = [];
  const sampler = (async () => {
    let nextReport = 1;
    while (performance.now() < endAt && svc.running) {
      try {
        samples.push(await sampleOnce(minuteNow()));
      } catch (err) {
        failures.push(`sample failed: ${(err as Error).message}`);
      }
      if (minuteNow() >= nextReport) {
        const last = samples.at(-1);
        t.comment(
          `${nextReport} min: ${requests} requests, pool ${pool.length}` +
            (last ? `, rss ${(last.rss / MiB).toFixed(1)} MiB, heap ${(last.heap / MiB).toFixed(1)} MiB, fds ${last.fds}, outbox ${last.outbox}` : ''),
        );
        nextReport++;
      }
      await sleep(Math.max(0, Math.min(SAMPLE_SECONDS * 1000, endAt - performance.now())));
    }
  })();
  await Promise.all([...workers, sampler]);
  const elapsed = minuteNow();

  t.ok(svc.running, 'the service is still running');
  t.comment(`${requests} requests in ${elapsed.toFixed(2)} min (${Math.round(requests / (elapsed * 60))}/s); ${samples.length} samples every ${SAMPLE_SECONDS} s`);
  t.comment(`statuses: ${[...statuses.entries()].sort().map(([k, v]) => `${k}:${v}`).join('  ')}`);
  t.same(failures, [], 'no 5xx, no transport errors, every sample taken');

  const measured = samples.filter((x) => x.minute >= WARMUP * MINUTES);
  t.ok(measured.length >= 5, `at least 5 samples after the warm-up (got ${measured.length})`);
  if (measured.length < 2) return;
  const xs = measured.map((x) => x.minute);
  const span = xs.at(-1)! - xs[0]!;
  const rows: Array<Record<string, string | number>> = [];
  const growing: string[] = [];
  const blocks = Math.min(8, measured.length);
  const blockOf = (i: number) => Math.floor((i * blocks) / measured.length);
  for (const [series, limit] of Object.entries(LIMITS) as Array<[Series, (typeof LIMITS)[Series]]>) {
    const ys = measured.map((x) => x[series]);
    const rawSlope = slope(xs, ys);
    // The series judged: the raw samples, or for memory the floor of each block.
    let jx = xs;
    let jy = ys;
    if (limit.floor) {
      jx = [];
      jy = [];
      for (let b = 0; b < blocks; b++) {
        const idx = measured.map((_, i) => i).filter((i) => blockOf(i) === b);
        if (idx.length === 0) continue;
        const lowest = idx.reduce((a, i) => (ys[i]! < ys[a]! ? i : a), idx[0]!);
        jx.push(xs[lowest]!);
        jy.push(ys[lowest]!);
      }
    }
    const perMinute = slope(jx, jy);
    const mean = jy.reduce((a, b) => a + b, 0) / jy.length;
    const quarter = Math.max(1, Math.floor(jy.length / 4));
    const sustained = median(jy.slice(-quarter)) > median(jy.slice(0, quarter));
    const rise = perMinute * span;
    let verdict = 'ok';
    if (perMinute > limit.slope && sustained && (limit.relative === undefined || rise > limit.relative * mean)) verdict = 'GROWING';
    if (limit.max !== undefined && Math.max(...ys) > limit.max) verdict = `ABOVE ${limit.max}`;
    if (verdict !== 'ok') growing.push(series);
    const fmt = (v: number) => (v / limit.scale).toFixed(limit.scale === 1 ? 2 : 3);
    rows.push({
      series: `${series}${limit.unit ? ` (${limit.unit})` : ''}`,
      first: fmt(ys[0]!),
      last: fmt(ys.at(-1)!),
      min: fmt(Math.min(...ys)),
      max: fmt(Math.max(...ys)),
      'slope/min': fmt(rawSlope),
      'judged slope/min': `${fmt(perMinute)}${limit.floor ? ' (floor)' : ''}`,
      limit: fmt(limit.slope) + (limit.relative === undefined ? '' : ` & rise >${limit.relative * 100}%`) + (limit.max === undefined ? '' : `, max ${limit.max}`),
      verdict,
    });
  }
  t.comment(`slopes after a ${Math.round(WARMUP * 100)} % warm-up (${measured.length} samples over ${span.toFixed(2)} min):\n${table(rows)}`);
  t.same(growing, [], 'no series grows');
});
