/**
 * Synchronous PostgreSQL queries for the LoadedCodeSystems port, which is synchronous because the validator is
 * (it asks about codes in the middle of a resource's walk). A worker thread owns one `pg` connection; the calling
 * thread posts a query and sleeps on a shared flag (Atomics.wait) until the worker has answered, then takes the
 * answer off its port (receiveMessageOnPort). Each call is one round trip to the database; the callers keep them
 * few (one query per concept) and cache what they read (postgres-code-systems.ts).
 */
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';

/** What the worker answers: the rows, or the database's error message. */
export type SyncQueryAnswer = { rows: Record<string, unknown>[] } | { error: string };

/** What the worker is given: its connection and the flag it raises after each answer. */
export interface SyncQueryWorkerData {
  connectionString: string;
  flag: SharedArrayBuffer;
  port: MessagePort;
}

/** How long one query may take before the caller gives up (the database unreachable, a lock held). */
const QUERY_TIMEOUT_MS = 30_000;

/** The worker's entry: the built file beside this one, or the TypeScript source through tsx (tests, tsx runs). */
function workerSource(): { source: string | URL; eval: boolean } {
  const here = import.meta.url;
  if (here.endsWith('.js')) return { source: new URL('./sync-query-worker.js', here), eval: false };
  const entry = new URL('./sync-query-worker.ts', here).href;
  return {
    source: `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(entry)}); })`,
    eval: true,
  };
}

export class SyncQueryError extends Error {}

export class SyncQuery {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly flag: Int32Array;
  private closed = false;

  constructor(connectionString: string) {
    const shared = new SharedArrayBuffer(4);
    this.flag = new Int32Array(shared);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const { source, eval: isEval } = workerSource();
    const workerData: SyncQueryWorkerData = { connectionString, flag: shared, port: port2 };
    this.worker = new Worker(source, { eval: isEval, workerData, transferList: [port2] });
    // The worker lives as long as the port is used; it must not keep the process alive on its own.
    this.worker.unref();
  }

  /** Runs `sql` with `params` and returns its rows, blocking this thread until the database answers. */
  query<Row>(sql: string, params: unknown[]): Row[] {
    if (this.closed) throw new SyncQueryError('The terminology store is closed');
    Atomics.store(this.flag, 0, 0);
    this.port.postMessage({ sql, params });
    if (Atomics.wait(this.flag, 0, 0, QUERY_TIMEOUT_MS) === 'timed-out')
      throw new SyncQueryError('The terminology store did not answer in time');
    const answer = receiveMessageOnPort(this.port)?.message as SyncQueryAnswer | undefined;
    if (!answer) throw new SyncQueryError('The terminology store gave no answer');
    if ('error' in answer) throw new SyncQueryError(`The terminology store failed: ${answer.error}`);
    return answer.rows as Row[];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.port.close();
    await this.worker.terminate();
  }
}
