/**
 * deploy/: renders both kustomizations (the service and the migration Job), validates every
 * object against the Kubernetes API schemas (kubernetes-models), and checks the manifests
 * against the service itself: ports, probe routes, environment variable names and values,
 * shutdown timing, replica counts, selectors, network policy, the migration Job and the release.
 *
 * Rendering uses `kubectl kustomize` from PATH, or Debian's kubernetes-client fetched into a
 * cache under os.tmpdir() (ensureKustomize). Where apt-get exists, the manifests are also
 * rendered with Debian's kubectl 1.20 (kustomize v2.0.3) and must come out the same, so that
 * deploy/ keeps to what the oldest supported kustomize understands.
 */
import t, { type Test } from 'tap';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1';
import { buildApp } from '../../src/app.js';
import { buildConfig, ConfigError, loadConfig, parseDatabaseUrl, type Config } from '../../src/config/config.js';
import { variables } from '../../src/config/schema.js';
import { METRICS_PATH } from '../../src/metrics/metrics.js';
import { findBinary } from '../../devstack/binaries.js';
import { ensureKustomize, type KustomizeCommand } from '../../devstack/kustomize.js';
import { dockerfileStages } from '../helpers/dockerfile.js';

// The first run may fetch Debian's kubernetes-client (8 MB) and run apt-get update.
t.setTimeout(5 * 60_000);

type Obj = Record<string, any>;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEPLOY = path.join(ROOT, 'deploy');
const SERVICE_DIR = path.join(DEPLOY, 'overlays/example');
const MIGRATE_DIR = path.join(DEPLOY, 'overlays/example/migrate');
/** Every kustomization in deploy/, each rendered and validated. */
const GALERA_DIR = path.join(DEPLOY, 'overlays/galera');
const GALERA_MIGRATE_DIR = path.join(DEPLOY, 'overlays/galera/migrate');
const KUSTOMIZATIONS = [SERVICE_DIR, MIGRATE_DIR, GALERA_DIR, GALERA_MIGRATE_DIR, path.join(DEPLOY, 'base'), path.join(DEPLOY, 'base/migrate')];
/** mariadb-operator's kinds: not in kubernetes-models; checked by the Galera overlay's own test. */
const OPERATOR_API = 'k8s.mariadb.com/v1alpha1';

// ---------------------------------------------------------------------------------------------
// What the service really reads, from its source

/** Variables the service reads: those its configuration schema declares. */
const SERVICE_VARIABLES = new Set<string>(variables().map((v) => v.name));
/** Variables a file reads: the names that match the pattern. */
function variablesReadBy(file: string, pattern: RegExp): Set<string> {
  const source = readFileSync(path.join(ROOT, file), 'utf8');
  return new Set([...source.matchAll(pattern)].map((m) => (m[1] ?? m[2])!));
}
const MIGRATE_VARIABLES = variablesReadBy('drizzle.config.ts', /process\.env\.([A-Z][A-Z0-9_]*)|process\.env\[['"]([A-Z][A-Z0-9_]*)['"]\]/g);
/** Read by Node itself, not by the service's config. */
const NODE_VARIABLES = new Set(['NODE_OPTIONS']);

// ---------------------------------------------------------------------------------------------
// Rendering

function parseRender(yamlText: string): Obj[] {
  const docs = parseAllDocuments(yamlText);
  for (const d of docs) if (d.errors.length > 0) throw new Error(`kustomize output does not parse: ${d.errors[0]!.message}`);
  return docs.map((d) => d.toJS() as Obj | null).filter((o): o is Obj => o !== null);
}

async function renderAll(cmd: KustomizeCommand): Promise<Map<string, Obj[]>> {
  const out = new Map<string, Obj[]>();
  for (const dir of KUSTOMIZATIONS) out.set(dir, parseRender(await cmd.render(dir)));
  return out;
}

/** Names of the ConfigMap and Secret generators in deploy/ (they get a hash suffix). */
function generatorNames(): string[] {
  const names: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name === 'kustomization.yaml') {
        const k = parseYaml(readFileSync(full, 'utf8')) as Obj;
        for (const g of [...(k.configMapGenerator ?? []), ...(k.secretGenerator ?? [])]) names.push(g.name);
      }
    }
  };
  walk(DEPLOY);
  return [...new Set(names)];
}

/**
 * A render without what legitimately differs between kustomize versions: the generators'
 * hash suffixes (v2.0.3 and v5 hash differently), line breaks inside base64 Secret data (v5
 * folds long values; the API server ignores them), empty annotations, and the order.
 */
