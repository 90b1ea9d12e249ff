import t from 'tap';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { parse } from 'yaml';
import { findBinary } from '../../devstack/binaries.js';
import { ensureChromium } from '../../devstack/installers.js';
import { auth, KEY_A, testApp } from '../helpers/app.js';

/** Installing Chromium on a clean machine (apt-get update + install) takes a few minutes once. */
if (findBinary('chromium') === undefined) t.setTimeout(10 * 60_000);

/** Without the background-networking flags Chromium calls home, which this closed network refuses. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const LAUNCH_TIMEOUT_MS = 60_000;
const PAGE_TIMEOUT_MS = 30_000;
const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);

interface Operation {
  method: string;
  path: string;
  operationId: string;
  summary: string;
}

type Document = { paths: Record<string, Record<string, { operationId?: string; summary?: string }>>; servers?: Array<{ url: string }> };

/** Every operation of the document the service generates (the one openapi.yaml is written from). */
function documentedOperations(document: Document): Operation[] {
  return Object.entries(document.paths)
    .flatMap(([p, methods]) =>
      Object.entries(methods)
        .filter(([m]) => HTTP_METHODS.has(m))
        .map(([m, op]) => ({ method: m.toUpperCase(), path: p, operationId: op.operationId ?? '', summary: op.summary ?? '' })),
    )
    .sort((a, b) => `${a.path} ${a.method}`.localeCompare(`${b.path} ${b.method}`));
}

/** The operations Swagger UI shows: one `.opblock` per operation (per tag), visible on the page. */
async function renderedOperations(page: Page): Promise<Operation[]> {
  const rows = await page.$$eval('.opblock', (blocks) =>
    blocks.map((block) => {
      const text = (selector: string) => (block.querySelector(selector)?.textContent ?? '').replace(/[\u200b\s]+/g, ' ').trim();
      const pathEl = block.querySelector('.opblock-summary-path');
      return {
        method: text('.opblock-summary-method'),
        path: pathEl?.getAttribute('data-path') ?? text('.opblock-summary-path').replace(/ /g, ''),
        operationId: text('.opblock-summary-operation-id'),
        summary: text('.opblock-summary-description'),
        visible: (block as HTMLElement).checkVisibility() && (pathEl as HTMLElement | null)?.checkVisibility() === true,
      };
    }),
  );
  const unique = new Map<string, Operation>();
  for (const { visible, ...op } of rows) if (visible) unique.set(`${op.method} ${op.path} ${op.operationId}`, op);
  return [...unique.values()].sort((a, b) => `${a.path} ${a.method}`.localeCompare(`${b.path} ${b.method}`));
}

