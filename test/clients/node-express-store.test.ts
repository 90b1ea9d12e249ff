import t, { type Test } from 'tap';
import type { AddressInfo } from 'node:net';
import express from 'express';
import session from 'express-session';
import passport from 'passport';
import { Strategy as LocalStrategy } from 'passport-local';
import { createClient, SessiondStore, type SessiondClient } from '../../clients/node/dist/index.js';
import { query } from '../helpers/mariadb.js';
import { appToken, callsBetween, clientService, rejection, serviceCalls, type ClientService } from './sessiond-service.js';

/**
 * A stock Express 5 app with express-session and passport, on sessiond through SessiondStore
 * (the store line is the only sessiond-specific line), driven over real HTTP. What the store
 * promises: one sessiond call for a request that only reads its session, passport's login
 * (regenerate + save) and logout, and never a re-created session after a concurrent destroy.
 */

const USERS = new Map([['alice', { id: 'user-alice', password: 'wonderland' }]]);
const TOUCH = 'POST /v1/sessions/current/touch';
const PUT_DATA = 'PUT /v1/sessions/current/data';

interface AppOptions {
  resave?: boolean;
  rolling?: boolean;
  maxAge?: number;
  keepSessionInfo?: boolean;
}

/** Gates that hold a request after it loaded its session, until the test opens them. */
class Gates {
  readonly #open = new Map<string, () => void>();
  readonly #arrived = new Map<string, () => void>();
  readonly #arrivals = new Map<string, Promise<void>>();

