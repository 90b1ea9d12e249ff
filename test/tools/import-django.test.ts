import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import mysql from 'mysql2/promise';
import { ensurePythonDjango } from '../../devstack/installers.js';
import { encodeSessionData } from '../../tools/import/django-signing.js';
import { wallTimeToEpoch } from '../../tools/import/django.js';
import { importDjango, type ImportReport } from '../../tools/import/import-sessions.js';
import { auth, KEY_A, testApp } from '../helpers/app.js';
import { runImportCommand } from '../helpers/import-command.js';
import { emptyDatabase } from '../helpers/mariadb.js';

/**
 * The Django import: a real Django (Debian's python3-django, on the test's MariaDB through
 * python3-mysqldb; both installed with apt-get when missing) logs users in with
 * django.contrib.auth and keeps custom data in its db session engine; the import moves the
 * django_session rows into sessiond; the same site on sessiond_django's engine then reads the
 * same cookies and sees the same users and data, and can write to them.
 * The site is test/tools/django-import/site.py.
 */

/** apt-get installs take minutes once on a clean machine; Django's migrations on MariaDB take a while. */
t.setTimeout(10 * 60_000);
const SITE = 'test/tools/django-import/site.py';
const SECRET_KEY = 'django-insecure-the-app-key-after-the-rotation-0123456789';
const OLD_SECRET_KEY = 'django-insecure-the-app-key-before-the-rotation-987654321';

const python = await ensurePythonDjango((m) => t.comment(m), { mysql: true });
const djangoDb = await emptyDatabase(t);
const { app: sessiond } = await testApp(t, {}, {
  // Django's SESSION_COOKIE_AGE is two weeks: the namespace lets sessions live that long.
  namespaces: { 'tenant-a': { clientTokens: true, idleTimeoutMax: 30 * 86_400, absoluteTimeoutMax: 30 * 86_400 } },
});
await sessiond.listen({ host: '127.0.0.1', port: 0 });
const sessiondUrl = `http://127.0.0.1:${(sessiond.server.address() as AddressInfo).port}`;

/** Runs site.py to completion and parses the JSON it prints. */
function site(mode: 'before' | 'after', input = ''): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, [SITE, mode], {
      env: { ...process.env, DJANGO_DATABASE_URL: djangoDb, SECRET_KEY, OLD_SECRET_KEY, SESSIOND_URL: sessiondUrl, SESSIOND_API_KEY: KEY_A.key, PYTHONWARNINGS: 'ignore' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 5 * 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`site.py ${mode} exited with ${code}:\n${stderr}`));
      else resolve(JSON.parse(stdout) as Record<string, unknown>);
    });
    child.stdin.end(input);
  });
}

const db = await mysql.createConnection({ uri: djangoDb, timezone: 'Z', dateStrings: true });
t.teardown(() => db.end());
const rowOf = async (key: string) => {
  const [rows] = await db.query('SELECT session_data, expire_date FROM django_session WHERE session_key = ?', [key]);
  return (rows as Array<{ session_data: string; expire_date: string }>)[0]!;
};

// Django writes the sessions; frank's then expires, and rows an import must survive are added.
const keys = (await site('before')) as Record<string, string>;
await db.query('UPDATE django_session SET expire_date = UTC_TIMESTAMP() - INTERVAL 1 MINUTE WHERE session_key = ?', [keys.frank]);
const bad = { tampered: 'x'.repeat(32), short: 'tooshort', notAnObject: 'y'.repeat(32) };
await db.query('INSERT INTO django_session VALUES (?, ?, UTC_TIMESTAMP() + INTERVAL 1 HOUR), (?, ?, UTC_TIMESTAMP() + INTERVAL 1 HOUR)', [
  bad.tampered,
  `${(await rowOf(keys.alice!)).session_data.slice(0, -3)}AAA`,
  bad.short,
  (await rowOf(keys.alice!)).session_data,
]);
await db.query('INSERT INTO django_session VALUES (?, ?, UTC_TIMESTAMP() + INTERVAL 1 HOUR)', [bad.notAnObject, encodeSessionData(Buffer.from('[1,2,3]'), SECRET_KEY)]);

const options = {
  databaseUrl: djangoDb,
  secretKeys: [SECRET_KEY, OLD_SECRET_KEY],
  serializer: 'django.contrib.sessions.serializers.PickleSerializer',
  target: { url: sessiondUrl, apiKey: KEY_A.key },
};
const live = ['alice', 'bob', 'carol', 'dave', 'erin'];

t.test('Django wrote every format the import reads', async (t) => {
  t.match((await rowOf(keys.dave!)).session_data, /^[\w-]+:\w+:[\w-]+$/, 'dave: signing.dumps, uncompressed');
  t.match((await rowOf(keys.bob!)).session_data, /^\.[\w-]+:\w+:[\w-]+$/, 'bob: signing.dumps, compressed');
  t.notMatch((await rowOf(keys.carol!)).session_data, /:/, 'carol: the format before Django 3.1 (base64 of hash:json)');
});

t.test("expire_date in the app's TIME_ZONE (USE_TZ = False) is read as that zone's wall time", async (t) => {
  t.equal(new Date(wallTimeToEpoch('2026-01-15 12:00:00.250000')).toISOString(), '2026-01-15T12:00:00.250Z', 'UTC by default');
  t.equal(new Date(wallTimeToEpoch('2026-01-15 12:00:00', 'America/Chicago')).toISOString(), '2026-01-15T18:00:00.000Z', 'winter: UTC-6');
  t.equal(new Date(wallTimeToEpoch('2026-07-15 12:00:00', 'America/Chicago')).toISOString(), '2026-07-15T17:00:00.000Z', 'summer: UTC-5');
  const repeated = new Date(wallTimeToEpoch('2026-10-25 02:30:00', 'Europe/Berlin')).toISOString();
  t.ok(['2026-10-25T00:30:00.000Z', '2026-10-25T01:30:00.000Z'].includes(repeated), `the hour repeated when DST ends: one of its two instants (${repeated})`);
  t.ok(Number.isNaN(wallTimeToEpoch('not a date')));
});

