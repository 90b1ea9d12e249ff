import { readFileSync } from 'node:fs';

/** The Dockerfile's stages: name → instructions (upper-cased keyword, rest of the line). */
export function dockerfileStages(): Map<string, { keyword: string; rest: string }[]> {
  const text = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8').replace(/\\\n/g, ' ');
  const stages = new Map<string, { keyword: string; rest: string }[]>();
  let current: { keyword: string; rest: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m || line.trim().startsWith('#')) continue;
    const keyword = m[1]!.toUpperCase();
    const rest = m[2]!.trim();
    if (keyword === 'FROM') {
      current = [];
      stages.set(/\bAS\s+(\S+)\s*$/i.exec(rest)?.[1] ?? `#${stages.size}`, current);
    }
    current.push({ keyword, rest });
  }
  return stages;
}
