import t from 'tap';
import { readFileSync } from 'node:fs';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';

/**
 * clients/node/src/sessiond-api.ts (the client package's types) is what `npm run client`
 * (openapi-typescript) makes of the committed openapi.yaml, byte for byte.
 */

const committed = readFileSync(new URL('../../clients/node/src/sessiond-api.ts', import.meta.url), 'utf8');

t.test("the client package's types are generated from the committed openapi.yaml", async (t) => {
  const ast = await openapiTS(new URL('../../openapi.yaml', import.meta.url), { silent: true });
  t.equal(committed, COMMENT_HEADER + astToString(ast), 'clients/node/src/sessiond-api.ts is stale: run `npm run client` and commit it');
});
