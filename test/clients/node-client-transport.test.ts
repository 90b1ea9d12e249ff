import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createClient, type SessiondClient } from '../../clients/node/dist/index.js';
import { appToken as token, fakeSession, rejection } from './sessiond-service.js';

/**
 * clients/node's transport against small loopback servers that misbehave on purpose: the
 * per-call deadline, the retry rules (only calls safe to repeat, within the deadline) and the
 * keep-alive pool.
 */

/** A loopback HTTP server answering with `handle`; counts requests and connections. */
async function fakeService(t: Test, handle: (req: IncomingMessage, res: ServerResponse, n: number) => void) {
  const counts = { requests: 0, connections: 0 };
  const server: Server = createServer((req, res) => handle(req, res, ++counts.requests));
  server.on('connection', () => counts.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())).then(() => server.closeAllConnections()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, counts, server };
}

const SESSION = fakeSession();
const unavailable = (res: ServerResponse) => {
  res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' });
  res.end(JSON.stringify({ type: 'about:blank', title: 'Service Unavailable', status: 503, code: 'store_unavailable' }));
};
const ok = (res: ServerResponse, status = 200) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(status === 201 ? { token: 'x'.repeat(43), session: SESSION } : SESSION));
};

t.test('a call that gets no answer ends at its deadline', async (t) => {
  const fake = await fakeService(t, () => {
    // never answers
  });
  const client = createClient({ url: fake.url, apiKey: 'k', timeout: 150 });
  t.teardown(() => client.close());
  const started = performance.now();
  const err = await rejection(t, client.touch(token()));
  const ms = performance.now() - started;
  t.equal(err.code, 'deadline_exceeded');
  t.equal(err.status, 0);
  t.ok(ms >= 140 && ms < 1000, `ended after ${ms.toFixed(0)} ms (deadline 150 ms)`);
  const perCall = await rejection(t, client.read(token(), { timeout: 50 }));
  t.equal(perCall.code, 'deadline_exceeded', 'a per-call deadline overrides the client default');
});

t.test('retries: a safe call is repeated after a 503, a create never is', async (t) => {
  const fake = await fakeService(t, (req, res, n) => {
    if (n === 1 || req.method === 'POST' && req.url === '/v1/sessions') return unavailable(res);
    ok(res);
  });
  const client = createClient({ url: fake.url, apiKey: 'k' });
  t.teardown(() => client.close());
  const s = await client.touch(token());
  t.equal(s?.id, SESSION.id, 'the touch succeeded on its second attempt');
  t.equal(fake.counts.requests, 2);

  const before = fake.counts.requests;
  const err = await rejection(t, client.create({}));
  t.equal(err.code, 'store_unavailable');
  t.equal(err.retryAfter, 1, 'Retry-After is passed on');
  t.equal(fake.counts.requests - before, 1, 'a create is sent once: repeating it could make two sessions');

  const noRetries = createClient({ url: fake.url, apiKey: 'k', retries: 0 });
  t.teardown(() => noRetries.close());
  const n0 = fake.counts.requests;
  fake.server.removeAllListeners('request');
  fake.server.on('request', (_req, res) => {
    fake.counts.requests++;
    unavailable(res);
  });
  t.equal((await rejection(t, noRetries.read(token()))).code, 'store_unavailable');
  t.equal(fake.counts.requests - n0, 1, 'retries: 0 sends once');
});

t.test('a refused connection is retried even for a create, then fails as connection_failed', async (t) => {
  const fake = await fakeService(t, () => {});
  const url = fake.url;
  await new Promise<void>((resolve) => fake.server.close(() => resolve()));
  const client = createClient({ url, apiKey: 'k', retries: 1 });
  t.teardown(() => client.close());
  const err = await rejection(t, client.create({}));
  t.equal(err.code, 'connection_failed');
  t.equal(err.status, 0);
});

