import t from 'tap';
import { readFileSync } from 'node:fs';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';

/**
 * test/client/sessiond-api.d.ts is what `npm run client` (openapi-typescript) makes of the
 * committed openapi.yaml. Regenerated in memory the same way the CLI does, byte for byte.
 */

const committed = readFileSync(new URL('./sessiond-api.d.ts', import.meta.url), 'utf8');

t.test('the committed client types are generated from the committed openapi.yaml', async (t) => {
  const ast = await openapiTS(new URL('../../openapi.yaml', import.meta.url), { silent: true });
  const generated = COMMENT_HEADER + astToString(ast);
  t.equal(committed, generated, 'test/client/sessiond-api.d.ts is stale: run `npm run client` and commit it');
});
