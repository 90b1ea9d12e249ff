export type BreakerState = 'closed' | 'open' | 'recovering';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the breaker. */
  failureThreshold: number;
  /** How long the breaker stays open before a recovery probe is tried (ms). */
  cooldownMs: number;
}

/**
 * Keeps a dead dependency from costing requests any waiting. While open, `allows()` is false
 * and callers take their fallback at once. After the cooldown one recovery probe runs (chosen by
 * the owner: ping, then replay what was missed); only its success closes the breaker again, so
 * requests never wait on a probe.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private current: BreakerState = 'closed';

  constructor(
    private readonly options: CircuitBreakerOptions,
    private readonly probe: () => Promise<void>,
    private readonly now: () => number = Date.now,
    private readonly onChange: (state: BreakerState) => void = () => undefined,
  ) {}

  get state(): BreakerState {
    return this.current;
  }

  /** True when calls may go to the dependency. Starts a recovery probe when the cooldown is over. */
  allows(): boolean {
    if (this.current === 'closed') return true;
    if (this.current === 'open' && this.now() - this.openedAt >= this.options.cooldownMs) this.recover();
    return false;
  }

  success(): void {
    this.failures = 0;
  }

  failure(): void {
    this.failures += 1;
    if (this.current === 'closed' && this.failures >= this.options.failureThreshold) this.open();
  }

  private open(): void {
    this.current = 'open';
    this.openedAt = this.now();
    this.onChange('open');
  }

  private recover(): void {
    this.current = 'recovering';
    this.onChange('recovering');
    this.probe().then(
      () => {
        this.failures = 0;
        this.current = 'closed';
        this.onChange('closed');
      },
      () => this.open(),
    );
  }
}
