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
