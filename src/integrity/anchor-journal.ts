/**
 * The anchor batch journal: which versions went into which Merkle batch, in which order, with their leaf hashes.
 *
 * Why it exists, apart from the store's per-version anchor state:
 * - Never anchor twice: a batch is written here ("prepared") before it is submitted, so after a crash or a lost
 *   reply the very same batch (same root) is checked on the ledger and finished, instead of a new one being built.
 * - Proofs: an inclusion proof needs every leaf of the batch; the journal has them in order.
 * - Finding what is missing: a version row deleted behind the service's back is still named here, so the audit
 *   can report `Type/id/_history/vid` as missing when its batch no longer recomputes to the on-chain root.
 *
 * `AnchorJournal` keeps it in its own tables (prefixed `integrity_`) of a SQLite file (the data directory's
 * `integrity.sqlite`: one process drains); with a PostgreSQL store it is in the database, shared by every replica
 * (`PostgresAnchorJournal`, src/integrity/postgres-anchor-journal.ts, with the drain lease). Leaf hashes and HMAC keys
 * only, no health data.
 */
import { open as openFile } from 'node:fs/promises';
import Database from 'better-sqlite3';
import type { VersionKey } from '../fhir/store/resource-store.js';
import { ensurePrivateFile } from '../platform/private-files.js';
import type { LeafVersion } from './hashing.js';

export interface BatchMember extends VersionKey {
  leafIndex: number;
  leafHash: string;
  ledgerKey: string;
  /** The leaf format of `leafHash` (src/integrity/hashing.ts): 1 or 2. */
  leafVersion: LeafVersion;
}

export interface JournalBatch {
  root: string;
  leafCount: number;
  state: 'prepared' | 'committed';
  /** Chain height when the batch was prepared: where to look for its transaction after a crash. */
  heightBefore: number;
  transactionId?: string;
  blockNumber?: number;
  preparedAt: string;
  committedAt?: string;
}

/** A batch's row in either journal (PostgreSQL gives its bigint columns as strings). */
export interface BatchRow {
  root: string;
  leaf_count: number;
  state: 'prepared' | 'committed';
  height_before: number | string;
  transaction_id: string | null;
  block_number: number | string | null;
  prepared_at: string;
  committed_at: string | null;
}

/** A batch member's row in either journal. */
export interface MemberRow {
  leaf_index: number;
  resource_type: string;
  id: string;
  version_id: number;
  leaf_hash: string;
  ledger_key: string;
  leaf_version: number;
}

export type Awaitable<T> = T | Promise<T>;

/**
 * The journal as the anchorer, the verifier and the evidence read it: `AnchorJournal` (SQLite, synchronous) or
 * `PostgresAnchorJournal` (asynchronous). Callers await every answer.
 */
export interface BatchJournal {
  /**
   * May this process drain the outbox now? SQLite: always (the data directory is one process's). PostgreSQL: when it
   * holds, or has just taken, the drain lease (one replica at a time; a new holder gets the next fencing token).
   */
  acquireDrain(): Awaitable<boolean>;
  /**
   * Throws `DrainLeaseLostError` unless this process still holds the drain lease: checked right before a batch is
   * submitted, so a drainer that lost it submits nothing (its successor finishes the journalled batch).
   */
  assertDrainer(): Awaitable<void>;
  /** Journals a new batch (before anything is submitted); refused once the drain lease is lost. */
  prepare(root: string, heightBefore: number, members: BatchMember[]): Awaitable<void>;
  commit(root: string, transactionId: string, blockNumber: number): Awaitable<void>;
  /** Batches prepared but not yet known to be committed, oldest first. */
  prepared(): Awaitable<JournalBatch[]>;
  batch(root: string): Awaitable<JournalBatch | undefined>;
  batches(): AsyncIterable<JournalBatch> | Iterable<JournalBatch>;
  /** Prepared and committed batches (PostgreSQL: as of this process's last anchoring round). */
  batchCount(): { prepared: number; committed: number };
  /** The committed batch in the highest block (the latest the ledger must hold), if any. */
  lastCommitted(): Awaitable<JournalBatch | undefined>;
  /** The batch's members in leaf order. */
  members(root: string): Awaitable<BatchMember[]>;
  /** The keys that are not members of a batch already committed to the ledger, in their order. */
  withoutCommitted<K extends VersionKey>(keys: K[]): Awaitable<K[]>;
  /** The batch membership of one version (a version is in at most one committed batch). */
  memberOf(key: VersionKey): Awaitable<(BatchMember & { root: string }) | undefined>;
  close(): Awaitable<void>;
}

