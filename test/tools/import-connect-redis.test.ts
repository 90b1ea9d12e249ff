import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express, { type Express } from 'express';
import session, { type Store } from 'express-session';
import { RedisStore } from 'connect-redis';
import { createClient } from 'redis';
import { SessiondStore } from '../../clients/node/dist/index.js';
import { importConnectRedis, type ImportReport } from '../../tools/import/import-sessions.js';
import { auth, KEY_A, testApp } from '../helpers/app.js';
import { runImportCommand } from '../helpers/import-command.js';
import { sharedRedisUrl } from '../helpers/redis.js';

/**
 * The connect-redis import: sessions made by a real Express app with express-session and
 * connect-redis, imported into sessiond, and then the same cookies through the same app on
 * SessiondStore. Re-runs skip what is there; bad rows are reported and do not stop the run.
 */

const SECRET = 'the app secret, the same before and after the switch';
const redisUrl = await sharedRedisUrl(t);
const { app: sessiond } = await testApp(t, {}, { namespaces: { 'tenant-a': { clientTokens: true } } });
await sessiond.listen({ host: '127.0.0.1', port: 0 });
const sessiondUrl = `http://127.0.0.1:${(sessiond.server.address() as AddressInfo).port}`;

function shop(store: Store): Express {
  const app = express();
  app.use(session({ store, secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: 30 * 60_000 } }));
  app.post('/login/:user', (req, res) => {
    (req.session as unknown as Record<string, unknown>).user = req.params.user;
    (req.session as unknown as Record<string, unknown>).cart = ['sku-1'];
    res.json({ ok: true });
  });
  app.get('/me', (req, res) => res.json({ user: (req.session as unknown as Record<string, unknown>).user ?? null }));
  return app;
}

async function listen(app: Express): Promise<{ url: string; server: Server }> {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

const redis = createClient({ url: redisUrl });
await redis.connect();
t.teardown(() => redis.quit());
const prefix = `shop-${randomBytes(3).toString('hex')}:`;
const before = await listen(shop(new RedisStore({ client: redis, prefix })));

// Three users log in on the connect-redis app: the cookies are express-session's signed ids.
const cookies = new Map<string, string>();
for (const user of ['alice', 'bob', 'carol']) {
  const res = await fetch(`${before.url}/login/${user}`, { method: 'POST' });
  const cookie = res.headers.get('set-cookie')!.split(';')[0]!;
  cookies.set(user, cookie);
}
const idOf = (cookie: string) => /^connect\.sid=s%3A([^.]+)\./.exec(cookie)![1]!;
// Rows an import must survive: not JSON, an id sessiond cannot take, one already expired.
await redis.set(`${prefix}${'n'.repeat(32)}`, 'not json', { EX: 600 });
await redis.set(`${prefix}short-id`, JSON.stringify({ cookie: {} }), { EX: 600 });
await redis.set(`${prefix}${'e'.repeat(32)}`, JSON.stringify({ cookie: { expires: new Date(Date.now() - 1000).toISOString() }, user: 'gone' }));

const target = { url: sessiondUrl, apiKey: KEY_A.key };
let report: ImportReport;

t.test('imports the live sessions under their ids with their remaining lifetime', async (t) => {
  report = await importConnectRedis({ redisUrl, prefix, target });
  t.match(report, { imported: 3, skippedExpired: 1, skippedPresent: 0 });
  t.same(report.failed.map((f) => f.reason).sort(), [
    'the id is not 32-256 characters of A-Z, a-z, 0-9, "_" and "-"',
    'the value is not JSON (a custom serializer?)',
  ]);
  t.notOk(JSON.stringify(report).includes('n'.repeat(32)), 'the report names sessions by public id, never by the id (the cookie secret)');
  for (const [user, cookie] of cookies) {
    const id = idOf(cookie);
    const ttl = await redis.pTTL(`${prefix}${id}`);
    const res = await sessiond.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': id } });
    t.equal(res.statusCode, 200, `${user}: reads back through sessiond`);
    const s = res.json() as { id: string; data: Record<string, unknown>; expiresAt: string };
    t.equal(s.id, createHash('sha256').update(id).digest('base64url'));
    t.match(s.data, { user, cart: ['sku-1'] });
    // express-session writes originalMaxAge as `expires - now` when it saves a loaded session, so
    // what connect-redis holds (and the import carries) can be a millisecond or a few short.
    const maxAge = (s.data.cookie as { originalMaxAge: number }).originalMaxAge;
    t.ok(maxAge <= 30 * 60_000 && maxAge > 30 * 60_000 - 1000, `${user}: the cookie's originalMaxAge carried (${maxAge} ms)`);
    const drift = Date.parse(s.expiresAt) - (Date.now() + ttl);
    t.ok(Math.abs(drift) < 5000, `${user}: expires with the remaining lifetime (off by ${drift} ms)`);
  }
});

t.test('a re-run skips what is there and changes nothing', async (t) => {
  const again = await importConnectRedis({ redisUrl, prefix, target });
  t.match(again, { imported: 0, skippedExpired: 1, skippedPresent: 3 });
  t.equal(again.failed.length, 2);
});

t.test('the same cookies keep working once the app runs on SessiondStore', async (t) => {
  const store = new SessiondStore({ url: sessiondUrl, apiKey: KEY_A.key });
  t.teardown(() => store.close());
  const after = await listen(shop(store as unknown as Store));
  for (const [user, cookie] of cookies) {
    const res = await fetch(`${after.url}/me`, { headers: { cookie } });
    t.same(await res.json(), { user }, `${user} is still logged in`);
  }
});

t.test('the command prints a report and progress, never a session id', async (t) => {
  const { code, stdout, stderr } = await runImportCommand(['connect-redis', '--redis', redisUrl, '--prefix', prefix, '--sessiond', sessiondUrl], { SESSIOND_API_KEY: KEY_A.key });
  t.equal(code, 1, 'exit code 1: some rows failed');
  t.match(JSON.parse(stdout), { imported: 0, skippedPresent: 3, skippedExpired: 1 });
  t.match(stderr, /done: 0 imported, 1 skipped \(expired\), 3 skipped \(present\), 2 failed/);
  for (const cookie of cookies.values()) t.notOk(`${stdout}${stderr}`.includes(idOf(cookie)), 'no session id in the output');
});
