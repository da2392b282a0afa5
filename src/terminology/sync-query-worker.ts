/**
 * The worker thread of sync-query.ts: one PostgreSQL connection; each query posted on the port is run and answered
 * on the port, then the shared flag is raised to wake the caller. The connection is opened before the first query
 * (queued by `pg` until then).
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import pg from 'pg';
import type { SyncQueryAnswer, SyncQueryWorkerData } from './sync-query.js';

const data = workerData as SyncQueryWorkerData;
const flag = new Int32Array(data.flag);
const port: MessagePort = data.port;
const client = new pg.Client({ connectionString: data.connectionString });
const connected = client.connect();
// A failed connection is answered on each query (below); the rejection must not end the worker.
connected.catch(() => undefined);

function answer(message: SyncQueryAnswer): void {
  port.postMessage(message);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
}

port.on('message', ({ sql, params }: { sql: string; params: unknown[] }) => {
  connected
    .then(() => client.query(sql, params))
    .then(
      (result) => answer({ rows: result.rows as Record<string, unknown>[] }),
      (err: unknown) => answer({ error: err instanceof Error ? err.message : String(err) }),
    );
});
