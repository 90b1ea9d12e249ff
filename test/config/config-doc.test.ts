import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { configTable, tableSection, writeConfigTable } from '../../devstack/config-doc.js';
import { variables } from '../../src/config/schema.js';

const README = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../README.md');

t.test("the README's configuration table is the one the schema generates", async (t) => {
  const { table } = tableSection(readFileSync(README, 'utf8'));
  t.equal(table, configTable(), 'README.md is up to date: run `npm run config-doc` after changing src/config/schema.ts');
});

t.test('every variable has a row, with its default', async (t) => {
  const table = configTable();
  for (const { name, schema, required } of variables()) {
    const row = table.split('\n').find((line) => line.startsWith('| ') && line.split(' | ')[0]!.includes(`\`${name}\``));
    t.ok(row, `${name} has a row`);
    if (row === undefined) continue;
    const cell = row.split(' | ')[1]!;
    if (schema.defaultText !== undefined) t.equal(cell, schema.defaultText, `${name}: the described default`);
    else if (schema.default !== undefined) t.ok(cell.startsWith(`\`${String(schema.default)}\``), `${name}: default ${String(schema.default)}`);
    else t.equal(cell, required ? '(required)' : '(unset)', `${name}: ${required ? 'required' : 'optional'}`);
  }
  t.match(table, /\| `SESSION_IDLE_TIMEOUT_SECONDS` \| `1800` \(30 min\) \|/, 'long defaults in seconds are also given in larger units');
  t.match(table, /\| `DATABASE_TLS_CERT_FILE`, `DATABASE_TLS_KEY_FILE` \| \(unset\) \|/, 'a pair with the same meaning shares a row');
});

t.test('a README whose table drifted is rewritten, and one that did not is left alone', async (t) => {
  const file = path.join(t.testdir({}), 'README.md');
  const readme = readFileSync(README, 'utf8');
  writeFileSync(file, readme.replace(/(\| `PORT` \| )`\d+`/, '$1`80`'));
  t.not(readFileSync(file, 'utf8'), readme, 'the copy drifted');
  t.equal(writeConfigTable(file), true, 'the drift is found and the table rewritten');
  t.equal(readFileSync(file, 'utf8'), readme, 'back to the generated table');
  t.equal(writeConfigTable(file), false, 'nothing to do the second time');
  writeFileSync(file, readme.replace(/<!-- end of the configuration table -->/, ''));
  t.throws(() => writeConfigTable(file), /lacks the lines/, 'a README without the markers is an error, not a silent append');
});
