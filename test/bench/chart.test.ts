/**
 * bench/chart.mjs draws a results file as an SVG: run as bench/run.sh runs it, on a small fixture
 * (no servers), it must write an SVG that names every scenario, shows its req/s and p99, and the
 * paired ratios with their baselines.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURE = path.join(ROOT, 'test/bench/fixtures/results.json');
const run = promisify(execFile);

interface Fixture {
  runs: Record<string, { rps: number; p99: number }>;
  paired: Record<string, { median: number }>;
}

async function chart(t: Test, results: string): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sessiond-chart-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const input = path.join(dir, 'results.json');
  const output = path.join(dir, 'chart.svg');
  writeFileSync(input, results);
  await run(process.execPath, [path.join(ROOT, 'bench/chart.mjs'), input, output], { cwd: ROOT });
  return readFileSync(output, 'utf8');
}

/** The texts of the SVG's <text> elements. */
const textsOf = (svg: string) => [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!);

t.test('the chart of a results file is an SVG naming every scenario with its req/s and p99', async (t) => {
  const text = readFileSync(FIXTURE, 'utf8');
  const fixture = JSON.parse(text) as Fixture;
  const svg = await chart(t, text);
  t.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/, 'an SVG document');
  t.match(svg, /<\/svg>\s*$/, 'complete');
  const texts = textsOf(svg);
  for (const [name, r] of Object.entries(fixture.runs)) {
    t.equal(texts.filter((s) => s === name).length, 2, `${name}: a row in the req/s and in the p99 panel`);
    t.ok(texts.includes(Math.round(r.rps).toLocaleString('en')), `${name}: its req/s`);
    t.ok(texts.includes(r.p99.toFixed(2)), `${name}: its p99`);
  }
  for (const [ratio, base] of [['read', 'B'], ['touch', 'B'], ['create', 'C'], ['put', 'C']] as const) {
    t.ok(texts.includes(`${ratio} / ${base}`), `paired ${ratio} against ${base}`);
    t.ok(texts.includes(fixture.paired[ratio]!.median.toFixed(2)), `paired ${ratio}: its median`);
  }
  t.notOk(texts.some((s) => s.startsWith('C / ')), "C's own CPU figures are no ratio");
  t.ok(texts.some((s) => s.includes('load average 1.92')), 'the load average of the run');
});

t.test('a run without paired rounds has no paired panel; a results file without runs is refused', async (t) => {
  const { paired: _paired, ...unpaired } = JSON.parse(readFileSync(FIXTURE, 'utf8')) as Fixture;
  const texts = textsOf(await chart(t, JSON.stringify(unpaired)));
  t.ok(texts.includes('baseline B'));
  t.notOk(texts.some((s) => s.startsWith('paired rounds')), 'no paired panel');
  await t.rejects(chart(t, JSON.stringify({ runs: {} })), 'no runs: no chart');
});