t.test('reference page in headless Chromium', async (t) => {
  // Every operation rendered, nothing loaded from anywhere but this origin, "Try it out" calls it.
  const installStarted = Date.now();
  const executablePath = await ensureChromium((m) => t.comment(m));
  t.comment(`chromium at ${executablePath} (ensured in ${Date.now() - installStarted} ms)`);

  const { app } = await testApp(t);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const origin = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const expected = documentedOperations(app.swagger() as unknown as Document);
  t.ok(expected.length >= 11, `the document has operations (${expected.length})`);

  const launchStarted = Date.now();
  const browser: Browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, timeout: LAUNCH_TIMEOUT_MS });
  t.teardown(() => browser.close());
  t.comment(`chromium ${browser.version()} launched in ${Date.now() - launchStarted} ms`);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(PAGE_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(PAGE_TIMEOUT_MS);

  // Every request the page (or a worker of it) makes, and everything it complains about.
  const requests: string[] = [];
  const complaints: string[] = [];
  context.on('request', (request) => requests.push(request.url()));
  context.on('requestfailed', (request) => complaints.push(`request failed: ${request.url()} ${request.failure()?.errorText ?? ''}`));
  const page = await context.newPage();
  page.on('pageerror', (err) => complaints.push(`page error: ${err.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') complaints.push(`console ${message.type()}: ${message.text()}`);
  });

  const response = await page.goto(`${origin}/docs`, { waitUntil: 'load' });
  t.equal(response?.status(), 200, '/docs answers 200 without an API key');
  await page.waitForFunction((n) => document.querySelectorAll('.opblock').length >= n, expected.length, { timeout: PAGE_TIMEOUT_MS });
  t.equal(await page.title(), 'sessiond API reference');
  t.match(await page.locator('.info .title').innerText(), /sessiond/, 'the document title is shown');

  const rendered = await renderedOperations(page);
  t.same(rendered, expected, 'every operation (method, path, operationId, summary) is rendered and visible');
  for (const op of expected) {
    t.ok(await page.locator(`.opblock-summary-path[data-path="${op.path}"]`).first().isVisible(), `${op.method} ${op.path} is visible`);
  }

  t.saveFixture = true; // keep the screenshot for humans (under .tap/fixtures/, replaced on every run)
  const screenshot = path.join(t.testdir({}), 'docs.png');
  await page.screenshot({ path: screenshot, fullPage: true, timeout: PAGE_TIMEOUT_MS });
  t.comment(`screenshot: ${screenshot}`);

  // "Try it out": authorize with an API key, create a session with the example body.
  await page.locator('.auth-wrapper button.authorize').click();
  const modal = page.locator('.modal-ux');
  await modal.locator('input').first().fill(KEY_A.key);
  await modal.locator('button.authorize').click();
  await modal.locator('button.btn-done').click();
  const create = page.locator('#operations-sessions-createSession');
  await create.locator('.opblock-summary').first().click();
  await create.locator('button.try-out__btn').click();
  await create.locator('button.execute').click();
  const status = create.locator('.live-responses-table tbody .response-col_status').first();
  await status.waitFor();
  t.equal((await status.innerText()).trim(), '201', 'Try it out created a session (201)');
  const call = requests.find((url) => url.startsWith(`${origin}/v1/sessions`));
  t.equal(call, `${origin}/v1/sessions`, 'Try it out called this origin');
  const listed = await app.inject({ method: 'GET', url: '/v1/subjects/user-42/sessions', headers: auth(KEY_A) });
  t.equal(listed.statusCode, 200);
  t.equal((listed.json() as { sessions: unknown[] }).sessions.length, 1, 'the session exists in the namespace of the key used');

  const foreign = requests.filter((url) => !url.startsWith(`${origin}/`) && !url.startsWith('data:') && !url.startsWith('blob:'));
  t.same(foreign, [], 'no request left this origin on the loopback');
  t.same(complaints, [], 'no errors, CSP violations or failed requests');
  t.ok(requests.some((url) => url === `${origin}/docs/static/swagger-ui-bundle.js`), 'Swagger UI comes from this service');
});

t.test('the page and the document are served without an API key and stay out of the document', async (t) => {
  const { app } = await testApp(t);
  const page = await app.inject({ method: 'GET', url: '/docs' });
  t.equal(page.statusCode, 200);
  t.match(page.headers['content-type'], /^text\/html/);
  t.match(page.body, /<title>sessiond API reference<\/title>/);
  t.match(page.headers['content-security-policy'], /connect-src 'self'/);
  t.notMatch(page.body, /https?:\/\//, 'the page references nothing absolute, let alone remote');

  const initializer = await app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' });
  t.equal(initializer.statusCode, 200);
  t.match(initializer.body, /validatorUrl: null/, 'no validator badge (it would load from validator.swagger.io)');
  const code = initializer.body.replace(/^\s*\/\/.*$/gm, ''); // comments may cite URLs
  t.notMatch(code, /https?:\/\//, 'the initializer references nothing remote');

  const generated = app.swagger() as unknown as Document;
  t.notOk(Object.keys(generated.paths).some((p) => p.startsWith('/docs')), 'the reference page is not an operation');

  const json = await app.inject({ method: 'GET', url: '/docs/json' });
  t.equal(json.statusCode, 200);
  const served = json.json() as Document;
  t.same(served.servers?.[0], { url: '/', description: 'This server (the origin serving this page)' }, 'Try it out targets this origin');
  t.same({ ...served, servers: undefined }, { ...generated, servers: undefined }, 'otherwise the document is what openapi.yaml holds');
  t.same(served.servers?.slice(1), generated.servers, 'the documented servers follow');

  const yaml = await app.inject({ method: 'GET', url: '/docs/yaml' });
  t.equal(yaml.statusCode, 200);
  t.same(parse(yaml.body), served, '/docs/yaml is the same document');
});

t.test('DOCS_ENABLED=false: no reference page', async (t) => {
  const { app } = await testApp(t, {}, { env: { DOCS_ENABLED: 'false' } });
  for (const url of ['/docs', '/docs/', '/docs/json', '/docs/yaml', '/docs/static/swagger-ui-bundle.js']) {
    const res = await app.inject({ method: 'GET', url });
    t.equal(res.statusCode, 404, `${url} is 404`);
    t.match(res.headers['content-type'], /^application\/problem\+json/, `${url} answers problem+json`);
    t.match(res.json(), { status: 404, code: 'route_not_found' });
  }
});
