import t from 'tap';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { openapiYaml } from '../devstack/openapi-document.js';

const generated = await openapiYaml();
const committed = readFileSync('openapi.yaml', 'utf8');

t.test('the committed openapi.yaml is what the route schemas generate', async (t) => {
  t.equal(committed, generated, 'openapi.yaml is stale: run `npm run openapi` and commit it');
});

t.test('every operation is described with its problems and security', async (t) => {
  const doc = parse(generated) as {
    openapi: string;
    paths: Record<string, Record<string, { operationId?: string; security?: unknown; responses: Record<string, { content?: Record<string, unknown> }> }>>;
  };
  t.equal(doc.openapi, '3.1.0');
  const operations = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method, op })));
  const ids = operations.map((o) => o.op.operationId).sort();
  t.same(ids, [
    'createSession',
    'createSessionWithToken',
    'destroyCurrentSession',
    'getCurrentSession',
    'getSessionById',
    'listSubjectSessions',
    'patchCurrentSessionData',
    'replaceCurrentSessionData',
    'revokeSessionById',
    'revokeSubjectSessions',
    'rotateCurrentSession',
    'touchCurrentSession',
    'touchSessionsBatch',
  ]);
  for (const { path, method, op } of operations) {
    t.ok(op.security, `${method} ${path} requires the API key`);
    for (const status of ['401', '500', '503']) {
      t.ok(op.responses[status]?.content?.['application/problem+json'], `${method} ${path} documents ${status} as problem+json`);
    }
  }
  t.notOk(doc.paths['/healthz'], 'probes are not part of the client contract');
});
