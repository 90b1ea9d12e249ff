/** The history checker on small hand-written histories: each check fires, and only then. */
import t from 'tap';
import { check, counterexample, mergePatch, type Op, type SessionView } from './checker.js';

const T0 = Date.parse('2026-11-25T08:00:00.000Z');
const ABS = T0 + 3_600_000;
let nextId = 0;

function sess(version: number, data: Record<string, unknown>, expiresAt = T0 + 300_000): SessionView {
  return { version, data, expiresAt, absoluteExpiresAt: ABS };
}
function op(kind: Op['kind'], start: number, end: number, status: number, extra: Partial<Op> = {}): Op {
  return { id: nextId++, client: 'c', via: 'svc1', kind, start, end, wallStart: T0 + start, status, lineage: 1, token: 'L1.0', subject: 'u', ...extra };
}
const opts = { touchThresholdMs: 5_000 };

/** create (v1) → patch (v2) → read (v2) → destroy → read 404. */
function good(): Op[] {
  return [
    op('create', 0, 10, 201, { w: 'create-1', body: { w: 'create-1' }, session: sess(1, { w: 'create-1' }) }),
    op('patch', 20, 30, 200, { w: 'a-1', body: { w: 'a-1', a: 1 }, session: sess(2, { w: 'a-1', a: 1 }) }),
    op('read', 40, 50, 200, { session: sess(2, { w: 'a-1', a: 1 }) }),
    op('touch', 55, 60, 200, { session: sess(2, { w: 'a-1', a: 1 }, T0 + 300_050) }),
    op('put', 70, 80, 200, { w: 'b-1', ifMatch: 2, body: { w: 'b-1', b: 1 }, session: sess(3, { w: 'b-1', b: 1 }, T0 + 300_050) }),
    op('destroy', 90, 100, 204),
    op('read', 110, 120, 404),
  ];
}

t.test('a correct history passes', async (t) => {
  const r = check(good(), opts);
  t.ok(r.ok, counterexample(r));
  t.equal(r.stats.ops, 7);
});

t.test('a read after an acknowledged destroy that returns the session', async (t) => {
  const h = [...good(), op('read', 130, 140, 200, { session: sess(3, { w: 'b-1', b: 1 }, T0 + 300_050) })];
  const r = check(h, opts);
  t.notOk(r.ok);
  t.match(counterexample(r), /\[resurrection\].*after destroy was acknowledged/);
});

t.test('404 is final, even when no destroy was acknowledged', async (t) => {
  const h = good().slice(0, 4);
  h.push(op('destroy', 90, 100, 0, { error: 'socket hang up' }));
  h.push(op('read', 110, 120, 404));
  t.ok(check(h, opts).ok, 'an indeterminate destroy may have happened');
  h.push(op('read', 130, 140, 200, { session: sess(2, { w: 'a-1', a: 1 }, T0 + 300_050) }));
  const r = check(h, opts);
  t.notOk(r.ok);
  t.match(r.violations[0]!.message, /after a call on it had answered 404/);
});

t.test('a stale read after an acknowledged write (the cache fill without a lease)', async (t) => {
  const h = good().slice(0, 2);
  h.push(op('read', 35, 45, 200, { session: sess(1, { w: 'create-1' }) }));
  const r = check(h, opts);
  t.notOk(r.ok);
  t.match(counterexample(r), /returned version 1 after patch had returned version 2/);
  t.ok(check(h, { ...opts, staleToleranceMs: 100 }).ok, 'inside a documented tolerance: tolerated');
  t.equal(check(h, { ...opts, staleToleranceMs: 100 }).tolerated.length, 1);
});

t.test('a lost PATCH: version 3 does not contain version 2', async (t) => {
  const h = good().slice(0, 3);
  h.push(op('patch', 60, 70, 200, { w: 'c-1', body: { w: 'c-1', c: 1 }, session: sess(3, { w: 'c-1', c: 1 }) }));
  const r = check(h, opts);
  t.notOk(r.ok);
  t.match(counterexample(r), /not version 2 merged with the PATCH/);
});

