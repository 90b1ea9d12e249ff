import type { Logger } from 'pino';
import type { Database } from '../db/database.js';
import type { SessionStore } from '../store/session-store.js';

export interface SweeperOptions {
  intervalSeconds: number;
  batchSize: number;
  /** Rows are deleted only this long after they expired (the touch write-behind bound). */
  graceSeconds: number;
  /** Upper bound of batches in one round, so one round never runs for long. */
  maxBatchesPerRound?: number;
}

const LOCK_NAME = 'sessiond.sweeper';

/**
 * Deletes expired and revoked rows in small batches. Replicas take a MariaDB named lock
 * (GET_LOCK, held by one connection) so only one sweeps at a time; the others skip the round.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  /** Rows deleted since start; exposed to metrics later. */
  deletedTotal = 0;

  constructor(
    private readonly database: Database,
    private readonly store: SessionStore,
    private readonly options: SweeperOptions,
    private readonly log: Logger,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  start(): void {
    if (this.options.intervalSeconds === 0) return;
    const schedule = () => {
      if (this.stopped) return;
      // Jitter spreads replicas' rounds apart.
      const delay = this.options.intervalSeconds * 1000 * (0.75 + Math.random() * 0.5);
      this.timer = setTimeout(() => {
        this.running = this.runOnce()
          .then(() => undefined)
          .catch((err) => this.log.warn({ err }, 'sweeper round failed'))
          .finally(schedule);
      }, delay);
      this.timer.unref();
    };
    schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.running;
  }

  /** One round: returns the rows deleted, or null when another replica holds the lock. */
  async runOnce(): Promise<number | null> {
    return this.database.withConnection(async (conn) => {
      const rows = (await conn.query('SELECT GET_LOCK(?, 0) AS got', [LOCK_NAME])) as Array<{ got: number | null }>;
      if (rows[0]?.got !== 1) return null;
      try {
        let deleted = 0;
        const maxBatches = this.options.maxBatchesPerRound ?? 100;
        for (let i = 0; i < maxBatches && !this.stopped; i++) {
          const before = new Date(this.clock().getTime() - this.options.graceSeconds * 1000);
          const n = await this.store.sweepBatch(before, this.options.batchSize);
          deleted += n;
          if (n < this.options.batchSize) break;
        }
        this.deletedTotal += deleted;
        if (deleted > 0) this.log.info({ deleted }, 'sweeper deleted expired sessions');
        return deleted;
      } finally {
        await conn.query('SELECT RELEASE_LOCK(?)', [LOCK_NAME]).catch(() => undefined);
      }
    });
  }
}
