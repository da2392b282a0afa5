/**
 * A FIFO async mutex. The SQLite adapter is synchronous, so a single `write` never interleaves with anything;
 * the mutex only serialises the async `transaction(work)` calls (and makes other callers wait while one is open).
 */
export class AsyncMutex {
  private tail: Promise<void> = Promise.resolve();
  private waiting = 0;

  /** True while a holder runs or waiters queue. */
  get locked(): boolean {
    return this.waiting > 0;
  }

  async run<T>(fn: () => T | Promise<T>): Promise<T> {
    this.waiting++;
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((resolve) => (release = resolve));
    try {
      await previous;
      return await fn();
    } finally {
      this.waiting--;
      release();
    }
  }
}
