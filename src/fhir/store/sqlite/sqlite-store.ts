/**
 * The embedded ResourceStore adapter: one SQLite file (better-sqlite3, synchronous, in-process).
 *
 * Durability: WAL journal with synchronous=NORMAL by default. A commit is in the WAL (handed to the OS) before
 * `write` resolves, so an acknowledged write survives a crash of the process (SIGKILL, OOM); a crash of the OS or
 * a power cut may lose the last few commits, but never leaves half a transaction: each version is there with its
 * index rows and anchor, or is not there at all. `synchronous: 'FULL'` also fsyncs the WAL on every commit
 * (survives power loss, costs a disk flush per write). See docs/store.md.
 *
 * Concurrency: better-sqlite3 runs each statement synchronously, so one `write` (a single SQLite transaction)
 * never interleaves with other JS. `transaction(work)` is async: an AsyncMutex makes other callers' writes and
 * reads wait until it commits or rolls back, so nobody sees its uncommitted rows. Writers in other processes
 * are kept out by BEGIN IMMEDIATE and waited for up to `busyTimeoutMs`.
 */
import { statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { fhirError } from '../../outcome.js';
import { AsyncMutex } from '../async-mutex.js';
import type {
  AnchorReference,
  AnchorState,
  HistoryPage,
  HistoryQuery,
  IndexEntry,
  PendingAnchor,
  ResourceStore,
  StoredVersion,
  StoredVersionBytes,
  VersionKey,
  WriteRequest,
} from '../resource-store.js';
import {
  anchorOf,
  CHUNK,
  decodeCursor,
  encodeCursor,
  finiteOrNull,
  instantBound,
  planWrite,
  toAnchorState,
  toStoredVersion,
  toStoredVersionBytes,
  VERSION_COLUMNS,
  type AnchorRow,
  type HistoryCursor,
  type HistoryLevel,
  type VersionRow,
} from '../store-support.js';
import { searchParamKeys, type SearchParamKeys } from './param-keys.js';
import { hexText, MIGRATIONS } from './schema.js';
import { FULL_TEXT_FIELDS, TextDocuments, type FullTextParam } from './text-documents.js';
import { refuseNewerSchema } from '../schema-version.js';
import { decodeJson, decodeJsonBytes, encodeJson, registerJsonFunctions } from '../json-codec.js';
import { CurrentVersionCache } from './current-cache.js';
import {
  checkInBackground,
  checkNow,
  describeFailure,
  interpret,
  type CheckOutcome,
  type IntegrityCheckMode,
  type IntegrityCheckResult,
  type StoreIntegrityStatus,
} from './integrity-check.js';
import {
  ACCESS_KEY_CUSTODIAN,
  scopeCondition,
  searchSqlite,
  type Fragment,
  type SqliteSearchRequest,
  type SqliteSearchResult,
} from './sqlite-search.js';
import { ensurePrivateFile } from '../../../platform/private-files.js';

export interface SqliteStoreOptions {
  /** Path of the database file, or ':memory:' (tests). */
  file: string;
  /** NORMAL (default): survives process crashes; FULL: also survives OS crashes and power loss, slower writes. */
  synchronous?: 'NORMAL' | 'FULL';
  /** How long a write waits for another process holding the write lock (ms). */
  busyTimeoutMs?: number;
  /** Page cache size in KiB. */
  cacheSizeKiB?: number;
  /**
   * WAL pages after which a commit checkpoints them into the database file (SQLite's default is 1000; ours 32768,
   * a WAL of up to ~128 MiB with 4 KiB pages). A write touches tens of pages (random-key index pages), so the
   * default checkpoints (and fsyncs) every few dozen writes; a longer WAL holds many writes to the same hot pages,
   * which a checkpoint copies once (measured: +10% validated creates/s against 8192).
   */
  walCheckpointPages?: number;
  /**
   * Memory for recently read current versions (current-cache.ts), in bytes; 0 turns the cache off.
   * Default 32 MiB.
   */
  readCacheBytes?: number;
  /** Store the writes that arrive together (concurrent requests) in one commit; default true. */
  groupCommit?: boolean;
  /**
   * The integrity check `init()` starts (docs/store.md): 'full' (`PRAGMA integrity_check`, default), 'quick'
   * (`quick_check`: no index-content cross-check, faster), 'off'.
   */
  integrityCheck?: IntegrityCheckMode | 'off';
  /**
   * A store up to this size (database and WAL files, bytes) is checked before `init()` returns, and a failure
   * refuses to open it; a larger one is checked in a child process while it serves (`integrityStatus()` says
   * 'checking' until then). Default 64 MiB.
   */
  integrityCheckSyncMaxBytes?: number;
  /**
   * Read only (`hie-ledger validate --dry-run`): the existing file opened read-only, never migrated (a schema other
   * than this software's is refused), so it coexists with the service that owns the data directory. Writes throw.
   */
  readOnly?: boolean;
}

/** A store whose start-up integrity check failed: the service refuses to start on it. */
export class StoreCorruptError extends Error {
  constructor(
    message: string,
    readonly result: IntegrityCheckResult,
  ) {
    super(message);
    this.name = 'StoreCorruptError';
  }
}

const DEFAULT_SYNC_CHECK_BYTES = 64 * 1024 * 1024;

type WriteOutcome = { ok: true; version: StoredVersion } | { ok: false; error: unknown };

type Statement = Database.Statement;

/** The columns of one search index row, in the order of the INSERT's values. */
const INDEX_COLUMNS = '(seq, ord, param_key, type, system, value, low, high, reference)';
const INDEX_ROW_VALUES = '(?, ?, ?, ?, ?, ?, ?, ?, ?)';
const INDEX_ROW_COLUMNS = 9;
/**
 * Most index rows one INSERT statement carries. A version has about 12 rows (Synthea): one statement for all of
 * them instead of one a row saves the per-statement cost of each (bind, step, reset: about a fifth of the rows'
 * time); 64 rows are 576 bound values, far below SQLite's limit (32,766).
 */
export const INDEX_ROWS_PER_STATEMENT = 64;

/**
 * The prepared `INSERT INTO search_index ... VALUES (...), (...)` of `rows` rows (1 to INDEX_ROWS_PER_STATEMENT), and
 * the connection's keys of (resource type, parameter) pairs (schema migration 11) that the rows carry.
 */
export type IndexRowInsert = ((rows: number) => Statement) & { readonly keys: SearchParamKeys };

/** The store's multi-row index INSERT statements, prepared once per row count as they are first needed. */
export function indexRowInserts(db: Database.Database): IndexRowInsert {
  const prepared: Statement[] = [];
  const insert = (rows: number) =>
    (prepared[rows] ??= db.prepare(
      `INSERT INTO search_index ${INDEX_COLUMNS} VALUES ${Array.from({ length: rows }, () => INDEX_ROW_VALUES).join(', ')}`,
    ));
  return Object.assign(insert, { keys: searchParamKeys(db) });
}

/**
 * The anchor columns as both adapters read them (store-support.ts AnchorRow), from the SQLite layout of migration 7:
 * the version's key from resource_version `v` (NULL when the version has no anchor), the hashes as hex text, the
 * batch from anchor_batch `b`. Select them FROM anchor a JOIN resource_version v ... LEFT JOIN anchor_batch b.
 */
const ANCHOR_STATE_COLUMNS =
  `${hexText('a.salt')} AS salt, ${hexText('a.leaf_hash')} AS leaf_hash, ${hexText('a.ledger_key')} AS ledger_key, ` +
  `a.leaf_version, a.status, ${hexText('b.transaction_id')} AS transaction_id, b.block_number, ` +
  `${hexText('b.batch_id')} AS batch_id, ${hexText('b.batch_root')} AS batch_root, a.leaf_index, b.leaf_count`;
const ANCHOR_COLUMNS =
  'iif(a.seq IS NULL, NULL, v.resource_type) AS a_resource_type, v.id AS a_id, v.version_id AS a_version_id, ' +
  ANCHOR_STATE_COLUMNS;

/**
 * The stored form of a hash, salt or ledger value (schema migration 7, the same rule as its SQL): the bytes of
 * non-empty lowercase hex of even length as a BLOB (half the size), any other text as it is; hexText reads both back.
 */
export function packHex(value: string): string | Buffer {
  return value.length > 0 && value.length % 2 === 0 && /^[0-9a-f]*$/.test(value)
    ? Buffer.from(value, 'hex')
    : value;
}

/**
 * Removes the access keys of a current version, as writeNow stored them from its custodian and patients: each by its
 * primary key (schema migration 7 dropped the index by (type, id), 114 bytes a version).
 */
function deleteAccessKeys(
  deleteAccessKey: Statement,
  resourceType: string,
  id: string,
  custodian: string | null,
  patients: string | null,
): void {
  if (custodian !== null) deleteAccessKey.run(resourceType, `${ACCESS_KEY_CUSTODIAN}${custodian}`, id);
  if (patients !== null)
    for (const patient of JSON.parse(patients) as string[]) deleteAccessKey.run(resourceType, patient, id);
}

function packHexOrNull(value: string | null | undefined): string | Buffer | null {
  return value === null || value === undefined ? null : packHex(value);
}

/** A full-text entry (`_text`, `_content`): a document of the FTS5 table, not an index row (schema migration 12). */
function isFullText(e: IndexEntry): e is IndexEntry & { param: FullTextParam } {
  return e.type === 'special' && (FULL_TEXT_FIELDS as readonly string[]).includes(e.param);
}

/**
 * The one producer of a version's search index rows (schema migration 6): `entries` as rows keyed by the version's
 * `seq` and their position, through the store's prepared multi-row `INSERT INTO search_index (seq, ord,
 * param_key, type, system, value, low, high, reference)` statements (the key of (resourceType, param): migration 11)
 * (up to INDEX_ROWS_PER_STATEMENT rows each); the full-text entries as documents queued in `text` (inserted before
 * the transaction commits, migration 12), not as rows. Every path that stores index rows (a write, a rebuild, a
 * replaced index, a batched import) goes through it, after deleting the previous version's rows (`WHERE seq = ?`)
 * and documents (TextDocuments.delete).
 */
export function insertIndexRows(
  insert: IndexRowInsert,
  text: TextDocuments,
  seq: number,
  resourceType: string,
  entries: readonly IndexEntry[],
): void {
  let values: unknown[] = [];
  let ord = 0;
  for (const e of entries) {
    if (isFullText(e)) {
      if (e.system !== undefined) text.add(seq, e.param, e.system);
      continue;
    }
    values.push(
      seq,
      ord++,
      insert.keys.keyOf(resourceType, e.param),
      e.type,
      e.system ?? null,
      e.value ?? null,
      finiteOrNull(e.low),
      finiteOrNull(e.high),
      e.reference ?? null,
    );
    if (values.length === INDEX_ROWS_PER_STATEMENT * INDEX_ROW_COLUMNS) {
      insert(INDEX_ROWS_PER_STATEMENT).run(values);
      values = [];
    }
  }
  if (values.length > 0) insert(values.length / INDEX_ROW_COLUMNS).run(values);
}

/** Removes a version's search index rows and its full-text documents: insertIndexRows's counterpart, on every path. */
function deleteIndexRows(s: Pick<Statements, 'deleteIndex' | 'text'>, seq: number): void {
  s.deleteIndex.run(seq);
  s.text.delete(seq);
}

/** The write's one lookup: the resource's current version (NULLs if none) and the store's last instant. */
interface WriteStateRow {
  version_id: number | null;
  deleted: number | null;
  /** The current version's custodian and patients: its access keys (deleted by their key, schema migration 7). */
  custodian: string | null;
  patients: string | null;
  /** The current version's seq: its index rows' key. */
  seq: number | null;
  last_updated: string | null;
}

interface Statements {
  writeState: Statement;
  insertVersion: Statement;
  upsertCurrent: Statement;
  deleteIndex: Statement;
  insertIndex: IndexRowInsert;
  /** The full-text documents of the open transaction (schema migration 12). */
  text: TextDocuments;
  deleteAccessKey: Statement;
  insertAccessKey: Statement;
  insertAnchor: Statement;
  insertAnchorBatch: Statement;
  insertOutbox: Statement;
  read: Statement;
  dataVersion: Statement;
  vread: Statement;
  bySeq: Statement;
  maxSeq: Statement;
  seqSince: Statement;
  seqAt: Statement;
  pendingAnchors: Statement;
  markAnchored: Statement;
  anchorState: Statement;
  anchorStates: Statement;
  vreadManyBytes: Statement;
  allVersionsChunk: Statement;
  eraseSalts: Statement;
  newestSeq: Statement;
  indexEntries: Statement;
}

/** Keys marked anchored per statement (markAnchored): one JSON text of this many keys is a few tens of KB. */
const MARK_CHUNK = 500;

export class SqliteResourceStore implements ResourceStore {
  /** The connection, for the search adapter (sqlite-search.ts) and diagnostics. Do not write through it. */
  readonly db: Database.Database;
  private readonly mutex = new AsyncMutex();
  /** The open transaction(work), if any. Its work reaches the store only through the view it is given. */
  private activeTx: symbol | undefined;
  /**
   * Set only during a synchronous call from a transaction view: that call runs now, inside the open
   * transaction, instead of waiting for the mutex the transaction holds. (Not AsyncLocalStorage: on Node 20 and
   * 22 it installs promise hooks that slow every request, ~13% of read throughput.)
   */
  private direct = false;
  /** Set while writeNow stores a version's rows: a failure then leaves part of them. */
  private rowsPending = false;
  /** The error of a write that failed half-way inside the open transaction(work): it must roll back. */
  private failedTransaction: unknown = undefined;
  private stmts: Statements | undefined;
  private readonly historyStatements = new Map<string, Statement>();
  private readonly writeTransaction: (request: WriteRequest) => StoredVersion;
  private readonly writeBatch: (requests: WriteRequest[]) => WriteOutcome[];
  /** The batch in one transaction without savepoints; throws (everything rolled back) if any write fails. */
  private readonly writeAllOrNothing: (requests: WriteRequest[], onWriteError: () => void) => StoredVersion[];
  private readonly groupCommit: boolean;
  private queued:
    | { request: WriteRequest; resolve: (v: StoredVersion) => void; reject: (e: unknown) => void }[]
    | undefined;
  private closed = false;
  private readonly cache: CurrentVersionCache | undefined;
  /** PRAGMA data_version when the cache was last known valid: it changes when another connection commits. */
  private cacheDataVersion: unknown = undefined;
  private readonly file: string;
  private readonly readOnly: boolean;
  private readonly integrityOptions: { mode: IntegrityCheckMode | 'off'; syncMaxBytes: number };
  private integrity: StoreIntegrityStatus = 'ok';
  private integrityResult: Promise<IntegrityCheckResult | undefined> = Promise.resolve(undefined);
  private integrityWorker: { stop: () => Promise<void> } | undefined;

  constructor(options: SqliteStoreOptions) {
    this.readOnly = options.readOnly === true;
    if (!this.readOnly) ensurePrivateFile(options.file);
    this.file = options.file;
    this.integrityOptions = {
      mode: options.integrityCheck ?? 'full',
      syncMaxBytes: options.integrityCheckSyncMaxBytes ?? DEFAULT_SYNC_CHECK_BYTES,
    };
    this.db = new Database(options.file, this.readOnly ? { readonly: true, fileMustExist: true } : undefined);
    if (!this.readOnly) this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.synchronous === 'FULL' ? 'FULL' : 'NORMAL'}`);
    this.db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))}`);
    this.db.pragma('foreign_keys = ON');
    this.db.pragma(`cache_size = -${Math.max(2000, Math.floor(options.cacheSizeKiB ?? 65_536))}`);
    this.db.pragma('temp_store = MEMORY');
    const walCheckpointPages = Math.max(100, Math.floor(options.walCheckpointPages ?? 32_768));
    this.db.pragma(`wal_autocheckpoint = ${walCheckpointPages}`);
    // After a checkpoint, shrink a WAL that grew past this (bytes). Above the checkpoint threshold (plus the commit
    // that crosses it), so a WAL of normal size is reused in place instead of truncated and grown again each cycle.
    const pageSize = this.db.pragma('page_size', { simple: true }) as number;
    this.db.pragma(`journal_size_limit = ${Math.ceil(walCheckpointPages * 1.25) * (pageSize + 24)}`);
    // Each transaction below inserts its full-text documents just before its COMMIT (withText).
    this.writeTransaction = this.db.transaction((request: WriteRequest) =>
      this.withText(() => this.writeNow(request)),
    ).immediate;
    // Inside the batch's transaction: a SAVEPOINT per write.
    const writeInSavepoint = this.db.transaction((request: WriteRequest) => this.writeNow(request));
    this.writeBatch = this.db.transaction((requests: WriteRequest[]) =>
      this.withText(() =>
        requests.map((request): WriteOutcome => {
          const text = this.statements().text;
          const mark = text.mark();
          try {
            return { ok: true, version: writeInSavepoint(request) };
          } catch (error) {
            // Rolled back to its savepoint: its documents leave the queue too.
            text.rollbackTo(mark);
            return { ok: false, error };
          }
        }),
      ),
    ).immediate;
    this.writeAllOrNothing = this.db.transaction(
      (requests: WriteRequest[], onWriteError: () => void): StoredVersion[] =>
        this.withText(() =>
          requests.map((request) => {
            try {
              return this.writeNow(request);
            } catch (error) {
              onWriteError();
              throw error;
            }
          }),
        ),
    ).immediate;
    this.groupCommit = options.groupCommit ?? true;
    const cacheBytes = options.readCacheBytes ?? 32 * 1024 * 1024;
    if (cacheBytes > 0) this.cache = new CurrentVersionCache(cacheBytes);
  }

  async init(): Promise<void> {
    this.assertOpen();
    if (this.stmts) return;
    // Before anything else reads it (the integrity check, a migration): a newer hie-ledger's store is not opened.
    this.refuseNewerSchema();
    this.checkIntegrityAtStart();
    // Migration 7 deflates the stored JSON with hie_encode_json (schema.ts); hie_decode_json is for SQL by hand.
    registerJsonFunctions(this.db);
    if (this.readOnly) this.checkSchemaCurrent();
    else this.migrate();
    this.stmts = this.prepareStatements();
  }

  /** The start-up integrity check: 'checking' (in the background), 'ok', or failed with where and what. */
  integrityStatus(): StoreIntegrityStatus {
    return this.integrity;
  }

  /** The start-up check's result once it has finished (undefined when it is off), for the log. */
  integrityChecked(): Promise<IntegrityCheckResult | undefined> {
    return this.integrityResult;
  }

  /**
   * Checks the file before it serves (small stores; a failure throws StoreCorruptError) or starts the check in a
   * child process (large ones). A page that is corrupt is otherwise served without notice until a read hits it.
   */
  private checkIntegrityAtStart(): void {
    const { mode, syncMaxBytes } = this.integrityOptions;
    if (mode === 'off') return;
    const started = performance.now();
    const finish = (outcome: CheckOutcome, background: boolean): IntegrityCheckResult => {
      const ms = Math.round(performance.now() - started);
      const { messages, where } = this.closed ? { messages: [], where: [] } : interpret(this.db, outcome);
      const result: IntegrityCheckResult = {
        ok: messages.length === 0,
        mode,
        background,
        ms,
        messages,
        where,
      };
      this.integrity = result.ok ? 'ok' : { failed: describeFailure(result) };
      return result;
    };
    if (this.file === ':memory:' || this.fileBytes() <= syncMaxBytes) {
      const result = finish(checkNow(this.db, mode), false);
      this.integrityResult = Promise.resolve(result);
      if (!result.ok) {
        this.closed = true;
        this.db.close();
        throw new StoreCorruptError(
          `The store ${this.file} failed its integrity check (${mode}, ${result.ms} ms): ${describeFailure(result)}. ` +
            'It is not opened: restore it from a backup (docs/store.md).',
          result,
        );
      }
      return;
    }
    this.integrity = 'checking';
    const worker = checkInBackground(this.file, mode);
    this.integrityWorker = worker;
    this.integrityResult = worker.done.then(
      (outcome) => finish(outcome, true),
      (err: unknown) =>
        // Stopped by close(): no result. Otherwise the check could not run: not known sound.
        this.integrityWorker === undefined
          ? undefined
          : finish(
              {
                error: `the check could not run: ${err instanceof Error ? err.message : String(err)}`,
                tables: [],
              },
              true,
            ),
    );
    void this.integrityResult.finally(() => {
      this.integrityWorker = undefined;
    });
  }

  private fileBytes(): number {
    let bytes = 0;
    for (const file of [this.file, `${this.file}-wal`]) {
      try {
        bytes += statSync(file).size;
      } catch {
        // No WAL yet.
      }
    }
    return bytes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const worker = this.integrityWorker;
    this.integrityWorker = undefined;
    await worker?.stop();
    // Let an open transaction finish before the connection goes.
    await this.mutex.run(() => {
      this.closed = true;
      this.db.close();
    });
  }

  read(resourceType: string, id: string): Promise<StoredVersion | undefined> {
    return this.guard(() => this.readNow(resourceType, id));
  }

  vread(resourceType: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    return this.guard(() => this.vreadNow(resourceType, id, versionId));
  }

  write(request: WriteRequest): Promise<StoredVersion> {
    if (!this.groupCommit)
      return this.guard(() => {
        const version = this.writeTransaction(request);
        this.settleKeys();
        return version;
      });
    return new Promise<StoredVersion>((resolve, reject) => {
      if (!this.queued) {
        this.queued = [];
        setImmediate(() => this.flushQueued());
      }
      this.queued.push({ request, resolve, reject });
    });
  }

  /**
   * Group commit: the writes that arrived during one turn of the event loop (concurrent requests) are stored in
   * one SQLite transaction, each in a savepoint of its own (a failing write affects no other), and all are
   * acknowledged after the one COMMIT. Saves a commit (WAL frames, and an fsync with FULL) per write.
   * The batch is first tried without savepoints (they copy every page a write changes to the subjournal: ~6%
   * fewer creates/s); only if one of its writes fails is it rolled back whole and stored again with savepoints,
   * so the outcome of each write is the same either way.
   */
  private flushQueued(): void {
    const batch = this.queued ?? [];
    this.queued = undefined;
    const run = () => {
      this.assertReady();
      if (batch.length === 1) {
        batch[0]!.resolve(this.writeTransaction(batch[0]!.request));
        this.settleKeys();
        return;
      }
      const outcomes = this.writeBatchOptimistically(batch.map((q) => q.request));
      this.settleKeys();
      outcomes.forEach((outcome, i) =>
        outcome.ok ? batch[i]!.resolve(outcome.version) : batch[i]!.reject(outcome.error),
      );
    };
    const fail = (error: unknown) => batch.forEach((q) => q.reject(error));
    if (!this.mutex.locked) {
      try {
        run();
      } catch (error) {
        fail(error);
      }
    } else {
      this.mutex.run(run).catch(fail);
    }
  }

  private writeBatchOptimistically(requests: WriteRequest[]): WriteOutcome[] {
    let aWriteFailed = false;
    try {
      return this.writeAllOrNothing(requests, () => (aWriteFailed = true)).map((version) => ({
        ok: true,
        version,
      }));
    } catch (error) {
      // BEGIN or COMMIT failing (busy, I/O) fails the whole batch, as with savepoints; a write failing does not.
      if (!aWriteFailed) throw error;
      return this.writeBatch(requests);
    }
  }

  history(query: HistoryQuery): Promise<HistoryPage> {
    return this.guard(() => this.historyNow(query));
  }

  /**
   * Runs `work` in one SQLite transaction. `work` must use the store it is given (calls to this object from
   * inside `work` wait for the transaction to end, like any other caller's).
   */
  async transaction<T>(work: (store: ResourceStore) => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      this.assertReady();
      const token = Symbol('transaction');
      const view = this.transactionView(token);
      const text = this.statements().text;
      text.clear();
      this.db.prepare('BEGIN IMMEDIATE').run();
      this.activeTx = token;
      try {
        const result = await work(view);
        if (this.failedTransaction !== undefined) {
          throw new Error('A write failed after storing part of its rows: the transaction was rolled back', {
            cause: this.failedTransaction,
          });
        }
        // The full-text documents of every write of the transaction, in one statement.
        text.flush();
        this.db.prepare('COMMIT').run();
        return result;
      } catch (err) {
        if (this.db.inTransaction) this.db.prepare('ROLLBACK').run();
        throw err;
      } finally {
        text.clear();
        this.activeTx = undefined;
        this.failedTransaction = undefined;
        this.settleKeys();
      }
    });
  }

  async rebuildIndex(extract: (json: string) => IndexEntry[]): Promise<number> {
    let rebuilt = 0;
    for (;;) {
      const batch = await this.mutex.run(() => {
        this.assertReady();
        const rows = this.inWriteTransaction(() => this.rebuildIndexBatch(extract));
        this.settleKeys();
        return rows;
      });
      if (batch === undefined) return rebuilt;
      rebuilt += batch;
    }
  }

  /** One batch of the first pending rebuild (its rows replaced, its position saved); undefined when none is pending. */
  private rebuildIndexBatch(extract: (json: string) => IndexEntry[]): number | undefined {
    const BATCH = 500;
    const state = this.db
      .prepare('SELECT name, row_type, after_seq FROM index_rebuild ORDER BY name LIMIT 1')
      .get() as { name: string; row_type: string | null; after_seq: number } | undefined;
    if (!state) return undefined;
    const rows = this.db
      .prepare(
        'SELECT v.seq, v.resource_type, v.id, v.json FROM resource_version v JOIN resource_current c ' +
          'ON c.resource_type = v.resource_type AND c.id = v.id AND c.seq = v.seq ' +
          'WHERE v.seq > ? AND c.deleted = 0 AND v.json IS NOT NULL AND (? IS NULL OR EXISTS (' +
          'SELECT 1 FROM search_index si WHERE si.seq = v.seq AND si.type = ?)) ' +
          `ORDER BY v.seq LIMIT ${BATCH}`,
      )
      .all(state.after_seq, state.row_type, state.row_type) as {
      seq: number;
      resource_type: string;
      id: string;
      json: string | Uint8Array;
    }[];
    const s = this.statements();
    for (const row of rows) {
      deleteIndexRows(s, row.seq);
      insertIndexRows(s.insertIndex, s.text, row.seq, row.resource_type, extract(decodeJson(row.json)));
    }
    if (rows.length < BATCH) this.db.prepare('DELETE FROM index_rebuild WHERE name = ?').run(state.name);
    else
      this.db
        .prepare('UPDATE index_rebuild SET after_seq = ? WHERE name = ?')
        .run(rows[rows.length - 1]!.seq, state.name);
    return rows.length;
  }

  /** Current, non-deleted versions matching a compiled search (../search-query.ts StoreSearchRequest). */
  search(request: SqliteSearchRequest): Promise<SqliteSearchResult> {
    return this.guard(() => searchSqlite(this.db, request));
  }

  pendingAnchors(limit: number): Promise<PendingAnchor[]> {
    return this.guard(() => {
      const rows = this.statements().pendingAnchors.all(Math.max(0, Math.floor(limit))) as AnchorRow[];
      return rows.map((row) => {
        const { status: _status, ...pending } = toAnchorState(row) as PendingAnchor & { status: 'pending' };
        return pending;
      });
    });
  }

  markAnchored(
    keys: VersionKey[],
    anchor: Omit<AnchorReference, 'leafIndex'> & { leafIndexes: number[] },
  ): Promise<void> {
    if (keys.length !== anchor.leafIndexes.length) {
      return Promise.reject(
        new Error(`markAnchored: ${keys.length} keys but ${anchor.leafIndexes.length} leaf indexes`),
      );
    }
    return this.guard(() => {
      const { markAnchored: mark, insertAnchorBatch } = this.statements();
      // One statement per MARK_CHUNK keys (a JSON array of [type, id, version, leaf index]) instead of one per key;
      // a key given twice keeps its last leaf index, as successive updates did.
      const leafIndexOf = new Map<string, [string, string, number, number]>();
      keys.forEach((key, i) =>
        leafIndexOf.set(`${key.resourceType}/${key.id}/${key.versionId}`, [
          key.resourceType,
          key.id,
          key.versionId,
          anchor.leafIndexes[i]!,
        ]),
      );
      const marks = [...leafIndexOf.values()];
      const markAll = this.db.transaction(() => {
        // The batch's columns once (schema migration 7), each version's row pointing at them.
        const batch = insertAnchorBatch.run(
          packHexOrNull(anchor.transactionId),
          anchor.blockNumber ?? null,
          packHexOrNull(anchor.batchId),
          packHexOrNull(anchor.root),
          anchor.leafCount ?? null,
        ).lastInsertRowid;
        for (let at = 0; at < marks.length; at += MARK_CHUNK) {
          const chunk = marks.slice(at, at + MARK_CHUNK);
          if (mark.run(batch, JSON.stringify(chunk)).changes === chunk.length) continue;
          // Rolled back with the transaction; the message names the first key without an anchor.
          const missing = chunk.find(
            ([resourceType, id, versionId]) =>
              !this.statements().anchorState.get(resourceType, id, versionId),
          );
          const [resourceType, id, versionId] = missing ?? chunk[0]!;
          throw new Error(`markAnchored: no anchor queued for ${resourceType}/${id}/_history/${versionId}`);
        }
      });
      markAll.immediate();
    });
  }

  anchorState(key: VersionKey): Promise<AnchorState | undefined> {
    return this.guard(() => {
      const row = this.statements().anchorState.get(key.resourceType, key.id, key.versionId) as
        AnchorRow | undefined;
      return row ? toAnchorState(row) : undefined;
    });
  }

  vreadMany(keys: readonly VersionKey[]): Promise<(StoredVersion | undefined)[]> {
    // One synchronous pass over the prepared statement (no promise per version).
    return this.guard(() => keys.map((k) => this.vreadNow(k.resourceType, k.id, k.versionId)));
  }

  vreadManyBytes(keys: readonly VersionKey[]): Promise<(StoredVersionBytes | undefined)[]> {
    // One query for all keys (as anchorStates); a deflated body is inflated straight to its UTF-8 bytes, a body kept
    // as text (not smaller deflated, or stored before migration 7) encoded once: no string for the caller to encode.
    return this.guard(() => {
      const versions = new Array<StoredVersionBytes | undefined>(keys.length).fill(undefined);
      if (keys.length === 0) return versions;
      const rows = this.statements().vreadManyBytes.all(
        JSON.stringify(keys.map((k) => [k.resourceType, k.id, k.versionId])),
      ) as (Omit<VersionRow, 'json'> & { json: string | Buffer | null; ord: number })[];
      for (const row of rows) {
        versions[row.ord] = toStoredVersionBytes({
          ...row,
          json: row.json === null ? null : decodeJsonBytes(row.json),
        });
      }
      return versions;
    });
  }

  anchorStates(keys: readonly VersionKey[]): Promise<(AnchorState | undefined)[]> {
    // One query for all keys (a JSON array of [type, id, version], each row numbered by its key's position): about
    // a third less CPU than one statement call per key.
    return this.guard(() => {
      const states = new Array<AnchorState | undefined>(keys.length).fill(undefined);
      if (keys.length === 0) return states;
      const rows = this.statements().anchorStates.all(
        JSON.stringify(keys.map((k) => [k.resourceType, k.id, k.versionId])),
      ) as (AnchorRow & { ord: number })[];
      for (const row of rows) states[row.ord] = toAnchorState(row);
      return states;
    });
  }

  allVersions(): AsyncIterable<{ version: StoredVersion; anchor?: AnchorState }> {
    return this.versionsWith((fn) => this.guard(fn));
  }

  /** allVersions, each chunk read through `run` (the guard, or a transaction view's direct call). */
  private async *versionsWith(
    run: <T>(fn: () => T) => Promise<T>,
  ): AsyncIterable<{ version: StoredVersion; anchor?: AnchorState }> {
    // Keyset chunks, not one open iterator: a better-sqlite3 iterator keeps the connection busy, and the consumer
    // awaits between items. The upper bound is fixed at the start, so versions written meanwhile are not included.
    const top = await run(() => (this.statements().maxSeq.get() as number | null) ?? 0);
    let after = 0;
    for (;;) {
      const rows = await run(
        () => this.statements().allVersionsChunk.all(after, top, CHUNK) as (VersionRow & AnchorRow)[],
      );
      for (const row of rows) {
        yield row.a_resource_type === null
          ? { version: toStoredVersion(row) }
          : { version: toStoredVersion(row), anchor: toAnchorState(row) };
      }
      if (rows.length < CHUNK) return;
      after = rows[rows.length - 1]!.seq;
    }
  }

  eraseSalts(resourceType: string, id: string): Promise<number> {
    return this.guard(
      () => this.statements().eraseSalts.run(new Date().toISOString(), resourceType, id).changes,
    );
  }

  /** GDPR erasure of content (docs/erasure.md): every version keeps its row, as a deletion without text. */
  eraseContent(resourceType: string, id: string): Promise<number> {
    return this.guard(() =>
      this.inWriteTransaction(() => {
        // Its access keys first, named by the current version's custodian and patients (nulled below).
        const current = this.db
          .prepare(
            'SELECT v.custodian, v.patients FROM resource_current c JOIN resource_version v ON v.seq = c.seq ' +
              'WHERE c.resource_type = ? AND c.id = ? AND c.deleted = 0',
          )
          .get(resourceType, id) as { custodian: string | null; patients: string | null } | undefined;
        if (current) {
          deleteAccessKeys(
            this.statements().deleteAccessKey,
            resourceType,
            id,
            current.custodian,
            current.patients,
          );
        }
        const erased = this.db
          .prepare(
            'UPDATE resource_version SET json = NULL, patients = NULL, deleted = 1 ' +
              'WHERE resource_type = ? AND id = ? AND (json IS NOT NULL OR patients IS NOT NULL OR deleted = 0)',
          )
          .run(resourceType, id).changes;
        const seq = this.db
          .prepare('SELECT seq FROM resource_current WHERE resource_type = ? AND id = ?')
          .pluck()
          .get(resourceType, id) as number | undefined;
        if (seq !== undefined) deleteIndexRows(this.statements(), seq);
        this.db
          .prepare('UPDATE resource_current SET deleted = 1 WHERE resource_type = ? AND id = ?')
          .run(resourceType, id);
        this.cache?.delete(`${resourceType}/${id}`);
        return erased;
      }),
    );
  }

  /** The search index rows stored for the resource's current version (none when deleted or unknown). */
  replaceIndex(key: VersionKey, entries: readonly IndexEntry[]): Promise<boolean> {
    return this.guard(() =>
      this.inWriteTransaction(() => {
        const current = this.db
          .prepare('SELECT version_id, seq, deleted FROM resource_current WHERE resource_type = ? AND id = ?')
          .get(key.resourceType, key.id) as { version_id: number; seq: number; deleted: number } | undefined;
        if (!current || current.version_id !== key.versionId || current.deleted !== 0) return false;
        const s = this.statements();
        deleteIndexRows(s, current.seq);
        insertIndexRows(s.insertIndex, s.text, current.seq, key.resourceType, entries);
        return true;
      }),
    );
  }

  indexEntries(resourceType: string, id: string): Promise<IndexEntry[]> {
    return this.guard(() => {
      const s = this.statements();
      const seq = s.newestSeq.get(resourceType, id) as number | null;
      if (seq === null) return [];
      const rows = s.indexEntries.all(seq) as Record<string, unknown>[];
      const entries = rows.map((row) => {
        const entry: IndexEntry = { param: row.param as string, type: row.type as IndexEntry['type'] };
        for (const key of ['system', 'value', 'low', 'high', 'reference'] as const) {
          if (row[key] !== null) (entry as unknown as Record<string, unknown>)[key] = row[key];
        }
        return entry;
      });
      // The full-text entries are documents of the FTS5 table (schema migration 12), which keeps no copy of their
      // words: an entry without them for each document the version has (as the rows of migrations 6-11 were).
      for (const param of s.text.storedFields(seq)) entries.push({ param, type: 'special' });
      return entries;
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // Synchronous core (runs either directly or inside the open transaction).

  // One piece on purpose: a per-request hot path (bench:rest, bench:import); split it only with a benchmark run.
  private writeNow(request: WriteRequest): StoredVersion {
    const s = this.statements();
    const { resourceType, id } = request;
    this.rowsPending = false;
    // Dropped before the write: if its transaction rolls back, the next read fetches the old version again.
    this.cache?.delete(`${resourceType}/${id}`);
    const state = s.writeState.get(resourceType, id) as WriteStateRow;
    const current =
      state.version_id === null ? undefined : { versionId: state.version_id, deleted: state.deleted !== 0 };
    const plan = planWrite(request, current, state.last_updated);
    if (plan.kind === 'unchanged') return this.vreadNow(resourceType, id, plan.versionId)!;
    const { version } = plan;
    const { versionId, lastUpdated, deleted: isDelete } = version;
    const json = version.json;
    // Everything that can refuse a write (If-Match above, the anchor hook here) is decided before its first row:
    // a write inside transaction(work) then needs no savepoint of its own (see writeInTransaction).
    const pending = anchorOf(request, version);

    this.rowsPending = true;
    const patients = request.patients === undefined ? null : JSON.stringify(request.patients);
    const seq = s.insertVersion.run(
      resourceType,
      id,
      versionId,
      lastUpdated,
      isDelete ? 1 : 0,
      request.method,
      json === undefined ? null : encodeJson(json),
      request.custodian ?? null,
      patients,
    ).lastInsertRowid as number;
    s.upsertCurrent.run(resourceType, id, versionId, seq, isDelete ? 1 : 0);

    if (current && !current.deleted) {
      deleteIndexRows(s, state.seq!);
      deleteAccessKeys(s.deleteAccessKey, resourceType, id, state.custodian, state.patients);
    }
    if (!isDelete) {
      if (request.custodian !== undefined)
        s.insertAccessKey.run(resourceType, `${ACCESS_KEY_CUSTODIAN}${request.custodian}`, id);
      for (const patient of request.patients ?? []) s.insertAccessKey.run(resourceType, patient, id);
    }
    if (!isDelete && request.index) insertIndexRows(s.insertIndex, s.text, seq, resourceType, request.index);

    if (pending) {
      s.insertAnchor.run(
        seq,
        packHex(pending.salt),
        packHex(pending.leafHash),
        packHex(pending.ledgerKey),
        pending.leafVersion ?? 1,
      );
      s.insertOutbox.run(seq, resourceType, id, versionId);
    }
    this.rowsPending = false;
    return version;
  }

  /**
   * A write from inside transaction(work), without a savepoint (they copy every page a write changes: -13% on
   * bulk transaction Bundles). A refused write stored nothing (writeNow decides before its first row); one that
   * fails after it (an SQLite error) fails the whole transaction, which then rolls back instead of committing.
   */
  private writeInTransaction(request: WriteRequest): StoredVersion {
    try {
      return this.writeNow(request);
    } catch (error) {
      if (this.rowsPending) {
        this.rowsPending = false;
        this.failedTransaction ??= error;
      }
      throw error;
    }
  }

  private readNow(resourceType: string, id: string): StoredVersion | undefined {
    const s = this.statements();
    // Inside a transaction a read may see writes that roll back: those never go to the cache.
    const cache = this.cache && !this.db.inTransaction ? this.cache : undefined;
    const key = `${resourceType}/${id}`;
    if (cache) {
      const dataVersion = s.dataVersion.get();
      if (dataVersion !== this.cacheDataVersion) {
        cache.clear();
        this.cacheDataVersion = dataVersion;
      }
      const cached = cache.get(key);
      if (cached) return cached;
    }
    const row = s.read.get(resourceType, id) as VersionRow | undefined;
    const version = row ? toStoredVersion(row) : undefined;
    if (cache && version) cache.set(key, version);
    return version;
  }

  private vreadNow(resourceType: string, id: string, versionId: number): StoredVersion | undefined {
    const row = this.statements().vread.get(resourceType, id, versionId) as VersionRow | undefined;
    return row ? toStoredVersion(row) : undefined;
  }

  private historyNow(query: HistoryQuery): HistoryPage {
    const s = this.statements();
    if (query.id !== undefined && query.resourceType === undefined) {
      throw new Error('history: an id needs a resourceType');
    }
    const count = Math.floor(query.count);
    if (!(count >= 0)) throw fhirError('parameter-invalid', `Invalid history page size ${query.count}`);
    const level: HistoryLevel =
      query.id !== undefined ? 'instance' : query.resourceType !== undefined ? 'type' : 'system';
    const at = query.at !== undefined;
    const visible = query.visible;
    // The caller's scope of the one type, inside the query: hidden versions never become JavaScript rows.
    const scoped = visible && query.scope && level !== 'system' ? scopeCondition(query.scope) : undefined;
    const params: Record<string, string | number> = {};
    if (query.resourceType !== undefined) params.type = query.resourceType;
    if (query.id !== undefined) params.id = query.id;

    let cursor: HistoryCursor;
    if (query.cursor !== undefined) {
      cursor = decodeCursor(query.cursor);
    } else {
      // First page: fix the range of seq this history covers, so later pages see the same versions.
      const top = (s.maxSeq.get() as number | null) ?? 0;
      let lo = 1;
      let hi = top;
      if (query.since !== undefined) {
        const first = s.seqSince.get(instantBound(query.since, '_since')) as number | undefined;
        lo = first ?? top + 1;
      }
      if (query.at !== undefined) {
        const last = s.seqAt.get(instantBound(query.at, '_at')) as number | undefined;
        hi = Math.min(top, last ?? 0);
      }
      // Version rows are never deleted (a trigger refuses it) and seq is rowid (max + 1), so seq is dense and
      // the system-level count is arithmetic instead of a scan of every version.
      const total =
        hi < lo
          ? 0
          : visible
            ? this.countVisible(level, at, { ...params, lo, hi, after: hi + 1 }, visible, scoped)
            : level === 'system' && !at
              ? hi - lo + 1
              : (this.historyStatement(level, at, 'count').get({ ...params, lo, hi }) as number);
      cursor = { after: hi + 1, lo, hi, total };
    }

    const { lo, hi, total } = cursor;
    if (count === 0 || cursor.after <= lo || hi < lo) return { versions: [], total };
    if (visible)
      return this.visiblePage(
        level,
        at,
        { ...params, lo, hi, after: cursor.after },
        visible,
        count,
        cursor,
        scoped,
      );
    const rows = this.historyStatement(level, at, 'page').all({
      ...params,
      lo,
      hi,
      after: cursor.after,
      limit: count + 1,
    }) as VersionRow[];
    const page: HistoryPage = { versions: rows.slice(0, count).map(toStoredVersion), total };
    if (rows.length > count) page.next = encodeCursor({ ...cursor, after: rows[count - 1]!.seq });
    return page;
  }

  /** Versions of the history range the caller may see (metadata rows only: no body is read to count). */
  private countVisible(
    level: HistoryLevel,
    at: boolean,
    params: Record<string, string | number>,
    visible: (version: StoredVersion) => boolean,
    scoped: Fragment | undefined,
  ): number {
    let total = 0;
    const rows = this.historyStatement(level, at, 'meta', scoped).iterate(
      ...(scoped?.binds ?? []),
      params,
    ) as IterableIterator<VersionRow>;
    for (const row of rows) if (visible(toStoredVersion(row))) total++;
    return total;
  }

  /** The next `count` visible versions below `after`, bodies read for those only, and the cursor after them. */
  private visiblePage(
    level: HistoryLevel,
    at: boolean,
    params: Record<string, string | number>,
    visible: (version: StoredVersion) => boolean,
    count: number,
    cursor: HistoryCursor,
    scoped: Fragment | undefined,
  ): HistoryPage {
    const seqs: number[] = [];
    let more = false;
    const rows = this.historyStatement(level, at, 'meta', scoped).iterate(
      ...(scoped?.binds ?? []),
      params,
    ) as IterableIterator<VersionRow>;
    for (const row of rows) {
      if (!visible(toStoredVersion(row))) continue;
      if (seqs.length === count) {
        more = true;
        rows.return?.();
        break;
      }
      seqs.push(row.seq);
    }
    const bySeq = this.statements().bySeq;
    const page: HistoryPage = {
      versions: seqs.map((seq) => toStoredVersion(bySeq.get(seq) as VersionRow)),
      total: cursor.total,
    };
    if (more) page.next = encodeCursor({ ...cursor, after: seqs[seqs.length - 1]! });
    return page;
  }

  /**
   * History SQL per level. Without `at`: versions with seq in [lo, hi]. With `at`: per resource, its newest
   * version with seq <= hi (the one current at that instant), kept if seq >= lo. Pages go down from `after`.
   */
  private historyStatement(
    level: HistoryLevel,
    at: boolean,
    kind: 'count' | 'page' | 'meta',
    scoped?: Fragment,
  ): Statement {
    const key = `${level}:${at}:${kind}:${scoped?.sql ?? ''}`;
    let statement = this.historyStatements.get(key);
    if (statement) return statement;
    const scope =
      level === 'instance'
        ? ' AND resource_type = @type AND id = @id'
        : level === 'type'
          ? ' AND resource_type = @type'
          : '';
    // Without the hint the planner prefers the (resource_type, seq) range for one instance, scanning its whole type.
    const table =
      level === 'instance' ? 'resource_version INDEXED BY resource_version_key' : 'resource_version';
    // The scope's condition is on the alias `v` of the rows listed (sqlite-search.ts scopeCondition).
    const listed =
      level === 'instance'
        ? 'resource_version AS v INDEXED BY resource_version_key'
        : 'resource_version AS v';
    const admitted = scoped ? ` AND ${scoped.sql}` : '';
    // 'meta': the page's rows without bodies and without a limit, walked while the caller's visibility filters them.
    const columns = kind === 'meta' ? VERSION_COLUMNS.replace('json', 'NULL AS json') : VERSION_COLUMNS;
    const limit = kind === 'meta' ? '' : ' LIMIT @limit';
    let sql: string;
    if (!at) {
      const where = `WHERE seq BETWEEN @lo AND @hi${scope}`;
      sql =
        kind === 'count'
          ? `SELECT count(*) FROM ${table} ${where}`
          : `SELECT ${columns} FROM ${listed} ${where} AND seq < @after${admitted} ` +
            // Per instance, version_id order = seq order and walks the key index.
            (level === 'instance' ? 'ORDER BY version_id DESC' : 'ORDER BY seq DESC') +
            limit;
    } else {
      const currentAt = `SELECT max(seq) AS seq FROM ${table} WHERE seq <= @hi${scope} GROUP BY resource_type, id`;
      sql =
        kind === 'count'
          ? `SELECT count(*) FROM (${currentAt}) WHERE seq >= @lo`
          : `SELECT ${columns} FROM resource_version AS v WHERE seq IN (${currentAt}) AND seq >= @lo AND seq < @after${admitted} ` +
            'ORDER BY seq DESC' +
            limit;
    }
    statement = this.db.prepare(sql);
    if (kind === 'count') statement.pluck();
    this.historyStatements.set(key, statement);
    return statement;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Transactions.

  /** Run `fn` now, or, while another caller's transaction is open, after it ends. */
  /** The (type, parameter) keys assigned in a transaction that has ended: kept in memory if it committed. */
  private settleKeys(): void {
    this.stmts?.insertIndex.keys.settle();
  }

  /**
   * Runs `work` (inside a write transaction) and then inserts the transaction's queued full-text documents, just
   * before better-sqlite3 commits it: one FTS5 flush per commit (text-documents.ts). The queue starts empty, and
   * is emptied if `work` fails (the transaction rolls back).
   */
  private withText<T>(work: () => T): T {
    const text = this.statements().text;
    text.clear();
    try {
      const result = work();
      text.flush();
      return result;
    } catch (err) {
      text.clear();
      throw err;
    }
  }

  /**
   * `work` in a write transaction of its own, its documents inserted before it commits; or, called from inside the
   * open transaction(work), in a savepoint whose documents wait for that transaction's COMMIT (and leave the queue
   * if the savepoint rolls back).
   */
  private inWriteTransaction<T>(work: () => T): T {
    if (!this.db.inTransaction) return this.db.transaction(() => this.withText(work)).immediate();
    const text = this.statements().text;
    const mark = text.mark();
    try {
      return this.db.transaction(work)();
    } catch (err) {
      text.rollbackTo(mark);
      throw err;
    }
  }

  private guard<T>(fn: () => T): Promise<T> {
    if (!this.mutex.locked || this.direct) {
      try {
        this.assertReady();
        return Promise.resolve(fn());
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.mutex.run(() => {
      this.assertReady();
      return fn();
    });
  }

  private async nestedTransaction<T>(work: (store: ResourceStore) => Promise<T>): Promise<T> {
    const name = `nested_${Math.random().toString(36).slice(2)}`;
    const text = this.statements().text;
    const mark = text.mark();
    this.db.prepare(`SAVEPOINT ${name}`).run();
    try {
      const result = await work(this.transactionView(this.activeTx!));
      this.db.prepare(`RELEASE ${name}`).run();
      return result;
    } catch (err) {
      if (this.db.inTransaction) {
        this.db.prepare(`ROLLBACK TO ${name}`).run();
        this.db.prepare(`RELEASE ${name}`).run();
        // Its documents leave the queue with its rows.
        text.rollbackTo(mark);
      }
      throw err;
    }
  }

  /** The store as seen from inside one transaction: its calls run in that transaction, never wait. */
  private transactionView(token: symbol): ResourceStore & { readonly db: Database.Database } {
    /** Runs a call of this store synchronously inside the transaction (see `direct`). */
    const now = <T>(call: () => Promise<T>): Promise<T> => {
      if (this.activeTx !== token)
        return Promise.reject(new Error('The transaction this store view belongs to has ended'));
      this.direct = true;
      try {
        return call();
      } finally {
        this.direct = false;
      }
    };
    const view: ResourceStore & { readonly db: Database.Database } = {
      db: this.db,
      init: async () => {},
      close: () => Promise.reject(new Error('close() is not available inside a transaction')),
      read: (type, id) => now(() => this.guard(() => this.readNow(type, id))),
      vread: (type, id, vid) => now(() => this.guard(() => this.vreadNow(type, id, vid))),
      vreadMany: (keys) => now(() => this.vreadMany(keys)),
      vreadManyBytes: (keys) => now(() => this.vreadManyBytes(keys)),
      write: (request) => now(() => this.guard(() => this.writeInTransaction(request))),
      history: (query) => now(() => this.history(query)),
      search: (request) => now(() => this.search(request)),
      transaction: (work) => now(() => this.nestedTransaction(work)),
      pendingAnchors: (limit) => now(() => this.pendingAnchors(limit)),
      markAnchored: (keys, anchor) => now(() => this.markAnchored(keys, anchor)),
      anchorState: (key) => now(() => this.anchorState(key)),
      anchorStates: (keys) => now(() => this.anchorStates(keys)),
      allVersions: () => this.versionsWith((fn) => now(() => this.guard(fn))),
      eraseSalts: (type, id) => now(() => this.eraseSalts(type, id)),
      eraseContent: (type, id) => now(() => this.eraseContent(type, id)),
      indexEntries: (type, id) => now(() => this.indexEntries(type, id)),
      replaceIndex: (key, entries) => now(() => this.replaceIndex(key, entries)),
    };
    return view;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Setup.

  /** The newest migration the file records (0: none, or no schema_version table yet). */
  private appliedSchema(): number {
    const table = this.db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
      .get();
    if (!table) return 0;
    return (this.db.prepare('SELECT max(version) FROM schema_version').pluck().get() as number | null) ?? 0;
  }

  /** A store a newer hie-ledger wrote is refused (NewerStoreSchemaError), and closed. */
  private refuseNewerSchema(): void {
    try {
      refuseNewerSchema(this.appliedSchema(), MIGRATIONS[MIGRATIONS.length - 1]!.version);
    } catch (err) {
      this.closed = true;
      this.db.close();
      throw err;
    }
  }

  /** A read-only store is never migrated: its schema must be the one this software writes. */
  private checkSchemaCurrent(): void {
    const known = MIGRATIONS[MIGRATIONS.length - 1]!.version;
    const applied = this.appliedSchema();
    if (applied !== known)
      throw new Error(
        `The store's schema is version ${applied}, this software's ${known}: run hie-ledger migrate (or serve) first`,
      );
  }

  private migrate(): void {
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)',
    );
    const applied = () =>
      (this.db.prepare('SELECT max(version) FROM schema_version').pluck().get() as number | null) ?? 0;
    for (const migration of MIGRATIONS) {
      // Re-checked under the write lock: another process may have migrated meanwhile.
      this.db
        .transaction(() => {
          if (applied() >= migration.version) return;
          this.db.exec(migration.sql);
          this.db
            .prepare('INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)')
            .run(migration.version, migration.description, new Date().toISOString());
        })
        .immediate();
    }
  }

  private prepareStatements(): Statements {
    const db = this.db;
    return {
      // The store's last instant is read under the write lock, so the clock holds across restarts and processes.
      writeState: db.prepare(
        'SELECT c.version_id, c.deleted, c.seq, v.custodian, v.patients, ' +
          '(SELECT max(last_updated) FROM resource_version) AS last_updated ' +
          'FROM (SELECT 1) LEFT JOIN resource_current c ON c.resource_type = ? AND c.id = ? ' +
          'LEFT JOIN resource_version v ON v.seq = c.seq',
      ),
      insertVersion: db.prepare(
        'INSERT INTO resource_version (resource_type, id, version_id, last_updated, deleted, method, json, custodian, patients) ' +
          'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      upsertCurrent: db.prepare(
        'INSERT INTO resource_current (resource_type, id, version_id, seq, deleted) VALUES (?, ?, ?, ?, ?) ' +
          'ON CONFLICT (resource_type, id) DO UPDATE SET version_id = excluded.version_id, seq = excluded.seq, deleted = excluded.deleted',
      ),
      deleteIndex: db.prepare('DELETE FROM search_index WHERE seq = ?'),
      deleteAccessKey: db.prepare('DELETE FROM access_key WHERE resource_type = ? AND key = ? AND id = ?'),
      insertAccessKey: db.prepare(
        'INSERT OR IGNORE INTO access_key (resource_type, key, id) VALUES (?, ?, ?)',
      ),
      insertIndex: indexRowInserts(db),
      text: new TextDocuments(db),
      insertAnchor: db.prepare(
        "INSERT INTO anchor (seq, salt, leaf_hash, ledger_key, status, leaf_version) VALUES (?, ?, ?, ?, 'pending', ?)",
      ),
      insertOutbox: db.prepare(
        'INSERT INTO anchor_outbox (seq, resource_type, id, version_id) VALUES (?, ?, ?, ?)',
      ),
      insertAnchorBatch: db.prepare(
        'INSERT INTO anchor_batch (transaction_id, block_number, batch_id, batch_root, leaf_count) VALUES (?, ?, ?, ?, ?)',
      ),
      read: db.prepare(
        `SELECT ${VERSION_COLUMNS.split(', ')
          .map((c) => `v.${c}`)
          .join(', ')} FROM resource_current c ` +
          'JOIN resource_version v ON v.seq = c.seq WHERE c.resource_type = ? AND c.id = ?',
      ),
      dataVersion: db.prepare('PRAGMA data_version').pluck(),
      vread: db.prepare(
        `SELECT ${VERSION_COLUMNS} FROM resource_version WHERE resource_type = ? AND id = ? AND version_id = ?`,
      ),
      bySeq: db.prepare(`SELECT ${VERSION_COLUMNS} FROM resource_version WHERE seq = ?`),
      maxSeq: db.prepare('SELECT max(seq) FROM resource_version').pluck(),
      seqSince: db
        .prepare(
          'SELECT seq FROM resource_version WHERE last_updated >= ? ORDER BY last_updated, seq LIMIT 1',
        )
        .pluck(),
      seqAt: db
        .prepare(
          'SELECT seq FROM resource_version WHERE last_updated <= ? ORDER BY last_updated DESC, seq DESC LIMIT 1',
        )
        .pluck(),
      // The key from the outbox (schema migration 7): listed even if the version row vanished.
      pendingAnchors: db.prepare(
        'SELECT o.resource_type AS a_resource_type, o.id AS a_id, o.version_id AS a_version_id, ' +
          `${ANCHOR_STATE_COLUMNS} FROM anchor_outbox o JOIN anchor a ON a.seq = o.seq ` +
          "LEFT JOIN anchor_batch b ON b.id = a.batch WHERE a.status = 'pending' ORDER BY o.seq LIMIT ?",
      ),
      // The anchor_batch row, then a JSON array of [type, id, version, leaf index]; anchor_leaves_outbox (schema
      // migration 7) takes each row out of the outbox.
      markAnchored: db.prepare(
        "UPDATE anchor SET status = CASE status WHEN 'erased' THEN 'erased' ELSE 'anchored' END, " +
          'batch = ?, leaf_index = k.leaf_index ' +
          'FROM (SELECT v.seq, k.value ->> 3 AS leaf_index FROM json_each(?) k JOIN resource_version v ' +
          'ON v.resource_type = k.value ->> 0 AND v.id = k.value ->> 1 AND v.version_id = k.value ->> 2) AS k ' +
          'WHERE anchor.seq = k.seq',
      ),
      anchorState: db.prepare(
        `SELECT ${ANCHOR_COLUMNS} FROM resource_version v JOIN anchor a ON a.seq = v.seq ` +
          'LEFT JOIN anchor_batch b ON b.id = a.batch WHERE v.resource_type = ? AND v.id = ? AND v.version_id = ?',
      ),
      anchorStates: db.prepare(
        `SELECT k.key AS ord, ${ANCHOR_COLUMNS} FROM json_each(?) k ` +
          'JOIN resource_version v ON v.resource_type = k.value ->> 0 AND v.id = k.value ->> 1 AND v.version_id = k.value ->> 2 ' +
          'JOIN anchor a ON a.seq = v.seq LEFT JOIN anchor_batch b ON b.id = a.batch',
      ),
      vreadManyBytes: db.prepare(
        `SELECT k.key AS ord, ${VERSION_COLUMNS.split(', ')
          .map((c) => `v.${c}`)
          .join(', ')} FROM json_each(?) k ` +
          'JOIN resource_version v ON v.resource_type = k.value ->> 0 AND v.id = k.value ->> 1 AND v.version_id = k.value ->> 2',
      ),
      allVersionsChunk: db.prepare(
        `SELECT ${VERSION_COLUMNS.split(', ')
          .map((c) => `v.${c}`)
          .join(', ')}, ${ANCHOR_COLUMNS} ` +
          'FROM resource_version v LEFT JOIN anchor a ON a.seq = v.seq LEFT JOIN anchor_batch b ON b.id = a.batch ' +
          'WHERE v.seq > ? AND v.seq <= ? ORDER BY v.seq LIMIT ?',
      ),
      eraseSalts: db.prepare(
        "UPDATE anchor SET status = 'erased', salt = NULL, erased_at = ? " +
          "WHERE seq IN (SELECT seq FROM resource_version WHERE resource_type = ? AND id = ?) AND status <> 'erased'",
      ),
      // The rows are keyed by the seq of the version they were written for: the resource's newest one (none when
      // it is a deletion). Found by the version rows, not the current pointer, which an audit also checks.
      newestSeq: db
        .prepare('SELECT max(seq) FROM resource_version WHERE resource_type = ? AND id = ?')
        .pluck(),
      indexEntries: db.prepare(
        'SELECT k.param, si.type, si.system, si.value, si.low, si.high, si.reference FROM search_index si ' +
          'JOIN search_param_key k ON k.id = si.param_key WHERE si.seq = ? ORDER BY si.ord',
      ),
    };
  }

  private statements(): Statements {
    if (!this.stmts) throw new Error('SqliteResourceStore: call init() first');
    return this.stmts;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('SqliteResourceStore is closed');
  }

  private assertReady(): void {
    this.assertOpen();
    this.statements();
  }
}
