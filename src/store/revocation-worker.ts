import type { Logger } from 'pino';
import type { MarkedRevocations, PendingRevocation, RevocationCursor } from './session-store.js';

export interface RevocationWorkerOptions {
  /** Rows revoked per transaction. */
  batchSize: number;
  /** Pause between batches, so that a large revocation leaves MariaDB to other calls. */
  pauseMs: number;
  /** How often pending marks are looked for when nothing kicked the worker (another replica's leftovers). */
  scanIntervalMs: number;
}

/**
 * Revokes the rows behind subjects' revocation marks, in short batches: a "log out everywhere"
 * commits only its mark (which reads honour at once) and kicks this worker in its replica; a
 * slow scan picks up marks a replica left when it stopped. Replicas racing on one mark do no
 * harm: a batch only revokes what is still active.
 */
export class RevocationWorker {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(
    private readonly store: MarkedRevocations,
    private readonly options: RevocationWorkerOptions,
    private readonly log: Logger,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  start(): void {
    this.kick();
  }

  /** Work through every pending mark now (again, if a pass is under way). */
  kick(): void {
    if (this.stopped) return;
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.drain()
      .then(() => undefined)
      .catch((err) => this.log.warn({ err: (err as Error).message }, 'revoking marked sessions failed; retrying later'))
      .finally(() => {
        this.running = undefined;
        if (this.stopped) return;
        if (this.again) {
          this.again = false;
          this.kick();
          return;
        }
        this.timer = setTimeout(() => this.kick(), this.options.scanIntervalMs);
        this.timer.unref();
      });
  }

  /** Runs passes until no mark is pending; resolves with the rows revoked. */
  async drain(): Promise<number> {
    let total = 0;
    for (;;) {
      const marks = await this.store.pendingRevocations(10);
      if (marks.length === 0) return total;
      for (const mark of marks) {
        if (this.stopped) return total;
        total += await this.revokeMark(mark);
      }
    }
  }

  private async revokeMark(mark: PendingRevocation): Promise<number> {
    let after: RevocationCursor | null = null;
    let rows = 0;
    for (;;) {
      const batch = await this.store.revokeMarkedBatch(mark, this.options.batchSize, after, this.clock());
      rows += batch.keys.length;
      if (batch.next === null || this.stopped) break;
      after = batch.next;
      if (this.options.pauseMs > 0) await new Promise((r) => setTimeout(r, this.options.pauseMs));
    }
    if (rows > 0) this.log.info({ rows }, 'revoked the sessions of a revocation mark');
    return rows;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.running;
  }
}
