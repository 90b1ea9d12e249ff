/**
 * The before-commit hook of the authoritative store's transactions: the cache tier plants its
 * write markers there, so it must run after the statements and before anything of them is
 * visible, and its failure must roll them back.
 */
import t, { type Test } from 'tap';
import { Database } from '../../src/db/database.js';
import { MariaDbSessionStore } from '../../src/store/mariadb-session-store.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { newRecord } from './session-store-contract.js';

async function setup(t: Test) {
  const url = await migratedDatabase(t);
  const database = new Database({ url, poolSize: 4, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  return new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 });
}

t.test('beforeCommit runs with the result of the work, before the commit makes it visible', async (t) => {
  const store = await setup(t);
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  const s = newRecord(now);
  const seen: string[] = [];
  const result = await store.transaction(
    async (tx) => {
      seen.push('work');
      await tx.insert(s);
      return { outboxId: await tx.recordOutbox(s, 'invalidate') };
    },
    {
      beforeCommit: async ({ outboxId }) => {
        seen.push(`beforeCommit ${typeof outboxId}`);
        t.equal(await store.get(s, now), null, 'inside the hook another connection does not see the insert yet');
      },
    },
  );
  t.same(seen, ['work', 'beforeCommit number'], 'the hook ran once, after the work, with its result');
  t.type(result.outboxId, 'number', 'the transaction answers the work\'s result');
  t.same((await store.get(s, now))?.data, s.data, 'after the transaction the insert is committed');
});

t.test('a beforeCommit that rejects rolls the transaction back', async (t) => {
  const store = await setup(t);
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  const s = newRecord(now);
  await t.rejects(
    store.transaction(
      async (tx) => void (await tx.insert(s)),
      {
        beforeCommit: async () => {
          throw new Error('hook failed');
        },
      },
    ),
    { message: 'hook failed' },
  );
  t.equal(await store.get(s, now), null, 'nothing was committed');
});

t.test('beforeCommit does not run when the work fails', async (t) => {
  const store = await setup(t);
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  const s = newRecord(now);
  await store.create(s);
  let ran = false;
  await t.rejects(
    store.transaction(
      async (tx) => void (await tx.insertIfAbsent(s)),
      {
        beforeCommit: async () => {
          ran = true;
        },
      },
    ),
    { code: 'session_exists' },
  );
  t.equal(ran, false, 'the hook did not run');
});

t.test('a transaction still working at its deadline rolls back: a 503 never hides a committed change', async (t) => {
  const url = await migratedDatabase(t);
  // The deadline is acquire + query timeout: 300 ms.
  const database = new Database({ url, poolSize: 2, acquireTimeoutMs: 100, queryTimeoutMs: 200, connectTimeoutMs: 2000 });
  t.teardown(() => database.close());
  const store = new MariaDbSessionStore(database, { touchPersistThresholdSeconds: 60 });
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  const s = newRecord(now);
  let finished = false;
  await t.rejects(
    store.transaction(
      async (tx) => {
        await tx.insert(s);
        await new Promise((r) => setTimeout(r, 600)); // past the deadline, before COMMIT
        finished = true;
      },
    ),
    { status: 503, code: 'store_unavailable' },
    'the caller is answered "unavailable" at the deadline',
  );
  while (!finished) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  t.equal(await store.get(s, now), null, 'and the work that went on behind the answer was rolled back, not committed');
});
