/**
 * Where bulk jobs are kept (the port BulkJobStore): each job's record (request, owner, status, progress) and a folder
 * per job for its files (BULK/<kind>/<job id>/, BULK being --bulk-dir or DATA/bulk). A job's progress is written
 * after the file bytes it counts are fsync'd, so after a crash or a restart the job resumes from its last recorded
 * page: the files are cut back to the recorded lengths and nothing is written twice (docs/bulk.md).
 *
 * Two adapters: SqliteBulkJobStore here (one process: BULK/jobs.sqlite, 0600, synchronous=FULL), and
 * PostgresBulkJobStore (postgres-job-store.ts: the records in the database, a job run by the one replica holding its
 * lease, docs/replicas.md).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { openDurableSqlite } from '../platform/durable-sqlite.js';
import { mkdirPrivate } from '../platform/private-files.js';
import { fhirError } from '../fhir/outcome.js';

export type JobKind = 'export' | 'import' | 'reindex';

/** The one 404 of every bulk job route: another client's job, an expired one and none at all answer alike. */
export function jobNotFound(id: string): never {
  throw fhirError('bulk-job-not-found', `No bulk job ${id} for this client`);
}
/** queued -> running -> completed | failed; a cancelled job is removed at once (DELETE answers 202). */
export type JobStatus = 'queued' | 'running' | 'completed' | 'failed';

export interface JobRow {
  id: string;
  kind: JobKind;
  /** The participant (pseudonym) the job belongs to: only it sees the job and its files. */
  owner: string;
  status: JobStatus;
  /** The kick-off's parameters and who asked (JSON, the kind's own shape). */
  request: string;
  /** The job's progress (JSON, the kind's own shape), replaced after every durable step. */
  state: string;
  /** The failure's diagnostics (status failed). */
  error?: string;
  /** Epoch ms. */
  createdAt: number;
  completedAt?: number;
  /** When a finished job and its files are deleted (epoch ms). */
  expiresAt?: number;
}

/** A job's row as both adapters read it. */
export interface StoredJobRow {
  id: string;
  kind: JobKind;
  owner: string;
  status: JobStatus;
  request: string;
  state: string;
  error: string | null;
  /** Epoch ms (PostgreSQL's bigint arrives as a string). */
  created_at: number | string;
  completed_at: number | string | null;
  expires_at: number | string | null;
}

export function toJob(row: StoredJobRow): JobRow {
  return {
    id: row.id,
    kind: row.kind,
    owner: row.owner,
    status: row.status,
    request: row.request,
    state: row.state,
    error: row.error ?? undefined,
    createdAt: Number(row.created_at),
    completedAt: row.completed_at === null ? undefined : Number(row.completed_at),
    expiresAt: row.expires_at === null ? undefined : Number(row.expires_at),
  };
}

/** A job's record and files, wherever they are kept (every method may touch the database: all are async). */
export interface BulkJobStore {
  /** BULK: the folder of the jobs' files. */
  readonly dir: string;
  /** The folder of a job's files (created). */
  filesDir(kind: JobKind, id: string): string;
  create(job: Pick<JobRow, 'id' | 'kind' | 'owner' | 'request' | 'state' | 'createdAt'>): Promise<void>;
  get(id: string): Promise<JobRow | undefined>;
  /** The job, if it exists, is of `kind`, is `owner`'s and has not expired; else the one 404 (jobNotFound). */
  owned(kind: JobKind, owner: string, id: string): Promise<JobRow>;
  /**
   * Takes the oldest unfinished job of `kind` that nobody runs (queued, resumed after a restart, or whose runner
   * died) for this process to run; undefined when there is none. Until `release`, `finish` or `remove`, only this
   * process saves its progress.
   */
  claim(kind: JobKind): Promise<string | undefined>;
  /** This process stopped running the job without finishing it (stopping): another may take it at once. */
  release(id: string): Promise<void>;
  /** Records progress; false when the job is gone (cancelled meanwhile) or this process no longer runs it. */
  saveState(id: string, status: JobStatus, state: string): Promise<boolean>;
  finish(
    id: string,
    outcome: { status: 'completed' | 'failed'; state: string; error?: string },
    retentionMs: number,
  ): Promise<boolean>;
  /** Deletes a job and its files (cancel). */
  remove(kind: JobKind, id: string): Promise<void>;
  /** Deletes the finished jobs whose retention ended by `now`, and their files; how many. */
  sweep(now: number): Promise<number>;
  /** How often a process looks for jobs queued elsewhere or left by a runner that died (ms); absent: never. */
  readonly pollMs?: number;
  close(): Promise<void>;
}

