import { buildApp } from '../src/app.js';
import { buildConfig } from '../src/config/config.js';

/**
 * openapi.yaml as the route schemas describe it. The app is built against an address nothing
 * listens on: generating the document needs the routes, not a database.
 */
export async function openapiYaml(): Promise<string> {
  const config = buildConfig(
    { DATABASE_URL: 'mysql://openapi@127.0.0.1:1/openapi', DB_POOL_SIZE: '1', SWEEPER_INTERVAL_SECONDS: '0' },
    [{ client: 'openapi', namespace: 'openapi', sha256: '0'.repeat(64) }],
  );
  const app = await buildApp(config, { logger: false });
  try {
    await app.ready();
    return app.swagger({ yaml: true });
  } finally {
    await app.close();
  }
}