let report: ImportReport;
t.test('imports the live sessions under their keys with their remaining lifetime', async (t) => {
  report = await importDjango(options);
  t.match(report, { imported: live.length, skippedExpired: 1, skippedPresent: 0 });
  const publicId = (id: string) => createHash('sha256').update(id).digest('base64url');
  t.same(
    Object.fromEntries(report.failed.map((f) => [f.session, f.reason])),
    {
      [publicId(bad.tampered)]: 'the signature matches neither SECRET_KEY nor any of SECRET_KEY_FALLBACKS',
      [publicId(bad.short)]: 'the id is not 32-256 characters of A-Z, a-z, 0-9, "_" and "-"',
      [publicId(bad.notAnObject)]: 'the session is not a JSON object',
    },
    'bad rows are reported by public id with a reason',
  );
  for (const name of live) {
    const key = keys[name]!;
    const res = await sessiond.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(), 'session-token': key } });
    t.equal(res.statusCode, 200, `${name}: reads back through sessiond under the Django session key`);
    const s = res.json() as { data: Record<string, unknown>; subject?: string; expiresAt: string };
    const expireDate = Date.parse(`${(await rowOf(key)).expire_date.replace(' ', 'T')}Z`);
    const drift = Date.parse(s.expiresAt) - expireDate;
    t.ok(Math.abs(drift) < 5000, `${name}: expires when the Django row does (off by ${drift} ms)`);
    if (name === 'erin') {
      t.same(Object.keys(s.data), ['djangoSession'], "erin (PickleSerializer): kept in the engine's envelope");
    } else {
      t.type(s.data.cart, Array, `${name}: the session dict is sessiond's data`);
    }
    if (['alice', 'bob', 'carol'].includes(name)) t.equal(s.subject, s.data._auth_user_id, `${name}: the user is the subject`);
    else t.equal(s.subject ?? null, null, `${name}: no user, no subject`);
  }
});

t.test('a re-run skips what is there and changes nothing', async (t) => {
  const again = await importDjango(options);
  t.match(again, { imported: 0, skippedExpired: 1, skippedPresent: live.length });
  t.equal(again.failed.length, 3);
});

t.test('the same cookies keep working on the sessiond_django engine', async (t) => {
  const seen = (await site('after', JSON.stringify(keys))) as Record<string, { first: { user: string | null; data: Record<string, unknown>; expiryAge: number }; second: { data: Record<string, unknown> }; sameKey: boolean }>;
  const expect: Record<string, { user: string | null; data: Record<string, unknown> }> = {
    alice: { user: 'alice', data: { cart: ['tea', 'biscuits'], theme: 'dark' } },
    bob: { user: 'bob', data: { cart: Array.from({ length: 200 }, (_, i) => `sku-${i % 7}`), _session_expiry: 600 } },
    carol: { user: 'carol', data: { cart: ['legacy'] } },
    dave: { user: null, data: { cart: ['from before the key rotation'] } },
    erin: { user: null, data: { cart: ['pickled'], when: '2026-01-02T03:04:05' } },
    frank: { user: null, data: {} },
  };
  for (const [name, want] of Object.entries(expect)) {
    t.same({ user: seen[name]!.first.user, data: seen[name]!.first.data }, want, `${name}: Django sees the same user and data`);
    if (name !== 'frank') {
      t.same(seen[name]!.second.data, { ...want.data, visited: true }, `${name}: a write through the engine lands on the imported session`);
      t.ok(seen[name]!.sameKey, `${name}: under the same key`);
    }
  }
  t.equal(seen.bob!.first.expiryAge, 600, "bob: his set_expiry(600) is still Django's expiry");
});

t.test('the command prints a report and progress, never a session key or the secret key', async (t) => {
  const { code, stdout, stderr } = await runImportCommand(['django', '--database', djangoDb, '--sessiond', sessiondUrl, '--serializer', options.serializer], {
    SESSIOND_API_KEY: KEY_A.key,
    DJANGO_SECRET_KEY: SECRET_KEY,
    DJANGO_SECRET_KEY_FALLBACKS: `${OLD_SECRET_KEY}\n`,
  });
  t.equal(code, 1, 'exit code 1: some rows failed');
  t.match(JSON.parse(stdout), { imported: 0, skippedPresent: live.length, skippedExpired: 1 });
  t.match(stderr, new RegExp(`done: 0 imported, 1 skipped \\(expired\\), ${live.length} skipped \\(present\\), 3 failed`));
  for (const secret of [...Object.values(keys), SECRET_KEY, OLD_SECRET_KEY]) t.notOk(`${stdout}${stderr}`.includes(secret), 'no session key or secret in the output');
});

t.test('the command refuses to run without a secret key, saying what is missing', async (t) => {
  const { code, stderr } = await runImportCommand(['django', '--database', djangoDb, '--sessiond', sessiondUrl], { SESSIOND_API_KEY: KEY_A.key, DJANGO_SECRET_KEY: '' });
  t.equal(code, 2);
  t.match(stderr, /^DJANGO_SECRET_KEY is missing\nusage:/);
});
