import { performance } from 'node:perf_hooks';
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
  /**
   * Deletion budget: batches are spaced so that a round deletes at most this many rows a
   * second (0 = back to back). A backlog (after an outage, or a million expired rows) is then
   * worked off at a bounded rate instead of taking the CPUs and I/O that requests need.
   */
  maxRowsPerSecond?: number;
}

const LOCK_NAME = 'sessiond.sweeper';

/**
 * Deletes expired and revoked rows in small batches. Replicas take a MariaDB named lock
 * (GET_LOCK, held by one connection) so only one sweeps at a time; the others skip the round.
 *
 * Under Galera the lock is node-local (GET_LOCK is not replicated): replicas on different
 * nodes may sweep at once. That is harmless, by construction of the batch: each DELETE removes
 * only rows whose idle expiry lies a grace (the touch write-behind bound) before the sweeper's
 * clock — rows no reader may see as live any more, whichever sweeper deletes them — and
 * deleting a row twice deletes it once. Two sweepers taking the same rows conflict at
 * certification; the loser's statement is rolled back and retried (Database.run) or the round
 * ends with a warning and the next round carries on. The cost is duplicated work, never a
 * wrong deletion; the lock stays as the saving for replicas on one node.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
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
    this.wake?.();
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
        const rate = this.options.maxRowsPerSecond ?? 0;
        const startedAt = performance.now();
        for (let i = 0; i < maxBatches && !this.stopped; i++) {
          // Pace: the rows deleted so far may not have taken less than rows / rate seconds.
          if (rate > 0 && deleted > 0) await this.pause((deleted / rate) * 1000 - (performance.now() - startedAt));
          if (this.stopped) break;
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

  /** Waits `ms` (nothing when ≤ 0); stop() ends the wait at once. */
  private pause(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    }).finally(() => {
      this.wake = undefined;
    });
  }
}