function normalize(objects: Obj[]): Obj[] {
  const generated = generatorNames();
  const rename = new Map<string, string>();
  for (const o of objects) {
    const name = String(o.metadata?.name ?? '');
    const g = generated.find((n) => new RegExp(`^${n}-[a-z0-9]{10}$`).test(name));
    if (g !== undefined) rename.set(name, `${g}-<hash>`);
  }
  const fix = (v: unknown): unknown => {
    if (typeof v === 'string') return rename.get(v) ?? v;
    if (Array.isArray(v)) return v.map(fix);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(
        Object.entries(v)
          .filter(([k, x]) => !(k === 'annotations' && x !== null && typeof x === 'object' && Object.keys(x).length === 0))
          .map(([k, x]) => [k, fix(x)]),
      );
    }
    return v;
  };
  return objects
    .map((o) => unfoldSecretData(fix(o) as Obj))
    .sort((a, b) => key(a).localeCompare(key(b)));
}
/**
 * kustomize v5 folds long base64 Secret values over several lines; the API server decodes them
 * (Go's base64 decoder skips line breaks) but the schema's "byte" format does not allow them.
 */
const unfoldSecretData = (o: Obj): Obj =>
  o.kind === 'Secret' && o.data
    ? { ...o, data: Object.fromEntries(Object.entries(o.data as Record<string, string>).map(([k, x]) => [k, x.replace(/\s+/g, '')])) }
    : o;
const key = (o: Obj) => `${o.apiVersion}/${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`;

// ---------------------------------------------------------------------------------------------
// Schema validation

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'batch/v1/Job': Job,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
};
/** The same kinds as TypeScript interfaces, for the unknown-field check. */
const INTERFACES: Record<string, [module: string, name: string]> = {
  'apps/v1/Deployment': ['kubernetes-models/apps/v1/Deployment', 'IDeployment'],
  'autoscaling/v2/HorizontalPodAutoscaler': ['kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler', 'IHorizontalPodAutoscaler'],
  'batch/v1/Job': ['kubernetes-models/batch/v1/Job', 'IJob'],
  'networking.k8s.io/v1/NetworkPolicy': ['kubernetes-models/networking.k8s.io/v1/NetworkPolicy', 'INetworkPolicy'],
  'policy/v1/PodDisruptionBudget': ['kubernetes-models/policy/v1/PodDisruptionBudget', 'IPodDisruptionBudget'],
  'v1/ConfigMap': ['kubernetes-models/v1/ConfigMap', 'IConfigMap'],
  'v1/Secret': ['kubernetes-models/v1/Secret', 'ISecret'],
  'v1/Service': ['kubernetes-models/v1/Service', 'IService'],
};
const typeKey = (o: Obj) => `${o.apiVersion}/${o.kind}`;

/**
 * The OpenAPI schemas accept unknown fields (so does the API server, which drops them with a
 * warning), so a misspelt `readOnlyRootFileSystem` would pass. This walks each object along the
 * kubernetes-models TypeScript types and reports every field they do not declare.
 */
function unknownFieldChecker(): (o: Obj) => string[] {
  const file = path.join(ROOT, 'test/deploy/__kubernetes_kinds__.ts');
  const source = [
    ...Object.values(INTERFACES).map(([module, name], i) => `import type { ${name} as T${i} } from '${module}';`),
    `export interface Kinds { ${Object.keys(INTERFACES).map((k, i) => `'${k}': T${i};`).join(' ')} }`,
  ].join('\n');
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, source, language) : getSourceFile.call(host, name, language, ...rest);
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? source : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  const problems = ts.getPreEmitDiagnostics(program).filter((d) => d.file?.fileName === file);
  if (problems.length > 0) throw new Error(`kubernetes-models types: ${ts.flattenDiagnosticMessageText(problems[0]!.messageText, '\n')}`);
  const checker = program.getTypeChecker();
  const kinds = program.getSourceFile(file)!.statements.find(ts.isInterfaceDeclaration)!;
  const kindsType = checker.getTypeAtLocation(kinds.name);

  const typeOf = (symbol: ts.Symbol) => checker.getTypeOfSymbolAtLocation(symbol, symbol.valueDeclaration ?? kinds);
  const walk = (value: unknown, type: ts.Type, at: string, out: string[]): void => {
    if (value === null || typeof value !== 'object') return; // scalars: the schema checks them
    type = checker.getNonNullableType(type);
    if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
    if (type.isUnion()) {
      const fits = type.types.filter((m) => (Array.isArray(value) ? checker.isArrayType(m) : !!(m.flags & ts.TypeFlags.Object) && !checker.isArrayType(m)));
      if (fits.length === 0) return; // e.g. an object where a scalar belongs: the schema reports it
      type = fits[0]!;
    }
    if (Array.isArray(value)) {
      const element = checker.isArrayType(type) ? checker.getTypeArguments(type as ts.TypeReference)[0] : undefined;
      if (element) value.forEach((v, i) => walk(v, element, `${at}[${i}]`, out));
      return;
    }
    const index = checker.getIndexInfoOfType(type, ts.IndexKind.String);
    for (const [k, v] of Object.entries(value)) {
      const prop = checker.getPropertyOfType(type, k);
      if (prop) walk(v, typeOf(prop), `${at}.${k}`, out);
      else if (index) walk(v, index.type, `${at}.${k}`, out);
      else if (checker.getPropertiesOfType(type).length > 0) out.push(`${at}.${k}`);
    }
  };
  return (o: Obj) => {
    const kind = checker.getPropertyOfType(kindsType, typeKey(o));
    if (!kind) return [`unknown kind ${typeKey(o)}`];
    const out: string[] = [];
    walk(o, typeOf(kind), '', out);
    return out;
  };
}

