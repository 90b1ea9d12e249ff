/**
 * The Django session engine (clients/django) against a real sessiond on a private MariaDB + Redis:
 * its Python test suite (Django's session-store and middleware expectations, concurrency, failures),
 * then the example shop in headless Chromium. Debian's python3-django and chromium are installed
 * with apt-get when missing.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { findBinary } from '../../devstack/binaries.js';
import { ensureChromium, ensurePythonDjango } from '../../devstack/installers.js';
import { freePort } from '../../devstack/ports.js';
import { stack, type ServiceProcess } from '../helpers/service-process.js';

const CLIENT_DIR = path.resolve('clients/django');
const EXAMPLE_DIR = path.join(CLIENT_DIR, 'example');
const PYTHON_TIMEOUT_MS = 180_000;
const PAGE_TIMEOUT_MS = 30_000;
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** apt-get installs (python3-django, chromium) take minutes once on a clean machine. */
t.setTimeout(findBinary('chromium') === undefined ? 15 * 60_000 : 5 * 60_000);

interface Run {
  code: number | null;
  output: string;
}

/** Runs a Python script to completion (SIGKILL after the time limit) and keeps its output. */
function runPython(python: string, args: string[], env: Record<string, string>, cwd = CLIENT_DIR): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(python, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += String(d)));
    child.stderr.on('data', (d) => (output += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), PYTHON_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** The closing "N passed, N failed, N skipped" line of runtests.py. */
function counts(output: string): { passed: number; failed: number; skipped: number } | undefined {
  const m = /^(\d+) passed, (\d+) failed, (\d+) skipped$/m.exec(output);
  return m ? { passed: Number(m[1]), failed: Number(m[2]), skipped: Number(m[3]) } : undefined;
}

const python = await ensurePythonDjango((m) => t.comment(m));
const services = await stack(t);
const service: ServiceProcess = await services.service(t);
const sessiondEnv = { SESSIOND_URL: service.url, SESSIOND_API_KEY: services.key.key };

for (const useTz of ['0', '1']) {
  t.test(`the engine's Python tests pass against sessiond (USE_TZ=${useTz})`, async (t) => {
    const run = await runPython(python, ['tests/runtests.py'], { ...sessiondEnv, USE_TZ: useTz });
    const result = counts(run.output);
    t.equal(run.code, 0, 'runtests.py exits 0');
    t.ok(result, 'it ends with its counts line');
    t.equal(result?.failed, 0, 'no test failed');
    t.ok((result?.passed ?? 0) >= 110, `all ran (${result?.passed} passed)`);
    if (run.code !== 0 || result?.failed !== 0) t.comment(run.output);
  });
}

t.test('the example shop in headless Chromium', async (t) => {
  const executablePath = await ensureChromium((m) => t.comment(m));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-django-example-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { ...sessiondEnv, EXAMPLE_DB: path.join(dir, 'db.sqlite3'), DJANGO_SUPERUSER_PASSWORD: 'correct-horse-battery' };
  for (const args of [['migrate', '--noinput'], ['createsuperuser', '--noinput', '--username', 'alice', '--email', 'alice@example.test']]) {
    const run = await runPython(python, ['manage.py', ...args], env, EXAMPLE_DIR);
    t.equal(run.code, 0, `manage.py ${args[0]}`, { output: run.output });
  }

  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const server: ChildProcess = spawn(python, ['manage.py', 'runserver', '--noreload', `127.0.0.1:${port}`], {
    cwd: EXAMPLE_DIR,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let serverOutput = '';
  server.stdout!.on('data', (d) => (serverOutput += String(d)));
  server.stderr!.on('data', (d) => (serverOutput += String(d)));
  t.teardown(() => {
    if (!t.passing()) t.comment(`runserver output:\n${serverOutput}`);
    server.kill('SIGKILL');
  });
  for (let i = 0; ; i++) {
    const up = await fetch(`${origin}/login/`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false);
    if (up) break;
    if (i > 200 || server.exitCode !== null) throw new Error(`the example server did not start:\n${serverOutput}`);
    await sleep(100);
  }

  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, timeout: 60_000 });
  t.teardown(() => browser.close());
  t.saveFixture = true; // keep the screenshots for humans (under .tap/fixtures/, replaced on every run)
  const shots = t.testdir({});
  const screenshot = (page: Page, name: string) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  const newContext = async (userAgent: string) => {
    const context = await browser.newContext({ userAgent, viewport: { width: 1000, height: 700 } });
    context.setDefaultTimeout(PAGE_TIMEOUT_MS);
    return context;
  };
  const sessionCookie = async (context: BrowserContext) => (await context.cookies(origin)).find((c) => c.name === 'sessionid');
  const logIn = async (page: Page) => {
    await page.goto(`${origin}/cart/`);
    t.equal(new URL(page.url()).pathname, '/login/', 'a signed-out visitor is sent to the login page');
    await page.fill('#id_username', 'alice');
    await page.fill('#id_password', 'correct-horse-battery');
    await Promise.all([page.waitForURL(`${origin}/cart/`), page.click('#sign-in')]);
    t.equal(await page.locator('#who').innerText(), 'Signed in as alice', 'the login went through');
  };

  // 1. Log in: the cookie is the sessiond token, HttpOnly, and the session belongs to the user.
  const laptop = await newContext('Laptop browser');
  const page = await laptop.newPage();
  await page.goto(`${origin}/login/`);
  await screenshot(page, '1-login');
  await logIn(page);
  const cookie = await sessionCookie(laptop);
  t.ok(cookie, 'a sessionid cookie is set');
  t.equal(cookie?.httpOnly, true, 'the cookie is HttpOnly');
  t.match(cookie?.value, /^[A-Za-z0-9_-]{43}$/, 'the cookie holds a token of sessiond\'s shape');
  const read = await service.client.read(cookie!.value);
  t.equal(read.status, 200, 'sessiond knows the token');
  t.equal(read.body.subject, '1', 'the session belongs to the user (subject = user id)');
  t.equal(read.body.data._auth_user_id, '1', "Django's auth data is plain JSON in the session");
  t.same(read.body.metadata, { userAgent: 'Laptop browser', ip: '127.0.0.1' }, 'the device is described');

  // 2. The cart survives reloads.
  for (const item of ['tea', 'biscuits']) {
    await page.fill('#item', item);
    await Promise.all([page.waitForURL(`${origin}/cart/`), page.click('#add')]);
  }
  await page.reload();
  t.same(await page.locator('#cart li').allInnerTexts(), ['tea', 'biscuits'], 'the cart is still there after a reload');
  t.same((await service.client.read((await sessionCookie(laptop))!.value)).body.data.cart, ['tea', 'biscuits'], 'sessiond holds the cart');
  await screenshot(page, '2-cart');

  // 3. A second browser logs in as the same user.
  const phone = await newContext('Phone browser');
  const phonePage = await phone.newPage();
  await logIn(phonePage);
  await screenshot(phonePage, '3-second-browser');
  const phoneToken = (await sessionCookie(phone))!.value;

  // 4. "Your devices" lists both; "log out everywhere else" in the first.
  await page.goto(`${origin}/devices/`);
  t.equal(await page.locator('#devices tr.current').count(), 1, 'this device is marked');
  t.equal(await page.locator('#devices tr.other').count(), 1, 'the other device is listed');
  t.match(await page.locator('#devices tr.other').innerText(), /Phone browser/, 'with its user agent');
  await screenshot(page, '4-devices');
  await Promise.all([page.waitForURL(`${origin}/devices/`), page.click('#log-out-others')]);
  t.match(await page.locator('.message').innerText(), /Logged out 1 other session\./, 'one other session was revoked');
  t.equal(await page.locator('#devices tr.other').count(), 0, 'only this device is left');
  await screenshot(page, '5-logged-out-elsewhere');

  // 5. The second browser is logged out on its next request; the first is not.
  t.equal((await service.client.read(phoneToken)).status, 404, "the second browser's token is dead");
  await phonePage.goto(`${origin}/cart/`);
  t.equal(new URL(phonePage.url()).pathname, '/login/', 'the second browser is sent to the login page');
  await screenshot(phonePage, '6-second-browser-logged-out');
  await page.goto(`${origin}/cart/`);
  t.same(await page.locator('#cart li').allInnerTexts(), ['tea', 'biscuits'], 'the first browser keeps its session and cart');

  // 6. Log out: the session is destroyed on sessiond.
  const lastToken = (await sessionCookie(laptop))!.value;
  await Promise.all([page.waitForURL(`${origin}/login/`), page.click('#logout')]);
  await screenshot(page, '7-logged-out');
  t.equal((await service.client.read(lastToken)).status, 404, 'logging out destroyed the session');
  t.comment(`screenshots: ${shots}`);
  for (const token of [cookie!.value, phoneToken, lastToken]) t.notOk(serverOutput.includes(token), 'the example server never logged a token');
});
