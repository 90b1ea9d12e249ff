/**
 * The folder tree is the architecture: `src/` is the service and nothing else (what `dist/` and
 * the image hold), the development tooling lives in `devstack/`; inside src/ the layers depend
 * downward only (.dependency-cruiser.cjs).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { dockerfileStages } from './helpers/dockerfile.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function filesUnder(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));
}

t.test('dist/ and the image hold only the service', async (t) => {
  const tsconfig = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.json'), 'utf8')) as { include: string[]; compilerOptions: { rootDir: string } };
  t.same(tsconfig.include, ['src/**/*.ts'], 'the build compiles src/ only');
  t.equal(tsconfig.compilerOptions.rootDir, 'src', '… from src/ as its root');

  const stages = dockerfileStages();
  const copied = (stage: string) => (stages.get(stage) ?? []).filter((i) => i.keyword === 'COPY').map((i) => i.rest);
  t.same(copied('build'), ['tsconfig.json ./', 'src ./src'], 'the build stage gets tsconfig.json and src/ only');
  t.same(
    copied('runtime').filter((c) => c.startsWith('--from=')),
    ['--from=build /app/dist ./dist'],
    'the runtime image gets dist/ only from the build',
  );

  // Nothing under src/ reaches out of it (tooling and tests depend on the service, never the reverse).
  for (const file of filesUnder('src').filter((f) => f.endsWith('.ts'))) {
    const source = readFileSync(path.join(ROOT, file), 'utf8');
    for (const [, spec] of source.matchAll(/\bfrom\s+'(\.[^']+)'/g)) {
      const target = path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, file)), spec!));
      if (!target.startsWith(`src${path.sep}`)) t.fail(`${file} imports ${spec} (outside src/)`);
    }
  }
  t.notOk(filesUnder('src').some((f) => f.startsWith(path.join('src', 'devstack'))), 'no devstack/ under src/');
});

t.test('test-only switches are read by the test entry point, never by the service', async (t) => {
  const readers = filesUnder('src').filter((f) => /SESSIOND_TEST_/.test(readFileSync(path.join(ROOT, f), 'utf8')));
  t.same(readers, [], 'no file under src/ names a SESSIOND_TEST_ variable');
  t.match(readFileSync(path.join(ROOT, 'test/helpers/test-server.mjs'), 'utf8'), /SESSIOND_TEST_UNSAFE_FILL/, 'test/helpers/test-server.mjs reads SESSIOND_TEST_UNSAFE_FILL');
});

t.test('layers depend downward only, without cycles (dependency-cruiser)', async (t) => {
  const bin = path.join(ROOT, 'node_modules', '.bin', 'depcruise');
  const run = await promisify(execFile)(bin, ['src', '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], { cwd: ROOT, timeout: 60_000 }).then(
    (r) => ({ code: 0, output: r.stdout + r.stderr }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: err.code ?? 1, output: `${err.stdout ?? ''}${err.stderr ?? ''}` }),
  );
  t.equal(run.code, 0, `npx depcruise src reports no violation\n${run.output}`);
});