/** The folder of a job's files under BULK (created). */
export function jobFilesDir(dir: string, kind: JobKind, id: string): string {
  const files = join(dir, kind, id);
  mkdirPrivate(join(dir, kind));
  mkdirSync(files, { recursive: true, mode: 0o700 });
  return files;
}

/** One process's jobs: a SQLite table in BULK/jobs.sqlite. */
export class SqliteBulkJobStore implements BulkJobStore {
  private readonly db: Database.Database;
  /** Jobs this process took (claim): each runs at most once per process, as its queue did. */
  private readonly taken = new Set<string>();

  /** `dir`: BULK. */
  constructor(readonly dir: string) {
    mkdirPrivate(dir);
    // Durable: a job's progress must be on disk before a client is told of it (status, manifest).
    this.db = openDurableSqlite(join(dir, 'jobs.sqlite'));
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS bulk_job (
        id           TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,
        owner        TEXT NOT NULL,
        status       TEXT NOT NULL,
        request      TEXT NOT NULL,
        state        TEXT NOT NULL,
        error        TEXT,
        created_at   INTEGER NOT NULL,
        completed_at INTEGER,
        expires_at   INTEGER
      );
      CREATE INDEX IF NOT EXISTS bulk_job_status ON bulk_job (status, created_at);
    `);
  }

  filesDir(kind: JobKind, id: string): string {
    return jobFilesDir(this.dir, kind, id);
  }

  create(job: Pick<JobRow, 'id' | 'kind' | 'owner' | 'request' | 'state' | 'createdAt'>): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO bulk_job (id, kind, owner, status, request, state, created_at) VALUES (?, ?, ?, 'queued', ?, ?, ?)`,
      )
      .run(job.id, job.kind, job.owner, job.request, job.state, job.createdAt);
    return Promise.resolve();
  }

  get(id: string): Promise<JobRow | undefined> {
    return Promise.resolve(this.getNow(id));
  }

  owned(kind: JobKind, owner: string, id: string): Promise<JobRow> {
    return Promise.resolve(ownedJob(this.getNow(id), kind, owner, id));
  }

  /** Every job unfinished and not yet taken by this process, oldest first (a start resumes them in that order). */
  claim(kind: JobKind): Promise<string | undefined> {
    const ids = this.db
      .prepare<[JobKind], string>(
        `SELECT id FROM bulk_job WHERE kind = ? AND status IN ('queued', 'running') ORDER BY created_at, id`,
      )
      .pluck()
      .all(kind);
    const id = ids.find((candidate) => !this.taken.has(candidate));
    if (id !== undefined) this.taken.add(id);
    return Promise.resolve(id);
  }

  /** Nothing to give back: one process runs every job of its data directory (a stopped job resumes at the next start). */
  release(): Promise<void> {
    return Promise.resolve();
  }

  saveState(id: string, status: JobStatus, state: string): Promise<boolean> {
    return Promise.resolve(
      this.db
        .prepare(`UPDATE bulk_job SET status = ?, state = ? WHERE id = ? AND status IN ('queued', 'running')`)
        .run(status, state, id).changes === 1,
    );
  }

  finish(
    id: string,
    outcome: { status: 'completed' | 'failed'; state: string; error?: string },
    retentionMs: number,
  ): Promise<boolean> {
    const at = Date.now();
    return Promise.resolve(
      this.db
        .prepare(
          `UPDATE bulk_job SET status = ?, state = ?, error = ?, completed_at = ?, expires_at = ?
           WHERE id = ? AND status IN ('queued', 'running')`,
        )
        .run(outcome.status, outcome.state, outcome.error ?? null, at, at + retentionMs, id).changes === 1,
    );
  }

  remove(kind: JobKind, id: string): Promise<void> {
    this.db.prepare('DELETE FROM bulk_job WHERE id = ?').run(id);
    rmSync(join(this.dir, kind, id), { recursive: true, force: true });
    return Promise.resolve();
  }

  sweep(now: number): Promise<number> {
    const expired = this.db
      .prepare('SELECT id, kind FROM bulk_job WHERE expires_at IS NOT NULL AND expires_at <= ?')
      .all(now) as { id: string; kind: JobKind }[];
    for (const job of expired) void this.remove(job.kind, job.id);
    return Promise.resolve(expired.length);
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }

  private getNow(id: string): JobRow | undefined {
    const row = this.db.prepare('SELECT * FROM bulk_job WHERE id = ?').get(id) as StoredJobRow | undefined;
    return row && toJob(row);
  }
}

/** The job if it is `owner`'s, of `kind` and not expired; else the one 404. */
export function ownedJob(job: JobRow | undefined, kind: JobKind, owner: string, id: string): JobRow {
  if (!job || job.kind !== kind || job.owner !== owner) jobNotFound(id);
  if (job.expiresAt !== undefined && job.expiresAt <= Date.now()) jobNotFound(id);
  return job;
}