/** Versions per statement where the journal takes or checks many at once (a JSON array of a few hundred KB). */
const JSON_CHUNK = 2000;

/** A drainer that no longer holds the drain lease tried to journal or submit a batch (docs/store.md). */
export class DrainLeaseLostError extends Error {
  constructor(detail: string) {
    super(`this process no longer holds the anchoring drain lease: ${detail}`);
    this.name = 'DrainLeaseLostError';
  }
}

export const toBatch = (row: BatchRow): JournalBatch => ({
  root: row.root,
  leafCount: row.leaf_count,
  state: row.state,
  heightBefore: Number(row.height_before),
  transactionId: row.transaction_id ?? undefined,
  blockNumber: row.block_number === null ? undefined : Number(row.block_number),
  preparedAt: row.prepared_at,
  committedAt: row.committed_at ?? undefined,
});

export const toMember = (row: MemberRow): BatchMember => ({
  leafIndex: row.leaf_index,
  resourceType: row.resource_type,
  id: row.id,
  versionId: row.version_id,
  leafHash: row.leaf_hash,
  ledgerKey: row.ledger_key,
  leafVersion: row.leaf_version === 2 ? 2 : 1,
});

/** Flushes a file's written data to the disk (fsync), off the event loop. */
export type FileSync = (path: string) => Promise<void>;

