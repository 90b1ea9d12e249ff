import tap from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { RedisGateway, type RedisGatewayOptions } from '../../src/cache/redis-gateway.js';
import { startRedis, type RedisProcess } from '../../devstack/redis.js';
import { startRedisCluster, type RedisClusterProcess } from '../../devstack/redis-cluster.js';

interface TapLike {
  teardown(fn: () => unknown): void;
}

let own: Promise<{ server: RedisProcess; dir: string }> | undefined;

/** The Redis URL for this test process: the runner's (SESSIOND_TEST_REDIS_URL), or our own server. */
export async function sharedRedisUrl(t: TapLike): Promise<string> {
  const fromRunner = process.env.SESSIOND_TEST_REDIS_URL;
  if (fromRunner !== undefined && fromRunner !== '') return fromRunner;
  if (own === undefined) {
    own = (async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-test-redis-'));
      return { server: await startRedis({ baseDir: dir }), dir };
    })();
    const started = own;
    // The server outlives any one (sub)test: stop it when the whole file is done.
    tap.teardown(async () => {
      const { server, dir } = await started;
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    });
  }
  return (await own).server.url;
}

/** Starts a server of this test's own under a temporary folder; stops it and removes the folder at teardown. */
async function privateServer<S extends { stop(): Promise<void> }>(t: TapLike, prefix: string, start: (baseDir: string) => Promise<S>): Promise<S> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  const server = await start(dir);
  t.teardown(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  return server;
}

/** A Redis server of this test's own, so it can be killed, paused and restarted. */
export function privateRedis(t: TapLike): Promise<RedisProcess> {
  return privateServer(t, 'sessiond-test-redis-', (baseDir) => startRedis({ baseDir }));
}

export function gatewayOptions(overrides: Partial<RedisGatewayOptions> = {}): RedisGatewayOptions {
  return {
    commandTimeoutMs: 100,
    connectTimeoutMs: 300,
    breakerFailureThreshold: 2,
    breakerCooldownMs: 200,
    cacheTtlMs: 60_000,
    leaseMs: 2000,
    ...overrides,
  };
}

/** A connected gateway, closed at teardown. */
export async function testGateway(t: TapLike, options: RedisGatewayOptions): Promise<RedisGateway> {
  const gateway = new RedisGateway(options, pino({ level: 'silent' }));
  t.teardown(() => gateway.close());
  await gateway.connected(5000);
  return gateway;
}

/** A 3-master Redis Cluster of this test's own, stopped at teardown. */
export function privateCluster(t: TapLike): Promise<RedisClusterProcess> {
  return privateServer(t, 'sessiond-test-cluster-', (baseDir) => startRedisCluster({ baseDir }));
}
