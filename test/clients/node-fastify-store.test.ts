import t, { type Test } from 'tap';
import Fastify from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifySession from '@fastify/session';
import { createClient, SessiondStore } from '../../clients/node/dist/index.js';
import { callsBetween, clientService, serviceCalls, type ClientService } from './sessiond-service.js';

/**
 * A stock Fastify app with @fastify/cookie and @fastify/session (defaults: rolling, saving
 * uninitialised sessions) on sessiond through the same SessiondStore, over real HTTP.
 */

const TOUCH = 'POST /v1/sessions/current/touch';
const PUT_DATA = 'PUT /v1/sessions/current/data';
const CREATE = 'PUT /v1/sessions/current';

type Bag = Record<string, unknown> & { regenerate(): Promise<void>; destroy(): Promise<void>; sessionId: string };

async function fastifyApp(t: Test, svc: ClientService) {
  const store = new SessiondStore({ url: svc.url, apiKey: svc.apiKey });
  t.teardown(() => store.close());
  let release: (() => void) | undefined;
  let arrived: (() => void) | undefined;
  const app = Fastify();
  await app.register(fastifyCookie);
  await app.register(fastifySession, { secret: 'a test secret that is at least 32 characters', store, cookie: { secure: false, maxAge: 20 * 60_000 } });
  const s = (req: { session: unknown }) => req.session as Bag;
  app.get('/me', async (req) => ({ views: s(req).views ?? 0, user: s(req).user ?? null }));
  app.post('/count', async (req) => {
    s(req).views = Number(s(req).views ?? 0) + 1;
    return { views: s(req).views };
  });
  app.post('/login', async (req) => {
    await s(req).regenerate();
    s(req).user = 'user-bob';
    return { ok: true };
  });
  app.post('/logout', async (req) => {
    await s(req).destroy();
    return { ok: true };
  });
  app.post('/slow-note', async (req) => {
    await new Promise<void>((resolve) => {
      release = resolve;
      arrived?.();
    });
    s(req).note = 'written after the logout';
    return { ok: true };
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const address = app.server.address() as { port: number };
  return {
    base: `http://127.0.0.1:${address.port}`,
    arrival: () => new Promise<void>((resolve) => (arrived = resolve)),
    release: () => release!(),
  };
}

async function call(base: string, method: string, path: string, cookie?: string) {
  const res = await fetch(`${base}${path}`, { method, headers: cookie === undefined ? {} : { cookie } });
  const set = res.headers.get('set-cookie');
  return { status: res.status, body: await res.json(), cookie: set === null ? cookie : set.split(';')[0] };
}
const sidOf = (cookie: string) => {
  const v = decodeURIComponent(cookie.split('=')[1]!);
  return v.slice(0, v.lastIndexOf('.'));
};

t.test('@fastify/session on sessiond', async (t) => {
  const svc = await clientService(t);
  const client = createClient({ url: svc.url, apiKey: svc.apiKey });
  t.teardown(() => client.close());
  const app = await fastifyApp(t, svc);

  t.test('sessions are created under its ids; a rolling read costs one call; a change one more', async (t) => {
    const first = await call(app.base, 'POST', '/count');
    t.same(first.body, { views: 1 });
    const sid = sidOf(first.cookie!);
    t.match(sid, /^[A-Za-z0-9_-]{32}$/);
    const stored = await client.read(sid);
    t.equal(stored?.data.views, 1);
    const idle = (Date.parse(stored!.expiresAt) - Date.parse(stored!.lastSeenAt)) / 1000;
    t.ok(Math.abs(idle - 1200) <= 1, `idle timeout ${idle} s = cookie maxAge`);

    const before = await serviceCalls(svc.url);
    for (let i = 0; i < 5; i++) t.equal((await call(app.base, 'GET', '/me', first.cookie)).body.views, 1);
    t.same(callsBetween(before, await serviceCalls(svc.url)), { [TOUCH]: 5 }, 'rolling saves of unchanged data cost nothing');
    const changing = await serviceCalls(svc.url);
    t.same((await call(app.base, 'POST', '/count', first.cookie)).body, { views: 2 });
    t.same(callsBetween(changing, await serviceCalls(svc.url)), { [TOUCH]: 1, [PUT_DATA]: 1 });
    t.equal((await client.read(sid))?.data.views, 2);
  });

  t.test('regenerate (login) moves to a new id; destroy (logout) ends it', async (t) => {
    const anon = await call(app.base, 'POST', '/count');
    const before = await serviceCalls(svc.url);
    const login = await call(app.base, 'POST', '/login', anon.cookie);
    t.not(sidOf(login.cookie!), sidOf(anon.cookie!));
    t.equal(callsBetween(before, await serviceCalls(svc.url))[CREATE], 1, 'the new id was created');
    t.equal(await client.read(sidOf(anon.cookie!)), null, 'the old id is destroyed');
    t.same((await call(app.base, 'GET', '/me', login.cookie)).body, { views: 0, user: 'user-bob' });
    await call(app.base, 'POST', '/logout', login.cookie);
    t.equal(await client.read(sidOf(login.cookie!)), null);
    t.equal((await call(app.base, 'GET', '/me', login.cookie)).body.user, null);
  });

  t.test('a session destroyed while another request has it loaded is never re-created', async (t) => {
    const first = await call(app.base, 'POST', '/count');
    const sid = sidOf(first.cookie!);
    const arrival = app.arrival();
    const slow = call(app.base, 'POST', '/slow-note', first.cookie);
    await arrival;
    await call(app.base, 'POST', '/logout', first.cookie);
    app.release();
    t.equal((await slow).status, 200);
    t.equal(await client.read(sid), null, 'the session stays destroyed');
  });
});
