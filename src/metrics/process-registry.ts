import { collectDefaultMetrics, Registry } from 'prom-client';

let shared: Registry | undefined;

/**
 * The Node process metrics (CPU, memory, event loop lag, GC, handles: process_* and nodejs_*,
 * prom-client's conventional names, no prefix), collected once per process.
 *
 * They describe the process, not one app, and collectDefaultMetrics cannot be undone: every
 * call starts an event-loop delay monitor and a GC observer that live as long as the process.
 * Called per app, a test process that builds dozens of apps would keep dozens of monitors
 * (and, through the GC observer, each app's registry) alive. So every app's registry is
 * merged with this one at scrape time instead.
 */
export function processRegistry(): Registry {
  if (shared === undefined) {
    shared = new Registry();
    collectDefaultMetrics({ register: shared });
  }
  return shared;
}
