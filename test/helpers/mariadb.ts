import tap from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import { drizzle } from 'drizzle-orm/mysql2';
import { migrate } from 'drizzle-orm/mysql2/migrator';
import { createDatabase, startMariaDb, type MariaDbProcess } from '../../devstack/mariadb.js';

interface TapLike {
  teardown(fn: () => unknown): void;
}

let ownServer: Promise<{ rootUrl: string; server: MariaDbProcess; dir: string }> | undefined;

/**
 * The MariaDB root URL for this test process: the one the test runner started
 * (SESSIOND_TEST_MARIADB_URL), or a server of our own when a file is run alone.
 */
async function rootUrl(t: TapLike): Promise<string> {
  const fromRunner = process.env.SESSIOND_TEST_MARIADB_URL;
  if (fromRunner !== undefined && fromRunner !== '') return fromRunner;
  if (ownServer === undefined) {
    ownServer = (async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-test-'));
      const server = await startMariaDb({ baseDir: dir });
      return { rootUrl: server.rootUrl, server, dir };
    })();
    const started = ownServer;
    // The server outlives any one (sub)test: stop it when the whole file is done.
    tap.teardown(async () => {
      const { server, dir } = await started;
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    });
  }
  return (await ownServer).rootUrl;
}

/**
 * Creates `name` on the server at rootUrl and applies drizzle/ to it exactly as drizzle-kit
 * migrate does (same journal, same table). Returns the database's URL.
 */
export async function migrateDatabase(rootUrl: string, name: string): Promise<string> {
  const url = await createDatabase(rootUrl, name);
  const conn = await mysql.createConnection({ uri: url, timezone: 'Z' });
  try {
    await migrate(drizzle(conn), { migrationsFolder: 'drizzle', migrationsTable: '__drizzle_migrations' });
  } finally {
    await conn.end();
  }
  return url;
}

/** A fresh, migrated database for one test (file), dropped afterwards. */
export async function migratedDatabase(t: TapLike): Promise<string> {
  return freshDatabase(t, migrateDatabase);
}

/** A fresh, empty database for one test (file) on the test's MariaDB, dropped afterwards. */
export async function emptyDatabase(t: TapLike): Promise<string> {
  return freshDatabase(t, createDatabase);
}

async function freshDatabase(t: TapLike, make: (rootUrl: string, name: string) => Promise<string>): Promise<string> {
  const root = await rootUrl(t);
  const name = `t_${randomBytes(6).toString('hex')}`;
  const url = await make(root, name);
  t.teardown(async () => {
    const c = await mysql.createConnection({ uri: root });
    await c.query(`DROP DATABASE IF EXISTS \`${name}\``);
    await c.end();
  });
  return url;
}

/** Runs one SQL statement against a test database (for looking at what was stored). */
export async function query<T = Record<string, unknown>>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const conn = await mysql.createConnection({ uri: url, timezone: 'Z', dateStrings: true });
  try {
    const [rows] = await conn.query(sql, params);
    return rows as T[];
  } finally {
    await conn.end();
  }
}
