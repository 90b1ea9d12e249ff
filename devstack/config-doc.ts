import { readFileSync, writeFileSync } from 'node:fs';
import { variables, type VariableSchema } from '../src/config/schema.js';

/** The README's configuration table sits between these lines; `npm run config-doc` rewrites it. */
export const TABLE_BEGIN = '<!-- configuration table: generated from src/config/schema.ts by `npm run config-doc` -->';
export const TABLE_END = '<!-- end of the configuration table -->';

const MINUTE = 60;
const HOUR = 3600;
const DAY = 86_400;

/** `1800` (30 min): a default in seconds longer than ten minutes is also given in larger units. */
function inUnits(name: string, seconds: number): string {
  if (!name.endsWith('_SECONDS') || seconds <= 10 * MINUTE) return '';
  const units: [number, string][] = [[DAY, 'd'], [HOUR, 'h'], [MINUTE, 'min']];
  // Days from two on (86400 reads better as 24 h).
  const unit = units.find(([size]) => seconds % size === 0 && (size !== DAY || seconds >= 2 * DAY));
  return unit === undefined ? '' : ` (${seconds / unit[0]} ${unit[1]})`;
}

function defaultCell(name: string, schema: VariableSchema, required: boolean): string {
  if (schema.defaultText !== undefined) return schema.defaultText;
  if (schema.default !== undefined) {
    return `\`${String(schema.default)}\`${typeof schema.default === 'number' ? inUnits(name, schema.default) : ''}`;
  }
  return required ? '(required)' : '(unset)';
}

/**
 * The Markdown table of every variable in the schema's order: name, default, meaning.
 * Consecutive variables with the same default and meaning share a row.
 */
export function configTable(): string {
  const rows: { names: string[]; defaultText: string; meaning: string }[] = [];
  for (const { name, schema, required } of variables()) {
    const defaultText = defaultCell(name, schema, required);
    const meaning = schema.description ?? '';
    if (meaning === '' || /[|\n]/.test(meaning + defaultText)) throw new Error(`${name}: a description for one table cell is needed`);
    const last = rows.at(-1);
    if (last !== undefined && last.defaultText === defaultText && last.meaning === meaning) last.names.push(name);
    else rows.push({ names: [name], defaultText, meaning });
  }
  return [
    '| variable | default | meaning |',
    '|---|---|---|',
    ...rows.map((r) => `| ${r.names.map((n) => `\`${n}\``).join(', ')} | ${r.defaultText} | ${r.meaning} |`),
  ].join('\n');
}

/** The text between the markers (exclusive), or an error when they are missing. */
export function tableSection(readme: string): { before: string; table: string; after: string } {
  const begin = readme.indexOf(TABLE_BEGIN);
  const end = readme.indexOf(TABLE_END);
  if (begin < 0 || end < begin) throw new Error(`README.md lacks the lines ${TABLE_BEGIN} … ${TABLE_END}`);
  const start = begin + TABLE_BEGIN.length;
  return { before: readme.slice(0, start), table: readme.slice(start, end).trim(), after: readme.slice(end) };
}

/** Rewrites the table in the README at `file`; true when it changed. */
export function writeConfigTable(file: string): boolean {
  const readme = readFileSync(file, 'utf8');
  const { before, after } = tableSection(readme);
  const next = `${before}\n\n${configTable()}\n\n${after}`;
  if (next === readme) return false;
  writeFileSync(file, next);
  return true;
}
