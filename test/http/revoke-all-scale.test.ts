import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { auth, KEY_A, twoReplicas } from '../helpers/app.js';
import { query } from '../helpers/mariadb.js';

// "Log out everywhere" for a subject with 100,000 sessions, on two replicas sharing MariaDB and
// Redis: it answers once its mark committed, every one of the sessions is gone at once (cached
// or not, on either replica), other users' calls go on answering correctly meanwhile, and the
// worker revokes the rows afterwards. Timing is printed, never asserted (bench/ measures).
t.setTimeout(900_000);

const SESSIONS = Number(process.env.REVOKE_SCALE_SESSIONS ?? 100_000);
const NAMESPACE = KEY_A.entry.namespace;
const SUBJECT = 'many-devices';
// Tokens are PREFIX + n (n = 1..SESSIONS), so the test can use any of them without storing 100,000.
const PREFIX = 'revoke-scale-token-0000000000000000-';
const tokenOf = (n: number) => `${PREFIX}${n}`;

const { url, one, two } = await twoReplicas(t);

// One INSERT … SELECT over MariaDB's sequence engine: the rows the service would write, with
// id_hash = SHA-256(token) as the service hashes a token.
const started = Date.now();
await query(
  url,
  `INSERT INTO sessions (namespace, id_hash, subject, data, version, state, idle_timeout_seconds, created_at, last_seen_at, idle_expires_at, absolute_expires_at, metadata)
   SELECT ?, UNHEX(SHA2(CONCAT(?, seq), 256)), ?, '{"n":1}', 1, 'active', 1800,
          UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) - INTERVAL seq MICROSECOND, UTC_TIMESTAMP(3) + INTERVAL 1800 SECOND, UTC_TIMESTAMP(3) + INTERVAL 12 HOUR, NULL
   FROM seq_1_to_${SESSIONS}`,
  [NAMESPACE, PREFIX, SUBJECT],
);
t.comment(`inserted ${SESSIONS} sessions of one subject in ${Date.now() - started} ms`);

const json = { ...auth(KEY_A), 'content-type': 'application/json' };
type App = typeof one;
const read = (app: App, token: string) => app!.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(KEY_A), 'session-token': token } });
const touch = (app: App, token: string) => app!.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: { ...auth(KEY_A), 'session-token': token } });

t.test('revoke-all of 100,000 sessions takes effect at once, answers once, and leaves other users alone', async (t) => {
  // Some of the subject's sessions warm in Redis through either replica, some only in MariaDB.
  const sample = [1, 2, 3, 500, 50_000, SESSIONS - 1, SESSIONS].filter((n) => n <= SESSIONS);
  for (const n of sample.slice(0, 4)) t.equal((await read(n % 2 === 0 ? one : two, tokenOf(n))).statusCode, 200, `session ${n} reads (cached)`);
  const kept = await one!.inject({ method: 'POST', url: '/v1/sessions', headers: json, payload: JSON.stringify({ subject: SUBJECT }) });
  const keep = kept.json() as { token: string; session: { id: string } };
  await read(two, keep.token);

  // Other users: their own sessions, read, touched and written all through the revocation.
  const others = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      const r = await one!.inject({ method: 'POST', url: '/v1/sessions', headers: json, payload: JSON.stringify({ subject: `bystander-${i}`, data: { i } }) });
      return r.json() as { token: string };
    }),
  );
  const problems: string[] = [];
  let calls = 0;
  let stop = false;
  const bystanders = others.map(async ({ token }, i) => {
    let version = 1;
    const app = i % 2 === 0 ? one : two;
    while (!stop) {
      const r = await read(app, token);
      const body = r.json() as { data?: { i?: number }; version?: number };
      if (r.statusCode !== 200 || body.data?.i !== i) problems.push(`read ${i}: ${r.statusCode}`);
      if ((await touch(app, token)).statusCode !== 200) problems.push(`touch ${i}`);
      const w = await app!.inject({ method: 'PUT', url: '/v1/sessions/current/data', headers: { ...json, 'session-token': token, 'if-match': `"${version}"` }, payload: JSON.stringify({ i }) });
      if (w.statusCode !== 200) problems.push(`put ${i}: ${w.statusCode}`);
      else version = (w.json() as { version: number }).version;
      calls += 3;
    }
  });
  await sleep(200);

  const before = Date.now();
  const res = await one!.inject({ method: 'DELETE', url: `/v1/subjects/${SUBJECT}/sessions?keep=${keep.session.id}`, headers: auth(KEY_A) });
  const answeredMs = Date.now() - before;
  t.equal(res.statusCode, 200, 'answered 200');
  t.same(res.json(), { revoked: SESSIONS }, 'counting every live session but the kept one');
  t.comment(`revoke-all of ${SESSIONS} sessions answered in ${answeredMs} ms`);

  // At once: every sample is gone on both replicas, cached or not; the kept one lives.
  for (const n of sample) {
    for (const app of [one, two]) {
      t.equal((await read(app, tokenOf(n))).statusCode, 404, `session ${n} is gone`);
      t.equal((await touch(app, tokenOf(n))).statusCode, 404, `session ${n} cannot be touched back`);
    }
  }
  t.equal((await read(two, keep.token)).statusCode, 200, 'the kept session lives');
  const listed = Date.now();
  const list = await two!.inject({ method: 'GET', url: `/v1/subjects/${SUBJECT}/sessions`, headers: auth(KEY_A) });
  t.comment(`the device list answered ${list.statusCode} in ${Date.now() - listed} ms`);
  t.same((list.json() as { sessions: Array<{ id: string }> }).sessions.map((s) => s.id), [keep.session.id], 'the device list shows only the kept one');
  const fresh = await two!.inject({ method: 'POST', url: '/v1/sessions', headers: json, payload: JSON.stringify({ subject: SUBJECT }) });
  t.equal((await read(one, (fresh.json() as { token: string }).token)).statusCode, 200, 'a session created afterwards lives');

  // The worker revokes the rows in the background; the revocation holds throughout.
  const workStarted = Date.now();
  for (;;) {
    const [row] = await query<{ pending: number }>(url, 'SELECT pending FROM subject_revocations WHERE namespace = ? AND subject = ?', [NAMESPACE, SUBJECT]);
    if (Number(row!.pending) === 0) break;
    t.equal((await read(one, tokenOf(SESSIONS))).statusCode, 404, 'still gone while the worker works');
    await sleep(250);
  }
  t.comment(`the worker revoked the rows in ${Date.now() - workStarted} ms`);
  stop = true;
  await Promise.all(bystanders);
  t.same(problems, [], `other users' ${calls} calls all answered correctly`);
  t.ok(calls > 0);

  const [active] = await query<{ n: number }>(url, "SELECT COUNT(*) AS n FROM sessions WHERE namespace = ? AND subject = ? AND state = 'active'", [NAMESPACE, SUBJECT]);
  t.equal(Number(active!.n), 2, 'every row but the kept one and the new one is revoked');
  const [remembered] = await query<{ n: number }>(url, 'SELECT COUNT(*) AS n FROM destroyed_tokens WHERE namespace = ?', [NAMESPACE]);
  t.ok(Number(remembered!.n) >= SESSIONS, 'and every revoked id is remembered (never created again)');
  const taken = await one!.inject({ method: 'PUT', url: '/v1/sessions/current', headers: { ...json, 'session-token': tokenOf(7), 'if-none-match': '*' }, payload: '{}' });
  t.not(taken.statusCode, 201, 'a revoked token cannot be created again');
});
