import type { FastifyInstance } from 'fastify';

export interface MetricsOptions {
  /** Serve /metrics on this port instead of the main one. */
  port: number | undefined;
  host: string;
}

/** Prometheus metrics. Placeholder: filled in by the metrics work. */
export async function registerMetrics(_app: FastifyInstance, _options: MetricsOptions): Promise<void> {}