  arrival(name: string): Promise<void> {
    let p = this.#arrivals.get(name);
    if (p === undefined) {
      p = new Promise<void>((resolve) => this.#arrived.set(name, resolve));
      this.#arrivals.set(name, p);
    }
    return p;
  }

  wait(name: string): Promise<void> {
    void this.arrival(name);
    this.#arrived.get(name)!();
    return new Promise<void>((resolve) => this.#open.set(name, resolve));
  }

  open(name: string): void {
    this.#open.get(name)!();
  }
}

async function expressApp(t: Test, svc: ClientService, options: AppOptions = {}) {
  const store = new SessiondStore({ url: svc.url, apiKey: svc.apiKey });
  t.teardown(() => store.close());
  const gates = new Gates();
  const auth = new passport.Passport();
  auth.use(
    new LocalStrategy((username, password, done) => {
      const user = USERS.get(username);
      done(null, user !== undefined && user.password === password ? { id: user.id } : false);
    }),
  );
  auth.serializeUser((user, done) => done(null, (user as { id: string }).id));
  auth.deserializeUser((id: string, done) => done(null, { id }));

  const app = express();
  app.use(express.json());
  app.use(
    session({
      store,
      secret: 'a test secret that is long enough',
      resave: options.resave ?? false,
      rolling: options.rolling ?? false,
      saveUninitialized: false,
      cookie: { maxAge: options.maxAge ?? 30 * 60_000 },
    }),
  );
  app.use(auth.session());
  app.post('/login', auth.authenticate('local', { keepSessionInfo: options.keepSessionInfo ?? false }), (req, res) => {
    res.json({ user: req.user });
  });
  app.post('/logout', (req, res, next) => {
    req.logout((err) => (err ? next(err) : res.json({ ok: true })));
  });
  app.get('/me', (req, res) => {
    res.json({ user: req.user ?? null, views: (req.session as { views?: number }).views ?? 0, maxAge: req.session.cookie.maxAge });
  });
  app.post('/count', (req, res) => {
    const s = req.session as { views?: number };
    s.views = (s.views ?? 0) + 1;
    res.json({ views: s.views });
  });
  app.post('/set/:key', async (req, res) => {
    if (typeof req.query.gate === 'string') await gates.wait(req.query.gate);
    (req.session as unknown as Record<string, unknown>)[req.params.key] = req.body.value;
    res.json({ ok: true });
  });
  app.get('/read-slowly', async (req, res) => {
    await gates.wait(String(req.query.gate));
    res.json({ views: (req.session as { views?: number }).views ?? 0 });
  });
  app.post('/destroy', (req, res, next) => {
    req.session.destroy((err) => (err ? next(err) : res.json({ ok: true })));
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, store, gates };
}

/** A browser with one cookie (connect.sid); `clone()` is a second tab sharing it. */
class Browser {
  cookie: string | undefined;
  constructor(readonly base: string) {}

  async request(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = {};
    if (this.cookie !== undefined) headers.cookie = this.cookie;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const set = res.headers.get('set-cookie');
    if (set !== null) this.cookie = set.split(';')[0];
    const text = await res.text();
    return { status: res.status, body: res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text };
  }

  /** The session id (= sessiond token) in the cookie. */
  get sid(): string {
    const value = decodeURIComponent(this.cookie!.split('=')[1]!);
    return value.slice(2, value.lastIndexOf('.'));
  }

  clone(): Browser {
    const b = new Browser(this.base);
    b.cookie = this.cookie;
    return b;
  }
}

async function rowState(svc: ClientService, sid: string): Promise<string | undefined> {
  const { createHash } = await import('node:crypto');
  const rows = await query<{ state: string }>(svc.databaseUrl, 'SELECT state FROM sessions WHERE namespace = ? AND id_hash = ?', [
    svc.namespace,
    createHash('sha256').update(sid).digest(),
  ]);
  return rows[0]?.state;
}

t.test('express-session + passport on sessiond', async (t) => {
  const svc = await clientService(t);
  const client: SessiondClient = createClient({ url: svc.url, apiKey: svc.apiKey });
  t.teardown(() => client.close());
  const { base } = await expressApp(t, svc);

  t.test('a new session is created under the id express-session made, with the cookie maxAge as idle timeout', async (t) => {
    const b = new Browser(base);
    t.same((await b.request('POST', '/count')).body, { views: 1 });
    t.match(b.sid, /^[A-Za-z0-9_-]{32}$/);
    const s = await client.read(b.sid);
    t.ok(s, 'sessiond holds the session under the cookie id');
    t.equal(s!.data.views, 1);
    t.equal((s!.data.cookie as { originalMaxAge: number }).originalMaxAge, 30 * 60_000, 'the cookie is part of the data');
    const idle = (Date.parse(s!.expiresAt) - Date.parse(s!.lastSeenAt)) / 1000;
    t.ok(Math.abs(idle - 1800) <= 1, `idle timeout ${idle} s = cookie maxAge`);
    t.same((await b.request('POST', '/count')).body, { views: 2 });
    t.equal((await client.read(b.sid))!.data.views, 2);
  });

  t.test('a request that only reads its session costs one sessiond call', async (t) => {
    const b = new Browser(base);
    await b.request('POST', '/count');
    const before = await serviceCalls(svc.url);
    for (let i = 0; i < 10; i++) t.equal((await b.request('GET', '/me')).body.views, 1);
    t.same(callsBetween(before, await serviceCalls(svc.url)), { [TOUCH]: 10 }, 'ten reads: ten touches, nothing else');
    const modifying = await serviceCalls(svc.url);
    await b.request('POST', '/count');
    t.same(callsBetween(modifying, await serviceCalls(svc.url)), { [TOUCH]: 1, [PUT_DATA]: 1 }, 'a change: the touch and one PUT');
  });

  t.test('passport login regenerates the session (fixation) and saves the user as its subject; logout destroys it', async (t) => {
    const b = new Browser(base);
    await b.request('POST', '/count');
    const anonymous = b.sid;
    const login = await b.request('POST', '/login', { username: 'alice', password: 'wonderland' });
    t.same(login.body, { user: { id: 'user-alice' } });
    t.not(b.sid, anonymous, 'login gave the browser a new session id');
    t.equal(await client.read(anonymous), null, 'the pre-login session is destroyed');
    const s = await client.read(b.sid);
    t.same(s!.data.passport, { user: 'user-alice' });
    t.equal(s!.subject, 'user-alice', "passport's user is the subject");
    t.same((await client.listSubjectSessions('user-alice')).sessions.map((x) => x.id), [s!.id], 'listed as one of her sessions');
    t.same((await b.request('GET', '/me')).body.user, { id: 'user-alice' }, 'the next request is logged in');

    t.equal((await b.request('POST', '/login', { username: 'alice', password: 'wrong' })).status, 401);
    const loggedIn = b.sid;
    await b.request('POST', '/logout');
    t.equal(await client.read(loggedIn), null, 'logout destroyed the session in sessiond');
    t.equal(await rowState(svc, loggedIn).then((st) => st === undefined || st !== 'active'), true, 'not active in MariaDB');
    t.equal((await b.request('GET', '/me')).body.user, null, 'the browser is logged out');
    const replay = new Browser(base);
    replay.cookie = `connect.sid=${encodeURIComponent(`s:${loggedIn}`)}`; // even a stolen old id
    t.equal((await replay.request('GET', '/me')).body.user, null);
  });

  t.test('a session destroyed while another request has it loaded is never re-created by that request (connect-redis #328)', async (t) => {
    const { base: gated, gates } = await expressApp(t, svc);
    const b = new Browser(gated);
    await b.request('POST', '/count');
    const sid = b.sid;
    // The slow request loads the session, then waits; the destroy commits; then it changes and saves.
    const slow = b.clone().request('POST', '/set/note?gate=g1', { value: 'written after the logout' });
    await gates.arrival('g1');
    t.same((await b.clone().request('POST', '/destroy')).body, { ok: true });
    gates.open('g1');
    t.equal((await slow).status, 200, 'the slow request ends normally: its save is dropped');
    t.equal(await client.read(sid), null, 'the session stays destroyed');
    t.not(await rowState(svc, sid), 'active', 'no active row came back');

    // The same with a read-only request (express-session then touches) and with resave (it saves).
    for (const resave of [false, true]) {
      const { base: app, gates: g } = await expressApp(t, svc, { resave });
      const c = new Browser(app);
      await c.request('POST', '/count');
      const id = c.sid;
      const reader = c.clone().request('GET', '/read-slowly?gate=r');
      await g.arrival('r');
      await c.clone().request('POST', '/destroy');
      g.open('r');
      t.equal((await reader).status, 200);
      t.equal(await client.read(id), null, `resave ${resave}: the session stays destroyed`);
      t.not(await rowState(svc, id), 'active');
    }
  });

  t.test('two requests that change one session concurrently both keep their change', async (t) => {
    const { base: app, gates } = await expressApp(t, svc);
    const b = new Browser(app);
    await b.request('POST', '/count');
    const first = b.clone().request('POST', '/set/cart?gate=a', { value: ['sku-1'] });
    const second = b.clone().request('POST', '/set/theme?gate=b', { value: 'dark' });
    await Promise.all([gates.arrival('a'), gates.arrival('b')]);
    gates.open('a');
    await first;
    gates.open('b');
    await second; // loaded before the first saved: its PUT is a 412, then a merge patch
    const data = (await client.read(b.sid))!.data;
    t.same({ views: data.views, cart: data.cart, theme: data.theme }, { views: 1, cart: ['sku-1'], theme: 'dark' });
  });

  t.test('resave: true costs no write for an unchanged session', async (t) => {
    const { base: app } = await expressApp(t, svc, { resave: true });
    const b = new Browser(app);
    await b.request('POST', '/count');
    const before = await serviceCalls(svc.url);
    for (let i = 0; i < 5; i++) await b.request('GET', '/me');
    t.same(callsBetween(before, await serviceCalls(svc.url)), { [TOUCH]: 5 });
    t.equal((await client.read(b.sid))!.version, 1, 'no version was spent on resaves');
  });

  t.test("passport's keepSessionInfo carries the data into the new session, created under the new id", async (t) => {
    const { base: app } = await expressApp(t, svc, { keepSessionInfo: true });
    const b = new Browser(app);
    await b.request('POST', '/count');
    const anonymous = b.sid;
    await b.request('POST', '/login', { username: 'alice', password: 'wonderland' });
    t.not(b.sid, anonymous);
    t.equal(await client.read(anonymous), null);
    const s = await client.read(b.sid);
    t.equal(s!.data.views, 1, 'the pre-login data came along');
    t.equal(s!.version, 1, 'created, not updated');
  });

  t.test('a session that expired in sessiond is a new session to express-session', async (t) => {
    const { base: app } = await expressApp(t, svc, { maxAge: 1000 });
    const b = new Browser(app);
    await b.request('POST', '/count');
    const id = b.sid;
    t.equal((await b.request('GET', '/me')).body.views, 1);
    await new Promise((resolve) => setTimeout(resolve, 2100));
    t.equal((await b.request('GET', '/me')).body.views, 0, 'idle for longer than maxAge: gone');
    t.equal(await client.read(id), null);
  });

  t.test('the store never overwrites a session under an id it did not load', async (t) => {
    const store = new SessiondStore({ client });
    const sid = appToken();
    await client.createWithToken(sid, { data: { owner: 'first', cookie: {} } });
    const err = await rejection(t, new Promise((resolve, reject) => store.set(sid, { owner: 'second', cookie: {} }, (e) => (e ? reject(e) : resolve(undefined)))));
    t.equal(err.code, 'session_exists');
    t.equal((await client.read(sid))!.data.owner, 'first');
  });
});
