/**
 * The Express app of `npm run bench`'s app-level comparison: Express 5 + express-session, the
 * same app twice with only the store line changed. Started as a child process by bench/bench.mjs:
 *
 *   STORE=sessiond  SessiondStore from clients/node (SESSIOND_URL, SESSIOND_API_KEY)
 *   STORE=redis     connect-redis on one Redis (REDIS_URL), node-redis client as its README shows
 *
 *   POST /login  creates a session (a user, a cart, preferences) and answers its cookie
 *   GET  /       reads the session and answers a page-sized JSON of it: express-session then
 *                touches it (resave and rolling off, the settings both stores recommend)
 *
 * Env: PORT. Prints "listening" on stdout when ready.
 */
import express from 'express';
import session from 'express-session';

const port = Number(process.env.PORT);
let store;
let close = async () => {};
if (process.env.STORE === 'sessiond') {
  const { SessiondStore } = await import('../clients/node/dist/index.js');
  store = new SessiondStore({ url: process.env.SESSIOND_URL, apiKey: process.env.SESSIOND_API_KEY });
  close = () => store.close();
} else if (process.env.STORE === 'redis') {
  const { RedisStore } = await import('connect-redis');
  const { createClient } = await import('redis');
  const client = createClient({ url: process.env.REDIS_URL });
  await client.connect();
  store = new RedisStore({ client, prefix: 'benchapp:' });
  close = () => client.quit();
} else {
  process.stderr.write(`unknown STORE ${process.env.STORE}\n`);
  process.exit(2);
}

const app = express();
app.disable('x-powered-by');
app.use(
  session({
    store,
    secret: 'bench secret, the same for both stores',
    resave: false,
    rolling: false,
    saveUninitialized: false,
    cookie: { maxAge: 30 * 60_000 },
  }),
);
let n = 0;
app.post('/login', (req, res) => {
  req.session.user = { id: `user-${++n}`, name: 'Ada Lovelace', roles: ['customer'] };
  req.session.cart = ['sku-10442', 'sku-20931'];
  req.session.prefs = { theme: 'dark', lang: 'en-GB', tz: 'Europe/Berlin' };
  res.json({ ok: true });
});
app.get('/', (req, res) => {
  if (req.session.user === undefined) return res.status(401).json({ error: 'no session' });
  res.json({ user: req.session.user, cart: req.session.cart, prefs: req.session.prefs });
});

const server = app.listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));
server.keepAliveTimeout = 60_000;
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  close().finally(() => process.exit(0));
});
