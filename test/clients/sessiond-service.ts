import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';
import { SessiondError } from '../../clients/node/dist/index.js';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { mintApiKey } from '../../src/auth/api-keys.js';
import { migratedDatabase } from '../helpers/mariadb.js';
import { sharedRedisUrl } from '../helpers/redis.js';
import { startService, type ServiceProcess } from '../helpers/service-process.js';

interface TapLike {
  teardown(fn: () => unknown): void;
  passing(): boolean;
}

export interface ClientService {
  url: string;
  apiKey: string;
  namespace: string;
  databaseUrl: string;
  service: ServiceProcess;
}

/**
 * A real sessiond (`node dist/server.js`) for the client tests: a fresh database on the test
 * runner's MariaDB, its Redis, and an API key whose namespace may create sessions under
 * app-chosen tokens (`"clientTokens": true`), as the express-session store needs.
 */
export async function clientService(t: TapLike, env: Record<string, string> = {}): Promise<ClientService> {
  const [databaseUrl, redisUrl] = await Promise.all([migratedDatabase(t), sharedRedisUrl(t)]);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-client-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const namespace = `node-${randomBytes(4).toString('hex')}`;
  const key = mintApiKey('node-client-tests', namespace);
  const keysFile = path.join(dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify({ keys: [key.entry], namespaces: { [namespace]: { clientTokens: true } } }));
  const service = await startService(t, { DATABASE_URL: databaseUrl, REDIS_URL: redisUrl, API_KEYS_FILE: keysFile, ...env }, key.key);
  return { url: service.url, apiKey: key.key, namespace, databaseUrl, service };
}

/** A token of the shape express-session makes (32 base64url characters). */
export function appToken(): string {
  return randomBytes(24).toString('base64url');
}

/** The SessiondError a call rejects with (failing the test when it resolves or throws anything else). */
export async function rejection(t: Test, promise: Promise<unknown>): Promise<SessiondError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(err, SessiondError, 'rejects with a SessiondError');
  return err as SessiondError;
}
