import type { Logger } from 'pino';

export interface GuessingMonitorOptions {
  /** Failed token lookups by one client within a window that trigger a warning. */
  warnThreshold: number;
  windowSeconds: number;
}

/**
 * Counts token lookups that matched nothing, per API client. A client past the threshold in a
 * window is logged once per window — by client name, never with a token — since a run of
 * misses means a broken app server or someone guessing tokens.
 */
export class GuessingMonitor {
  /** Failed lookups per client since start, for the metrics endpoint. */
  readonly failedLookups = new Map<string, number>();
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly options: GuessingMonitorOptions,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  record(client: string): void {
    this.failedLookups.set(client, (this.failedLookups.get(client) ?? 0) + 1);
    const now = this.now();
    const windowMs = this.options.windowSeconds * 1000;
    let w = this.windows.get(client);
    if (w === undefined || now - w.start >= windowMs) {
      w = { start: now, count: 0 };
      this.windows.set(client, w);
    }
    w.count += 1;
    if (w.count === this.options.warnThreshold) {
      this.log.warn(
        { client, failedLookups: w.count, windowSeconds: this.options.windowSeconds },
        'many session token lookups matched nothing: a misbehaving client or token guessing',
      );
    }
  }
}
