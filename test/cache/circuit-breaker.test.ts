import t from 'tap';
import { CircuitBreaker, type BreakerState } from '../../src/cache/circuit-breaker.js';

function breaker(probe: () => Promise<void>) {
  let now = 0;
  const changes: BreakerState[] = [];
  const b = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 1000 }, probe, () => now, (s) => changes.push(s));
  return { b, changes, advance: (ms: number) => (now += ms) };
}
const tick = () => new Promise((r) => setImmediate(r));

t.test('opens after consecutive failures only', async (t) => {
  const { b } = breaker(async () => undefined);
  b.failure();
  b.failure();
  b.success();
  b.failure();
  b.failure();
  t.ok(b.allows(), 'a success in between resets the count');
  b.failure();
  t.equal(b.state, 'open');
  t.notOk(b.allows(), 'open: callers take their fallback at once');
});

t.test('after the cooldown one probe runs; only its success closes the breaker', async (t) => {
  let probes = 0;
  let healthy = false;
  const { b, changes, advance } = breaker(async () => {
    probes += 1;
    if (!healthy) throw new Error('still down');
  });
  for (let i = 0; i < 3; i++) b.failure();
  advance(999);
  t.notOk(b.allows());
  t.equal(probes, 0, 'no probe inside the cooldown');
  advance(1);
  t.notOk(b.allows(), 'requests never wait on the probe');
  t.notOk(b.allows());
  t.equal(probes, 1, 'exactly one probe at a time');
  await tick();
  t.equal(b.state, 'open', 'a failed probe re-opens it');
  advance(1000);
  healthy = true;
  b.allows();
  await tick();
  t.equal(b.state, 'closed');
  t.ok(b.allows());
  t.same(changes, ['open', 'recovering', 'open', 'recovering', 'closed']);
});
