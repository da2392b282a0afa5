/**
 * The runner both bulk kinds ($export, $import) share: their jobs run one at a time, in the order queued, each
 * by the kind's own `work`; once stopped, no further job starts and the running one is awaited.
 */
export class JobQueue {
  private readonly queue: string[] = [];
  private running?: Promise<void>;
  private stoppedFlag = false;

  constructor(private readonly work: (id: string) => Promise<void>) {}

  /** Whether the service is stopping (a running job checks it between its steps). */
  get stopped(): boolean {
    return this.stoppedFlag;
  }

  enqueue(id: string): void {
    this.queue.push(id);
    if (this.running || this.stoppedFlag) return;
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.queue.length > 0 && !this.stoppedFlag) this.enqueue(this.queue.shift()!);
    });
  }

  /** Resolves once no job is queued or running (tests; the shutdown). */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Marks the queue stopped, runs `interrupt` (which tells the running job to end), then awaits that job. */
  async stop(interrupt: () => void): Promise<void> {
    this.stoppedFlag = true;
    interrupt();
    await this.running;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.stoppedFlag) await this.work(this.queue.shift()!);
  }
}
