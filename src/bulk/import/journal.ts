/**
 * The import's journal: one SQLite file per import (never the import's maps in memory: 10 million resources must
 * fit). It holds
 * - the files: content hash (a file changed between runs is refused), whether it was scanned, and how far its
 *   resources were written (a line or entry position, moved forward in the same journal transaction that records
 *   the outcomes of the batch that got there);
 * - the reference map: every key a resource is known by in the import (`urn:uuid:...`, a fullUrl, `Type/id`) to
 *   its `Type/id` in the store. Server-assigned ids (urn:uuid entries, resources without id) are chosen once, in the
 *   scan, and kept here: a second run assigns the same ids, so it never duplicates;
 * - identifiers (`Type?identifier=system|value` references resolve against them);
 * - each target's state (pending, stored, rejected with the file and line) and the rejections' OperationOutcomes;
 * - the counts by type;
 * - this run's validation verdicts (the check's, with the digest of what was validated; see engine.ts).
 * Writes are synchronous (better-sqlite3) and each batch's journal update is one transaction (WAL, synchronous
 * NORMAL: survives SIGKILL; a lost last batch after power loss is written again, and stores nothing new).
 */
import Database from 'better-sqlite3';
import type { OperationOutcome } from '../../fhir/outcome.js';
import { ensurePrivateFile } from '../../platform/private-files.js';
import type { SourceKind } from './sources.js';
import type { ConsentHandling, SourcePosition, TypeCounts } from './types.js';

export interface JournalFile {
  path: string;
  ord: number;
  hash: string;
  kind: SourceKind;
  scanned: boolean;
  /** Resources counted in the scan. */
  resources: number;
  /** Last line (NDJSON, 1-based) or entry index + 1 (Bundle) whose outcome is recorded. */
  done: number;
  finished: boolean;
}

export type TargetStatus = 'pending' | 'stored' | 'rejected';

export interface TargetState {
  status: TargetStatus;
  file: string;
  line: number | null;
  entry: number | null;
}

