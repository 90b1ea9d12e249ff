import t from 'tap';
import {
  decideTouch,
  expiresAt,
  isLive,
  persistThresholdMs,
  resolveTimeouts,
  slidIdleExpiry,
  touched,
  type SessionRecord,
} from '../../src/domain/session.js';

const limits = { idleTimeoutDefault: 1800, idleTimeoutMax: 7200, absoluteTimeoutDefault: 43_200, absoluteTimeoutMax: 86_400 };
const T0 = new Date('2026-01-01T00:00:00.000Z');
const at = (s: number) => new Date(T0.getTime() + s * 1000);

function session(overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    namespace: 'ns',
    idHash: Buffer.alloc(32),
    subject: null,
    data: {},
    version: 1,
    idleTimeoutSeconds: 600,
    createdAt: T0,
    lastSeenAt: T0,
    idleExpiresAt: at(600),
    absoluteExpiresAt: at(3600),
    metadata: null,
    ...overrides,
  };
}

t.test('timeouts default from config and are capped by the maximums', async (t) => {
  t.same(resolveTimeouts({}, limits), { idleTimeoutSeconds: 1800, absoluteTimeoutSeconds: 43_200 });
  t.same(resolveTimeouts({ idleTimeout: 60, absoluteTimeout: 120 }, limits), { idleTimeoutSeconds: 60, absoluteTimeoutSeconds: 120 });
  t.same(resolveTimeouts({ idleTimeout: 999_999, absoluteTimeout: 999_999 }, limits), {
    idleTimeoutSeconds: 7200,
    absoluteTimeoutSeconds: 86_400,
  });
});

t.test('the idle expiry never passes the absolute expiry', async (t) => {
  t.same(slidIdleExpiry(T0, 600, at(3600)), at(600));
  t.same(slidIdleExpiry(at(3500), 600, at(3600)), at(3600));
});

t.test('a session is live strictly before both expiries', async (t) => {
  const s = session();
  t.ok(isLive(s, at(599)));
  t.notOk(isLive(s, at(600)), 'idle expiry reached');
  t.notOk(isLive(session({ idleExpiresAt: at(5000) }), at(3600)), 'absolute expiry reached');
  t.same(expiresAt(session({ idleExpiresAt: at(5000) })), at(3600), 'clients see the earlier expiry');
});

t.test('touch is a max-register on the idle expiry', async (t) => {
  const s = session();
  const later = touched(s, at(100));
  t.same(later.idleExpiresAt, at(700));
  t.same(later.lastSeenAt, at(100));
  const stale = touched(later, at(50));
  t.same(stale.idleExpiresAt, at(700), 'an older touch never shortens the expiry');
  t.same(stale.lastSeenAt, at(100), 'nor moves last-seen back');
  t.same(touched(s, at(3300)).idleExpiresAt, at(3600), 'capped at the absolute expiry');
  t.equal(touched(s, at(100)).version, 1, 'touch does not bump the version');
});

t.test('write-behind threshold: configured value, but at most a tenth of the idle timeout', async (t) => {
  t.equal(persistThresholdMs(1800, 60), 60_000);
  t.equal(persistThresholdMs(1, 60), 100);
  t.equal(persistThresholdMs(600, 0), 0);
  const s = session({ idleTimeoutSeconds: 1800, idleExpiresAt: at(1800) });
  t.equal(decideTouch(s, at(1800), at(50), 60)?.persist, false, 'a 50 s lag stays in memory of the caller');
  t.equal(decideTouch(s, at(1800), at(61), 60)?.persist, true, 'past the threshold it is written');
  t.equal(decideTouch(s, at(1800), at(0), 0)?.persist, false, 'no change, no write');
  t.equal(decideTouch(s, at(1800), at(1800), 0), null, 'a dead session is not touched');
});
