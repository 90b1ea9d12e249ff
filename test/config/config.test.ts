import t, { type Test } from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildConfig, ConfigError, loadConfig, parseDatabaseUrl } from '../../src/config/config.js';
import { variables } from '../../src/config/schema.js';
import { redisEndpoint } from '../../src/cache/redis-gateway.js';
import { makeTestPki } from '../../devstack/tls.js';
import { mintApiKey } from '../../src/auth/api-keys.js';

const dir = t.testdir({});
const keysFile = path.join(dir, 'keys.json');
writeFileSync(keysFile, JSON.stringify([mintApiKey('app', 'ns').entry]));
const base = { DATABASE_URL: 'mysql://u:secret@127.0.0.1:3306/sessiond', API_KEYS_FILE: keysFile };

function failsOn(t: Test, env: Record<string, string>, variable: string) {
  try {
    loadConfig(env);
    t.fail(`expected a ConfigError naming ${variable}`);
  } catch (err) {
    t.type(err, ConfigError);
    t.equal((err as ConfigError).variable, variable);
    t.match((err as Error).message, new RegExp(`^${variable}: `), 'the message names the variable');
    t.notMatch((err as Error).message, /secret/, 'never echoes the database password');
  }
}

t.test('defaults', async (t) => {
  const c = loadConfig(base);
  t.equal(c.host, '0.0.0.0');
  t.equal(c.port, 8080);
  t.equal(c.logLevel, 'info');
  t.equal(c.policies.defaults.idleTimeoutDefault, 1800);
  t.equal(c.policies.defaults.absoluteTimeoutDefault, 43_200);
  t.equal(c.sessions.dataMaxBytes, 65_536);
  t.equal(c.apiKeys.length, 1);
  t.equal(c.redis, undefined, 'no Redis configured: MariaDB alone');
  t.equal(c.cache.ttlSeconds, 300);
});

t.test('overrides are read', async (t) => {
  const c = loadConfig({ ...base, PORT: '9000', HOST: '127.0.0.1', SESSION_IDLE_TIMEOUT_SECONDS: '60', SWEEPER_BATCH_SIZE: '10', REDIS_URL: 'redis://127.0.0.1:6380' });
  t.equal(c.port, 9000);
  t.equal(c.host, '127.0.0.1');
  t.equal(c.policies.defaults.idleTimeoutDefault, 60);
  t.equal(c.sweeper.batchSize, 10);
  t.equal(c.redis?.url, 'redis://127.0.0.1:6380');
  t.equal(c.redis?.commandTimeoutMs, 50);
});

t.test('DATABASE_URL may list the nodes of a Galera cluster, comma-separated, the first preferred', async (t) => {
  const url = 'mysql://u:s%40cret@db-0:3306,db-1,[::1]:3307/sessiond';
  t.equal(loadConfig({ ...base, DATABASE_URL: url }).databaseUrl, url);
  t.same(parseDatabaseUrl(url), {
    hosts: [
      { host: 'db-0', port: 3306 },
      { host: 'db-1', port: 3306 },
      { host: '::1', port: 3307 },
    ],
    user: 'u',
    password: 's@cret',
    database: 'sessiond',
  });
  t.same(parseDatabaseUrl('mysql://u:p@db:3307/x').hosts, [{ host: 'db', port: 3307 }], 'one host as before');
  failsOn(t, { ...base, DATABASE_URL: 'mysql://u:secret@db-0:3306,,db-2/sessiond' }, 'DATABASE_URL');
  failsOn(t, { ...base, DATABASE_URL: 'mysql://u:secret@db-0:3306,db-1:port/sessiond' }, 'DATABASE_URL');
  failsOn(t, { ...base, DATABASE_URL: 'mysql://u:secret@db-0,db-1/' }, 'DATABASE_URL');
});

