import type { Logger } from 'pino';
import type { SessionKey } from '../domain/session.js';
import type { OutboxAction, OutboxRepository } from './outbox.js';

/** Where the worker replays rows to: the cached store. */
export interface OutboxReplayTarget {
  /** True when Redis took the invalidation or tombstone. `force` skips the breaker. */
  applyToCache(key: SessionKey, action: OutboxAction, force: boolean): Promise<boolean>;
  readonly counters: { outboxReplayed: number };
}

export interface OutboxWorkerOptions {
  /** How often the outbox is read while it holds rows (and the first wait after it was empty). */
  intervalMs: number;
  /**
   * The longest wait between reads while the outbox stays empty: the wait doubles from
   * `intervalMs` up to this. A write of this replica that leaves a row wakes the worker, so
   * only another replica's leftovers (it stopped between its commit and its Redis call) wait
   * this long.
   */
  idleMaxIntervalMs: number;
  /** Rows younger than this belong to requests still finishing their own Redis step. */
  minAgeMs: number;
  batchSize: number;
}

/**
 * Replays cache invalidations that Redis never acknowledged (a replica crashed after commit,
 * Redis timed out or was down). Runs in every replica; replays are idempotent, so replicas
 * racing on the same row do no harm. An idle replica backs off (idleMaxIntervalMs) instead of
 * reading the outbox several times a second.
 */
export class OutboxWorker {
  private timer: NodeJS.Timeout | undefined;
  /** When the pending timer fires (ms since the epoch). */
  private dueAt = 0;
  private waitMs: number;
  private running: Promise<unknown> | undefined;
  private stopped = false;
  /** Reads of the outbox (due rows) so far: what an idle replica costs MariaDB. */
  polls = 0;
  /** The last replay found due rows. */
  private sawRows = false;

  constructor(
    private readonly outbox: OutboxRepository,
    private readonly cache: OutboxReplayTarget,
    private readonly options: OutboxWorkerOptions,
    private readonly log: Logger,
  ) {
    this.waitMs = options.intervalMs;
  }

  start(): void {
    this.schedule(this.options.intervalMs);
  }

  /**
   * A row was left (Redis did not take a write's invalidation): read the outbox again within
   * `afterMs` (at least the interval), whatever the idle backoff had reached.
   */
  wake(afterMs = 0): void {
    this.waitMs = this.options.intervalMs;
    const delay = Math.max(afterMs, this.options.intervalMs);
    // A tick under way schedules the next one itself, from the reset wait.
    if (this.running === undefined && (this.timer === undefined || this.dueAt > Date.now() + delay)) this.schedule(delay);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.dueAt = Date.now() + delayMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.replay()
        .then(() => {
          // Rows found (replayed or not): come back at the interval. None: wait twice as long.
          this.waitMs = this.sawRows ? this.options.intervalMs : Math.min(this.waitMs * 2, this.options.idleMaxIntervalMs);
        })
        .catch((err) => {
          this.waitMs = this.options.intervalMs;
          this.log.debug({ err: (err as Error).message }, 'outbox replay failed');
        })
        .finally(() => {
          this.running = undefined;
          this.schedule(this.waitMs);
        });
    }, delayMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.running;
  }

  /**
   * Replays due rows until none is left or Redis fails. `everything` also takes fresh rows and
   * skips the breaker: the recovery probe uses it before Redis is trusted again.
   */
  async replay(everything = false): Promise<number> {
    let replayed = 0;
    this.sawRows = false;
    for (;;) {
      const before = new Date(Date.now() - (everything ? -1000 : this.options.minAgeMs));
      this.polls += 1;
      const rows = await this.outbox.due(before, this.options.batchSize);
      if (rows.length > 0) this.sawRows = true;
      const done: number[] = [];
      for (const row of rows) {
        if (!(await this.cache.applyToCache(row.key, row.action, everything))) {
          if (everything) throw new Error('redis did not take the outbox replay');
          break;
        }
        done.push(row.id);
      }
      await this.outbox.delete(done);
      replayed += done.length;
      this.cache.counters.outboxReplayed += done.length;
      if (done.length < this.options.batchSize || done.length < rows.length) break;
    }
    if (replayed > 0) this.log.info({ replayed }, 'replayed cache invalidations from the outbox');
    return replayed;
  }
}
