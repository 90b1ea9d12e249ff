import t, { type Test } from 'tap';
import { Writable } from 'node:stream';
import { buildApp, REDACTED_LOG_PATHS } from '../../src/app.js';
import { testConfig, auth, KEY_A } from '../helpers/app.js';
import { migratedDatabase } from '../helpers/mariadb.js';

const url = await migratedDatabase(t);

interface Line {
  level: number;
  msg: string;
  req?: { method: string; url: string };
  res?: { statusCode: number };
  responseTime?: number;
  client?: string;
}

/** An app logging at `level` into memory, with one extra route that answers 503. */
async function appWith(t: Test, level: string, logRequests?: string) {
  const lines: Line[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const text of String(chunk).split('\n')) if (text.trim() !== '') lines.push(JSON.parse(text) as Line);
      done();
    },
  });
  const config = testConfig(url, {}, logRequests === undefined ? {} : { LOG_REQUESTS: logRequests });
  const app = await buildApp(config, { logger: { level, stream, redact: { paths: REDACTED_LOG_PATHS, censor: '[redacted]' } } });
  app.get('/unavailable', async (_request, reply) => reply.code(503).send({ status: 'unavailable' }));
  t.teardown(() => app.close());
  await app.ready();
  const completed = () => lines.filter((l) => l.msg === 'request completed');
  return { app, lines, completed };
}

t.test('default (errors): a 2xx or 4xx answer writes no info line, a 5xx answer writes one', async (t) => {
  const { app, lines, completed } = await appWith(t, 'info');
  await app.inject({ method: 'GET', url: '/healthz' });
  await app.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(KEY_A), 'session-token': 'x'.repeat(43) } });
  t.same(completed(), [], 'nothing for 200 and 404');
  t.equal(lines.filter((l) => l.msg === 'incoming request').length, 0, 'no "incoming request" at info');
  await app.inject({ method: 'GET', url: '/unavailable' });
  const [line, ...rest] = completed();
  t.equal(rest.length, 0, 'one line for the 503');
  t.equal(line?.level, 30, 'at info');
  t.equal(line?.res?.statusCode, 503);
  t.equal(line?.req?.method, 'GET');
  t.equal(line?.req?.url, '/unavailable');
  t.type(line?.responseTime, 'number');
});

t.test('all: exactly one info line per request, with the caller bound', async (t) => {
  const { app, lines, completed } = await appWith(t, 'info', 'all');
  await app.inject({ method: 'GET', url: '/healthz' });
  await app.inject({ method: 'POST', url: '/v1/sessions', headers: auth(KEY_A), payload: {} });
  t.equal(completed().length, 2, 'one line each');
  t.equal(lines.filter((l) => l.msg === 'incoming request').length, 0, 'and no second line per request');
  const create = completed().find((l) => l.req?.url === '/v1/sessions');
  t.equal(create?.res?.statusCode, 201);
  t.equal(create?.client, KEY_A.entry.client, 'the API client is named (never its key)');
});

t.test('none: not even a 5xx answer writes a request line', async (t) => {
  const { app, completed } = await appWith(t, 'info', 'none');
  await app.inject({ method: 'GET', url: '/unavailable' });
  t.same(completed(), []);
});

t.test('at debug both lines are there whatever the setting', async (t) => {
  const { app, lines, completed } = await appWith(t, 'debug');
  await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(completed().length, 1);
  t.equal(completed()[0]?.level, 20, '"request completed" at debug');
  t.equal(lines.filter((l) => l.msg === 'incoming request' && l.level === 20).length, 1, '"incoming request" at debug');
});

t.test('LOG_REQUESTS must be one of all, errors, none', async (t) => {
  t.throws(() => testConfig(url, {}, { LOG_REQUESTS: 'some' }), /LOG_REQUESTS: must be one of all, errors, none/);
});
