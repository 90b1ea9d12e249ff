/**
 * Two service processes (`node dist/server.js`) on one private MariaDB and one private Redis:
 * the cache guarantees as seen by clients that talk to both replicas at once.
 */
import t, { type Test } from 'tap';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { hashToken } from '../../src/domain/token.js';
import { stack, statusCounts, table, waitFor, type Reply, type ServiceClient } from '../helpers/service-process.js';

/**
 * A replica whose Redis breaker is open still owes Redis the invalidations of its writes: the
 * other replica may be reading from Redis meanwhile. The last test forces that case.
 */

// The work here is bounded by count, not by time: 50 warm reads and 5 cold ones, three destroy
// races of 80 + 120 + 120 sessions (readers stop when the last destroy is answered), five rounds
// of 10 PUTs, one breaker case; four pairs of service start-ups. A loaded machine (load 13–20 on
// 2 cores) took ~115 s to reach the last case and hit the default 120 s file timeout. This timeout
// covers that bounded work on a loaded machine; the waits in it are bounded too (the readers stop
// after the last destroy, waitFor gives up after 10–15 s).
t.setTimeout(6 * 60_000);

const s = await stack(t);

t.test('reads of a warm session do not query MariaDB', async (t) => {
  // The outbox worker polls MariaDB (one SELECT per replica per interval) whether or not there
  // is anything to replay: keep it quiet here so that Com_select counts session reads only.
  const quiet = { OUTBOX_REPLAY_INTERVAL_MS: '600000' };
  const [a, b] = await Promise.all([s.service(t, quiet), s.service(t, quiet)]);
  const created = await a.client.create({ warm: true });
  t.equal(created.status, 201);
  const token = created.body.token as string;
  // Warm: the first read misses and fills (one SELECT); the next is a hit on either replica.
  t.equal((await a.client.read(token)).status, 200);
  t.equal((await b.client.read(token)).status, 200);

  // What one status query costs in Com_select (MariaDB may count SHOW as a SELECT). The counter
  // is global: a background SELECT (the outbox worker, the revocation scan) between two samples
  // only adds, so the smallest of a few differences is the query's own cost.
  let ownCost = Infinity;
  for (let i = 0, prev = await s.globalStatus('Com_select'); i < 4; i++) {
    const next = await s.globalStatus('Com_select');
    ownCost = Math.min(ownCost, next - prev);
    prev = next;
  }

  const before = await s.globalStatus('Com_select');
  const replies: Reply[] = [];
  for (let i = 0; i < 50; i++) replies.push(await (i % 2 === 0 ? a : b).client.read(token));
  const after = await s.globalStatus('Com_select');
  const delta = after - before - ownCost;

  t.same(statusCounts(replies), '200:50', 'every read answered 200');
  t.ok(replies.every((r) => r.body?.data?.warm === true), 'with the session data');
  t.comment(`Com_select: ${before} → ${after} over 50 warm reads on two replicas; own status query costs ${ownCost}; delta ${delta}`);
  t.comment(`read latency: max ${Math.max(...replies.map((r) => r.ms)).toFixed(1)} ms`);
  // 0 expected; a read whose Redis call overran the 50 ms command timeout on a loaded
  // machine falls back to MariaDB, so allow a couple.
  t.ok(delta <= 2, `warm reads cost ${delta} SELECTs (≤ 2 allowed for Redis timeouts under load)`);

  // Control: the counter does see this service's reads (a first read of each of 5 cold sessions).
  const cold: string[] = [];
  for (let i = 0; i < 5; i++) cold.push((await b.client.create({ cold: i })).body.token as string);
  const c0 = await s.globalStatus('Com_select');
  for (const token of cold) t.equal((await (cold.indexOf(token) % 2 === 0 ? a : b).client.read(token)).status, 200);
  const coldDelta = (await s.globalStatus('Com_select')) - c0 - ownCost;
  t.comment(`control: 5 cache misses cost ${coldDelta} SELECTs`);
  t.ok(coldDelta >= 5, `the counter sees misses (${coldDelta} SELECTs for 5 misses)`);
});

interface DestroyRun {
  /** Date.now() when the run began (to match service log lines). */
  wallStart: number;
  reads: Reply[];
  /** Reads of a session started after its destroy's 204: each must be 404. */
  afterAck: number;
  destroyAck: Map<string, number>;
  destroys: Reply[];
  violations: Array<{ session: string; read: string; destroy: string; afterAckMs: number; status: number }>;
  events: string[];
}

/**
 * Many warm sessions, readers on both replicas, destroys spread over both. `fault` runs in
 * the background from the start of the destroys (e.g. kill and restart Redis).
 */
