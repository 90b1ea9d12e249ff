/** The fault proxy against a trivial echo server: each fault, then heal. */
import t, { type Test } from 'tap';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFaultProxy, resetOrDestroy, type FaultProxy } from './fault-proxy.js';

const echo = net.createServer((s) => {
  s.on('error', () => undefined);
  s.pipe(s);
});
await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
const echoPort = (echo.address() as net.AddressInfo).port;
t.teardown(() => new Promise<void>((r) => echo.close(() => r())));

async function withProxy(t: Test, fn: (p: FaultProxy) => Promise<void>): Promise<void> {
  const p = await createFaultProxy({ target: { host: '127.0.0.1', port: echoPort }, listenHost: '127.0.0.1' });
  t.teardown(() => p.close());
  await fn(p);
}

/** A connection with a line-oriented "send and wait for the echo" helper. */
async function connect(port: number): Promise<{ sock: net.Socket; roundTrip: (msg: string, timeoutMs?: number) => Promise<number>; closed: Promise<string> }> {
  const sock = net.connect({ host: '127.0.0.1', port, noDelay: true });
  let buffered = '';
  let waiter: (() => void) | undefined;
  sock.on('data', (d) => {
    buffered += String(d);
    waiter?.();
  });
  const closed = new Promise<string>((resolve) => {
    sock.on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? e.message));
    sock.on('close', () => resolve('close'));
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  const roundTrip = async (msg: string, timeoutMs = 2_000): Promise<number> => {
    const started = performance.now();
    sock.write(msg);
    const deadline = started + timeoutMs;
    while (!buffered.includes(msg)) {
      if (performance.now() > deadline || sock.destroyed) throw new Error(`no echo of ${msg} within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 10);
      });
    }
    buffered = buffered.replace(msg, '');
    return performance.now() - started;
  };
  return { sock, roundTrip, closed };
}

t.test('passes bytes both ways unchanged', (t) =>
  withProxy(t, async (p) => {
    const c = await connect(p.port);
    t.ok((await c.roundTrip('hello')) < 200);
    const big = 'x'.repeat(200_000) + 'END';
    await c.roundTrip(big);
    t.ok(p.stats().bytesUp >= big.length && p.stats().bytesDown >= big.length);
    c.sock.destroy();
  }),
);

t.test('latency and jitter delay every round trip; order is kept; heal removes them', (t) =>
  withProxy(t, async (p) => {
    const c = await connect(p.port);
    p.setLatency(60, 40);
    const slow = await c.roundTrip('a');
    t.ok(slow >= 115, `two hops of ≥ 60 ms each (${slow.toFixed(0)} ms)`);
    // Many small writes in a row arrive in order despite jitter.
    const parts = Array.from({ length: 30 }, (_, i) => `<${i}>`);
    for (const part of parts) c.sock.write(part);
    await c.roundTrip('<done>', 3_000);
    p.heal();
    const fast = await c.roundTrip('b');
    t.ok(fast < 50, `healed: ${fast.toFixed(1)} ms`);
    c.sock.destroy();
  }),
);

t.test('ordering under jitter', (t) =>
  withProxy(t, async (p) => {
    const c = await connect(p.port);
    p.setLatency(5, 50);
    let got = '';
    c.sock.on('data', (d) => (got += String(d)));
    const want = Array.from({ length: 50 }, (_, i) => `[${i}]`).join('');
    for (let i = 0; i < 50; i++) {
      c.sock.write(`[${i}]`);
      await sleep(1);
    }
    const deadline = Date.now() + 3_000;
    while (!got.includes(want) && Date.now() < deadline) await sleep(20);
    t.ok(got.includes(want), 'bytes arrive in the order sent');
    c.sock.destroy();
  }),
);

t.test('blackhole holds traffic (open and new connections) until it ends', (t) =>
  withProxy(t, async (p) => {
    const c = await connect(p.port);
    p.blackhole(true);
    await t.rejects(c.roundTrip('held', 300), /no echo/);
    const fresh = await connect(p.port); // accepted, but nothing flows
    await t.rejects(fresh.roundTrip('also-held', 200), /no echo/);
    p.blackhole(false);
    await c.roundTrip('held', 1_000); // delivered after the blackhole, like TCP retransmits
    await fresh.roundTrip('also-held', 1_000);
    c.sock.destroy();
    fresh.sock.destroy();
  }),
);

t.test('resetAll resets every open connection; new ones work', (t) =>
  withProxy(t, async (p) => {
    const a = await connect(p.port);
    const b = await connect(p.port);
    await a.roundTrip('1');
    p.resetAll();
    t.equal(await a.closed, 'ECONNRESET');
    t.equal(await b.closed, 'ECONNRESET');
    t.equal(p.stats().open, 0);
    const c = await connect(p.port);
    await c.roundTrip('after');
    c.sock.destroy();
  }),
);

t.test('refuse resets new connections, leaves open ones; heal accepts again', (t) =>
  withProxy(t, async (p) => {
    const open = await connect(p.port);
    p.refuse(true);
    const refused = net.connect({ host: '127.0.0.1', port: p.port });
    const outcome = await new Promise<string>((resolve) => {
      refused.on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? 'error'));
      refused.on('close', () => resolve('close'));
    });
    t.match(outcome, /ECONNRESET|close/);
    t.equal(p.stats().refused, 1);
    await open.roundTrip('still-open');
    p.heal();
    const again = await connect(p.port);
    await again.roundTrip('accepted');
    open.sock.destroy();
    again.sock.destroy();
  }),
);

t.test('refuses a non-loopback address', async (t) => {
  await t.rejects(createFaultProxy({ target: { host: '10.0.0.1', port: 1 } }), /loopback only/);
  await t.rejects(createFaultProxy({ target: { host: '127.0.0.1', port: 1 }, listenHost: '0.0.0.0' }), /loopback only/);
});

t.test('a reset right after our own end() still closes the socket', async (t) => {
  // Plain resetAndDestroy() here never emits 'close' and leaks the handle (see resetOrDestroy).
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  client.on('error', () => undefined);
  t.teardown(() => void client.destroy());
  const s = await accepted;
  s.on('error', () => undefined);
  const closed = new Promise<boolean>((resolve) => s.once('close', () => resolve(true)));
  s.end();
  // Two ticks: the shutdown request has reached libuv and not completed yet.
  await new Promise<void>((resolve) => process.nextTick(() => process.nextTick(resolve)));
  resetOrDestroy(s);
  t.ok(await Promise.race([closed, sleep(2_000).then(() => false)]), "'close' follows");
});