// ---------------------------------------------------------------------------------------------
// Small helpers over rendered objects

const only = (objects: Obj[], kind: string): Obj => {
  const found = objects.filter((o) => o.kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, rendered ${found.length}`);
  return found[0]!;
};
const all = (objects: Obj[], kind: string): Obj[] => objects.filter((o) => o.kind === kind);
/** True when every matchLabels pair is among the labels (and there are no matchExpressions). */
const selects = (selector: Obj | undefined, labels: Record<string, string>): boolean =>
  selector !== undefined &&
  (selector.matchExpressions ?? []).length === 0 &&
  Object.entries((selector.matchLabels ?? {}) as Record<string, string>).every(([k, v]) => labels[k] === v);
const decode = (b64: string) => Buffer.from(b64, 'base64').toString('utf8');
/** A port given by number or by name, as the container's port number. */
const portNumber = (container: Obj, port: number | string): number | undefined =>
  typeof port === 'number' ? port : (container.ports as Obj[] | undefined)?.find((p) => p.name === port)?.containerPort;
/** "256Mi", "1Gi", "128M" in MiB. */
const mebibytes = (q: string): number => {
  const m = /^(\d+)(Ki|Mi|Gi|K|M|G)?$/.exec(q);
  if (!m) throw new Error(`unexpected quantity ${q}`);
  const factor: Record<string, number> = { Ki: 1 / 1024, Mi: 1, Gi: 1024, K: 1e3 / 2 ** 20, M: 1e6 / 2 ** 20, G: 1e9 / 2 ** 20 };
  return Number(m[1]) * (m[2] ? factor[m[2]]! : 1 / 2 ** 20);
};

/**
 * The environment the container would see: ConfigMap envFrom, then env (values and Secret
 * references resolved against the rendered objects). The API keys file is written to a temp
 * folder and API_KEYS_FILE pointed at it after checking it names the mounted Secret item.
 */
function containerEnv(t: Test, objects: Obj[], pod: Obj, container: Obj, tmp: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of (container.envFrom ?? []) as Obj[]) {
    const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === from.configMapRef?.name);
    t.ok(cm, `envFrom ConfigMap ${from.configMapRef?.name} is rendered`);
    Object.assign(env, cm?.data ?? {});
  }
  for (const e of (container.env ?? []) as Obj[]) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    else if (e.valueFrom?.secretKeyRef) {
      const ref = e.valueFrom.secretKeyRef as Obj;
      const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === ref.name);
      t.ok(secret, `${e.name}: Secret ${ref.name} is rendered`);
      const value = secret?.data?.[ref.key] as string | undefined;
      if (value !== undefined) env[e.name] = decode(value);
      else t.ok(ref.optional, `${e.name}: key ${ref.key} is in the Secret, or optional`);
    } else t.fail(`${e.name}: only value and secretKeyRef are expected`);
  }
  if (env.API_KEYS_FILE !== undefined) {
    const mount = ((container.volumeMounts ?? []) as Obj[]).find((m) => env.API_KEYS_FILE!.startsWith(`${m.mountPath}/`));
    t.ok(mount, `API_KEYS_FILE (${env.API_KEYS_FILE}) is under a volume mount`);
    const volume = ((pod.volumes ?? []) as Obj[]).find((v) => v.name === mount?.name);
    const item = ((volume?.secret?.items ?? []) as Obj[]).find((i) => `${mount?.mountPath}/${i.path}` === env.API_KEYS_FILE);
    t.ok(item, 'API_KEYS_FILE is an item of the mounted Secret');
    const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === volume?.secret?.secretName);
    const content = secret?.data?.[item?.key] as string | undefined;
    t.ok(content, 'the API keys file is in the Secret');
    const file = path.join(tmp, 'api-keys.json');
    writeFileSync(file, content === undefined ? '' : decode(content));
    env.API_KEYS_FILE = file;
  }
  return env;
}

// ---------------------------------------------------------------------------------------------

const kustomize = await ensureKustomize();
t.comment(`rendering with ${kustomize.description}`);
const renders = await renderAll(kustomize);
const service = renders.get(SERVICE_DIR)!;
const migrate = renders.get(MIGRATE_DIR)!;

const noApt = findBinary('apt-get') ? false : 'no apt-get: cannot fetch Debian kubernetes-client here';
t.test('renders the same with Debian kubectl 1.20 (kustomize v2.0.3)', { skip: noApt }, async (t) => {
  const debian = await ensureKustomize({ source: 'debian' });
  if (debian.bin === kustomize.bin) return t.pass(`only ${debian.description} is available; rendered with it`);
  t.comment(`comparing with ${debian.description}`);
  const old = await renderAll(debian);
  for (const dir of KUSTOMIZATIONS) {
    t.same(normalize(old.get(dir)!), normalize(renders.get(dir)!), `${path.relative(ROOT, dir)}: same objects`);
  }
});

t.test('every object is valid against the Kubernetes API schema', async (t) => {
  const unknownFields = unknownFieldChecker();
  // The checker itself: a misspelt field must be reported.
  const typo = structuredClone(only(service, 'Deployment'));
  typo.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true;
  t.same(unknownFields(typo), ['.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem'], 'the unknown-field check works');

  for (const [dir, objects] of renders) {
    const where = path.relative(ROOT, dir);
    t.ok(objects.length > 0, `${where} renders objects`);
    for (const o of objects) {
      const name = `${where}: ${o.kind} ${o.metadata?.name}`;
      if (o.apiVersion === OPERATOR_API) continue;
      const Model = MODELS[typeKey(o)];
      if (!Model) {
        t.fail(`${name}: unknown kind ${typeKey(o)} (add it to MODELS and INTERFACES)`);
        continue;
      }
      t.doesNotThrow(() => new Model(unfoldSecretData(o)).validate(), `${name}: schema`);
      t.same(unknownFields(o), [], `${name}: no unknown fields`);
    }
  }
  for (const [dir, objects] of [[SERVICE_DIR, service], [MIGRATE_DIR, migrate], [GALERA_DIR, renders.get(GALERA_DIR)!], [GALERA_MIGRATE_DIR, renders.get(GALERA_MIGRATE_DIR)!]] as const) {
    const namespaces = new Set(objects.map((o) => o.metadata.namespace));
    t.equal(namespaces.size, 1, `${path.relative(ROOT, dir)}: every object in one namespace`);
    t.notOk(namespaces.has(undefined), `${path.relative(ROOT, dir)}: the namespace is set`);
  }
});

t.test('the service Deployment matches the service', async (t) => {
  const deployment = only(service, 'Deployment');
  const pod = deployment.spec.template.spec as Obj;
  const podLabels = deployment.spec.template.metadata.labels as Record<string, string>;
  const container = (pod.containers as Obj[]).find((c) => c.name === 'sessiond')!;
  t.ok(container, 'container sessiond');
  const tmp = t.testdir({});
  const env = containerEnv(t, service, pod, container, tmp);

  // The configuration the pod would start with.
  let config: Config | undefined;
  t.doesNotThrow(() => {
    config = loadConfig(env);
  }, 'loadConfig accepts the rendered environment');
  if (!config) return;
  const defaults = buildConfig({ DATABASE_URL: 'mysql://u:p@db:3306/sessiond' }, config.apiKeys);

  // Variable names: each one is read by the service (or by Node), and the service notices a bad value.
  const names = new Set([
    ...Object.keys(env),
    ...all(service, 'ConfigMap').flatMap((cm) => Object.keys(cm.data ?? {})),
    // MIGRATE_DATABASE_URL is the migration Job's (its DATABASE_URL), never the service's.
    ...all(service, 'Secret').flatMap((s) => Object.keys(s.data ?? {}).filter((k) => /^[A-Z][A-Z0-9_]*$/.test(k) && k !== 'MIGRATE_DATABASE_URL')),
  ]);
  for (const name of names) {
    if (NODE_VARIABLES.has(name)) continue;
    t.ok(SERVICE_VARIABLES.has(name), `${name} is declared in src/config/schema.ts`);
    let error: unknown;
    try {
      loadConfig({ ...env, [name]: 'not a valid value' });
    } catch (err) {
      error = err;
    }
    t.equal(error instanceof ConfigError ? error.variable : String(error), name, `${name}: a bad value stops the service`);
  }
  t.equal(env.NODE_OPTIONS !== undefined, true, 'NODE_OPTIONS caps the heap');
  const heap = Number(/--max-old-space-size=(\d+)/.exec(env.NODE_OPTIONS ?? '')?.[1]);
  t.ok(heap > 0 && heap < 0.8 * mebibytes(container.resources.limits.memory), `V8 heap (${heap} MiB) well inside the memory limit`);

  // The ConfigMap holds the service's own defaults, but for the API reference page: off in a deployment.
  for (const cm of all(service, 'ConfigMap')) {
    const redis = { REDIS_URL: 'redis://cache:6379' }; // so that the Redis settings are read too
    const base = { DATABASE_URL: 'mysql://u:p@db:3306/sessiond', ...redis };
    t.equal(cm.data?.DOCS_ENABLED, 'false', `${cm.metadata.name}: /docs is off`);
    t.same(buildConfig({ ...base, ...cm.data }, config.apiKeys), buildConfig({ ...base, DOCS_ENABLED: 'false' }, config.apiKeys), `${cm.metadata.name}: every other value is the default`);
  }

  // Ports.
  const http = portNumber(container, 'http');
  const metrics = portNumber(container, 'metrics');
  t.equal(http, defaults.port, `containerPort http is the service's default PORT (${defaults.port})`);
  t.equal(config.port, http, 'PORT is the http containerPort');
  t.equal(config.metrics.port, metrics, 'METRICS_PORT is the metrics containerPort');
  t.not(metrics, http, 'metrics on a port of their own');
  const annotations = (deployment.spec.template.metadata.annotations ?? {}) as Record<string, string>;
  t.equal(annotations['prometheus.io/scrape'], 'true', 'prometheus.io/scrape');
  t.equal(Number(annotations['prometheus.io/port']), metrics, 'prometheus.io/port is the metrics port');
  t.equal(annotations['prometheus.io/path'], METRICS_PATH, `prometheus.io/path is the service's ${METRICS_PATH}`);
  const runtime = dockerfileStages().get('runtime') ?? [];
  t.ok(runtime.some((i) => i.keyword === 'EXPOSE' && i.rest.split(/\s+/).includes(String(defaults.port))), 'the runtime image EXPOSEs the port');
  // Every stage starts from the current Node LTS, pinned by digest, or from an earlier stage.
  const image = /^ARG NODE_IMAGE=(\S+)$/m.exec(readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8'))?.[1];
  t.match(image, /^node:24-[a-z0-9.-]+@sha256:[0-9a-f]{64}$/, 'the base image is Node 24, pinned by digest');
  const stages = [...dockerfileStages()];
  stages.forEach(([name, instructions], i) => {
    const from = instructions[0]?.rest.split(/\s+/)[0] ?? '';
    t.ok(from === '${NODE_IMAGE}' || stages.slice(0, i).some(([earlier]) => earlier === from), `stage ${name} starts from NODE_IMAGE or an earlier stage`);
  });

  // Probes: on the http port, at routes the app serves.
  const app = await buildApp(
    { ...config, databaseUrl: 'mysql://u:p@127.0.0.1:1/sessiond', redis: undefined, metrics: { port: undefined } },
    { logger: false },
  );
  t.teardown(() => app.close());
  await app.ready();
  for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
    const get = container[probe]?.httpGet as Obj | undefined;
    t.ok(get, `${probe} is an httpGet`);
    if (!get) continue;
    t.equal(portNumber(container, get.port), http, `${probe} on the http port`);
    t.ok(app.hasRoute({ method: 'GET', url: get.path }), `${probe}: GET ${get.path} is a route of the app`);
  }
  t.equal(container.livenessProbe?.httpGet?.path, '/healthz', 'liveness does no I/O (/healthz)');
  t.equal(container.readinessProbe?.httpGet?.path, '/readyz', 'readiness checks MariaDB (/readyz)');
  t.equal((await app.inject({ method: 'GET', url: container.livenessProbe.httpGet.path })).statusCode, 200, 'liveness answers 200 without a database');

  // Shutdown: preStop sleep + drain fit in the grace period.
  const preStop = container.lifecycle?.preStop?.exec?.command as string[] | undefined;
  const sleep = preStop?.[0] === 'sleep' ? Number(preStop[1]) : 0;
  t.ok(sleep > 0, `preStop sleeps (${sleep} s) so the endpoint is gone before draining`);
  t.ok(
    pod.terminationGracePeriodSeconds > config.shutdownTimeoutMs / 1000 + sleep,
    `terminationGracePeriodSeconds (${pod.terminationGracePeriodSeconds}) > SHUTDOWN_TIMEOUT_MS (${config.shutdownTimeoutMs} ms) + preStop (${sleep} s)`,
  );

  // Replicas, resources, security.
  t.ok(deployment.spec.replicas >= 2, 'at least 2 replicas');
  t.ok(selects(deployment.spec.selector, podLabels), 'the Deployment selects its pods');
  for (const r of ['cpu', 'memory']) {
    t.ok(container.resources?.requests?.[r], `requests.${r}`);
    t.ok(container.resources?.limits?.[r], `limits.${r}`);
  }
  t.equal(pod.securityContext?.runAsNonRoot, true, 'runAsNonRoot');
  t.ok(pod.securityContext?.runAsUser > 0, 'runAsUser is not root');
  t.equal(container.securityContext?.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem');
  t.equal(container.securityContext?.allowPrivilegeEscalation, false, 'no privilege escalation');
  t.same(container.securityContext?.capabilities?.drop, ['ALL'], 'drops all capabilities');
  t.equal(pod.automountServiceAccountToken, false, 'no service account token');

  // Service, PDB, HPA, NetworkPolicy.
  const svc = only(service, 'Service');
  t.ok(selects({ matchLabels: svc.spec.selector }, podLabels), 'the Service selects the pods');
  for (const p of svc.spec.ports as Obj[]) t.equal(portNumber(container, p.targetPort), http, `Service port ${p.name} targets the http port`);
  t.notOk((svc.spec.ports as Obj[]).some((p) => portNumber(container, p.targetPort) === metrics), 'the Service does not expose metrics');

  const pdb = only(service, 'PodDisruptionBudget');
  t.ok(selects(pdb.spec.selector, podLabels), 'the PDB selects the pods');
  t.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < deployment.spec.replicas, 'the PDB lets one pod go at a time');

  const hpa = only(service, 'HorizontalPodAutoscaler');
  t.match(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name }, 'the HPA scales the Deployment');
  t.ok(hpa.spec.minReplicas >= 2, 'HPA minReplicas >= 2');
  t.ok(hpa.spec.maxReplicas >= hpa.spec.minReplicas, 'HPA maxReplicas >= minReplicas');

  const policies = all(service, 'NetworkPolicy').filter((p) => selects(p.spec.podSelector, podLabels));
  t.ok(policies.length > 0, 'a NetworkPolicy selects the pods');
  const ingressPorts = policies.flatMap((p) => ((p.spec.ingress ?? []) as Obj[]).flatMap((r) => (r.ports ?? []) as Obj[]));
  for (const port of [http, metrics]) {
    t.ok(ingressPorts.some((p) => portNumber(container, p.port) === port), `ingress allowed on port ${port}`);
  }
  const egressPorts = policies.flatMap((p) => ((p.spec.egress ?? []) as Obj[]).flatMap((r) => (r.ports ?? []) as Obj[])).map((p) => p.port);
  const databasePort = Number(new URL(config.databaseUrl).port || 3306);
  t.ok(egressPorts.includes(53), 'egress to DNS');
  t.ok(egressPorts.includes(databasePort), `egress to MariaDB (${databasePort})`);
  if (config.redis?.url) t.ok(egressPorts.includes(Number(new URL(config.redis.url).port || 6379)), 'egress to Redis');
});

