/** Cache tier counters, read by the metrics endpoint. Monotonic since the process started. */
export class CacheCounters {
  hits = 0;
  misses = 0;
  /** Fills refused by the install script: the lease was gone, or something newer or a tombstone was there. */
  refusedFills = 0;
  /** Calls served from MariaDB because Redis was unavailable (breaker open, timeout, error). */
  fallbacks = 0;
  /** Outbox rows whose invalidation the worker replayed. */
  outboxReplayed = 0;
  /** Touch expiries written behind to MariaDB. */
  touchWrites = 0;

  snapshot(): Record<string, number> {
    return Object.fromEntries(Object.entries(this).filter(([, v]) => typeof v === 'number'));
  }
}