t.test('each bad value names its variable', async (t) => {
  failsOn(t, { API_KEYS_FILE: keysFile }, 'DATABASE_URL');
  failsOn(t, { ...base, DATABASE_URL: 'postgres://u:secret@h/db' }, 'DATABASE_URL');
  failsOn(t, { ...base, DATABASE_URL: 'mysql://u:secret@h:3306/' }, 'DATABASE_URL');
  failsOn(t, { ...base, DATABASE_URL: 'not a url secret' }, 'DATABASE_URL');
  failsOn(t, { ...base, PORT: '80a' }, 'PORT');
  failsOn(t, { ...base, PORT: '70000' }, 'PORT');
  failsOn(t, { ...base, LOG_LEVEL: 'loud' }, 'LOG_LEVEL');
  failsOn(t, { ...base, REDIS_URL: 'http://x' }, 'REDIS_URL');
  failsOn(t, { ...base, SESSION_DATA_MAX_BYTES: '-1' }, 'SESSION_DATA_MAX_BYTES');
  failsOn(t, { ...base, SESSION_IDLE_TIMEOUT_SECONDS: '100', SESSION_IDLE_TIMEOUT_MAX_SECONDS: '50' }, 'SESSION_IDLE_TIMEOUT_SECONDS');
  failsOn(t, { ...base, SESSION_ABSOLUTE_TIMEOUT_SECONDS: '0' }, 'SESSION_ABSOLUTE_TIMEOUT_SECONDS');
  failsOn(t, { ...base, SWEEPER_INTERVAL_SECONDS: 'often' }, 'SWEEPER_INTERVAL_SECONDS');
  failsOn(t, { ...base, REDIS_CLUSTER_NODES: '127.0.0.1' }, 'REDIS_CLUSTER_NODES');
  failsOn(t, { ...base, REDIS_CLUSTER_NODES: 'a:1', REDIS_URL: 'redis://b:2' }, 'REDIS_CLUSTER_NODES');
  failsOn(t, { ...base, REDIS_URL: 'redis://b:2', REDIS_COMMAND_TIMEOUT_MS: '0' }, 'REDIS_COMMAND_TIMEOUT_MS');
  failsOn(t, { ...base, CACHE_TTL_SECONDS: 'forever' }, 'CACHE_TTL_SECONDS');
});

t.test('every variable of the schema refuses a value of the wrong kind, naming itself and the value', async (t) => {
  let checked = 0;
  for (const { name, schema } of variables()) {
    const bad: [string, RegExp][] =
      schema.type === 'integer'
        ? [
            ['twelve', /must be a whole number, got "twelve"/],
            [String(schema.maximum! + 1), new RegExp(`must be between ${schema.minimum} and ${schema.maximum}, got ${schema.maximum! + 1}$`)],
          ]
        : schema.type === 'boolean'
          ? [['maybe', /must be true or false, got "maybe"/]]
          : schema.enum !== undefined
            ? [['loudest', new RegExp(`must be one of ${schema.enum.join(', ')}, got "loudest"`)]]
            : [];
    for (const [value, message] of bad) {
      failsOn(t, { ...base, [name]: value }, name);
      t.throws(() => loadConfig({ ...base, [name]: value }), { message }, `${name}=${value}`);
      checked++;
    }
  }
  t.ok(checked > 40, `${checked} wrong values checked`);
});

t.test('whole numbers are digits; booleans take true/false, 1/0, yes/no, on/off; blank is unset', async (t) => {
  for (const value of ['1e3', '0x10', '+5', '5.0', '-1', '1_000']) failsOn(t, { ...base, PORT: value }, 'PORT');
  t.equal(loadConfig({ ...base, PORT: ' 9000 ' }).port, 9000, 'surrounding blanks are trimmed');
  t.equal(loadConfig({ ...base, PORT: '  ' }).port, 8080, 'a blank value is the default');
  t.equal(loadConfig({ ...base, PORT: '0' }).port, 0, 'the lower bound is inside the range');
  for (const value of ['false', 'FALSE', '0', 'no', 'Off']) t.equal(loadConfig({ ...base, DOCS_ENABLED: value }).docs.enabled, false, `DOCS_ENABLED=${value}`);
  for (const value of ['true', 'True', '1', 'yes', 'ON']) t.equal(loadConfig({ ...base, DOCS_ENABLED: value }).docs.enabled, true, `DOCS_ENABLED=${value}`);
  t.equal(loadConfig({ ...base, METRICS_PORT: '' }).metrics.port, undefined, 'no default: unset stays unset');
  t.equal(loadConfig({ ...base, METRICS_PORT: '9090' }).metrics.port, 9090);
  t.equal(loadConfig({ ...base, LOG_REQUESTS: 'all' }).logRequests, 'all');
});

