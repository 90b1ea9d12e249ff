import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from '../../clients/node/dist/index.js';
import { appToken, callsBetween, clientService, fakeSession, rejection, serviceCalls } from './sessiond-service.js';

/**
 * clients/node's touch batching: the touches of one event-loop turn (or a window) go out as
 * one POST /v1/sessions/batch/touch, against the real service; and, against loopback servers
 * that misbehave on purpose, each touch keeps its own deadline, signal, errors and retries.
 */

const TOUCH = 'POST /v1/sessions/current/touch';
const BATCH = 'POST /v1/sessions/batch/touch';

t.test('against the service', async (t) => {
  const svc = await clientService(t);
  const client = createClient({ url: svc.url, apiKey: svc.apiKey });
  t.teardown(() => client.close());
  const tokens = await Promise.all(Array.from({ length: 5 }, async (_, i) => (await client.create({ data: { i } })).token));

  t.test('the touches of one turn are one batch call, each answered on its own', async (t) => {
    const before = await serviceCalls(svc.url);
    const unknown = appToken();
    const answers = await Promise.all([...tokens, unknown, tokens[0]!].map((token) => client.touch(token)));
    t.same(callsBetween(before, await serviceCalls(svc.url)), { [BATCH]: 1 }, 'one call for seven touches');
    t.same(answers.slice(0, 5).map((s) => s?.data), [0, 1, 2, 3, 4].map((i) => ({ i })), 'each its own session, in order');
    t.equal(answers[5], null, 'an unknown session is null');
    t.equal(answers[6]?.id, answers[0]?.id, 'a token touched twice in a turn is answered twice');
  });

  t.test('a lone touch is the single call', async (t) => {
    const before = await serviceCalls(svc.url);
    t.same((await client.touch(tokens[0]!))?.data, { i: 0 });
    t.equal(await client.touch(appToken()), null);
    t.same(callsBetween(before, await serviceCalls(svc.url)), { [TOUCH]: 2 });
  });

  t.test('more touches than a batch takes are split', async (t) => {
    const before = await serviceCalls(svc.url);
    const answers = await Promise.all(Array.from({ length: 230 }, (_, i) => client.touch(tokens[i % 5]!)));
    t.ok(answers.every((s, i) => s?.data.i === i % 5), 'every touch answered with its session');
    t.same(callsBetween(before, await serviceCalls(svc.url)), { [BATCH]: 3 }, '100 + 100 + 30');
  });

  t.test('batchWindow: touches over a few milliseconds are one call; false turns batching off', async (t) => {
    const windowed = createClient({ url: svc.url, apiKey: svc.apiKey, batchWindow: 50 });
    t.teardown(() => windowed.close());
    let before = await serviceCalls(svc.url);
    const first = windowed.touch(tokens[1]!);
    await sleep(5); // a later turn, within the window
    const second = windowed.touch(tokens[2]!);
    t.same([(await first)?.data, (await second)?.data], [{ i: 1 }, { i: 2 }]);
    t.same(callsBetween(before, await serviceCalls(svc.url)), { [BATCH]: 1 });

    const off = createClient({ url: svc.url, apiKey: svc.apiKey, batchWindow: false });
    t.teardown(() => off.close());
    before = await serviceCalls(svc.url);
    await Promise.all(tokens.map((token) => off.touch(token)));
    t.same(callsBetween(before, await serviceCalls(svc.url)), { [TOUCH]: 5 }, 'one call per touch');
    t.throws(() => createClient({ url: svc.url, apiKey: svc.apiKey, batchWindow: -1 }), TypeError);
  });

  t.test('a batch the service refuses rejects each of its touches with the typed error', async (t) => {
    const wrong = createClient({ url: svc.url, apiKey: 'not-a-key', retries: 0 });
    t.teardown(() => wrong.close());
    const all = [wrong.touch(tokens[0]!), wrong.touch(tokens[1]!)];
    for (const p of all) t.equal((await rejection(t, p)).code, 'unauthorized');
  });
});

/** A loopback HTTP server answering with `handle`; counts requests and keeps the batches' bodies. */
async function fakeService(t: Test, handle: (req: IncomingMessage, body: string, res: ServerResponse, n: number) => void) {
  const seen = { requests: 0, bodies: [] as string[] };
  const server: Server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      seen.bodies.push(body);
      handle(req, body, res, ++seen.requests);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())).then(() => server.closeAllConnections()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, server };
}

const session = fakeSession;
const json = (res: ServerResponse, status: number, body: unknown, type = 'application/json') => {
  res.writeHead(status, { 'content-type': type });
  res.end(JSON.stringify(body));
};
/** Answers a batch: `item(token, index)` gives each result. */
const answerBatch = (res: ServerResponse, body: string, item: (token: string, i: number) => unknown) =>
  json(res, 200, { results: (JSON.parse(body) as { tokens: string[] }).tokens.map(item) });

