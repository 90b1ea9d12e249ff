import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { auth, KEY_A, KEY_B, testApp } from '../helpers/app.js';

const JSON_CT = { 'content-type': 'application/json' };

/**
 * Subjects, the per-subject cap, rotation grace and the guessing signal over HTTP. Run on
 * MariaDB alone and with Redis in front (`env` carries REDIS_URL).
 */
export async function subjectsHttpSuite(t: Test, env: Record<string, string>): Promise<FastifyInstance> {
  let offsetMs = 0;
  const clock = () => new Date(Date.now() + offsetMs);
  const { app, logs } = await testApp(t, {}, {
    clock,
    env: { GUESSING_WARN_THRESHOLD: '5', GUESSING_WINDOW_SECONDS: '60', ...env },
    namespaces: { 'tenant-b': { maxSessionsPerSubject: 2 } },
  });
  // A second app on the same stores plays another replica.
  const create = async (body: Record<string, unknown>, key = KEY_A) => {
    const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...auth(key), ...JSON_CT }, payload: JSON.stringify(body) });
    t.equal(res.statusCode, 201);
    return res.json() as { token: string; session: { id: string } };
  };
  const read = (token: string, key = KEY_A) =>
    app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(key), 'session-token': token } });
  const subject = (name: string) => `/v1/subjects/${encodeURIComponent(name)}/sessions`;

  t.test("a subject's sessions are listed without tokens, newest activity first, in pages", async (t) => {
    const made = [];
    for (let i = 0; i < 3; i++) {
      offsetMs = i * 1000;
      made.push(await create({ subject: 'alice@example.com', metadata: { label: `device ${i}`, ip: '203.0.113.1' } }));
    }
    offsetMs = 0;
    await create({ subject: 'bob' });
    const res = await app.inject({ method: 'GET', url: subject('alice@example.com'), headers: auth() });
    t.equal(res.statusCode, 200);
    t.equal(res.headers['cache-control'], 'no-store');
    const body = res.json();
    t.same(body.sessions.map((s: { id: string }) => s.id), made.map((m) => m.session.id).reverse());
    t.equal(body.nextCursor, null);
    t.same(Object.keys(body.sessions[0]).sort(), ['absoluteExpiresAt', 'createdAt', 'expiresAt', 'id', 'lastSeenAt', 'metadata']);
    t.equal(body.sessions[0].metadata.label, 'device 2');
    for (const m of made) t.notOk(res.body.includes(m.token), 'no token in the list');

    const page1 = (await app.inject({ method: 'GET', url: `${subject('alice@example.com')}?limit=2`, headers: auth() })).json();
    t.equal(page1.sessions.length, 2);
    t.type(page1.nextCursor, 'string');
    const page2 = (await app.inject({ method: 'GET', url: `${subject('alice@example.com')}?limit=2&cursor=${page1.nextCursor}`, headers: auth() })).json();
    t.same(page2.sessions.map((s: { id: string }) => s.id), [made[0]!.session.id]);
    t.equal(page2.nextCursor, null);

    const bad = await app.inject({ method: 'GET', url: `${subject('alice@example.com')}?cursor=nonsense`, headers: auth() });
    t.equal(bad.statusCode, 400);
    t.equal(bad.json().code, 'invalid_request');
    t.equal((await app.inject({ method: 'GET', url: `${subject('alice@example.com')}?limit=0`, headers: auth() })).statusCode, 400);
    const otherTenant = (await app.inject({ method: 'GET', url: subject('alice@example.com'), headers: auth(KEY_B) })).json();
    t.same(otherTenant.sessions, [], "another tenant sees none of them");
    t.equal((await app.inject({ method: 'GET', url: subject('alice@example.com') })).statusCode, 401);
  });

  t.test('a forged cursor is a 400 invalid_request, never a 500', async (t) => {
    await create({ subject: 'cursor-forger' });
    const list = (cursor: string) => app.inject({ method: 'GET', url: `${subject('cursor-forger')}?cursor=${encodeURIComponent(cursor)}`, headers: auth() });
    const forge = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const id = randomBytes(32).toString('base64url');
    for (const ms of [8.64e15, 8.64e15 + 1, Date.UTC(10000, 0, 1), Number.MAX_SAFE_INTEGER, -1, -8.64e15, 1.5]) {
      const res = await list(forge([ms, id]));
      t.equal(res.statusCode, 400, `timestamp ${ms}`);
      t.equal(res.json().code, 'invalid_request');
    }
    t.equal((await list(forge([0, id]))).statusCode, 200, 'a well-formed position is a page, even one no answer gave');
    t.equal((await list(forge([Date.UTC(9999, 11, 31, 23, 59, 59, 999), id]))).statusCode, 200, 'the largest DATETIME too');
    // Anything else a client can put there: any JSON, any text.
    const forged = fc.oneof(
      fc.tuple(fc.oneof(fc.integer({ min: -8.64e15, max: 8.64e15 }), fc.double(), fc.jsonValue()), fc.oneof(fc.constant(id), fc.string(), fc.jsonValue())).map(forge),
      fc.jsonValue().map(forge),
      fc.string({ maxLength: 200 }),
    );
    await fc.assert(
      fc.asyncProperty(forged, async (cursor) => {
        const res = await list(cursor);
        return res.statusCode === 200 || (res.statusCode === 400 && res.json().code === 'invalid_request');
      }),
      { numRuns: 150 },
    );
  });

  t.test('a subject of the full 255 characters can be listed and revoked', async (t) => {
    const long = 'ü'.repeat(255);
    await create({ subject: long });
    const listed = await app.inject({ method: 'GET', url: subject(long), headers: auth() });
    t.equal(listed.statusCode, 200);
    t.equal(listed.json().sessions.length, 1);
    t.same((await app.inject({ method: 'DELETE', url: subject(long), headers: auth() })).json(), { revoked: 1 });
  });

  t.test('subjects that differ only by trailing spaces are different subjects', async (t) => {
    const plain = await create({ subject: 'erin' });
    const padded = await create({ subject: 'erin  ' });
    const listed = (await app.inject({ method: 'GET', url: subject('erin'), headers: auth() })).json() as { sessions: { id: string }[] };
    t.same(listed.sessions.map((s) => s.id), [plain.session.id]);
    t.same((await app.inject({ method: 'DELETE', url: subject('erin  '), headers: auth() })).json(), { revoked: 1 });
    t.equal((await read(plain.token)).statusCode, 200, "revoking 'erin  ' leaves 'erin' logged in");
    t.equal((await read(padded.token)).statusCode, 404);
  });

  t.test('log out everywhere, keeping one: exactly that one stays readable', async (t) => {
    const made = [];
    for (let i = 0; i < 3; i++) made.push(await create({ subject: 'carol' }));
    for (const m of made) t.equal((await read(m.token)).statusCode, 200, 'warm');
    const keep = made[1]!;
    const res = await app.inject({ method: 'DELETE', url: `${subject('carol')}?keep=${keep.session.id}`, headers: auth() });
    t.equal(res.statusCode, 200);
    t.same(res.json(), { revoked: 2 });
    t.equal((await read(keep.token)).statusCode, 200, 'the kept session lives');
    for (const m of [made[0]!, made[2]!]) t.equal((await read(m.token)).statusCode, 404, 'the others are 404 at once');
    const listed = (await app.inject({ method: 'GET', url: subject('carol'), headers: auth() })).json();
    t.same(listed.sessions.map((s: { id: string }) => s.id), [keep.session.id]);
    t.same((await app.inject({ method: 'DELETE', url: subject('carol'), headers: auth() })).json(), { revoked: 1 });
    t.same((await app.inject({ method: 'DELETE', url: subject('nobody'), headers: auth() })).json(), { revoked: 0 });
    t.equal((await app.inject({ method: 'DELETE', url: `${subject('carol')}?keep=x`, headers: auth() })).statusCode, 400);
  });

  t.test('a namespace cap of 2 evicts the least recently used on the third create', async (t) => {
    offsetMs = 0;
    const first = await create({ subject: 'dave' }, KEY_B);
    offsetMs = 61_000; // past the touch write-behind threshold, so the touch reaches MariaDB
    const second = await create({ subject: 'dave' }, KEY_B);
    offsetMs = 122_000;
    t.equal((await app.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: { ...auth(KEY_B), 'session-token': first.token } })).statusCode, 200);
    await new Promise((r) => setTimeout(r, 100)); // a cached touch is written behind
    const third = await create({ subject: 'dave' }, KEY_B);
    t.equal((await read(second.token, KEY_B)).statusCode, 404, 'the least recently used one was evicted');
    t.equal((await read(first.token, KEY_B)).statusCode, 200);
    t.equal((await read(third.token, KEY_B)).statusCode, 200);
    for (let i = 0; i < 3; i++) await create({ subject: 'dave' }); // tenant-a has no cap
    t.equal((await app.inject({ method: 'GET', url: subject('dave'), headers: auth() })).json().sessions.length, 3);
    offsetMs = 0;
  });

  t.test('rotation grace: the old token reads then 404s, and never accepts a write', async (t) => {
    const old = await create({ data: { role: 'guest' } });
    t.equal((await read(old.token)).statusCode, 200, 'warm');
    const res = await app.inject({
      method: 'POST',
      url: '/v1/sessions/current/rotate',
      headers: { ...auth(), 'session-token': old.token, ...JSON_CT },
      payload: JSON.stringify({ graceSeconds: 10 }),
    });
    t.equal(res.statusCode, 201);
    const fresh = res.json();
    const viaOld = await read(old.token);
    t.equal(viaOld.statusCode, 200, 'the old token still reads during the grace');
    t.equal(viaOld.json().id, fresh.session.id, '…answering with the new session');
    t.equal(viaOld.headers['session-rotated'], 'true', '…and saying it came through a rotated-away token');
    const touch = await app.inject({ method: 'POST', url: '/v1/sessions/current/touch', headers: { ...auth(), 'session-token': old.token } });
    t.equal(touch.statusCode, 200);
    t.equal(touch.headers['session-rotated'], 'true', 'a touch through the old token says so too');
    const viaNew = await read(fresh.token);
    t.equal(viaNew.headers['session-rotated'], undefined, 'the new token reads without the mark');
    const put = await app.inject({
      method: 'PUT',
      url: '/v1/sessions/current/data',
      headers: { ...auth(), 'session-token': old.token, ...JSON_CT, 'if-match': '*' },
      payload: '{"role":"admin"}',
    });
    t.equal(put.statusCode, 404, 'no write through the old token');
    const patch = await app.inject({
      method: 'PATCH',
      url: '/v1/sessions/current/data',
      headers: { ...auth(), 'session-token': old.token, 'content-type': 'application/merge-patch+json' },
      payload: '{"role":"admin"}',
    });
    t.equal(patch.statusCode, 404);
    t.equal((await app.inject({ method: 'POST', url: '/v1/sessions/current/rotate', headers: { ...auth(), 'session-token': old.token } })).statusCode, 404);
    t.same((await read(fresh.token)).json().data, { role: 'guest' }, 'the new session was not written');
    offsetMs = 11_000;
    t.equal((await read(old.token)).statusCode, 404, 'after the grace the old token is 404');
    t.equal((await read(fresh.token)).statusCode, 200);
    offsetMs = 0;
    for (const graceSeconds of [61, -1, 1.5]) {
      const r = await app.inject({
        method: 'POST',
        url: '/v1/sessions/current/rotate',
        headers: { ...auth(), 'session-token': fresh.token, ...JSON_CT },
        payload: JSON.stringify({ graceSeconds }),
      });
      t.equal(r.statusCode, 400, `graceSeconds ${graceSeconds} is refused`);
    }
  });

  t.test('failed token lookups are counted per client and warned about past the threshold, by client name', async (t) => {
    const guess = 'G'.repeat(43);
    for (let i = 0; i < 6; i++) await read(guess, KEY_B);
    t.ok((app.guessingMonitor.failedLookups.get('app-b') ?? 0) >= 6);
    const warnings = logs.filter((l) => l.includes('token guessing') && l.includes('"client":"app-b"'));
    t.equal(warnings.length, 1, 'one warning per window');
    t.match(warnings[0], /"failedLookups":5/);
    t.notOk(logs.join('').includes(guess), 'never the token');
  });

  return app;
}
