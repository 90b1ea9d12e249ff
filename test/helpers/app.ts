import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { buildApp, REDACTED_LOG_PATHS } from '../../src/app.js';
import { mintApiKey, type ApiKeyEntry } from '../../src/auth/api-keys.js';
import { buildConfig, type Config } from '../../src/config/config.js';
import type { PolicyOverrides } from '../../src/domain/policies.js';
import { migratedDatabase } from './mariadb.js';
import { sharedRedisUrl } from './redis.js';

export const KEY_A = mintApiKey('app-a', 'tenant-a');
export const KEY_A2 = mintApiKey('app-a', 'tenant-a'); // a second, rotated key of the same client
export const KEY_B = mintApiKey('app-b', 'tenant-b');

export function testConfig(
  databaseUrl: string,
  overrides: Partial<Config> = {},
  env: Record<string, string> = {},
  namespaces: Record<string, PolicyOverrides> = {},
): Config {
  const keys: ApiKeyEntry[] = [KEY_A.entry, KEY_A2.entry, KEY_B.entry];
  const config = buildConfig(
    {
      DATABASE_URL: databaseUrl,
      HOST: '127.0.0.1',
      LOG_LEVEL: 'silent',
      SWEEPER_INTERVAL_SECONDS: '0',
      SWEEPER_BATCH_SIZE: '100',
      DB_POOL_SIZE: '5',
      DB_ACQUIRE_TIMEOUT_MS: '2000',
      DB_QUERY_TIMEOUT_MS: '5000',
      DB_CONNECT_TIMEOUT_MS: '2000',
      SHUTDOWN_TIMEOUT_MS: '1000',
      ...env,
    },
    { keys, namespaces },
  );
  return { ...config, ...overrides };
}

interface TapLike {
  teardown(fn: () => unknown): void;
}

export interface TestApp {
  app: FastifyInstance;
  url: string;
  config: Config;
  /** Every log line the app wrote, as raw JSON text. */
  logs: string[];
}

/** A built app on its own migrated database, logging at debug into memory, closed at teardown. */
export async function testApp(
  t: TapLike,
  overrides: Partial<Config> = {},
  options: { clock?: () => Date; env?: Record<string, string>; namespaces?: Record<string, PolicyOverrides> } = {},
): Promise<TestApp> {
  const url = await migratedDatabase(t);
  const config = testConfig(url, overrides, options.env, options.namespaces);
  const logs: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const app = await buildApp(config, {
    logger: { level: 'debug', stream, redact: { paths: REDACTED_LOG_PATHS, censor: '[redacted]' } },
    clock: options.clock,
  });
  t.teardown(() => app.close());
  await app.ready();
  return { app, url, config, logs };
}

export const auth = (key: { key: string } = KEY_A) => ({ authorization: `Bearer ${key.key}` });

/** Two app instances on one migrated MariaDB and the shared Redis: two replicas of the service, closed at teardown. */
export async function twoReplicas(t: TapLike & { teardown(fn: () => unknown): void }): Promise<{ url: string; one: FastifyInstance; two: FastifyInstance }> {
  const url = await migratedDatabase(t);
  const config = testConfig(url, {}, { REDIS_URL: await sharedRedisUrl(t) });
  const [one, two] = await Promise.all([buildApp(config, { logger: false }), buildApp(config, { logger: false })]);
  t.teardown(async () => {
    await one.close();
    await two.close();
  });
  await Promise.all([one.ready(), two.ready()]);
  return { url, one, two };
}
