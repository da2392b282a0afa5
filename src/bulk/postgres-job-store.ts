/**
 * Bulk jobs shared by the replicas of a PostgreSQL store (migration 15: `bulk_job`; docs/replicas.md, "Bulk jobs at
 * every replica"): a client polls a job's status, cancels it and fetches its files at any replica.
 *
 * - The records (owner, status, progress, manifest) are rows of `bulk_job`; the files stay in the bulk folder
 *   (--bulk-dir), which the replicas mount from one shared file system. Each folder has an id (BULK/bulk-dir.id,
 *   made by the first replica to use it); a job records the id of the folder it was made in (`files_at`), and only
 *   a replica whose folder has that id runs it or serves its files (replicas without a shared folder each keep to
 *   their own jobs, as before, rather than resuming a job without its files).
 * - Exactly one replica runs a job: the holder of its lease. A replica takes the oldest unfinished job nobody holds
 *   (or whose lease ran out: its holder died) with `FOR UPDATE SKIP LOCKED`, so two replicas looking at once take
 *   different jobs; taking it increments `lease_token`. While it runs, the holder renews the lease every third of
 *   --bulk-lease; every save of progress and the finish check the token, so a holder that lost the lease (paused past
 *   it, cut off from the database) saves nothing more and stops at its next save. A replica stopping gives its jobs
 *   back at once; one killed keeps them until its lease runs out, then another replica resumes them from their last
 *   saved progress (the files cut back to it).
 * - Cancel (DELETE) at a replica with the job's folder deletes the row and the files; at another, it marks the job
 *   cancelled and expired at once, so the next sweep of a replica with that folder deletes both. Either way clients
 *   no longer see it and the runner stops at its next save. Retention: one `DELETE ... RETURNING` takes each
 *   expired job, so one replica deletes its files.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { mkdirPrivate } from '../platform/private-files.js';
import {
  jobFilesDir,
  ownedJob,
  toJob,
  type BulkJobStore,
  type JobKind,
  type JobRow,
  type JobStatus,
  type StoredJobRow,
} from './job-store.js';

export interface PostgresBulkJobStoreOptions {
  pool: pg.Pool;
  schema: string;
  /** BULK: --bulk-dir (shared by the replicas) or DATA/bulk. */
  dir: string;
  /** --bulk-lease (seconds). */
  leaseSeconds: number;
  log?: { warn(obj: object, msg: string): void };
}

