import t from 'tap';
import { createHash } from 'node:crypto';
import { buildApp } from '../../src/app.js';
import { auth, testConfig } from '../helpers/app.js';
import { migratedDatabase, query } from '../helpers/mariadb.js';
import { sharedRedisUrl } from '../helpers/redis.js';
import { clientToken } from './client-tokens-suite.js';

// Two replicas of the service on one MariaDB and one Redis; tenant-a creates under its own tokens.
const url = await migratedDatabase(t);
const config = testConfig(url, {}, { REDIS_URL: await sharedRedisUrl(t) }, { 'tenant-a': { clientTokens: true } });
const [one, two] = await Promise.all([buildApp(config, { logger: false }), buildApp(config, { logger: false })]);
t.teardown(async () => {
  await one!.close();
  await two!.close();
});
await Promise.all([one!.ready(), two!.ready()]);
type App = typeof one;

const JSON_CT = { 'content-type': 'application/json' };
const createUnder = (app: App, token: string, data: unknown) =>
  app!.inject({ method: 'PUT', url: '/v1/sessions/current', headers: { ...auth(), ...JSON_CT, 'session-token': token, 'if-none-match': '*' }, payload: JSON.stringify({ data }) });
const read = (app: App, token: string) => app!.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': token } });
const destroy = (app: App, token: string) => app!.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': token } });
const save = (app: App, token: string, etag: string, data: unknown) =>
  app!.inject({ method: 'PUT', url: '/v1/sessions/current/data', headers: { ...auth(), ...JSON_CT, 'session-token': token, 'if-match': etag }, payload: JSON.stringify(data) });

/**
 * What a session middleware's store.set does with a session it read before: save it with
 * If-Match; a session it does not find it creates under its id with If-None-Match: *.
 */
async function storeSet(app: App, token: string, etag: string, data: unknown): Promise<number[]> {
  const saved = await save(app, token, etag, data);
  if (saved.statusCode !== 404) return [saved.statusCode];
  return [404, (await createUnder(app, token, data)).statusCode];
}

t.test('a save by a request that read the session before a logout fails, and the session stays gone', async (t) => {
  const token = clientToken('logout-race');
  t.equal((await createUnder(one, token, { cart: ['sku-1'] })).statusCode, 201);
  const before = await read(two, token); // the slow request reads (and warms Redis) ...
  t.equal(before.statusCode, 200);
  t.equal((await destroy(one, token)).statusCode, 204); // ... the user logs out on the other replica ...
  t.same(await storeSet(two, token, before.headers.etag as string, { cart: ['sku-1', 'sku-2'] }), [404, 412], '... and its save fails');
  for (const app of [one, two]) t.equal((await read(app, token)).statusCode, 404, 'gone on both replicas');
  // The sweeper removes the revoked row soon; the id stays refused until its absolute expiry.
  await query(url, 'DELETE FROM sessions WHERE id_hash = ?', [createHash('sha256').update(token).digest()]);
  t.equal((await createUnder(two, token, { again: true })).statusCode, 412, 'refused with the row gone');
  for (const app of [one, two]) t.equal((await read(app, token)).statusCode, 404);
});

t.test('logout racing saves on the other replica: never a session afterwards', async (t) => {
  const outcomes = new Map<string, number>();
  for (let i = 0; i < 40; i++) {
    const token = clientToken(`race-${i}-${Date.now()}`);
    t.equal((await createUnder(one, token, { n: 0 })).statusCode, 201);
    const etag = (await read(two, token)).headers.etag as string;
    // Destroy and the save (and its create fallback) in flight together, started in both orders.
    let pendingSet: Promise<number[]>;
    let pendingDestroy: ReturnType<typeof destroy>;
    if (i % 2 === 0) {
      pendingSet = storeSet(two, token, etag, { n: 1 });
      pendingDestroy = destroy(one, token);
    } else {
      pendingDestroy = destroy(one, token);
      pendingSet = storeSet(two, token, etag, { n: 1 });
    }
    const [set, destroyed] = await Promise.all([pendingSet, pendingDestroy]);
    t.equal(destroyed.statusCode, 204);
    const key = set.join('→');
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    t.ok(key === '200' || key === '404→412', `the save either came before the logout or failed (${key})`);
    for (const app of [one, two]) {
      const after = await read(app, token);
      if (after.statusCode !== 404) t.fail(`round ${i}: the session came back (${after.statusCode} ${after.payload})`);
    }
  }
  t.comment(`outcomes: ${[...outcomes].map(([k, v]) => `${k}: ${v}`).join(', ')}`);
  t.pass('no session came back');
});
