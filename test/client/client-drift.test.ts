import t from 'tap';
import { readFileSync } from 'node:fs';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';

/**
 * clients/node/src/sessiond-api.ts — the types of the Node client package, which the tests'
 * generated client (test/client/sessiond-api.d.ts) re-exports — is what `npm run client`
 * (openapi-typescript) makes of the committed openapi.yaml. Regenerated in memory the same way
 * the CLI does, byte for byte.
 */

const committed = readFileSync(new URL('../../clients/node/src/sessiond-api.ts', import.meta.url), 'utf8');

t.test('the committed client types are generated from the committed openapi.yaml', async (t) => {
  const ast = await openapiTS(new URL('../../openapi.yaml', import.meta.url), { silent: true });
  const generated = COMMENT_HEADER + astToString(ast);
  t.equal(committed, generated, 'clients/node/src/sessiond-api.ts is stale: run `npm run client` and commit it');
});
