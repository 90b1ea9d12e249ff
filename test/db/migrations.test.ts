import t from 'tap';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { createDatabase } from '../../devstack/mariadb.js';
import { migratedDatabase, query } from '../helpers/mariadb.js';

const run = promisify(execFile);
const root = process.cwd();
const drizzleKit = path.join(root, 'node_modules', '.bin', 'drizzle-kit');

t.test('drizzle-kit generate finds no drift between the schema and drizzle/', async (t) => {
  // A scratch copy, so that a drifted schema can never write into the repository.
  const dir = t.testdir({});
  cpSync(path.join(root, 'drizzle'), path.join(dir, 'drizzle'), { recursive: true });
  mkdirSync(path.join(dir, 'src', 'db'), { recursive: true });
  cpSync(path.join(root, 'src', 'db', 'schema.ts'), path.join(dir, 'src', 'db', 'schema.ts'));
  cpSync(path.join(root, 'drizzle.config.ts'), path.join(dir, 'drizzle.config.ts'));
  symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  const before = readdirSync(path.join(dir, 'drizzle')).sort();
  const { stdout } = await run(drizzleKit, ['generate'], { cwd: dir, timeout: 60_000 });
  t.match(stdout, /No schema changes/, 'drizzle-kit reports no changes');
  t.same(readdirSync(path.join(dir, 'drizzle')).sort(), before, 'and wrote no migration');
});

t.test('drizzle-kit migrate with only DATABASE_URL set builds the schema, and is idempotent', async (t) => {
  const scratch = await migratedDatabase(t); // for its server's root URL and cleanup
  const rootUrl = new URL(scratch);
  rootUrl.pathname = '/';
  const name = `m_${randomBytes(6).toString('hex')}`;
  const url = await createDatabase(rootUrl.toString(), name);
  t.teardown(() => query(url, `DROP DATABASE IF EXISTS \`${name}\``));
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATABASE_URL: url };
  const first = await run(drizzleKit, ['migrate'], { cwd: root, env, timeout: 60_000 });
  t.match(first.stdout + first.stderr, /migrations applied successfully/);
  await run(drizzleKit, ['migrate'], { cwd: root, env, timeout: 60_000 });
  const [applied] = await query<{ n: number }>(url, 'SELECT COUNT(*) AS n FROM __drizzle_migrations');
  t.equal(Number(applied!.n), readdirSync(path.join(root, 'drizzle')).filter((f) => f.endsWith('.sql')).length, 'each migration applied once');
  const [table] = await query<{ ddl: string }>(url, 'SHOW CREATE TABLE sessions');
  const ddl = Object.values(table as Record<string, string>)[1]!;
  t.match(ddl, /`id_hash` binary\(32\) NOT NULL/);
  t.match(ddl, /`namespace` varchar\(64\) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL/);
  t.match(ddl, /`idle_expires_at` datetime\(3\) NOT NULL/);
  t.match(ddl, /PRIMARY KEY \(`namespace`,`id_hash`\)/);
  t.match(ddl, /KEY `sessions_subject_live_idx` \(`namespace`,`subject`,`last_seen_at`,`id_hash`,`state`,`subject_generation`,`idle_expires_at`,`absolute_expires_at`\)/);
  t.notMatch(ddl, /sessions_subject_idx/, 'the older subject index is gone');
  t.match(ddl, /`subject_generation` bigint\(20\) unsigned NOT NULL DEFAULT 0/);
  t.match(ddl, /`rotated_to` binary\(32\) DEFAULT NULL/);
  t.match(ddl, /KEY `sessions_idle_expires_idx` \(`idle_expires_at`\)/);
});
