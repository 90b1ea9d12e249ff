import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Histogram, Registry } from 'prom-client';
import { registerAppCollectors } from './collectors.js';
import { MetricsServer, type Scrape } from './metrics-server.js';
import { processRegistry } from './process-registry.js';

export interface MetricsOptions {
  /** Serve /metrics on this port instead of the main one. */
  port: number | undefined;
  host: string;
  /** The MariaDB pool size (DB_POOL_SIZE); when given, exported as sessiond_db_pool_connections_max. */
  dbPoolSize?: number | undefined;
}

export interface Metrics {
  /** This app's own families (not the process metrics, which are shared: see process-registry.ts). */
  registry: Registry;
  /** The separate listener when METRICS_PORT is set; it binds when the main server listens. */
  server: MetricsServer | undefined;
  /** The text Prometheus gets: this app's families and the process metrics. */
  scrape(): Promise<Scrape>;
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics;
  }
}

export const METRICS_PATH = '/metrics';

/** The route label of requests no route matched: never the raw URL, which may hold anything. */
export const UNMATCHED_ROUTE = 'unmatched';

/**
 * Request duration buckets: a cache hit answers in well under a millisecond, a MariaDB read in
 * a few; the top buckets catch calls running into the DB deadline (acquire + query timeout,
 * 3 s by default).
 */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * Prometheus metrics (text format 0.0.4) in a registry of this app's own (tests build many
 * apps in one process), plus the shared process metrics.
 *
 * With no port, GET /metrics is served by the app itself, outside /v1: no API key, no rate
 * limit, hidden from the OpenAPI document. With a port, a separate listener serves it on
 * host:port once the main server listens (buildApp alone never binds anything), and
 * /metrics on the main port is a 404.
 */
export async function registerMetrics(app: FastifyInstance, options: MetricsOptions): Promise<void> {
  const registry = new Registry();
  const scrape = async (): Promise<Scrape> => {
    const merged = Registry.merge([processRegistry(), registry]);
    return { contentType: merged.contentType, body: await merged.metrics() };
  };

  const duration = new Histogram({
    name: 'sessiond_http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by method, route pattern and status code.',
    labelNames: ['method', 'route', 'status_code'],
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  const children = new Map<string, ReturnType<typeof duration.labels>>();
  const servedHere = options.port === undefined;
  // Added to the root instance, the hook reaches every route, /v1 included, and the 404 handler.
  app.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, done: () => void) => {
    const route = request.routeOptions.url;
    if (!(servedHere && route === METRICS_PATH)) {
      // One labelled child per (method, route, status), kept: observe() on the parent hashes the
      // label set on every call.
      const key = `${request.method} ${route} ${reply.statusCode}`;
      let child = children.get(key);
      if (child === undefined) {
        child = duration.labels({ method: request.method, route: route ?? UNMATCHED_ROUTE, status_code: String(reply.statusCode) });
        children.set(key, child);
      }
      child.observe(reply.elapsedTime / 1000);
    }
    done();
  });

  // The sources (pool, counters, breaker) are all decorated by the time the app is ready.
  app.addHook('onReady', async () => {
    registerAppCollectors(app, registry, { dbPoolSize: options.dbPoolSize });
  });

  let server: MetricsServer | undefined;
  if (servedHere) {
    app.get(METRICS_PATH, { schema: { hide: true }, logLevel: 'warn' }, async (_request, reply) => {
      const { contentType, body } = await scrape();
      return reply.header('content-type', contentType).header('cache-control', 'no-store').send(body);
    });
  } else {
    const metricsServer = new MetricsServer({ host: options.host, port: options.port! }, scrape, app.log.child({ component: 'metrics' }));
    server = metricsServer;
    // onListen errors are only logged by Fastify: a metrics port that cannot be bound leaves
    // the API serving, with an error in the log (and `app.metrics.server.listening` rejected).
    app.addHook('onListen', async () => {
      try {
        const address = await metricsServer.start();
        const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
        app.log.info({ metricsAddress: `http://${host}:${address.port}${METRICS_PATH}` }, 'metrics listening');
      } catch (err) {
        app.log.error({ err, host: options.host, port: options.port }, 'metrics server could not listen; /metrics is not served');
      }
    });
    app.addHook('onClose', async () => metricsServer.stop());
  }

  app.decorate('metrics', { registry, server, scrape } satisfies Metrics);
}
