import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { freePort } from '../devstack/ports.js';
import { KEY_A } from './helpers/app.js';
import { migratedDatabase } from './helpers/mariadb.js';

// The production start path: the compiled server, as the Dockerfile runs it (`npm test` builds first).
const SERVER = path.resolve('dist/server.js');

function start(env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [SERVER], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return { child, output: () => out };
}

async function exitOf(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return code;
}

t.test('a bad setting stops the process with a message naming the variable', async (t) => {
  const { child, output } = start({ DATABASE_URL: 'mysql://u:p@127.0.0.1:1/db', PORT: 'eighty' });
  t.equal(await exitOf(child, 10_000), 2);
  t.match(output(), /API_KEYS_FILE|PORT/);
  const noKeys = start({ DATABASE_URL: 'mysql://u:p@127.0.0.1:1/db' });
  t.equal(await exitOf(noKeys.child, 10_000), 2);
  t.match(noKeys.output(), /API_KEYS_FILE: is required/);
});

t.test('SIGTERM lets in-flight requests finish, then the process exits cleanly', async (t) => {
  const url = await migratedDatabase(t);
  const dir = t.testdir({});
  const keysFile = path.join(dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify([KEY_A.entry]));
  const port = await freePort();
  const { child, output } = start({ DATABASE_URL: url, API_KEYS_FILE: keysFile, HOST: '127.0.0.1', PORT: String(port), SWEEPER_INTERVAL_SECONDS: '0' });
  t.teardown(() => child.kill('SIGKILL'));
  const base = `http://127.0.0.1:${port}`;
  // Start-up is not what this test measures: a loaded machine may take seconds to load the app.
  const deadline = Date.now() + 30_000;
  let up = false;
  while (!up && Date.now() < deadline && child.exitCode === null) {
    up = await fetch(`${base}/healthz`).then((r) => r.ok, () => false);
    if (!up) await sleep(100);
  }
  if (!up) t.fail(`no /healthz answer within 30 s:\n${output()}`);
  const headers = { authorization: `Bearer ${KEY_A.key}`, 'content-type': 'application/json' };
  const created = (await (await fetch(`${base}/v1/sessions`, { method: 'POST', headers, body: '{"data":{}}' })).json()) as { token: string; session: { id: string } };

  // Hold the session's row lock so that the PUTs below are provably in flight inside MariaDB.
  const blocker = await mysql.createConnection({ uri: url });
  t.teardown(() => blocker.end().catch(() => undefined));
  await blocker.beginTransaction();
  await blocker.query('SELECT version FROM sessions FOR UPDATE');
  const puts = Array.from({ length: 5 }, (_, i) =>
    fetch(`${base}/v1/sessions/current/data`, {
      method: 'PUT',
      headers: { ...headers, 'session-token': created.token, 'if-match': '"1"' },
      body: JSON.stringify({ i }),
    }).then((r) => r.status, (err: Error) => `failed: ${err.message}`),
  );
  await sleep(300);
  child.kill('SIGTERM');
  await sleep(300);
  t.equal(child.exitCode, null, 'still draining while requests are in flight');
  await blocker.commit();
  const statuses = await Promise.all(puts);
  t.same(statuses.filter((s) => s === 200), [200], 'one PUT won');
  t.equal(statuses.filter((s) => s === 412).length, 4, 'the rest answered 412: none was cut off');
  t.equal(await exitOf(child, 15_000), 0, 'exited cleanly');
  const logs = output();
  t.match(logs, /shutting down/);
  t.notOk(logs.includes(KEY_A.key), 'the API key is not in the logs');
  t.notOk(logs.includes(created.token), 'the token is not in the logs');
  for (const line of logs.trim().split('\n')) t.doesNotThrow(() => JSON.parse(line), 'logs are JSON lines');
});