async function destroyRace(
  clients: ServiceClient[],
  opts: { sessions: number; readers: number; destroyers: number; paceMs: number; fault?: (mark: (event: string) => void) => Promise<void> },
): Promise<DestroyRun> {
  const wallStart = Date.now();
  const pick = <T>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
  const tokens: string[] = [];
  for (let i = 0; i < opts.sessions; i++) {
    const r = await clients[i % clients.length]!.create({ i });
    if (r.status !== 201) throw new Error(`create answered ${r.status}: ${JSON.stringify(r.body)}`);
    tokens.push(r.body.token as string);
  }
  // Warm every session in Redis through both replicas.
  for (const token of tokens) for (const c of clients) await c.read(token);

  const destroyAck = new Map<string, number>();
  const destroyReply = new Map<string, Reply>();
  const reads: Reply[] = [];
  const readToken = new Map<Reply, string>();
  const destroys: Reply[] = [];
  const events: string[] = [];
  let done = false;
  const t0 = performance.now();
  const rel = (at: number) => `${(at - t0).toFixed(0)} ms`;
  const mark = (what: string) => events.push(`${rel(performance.now()).padStart(8)}  ${what}  (wall ${new Date().toISOString()})`);

  const readers = Array.from({ length: opts.readers }, async () => {
    while (!done) {
      const token = pick(tokens);
      const c = pick(clients);
      const r = Math.random() < 0.5 ? await c.read(token) : await c.touch(token);
      reads.push(r);
      readToken.set(r, token);
    }
  });
  const queue = [...tokens].sort(() => Math.random() - 0.5);
  const destroyers = Array.from({ length: opts.destroyers }, async () => {
    for (let token = queue.pop(); token !== undefined; token = queue.pop()) {
      const r = await pick(clients).destroy(token);
      destroys.push(r);
      destroyReply.set(token, r);
      if (r.status === 204) destroyAck.set(token, r.ended);
      await sleep(opts.paceMs);
    }
  });
  mark('destroys start');
  const fault = opts.fault?.((e) => mark(e)) ?? Promise.resolve();
  await Promise.all([...destroyers, fault]);
  mark('destroys done');
  await sleep(300); // keep reading a little after the last destroy
  done = true;
  await Promise.all(readers);

  const violations: DestroyRun['violations'] = [];
  let afterAck = 0;
  for (const r of reads) {
    const token = readToken.get(r)!;
    const ack = destroyAck.get(token);
    if (ack !== undefined && r.started > ack) afterAck += 1;
    if (ack !== undefined && r.started > ack && r.status !== 404) {
      const d = destroyReply.get(token)!;
      violations.push({
        session: token.slice(0, 8),
        read: `${r.via} ${r.body?.version === undefined ? '' : 'v' + r.body.version} ${rel(r.started)}–${rel(r.ended)}`,
        destroy: `${d.via} ${rel(d.started)}–${rel(d.ended)}`,
        afterAckMs: Math.round(r.started - ack),
        status: r.status,
      });
    }
  }
  return { wallStart, reads, afterAck, destroyAck, destroys, violations, events };
}

t.test('no replica returns a session after its destroy was acknowledged', async (t) => {
  const [a, b] = await Promise.all([s.service(t), s.service(t)]);
  const clients = [a.client, b.client];
  const figures: Array<Record<string, string | number>> = [];

  const check = (t: Test, name: string, run: DestroyRun, sessions: number) => {
    const opened = [a, b].flatMap((svc) => svc.logLines(/^redis breaker open$/, run.wallStart)).length;
    t.equal(run.destroys.filter((r) => r.status === 204).length, sessions, `${name}: every destroy answered 204`);
    const bad = run.reads.filter((r) => r.status !== 200 && r.status !== 404);
    t.same(bad.map((r) => `${r.via} ${r.status} ${r.error ?? JSON.stringify(r.body)}`).slice(0, 5), [], `${name}: every read answered 200 or 404`);
    t.equal(run.violations.length, 0, `${name}: no read started after a destroy's 204 returned the session`);
    if (run.violations.length > 0) t.comment(`${name}: reads that returned a destroyed session\n${table(run.violations.slice(0, 20))}`);
    figures.push({
      run: name,
      sessions,
      reads: run.reads.length,
      statuses: statusCounts(run.reads),
      'reads after own ack': run.afterAck,
      violations: run.violations.length,
      'breaker opens': opened,
      'max read ms': Math.max(...run.reads.map((r) => r.ms)).toFixed(0),
      'max destroy ms': Math.max(...run.destroys.map((r) => r.ms)).toFixed(0),
    });
    if (run.violations.length > 0 || run.events.length > 2) t.comment(`${name} timeline:\n${run.events.join('\n')}`);
  };

  const steady = await destroyRace(clients, { sessions: 80, readers: 8, destroyers: 2, paceMs: 10 });
  check(t, 'steady', steady, 80);

  const killed = await destroyRace(clients, {
    sessions: 120,
    readers: 8,
    destroyers: 2,
    paceMs: 30,
    fault: async (mark) => {
      await sleep(300);
      s.redis.kill('SIGKILL');
      mark('redis SIGKILL');
      await sleep(400);
      await s.redis.restart();
      mark('redis restarted');
      const waited = await waitFor('both replicas to see Redis', async () =>
        (await Promise.all(clients.map((c) => c.readyz()))).every((r) => r.body?.redis === 'up'),
      );
      mark(`readyz redis up on both after ${waited.toFixed(0)} ms`);
    },
  });
  check(t, 'redis killed + restarted', killed, 120);

  const paused = await destroyRace(clients, {
    sessions: 120,
    readers: 8,
    destroyers: 2,
    paceMs: 30,
    fault: async (mark) => {
      await sleep(300);
      s.redis.kill('SIGSTOP');
      mark('redis SIGSTOP');
      await sleep(500);
      s.redis.kill('SIGCONT');
      mark('redis SIGCONT');
    },
  });
  check(t, 'redis paused + resumed', paused, 120);

  t.comment(`\n${table(figures)}`);
});