t.test('only the given environment is read, and variables the schema does not know are ignored', async (t) => {
  process.env.PORT = '1234';
  process.env.DATABASE_URL = 'mysql://u:p@elsewhere:3306/other';
  t.teardown(() => {
    delete process.env.PORT;
    delete process.env.DATABASE_URL;
  });
  const c = loadConfig({ ...base, NOT_A_SETTING: 'x', node_env: 'y' });
  t.equal(c.port, 8080, 'process.env is not merged in');
  t.equal(c.databaseUrl, base.DATABASE_URL);
  t.equal(buildConfig({ DATABASE_URL: base.DATABASE_URL }, [mintApiKey('a', 'n').entry]).apiKeysFile, '(inline)', 'buildConfig needs no keys file');
});

t.test('with several bad values, the first in the schema is named', async (t) => {
  failsOn(t, { ...base, SHUTDOWN_TIMEOUT_MS: '-1', PORT: '70000', LOG_LEVEL: 'loud' }, 'PORT');
  failsOn(t, { API_KEYS_FILE: keysFile, PORT: '70000' }, 'DATABASE_URL');
  failsOn(t, { ...base, DOCS_ENABLED: 'maybe', DB_POOL_SIZE: '0' }, 'DOCS_ENABLED');
});

t.test('a password given in any string variable is never quoted back', async (t) => {
  const values = ['redis://u:secret@h:1/x?y=1', 'mysql://u:secret@h/db?ssl=1', 'http://:secret@h', 'u:secret@h:1', 'a:1,b:secret@c:2', 'not a url :secret@'];
  let failures = 0;
  for (const { name, schema } of variables()) {
    if (schema.type !== 'string') continue;
    for (const value of values) {
      for (const env of [{ ...base, [name]: value }, { ...base, REDIS_URL: 'rediss://u:secret@h:1', [name]: value }]) {
        try {
          loadConfig(env);
        } catch (err) {
          failures++;
          t.type(err, ConfigError, `${name}=${value}: a ConfigError`);
          t.notMatch((err as Error).message, /secret/, `${name}=${value}: ${(err as Error).message}`);
        }
      }
    }
  }
  t.ok(failures > 30, `${failures} refusals checked`);
});

t.test('the service refuses to start without a usable key', async (t) => {
  failsOn(t, { DATABASE_URL: base.DATABASE_URL }, 'API_KEYS_FILE');
  failsOn(t, { ...base, API_KEYS_FILE: path.join(dir, 'missing.json') }, 'API_KEYS_FILE');
  const cases: Record<string, string> = {
    empty: '[]',
    notJson: '{',
    notArray: '{}',
    badHash: JSON.stringify([{ client: 'a', namespace: 'n', sha256: 'abc' }]),
    badNamespace: JSON.stringify([{ client: 'a', namespace: 'has space', sha256: 'a'.repeat(64) }]),
    noClient: JSON.stringify([{ namespace: 'n', sha256: 'a'.repeat(64) }]),
    duplicate: JSON.stringify([
      { client: 'a', namespace: 'n', sha256: 'a'.repeat(64) },
      { client: 'b', namespace: 'n', sha256: 'A'.repeat(64) },
    ]),
  };
  for (const [name, text] of Object.entries(cases)) {
    const file = path.join(dir, `${name}.json`);
    writeFileSync(file, text);
    failsOn(t, { ...base, API_KEYS_FILE: file }, 'API_KEYS_FILE');
  }
});

t.test('a node list selects Redis Cluster mode', async (t) => {
  const c = loadConfig({ ...base, REDIS_CLUSTER_NODES: '10.0.0.1:7000, redis-1.svc:7001,[::1]:7002' });
  t.same(c.redis?.clusterNodes, [
    { host: '10.0.0.1', port: 7000 },
    { host: 'redis-1.svc', port: 7001 },
    { host: '::1', port: 7002 },
  ]);
  t.equal(c.redis?.url, undefined);
});