t.test('each touch of a batch keeps its own deadline and signal', async (t) => {
  const fake = await fakeService(t, (_req, body, res) => {
    // Answers after 400 ms.
    setTimeout(() => answerBatch(res, body, (token) => ({ status: 200, session: session(token.slice(0, 10)) })), 400);
  });
  const client = createClient({ url: fake.url, apiKey: 'k', timeout: 5_000 });
  t.teardown(() => client.close());
  const [a, b, c] = [appToken(), appToken(), appToken()];
  const controller = new AbortController();
  const reason = new Error('the app gave up');
  const started = performance.now();
  const short = client.touch(a, { timeout: 100 });
  const aborted = client.touch(b, { signal: controller.signal });
  const long = client.touch(c);
  setTimeout(() => controller.abort(reason), 50);
  const abortedChecked = t.rejects(aborted, reason, "the aborted touch rejects with its signal's reason");
  const err = await rejection(t, short);
  t.equal(err.code, 'deadline_exceeded', 'the touch with a 100 ms deadline ends at it');
  t.ok(performance.now() - started < 350, 'without waiting for the batch');
  await abortedChecked;
  t.equal((await long)?.id, c.slice(0, 10), 'the third is answered when the batch is');
  t.equal(fake.seen.requests, 1, 'one batch call for the three');
  t.same(JSON.parse(fake.seen.bodies[0]!), { tokens: [a, b, c] }, 'tokens in the body');
  await t.rejects(client.touch(a, { signal: AbortSignal.abort(reason) }), reason, 'an aborted signal sends nothing');
});

t.test('per-item errors: typed; a 503 item is retried in a later batch, a 500 is not', async (t) => {
  const tries = new Map<string, number>();
  const item = (token: string): { status: number; session?: unknown; code?: string; detail?: string } => {
    const n = (tries.get(token) ?? 0) + 1;
    tries.set(token, n);
    if (token.startsWith('flaky') && n === 1) return { status: 503, code: 'store_unavailable', detail: 'The session store is temporarily unavailable.' };
    if (token.startsWith('down')) return { status: 503, code: 'store_unavailable', detail: 'The session store is temporarily unavailable.' };
    if (token.startsWith('broken')) return { status: 500, code: 'internal_error', detail: 'An unexpected error occurred.' };
    if (token.startsWith('gone')) return { status: 404, code: 'session_not_found', detail: 'No live session.' };
    return { status: 200, session: session(token) };
  };
  const fake = await fakeService(t, (req, body, res) => {
    if (req.url === '/v1/sessions/batch/touch') return answerBatch(res, body, item);
    // A retried touch may go alone: the single call, answered alike.
    const { status, session: s, code, detail } = item(String(req.headers['session-token']));
    if (status === 200) return json(res, 200, s);
    json(res, status, { type: 'about:blank', title: 'Error', status, code, detail }, 'application/problem+json');
  });
  const client = createClient({ url: fake.url, apiKey: 'k', retries: 2 });
  t.teardown(() => client.close());
  const flaky = `flaky${appToken()}`;
  const down = `down${appToken()}`;
  const broken = `broken${appToken()}`;
  const gone = `gone${appToken()}`;
  const fine = appToken();
  const [r1, r2, r3, r4, r5] = await Promise.allSettled([flaky, down, broken, gone, fine].map((token) => client.touch(token)));
  t.match(r1, { status: 'fulfilled', value: { id: flaky } }, 'a 503 item succeeded on its second attempt');
  t.equal(tries.get(flaky), 2);
  t.equal(r2!.status, 'rejected');
  const downErr = (r2 as PromiseRejectedResult).reason;
  t.match(downErr, { name: 'SessiondError', code: 'store_unavailable', status: 503 }, 'a 503 past its retries is the typed error');
  t.equal(tries.get(down), 3, 'tried 1 + retries times (a retry may go alone, as the single call)');
  t.match((r3 as PromiseRejectedResult).reason, { name: 'SessiondError', code: 'internal_error', status: 500, problem: { code: 'internal_error' } });
  t.equal(tries.get(broken), 1, 'a 500 is not retried');
  t.match(r4, { status: 'fulfilled', value: null }, 'a 404 item is null');
  t.match(r5, { status: 'fulfilled', value: { id: fine } });
  t.notMatch(String(downErr.message), down, 'the message holds no token');
});

t.test('a whole batch answered 503 is retried as a batch; a service without the route gets single calls', async (t) => {
  let batches = 0;
  const fake = await fakeService(t, (req, body, res) => {
    if (req.url === '/v1/sessions/batch/touch' && ++batches === 1) {
      return json(res, 503, { type: 'about:blank', title: 'Service Unavailable', status: 503, code: 'store_unavailable' }, 'application/problem+json');
    }
    answerBatch(res, body, (token) => ({ status: 200, session: session(token) }));
  });
  const client = createClient({ url: fake.url, apiKey: 'k' });
  t.teardown(() => client.close());
  const [x, y] = [appToken(), appToken()];
  t.same((await Promise.all([client.touch(x), client.touch(y)])).map((s) => s?.id), [x, y]);
  t.equal(batches, 2, 'sent again after the 503');

  const old = await fakeService(t, (req, _body, res) => {
    if (req.url === '/v1/sessions/batch/touch') return json(res, 404, { type: 'about:blank', title: 'Not Found', status: 404, code: 'route_not_found' }, 'application/problem+json');
    json(res, 200, session(String(req.headers['session-token'])));
  });
  const legacy = createClient({ url: old.url, apiKey: 'k' });
  t.teardown(() => legacy.close());
  t.same((await Promise.all([legacy.touch(x), legacy.touch(y)])).map((s) => s?.id), [x, y], 'answered by single calls');
  t.equal(old.seen.requests, 3, 'one refused batch, then two single calls');
  await Promise.all([legacy.touch(x), legacy.touch(y)]);
  t.equal(old.seen.requests, 5, 'and no batch is tried again');
});