t.test('the migration Job runs drizzle-kit migrate once, from the same release', async (t) => {
  const job = only(migrate, 'Job');
  t.equal(all(migrate, 'Deployment').length, 0, 'the migrate kustomization holds no Deployment');
  t.equal(all(service, 'Job').length, 0, 'the service kustomization holds no Job');
  t.equal(job.spec.parallelism, 1, 'parallelism 1');
  t.equal(job.spec.completions, 1, 'completions 1');
  t.equal(job.spec.podReplacementPolicy, 'Failed', 'a retry starts only after the failed pod is gone');
  const pod = job.spec.template.spec as Obj;
  t.equal(pod.restartPolicy, 'Never', 'restartPolicy Never');
  t.equal(pod.containers.length, 1, 'one container');
  const container = pod.containers[0] as Obj;

  // The command is the migrate image's own, and it is drizzle-kit migrate.
  const command = [...(container.command ?? []), ...(container.args ?? [])] as string[];
  t.match(path.basename(command[0] ?? ''), 'drizzle-kit', 'runs drizzle-kit');
  t.same(command.slice(1), ['migrate'], '… migrate');
  const stage = dockerfileStages().get('migrate');
  t.ok(stage, 'the Dockerfile has a migrate target');
  const cmd = stage?.filter((i) => i.keyword === 'CMD').at(-1)?.rest;
  t.same(cmd === undefined ? undefined : JSON.parse(cmd), command, 'the Job command is the migrate image CMD');
  t.equal(container.workingDir, stage?.filter((i) => i.keyword === 'WORKDIR').at(-1)?.rest, 'workingDir is the image WORKDIR');

  // Environment: only what drizzle.config.ts reads, from the service's Secret.
  t.ok(MIGRATE_VARIABLES.has('DATABASE_URL'), 'drizzle.config.ts scan finds DATABASE_URL');
  const env = containerEnv(t, migrate, pod, container, t.testdir({}));
  for (const name of Object.keys(env)) t.ok(MIGRATE_VARIABLES.has(name), `${name} is read by drizzle.config.ts`);
  const ref = (container.env as Obj[]).find((e) => e.name === 'DATABASE_URL')?.valueFrom?.secretKeyRef as Obj | undefined;
  const serviceRef = (only(service, 'Deployment').spec.template.spec.containers[0].env as Obj[]).find((e) => e.name === 'DATABASE_URL')?.valueFrom?.secretKeyRef;
  t.same(ref, { ...serviceRef, key: 'MIGRATE_DATABASE_URL' }, "DATABASE_URL from the service's Secret, under the migration user's key");
  t.equal(serviceRef?.key, 'DATABASE_URL', "the service reads its own user's URL");
  const serviceEnv = only(service, 'Deployment').spec.template.spec.containers[0].env as Obj[];
  for (const e of container.env as Obj[]) {
    if (e.valueFrom?.secretKeyRef === undefined || e.name === 'DATABASE_URL') continue;
    t.same(e.valueFrom.secretKeyRef, serviceEnv.find((s) => s.name === e.name)?.valueFrom?.secretKeyRef, `${e.name}: the same Secret key as the service`);
  }
  // The certificates: the same optional Secret at the same path, read-only, as in the service.
  const tlsMount = (podSpec: Obj, c: Obj) => {
    const volume = ((podSpec.volumes ?? []) as Obj[]).find((v) => v.secret?.secretName === 'sessiond-tls');
    const mount = ((c.volumeMounts ?? []) as Obj[]).find((m) => m.name === volume?.name);
    return { secret: volume?.secret, mountPath: mount?.mountPath, readOnly: mount?.readOnly };
  };
  const serviceTls = tlsMount(only(service, 'Deployment').spec.template.spec, only(service, 'Deployment').spec.template.spec.containers[0]);
  t.match(serviceTls, { secret: { optional: true }, mountPath: '/etc/sessiond-tls', readOnly: true }, 'the service mounts the optional sessiond-tls Secret read-only');
  t.same(tlsMount(pod, container), serviceTls, 'so does the Job, at the same path');
  t.equal(pod.securityContext?.fsGroup, only(service, 'Deployment').spec.template.spec.securityContext?.fsGroup, 'the same fsGroup reads the 0440 files');
  const secretOf = (objects: Obj[]) => objects.find((o) => o.kind === 'Secret' && o.metadata.name === ref?.name);
  t.same(secretOf(migrate)?.data, secretOf(service)?.data, 'the same Secret content in both renders');

  // Security and resources.
  t.equal(pod.securityContext?.runAsNonRoot, true, 'runAsNonRoot');
  t.equal(container.securityContext?.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem');
  t.equal(container.securityContext?.allowPrivilegeEscalation, false, 'no privilege escalation');
  for (const r of ['cpu', 'memory']) t.ok(container.resources?.limits?.[r] && container.resources?.requests?.[r], `requests and limits: ${r}`);
  const podLabels = job.spec.template.metadata.labels as Record<string, string>;
  const policies = all(migrate, 'NetworkPolicy').filter((p) => selects(p.spec.podSelector, podLabels));
  t.ok(policies.length > 0, 'a NetworkPolicy in the migrate kustomization selects the Job pod');
  const egressPorts = policies.flatMap((p) => ((p.spec.egress ?? []) as Obj[]).flatMap((r) => (r.ports ?? []) as Obj[])).map((p) => p.port);
  t.ok(egressPorts.includes(Number(new URL(env.DATABASE_URL!).port || 3306)), 'the Job may reach MariaDB');
  const serverPods = only(service, 'Deployment').spec.template.metadata.labels;
  for (const o of [only(service, 'PodDisruptionBudget'), ...all(service, 'NetworkPolicy')]) {
    const selector = o.spec.selector ?? o.spec.podSelector;
    t.notOk(selects(selector, podLabels) && selects(selector, serverPods), `${o.kind} ${o.metadata.name} does not mix Job and server pods`);
  }

  // One release: the same registry and tag, the same namespace, written once per file.
  const image = (s: string) => /^(?<repo>.+?)(?::(?<tag>[^:/@]+))?$/.exec(s)!.groups!;
  const server = image(only(service, 'Deployment').spec.template.spec.containers[0].image);
  const migration = image(container.image);
  t.ok(server.tag, `the service image has a tag (${server.repo}:${server.tag})`);
  t.equal(migration.tag, server.tag, 'the Job image has the same tag');
  t.equal(migration.repo, `${server.repo}-migrate`, 'the Job image is the -migrate image of the same repository');
  t.equal(job.metadata.namespace, only(service, 'Deployment').metadata.namespace, 'same namespace');
  const release = (dir: string) => {
    const k = parseYaml(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8')) as Obj;
    return { namespace: k.namespace, images: k.images };
  };
  t.same(release(MIGRATE_DIR), release(SERVICE_DIR), 'overlays/example and its migrate/ set the same namespace and images');
  t.equal(release(SERVICE_DIR).images?.length, 2, 'two images: the service and the migration');

  // deploy/README.md names what is rendered.
  const readme = readFileSync(path.join(DEPLOY, 'README.md'), 'utf8');
  t.ok(readme.includes(`job/${job.metadata.name}`), `deploy/README.md waits for job/${job.metadata.name}`);
  t.ok(readme.includes(`deployment/${only(service, 'Deployment').metadata.name}`), 'deploy/README.md watches the Deployment');
  t.ok(readme.includes(`-n ${job.metadata.namespace} `), `deploy/README.md uses namespace ${job.metadata.namespace}`);
});

/**
 * The Galera overlay: mariadb-operator's MariaDB resource with Galera on (the fields as the
 * operator's examples use them: examples/manifests/mariadb_galera*.yaml), and sessiond pointed
 * at its pods and its primary Service as the operator names them.
 */
t.test('overlays/galera: a Galera MariaDB for mariadb-operator, the service on its pods, the migration on its primary', async (t) => {
  const objects = renders.get(GALERA_DIR)!;
  const galeraMigrate = renders.get(GALERA_MIGRATE_DIR)!;
  const db = only(objects, 'MariaDB');
  t.equal(db.apiVersion, OPERATOR_API);
  const known = ['rootPasswordSecretKeyRef', 'storage', 'replicas', 'galera', 'myCnf', 'affinity', 'podDisruptionBudget', 'resources'];
  t.same(Object.keys(db.spec).filter((k) => !known.includes(k)), [], 'only fields from the operator\'s Galera examples');
  t.same(db.spec.galera, { enabled: true }, 'Galera enabled');
  t.ok(db.spec.replicas >= 3 && db.spec.replicas % 2 === 1, `an odd number of nodes, at least 3 (${db.spec.replicas}): one may fail and a quorum remains`);
  t.match(db.spec.rootPasswordSecretKeyRef, { name: String, key: String });
  t.match(db.spec.storage, { size: /^\d+(Gi|Mi)$/ });
  for (const setting of ['binlog_format=row', 'innodb_autoinc_lock_mode=2', 'default_storage_engine=InnoDB']) {
    t.match(db.spec.myCnf, setting, `myCnf: ${setting}`);
  }
  t.equal(db.metadata.namespace, only(objects, 'Deployment').metadata.namespace, 'in the service\'s namespace');

  const secretValue = (objs: Obj[], key: string) => {
    const secret = objs.find((o) => o.kind === 'Secret' && o.metadata.name.startsWith('sessiond-secrets'));
    return decode(secret!.data[key]);
  };
  const name = db.metadata.name as string;
  const url = parseDatabaseUrl(secretValue(objects, 'DATABASE_URL'));
  t.same(
    url.hosts,
    Array.from({ length: db.spec.replicas }, (_, i) => ({ host: `${name}-${i}.${name}-internal`, port: 3306 })),
    'DATABASE_URL lists every pod of the StatefulSet, pod 0 first',
  );
  const migrateUrl = parseDatabaseUrl(secretValue(galeraMigrate, 'MIGRATE_DATABASE_URL'));
  t.same(migrateUrl.hosts, [{ host: `${name}-primary`, port: 3306 }], "the migration Job goes through the operator's primary Service");
  t.equal(migrateUrl.database, url.database, 'one database');
  t.not(migrateUrl.user, url.user, 'the service and the migration have users of their own');
  const deployment = only(objects, 'Deployment');
  const pod = deployment.spec.template.spec as Obj;
  const container = (pod.containers as Obj[]).find((c) => c.name === 'sessiond')!;
  t.doesNotThrow(() => loadConfig(containerEnv(t, objects, pod, container, t.testdir({}))), 'the service starts with the Galera URL');

  const release = (dir: string) => {
    const k = parseYaml(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8')) as Obj;
    return { namespace: k.namespace, images: k.images };
  };
  t.same(release(GALERA_DIR), release(SERVICE_DIR), 'the same release as overlays/example');
  t.same(release(GALERA_MIGRATE_DIR), release(GALERA_DIR), 'and its migrate/ the same');
});