t.test('the keys file may carry per-namespace policies; the plain array stays valid', async (t) => {
  const file = path.join(dir, 'policies.json');
  writeFileSync(
    file,
    JSON.stringify({
      keys: [mintApiKey('shop-web', 'shop').entry, mintApiKey('blog', 'blog').entry],
      namespaces: {
        shop: { idleTimeoutSeconds: 600, idleTimeoutMaxSeconds: 3600, maxSessionsPerSubject: 3, rateLimit: { max: 500, windowSeconds: 1 }, clientTokens: true },
      },
    }),
  );
  const c = loadConfig({ ...base, API_KEYS_FILE: file, SESSIONS_PER_SUBJECT_MAX: '10', RATE_LIMIT_MAX: '1000' });
  t.equal(c.apiKeys.length, 2);
  t.match(c.policies.for('shop'), { idleTimeoutDefault: 600, idleTimeoutMax: 3600, absoluteTimeoutDefault: 43_200, maxSessionsPerSubject: 3, rateLimit: { max: 500, windowSeconds: 1 }, clientTokens: true });
  t.equal(c.policies.for('blog').clientTokens, false, 'client tokens are off by default');
  t.match(c.policies.for('blog'), { idleTimeoutDefault: 1800, maxSessionsPerSubject: 10, rateLimit: { max: 1000, windowSeconds: 60 } }, 'others get the environment defaults');
  t.equal(loadConfig(base).policies.for('ns').maxSessionsPerSubject, 0, 'no cap by default');
  const bad: Record<string, unknown> = {
    unknownField: { keys: [mintApiKey('a', 'n').entry], extra: 1 },
    unknownPolicy: { keys: [mintApiKey('a', 'n').entry], namespaces: { n: { colour: 'red' } } },
    negativeCap: { keys: [mintApiKey('a', 'n').entry], namespaces: { n: { maxSessionsPerSubject: -1 } } },
    clientTokensNotBoolean: { keys: [mintApiKey('a', 'n').entry], namespaces: { n: { clientTokens: 'yes' } } },
    defaultOverMax: { keys: [mintApiKey('a', 'n').entry], namespaces: { n: { idleTimeoutSeconds: 100, idleTimeoutMaxSeconds: 50 } } },
    badNamespace: { keys: [mintApiKey('a', 'n').entry], namespaces: { 'has space': {} } },
    noKeys: { namespaces: {} },
  };
  for (const [name, content] of Object.entries(bad)) {
    const f = path.join(dir, `${name}.json`);
    writeFileSync(f, JSON.stringify(content));
    failsOn(t, { ...base, API_KEYS_FILE: f }, 'API_KEYS_FILE');
  }
});

t.test('several entries per client are allowed (key rotation)', async (t) => {
  const file = path.join(dir, 'rotation.json');
  writeFileSync(file, JSON.stringify([mintApiKey('app', 'ns').entry, mintApiKey('app', 'ns').entry]));
  t.equal(loadConfig({ ...base, API_KEYS_FILE: file }).apiKeys.length, 2);
});

