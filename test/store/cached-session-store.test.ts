import t from 'tap';
import pino from 'pino';
import { Database } from '../../src/db/database.js';
import { CachedSessionStore } from '../../src/store/cached-session-store.js';
import { MariaDbOutbox, MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { gatewayOptions, sharedRedisUrl, testGateway } from '../helpers/redis.js';
import { sessionStoreContract } from './session-store-contract.js';

// The same contract as the MariaDB store, through Redis (single node).
const url = await sharedRedisUrl(t);
const gateway = await testGateway(t, gatewayOptions({ url }));

sessionStoreContract(t, async (t) => {
  const dbUrl = await migratedDatabase(t);
  const database = new Database({ url: dbUrl, poolSize: 8, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  const db = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 });
  return {
    store: new CachedSessionStore(db, new MariaDbOutbox(database), gateway, { touchPersistThresholdSeconds: 60 }, pino({ level: 'silent' })),
    touchPersistThresholdSeconds: 60,
  };
});
