// The types openapi-typescript generates from openapi.yaml live in the Node client package
// (`npm run client` writes them; test/client/client-drift.test.ts keeps them current).
export type * from '../../clients/node/src/sessiond-api.js';
