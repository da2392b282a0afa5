/**
 * Retry delays that double after each failure, up to a ceiling, and start over after a success: the one backoff of
 * the retriers that wait for the ledger or the store (the anchorer, the revocation outbox, the ledger's access
 * records, the audit). Each keeps its own first delay and ceiling, and its own timer or loop.
 */
export class DoublingBackoff {
  private delayMs: number;

  constructor(
    private readonly firstMs: number,
    private readonly maxMs: number,
  ) {
    this.delayMs = firstMs;
  }

  /** The delay to wait before the next attempt. */
  get currentMs(): number {
    return this.delayMs;
  }

  /** After a failure: the next delay is twice this one, at most the ceiling. */
  lengthen(): void {
    this.delayMs = Math.min(this.delayMs * 2, this.maxMs);
  }

  /** The delay to wait now; the one after it is lengthened. */
  next(): number {
    const delay = this.delayMs;
    this.lengthen();
    return delay;
  }

  /** After a success: back to the first delay. */
  reset(): void {
    this.delayMs = this.firstMs;
  }
}
