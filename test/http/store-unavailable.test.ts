import t from 'tap';
import { Writable } from 'node:stream';
import { buildApp } from '../../src/app.js';
import { freePort } from '../../devstack/ports.js';
import { auth, testConfig } from '../helpers/app.js';
import { lagMeter } from '../helpers/lag.js';

// Nothing listens on these ports: every MariaDB and Redis connection attempt is refused at once.
const port = await freePort();
const redisPort = await freePort();
const PASSWORD = 'pw-9c2e71d4';
const db = { poolSize: 2, acquireTimeoutMs: 300, queryTimeoutMs: 300, connectTimeoutMs: 300 };
const config = testConfig(`mysql://root:${PASSWORD}@127.0.0.1:${port}/nowhere`, { db });
/** What one call may wait on MariaDB, as configured: a pool acquire, then a query. */
const CALL_DEADLINE_MS = db.acquireTimeoutMs + db.queryTimeoutMs;
const logs: string[] = [];
const stream = new Writable({
  write(chunk, _enc, done) {
    logs.push(String(chunk));
    done();
  },
});
const app = await buildApp(config, { logger: { level: 'warn', stream } });
t.teardown(() => app.close());

t.test('MariaDB down: calls answer 503 store_unavailable with Retry-After, quickly', async (t) => {
  // The bound is the configured deadlines plus the time this process could not run (measured here:
  // the app runs in it), so a loaded machine stretches it fairly and a call that waits past its
  // deadlines still fails it.
  const lag = lagMeter();
  t.teardown(() => lag.stop());
  const started = performance.now();
  const create = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(), 'content-type': 'application/json' }, payload: '{}' });
  t.equal(create.statusCode, 503);
  t.equal(create.json().code, 'store_unavailable');
  t.match(create.headers['content-type'], /application\/problem\+json/);
  t.equal(create.headers['retry-after'], '1');
  const read = await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': 'A'.repeat(43) } });
  t.equal(read.statusCode, 503, 'a cache miss cannot be proven valid: 503, never a guess');
  const took = performance.now() - started;
  const bound = 2 * CALL_DEADLINE_MS + lag.totalMs + 100;
  t.ok(took < bound, `answered within the configured deadlines: ${Math.round(took)} ms < 2 × ${CALL_DEADLINE_MS} ms + ${Math.round(lag.totalMs)} ms of measured lag + 100 ms`);
  t.notMatch(create.body, /ECONNREFUSED|127\.0\.0\.1/, 'driver details never reach the client');
});

interface UnavailableLine {
  msg: string;
  reason?: string;
  driverCode?: string;
  redis?: string;
}

t.test('the store-unavailable log says which limit or failure it was, and no secret', async (t) => {
  const lines = logs.map((l) => JSON.parse(l) as UnavailableLine).filter((l) => l.msg === 'store unavailable');
  t.ok(lines.length >= 2, 'each 503 logged');
  for (const line of lines) {
    // Refused connections: the pool's acquire deadline ran out, or the refusal itself came through.
    t.match(line.reason, /^(acquire_timeout|connection|connect_timeout)$/, `reason: ${line.reason}`);
    t.notOk('redis' in line, 'no Redis configured: nothing about it');
  }
  t.notOk(logs.join('').includes(PASSWORD), 'the password is in no log line');
});

t.test('with Redis unreachable too, the log says why the call went to MariaDB without it', async (t) => {
  const cachedLogs: string[] = [];
  const cached = await buildApp(
    testConfig(config.databaseUrl, { db }, { REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${redisPort}` }),
    {
      logger: {
        level: 'warn',
        stream: new Writable({
          write(chunk, _enc, done) {
            cachedLogs.push(String(chunk));
            done();
          },
        }),
      },
    },
  );
  t.teardown(() => cached.close());
  const read = await cached.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': 'B'.repeat(43) } });
  t.equal(read.statusCode, 503);
  const line = cachedLogs.map((l) => JSON.parse(l) as UnavailableLine).find((l) => l.msg === 'store unavailable');
  t.ok(line, 'logged');
  t.match(line?.redis, /^(error|deadline|breaker_open)$/, `redis: ${line?.redis}`);
  t.match(line?.reason, /^(acquire_timeout|connection|connect_timeout)$/, `reason: ${line?.reason}`);
  t.notOk(cachedLogs.join('').includes(PASSWORD), 'no password in any line');
});

t.test('a token of the wrong shape is answered 404 without a database query', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': 'short' } });
  t.equal(res.statusCode, 404, 'not 503: the store was never asked');
  t.equal(res.json().code, 'session_not_found');
});

t.test('readiness reports MariaDB unreachable, liveness stays up', async (t) => {
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 503);
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
});
