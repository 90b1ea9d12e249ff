import t from 'tap';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { auth, KEY_A, KEY_B, testApp } from '../helpers/app.js';
import { sharedRedisUrl } from '../helpers/redis.js';
import { mintApiKey } from '../../src/auth/api-keys.js';
import type { Database } from '../../src/db/database.js';
import { OutboxRows } from '../../src/metrics/collectors.js';

const JSON_CT = { 'content-type': 'application/json' };
const DAY = 86_400;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Samples of the Prometheus text format (enough of it for these tests). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The one sample of `name` whose labels include `labels`; undefined when there is none. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

const guessToken = () => randomBytes(32).toString('base64url');

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

t.test('after traffic through the cache, /metrics shows every family with plausible values and no secret', async (t) => {
  let offsetMs = 0;
  const clock = () => new Date(Date.now() + offsetMs);
  const { app } = await testApp(
    t,
    {},
    {
      clock,
      env: { REDIS_URL: await sharedRedisUrl(t) },
      namespaces: { 'tenant-b': { rateLimit: { max: 1, windowSeconds: DAY } } },
    },
  );
  const secrets: Record<string, string> = { 'API key A': KEY_A.key, 'API key B': KEY_B.key };

  // A session that expired two days ago, for the sweeper.
  offsetMs = -2 * DAY * 1000;
  const old = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(), ...JSON_CT }, payload: '{}' });
  t.equal(old.statusCode, 201);
  secrets['expired token'] = old.json().token;
  secrets['expired id'] = old.json().session.id;
  offsetMs = 0;
  t.ok(((await app.sweeper.runOnce()) ?? 0) >= 1, 'the sweeper deleted the expired session');

  const created = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(), ...JSON_CT }, payload: '{"data":{"a":1}}' });
  t.equal(created.statusCode, 201);
  const { token, session } = created.json() as { token: string; session: { id: string } };
  secrets.token = token;
  secrets['session id'] = session.id;

  for (let i = 0; i < 3; i++) {
    const read = await app.inject({ url: '/v1/sessions/current', headers: { ...auth(), 'session-token': token } });
    t.equal(read.statusCode, 200);
  }
  t.equal((await app.inject({ url: `/v1/sessions/${session.id}`, headers: auth() })).statusCode, 200);

  const guess = guessToken();
  secrets['guessed token'] = guess;
  t.equal((await app.inject({ url: '/v1/sessions/current', headers: { ...auth(), 'session-token': guess } })).statusCode, 404);

  const wrongKey = mintApiKey('nobody', 'nowhere').key;
  secrets['unknown API key'] = wrongKey;
  t.equal((await app.inject({ url: '/v1/sessions/current', headers: { ...auth({ key: wrongKey }), 'session-token': token } })).statusCode, 401);

  const limited = [];
  for (let i = 0; i < 3; i++) limited.push((await app.inject({ url: '/v1/sessions/current', headers: { ...auth(KEY_B), 'session-token': guessToken() } })).statusCode);
  t.ok(limited.includes(429), `tenant-b (max 1 per day) was limited: ${limited.join(',')}`);

  const oddPath = `/v1/nothing/${guessToken()}`;
  secrets['unmatched path'] = oddPath;
  t.equal((await app.inject({ url: oddPath, headers: auth() })).statusCode, 404);

  // The scrape itself: no key needed, a limited client's key does not limit it, never recorded.
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ url: '/metrics', headers: auth(KEY_B) });
    t.equal(res.statusCode, 200, 'not behind the rate limit');
  }
  const res = await app.inject({ url: '/metrics' });
  t.equal(res.statusCode, 200, 'no API key needed');
  t.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  const text = res.body;
  const samples = parse(text);

  for (const [what, secret] of Object.entries(secrets)) t.notOk(text.includes(secret), `no ${what} in the metrics`);
  t.notOk(text.includes(token.slice(0, 16)), 'not even a piece of the token');

  // Request durations, labelled by route pattern.
  const h = 'sessiond_http_request_duration_seconds';
  t.match(text, `# TYPE ${h} histogram`);
  t.equal(value(samples, `${h}_count`, { method: 'GET', route: '/v1/sessions/current', status_code: '200' }), 3);
  t.equal(value(samples, `${h}_count`, { method: 'GET', route: '/v1/sessions/:id', status_code: '200' }), 1, 'the pattern, not the id');
  t.equal(value(samples, `${h}_count`, { method: 'POST', route: '/v1/sessions', status_code: '201' }), 2);
  const tenantB404s = limited.filter((status) => status === 404).length; // its first call, unless Redis counted others before
  t.equal(value(samples, `${h}_count`, { method: 'GET', route: '/v1/sessions/current', status_code: '404' }), 1 + tenantB404s);
  t.ok(value(samples, `${h}_count`, { method: 'GET', route: '/v1/sessions/current', status_code: '401' }), 'the 401 is counted');
  t.ok(value(samples, `${h}_count`, { method: 'GET', route: '/v1/sessions/current', status_code: '429' }), 'the 429 is counted');
  t.equal(value(samples, `${h}_count`, { method: 'GET', route: 'unmatched', status_code: '404' }), 1, 'an unknown path is "unmatched"');
  t.ok(value(samples, `${h}_bucket`, { route: '/v1/sessions/current', status_code: '200', le: '+Inf' }) === 3);
  t.ok((value(samples, `${h}_sum`, { route: '/v1/sessions/current', status_code: '200' }) ?? 0) > 0, 'a positive duration');
  const routes = new Set(samples.filter((s) => s.name === `${h}_count`).map((s) => s.labels.route));
  t.notOk(routes.has('/metrics'), 'scrapes are not recorded');
  for (const route of routes) t.ok(route === 'unmatched' || /^\/[a-z0-9/:_-]*$/.test(route!), `route label ${route} is a pattern`);

  // The cache tier.
  t.ok((value(samples, 'sessiond_cache_hits_total') ?? 0) > 0, 'cache hits');
  t.ok((value(samples, 'sessiond_cache_misses_total') ?? 0) > 0, 'cache misses');
  t.equal(value(samples, 'sessiond_cache_hits_total'), app.cacheCounters!.hits, 'the value is the counter itself');
  for (const name of ['refused_fills', 'fallbacks', 'outbox_replayed', 'touch_writes']) {
    t.type(value(samples, `sessiond_cache_${name}_total`), 'number', `sessiond_cache_${name}_total`);
  }
  t.equal(value(samples, 'sessiond_cache_fallbacks_total'), 0, 'Redis never failed');
  const outboxRows = value(samples, 'sessiond_cache_outbox_rows')!;
  t.ok(Number.isInteger(outboxRows) && outboxRows >= 0, `outbox rows read: ${outboxRows}`);
  t.equal(value(samples, 'sessiond_redis_breaker_state', { state: 'closed' }), 1);
  t.equal(value(samples, 'sessiond_redis_breaker_state', { state: 'open' }), 0);
  t.equal(value(samples, 'sessiond_redis_breaker_state', { state: 'recovering' }), 0);

  // MariaDB pool.
  const open = value(samples, 'sessiond_db_pool_connections_open')!;
  t.ok(open >= 1 && open <= 5, `open connections: ${open} of 5`);
  t.equal(value(samples, 'sessiond_db_pool_connections_active')! + value(samples, 'sessiond_db_pool_connections_idle')!, open);
  t.equal(value(samples, 'sessiond_db_pool_queued_requests'), 0);

  // Sweeper, rate limit, guessing.
  t.ok((value(samples, 'sessiond_sweeper_deleted_sessions_total') ?? 0) >= 1, 'sweeper deletions');
  t.ok((value(samples, 'sessiond_rate_limit_rejected_requests_total') ?? 0) >= 1, 'rate-limit rejections');
  t.type(value(samples, 'sessiond_rate_limit_flush_failures_total'), 'number');
  t.equal(value(samples, 'sessiond_failed_token_lookups_total', { client: 'app-a' }), 1, 'the guess, by client name');
  const clients = samples.filter((s) => s.name === 'sessiond_failed_token_lookups_total').map((s) => s.labels.client);
  t.ok(clients.every((c) => c === 'app-a' || c === 'app-b'), `client labels are API client names: ${clients.join(',')}`);

  // Process metrics under their conventional names.
  t.ok((value(samples, 'process_resident_memory_bytes') ?? 0) > 0, 'process_resident_memory_bytes');
  t.type(value(samples, 'nodejs_eventloop_lag_seconds'), 'number');

  // Every family is described.
  const families = new Set(samples.map((s) => s.name.replace(/_(bucket|sum|count)$/, '')));
  for (const family of families) if (family.startsWith('sessiond_')) t.match(text, `# HELP ${family} `, `${family} has HELP`);
});

