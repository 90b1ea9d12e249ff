/**
 * The service's layers depend downward only (test/architecture.test.ts runs this in the suite):
 *
 *   main/server/app (composition root, config at the edge)
 *     http → service → store → { db, cache } → domain
 *
 * Each layer lists the layers it may import; anything else under src/ is an error, as is any
 * cycle, any import of the tooling (devstack/) or tests from src/, and any devDependency used by
 * the service. `npx depcruise src` prints the violations.
 */
const LAYERS = {
  domain: [],
  auth: ['domain'],
  db: ['domain'],
  cache: ['domain'],
  store: ['db', 'cache', 'domain'],
  // The sweeper deletes through the store and holds MariaDB's advisory lock on a connection of its own.
  sweeper: ['store', 'db', 'domain'],
  service: ['store', 'domain'],
  metrics: ['cache', 'db', 'domain'],
  http: ['service', 'store', 'auth', 'domain'],
  plugins: ['db', 'cache', 'store', 'sweeper'],
  // Config is at the edge: it knows the option types of the layers it configures; only the
  // composition root (app.ts, main.ts) imports it.
  config: ['auth', 'domain', 'cache', 'db', 'http'],
  cli: ['auth'],
};

/**
 * Named exceptions, each a file and what it may reach past its layer. Per-client rate limiting is
 * an HTTP concern whose shared counters live in Redis: http/rate-limit.ts builds the store.
 */
const EXCEPTIONS = [{ from: '^src/http/rate-limit[.]ts$', to: '^src/cache/(rate-limit-store|redis-gateway)[.]ts$' }];

const allowed = (layer, extra = []) => [`^src/(${[layer, ...LAYERS[layer]].join('|')})/`, ...extra];
const layerRules = Object.entries(LAYERS).flatMap(([layer, below]) => {
  const comment = `src/${layer}/ may import only ${[layer, ...below].map((l) => `src/${l}/`).join(', ')}`;
  const exceptions = EXCEPTIONS.filter((e) => e.from.startsWith(`^src/${layer}/`));
  return [
    {
      name: `layer-${layer}`,
      severity: 'error',
      comment,
      from: { path: `^src/${layer}/`, pathNot: exceptions.map((e) => e.from) },
      to: { path: '^src/', pathNot: allowed(layer) },
    },
    ...exceptions.map((e) => ({
      name: `layer-${layer}`,
      severity: 'error',
      comment: `${comment} (and its named exception)`,
      from: { path: e.from },
      to: { path: '^src/', pathNot: allowed(layer, [e.to]) },
    })),
  ];
});

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Modules depend one way: a cycle means two layers (or two modules) know each other.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'service-only',
      severity: 'error',
      comment: 'src/ is the service: it imports neither the tooling (devstack/) nor the tests.',
      from: { path: '^src/' },
      to: { path: '^(devstack|test|bench|clients)/' },
    },
    {
      name: 'no-dev-dependencies',
      severity: 'error',
      comment: 'The image installs production dependencies only.',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'layer-unknown',
      severity: 'error',
      comment: 'A new folder under src/ needs its place in LAYERS.',
      from: { path: '^src/[^/]+/', pathNot: `^src/(${Object.keys(LAYERS).join('|')})/` },
      to: { path: '^src/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
