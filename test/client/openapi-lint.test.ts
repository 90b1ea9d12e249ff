import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse } from 'yaml';

/**
 * openapi.yaml passes `redocly lint` with the repository's redocly.yaml (the `recommended`
 * ruleset, tuned there): no error and no warning. The same lint as `npm run lint:openapi`.
 */

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REDOCLY = path.join(ROOT, 'node_modules/.bin/redocly');
const CONFIG = path.join(ROOT, 'redocly.yaml');
const OPENAPI = path.join(ROOT, 'openapi.yaml');

// Offline: no telemetry (also `telemetry: off` in redocly.yaml), no update check, no announcements.
const env = { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_NOTIFICATIONS: 'true', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' };

interface LintReport {
  totals: { errors: number; warnings: number; ignored: number };
  problems: { ruleId: string; severity: string; message: string; location: { pointer?: string }[] }[];
}

/** Runs the linter on a file; a config problem fails the run (--lint-config error). */
async function lint(file: string): Promise<{ report: LintReport; exitCode: number; stderr: string }> {
  const args = ['lint', file, '--config', CONFIG, '--lint-config', 'error', '--format', 'json', '--max-problems', '1000'];
  try {
    const { stdout, stderr } = await run(REDOCLY, args, { env, maxBuffer: 16 * 1024 * 1024 });
    return { report: JSON.parse(stdout) as LintReport, exitCode: 0, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (e.stdout === undefined || !e.stdout.trim().startsWith('{')) throw new Error(`redocly failed (exit ${e.code}): ${e.stderr}`);
    return { report: JSON.parse(e.stdout) as LintReport, exitCode: e.code ?? 1, stderr: e.stderr ?? '' };
  }
}

const describe = (report: LintReport) =>
  report.problems.map((p) => `${p.severity} ${p.ruleId} at ${p.location[0]?.pointer ?? '?'}: ${p.message}`).join('\n');

t.test('redocly.yaml keeps the linter offline', async (t) => {
  const config = parse(await readFile(CONFIG, 'utf8')) as { telemetry?: string; extends?: string[] };
  t.equal(config.telemetry, 'off', 'telemetry is off in the config, so `npm run lint:openapi` never phones home either');
  t.ok(config.extends?.includes('recommended'), 'the recommended ruleset');
});

t.test('openapi.yaml lints clean: no error, no warning', async (t) => {
  const { report, exitCode } = await lint(OPENAPI);
  t.equal(exitCode, 0, 'redocly lint succeeds');
  t.same(report.totals, { errors: 0, warnings: 0, ignored: 0 }, describe(report) || 'no problems');
});

t.test('the lint does catch a broken contract', async (t) => {
  // A 4xx answered as plain JSON instead of problem details, and an example that contradicts its schema.
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-lint-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const doc = parse(await readFile(OPENAPI, 'utf8')) as {
    paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown> }> }>>;
    components: { schemas: Record<string, { properties: Record<string, { examples?: unknown[] }> }> };
  };
  const notFound = doc.paths['/v1/sessions/current']!.get!.responses['404']!;
  notFound.content = { 'application/json': notFound.content!['application/problem+json'] };
  doc.components.schemas.Session!.properties.id!.examples = [42];
  const file = path.join(dir, 'broken.json');
  await writeFile(file, JSON.stringify(doc));

  const { report, exitCode } = await lint(file);
  t.not(exitCode, 0, 'redocly lint fails');
  const rules = report.problems.map((p) => p.ruleId);
  t.ok(rules.includes('operation-4xx-problem-details-rfc7807'), 'a 4xx without problem+json is an error', { found: describe(report) });
  t.ok(rules.includes('no-invalid-schema-examples'), 'an example that contradicts its schema is an error', { found: describe(report) });
});
