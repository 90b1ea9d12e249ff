import t from 'tap';
import pino from 'pino';
import { RedisGateway } from '../../src/cache/redis-gateway.js';
import { Database } from '../../src/db/database.js';
import { CachedSessionStore } from '../../src/store/cached-session-store.js';
import { MariaDbOutbox, MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { freePort } from '../../devstack/ports.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { gatewayOptions } from '../helpers/redis.js';
import { sessionStoreContract } from './session-store-contract.js';

// The same contract again, with Redis down: a port nothing listens on. Every call takes the
// cached store's fallback path (first through failed Redis calls, then through the open
// breaker) and must keep every promise of the contract.
const url = `redis://127.0.0.1:${await freePort()}`;
const stores: CachedSessionStore[] = [];

sessionStoreContract(t, async (t) => {
  const dbUrl = await migratedDatabase(t);
  const database = new Database({ url: dbUrl, poolSize: 8, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  const gateway = new RedisGateway(gatewayOptions({ url }), pino({ level: 'silent' }));
  t.teardown(() => gateway.close());
  const db = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 });
  const store = new CachedSessionStore(db, new MariaDbOutbox(database), gateway, { touchPersistThresholdSeconds: 60 }, pino({ level: 'silent' }));
  stores.push(store);
  return { store, touchPersistThresholdSeconds: 60 };
});

t.test('the calls above were served by the fallback path', async (t) => {
  const total = (name: 'fallbacks' | 'hits') => stores.reduce((n, s) => n + s.counters[name], 0);
  t.ok(stores.length > 0, 'the contract built its stores');
  t.ok(total('fallbacks') > 0, `fallbacks counted (${total('fallbacks')})`);
  t.equal(total('hits'), 0, 'never a cache hit');
});
