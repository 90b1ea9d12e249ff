import closeWithGrace from 'close-with-grace';
import { buildApp } from './app.js';
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

const config = configOrExit();
// Test-only planted bug for the history checker (test/history): never set it in production.
const unsafeUnfencedFill = process.env.SESSIOND_TEST_UNSAFE_FILL === '1';
const app = await buildApp(config, { startSweeper: true, unsafeUnfencedFill });
if (unsafeUnfencedFill) app.log.warn('SESSIOND_TEST_UNSAFE_FILL=1: cache fills are unsafe (a test-only planted bug)');

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
