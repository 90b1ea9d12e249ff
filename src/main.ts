import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import { buildApp, type BuildOptions } from './app.js';
import { ConfigError, loadConfig, type Config } from './config/config.js';

function configOrExit(): Config {
  try {
    return loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`sessiond: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/**
 * Runs the service as a process: configuration from the environment (exit 2 when invalid), the
 * app, graceful shutdown on SIGTERM/SIGINT, then listen. server.ts is the production entry
 * point; test entry points (test/helpers/test-server.mjs) pass test-only options.
 */
export async function runServer(options: Omit<BuildOptions, 'logger'>): Promise<FastifyInstance> {
  const config = configOrExit();
  const app = await buildApp(config, options);

  // SIGTERM/SIGINT: stop accepting, let in-flight requests finish, then close the pool
  // (app.close() runs every plugin's onClose). A second signal or the timeout forces the exit.
  closeWithGrace({ delay: config.shutdownTimeoutMs }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error');
    else app.log.info({ signal }, 'shutting down');
    await app.close();
  });

  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    app.log.fatal({ err }, 'could not start');
    process.exit(1);
  }
  return app;
}
