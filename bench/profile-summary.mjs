/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time per function and per
 * package/file, so that the hot path's cost can be read without DevTools.
 *
 *   node bench/profile-summary.mjs path/to/file.cpuprofile [top]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where a frame's code lives: "sessiond:src/…", a package name, "node:…" or a V8 category. */
function areaOf(url, functionName) {
  if (!url) return functionName.startsWith('(') ? functionName : '(native/V8)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return url;
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return `sessiond:${url.slice(dist + 1)}`;
  return url;
}

export function summarizeProfile(profile, top = 25) {
  const { nodes, samples, timeDeltas } = profile;
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const selfUs = new Map();
  for (let i = 0; i < samples.length; i++) selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + (timeDeltas[i] ?? 0));
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const fns = new Map();
  const areas = new Map();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    const cf = n.callFrame;
    const name = cf.functionName || '(anonymous)';
    const file = cf.url ? `${cf.url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules|dist)\//, '$1/')}:${cf.lineNumber + 1}` : '';
    const key = `${name} ${file}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    const area = areaOf(cf.url, name);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const rank = (m) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, us]) => ({ name: k, ms: us / 1000, pct: (100 * us) / total }));
  const idle = (areas.get('(idle)') ?? 0) / 1000;
  return { totalMs: total / 1000, idleMs: idle, functions: rank(fns), areas: rank(areas) };
}

export function formatProfile(s) {
  const lines = [];
  lines.push(`total ${s.totalMs.toFixed(0)} ms sampled, idle ${s.idleMs.toFixed(0)} ms (${((100 * s.idleMs) / s.totalMs).toFixed(1)} %)`);
  lines.push('self time by area:');
  for (const a of s.areas) lines.push(`  ${a.pct.toFixed(1).padStart(5)} %  ${a.ms.toFixed(0).padStart(7)} ms  ${a.name}`);
  lines.push('self time by function:');
  for (const f of s.functions) lines.push(`  ${f.pct.toFixed(1).padStart(5)} %  ${f.ms.toFixed(0).padStart(7)} ms  ${f.name}`);
  return lines.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node bench/profile-summary.mjs file.cpuprofile [top]\n');
    process.exit(2);
  }
  const summary = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')), Number(process.argv[3] ?? 30));
  process.stdout.write(`${formatProfile(summary)}\n`);
}