t.test('calls share keep-alive connections', async (t) => {
  const fake = await fakeService(t, (_req, res) => ok(res));
  const client: SessiondClient = createClient({ url: fake.url, apiKey: 'k' });
  t.teardown(() => client.close());
  for (let i = 0; i < 50; i++) await client.touch(token());
  t.equal(fake.counts.requests, 50);
  t.ok(fake.counts.connections <= 2, `50 calls one after another used ${fake.counts.connections} connection(s)`);
  await Promise.all(Array.from({ length: 40 }, () => client.read(token())));
  t.ok(fake.counts.connections <= 32, `40 concurrent calls opened ${fake.counts.connections} connections (pool of 32)`);
});

t.test("the caller's signal ends a call in flight, and one that waits for a connection", async (t) => {
  let arrived: () => void = () => undefined;
  const firstArrived = new Promise<void>((resolve) => (arrived = resolve));
  const fake = await fakeService(t, () => {
    arrived(); // and never answers
  });
  const client = createClient({ url: fake.url, apiKey: 'k', connections: 1, timeout: 5_000 });
  t.teardown(() => client.close());
  const controller = new AbortController();
  const reason = new Error('the app gave up');
  const inFlight = client.touch(token(), { signal: controller.signal });
  // Wait until the service holds the first call (on a loaded machine the connection can take
  // longer than the queued call's deadline to open).
  await firstArrived;
  // The pool's only connection is taken: this one waits in undici's queue.
  const queued = client.read(token(), { timeout: 100 });
  const started = performance.now();
  const queuedErr = await rejection(t, queued);
  t.equal(queuedErr.code, 'deadline_exceeded', 'a queued call ends at its deadline too');
  t.ok(performance.now() - started < 2_000, 'without waiting for the call ahead of it');
  controller.abort(reason);
  await t.rejects(inFlight, reason, "the call rejects with the signal's reason");
  t.equal(fake.counts.requests, 1, 'only the first call reached the service');
  await t.rejects(client.touch(token(), { signal: AbortSignal.abort(reason) }), reason, 'an aborted signal sends nothing');
  t.equal(fake.counts.requests, 1);
});

t.test('an answer in several chunks is read whole; a problem from a proxy without JSON is typed by its status', async (t) => {
  const big = { ...SESSION, data: { blob: 'x'.repeat(200_000) } };
  const fake = await fakeService(t, (req, res) => {
    if (req.url === '/v1/sessions/current/touch') {
      res.writeHead(200, { 'content-type': 'application/json' });
      const text = JSON.stringify(big);
      res.write(text.slice(0, 1000));
      setTimeout(() => res.end(text.slice(1000)), 20);
      return;
    }
    res.writeHead(502, { 'content-type': 'text/html' });
    res.end('<html>Bad Gateway</html>');
  });
  const client = createClient({ url: fake.url, apiKey: 'k', retries: 0 });
  t.teardown(() => client.close());
  t.same(await client.touch(token()), big);
  const err = await rejection(t, client.read(token()));
  t.equal(err.code, 'http_502');
  t.equal(err.status, 502);
});

t.test("undici's mocks work as the dispatcher: a MockAgent, and a bare MockPool (which calls the older handler methods)", async (t) => {
  const { MockAgent } = await import('undici');
  const agent = new MockAgent();
  agent.disableNetConnect();
  t.teardown(() => agent.close());
  const pool = agent.get('http://sessiond.test');
  pool.intercept({ path: '/v1/sessions/current/touch', method: 'POST' }).reply(200, SESSION).times(2);
  pool
    .intercept({ path: '/v1/sessions/current', method: 'GET' })
    .reply(429, { type: 'about:blank', title: 'Too Many Requests', status: 429, code: 'rate_limited' }, { headers: { 'content-type': 'application/problem+json', 'Retry-After': '7' } })
    .times(2);
  for (const [name, dispatcher] of [['MockAgent', agent], ['MockPool', pool]] as const) {
    const client = createClient({ url: 'http://sessiond.test', apiKey: 'k', dispatcher, timeout: 1_000 });
    t.same(await client.touch(token()), SESSION, `${name}: the answer`);
    const err = await rejection(t, client.read(token()));
    t.equal(err.code, 'rate_limited', `${name}: a problem is typed`);
    t.equal(err.retryAfter, 7, `${name}: its Retry-After is read`);
  }
});
