/**
 * Comments cite the design as "docs/design.md §N" (or §N.M): each cited section must exist, so a
 * renumbered or removed section shows up here instead of leaving comments that point nowhere.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DESIGN = 'docs/design.md';
const CITATION = /docs\/design\.md\s*§\s*(\d+(?:\.\d+)*)/g;

/** Section numbers of a markdown text: "## 5. Title" → 5, "### 5.4 Title" → 5.4. */
export function sectionsOf(markdown: string): Set<string> {
  const numbers = [...markdown.matchAll(/^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s/gm)].map((m) => m[1]!);
  return new Set(numbers);
}

/** Every section number cited in a text, with its line. */
export function citationsIn(text: string): Array<{ section: string; line: number }> {
  return [...text.matchAll(CITATION)].map((m) => ({ section: m[1]!, line: text.slice(0, m.index).split('\n').length }));
}

function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.(ts|mjs|cjs|js)$/.test(e.name))
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));
}

const sections = sectionsOf(readFileSync(path.join(ROOT, DESIGN), 'utf8'));

t.test('the section parser and the citation finder', async (t) => {
  t.same([...sectionsOf('# Title\n## 1. Guarantees\n### 1.2 Sub\ntext ## 3. not a heading\n## Unnumbered\n')], ['1', '1.2']);
  t.same(citationsIn('a (docs/design.md §5.4) b\nc docs/design.md §8: d'), [
    { section: '5.4', line: 1 },
    { section: '8', line: 2 },
  ]);
  for (const expected of ['1', '2.3', '5', '5.4', '5.5', '6', '8']) t.ok(sections.has(expected), `${DESIGN} has §${expected}`);
  t.notOk(sections.has('99'), 'a section that does not exist is not found');
});

t.test('every docs/design.md § cited in src/ and test/ exists', async (t) => {
  const self = path.join('test', 'docs', 'design-citations.test.ts'); // its own examples
  const cited: string[] = [];
  const missing: string[] = [];
  const outside: string[] = [];
  for (const file of [...sourceFiles('src'), ...sourceFiles('test')].filter((f) => f !== self)) {
    const text = readFileSync(path.join(ROOT, file), 'utf8');
    for (const { section, line } of citationsIn(text)) {
      cited.push(`${file}:${line} §${section}`);
      if (!sections.has(section)) missing.push(`${file}:${line} §${section}`);
    }
    if (/DESIGN §/.test(text)) outside.push(file);
  }
  t.ok(cited.length > 0, `citations found (${cited.length})`);
  t.same(missing, [], `every cited section exists in ${DESIGN}`);
  t.same(outside, [], 'no comment cites a design outside the repository ("DESIGN §")');
});
