import { buildApp } from '../app.js';
import type { Config } from '../config/config.js';

/**
 * openapi.yaml as the route schemas describe it. The app is built against an address nothing
 * listens on: generating the document needs the routes, not a database.
 */
export async function openapiYaml(): Promise<string> {
  const config: Config = {
    databaseUrl: 'mysql://openapi@127.0.0.1:1/openapi',
    redisUrl: undefined,
    host: '127.0.0.1',
    port: 0,
    logLevel: 'silent',
    apiKeysFile: '(none)',
    apiKeys: [{ client: 'openapi', namespace: 'openapi', sha256: '0'.repeat(64) }],
    sessions: {
      idleTimeoutDefault: 1800,
      idleTimeoutMax: 86_400,
      absoluteTimeoutDefault: 43_200,
      absoluteTimeoutMax: 2_592_000,
      dataMaxBytes: 65_536,
      touchPersistThreshold: 60,
    },
    sweeper: { intervalSeconds: 0, batchSize: 1 },
    db: { poolSize: 1, acquireTimeoutMs: 100, queryTimeoutMs: 100, connectTimeoutMs: 100 },
    shutdownTimeoutMs: 0,
  };
  const app = await buildApp(config, { logger: false });
  try {
    await app.ready();
    return app.swagger({ yaml: true });
  } finally {
    await app.close();
  }
}
