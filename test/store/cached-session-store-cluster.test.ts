import t from 'tap';
import pino from 'pino';
import { Database } from '../../src/db/database.js';
import { CachedSessionStore } from '../../src/store/cached-session-store.js';
import { MariaDbOutbox, MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { gatewayOptions, privateCluster, testGateway } from '../helpers/redis.js';
import { sessionStoreContract } from './session-store-contract.js';

// The store contract once more, on a 3-master Redis Cluster started for this file: every key of
// a session shares a hash tag, so each script runs on one slot.
const cluster = await privateCluster(t);
const gateway = await testGateway(t, gatewayOptions({ clusterNodes: cluster.startupNodes, commandTimeoutMs: 200 }));
const log = pino({ level: 'silent' });

const stores: CachedSessionStore[] = [];
sessionStoreContract(t, async (t) => {
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 8, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  const store = new CachedSessionStore(new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 }), new MariaDbOutbox(database), gateway, { touchPersistThresholdSeconds: 60 }, log);
  stores.push(store);
  return { store, touchPersistThresholdSeconds: 60 };
});

t.test('the cluster served the contract without falling back', async (t) => {
  const hits = stores.reduce((n, s) => n + s.counters.hits, 0);
  const fallbacks = stores.reduce((n, s) => n + s.counters.fallbacks, 0);
  t.ok(hits > 0, `cache hits on the cluster: ${hits}`);
  t.equal(fallbacks, 0, 'no call fell back to MariaDB');
});
