import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';
import type { SessionKey, SessionRecord } from '../../src/domain/session.js';
import { pino } from 'pino';
import type { MarkedRevocations, SessionStore } from '../../src/store/session-store.js';
import { RevocationWorker } from '../../src/store/revocation-worker.js';

/** What every store implementation promises; run against each backend (docs/design.md §4). */
export interface ContractSubject {
  store: SessionStore;
  /** The touch write-behind threshold the store was built with, in seconds. */
  touchPersistThresholdSeconds: number;
}

const SECOND = 1000;

export function newRecord(now: Date, overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    namespace: 'ns-a',
    idHash: randomBytes(32),
    subject: 'user-1',
    data: { cart: ['sku-1'], n: 1 },
    version: 1,
    idleTimeoutSeconds: 1800,
    createdAt: now,
    lastSeenAt: now,
    idleExpiresAt: new Date(now.getTime() + 1800 * SECOND),
    absoluteExpiresAt: new Date(now.getTime() + 12 * 3600 * SECOND),
    metadata: { ip: '203.0.113.7', userAgent: 'UA/1.0', label: 'laptop' },
    subjectGeneration: 0,
    ...overrides,
  };
}

/**
 * Runs the revocation worker's row work to the end, as of `now` (small batches, so that a
 * test goes through several): what the app's worker does after a revoke-all.
 */
export function drainRevocations(store: SessionStore, now: Date, batchSize = 2): Promise<number> {
  const worker = new RevocationWorker(store as SessionStore & MarkedRevocations, { batchSize, pauseMs: 0, scanIntervalMs: 60_000 }, pino({ enabled: false }), () => now);
  return worker.drain();
}

/** How createIfAbsent refuses a taken id (SessionExistsError). */
const TAKEN = { status: 412, code: 'session_exists' };

const at = (base: Date, seconds: number) => new Date(base.getTime() + seconds * SECOND);

