import type { SessionKey } from '../domain/session.js';

/**
 * What Redis owes a committed change: drop the entry (keeping the touch register), plant a
 * tombstone, or — for an id created anew under a chosen token — clear everything the id's
 * earlier life left there, a tombstone and touch register included.
 */
export type OutboxAction = 'invalidate' | 'tombstone' | 'clear' | 'mark';

export interface OutboxRow {
  id: number;
  key: SessionKey;
  action: OutboxAction;
}

/**
 * The cache's outbox: invalidations and tombstones owed to Redis. A row is written in the same
 * transaction as the change it follows (SessionWrites.recordOutbox) and deleted once Redis took
 * it; the outbox worker replays what is left (docs/design.md §5.5).
 */
export interface OutboxRepository {
  /** Rows older than `before`, oldest first. */
  due(before: Date, limit: number): Promise<OutboxRow[]>;
  delete(ids: number[]): Promise<void>;
  /** Makes rows due for replay now, ahead of the age that normally lets their writer finish. */
  markDue(ids: number[]): Promise<void>;
}

/**
 * Deletes of outbox rows Redis acknowledged, gathered: one DELETE for the rows paid within
 * `delayMs` (or as soon as `maxIds` wait) instead of one statement per write. A row waits at most
 * about `delayMs`, far below the age at which a worker replays it (docs/design.md §5.5); a row
 * whose delete failed or never ran (the process stopped) is replayed, which is harmless.
 */
export class OutboxDeletes {
  private ids: number[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly outbox: OutboxRepository,
    /** Called when a DELETE failed: its rows stay, for the worker. */
    private readonly onFailed: () => void,
    private readonly delayMs = 20,
    private readonly maxIds = 200,
  ) {}

  add(ids: number[]): void {
    this.ids.push(...ids);
    if (this.ids.length >= this.maxIds) void this.flush();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => void this.flush(), this.delayMs);
      this.timer.unref();
    }
  }

  /** Sends what waits now (also at shutdown). */
  async flush(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const ids = this.ids;
    if (ids.length === 0) return;
    this.ids = [];
    await this.outbox.delete(ids).catch(() => this.onFailed());
  }
}
