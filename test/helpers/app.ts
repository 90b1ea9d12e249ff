import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { buildApp, REDACTED_LOG_PATHS } from '../../src/app.js';
import { mintApiKey, type ApiKeyEntry } from '../../src/auth/api-keys.js';
import type { Config } from '../../src/config/config.js';
import { migratedDatabase } from './mariadb.js';

export const KEY_A = mintApiKey('app-a', 'tenant-a');
export const KEY_A2 = mintApiKey('app-a', 'tenant-a'); // a second, rotated key of the same client
export const KEY_B = mintApiKey('app-b', 'tenant-b');

export function testConfig(databaseUrl: string, overrides: Partial<Config> = {}): Config {
  const apiKeys: ApiKeyEntry[] = [KEY_A.entry, KEY_A2.entry, KEY_B.entry];
  return {
    databaseUrl,
    redisUrl: undefined,
    host: '127.0.0.1',
    port: 0,
    logLevel: 'silent',
    apiKeysFile: '(inline)',
    apiKeys,
    sessions: {
      idleTimeoutDefault: 1800,
      idleTimeoutMax: 86_400,
      absoluteTimeoutDefault: 43_200,
      absoluteTimeoutMax: 30 * 86_400,
      dataMaxBytes: 64 * 1024,
      touchPersistThreshold: 60,
    },
    sweeper: { intervalSeconds: 0, batchSize: 100 },
    db: { poolSize: 5, acquireTimeoutMs: 2000, queryTimeoutMs: 5000, connectTimeoutMs: 2000 },
    shutdownTimeoutMs: 1000,
    ...overrides,
  };
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
  options: { clock?: () => Date } = {},
): Promise<TestApp> {
  const url = await migratedDatabase(t);
  const config = testConfig(url, overrides);
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
