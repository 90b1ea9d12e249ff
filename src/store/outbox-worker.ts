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
  intervalMs: number;
  /** Rows younger than this belong to requests still finishing their own Redis step. */
  minAgeMs: number;
  batchSize: number;
}

/**
 * Replays cache invalidations that Redis never acknowledged (a replica crashed after commit,
 * Redis timed out or was down). Runs in every replica; replays are idempotent, so replicas
 * racing on the same row do no harm.
 */
export class OutboxWorker {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(
    private readonly outbox: OutboxRepository,
    private readonly cache: OutboxReplayTarget,
    private readonly options: OutboxWorkerOptions,
    private readonly log: Logger,
  ) {}

  start(): void {
    const tick = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.running = this.replay()
          .catch((err) => this.log.debug({ err: (err as Error).message }, 'outbox replay failed'))
          .finally(tick);
      }, this.options.intervalMs);
      this.timer.unref();
    };
    tick();
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
    for (;;) {
      const before = new Date(Date.now() - (everything ? -1000 : this.options.minAgeMs));
      const rows = await this.outbox.due(before, this.options.batchSize);
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
