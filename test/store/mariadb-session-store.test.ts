import t from 'tap';
import { Database } from '../../src/db/database.js';
import { MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { sessionStoreContract } from './session-store-contract.js';

// Each case gets its own migrated database, so sweeps and counts see only their own rows.
sessionStoreContract(t, async (t) => {
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 8, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  return { store: new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 }), touchPersistThresholdSeconds: 60 };
});