t.test('TLS and logins to Redis and MariaDB', async (t) => {
  const pki = await makeTestPki(path.join(t.testdir({}), 'pki'));
  const ca = readFileSync(pki.caFile, 'utf8');
  const c = loadConfig({
    ...base,
    REDIS_URL: 'rediss://cache-user:secret@cache.internal:6380/2',
    REDIS_TLS_CA_FILE: pki.caFile,
    REDIS_TLS_CERT_FILE: pki.clientCertFile,
    REDIS_TLS_KEY_FILE: pki.clientKeyFile,
    DATABASE_TLS_CA_FILE: pki.caFile,
  });
  t.equal(c.redis?.tls?.ca, ca, 'the Redis CA is read');
  t.match(c.redis?.tls, { cert: /BEGIN CERTIFICATE/, key: /PRIVATE KEY/ }, 'and the client certificate with its key');
  t.same(redisEndpoint(c.redis!), { host: 'cache.internal', port: 6380, db: 2, username: 'cache-user', password: 'secret', tls: true });
  t.same(c.db.tls, { ca }, 'a database CA turns TLS on');

  const cluster = loadConfig({ ...base, REDIS_CLUSTER_NODES: 'a:7000,b:7001', REDIS_USERNAME: 'app', REDIS_PASSWORD: 'secret', REDIS_TLS_CA_FILE: pki.caFile });
  t.match(cluster.redis, { username: 'app', password: 'secret', tls: { ca } }, 'a cluster: the user and TLS from the variables');
  t.same(loadConfig({ ...base, REDIS_CLUSTER_NODES: 'a:7000', REDIS_TLS: 'true' }).redis?.tls, {}, 'REDIS_TLS=true alone: the system CAs');
  t.same(loadConfig({ ...base, DATABASE_TLS: 'true' }).db.tls, {}, 'DATABASE_TLS=true alone: the system CAs');
  t.equal(loadConfig({ ...base, REDIS_URL: 'redis://a:1' }).redis?.tls, undefined, 'redis:// is plain TCP');
  t.equal(loadConfig(base).db.tls, undefined, 'no TLS to MariaDB unless asked for');
  t.same(
    redisEndpoint({ url: 'redis://a:1', username: 'app', password: 'secret' }),
    { host: 'a', port: 1, db: 0, username: 'app', password: 'secret', tls: false },
    'a URL without a login takes REDIS_USERNAME / REDIS_PASSWORD',
  );

  const redis = { ...base, REDIS_URL: 'rediss://u:secret@h:6380' };
  failsOn(t, { ...redis, REDIS_TLS_CA_FILE: path.join(pki.dir, 'missing.crt') }, 'REDIS_TLS_CA_FILE');
  failsOn(t, { ...redis, REDIS_TLS_CA_FILE: pki.clientKeyFile }, 'REDIS_TLS_CA_FILE');
  failsOn(t, { ...redis, REDIS_TLS_CERT_FILE: pki.clientCertFile }, 'REDIS_TLS_KEY_FILE');
  failsOn(t, { ...redis, REDIS_TLS_KEY_FILE: pki.clientKeyFile }, 'REDIS_TLS_CERT_FILE');
  failsOn(t, { ...redis, REDIS_TLS_CERT_FILE: pki.clientCertFile, REDIS_TLS_KEY_FILE: pki.serverKeyFile }, 'REDIS_TLS_KEY_FILE');
  failsOn(t, { ...redis, REDIS_TLS_CERT_FILE: pki.clientCertFile, REDIS_TLS_KEY_FILE: pki.caFile }, 'REDIS_TLS_KEY_FILE');
  failsOn(t, { ...base, REDIS_URL: 'redis://u:secret@h:1', REDIS_TLS_CA_FILE: pki.caFile }, 'REDIS_TLS_CA_FILE');
  failsOn(t, { ...redis, REDIS_TLS: 'false' }, 'REDIS_TLS');
  failsOn(t, { ...base, REDIS_URL: 'redis://u:secret@h:1', REDIS_TLS: 'true' }, 'REDIS_TLS');
  failsOn(t, { ...base, REDIS_CLUSTER_NODES: 'a:1', REDIS_TLS: 'false', REDIS_TLS_CA_FILE: pki.caFile }, 'REDIS_TLS_CA_FILE');
  failsOn(t, { ...base, REDIS_CLUSTER_NODES: 'a:1', REDIS_USERNAME: 'app' }, 'REDIS_PASSWORD');
  failsOn(t, { ...redis, REDIS_PASSWORD: 'secret' }, 'REDIS_PASSWORD');
  failsOn(t, { ...base, REDIS_URL: 'rediss://u@h:1' }, 'REDIS_URL');
  failsOn(t, { ...base, REDIS_URL: 'rediss://u:secret@h:1/?tls=false' }, 'REDIS_URL');
  failsOn(t, { ...base, REDIS_URL: 'rediss://u:secret@h:1/cache' }, 'REDIS_URL');
  failsOn(t, { ...base, DATABASE_URL: 'mysql://u:secret@h:3306/db?ssl=true' }, 'DATABASE_URL');
  failsOn(t, { ...base, DATABASE_TLS: 'false', DATABASE_TLS_CA_FILE: pki.caFile }, 'DATABASE_TLS_CA_FILE');
  failsOn(t, { ...base, DATABASE_TLS: 'required' }, 'DATABASE_TLS');
  failsOn(t, { ...base, DATABASE_TLS_KEY_FILE: pki.clientKeyFile }, 'DATABASE_TLS_CERT_FILE');

  // A key file given where a certificate belongs is never quoted back.
  try {
    loadConfig({ ...redis, REDIS_TLS_CA_FILE: pki.clientKeyFile });
  } catch (err) {
    t.notMatch((err as Error).message, /PRIVATE KEY|[A-Za-z0-9+/]{40}/, 'no key material in the message');
  }
});