t.test('two writes acknowledged with one version', async (t) => {
  const h = good().slice(0, 2);
  h.push(op('patch', 20, 31, 200, { client: 'd', w: 'd-1', body: { w: 'd-1', d: 1 }, session: sess(2, { w: 'd-1', d: 1 }) }));
  const r = check(h, opts);
  t.notOk(r.ok);
  t.match(counterexample(r), /version 2 seen with two different data/);
});

t.test('a write answered 412 that shows up anyway; If-Match not honoured', async (t) => {
  const h = good().slice(0, 2);
  h.push(op('put', 35, 40, 412, { w: 'x-1', ifMatch: 1, body: { w: 'x-1' } }));
  h.push(op('read', 45, 50, 200, { session: sess(3, { w: 'x-1' }) }));
  const r = check(h, opts);
  t.notOk(r.ok);
  t.match(counterexample(r, 0, 5), /a write answered 412 shows up/);
});

t.test('expiry: backwards without cause fails; within the bound after a write or a Redis fault passes', async (t) => {
  const h = good().slice(0, 4); // the touch took expiry to +300 050
  const back = op('read', 62, 64, 200, { session: sess(2, { w: 'a-1', a: 1 }, T0 + 300_000) });
  let r = check([...h, back], opts);
  t.notOk(r.ok);
  t.match(r.violations[0]!.message, /moved backwards by 50 ms \(no data write or Redis fault/);
  r = check([...h, back], { ...opts, faults: [{ name: 'redis killed', start: 50, end: 63, touchLoss: true }] });
  t.ok(r.ok, 'a Redis fault in between: within the write-behind bound');
  const far = op('read', 62, 64, 200, { session: sess(2, { w: 'a-1', a: 1 }, T0 + 290_000) });
  r = check([...h, far], { ...opts, faults: [{ name: 'redis killed', start: 50, end: 63, touchLoss: true }] });
  t.notOk(r.ok, 'beyond the bound fails even with a fault');
  const capped = op('read', 62, 64, 200, { session: { ...sess(2, { w: 'a-1', a: 1 }, ABS + 1), absoluteExpiresAt: ABS } });
  t.match(counterexample(check([...good().slice(0, 2), capped], opts)), /passes absoluteExpiresAt/);
});

t.test('durability: an acknowledged create that reads 404 with nothing to explain it', async (t) => {
  const h = [good()[0]!, op('read', 20, 30, 404)];
  const r = check(h, opts);
  t.notOk(r.ok);
  t.match(counterexample(r), /\[durability\]/);
  t.ok(check([good()[0]!, op('revoke', 15, 25, 0, { token: undefined }), op('read', 20, 30, 404)], opts).ok, 'a revoke-all in flight explains it');
});

t.test('rotate: the old token is dead once the rotate is acknowledged, the new one lives', async (t) => {
  const h = [
    good()[0]!,
    op('rotate', 20, 30, 201, { newToken: 'L1.1', session: sess(1, { w: 'create-1' }, T0 + 300_020) }),
    op('read', 40, 50, 200, { token: 'L1.1', session: sess(1, { w: 'create-1' }, T0 + 300_020) }),
    op('read', 40, 50, 404),
  ];
  t.ok(check(h, opts).ok);
  h.push(op('touch', 60, 70, 200, { session: sess(1, { w: 'create-1' }, T0 + 300_060) }));
  t.match(counterexample(check(h, opts)), /touch on L1\.0 returned the session after rotate was acknowledged/);
});

t.test('mergePatch is RFC 7396', async (t) => {
  t.same(mergePatch({ a: 1, b: { c: 1, d: 2 } }, { a: null, b: { c: 3 }, e: [1] }), { b: { c: 3, d: 2 }, e: [1] });
});

t.test('404 then the session, while a destroy is still in flight: not (yet) a violation', async (t) => {
  const h = [
    ...good().slice(0, 3),
    op('destroy', 60, 200, 204),
    op('put', 61, 70, 404, { w: 'z-1', ifMatch: 2, body: { w: 'z-1' } }),
    op('read', 80, 90, 200, { session: sess(2, { w: 'a-1', a: 1 }) }),
  ];
  t.ok(check(h, opts).ok, counterexample(check(h, opts)));
  h.push(op('read', 210, 220, 200, { session: sess(2, { w: 'a-1', a: 1 }) }));
  t.notOk(check(h, opts).ok, 'after the destroy is acknowledged it is');
});
