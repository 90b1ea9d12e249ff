/**
 * The gateway against a real Redis: what a lookup answers, and the per-call deadline when the
 * event loop was blocked.
 *
 * After a block, Node runs due timers before it reads the sockets: a reply that arrived well
 * within the deadline sat unread while the loop was busy, and a deadline checked in the timer
 * alone turned it into a failure (a fallback to MariaDB, whose expiry lags the touches Redis
 * took). The test sends a call, blocks the loop until another connection has seen Redis carry
 * the call out (so its reply is in our socket) and until the deadline has passed, then lets go.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { decodeEntry, encodeEntry, sessionKeys } from '../../src/cache/redis-entry.js';
import type { SessionKey } from '../../src/domain/session.js';
import { subjectHashOf } from '../../src/domain/token.js';
import { gatewayOptions, privateRedis, sharedRedisUrl, testGateway } from '../helpers/redis.js';
import { newRecord } from '../store/session-store-contract.js';

/**
 * Blocks this thread (the event loop with it) until `key` exists in Redis, seen over a
 * connection of a worker thread, and at least `minMs` have passed.
 */
function blockUntilKeyExists(redisUrl: string, key: string, minMs: number): void {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const url = new URL(redisUrl);
  // The worker speaks RESP over a plain socket (inline commands), polling EXISTS until it is 1.
  const worker = new Worker(
    `
    const { workerData } = require('node:worker_threads');
    const net = require('node:net');
    const flag = new Int32Array(workerData.buffer);
    const socket = net.connect(workerData.port, workerData.host);
    let buffered = '';
    const ask = () => socket.write('EXISTS ' + workerData.key + '\\r\\n');
    socket.on('connect', ask);
    socket.on('data', (chunk) => {
      buffered += chunk.toString();
      if (!buffered.endsWith('\\r\\n')) return;
      const reply = buffered;
      buffered = '';
      if (reply.startsWith(':1')) {
        Atomics.store(flag, 0, 1);
        Atomics.notify(flag, 0);
        socket.destroy();
      } else setTimeout(ask, 2);
    });
    socket.on('error', (err) => {
      Atomics.store(flag, 0, 2);
      Atomics.notify(flag, 0);
    });
    `,
    { eval: true, workerData: { buffer: flag.buffer, host: url.hostname, port: Number(url.port), key } },
  );
  const started = Date.now();
  // Wait for the worker's word (bounded: a broken worker must not hang the test forever).
  Atomics.wait(flag, 0, 0, 60_000);
  while (Date.now() - started < minMs) {
    // busy: the deadline must pass while the loop is blocked
  }
  void worker.terminate();
  if (Atomics.load(flag, 0) !== 1) throw new Error('the worker never saw the key');
}

t.test('a reply that arrived while the event loop was blocked past the deadline is taken, not timed out', async (t) => {
  const url = await sharedRedisUrl(t);
  const deadlineMs = 50;
  const gateway = await testGateway(t, gatewayOptions({ url, commandTimeoutMs: deadlineMs, breakerFailureThreshold: 100 }));
  for (let round = 0; round < 3; round++) {
    const key = { namespace: 'gw', idHash: randomBytes(32) };
    // SET lease NX is written to the socket at once; Redis carries it out while we are blocked.
    const call = gateway.takeLease(key, `lease-${round}`);
    blockUntilKeyExists(url, sessionKeys(key).lease, 3 * deadlineMs);
    t.equal(await call, true, `round ${round}: the call answered with Redis's reply`);
  }
  t.equal(gateway.breaker.state, 'closed', 'and no failure was counted against Redis');
});

t.test('a reply that does not come is still cut off at the deadline', async (t) => {
  const { url } = await privateRedis(t); // paused below: not the Redis other test files share
  const gateway = await testGateway(t, gatewayOptions({ url, commandTimeoutMs: 50, breakerFailureThreshold: 100 }));
  const key = { namespace: 'gw', idHash: randomBytes(32) };
  const { Redis } = await import('ioredis');
  const admin = new Redis(url);
  t.teardown(() => admin.disconnect());
  // CLIENT PAUSE WRITE holds other clients' write commands (until UNPAUSE); reads go on.
  await admin.client('PAUSE', 60_000, 'WRITE');
  t.teardown(() => admin.client('UNPAUSE').catch(() => undefined));
  await t.rejects(gateway.takeLease(key, 'x'), { name: 'CacheUnavailableError' }, 'the held call fails');
  t.equal(await admin.exists(sessionKeys(key).lease), 0, 'before Redis carried it out');
  await admin.client('UNPAUSE');
});

t.test('a lookup answers an installed entry field for field, a tombstone as one, and everything without data as a miss', async (t) => {
  const url = await sharedRedisUrl(t);
  const gateway = await testGateway(t, gatewayOptions({ url }));
  const { Redis } = await import('ioredis');
  const admin = new Redis(url);
  t.teardown(() => admin.disconnect());
  const now = new Date();
  const key = (): SessionKey => ({ namespace: 'gw', idHash: randomBytes(32) });

  const plain = key();
  t.same(await gateway.lookup(plain), { kind: 'miss' }, 'nothing there');
  const s = newRecord(now, { ...plain, data: { text: 'line 1\nline 2', quote: '"\\', n: 1 }, subject: null });
  t.equal(await gateway.takeLease(plain, 'l1'), true);
  t.equal((await gateway.install(plain, 'l1', encodeEntry(s))).installed, 1);
  const hit = await gateway.lookup(plain);
  t.same(hit, { kind: 'hit', fields: encodeEntry(s) }, 'every field as installed, data with a newline whole');
  t.same(hit.kind === 'hit' ? decodeEntry(plain, hit.fields) : null, s);

  const withSubject = key();
  const r = newRecord(now, { ...withSubject, subject: 'user-lookup' });
  t.equal(await gateway.takeLease(withSubject, 'l2'), true);
  await gateway.install(withSubject, 'l2', encodeEntry(r));
  t.same(await gateway.lookup(withSubject), { kind: 'hit', fields: encodeEntry(r) }, "a subject's entry below no mark");
  await gateway.markSubject({ namespace: r.namespace, subjectHash: subjectHashOf('user-lookup'), generation: 1, keepIdHash: null });
  t.same(await gateway.lookup(withSubject), { kind: 'miss' }, 'the subject revoked: a miss');

  await gateway.tombstone(plain);
  t.same(await gateway.lookup(plain), { kind: 'tombstone' });

  const marked = key();
  await gateway.markWrite(marked);
  t.same(await gateway.lookup(marked), { kind: 'miss' }, 'a write marker');
  const register = key();
  await admin.hset(sessionKeys(register).entry, 'ie', String(now.getTime()), 'ls', String(now.getTime()));
  t.same(await gateway.lookup(register), { kind: 'miss' }, 'a touch register without data');
});
