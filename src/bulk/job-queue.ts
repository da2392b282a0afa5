/**
 * The runner every bulk kind ($export, $import, $reindex) has: it runs the kind's jobs one at a time, each by the
 * kind's own `work`, taking them from the job store (`claim`: the oldest unfinished job nobody runs). It looks when
 * started (jobs a previous run left), when a job is queued here, and every `pollMs` of the store if it has one (on
 * PostgreSQL: jobs queued at another replica, or left by one that died). Once stopped, no further job starts, the
 * running one is awaited and given back to the store (another replica may take it at once).
 */
import type { BulkJobStore, JobKind } from './job-store.js';

export interface JobQueueLog {
  error(obj: object, msg: string): void;
}

export class JobQueue {
  private running?: Promise<void>;
  /** Someone asked to look while a look was running: look again after it. */
  private again = false;
  private stoppedFlag = false;
  private source?: { jobs: BulkJobStore; kind: JobKind; log: JobQueueLog };
  private poll?: NodeJS.Timeout;

  constructor(private readonly work: (id: string) => Promise<void>) {}

  /** Whether the service is stopping (a running job checks it between its steps). */
  get stopped(): boolean {
    return this.stoppedFlag;
  }

  /** Starts taking `kind`'s jobs from `jobs`: those left unfinished first (oldest first). */
  start(jobs: BulkJobStore, kind: JobKind, log: JobQueueLog): void {
    this.source = { jobs, kind, log };
    if (jobs.pollMs !== undefined) {
      this.poll = setInterval(() => this.wake(), jobs.pollMs);
      this.poll.unref();
    }
    this.wake();
  }

  /** A job was queued here: look for it now (not at the next poll). */
  enqueue(_id: string): void {
    this.wake();
  }

  /** Resolves once this runner has no job running or to look for (tests; the shutdown). */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Marks the queue stopped, runs `interrupt` (which tells the running job to end), then awaits that job. */
  async stop(interrupt: () => void): Promise<void> {
    this.stoppedFlag = true;
    if (this.poll) clearInterval(this.poll);
    interrupt();
    await this.running;
  }

  private wake(): void {
    if (this.stoppedFlag || !this.source) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain(this.source).finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.wake();
      }
    });
  }

  private async drain(source: NonNullable<JobQueue['source']>): Promise<void> {
    const { jobs, kind, log } = source;
    while (!this.stoppedFlag) {
      let id: string | undefined;
      try {
        id = await jobs.claim(kind);
        if (id === undefined) return;
        await this.work(id);
      } catch (err) {
        // A job's own failures are recorded by its work; this is the store failing (the next poll tries again).
        log.error({ err, job: id }, 'running a bulk job failed');
        return;
      } finally {
        // Finished, cancelled or stopped: a job still unfinished is given back (on PostgreSQL, to any replica).
        if (id !== undefined) await jobs.release(id).catch(() => undefined);
      }
    }
  }
}
