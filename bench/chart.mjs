/**
 * Draws a benchmark run as an SVG chart: req/s and p99 of every scenario next to the baselines
 * A, B and C, and the paired-round ratios when the run has them. Vega-Lite compiles the chart,
 * Vega renders it to SVG headlessly (no browser, no canvas).
 *
 *   node bench/chart.mjs [results.json] [out.svg]
 *
 * Defaults: bench/results/latest.json and docs/bench-chart.svg. bench/run.sh runs it after the
 * benchmark; docs/benchmarks.md shows the file.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as vega from 'vega';
import { compile } from 'vega-lite';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The report's order (bench.mjs report()); scenarios it does not know come after, as found. */
const ORDER = [
  'baseline A', 'baseline B', 'baseline C', 'baseline F',
  'read (warm)', 'touch (warm)', 'create', 'PUT If-Match', 'PATCH', 'mix',
  'cold read @10k', 'cold read @1M', 'cold touch @10k', 'cold touch @1M',
  'read before sweep', 'read during sweep', 'create, 1 process', 'create, 2 processes',
];

/** The baseline each paired ratio divides by (bench.mjs main(), paired rounds): B for the cached reads, C otherwise. */
const PAIRED_BASE = { read: 'B', touch: 'B' };

/** The kind of a run, its colour in the chart. */
const kindOf = (name) => (name.startsWith('baseline ') ? 'baseline' : 'sessiond');

/** Rows for the two per-run panels, in the report's order. */
export function runRows(results) {
  const names = Object.keys(results.runs ?? {});
  const known = ORDER.filter((n) => names.includes(n));
  const ordered = [...known, ...names.filter((n) => !ORDER.includes(n))];
  return ordered.map((name) => {
    const r = results.runs[name];
    return { scenario: name, kind: kindOf(name), rps: Math.round(r.rps), p99: r.p99 ?? null };
  });
}

/**
 * Rows for the paired panel: one per ratio with its median, e.g. "read / B". Entries without
 * ratios (a baseline's own CPU figures) are not drawn.
 */
export function pairedRows(results) {
  const ratios = Object.entries(results.paired ?? {}).filter(([, p]) => Array.isArray(p.ratios) && p.ratios.length > 0);
  return ratios.map(([key, p]) => ({
    ratio: `${key} / ${p.base ?? PAIRED_BASE[key] ?? 'C'}`,
    median: Math.round(p.median * 100) / 100,
    low: Math.min(...p.ratios),
    high: Math.max(...p.ratios),
  }));
}

/** The Vega-Lite specification of the chart for one results file. */
export function chartSpec(results) {
  const runs = runRows(results);
  if (runs.length === 0) throw new Error('the results file holds no runs');
  const paired = pairedRows(results);
  const m = results.machine ?? {};
  const load = m.loadAverageAtStart ? `load average ${m.loadAverageAtStart[0]} at start` : '';
  const date = results.startedAt ? `${results.startedAt.slice(0, 16).replace('T', ' ')} UTC` : '';
  const machine = m.cpus ? `${m.cpus} CPU, node ${m.node ?? '?'}` : '';
  const c = results.config ?? {};
  const color = {
    field: 'kind',
    type: 'nominal',
    title: null,
    scale: { domain: ['baseline', 'sessiond'], range: ['#9e9e9e', '#1f77b4'] },
  };
  // One explicit order for every layer: Vega-Lite unions the layers' domains.
  // No label limit: a scenario's name is never cut short.
  const y = { field: 'scenario', type: 'nominal', title: null, sort: runs.map((r) => r.scenario), axis: { labelLimit: 0 } };
  const panel = (field, title, format) => ({
    width: 300,
    height: { step: 18 },
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          y,
          x: { field, type: 'quantitative', title, axis: { format } },
          color,
          tooltip: [{ field: 'scenario' }, { field, format }],
        },
      },
      {
        mark: { type: 'text', align: 'left', dx: 3, fontSize: 10 },
        encoding: { y, x: { field, type: 'quantitative' }, text: { field, type: 'quantitative', format } },
      },
    ],
  });
  const panels = [
    { data: { values: runs.filter((r) => r.rps !== null) }, ...panel('rps', 'req/s', ',d') },
    { data: { values: runs.filter((r) => r.p99 !== null) }, ...panel('p99', 'p99 latency (ms)', '.2f') },
  ];
  const rows = [{ hconcat: panels }];
  if (paired.length > 0) {
    const py = { field: 'ratio', type: 'nominal', title: null, sort: paired.map((p) => p.ratio) };
    rows.push({
      data: { values: paired },
      title: { text: `paired rounds: sessiond req/s over its baseline's, ${c.pairedRounds ?? '?'} rounds (bar: median; line: lowest to highest)`, fontSize: 11, anchor: 'start' },
      width: 300,
      height: { step: 18 },
      layer: [
        { mark: { type: 'bar', color: '#1f77b4' }, encoding: { y: py, x: { field: 'median', type: 'quantitative', title: 'ratio', scale: { domainMin: 0 } } } },
        { mark: { type: 'rule', color: '#333' }, encoding: { y: py, x: { field: 'low', type: 'quantitative' }, x2: { field: 'high' } } },
        { mark: { type: 'text', align: 'left', dx: 3, fontSize: 10 }, encoding: { y: py, x: { field: 'high', type: 'quantitative' }, text: { field: 'median', type: 'quantitative', format: '.2f' } } },
      ],
    });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'sessiond benchmark',
      subtitle: [date, machine, load, `${c.connections ?? '?'} connections, ${c.seconds ?? '?'} s per run`].filter((s) => s !== '').join(' · '),
      anchor: 'start',
    },
    vconcat: rows,
    config: { background: 'white', font: 'sans-serif', view: { stroke: null }, legend: { orient: 'top' } },
  };
}

/** The SVG text of the chart for one results file. */
export async function renderChart(results) {
  const { spec } = compile(chartSpec(results));
  const view = new vega.View(vega.parse(spec), { renderer: 'none', logLevel: vega.Warn });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

async function main() {
  const input = path.resolve(process.argv[2] ?? path.join(ROOT, 'bench/results/latest.json'));
  const output = path.resolve(process.argv[3] ?? path.join(ROOT, 'docs/bench-chart.svg'));
  const svg = await renderChart(JSON.parse(readFileSync(input, 'utf8')));
  writeFileSync(output, `${svg}\n`);
  process.stdout.write(`chart of ${path.relative(process.cwd(), input)} written to ${path.relative(process.cwd(), output)}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`${err.stack ?? err}\n`);
    process.exit(1);
  });
}
