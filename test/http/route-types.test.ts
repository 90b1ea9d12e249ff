/**
 * Route handlers take their types from the route schemas (SchemaTypeProvider: Static<> of each
 * schema, shared schemas resolved), so src/http/routes/ needs no type assertion: a cast there
 * would hide a handler whose types drifted from what the schema validates.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROUTES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/http/routes');

/** Type assertions in a source text (`x as T`, `<T>x`, `x!`); `as const` asserts no type. */
function assertionsIn(fileName: string, text: string): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const visit = (node: ts.Node) => {
    const isConst = ts.isAsExpression(node) && ts.isTypeReferenceNode(node.type) && node.type.typeName.getText(source) === 'const';
    if ((ts.isAsExpression(node) && !isConst) || ts.isTypeAssertionExpression(node) || ts.isNonNullExpression(node)) {
      const { line } = source.getLineAndCharacterOfPosition(node.getStart(source));
      found.push(`${fileName}:${line + 1} ${node.getText(source).slice(0, 80)}`);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

t.test('the finder sees every kind of type assertion', async (t) => {
  t.equal(assertionsIn('x.ts', 'const a = b as string; const c = <number>d; const e = f!;').length, 3);
  t.same(assertionsIn('x.ts', "const a = ['x'] as const; const b = c?.d; const e = f satisfies object;"), []);
});

t.test('src/http/routes/ has no type assertion', async (t) => {
  const files = readdirSync(ROUTES).filter((f) => f.endsWith('.ts'));
  t.ok(files.length >= 2, `route files found (${files.join(', ')})`);
  const found = files.flatMap((f) => assertionsIn(f, readFileSync(path.join(ROUTES, f), 'utf8')));
  t.same(found, [], 'handlers are typed by their schemas');
});