t.test('concurrent PUTs with the same If-Match over both replicas: one wins, both replicas show it', async (t) => {
  const [a, b] = await Promise.all([s.service(t), s.service(t)]);
  const created = await a.client.create({ round: 0 });
  t.equal(created.status, 201);
  const token = created.body.token as string;
  let version = 1;
  const rows: Array<Record<string, string | number>> = [];
  for (let round = 1; round <= 5; round++) {
    // Warm on both replicas, so that a stale cache entry would show.
    t.equal((await a.client.read(token)).body?.version, version);
    t.equal((await b.client.read(token)).body?.version, version);
    const puts = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).client.put(token, { round, writer: i }, version)),
    );
    const winners = puts.filter((r) => r.status === 200);
    const losers = puts.filter((r) => r.status === 412);
    t.equal(winners.length, 1, `round ${round}: exactly one 200`);
    t.equal(losers.length, 9, `round ${round}: the other nine 412 (${statusCounts(puts)})`);
    t.ok(losers.every((r) => r.body?.code === 'version_mismatch' && r.body?.currentVersion === version + 1), 'each 412 names the new version');
    const winner = winners[0]!;
    t.equal(winner.body.version, version + 1);
    t.equal(winner.headers.get('etag'), `"${version + 1}"`);
    const [fromA, fromB] = await Promise.all([a.client.read(token), b.client.read(token)]);
    t.same(fromA.body?.data, winner.body.data, `round ${round}: replica A reads the winner`);
    t.same(fromB.body?.data, winner.body.data, `round ${round}: replica B reads the winner`);
    t.equal(fromA.body?.version, version + 1);
    t.equal(fromB.body?.version, version + 1);
    // And again, now that both may have filled.
    t.same((await a.client.read(token)).body?.data, winner.body.data);
    t.same((await b.client.read(token)).body?.data, winner.body.data);
    rows.push({ round, statuses: statusCounts(puts), winner: `${winner.via} #${winner.body.data.writer}`, 'max put ms': Math.max(...puts.map((r) => r.ms)).toFixed(0) });
    version += 1;
  }
  const [row] = await s.query<{ version: number }>('SELECT version FROM sessions WHERE id_hash = ?', [hashToken(token)]);
  t.equal(row?.version, 6, 'MariaDB holds version 6 after five rounds');
  t.comment(`\n${table(rows)}`);
});

t.test('a replica whose Redis breaker is open acknowledges a destroy and a PUT: the other replica must not serve the old state', async (t) => {
  // Deterministic: replica B's breaker opens (Redis paused under its reads), Redis comes back,
  // B destroys one session and updates another while its breaker is still in its cooldown;
  // replica A, whose breaker never opened, reads both from Redis right after the 2xx.
  const [a, b] = await Promise.all([s.service(t), s.service(t)]);
  const gone = (await a.client.create({ doomed: true })).body.token as string;
  const changed = (await a.client.create({ v: 1 })).body.token as string;
  for (const token of [gone, changed]) for (const c of [a.client, b.client]) t.equal((await c.read(token)).status, 200, 'warm');

  s.redis.kill('SIGSTOP');
  try {
    for (let i = 0; i < 3; i++) t.equal((await b.client.read(gone)).status, 200, 'B reads from MariaDB while Redis is paused');
  } finally {
    s.redis.kill('SIGCONT');
  }
  await sleep(20);
  const destroyed = await b.client.destroy(gone);
  const put = await b.client.put(changed, { v: 2 }, 1);
  t.equal(destroyed.status, 204, 'B acknowledged the destroy');
  t.equal(put.status, 200, 'B acknowledged the PUT');
  const firstRead = await a.client.read(gone);
  const firstPutRead = await a.client.read(changed);

  // How long does A keep serving the old state?
  const since = Math.max(destroyed.ended, put.ended);
  let staleFor = 0;
  await waitFor('A to serve the new state', async () => {
    const [r1, r2] = await Promise.all([a.client.read(gone), a.client.read(changed)]);
    if (r1.status === 404 && r2.body?.version === 2) return true;
    staleFor = r1.ended - since;
    return false;
  }, 10_000, 20);
  t.comment(`A served the old state for ${staleFor.toFixed(0)} ms after B's acknowledgements (first reads: destroyed session ${firstRead.status}, updated session v${firstPutRead.body?.version})`);
  t.equal(firstRead.status, 404, 'A: the destroyed session is gone (G2)');
  t.equal(firstPutRead.body?.version, 2, 'A: the updated session shows the new version');
});