/** The id of a bulk folder (made once, by whichever replica comes first: `wx` makes one file win). */
export function bulkDirId(dir: string): string {
  mkdirPrivate(dir);
  const file = join(dir, 'bulk-dir.id');
  try {
    writeFileSync(file, `${randomUUID()}\n`, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readFileSync(file, 'utf8').trim();
}

export class PostgresBulkJobStore implements BulkJobStore {
  readonly dir: string;
  readonly pollMs: number;
  private readonly pool: pg.Pool;
  private readonly S: string;
  private readonly leaseSeconds: number;
  private readonly log?: PostgresBulkJobStoreOptions['log'];
  /** This bulk folder's id (`files_at` of the jobs made here). */
  private readonly filesAt: string;
  /** Who holds a lease: host, process and this store (two in one process are two holders). */
  private readonly holder = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  /** The jobs this replica runs, with the token of its lease on each. */
  private readonly held = new Map<string, number>();
  private readonly renewal: NodeJS.Timeout;

  constructor(options: PostgresBulkJobStoreOptions) {
    this.pool = options.pool;
    this.S = `"${options.schema.replace(/"/g, '""')}"`;
    this.dir = options.dir;
    this.leaseSeconds = options.leaseSeconds;
    this.log = options.log;
    this.filesAt = bulkDirId(options.dir);
    const thirdMs = (options.leaseSeconds * 1000) / 3;
    // Jobs queued at other replicas, or left by one that died, are looked for as often as leases are renewed.
    this.pollMs = thirdMs;
    this.renewal = setInterval(() => void this.renew(), thirdMs);
    this.renewal.unref();
  }

  filesDir(kind: JobKind, id: string): string {
    return jobFilesDir(this.dir, kind, id);
  }

  async create(
    job: Pick<JobRow, 'id' | 'kind' | 'owner' | 'request' | 'state' | 'createdAt'>,
  ): Promise<void> {
    await this.pool.query(
      `INSERT INTO ${this.S}.bulk_job (id, kind, owner, status, request, state, created_at, files_at)
       VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7)`,
      [job.id, job.kind, job.owner, job.request, job.state, job.createdAt, this.filesAt],
    );
  }

  async get(id: string): Promise<JobRow | undefined> {
    const { rows } = await this.pool.query<StoredJobRow>(
      `SELECT id, kind, owner, status, request, state, error, created_at, completed_at, expires_at
       FROM ${this.S}.bulk_job WHERE id = $1`,
      [id],
    );
    return rows[0] && toJob(rows[0]);
  }

  async owned(kind: JobKind, owner: string, id: string): Promise<JobRow> {
    return ownedJob(await this.get(id), kind, owner, id);
  }

  async claim(kind: JobKind): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ id: string; lease_token: string }>(
      `UPDATE ${this.S}.bulk_job SET holder = $3, lease_token = lease_token + 1,
         lease_until = now() + make_interval(secs => $4)
       WHERE id = (
         SELECT id FROM ${this.S}.bulk_job
         WHERE kind = $1 AND status IN ('queued', 'running') AND files_at = $2
           AND (holder IS NULL OR lease_until < now())
         ORDER BY created_at, id LIMIT 1
         FOR UPDATE SKIP LOCKED)
       RETURNING id, lease_token`,
      [kind, this.filesAt, this.holder, this.leaseSeconds],
    );
    const row = rows[0];
    if (!row) return undefined;
    this.held.set(row.id, Number(row.lease_token));
    return row.id;
  }

  async release(id: string): Promise<void> {
    const token = this.held.get(id);
    this.held.delete(id);
    if (token === undefined) return;
    await this.pool.query(
      `UPDATE ${this.S}.bulk_job SET holder = NULL, lease_until = NULL WHERE id = $1 AND lease_token = $2`,
      [id, token],
    );
  }

  async saveState(id: string, status: JobStatus, state: string): Promise<boolean> {
    const token = this.held.get(id);
    if (token === undefined) return false;
    const { rowCount } = await this.pool.query(
      `UPDATE ${this.S}.bulk_job SET status = $2, state = $3, lease_until = now() + make_interval(secs => $5)
       WHERE id = $1 AND status IN ('queued', 'running') AND lease_token = $4`,
      [id, status, state, token, this.leaseSeconds],
    );
    if (rowCount !== 1) this.held.delete(id);
    return rowCount === 1;
  }

  async finish(
    id: string,
    outcome: { status: 'completed' | 'failed'; state: string; error?: string },
    retentionMs: number,
  ): Promise<boolean> {
    const token = this.held.get(id);
    if (token === undefined) return false;
    this.held.delete(id);
    const at = Date.now();
    const { rowCount } = await this.pool.query(
      `UPDATE ${this.S}.bulk_job SET status = $2, state = $3, error = $4, completed_at = $5, expires_at = $6,
         holder = NULL, lease_until = NULL
       WHERE id = $1 AND status IN ('queued', 'running') AND lease_token = $7`,
      [id, outcome.status, outcome.state, outcome.error ?? null, at, at + retentionMs, token],
    );
    return rowCount === 1;
  }

  async remove(kind: JobKind, id: string): Promise<void> {
    this.held.delete(id);
    const { rowCount } = await this.pool.query(
      `DELETE FROM ${this.S}.bulk_job WHERE id = $1 AND files_at = $2`,
      [id, this.filesAt],
    );
    if (rowCount === 1) {
      rmSync(join(this.dir, kind, id), { recursive: true, force: true });
      return;
    }
    // Its files are in another bulk folder, which this replica does not mount: the job is marked cancelled and
    // expired at once (unknown to clients, stopped at its runner's next save), and the sweep of a replica with that
    // folder deletes the record and the files.
    await this.pool.query(
      `UPDATE ${this.S}.bulk_job SET status = 'failed', error = 'cancelled', expires_at = 0, holder = NULL,
         lease_until = NULL
       WHERE id = $1`,
      [id],
    );
  }

  async sweep(now: number): Promise<number> {
    // Each expired job is returned to one replica only (the row is deleted by the statement that returns it).
    const { rows } = await this.pool.query<{ id: string; kind: JobKind; files_at: string }>(
      `DELETE FROM ${this.S}.bulk_job WHERE expires_at IS NOT NULL AND expires_at <= $1
         AND files_at = $2
       RETURNING id, kind, files_at`,
      [now, this.filesAt],
    );
    for (const job of rows) rmSync(join(this.dir, job.kind, job.id), { recursive: true, force: true });
    return rows.length;
  }

  close(): Promise<void> {
    clearInterval(this.renewal);
    return Promise.resolve();
  }

  /** Renews the leases this replica holds; a job whose lease it lost is no longer its (its next save fails). */
  private async renew(): Promise<void> {
    if (this.held.size === 0) return;
    const ids = [...this.held.keys()];
    const tokens = ids.map((id) => this.held.get(id)!);
    try {
      const { rows } = await this.pool.query<{ id: string }>(
        `UPDATE ${this.S}.bulk_job j SET lease_until = now() + make_interval(secs => $3)
         FROM unnest($1::text[], $2::bigint[]) AS mine(id, token)
         WHERE j.id = mine.id AND j.lease_token = mine.token AND j.status IN ('queued', 'running')
         RETURNING j.id`,
        [ids, tokens, this.leaseSeconds],
      );
      const renewed = new Set(rows.map((row) => row.id));
      ids.forEach((id, i) => {
        if (!renewed.has(id) && this.held.get(id) === tokens[i]) this.held.delete(id);
      });
    } catch (err) {
      this.log?.warn({ err }, 'renewing the bulk job leases failed (tried again)');
    }
  }
}
