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

/**
 * Calls the service has answered so far, by "METHOD route" (from its own request histogram):
 * what an app's request cost in sessiond calls.
 */
export async function serviceCalls(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const calls = new Map<string, number>();
  for (const m of text.matchAll(/^sessiond_http_request_duration_seconds_count\{([^}]*)\} (\d+)$/gm)) {
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (!String(labels.route).startsWith('/v1/')) continue;
    const key = `${labels.method} ${labels.route}`;
    calls.set(key, (calls.get(key) ?? 0) + Number(m[2]));
  }
  return calls;
}

/** The calls made between two `serviceCalls` snapshots, e.g. { 'POST /v1/sessions/current/touch': 10 }. */
export function callsBetween(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, n] of after) if (n - (before.get(k) ?? 0) > 0) out[k] = n - (before.get(k) ?? 0);
  return out;
}

/** A session as the service answers it, for loopback stubs of the service. */
export function fakeSession(id = 'n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg') {
  return {
    id,
    subject: null,
    data: {},
    version: 1,
    createdAt: '2026-11-25T08:00:00.000Z',
    lastSeenAt: '2026-11-25T08:00:00.000Z',
    expiresAt: '2026-11-25T08:30:00.000Z',
    absoluteExpiresAt: '2026-11-25T20:00:00.000Z',
    metadata: null,
  };
}