export function sessionStoreContract(t: Test, make: (t: Test) => Promise<ContractSubject>): void {
  // Whole milliseconds: DATETIME(3) keeps exactly that much.
  const t0 = new Date(Math.floor(Date.now() / 1000) * 1000);

  t.test('a created session reads back exactly as written', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0, { data: { nested: { a: [1, 'two', null, true] }, unicode: 'Grüße ✓' } });
    await store.create(s);
    const got = await store.get(s, at(t0, 1));
    t.same(got, s);
    t.ok(got!.idHash.equals(s.idHash), 'hash bytes survive the round trip');
  });

  t.test('unknown ids and other namespaces read as null', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0);
    await store.create(s);
    t.equal(await store.get({ namespace: 'ns-a', idHash: randomBytes(32) }, t0), null);
    t.equal(await store.get({ namespace: 'ns-b', idHash: s.idHash }, t0), null);
    t.equal(await store.get({ namespace: 'NS-A', idHash: s.idHash }, t0), null, 'namespaces are case-sensitive');
  });

  t.test('a session is dead from its idle or absolute expiry on', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0, { idleExpiresAt: at(t0, 10), absoluteExpiresAt: at(t0, 20) });
    await store.create(s);
    t.not(await store.get(s, at(t0, 9.999)), null);
    t.equal(await store.get(s, at(t0, 10)), null, 'idle expiry is exclusive');
    const long = newRecord(t0, { idleExpiresAt: at(t0, 30), absoluteExpiresAt: at(t0, 30) });
    await store.create(long);
    t.equal(await store.get(long, at(t0, 30)), null, 'absolute expiry is exclusive');
    t.equal(await store.touch(s, at(t0, 11)), null, 'an expired session cannot be touched back to life');
    t.equal(await store.get(s, at(t0, 11)), null, 'the failed touch did not resurrect it');
  });

  t.test('touch slides the idle expiry forward and persists it past the threshold', async (t) => {
    const { store, touchPersistThresholdSeconds: th } = await make(t);
    const s = newRecord(t0, { idleTimeoutSeconds: 1800 });
    await store.create(s);
    const later = at(t0, th + 5);
    const touched = await store.touch(s, later);
    t.same(touched?.idleExpiresAt, at(later, 1800));
    t.same(touched?.lastSeenAt, later);
    const read = await store.get(s, later);
    t.same(read?.idleExpiresAt, at(later, 1800), 'the new expiry was written');
    t.equal(read?.version, 1, 'touch never bumps the version');
  });

  t.test('touch never moves the expiry backwards and never past the absolute expiry', async (t) => {
    const { store, touchPersistThresholdSeconds: th } = await make(t);
    const s = newRecord(t0, { idleTimeoutSeconds: 600, idleExpiresAt: at(t0, 600), absoluteExpiresAt: at(t0, 3 * th + 700) });
    await store.create(s);
    const forward = await store.touch(s, at(t0, 2 * th + 10));
    t.same(forward?.idleExpiresAt, at(t0, 2 * th + 610));
    const earlier = await store.touch(s, at(t0, th + 10));
    t.same(earlier?.idleExpiresAt, at(t0, 2 * th + 610), 'a late-arriving older touch does not shorten it');
    const capped = await store.touch(s, at(t0, 2 * th + 300));
    t.same(capped?.idleExpiresAt, s.absoluteExpiresAt, 'capped at the absolute expiry');
    t.same((await store.get(s, at(t0, 2 * th + 300)))?.idleExpiresAt, s.absoluteExpiresAt);
  });

  t.test('touches within the threshold do not lower what is stored', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0);
    await store.create(s);
    const touched = await store.touch(s, at(t0, 1));
    t.ok(touched!.idleExpiresAt >= s.idleExpiresAt);
    const read = await store.get(s, at(t0, 1));
    t.ok(read!.idleExpiresAt >= s.idleExpiresAt);
  });

  t.test('replaceData is compare-and-set on the version', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0);
    await store.create(s);
    const ok = await store.replaceData(s, { v: 2 }, { any: false, versions: [1] }, t0);
    t.equal(ok.kind, 'ok');
    t.same(ok.kind === 'ok' && ok.session.data, { v: 2 });
    t.equal(ok.kind === 'ok' && ok.session.version, 2);
    t.same(await store.replaceData(s, { v: 3 }, { any: false, versions: [1] }, t0), { kind: 'version_mismatch', currentVersion: 2 });
    t.same(await store.replaceData(s, { v: 3 }, { any: false, versions: [] }, t0), { kind: 'version_mismatch', currentVersion: 2 });
    const anyVersion = await store.replaceData(s, { v: 3 }, { any: true }, t0);
    t.equal(anyVersion.kind === 'ok' && anyVersion.session.version, 3);
    t.same(await store.replaceData({ namespace: 'ns-a', idHash: randomBytes(32) }, {}, { any: true }, t0), { kind: 'not_found' });
    t.same((await store.get(s, t0))?.data, { v: 3 });
  });

  t.test('concurrent replaces with the same version: exactly one wins', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0);
    await store.create(s);
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => store.replaceData(s, { writer: i }, { any: false, versions: [1] }, t0)),
    );
    const winners = results.filter((r) => r.kind === 'ok');
    t.equal(winners.length, 1, 'one winner');
    t.equal(results.filter((r) => r.kind === 'version_mismatch').length, 7, 'the rest lose with 412');
    const final = await store.get(s, t0);
    t.same(final?.data, winners[0]!.kind === 'ok' ? winners[0]!.session.data : null, 'the final state is the winner');
  });

  t.test('patchData merges per RFC 7396, atomically', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0, { data: { keep: 1, drop: 2, nested: { a: 1, b: 2 } } });
    await store.create(s);
    const r = await store.patchData(s, { drop: null, nested: { b: null, c: 3 }, added: [1] }, undefined, 65536, t0);
    t.same(r.kind === 'ok' && r.session.data, { keep: 1, nested: { a: 1, c: 3 }, added: [1] });
    t.equal(r.kind === 'ok' && r.session.version, 2);
    t.same(await store.patchData(s, { x: 1 }, { any: false, versions: [1] }, 65536, t0), { kind: 'version_mismatch', currentVersion: 2 });
    const conditional = await store.patchData(s, { x: 1 }, { any: false, versions: [2] }, 65536, t0);
    t.equal(conditional.kind, 'ok');
  });

  t.test('concurrent patches to different keys all survive', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0, { data: {} });
    await store.create(s);
    const n = 12;
    const results = await Promise.all(Array.from({ length: n }, (_, i) => store.patchData(s, { [`k${i}`]: i }, undefined, 65536, t0)));
    t.ok(results.every((r) => r.kind === 'ok'));
    const final = await store.get(s, t0);
    t.same(final?.data, Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i])));
    t.equal(final?.version, n + 1, 'each patch bumped the version once');
  });

  t.test('a patch that would exceed the size limit is refused and changes nothing', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0, { data: { a: 'x'.repeat(100) } });
    await store.create(s);
    t.same(await store.patchData(s, { b: 'y'.repeat(200) }, undefined, 256, t0), { kind: 'too_large' });
    const read = await store.get(s, t0);
    t.same(read?.data, { a: 'x'.repeat(100) });
    t.equal(read?.version, 1);
  });

  t.test('destroy kills the session for good and is idempotent', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0);
    await store.create(s);
    t.equal(await store.destroy(s, t0), true);
    t.equal(await store.get(s, t0), null);
    t.equal(await store.destroy(s, t0), false, 'a second destroy finds nothing');
    t.equal(await store.touch(s, t0), null);
    t.same(await store.replaceData(s, {}, { any: true }, t0), { kind: 'not_found' });
    t.same(await store.patchData(s, { a: 1 }, undefined, 65536, t0), { kind: 'not_found' });
    t.equal(await store.rotate(s, randomBytes(32), t0), null);
  });

  t.test('rotate moves the session to a new id and kills the old one', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0);
    await store.create(s);
    await store.replaceData(s, { v: 'x' }, { any: true }, t0);
    const newHash = randomBytes(32);
    const later = at(t0, 5);
    const rotated = await store.rotate(s, newHash, later);
    t.ok(rotated);
    t.equal(await store.get(s, later), null, 'old id is dead');
    const read = await store.get({ namespace: s.namespace, idHash: newHash }, later);
    t.same(read?.data, { v: 'x' });
    t.equal(read?.version, 2);
    t.equal(read?.subject, s.subject);
    t.same(read?.absoluteExpiresAt, s.absoluteExpiresAt, 'absolute expiry carries over');
    t.same(read?.createdAt, s.createdAt);
    t.same(read?.idleExpiresAt, at(later, s.idleTimeoutSeconds));
  });

  t.test('two concurrent rotations of one session: exactly one succeeds', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0);
    await store.create(s);
    const [a, b] = await Promise.all([store.rotate(s, randomBytes(32), t0), store.rotate(s, randomBytes(32), t0)]);
    t.equal([a, b].filter((r) => r !== null).length, 1);
  });

  t.test('sweepBatch deletes expired and revoked rows in batches and keeps live ones', async (t) => {
    const { store } = await make(t);
    const expired = Array.from({ length: 5 }, () => newRecord(t0, { idleExpiresAt: at(t0, 1), absoluteExpiresAt: at(t0, 100) }));
    const live = Array.from({ length: 3 }, () => newRecord(t0));
    for (const s of [...expired, ...live]) await store.create(s);
    await store.destroy(live[2]!, at(t0, 1));
    const before = at(t0, 10);
    t.equal(await store.sweepBatch(before, 4), 4, 'a batch is bounded');
    t.equal(await store.sweepBatch(before, 4), 2, 'then the rest, the revoked one included');
    t.equal(await store.sweepBatch(before, 4), 0);
    t.not(await store.get(live[0]!, at(t0, 10)), null);
    t.not(await store.get(live[1]!, at(t0, 10)), null);
  });

  t.test('listBySubject pages through live sessions, newest activity first', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const mine = Array.from({ length: 5 }, (_, i) => newRecord(t0, { subject, lastSeenAt: at(t0, i) }));
    for (const s of mine) await store.create(s);
    await store.create(newRecord(t0, { subject: 'someone-else' }));
    await store.create(newRecord(t0, { subject, namespace: 'ns-b' }));
    await store.create(newRecord(t0, { subject, idleExpiresAt: at(t0, 1), lastSeenAt: at(t0, 9) })); // expired at t0+2
    await store.destroy(mine[4]!, t0);
    const now = at(t0, 2);
    const first = await store.listBySubject('ns-a', subject, now, 2);
    t.same(first.map((s) => s.lastSeenAt), [at(t0, 3), at(t0, 2)], 'newest activity first; revoked and expired left out');
    const last = first.at(-1)!;
    const second = await store.listBySubject('ns-a', subject, now, 10, { lastSeenAt: last.lastSeenAt, idHash: last.idHash });
    t.same(second.map((s) => s.lastSeenAt), [at(t0, 1), at(t0, 0)], 'the cursor continues where the page ended');
    t.ok(second.every((s) => s.subject === subject && s.namespace === 'ns-a'));
  });

  t.test('revokeSubject revokes all of a subject but the kept one, atomically', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const mine = Array.from({ length: 4 }, () => newRecord(t0, { subject }));
    for (const s of mine) await store.create(s);
    for (const s of mine) await store.get(s, t0); // warm any cache
    const other = newRecord(t0, { subject: 'bystander' });
    await store.create(other);
    t.equal(await store.revokeSubject('ns-a', subject, mine[0]!.idHash, t0), 3);
    t.ok(await store.get(mine[0]!, t0), 'the kept session lives');
    for (const s of mine.slice(1)) t.equal(await store.get(s, t0), null, 'the others are gone at once');
    t.ok(await store.get(other, t0), "another subject's session is untouched");
    t.equal(await store.revokeSubject('ns-b', subject, undefined, t0), 0, 'namespaces are separate');
    t.equal(await store.revokeSubject('ns-a', subject, undefined, t0), 1);
    t.equal(await store.get(mine[0]!, t0), null);
    t.equal(await store.touch(mine[1]!, t0), null, 'a touch does not bring one back');
    t.equal((await store.replaceData(mine[2]!, { x: 1 }, { any: true }, t0)).kind, 'not_found', 'nor a write');
    t.equal(await store.rotate(mine[3]!, randomBytes(32), t0), null, 'nor a rotation');
    t.same(await store.listBySubject('ns-a', subject, t0, 10), [], 'the list is empty');
    t.ok((await drainRevocations(store, t0)) >= 4, 'the worker then revokes the four rows');
    for (const s of mine) t.equal(await store.get(s, t0), null, 'and they stay gone');
    const after = newRecord(t0, { subject });
    await store.create(after);
    t.ok(await store.get(after, t0), 'a session created after the revocation lives');
    t.same((await store.listBySubject('ns-a', subject, t0, 10)).map((s) => s.idHash), [after.idHash]);
  });

  t.test('revokeSubject keeps `keep` only while it is live: a later revocation keeping a revoked id brings nothing back', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const [a, b] = [newRecord(t0, { subject }), newRecord(t0, { subject })];
    for (const s of [a!, b!]) await store.create(s);
    t.equal(await store.revokeSubject('ns-a', subject, a!.idHash, t0), 1, 'b revoked, a kept');
    t.equal(await store.revokeSubject('ns-a', subject, b!.idHash, t0), 1, 'a revoked; b was already');
    t.equal(await store.get(a!, t0), null);
    t.equal(await store.get(b!, t0), null, 'keeping a revoked id does not revive it');
    const rotated = await store.rotate(a!, randomBytes(32), t0);
    t.equal(rotated, null);
  });

  t.test('a session kept by a revocation, then rotated, lives on under its new id', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const [a, b] = [newRecord(t0, { subject }), newRecord(t0, { subject })];
    for (const s of [a!, b!]) await store.create(s);
    await store.get(a!, t0); // warm any cache
    t.equal(await store.revokeSubject('ns-a', subject, a!.idHash, t0), 1);
    const newId = randomBytes(32);
    t.ok(await store.rotate(a!, newId, at(t0, 1), 5), 'the kept session rotates');
    const moved = { namespace: 'ns-a', idHash: newId };
    t.ok(await store.get(moved, at(t0, 2)), 'its new id lives');
    t.ok(await store.get(a!, at(t0, 2)), 'and its old id answers in its grace');
    await drainRevocations(store, at(t0, 2));
    t.ok(await store.get(moved, at(t0, 2)), 'the worker leaves it alone');
    t.equal(await store.get(b!, at(t0, 2)), null);
    t.equal(await store.revokeSubject('ns-a', subject, undefined, at(t0, 3)), 1, 'a revocation without keep takes the new id');
    t.equal(await store.get(moved, at(t0, 3)), null);
    t.equal(await store.get(a!, at(t0, 3)), null, 'and ends the grace of the old one');
  });

  t.test('create with a per-subject cap revokes the least recently used', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const a = newRecord(t0, { subject, lastSeenAt: at(t0, 2) });
    const b = newRecord(t0, { subject, lastSeenAt: at(t0, 1) });
    t.same(await store.create(a, { maxPerSubject: 2 }), { evicted: 0 });
    t.same(await store.create(b, { maxPerSubject: 2 }), { evicted: 0 });
    await store.get(b, t0); // warm any cache
    const c = newRecord(t0, { subject });
    t.same(await store.create(c, { maxPerSubject: 2 }), { evicted: 1 });
    t.equal(await store.get(b, t0), null, 'b was used least recently: evicted');
    t.ok(await store.get(a, t0));
    t.ok(await store.get(c, t0));
    t.same(await store.create(newRecord(t0, { subject: null }), { maxPerSubject: 2 }), { evicted: 0 }, 'no subject, no cap');
  });

  t.test('concurrent creates under a cap never leave more than the cap alive', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const made = Array.from({ length: 6 }, () => newRecord(t0, { subject }));
    await Promise.all(made.map((s) => store.create(s, { maxPerSubject: 2 })));
    const live = await store.listBySubject('ns-a', subject, t0, 100);
    t.equal(live.length, 2);
  });

  t.test('rotation grace: the old id reads and touches the new session until the grace ends, and never writes', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0, { data: { v: 1 } });
    await store.create(s);
    await store.get(s, t0); // warm any cache
    const newHash = randomBytes(32);
    const rotated = await store.rotate(s, newHash, t0, 30);
    t.ok(rotated);
    const viaOld = await store.get(s, at(t0, 10));
    t.ok(viaOld?.idHash.equals(newHash), 'the old id answers with the new session');
    const touched = await store.touch(s, at(t0, 20));
    t.ok(touched?.idHash.equals(newHash), 'and touches it');
    t.same(await store.replaceData(s, { v: 2 }, { any: true }, at(t0, 10)), { kind: 'not_found' }, 'no writes through the old id');
    t.same(await store.patchData(s, { v: 2 }, undefined, 65536, at(t0, 10)), { kind: 'not_found' });
    t.equal(await store.rotate(s, randomBytes(32), at(t0, 10)), null, 'no second rotation from the old id');
    t.same((await store.get({ namespace: s.namespace, idHash: newHash }, at(t0, 10)))?.data, { v: 1 }, 'the new session is untouched');
    t.equal(await store.get(s, at(t0, 30)), null, 'after the grace the old id is dead');
    t.equal(await store.touch(s, at(t0, 31)), null);
    t.ok(await store.get({ namespace: s.namespace, idHash: newHash }, at(t0, 31)), 'the new one lives on');
  });

  t.test('destroying an old id during its grace ends the grace and spares the new session', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0);
    await store.create(s);
    const newHash = randomBytes(32);
    await store.rotate(s, newHash, t0, 60);
    t.ok(await store.get(s, at(t0, 1)));
    await store.destroy(s, at(t0, 1));
    t.equal(await store.get(s, at(t0, 2)), null, 'the old id is dead at once');
    t.ok(await store.get({ namespace: s.namespace, idHash: newHash }, at(t0, 2)), 'the new session lives');
  });

  t.test('createIfAbsent creates under a chosen id, and refuses one in use without changing it', async (t) => {
    const { store } = await make(t);
    const s = newRecord(t0, { data: { first: true } });
    t.same(await store.createIfAbsent(s), { evicted: 0 });
    t.same((await store.get(s, t0))?.data, { first: true });
    await t.rejects(store.createIfAbsent({ ...s, data: { second: true } }), TAKEN);
    t.same((await store.get(s, t0))?.data, { first: true }, 'the session is as it was');
    const expired = newRecord(t0, { idleExpiresAt: at(t0, 5), absoluteExpiresAt: at(t0, 10) });
    await store.create(expired);
    await t.rejects(store.createIfAbsent({ ...expired, createdAt: at(t0, 6) }), TAKEN, 'idle-expired: its row still holds the id');
    const again = newRecord(at(t0, 10), { idHash: expired.idHash, data: { again: true } });
    t.same(await store.createIfAbsent(again), { evicted: 0 }, 'past its absolute expiry the id is free');
    t.same((await store.get(again, at(t0, 11)))?.data, { again: true });
  });

  t.test('a destroyed, revoked, evicted or rotated-away id is refused until its absolute expiry, swept or not', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const life = { idleExpiresAt: at(t0, 600), absoluteExpiresAt: at(t0, 600) };
    const [destroyed, byId, bySubject, kept, evicted, rotated] = Array.from({ length: 6 }, () => newRecord(t0, { ...life, subject }));
    const others = newRecord(t0, { ...life, subject: `${subject}-b` });
    for (const s of [destroyed!, byId!, rotated!, others]) await store.create(s);
    await store.get(destroyed!, t0); // warm any cache
    await store.destroy(destroyed!, at(t0, 1));
    await store.destroy(byId!, at(t0, 1));
    await store.rotate(rotated!, randomBytes(32), at(t0, 1));
    for (const s of [bySubject!, kept!]) await store.create({ ...s, subject: `${subject}-c` });
    t.equal(await store.revokeSubject('ns-a', `${subject}-c`, kept!.idHash, at(t0, 1)), 1);
    await drainRevocations(store, at(t0, 1));
    await store.create({ ...evicted!, subject: others.subject }, { maxPerSubject: 1 }); // evicts `others`
    const refused: Array<[string, SessionKey]> = [['destroyed', destroyed!], ['revoked by id', byId!], ['revoked with its subject', bySubject!], ['evicted by the cap', others], ['rotated away', rotated!]];
    const attempt = (key: SessionKey, seconds: number) => store.createIfAbsent(newRecord(at(t0, seconds), { idHash: key.idHash, absoluteExpiresAt: at(t0, seconds + 600) }));
    for (const [what, key] of refused) await t.rejects(attempt(key, 2), TAKEN, `${what}: refused while its row is there`);
    // The sweeper removes revoked rows (a grace past the revocation); the ids stay refused.
    t.ok((await store.sweepBatch(at(t0, 100), 1000)) >= refused.length, 'the revoked rows were swept');
    for (const [what, key] of refused) {
      await t.rejects(attempt(key, 300), TAKEN, `${what}: refused after the sweep`);
      t.equal(await store.get(key, at(t0, 300)), null, `${what}: and still gone`);
    }
    t.ok(await store.get(kept!, at(t0, 300)), 'the kept session lives');
    t.equal(await store.sweepBatch(at(t0, 599), 1000), 0, 'nothing is forgotten before the absolute expiry');
    t.equal(await store.sweepBatch(at(t0, 601), 1000), refused.length + 3, 'then the memories go (and the three sessions that lived to their end)');
    for (const [what, key] of refused) {
      t.same(await attempt(key, 601), { evicted: 0 }, `${what}: free once its session could no longer be alive`);
      t.ok(await store.get(key, at(t0, 602)), `${what}: the new session reads`);
    }
  });
  t.test('an id revoked by its subject\'s mark stays refused when the sweeper deletes the row before the revocation worker reached it', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const s = newRecord(t0, { subject, idleExpiresAt: at(t0, 60), absoluteExpiresAt: at(t0, 3600) });
    await store.createIfAbsent(s);
    t.equal(await store.revokeSubject('ns-a', subject, undefined, at(t0, 1)), 1, 'logged out everywhere');
    // No worker ran: the row is still active, revoked by the mark alone, until it idle-expires
    // and the sweeper deletes it.
    t.ok((await store.sweepBatch(at(t0, 120), 1000)) >= 1, 'the row was swept');
    const attempt = (seconds: number) => store.createIfAbsent(newRecord(at(t0, seconds), { subject: null, idHash: s.idHash, absoluteExpiresAt: at(t0, seconds + 600) }));
    await t.rejects(attempt(200), TAKEN, 'the logged-out token cannot be created again before its absolute expiry');
    t.equal(await store.get(s, at(t0, 200)), null, 'and it does not read');
    t.equal(await drainRevocations(store, at(t0, 200)), 0, 'the worker finds nothing left to revoke');
    await t.rejects(attempt(3599), TAKEN, 'still refused just before the absolute expiry');
    t.ok((await store.sweepBatch(at(t0, 3601), 1000)) >= 1, 'the memory goes at the absolute expiry');
    t.same(await attempt(3601), { evicted: 0 }, 'then the id is free, as for any session past its absolute expiry');
  });

  t.test('a revocation mark goes once no row it covers is left, and a later revocation still covers every session', async (t) => {
    const { store } = await make(t);
    const subject = `user-${randomBytes(4).toString('hex')}`;
    const life = { subject, idleExpiresAt: at(t0, 60), absoluteExpiresAt: at(t0, 3600) };
    const [a, kept] = [newRecord(t0, life), newRecord(t0, life)];
    for (const s of [a!, kept!]) await store.create(s);
    t.equal(await store.revokeSubject('ns-a', subject, kept!.idHash, at(t0, 1)), 1);
    // Created after the mark: its generation is the mark's.
    const later = newRecord(at(t0, 2), { subject, idleExpiresAt: at(t0, 3000), absoluteExpiresAt: at(t0, 3600) });
    await store.create(later);
    t.equal(await store.sweepBatch(at(t0, 30), 1000), 0, 'pending: the mark stays, the covered row is not yet revoked');
    await drainRevocations(store, at(t0, 2));
    t.equal(await store.sweepBatch(at(t0, 1), 1000), 0, 'a covered row is left: the mark stays');
    t.equal(await store.sweepBatch(at(t0, 30), 1000), 2, 'the revoked row, then the mark');
    t.equal(await store.get(a!, at(t0, 30)), null, 'the revoked session stays revoked');
    t.ok(await store.get(kept!, at(t0, 30)), 'the kept one lives');
    t.ok(await store.get(later, at(t0, 30)), 'so does the later one');
    // A new mark must cover the later session although the old mark, whose generation it
    // carries, is gone.
    t.equal(await store.revokeSubject('ns-a', subject, undefined, at(t0, 40)), 2, 'the next revocation counts both');
    t.equal(await store.get(later, at(t0, 41)), null, 'the later session is revoked');
    t.equal(await store.get(kept!, at(t0, 41)), null, 'and the once-kept one');
    t.equal(await drainRevocations(store, at(t0, 41)), 2);
  });
}
