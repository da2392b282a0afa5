/**
 * Bulk jobs on disk: one SQLite table (DATA/bulk/jobs.sqlite, 0600, synchronous=FULL) holding each job's request,
 * owner, status and progress, and a folder per job for its files (DATA/bulk/<kind>/<job id>/). A job's progress is
 * written after the file bytes it counts are fsync'd, so after a crash or a restart the job resumes from its last
 * recorded page: the files are cut back to the recorded lengths and nothing is written twice (docs/bulk.md).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ensurePrivateFile, mkdirPrivate } from '../platform/private-files.js';
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

interface Row {
  id: string;
  kind: JobKind;
  owner: string;
  status: JobStatus;
  request: string;
  state: string;
  error: string | null;
  created_at: number;
  completed_at: number | null;
  expires_at: number | null;
}

function toJob(row: Row): JobRow {
  return {
    id: row.id,
    kind: row.kind,
    owner: row.owner,
    status: row.status,
    request: row.request,
    state: row.state,
    error: row.error ?? undefined,
    createdAt: row.created_at,
    completedAt: row.completed_at ?? undefined,
    expiresAt: row.expires_at ?? undefined,
  };
}

export class BulkJobStore {
  private readonly db: Database.Database;

  /** `dir`: DATA/bulk. */
  constructor(readonly dir: string) {
    mkdirPrivate(dir);
    const file = join(dir, 'jobs.sqlite');
    ensurePrivateFile(file);
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // A job's progress must be on disk before a client is told of it (status, manifest).
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
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

  /** The folder of a job's files (created). */
  filesDir(kind: JobKind, id: string): string {
    const dir = join(this.dir, kind, id);
    mkdirPrivate(join(this.dir, kind));
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  create(job: Pick<JobRow, 'id' | 'kind' | 'owner' | 'request' | 'state' | 'createdAt'>): void {
    this.db
      .prepare(
        `INSERT INTO bulk_job (id, kind, owner, status, request, state, created_at) VALUES (?, ?, ?, 'queued', ?, ?, ?)`,
      )
      .run(job.id, job.kind, job.owner, job.request, job.state, job.createdAt);
  }

  get(id: string): JobRow | undefined {
    const row = this.db.prepare('SELECT * FROM bulk_job WHERE id = ?').get(id) as Row | undefined;
    return row && toJob(row);
  }

  /** The job, if it exists, is of `kind`, is `owner`'s and has not expired; else the one 404 (jobNotFound). */
  owned(kind: JobKind, owner: string, id: string): JobRow {
    const job = this.get(id);
    if (!job || job.kind !== kind || job.owner !== owner) jobNotFound(id);
    if (job.expiresAt !== undefined && job.expiresAt <= Date.now()) jobNotFound(id);
    return job;
  }

  /** Jobs not finished (queued or running), oldest first: what a start resumes. */
  unfinished(kind: JobKind): JobRow[] {
    return (
      this.db
        .prepare(
          `SELECT * FROM bulk_job WHERE kind = ? AND status IN ('queued', 'running') ORDER BY created_at, id`,
        )
        .all(kind) as Row[]
    ).map(toJob);
  }

  /** Records progress; false when the job is gone (cancelled meanwhile). */
  saveState(id: string, status: JobStatus, state: string): boolean {
    return (
      this.db
        .prepare(`UPDATE bulk_job SET status = ?, state = ? WHERE id = ? AND status IN ('queued', 'running')`)
        .run(status, state, id).changes === 1
    );
  }

  finish(
    id: string,
    outcome: { status: 'completed' | 'failed'; state: string; error?: string },
    retentionMs: number,
  ): boolean {
    const at = Date.now();
    return (
      this.db
        .prepare(
          `UPDATE bulk_job SET status = ?, state = ?, error = ?, completed_at = ?, expires_at = ?
           WHERE id = ? AND status IN ('queued', 'running')`,
        )
        .run(outcome.status, outcome.state, outcome.error ?? null, at, at + retentionMs, id).changes === 1
    );
  }

  /** Deletes a job and its files (cancel, expiry). */
  remove(kind: JobKind, id: string): void {
    this.db.prepare('DELETE FROM bulk_job WHERE id = ?').run(id);
    rmSync(join(this.dir, kind, id), { recursive: true, force: true });
  }

  /** Finished jobs whose retention ended by `now`. */
  expired(now: number): { id: string; kind: JobKind }[] {
    return this.db
      .prepare('SELECT id, kind FROM bulk_job WHERE expires_at IS NOT NULL AND expires_at <= ?')
      .all(now) as { id: string; kind: JobKind }[];
  }

  close(): void {
    this.db.close();
  }
}