/** The outcome of one resource, as the batch's journal update records it. */
export interface RecordedOutcome {
  position: SourcePosition;
  resourceType?: string;
  target?: string;
  status: 'stored' | 'unchanged' | 'rejected';
  outcome?: OperationOutcome;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file (
  path TEXT PRIMARY KEY, ord INTEGER NOT NULL, hash TEXT NOT NULL, kind TEXT NOT NULL,
  scanned INTEGER NOT NULL DEFAULT 0, resources INTEGER NOT NULL DEFAULT 0,
  done INTEGER NOT NULL DEFAULT 0, finished INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS ref_key (key TEXT PRIMARY KEY, target TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identifier (
  type TEXT NOT NULL, system TEXT NOT NULL, value TEXT NOT NULL, target TEXT NOT NULL,
  PRIMARY KEY (type, system, value, target)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target (
  target TEXT PRIMARY KEY, status TEXT NOT NULL, file TEXT NOT NULL, line INTEGER, entry INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejection (
  file TEXT NOT NULL, line INTEGER NOT NULL, entry INTEGER NOT NULL, outcome TEXT NOT NULL,
  PRIMARY KEY (file, line, entry)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS validated (
  target TEXT PRIMARY KEY, digest BLOB NOT NULL, result TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS type_count (
  type TEXT PRIMARY KEY, stored INTEGER NOT NULL DEFAULT 0, unchanged INTEGER NOT NULL DEFAULT 0,
  rejected INTEGER NOT NULL DEFAULT 0);
`;

type Stmt = Database.Statement;

export class ImportJournal {
  private readonly db: Database.Database;
  private readonly s: Record<
    | 'getFile'
    | 'addFile'
    | 'markScanned'
    | 'advance'
    | 'getKey'
    | 'addKey'
    | 'addIdentifier'
    | 'findIdentifier'
    | 'getTarget'
    | 'setTarget'
    | 'addPendingTarget'
    | 'addRejection'
    | 'countType'
    | 'setVerdict'
    | 'getVerdict',
    Stmt
  >;

  private constructor(file: string) {
    ensurePrivateFile(file);
    this.db = new Database(file);
    // A new journal gives the pages of spent verdicts (deleted when the run has written every file) back at close:
    // otherwise about half of a finished import's journal is free pages (docs/import.md, "Disk").
    this.db.pragma('auto_vacuum = INCREMENTAL');
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('cache_size = -32768');
    this.db.exec(SCHEMA);
    const p = (sql: string) => this.db.prepare(sql);
    this.s = {
      getFile: p('SELECT * FROM file WHERE path = ?'),
      addFile: p('INSERT INTO file (path, ord, hash, kind) VALUES (?, ?, ?, ?)'),
      markScanned: p('UPDATE file SET scanned = 1, resources = ? WHERE path = ?'),
      advance: p('UPDATE file SET done = ?, finished = ? WHERE path = ?'),
      getKey: p('SELECT target FROM ref_key WHERE key = ?').pluck(),
      addKey: p('INSERT OR IGNORE INTO ref_key (key, target) VALUES (?, ?)'),
      addIdentifier: p('INSERT OR IGNORE INTO identifier (type, system, value, target) VALUES (?, ?, ?, ?)'),
      findIdentifier: p(
        'SELECT DISTINCT target FROM identifier WHERE type = ? AND system = ? AND value = ? LIMIT 2',
      ).pluck(),
      getTarget: p('SELECT status, file, line, entry FROM target WHERE target = ?'),
      setTarget: p(
        'INSERT INTO target (target, status, file, line, entry) VALUES (?, ?, ?, ?, ?) ' +
          'ON CONFLICT (target) DO UPDATE SET status = excluded.status, file = excluded.file, ' +
          'line = excluded.line, entry = excluded.entry',
      ),
      addPendingTarget: p(
        "INSERT OR IGNORE INTO target (target, status, file, line, entry) VALUES (?, 'pending', ?, ?, ?)",
      ),
      addRejection: p('INSERT OR REPLACE INTO rejection (file, line, entry, outcome) VALUES (?, ?, ?, ?)'),
      setVerdict: p('INSERT OR REPLACE INTO validated (target, digest, result) VALUES (?, ?, ?)'),
      getVerdict: p('SELECT digest, result FROM validated WHERE target = ?'),
      countType: p(
        'INSERT INTO type_count (type, stored, unchanged, rejected) VALUES (?, ?, ?, ?) ON CONFLICT (type) DO ' +
          'UPDATE SET stored = stored + excluded.stored, unchanged = unchanged + excluded.unchanged, ' +
          'rejected = rejected + excluded.rejected',
      ),
    };
  }

  static open(file: string): ImportJournal {
    return new ImportJournal(file);
  }

  close(): void {
    this.db.pragma('incremental_vacuum');
    this.db.close();
  }

  /** Runs `work` as one journal transaction. */
  transaction<T>(work: () => T): T {
    return this.db.transaction(work).immediate();
  }

  /** The consent handling a journal was started with: a resumed import keeps it (a change is refused). */
  fixConsentHandling(handling: ConsentHandling): ConsentHandling {
    this.db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('consents', ?)").run(handling);
    return this.db.prepare("SELECT value FROM meta WHERE key = 'consents'").pluck().get() as ConsentHandling;
  }

  /** The same for `--atomic-bundles`. */
  fixAtomicBundles(atomic: boolean): boolean {
    this.db
      .prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('atomicBundles', ?)")
      .run(String(atomic));
    return this.db.prepare("SELECT value FROM meta WHERE key = 'atomicBundles'").pluck().get() === 'true';
  }

  file(path: string): JournalFile | undefined {
    const row = this.s.getFile.get(path) as
      | {
          path: string;
          ord: number;
          hash: string;
          kind: SourceKind;
          scanned: number;
          resources: number;
          done: number;
          finished: number;
        }
      | undefined;
    return (
      row && {
        ...row,
        scanned: row.scanned === 1,
        finished: row.finished === 1,
      }
    );
  }

  addFile(path: string, ord: number, hash: string, kind: SourceKind): void {
    this.s.addFile.run(path, ord, hash, kind);
  }

  markScanned(path: string, resources: number): void {
    this.s.markScanned.run(resources, path);
  }

  advance(path: string, done: number, finished: boolean): void {
    this.s.advance.run(done, finished ? 1 : 0, path);
  }

  /** The `Type/id` a key (urn:uuid, fullUrl, `Type/id`) of the import stands for. */
  lookup(key: string): string | undefined {
    return this.s.getKey.get(key) as string | undefined;
  }

  /** Records a key's target unless the key is known already; returns the target in force. */
  bind(key: string, target: string): string {
    // A new key (the scan's usual case) is its own answer: no second statement to read it back.
    if (this.s.addKey.run(key, target).changes > 0) return target;
    return this.lookup(key)!;
  }

  addIdentifier(type: string, system: string, value: string, target: string): void {
    this.s.addIdentifier.run(type, system, value, target);
  }

  /** Targets of the import with this identifier (at most 2: enough to tell one from several). */
  findByIdentifier(type: string, system: string, value: string): string[] {
    return this.s.findIdentifier.all(type, system, value) as string[];
  }

  addPendingTarget(target: string, position: SourcePosition): void {
    this.s.addPendingTarget.run(target, position.file, position.line ?? null, position.entry ?? null);
  }

  /** A target known to be rejected before it is written (the scan): references to it are rejected too. */
  markRejected(target: string, position: SourcePosition): void {
    this.s.setTarget.run(target, 'rejected', position.file, position.line ?? null, position.entry ?? null);
  }

  target(target: string): TargetState | undefined {
    return this.s.getTarget.get(target) as TargetState | undefined;
  }

  /**
   * The validator's verdicts of this run (engine.ts, `checkFile`): the digest of exactly what was validated (the
   * options and the plain JSON text, after reference rewriting) and the result (NULL: valid, no issues). Kept only
   * for the run that made them: `clearVerdicts` at the start of each run and at the end of one that finished (a
   * verdict is never taken for another input: its digest must match, so a spent one needs no delete of its own).
   */
  setVerdict(target: string, digest: Buffer, result: string | null): void {
    this.s.setVerdict.run(target, digest, result);
  }

  verdict(target: string): { digest: Buffer; result: string | null } | undefined {
    return this.s.getVerdict.get(target) as { digest: Buffer; result: string | null } | undefined;
  }

  clearVerdicts(): void {
    this.db.exec('DELETE FROM validated');
  }

  /** One batch's outcomes (inside `transaction`). */
  record(outcomes: readonly RecordedOutcome[]): void {
    const counts = new Map<string, TypeCounts>();
    for (const o of outcomes) {
      const { file, line, entry } = o.position;
      if (o.target)
        this.s.setTarget.run(
          o.target,
          o.status === 'rejected' ? 'rejected' : 'stored',
          file,
          line ?? null,
          entry ?? null,
        );
      if (o.status === 'rejected')
        // -1: no line (Bundle) or no entry (NDJSON); NULLs would never conflict in the key.
        this.s.addRejection.run(file, line ?? -1, entry ?? -1, JSON.stringify(o.outcome));
      const type = o.resourceType ?? '(unreadable)';
      const c = counts.get(type) ?? { stored: 0, unchanged: 0, rejected: 0 };
      c[o.status]++;
      counts.set(type, c);
    }
    for (const [type, c] of counts) this.s.countType.run(type, c.stored, c.unchanged, c.rejected);
  }

  counts(): Record<string, TypeCounts> {
    const rows = this.db.prepare('SELECT * FROM type_count ORDER BY type').all() as ({
      type: string;
    } & TypeCounts)[];
    const out: Record<string, TypeCounts> = {};
    for (const { type, stored, unchanged, rejected } of rows) out[type] = { stored, unchanged, rejected };
    return out;
  }

  /** Every rejection, in source order (file, then position). */
  *rejections(): IterableIterator<{ position: SourcePosition; outcome: OperationOutcome }> {
    const rows = this.db
      .prepare(
        'SELECT r.file, r.line, r.entry, r.outcome FROM rejection r JOIN file f ON f.path = r.file ' +
          'ORDER BY f.ord, r.line, r.entry',
      )
      .iterate() as IterableIterator<{
      file: string;
      line: number;
      entry: number;
      outcome: string;
    }>;
    for (const row of rows) {
      const position: SourcePosition = { file: row.file };
      if (row.line >= 0) position.line = row.line;
      if (row.entry >= 0) position.entry = row.entry;
      yield { position, outcome: JSON.parse(row.outcome) as OperationOutcome };
    }
  }
}