t.test('/metrics is not in the OpenAPI document, HEAD works, and without Redis there are no cache families', async (t) => {
  const { app } = await testApp(t);
  t.notOk(Object.keys((app.swagger() as { paths?: Record<string, unknown> }).paths ?? {}).includes('/metrics'), 'hidden from the document');
  t.equal((await app.inject({ method: 'HEAD', url: '/metrics' })).statusCode, 200);
  const text = (await app.inject({ url: '/metrics' })).body;
  t.notMatch(text, /sessiond_cache_/);
  t.notMatch(text, /sessiond_redis_breaker_state/);
  t.match(text, /^sessiond_db_pool_connections_open \d+$/m);
  t.match(text, /^sessiond_rate_limit_rejected_requests_total 0$/m);
  t.notMatch(text, /sessiond_http_request_duration_seconds_count\{[^}]*route="\/metrics"/, 'HEAD and GET scrapes are not recorded');
});

t.test('each app has its own registry: one app’s traffic does not show in another’s', async (t) => {
  const { app: a } = await testApp(t);
  const { app: b } = await testApp(t);
  await a.inject({ url: '/healthz' });
  const route = 'sessiond_http_request_duration_seconds_count{method="GET",route="/healthz",status_code="200"}';
  t.match((await a.inject({ url: '/metrics' })).body, `${route} 1`);
  t.notMatch((await b.inject({ url: '/metrics' })).body, route);
});

