import t from 'tap';
import { buildConfig } from '../../src/config/config.js';
import { ConfigError } from '../../src/config/config-error.js';
import { KEY_A, testApp } from '../helpers/app.js';

t.test('the HTTP server has request, connection and keep-alive timeouts', async (t) => {
  const { app } = await testApp(t);
  t.equal(app.server.requestTimeout, 10_000, 'a trickled request is cut after 10 s');
  t.equal(app.server.timeout, 120_000, 'an idle socket is closed after 2 min');
  t.equal(app.server.keepAliveTimeout, 65_000, 'keep-alive outlasts a load balancer idle timeout of 60 s');
});

t.test('the timeouts are configurable and checked', async (t) => {
  const base = { DATABASE_URL: 'mysql://u:p@db:3306/sessiond' };
  const keys = { keys: [KEY_A.entry], namespaces: {} };
  const config = buildConfig({ ...base, REQUEST_TIMEOUT_MS: '2500', KEEP_ALIVE_TIMEOUT_MS: '75000' }, keys);
  t.equal(config.requestTimeoutMs, 2500);
  t.equal(config.keepAliveTimeoutMs, 75_000);
  t.throws(() => buildConfig({ ...base, REQUEST_TIMEOUT_MS: '-1' }, keys), ConfigError);
});