/** fsync through libuv's thread pool: the event loop serves requests meanwhile. */
const fsyncFile: FileSync = async (path) => {
  const handle = await openFile(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
};

export interface AnchorJournalOptions {
  /** How `prepare` makes its batch durable (tests hold it to see what waits for it). Default: fsync. */
  syncFile?: FileSync;
}

export class AnchorJournal implements BatchJournal {
  private readonly db: Database.Database;
  private committedMembersStatement?: Database.Statement;
  private insertMembersStatement?: Database.Statement;
  private readonly file: string;
  private readonly syncFile: FileSync;

  /*
   * Durability. A prepared batch must be on the disk before it is submitted (after a power cut, a batch on the
   * ledger that the journal forgot would be built again from other members: anchored twice). SQLite's
   * synchronous=FULL gives that with an fsync inside every COMMIT, which blocks the event loop, and with it every
   * request, for as long as the disk takes (3.5% of the service's time under bench:rest's creates, more on a busy
   * disk). Here: synchronous=NORMAL (a commit is in the WAL, safe against a crash of the process), and `prepare`
   * resolves only after an fsync of the WAL in the thread pool: the same guarantee before the submission, without
   * blocking. `commit` needs no fsync of its own: a batch whose 'committed' mark a power cut lost is 'prepared'
   * again, and its next round finds it on the ledger and marks it (Anchorer.findOnChain), anchoring nothing twice.
   */
  private constructor(file: string, options: AnchorJournalOptions) {
    ensurePrivateFile(file);
    this.file = file;
    this.syncFile = options.syncFile ?? fsyncFile;
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 10000');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS integrity_batches (
        root TEXT PRIMARY KEY,
        leaf_count INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('prepared', 'committed')),
        height_before INTEGER NOT NULL,
        transaction_id TEXT,
        block_number INTEGER,
        prepared_at TEXT NOT NULL,
        committed_at TEXT
      );
      CREATE TABLE IF NOT EXISTS integrity_batch_members (
        root TEXT NOT NULL REFERENCES integrity_batches(root),
        leaf_index INTEGER NOT NULL,
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        leaf_hash TEXT NOT NULL,
        ledger_key TEXT NOT NULL,
        PRIMARY KEY (root, leaf_index)
      );
      CREATE INDEX IF NOT EXISTS integrity_batch_members_version
        ON integrity_batch_members (resource_type, id, version_id);
    `);
    // Journals written before leaf formats were recorded: their members are all format 1.
    const columns = this.db.prepare(`PRAGMA table_info(integrity_batch_members)`).all() as { name: string }[];
    if (!columns.some((c) => c.name === 'leaf_version')) {
      this.db.exec(`ALTER TABLE integrity_batch_members ADD COLUMN leaf_version INTEGER NOT NULL DEFAULT 1`);
    }
  }

  /** Opens (and creates) the journal tables in this SQLite file; `:memory:` for tests. */
  static open(file: string, options: AnchorJournalOptions = {}): AnchorJournal {
    return new AnchorJournal(file, options);
  }

  /** One process owns the data directory (src/platform/data-dir-lock.ts), so it always drains. */
  acquireDrain(): boolean {
    return true;
  }

  assertDrainer(): void {}

  /** Journals the batch; resolves once it is on the disk (see the constructor: durability). */
  async prepare(root: string, heightBefore: number, members: BatchMember[]): Promise<void> {
    const insertBatch = this.db.prepare(
      `INSERT INTO integrity_batches (root, leaf_count, state, height_before, prepared_at)
       VALUES (?, ?, 'prepared', ?, ?) ON CONFLICT (root) DO NOTHING`,
    );
    // The members as one JSON array per statement, not a statement per member (a batch is a thousand versions or
    // more). Most of a member's cost is SQLite's page writes all the same: its entry in the index by version lands
    // on a random page (docs/integrity.md, "What anchoring costs a create").
    this.insertMembersStatement ??= this.db.prepare(
      `INSERT OR IGNORE INTO integrity_batch_members
         (root, leaf_index, resource_type, id, version_id, leaf_hash, ledger_key, leaf_version)
       SELECT ?, m.value ->> 0, m.value ->> 1, m.value ->> 2, m.value ->> 3, m.value ->> 4, m.value ->> 5,
         m.value ->> 6
       FROM json_each(?) m`,
    );
    const insertMembers = this.insertMembersStatement;
    this.db.transaction(() => {
      insertBatch.run(root, members.length, heightBefore, new Date().toISOString());
      for (let at = 0; at < members.length; at += JSON_CHUNK) {
        const rows = members
          .slice(at, at + JSON_CHUNK)
          .map((m) => [
            m.leafIndex,
            m.resourceType,
            m.id,
            m.versionId,
            m.leafHash,
            m.ledgerKey,
            m.leafVersion,
          ]);
        insertMembers.run(root, JSON.stringify(rows));
      }
    })();
    await this.syncWal();
  }

  /**
   * fsync of the WAL, where the commit just written is (a checkpoint that moved it into the database file synced
   * that file first, with synchronous=NORMAL too). An in-memory journal has nothing to sync.
   */
  private async syncWal(): Promise<void> {
    if (this.file === ':memory:' || this.file === '') return;
    try {
      await this.syncFile(`${this.file}-wal`);
    } catch (err) {
      // No WAL file (not created yet or removed at a close): the commit is in the database file itself.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await this.syncFile(this.file);
    }
  }

  commit(root: string, transactionId: string, blockNumber: number): void {
    this.db
      .prepare(
        `UPDATE integrity_batches SET state = 'committed', transaction_id = ?, block_number = ?, committed_at = ?
         WHERE root = ?`,
      )
      .run(transactionId, blockNumber, new Date().toISOString(), root);
  }

  /** Batches prepared but not yet known to be committed, oldest first. */
  prepared(): JournalBatch[] {
    return (
      this.db
        .prepare(`SELECT * FROM integrity_batches WHERE state = 'prepared' ORDER BY prepared_at, rowid`)
        .all() as BatchRow[]
    ).map(toBatch);
  }

  batch(root: string): JournalBatch | undefined {
    const row = this.db.prepare(`SELECT * FROM integrity_batches WHERE root = ?`).get(root) as
      BatchRow | undefined;
    return row && toBatch(row);
  }

  *batches(): IterableIterator<JournalBatch> {
    for (const row of this.db
      .prepare(`SELECT * FROM integrity_batches ORDER BY rowid`)
      .iterate() as IterableIterator<BatchRow>) {
      yield toBatch(row);
    }
  }

  batchCount(): { prepared: number; committed: number } {
    const rows = this.db
      .prepare(`SELECT state, count(*) AS n FROM integrity_batches GROUP BY state`)
      .all() as {
      state: string;
      n: number;
    }[];
    return {
      prepared: rows.find((r) => r.state === 'prepared')?.n ?? 0,
      committed: rows.find((r) => r.state === 'committed')?.n ?? 0,
    };
  }

  /** The committed batch in the highest block (the latest the ledger must hold), if any. */
  lastCommitted(): JournalBatch | undefined {
    const row = this.db
      .prepare(
        `SELECT * FROM integrity_batches WHERE state = 'committed' AND transaction_id IS NOT NULL
         ORDER BY block_number DESC, rowid DESC LIMIT 1`,
      )
      .get() as BatchRow | undefined;
    return row && toBatch(row);
  }

  /** The batch's members in leaf order. */
  members(root: string): BatchMember[] {
    return (
      this.db
        .prepare(`SELECT * FROM integrity_batch_members WHERE root = ? ORDER BY leaf_index`)
        .all(root) as MemberRow[]
    ).map(toMember);
  }

  /**
   * The keys that are not members of a batch already committed to the ledger, in their order: one statement per
   * JSON_CHUNK keys (a JSON array of [type, id, version]), not one per key.
   */
  withoutCommitted<K extends VersionKey>(keys: K[]): K[] {
    this.committedMembersStatement ??= this.db
      .prepare(
        // CROSS JOIN: the keys drive, each looked up by the index by version (never a scan of the members).
        `SELECT DISTINCT k.key FROM json_each(?) k CROSS JOIN integrity_batch_members m
           ON m.resource_type = k.value ->> 0 AND m.id = k.value ->> 1 AND m.version_id = k.value ->> 2
         JOIN integrity_batches b ON b.root = m.root AND b.state = 'committed'`,
      )
      .pluck();
    const committed = new Set<number>();
    for (let at = 0; at < keys.length; at += JSON_CHUNK) {
      const chunk = keys.slice(at, at + JSON_CHUNK).map((k) => [k.resourceType, k.id, k.versionId]);
      for (const index of this.committedMembersStatement.all(JSON.stringify(chunk)) as number[]) {
        committed.add(at + index);
      }
    }
    return committed.size === 0 ? keys : keys.filter((_, i) => !committed.has(i));
  }

  /** The batch membership of one version (a version is in at most one committed batch). */
  memberOf(key: VersionKey): (BatchMember & { root: string }) | undefined {
    const row = this.db
      .prepare(
        `SELECT m.*, m.root AS root FROM integrity_batch_members m JOIN integrity_batches b ON b.root = m.root
         WHERE m.resource_type = ? AND m.id = ? AND m.version_id = ?
         ORDER BY b.state = 'committed' DESC, b.rowid DESC LIMIT 1`,
      )
      .get(key.resourceType, key.id, key.versionId) as (MemberRow & { root: string }) | undefined;
    return row && { ...toMember(row), root: row.root };
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