t.test('METRICS_PORT: /metrics answers there once the server listens, and not on the main port', async (t) => {
  const port = await freePort();
  const { app } = await testApp(t, {}, { env: { METRICS_PORT: String(port) } });
  t.equal((await app.inject({ url: '/metrics' })).statusCode, 404, 'not on the main app');
  t.ok(app.metrics.server, 'a separate listener');
  t.equal(app.metrics.server!.address(), undefined, 'buildApp and ready() bind nothing');

  await app.listen({ port: 0, host: '127.0.0.1' });
  const main = `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}`;
  const address = await app.metrics.server!.listening;
  t.equal(address.port, port);
  t.equal(address.address, '127.0.0.1', 'bound to HOST');

  t.equal((await fetch(`${main}/healthz`)).status, 200);
  t.equal((await fetch(`${main}/metrics`)).status, 404, 'the main port has no /metrics');

  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const text = await res.text();
  t.match(text, 'sessiond_http_request_duration_seconds_count{method="GET",route="/healthz",status_code="200"} 1');
  t.match(text, 'sessiond_http_request_duration_seconds_count{method="GET",route="unmatched",status_code="404"} 2', 'the main /metrics is just a 404 (inject and fetch)');
  t.match(text, /^process_resident_memory_bytes \d+/m);
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'HEAD' })).status, 200);
  t.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status, 405);

  await app.close();
  await t.rejects(fetch(`http://127.0.0.1:${port}/metrics`), 'closed with the app');
});

t.test('METRICS_PORT taken: the API still listens, the error is logged', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const port = (blocker.address() as net.AddressInfo).port;
  const { app, logs } = await testApp(t, {}, { env: { METRICS_PORT: String(port) } });
  await app.listen({ port: 0, host: '127.0.0.1' });
  await t.rejects(app.metrics.server!.listening, { code: 'EADDRINUSE' });
  t.ok(logs.some((l) => l.includes('metrics server could not listen')), 'logged');
  const main = `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}`;
  t.equal((await fetch(`${main}/healthz`)).status, 200, 'the API serves');
});

t.test('the outbox count never holds a scrape', async (t) => {
  let queries = 0;
  let queued = 0;
  const stuck = {
    pool: { taskQueueSize: () => queued },
    run: () => {
      queries += 1;
      return new Promise(() => undefined); // MariaDB stopped answering
    },
  } as unknown as Database;
  const rows = new OutboxRows(stuck, 50);
  const started = Date.now();
  const [a, b] = await Promise.all([rows.read(), rows.read()]);
  t.ok(Number.isNaN(a) && Number.isNaN(b), 'NaN when MariaDB does not answer in time');
  t.ok(Date.now() - started < 1000, 'within the timeout');
  t.equal(queries, 1, 'concurrent scrapes share one query');
  t.ok(Number.isNaN(await rows.read()));
  t.equal(queries, 1, 'a query still running is joined, not repeated');

  queued = 3;
  const busy = new OutboxRows(stuck, 50);
  t.ok(Number.isNaN(await busy.read()), 'requests waiting for connections: no query at all');
  t.equal(queries, 1);

  const failing = new OutboxRows({ pool: { taskQueueSize: () => 0 }, run: async () => Promise.reject(new Error('down')) } as unknown as Database, 50);
  t.ok(Number.isNaN(await failing.read()), 'NaN on an error');
});
