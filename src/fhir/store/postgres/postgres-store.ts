/**
 * The production ResourceStore adapter: PostgreSQL through `pg` (a connection pool).
 *
 * Concurrency is per resource, across all processes sharing the database (replicas): a write holds its resource's
 * transaction-scoped advisory lock (a hash of schema, type and id: it exists before the resource does), reads the
 * current version under it and checks If-Match against it; the unique key (type, id, versionId) guards the version
 * besides. Writes of different resources run in parallel. The contract's store-wide order comes from the write
 * clock (migration 9): each write allocates its seq and lastUpdated together in one autocommit statement on a pool
 * of its own (that row is locked for one statement, not for the write), so seq order is lastUpdated order. A
 * version may commit after one with a higher seq, so history fixes its range only after the writes in flight have
 * finished: writes hold the schema's advisory lock shared, and history's first page takes it exclusively for one
 * statement (stableTop). Inside `transaction(work)` a read takes its resource's lock too, so read-then-write
 * transactions on one resource take turns. Reads outside a transaction take no lock: they see committed data (MVCC).
 *
 * Durability is PostgreSQL's: a write resolves after COMMIT, which with the default synchronous_commit=on has
 * flushed the WAL to disk.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
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
  ANCHOR_COLUMNS,
  anchorOf,
  CHUNK,
  decodeCursor,
  encodeCursor,
  finiteOrNull,
  instantBound,
  planWrite,
  toAnchorState,
  toStoredVersion,
  VERSION_COLUMNS,
  type AnchorRow,
  type HistoryCursor,
  type HistoryLevel,
  type VersionRow,
  withJsonBytes,
} from '../store-support.js';
import { PG_MIGRATIONS } from './schema.js';
import { NewerStoreSchemaError, refuseNewerSchema } from '../schema-version.js';
import { PostgresSearch } from './postgres-search.js';
import { ACCESS_KEY_CUSTODIAN } from '../search-sql.js';
import type { StoreSearchRequest, StoreSearchResult } from '../search-query.js';

export interface PostgresStoreOptions {
  /** e.g. postgres://user:password@host:5432/db; or give `pool`. */
  connectionString?: string;
  /** An existing pool (not closed by close()). */
  pool?: pg.Pool;
  /** The schema (namespace) holding the tables; created if missing. Default `hie`. */
  schema?: string;
  /** Pool size when the store creates the pool. */
  maxConnections?: number;
}

/** Connections of the write clock's own pool: its statement never waits for the main pool (no pool deadlock). */
const CLOCK_CONNECTIONS = 2;

/** Queries go to a pooled connection, or to the open transaction's connection. */
type Queryable = Pick<pg.PoolClient, 'query'>;

/**
 * int8 (seq, counts, block numbers) as JS numbers: exact up to 2^53, far beyond any store's size.
 * A pool passed in `options.pool` must be created with these types.
 */
const INT8_OID = 20;
export const postgresTypes = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary'
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/** Namespace of the store's advisory locks ("HIE1"); the second key is derived from the schema name. */
const LOCK_CLASS = 0x48494531;
/** Namespace of the schema's migration lock ("HIEM"), held while migrations are checked and applied. */
const MIGRATION_LOCK_CLASS = 0x4849454d;

const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

/** One open `transaction(work)`: its connection, and a mutex so that calls made concurrently inside `work` take turns. */
class OpenTransaction {
  readonly mutex = new AsyncMutex();
  ended = false;
  private savepoints = 0;

  constructor(readonly client: pg.PoolClient) {}

  run<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.mutex.run(() => {
      if (this.ended) throw new Error('The transaction this store view belongs to has ended');
      return fn(this.client);
    });
  }

  /** A nested transaction: `work` runs inside a savepoint, set and released in turn with the other calls. */
  async nested<T>(work: () => Promise<T>): Promise<T> {
    const name = `nested_${++this.savepoints}`;
    await this.run((client) => client.query(`SAVEPOINT ${name}`));
    try {
      const result = await work();
      await this.run((client) => client.query(`RELEASE SAVEPOINT ${name}`));
      return result;
    } catch (err) {
      await this.run(async (client) => {
        await client.query(`ROLLBACK TO SAVEPOINT ${name}`);
        await client.query(`RELEASE SAVEPOINT ${name}`);
      });
      throw err;
    }
  }

  /** Runs fn inside a savepoint of this transaction: all of it or none. Call it from within run(). */
  async savepoint<T>(fn: () => Promise<T>): Promise<T> {
    const name = `sp_${++this.savepoints}`;
    await this.client.query(`SAVEPOINT ${name}`);
    try {
      const result = await fn();
      await this.client.query(`RELEASE SAVEPOINT ${name}`);
      return result;
    } catch (err) {
      await this.client.query(`ROLLBACK TO SAVEPOINT ${name}`);
      await this.client.query(`RELEASE SAVEPOINT ${name}`);
      throw err;
    }
  }
}

interface WriteStateRow {
  version_id: number | null;
  deleted: boolean | null;
}

/** How a new transaction holds the schema's advisory lock: writes share it, a range fix (stableTop) excludes them. */
type SchemaLock = 'shared' | 'exclusive' | 'none';

export class PostgresResourceStore implements ResourceStore {
  readonly pool: pg.Pool;
  /** The write clock's pool (CLOCK_CONNECTIONS): one autocommit statement per write. */
  private readonly clockPool: pg.Pool;
  readonly schema: string;
  /** The schema's advisory lock key (second half of every lock of this store; the drain lease's too). */
  readonly lockKey: number;
  private readonly ownsPool: boolean;
  private readonly S: string;
  private readonly lockSql: Record<SchemaLock, string>;
  private readonly migrationLockSql: string;
  private readonly sql: ReturnType<typeof statements>;
  private readonly searcher: PostgresSearch;
  /**
   * Set on the views `transaction(work)` hands to `work` (Object.create of the store): their calls go to the
   * transaction's connection. The store itself has none, so a call on it never joins a transaction (no async
   * context tracking: AsyncLocalStorage costs every promise in the process, docs/architecture.md "Hot paths").
   */
  private tx: OpenTransaction | undefined = undefined;
  private initialised = false;
  private closed = false;

  constructor(options: PostgresStoreOptions) {
    if (!options.pool && !options.connectionString)
      throw new Error('PostgresResourceStore needs a connectionString or a pool');
    this.ownsPool = !options.pool;
    this.pool =
      options.pool ??
      new pg.Pool({
        connectionString: options.connectionString,
        max: options.maxConnections ?? 10,
        types: postgresTypes,
      });
    this.clockPool = new pg.Pool({ ...this.pool.options, max: CLOCK_CONNECTIONS, types: postgresTypes });
    this.schema = options.schema ?? 'hie';
    this.S = quoteIdent(this.schema);
    const lockKey = createHash('sha256').update(this.schema).digest().readInt32BE(0);
    this.lockKey = lockKey;
    this.lockSql = {
      shared: `BEGIN; SELECT pg_advisory_xact_lock_shared(${LOCK_CLASS}, ${lockKey})`,
      exclusive: `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_CLASS}, ${lockKey})`,
      none: 'BEGIN',
    };
    this.migrationLockSql = `SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_CLASS}, ${lockKey})`;
    this.sql = statements(this.S);
    this.searcher = new PostgresSearch(this.S);
  }

  async init(): Promise<void> {
    this.assertOpen();
    if (this.initialised) return;
    try {
      await this.migrate();
    } catch (err) {
      // A newer hie-ledger's schema: refused, and the pools closed (idle connections would hold the process open).
      if (err instanceof NewerStoreSchemaError) await this.close();
      throw err;
    }
    this.initialised = true;
  }

  /**
   * Applies the migrations this schema lacks (PG_MIGRATIONS, recorded in `schema_version`), each in order, all in
   * one transaction holding the schema's migration lock (an advisory lock): replicas starting at once take turns,
   * the first applies, the others find nothing left to do. A schema newer than this software is refused.
   */
  async migrate(): Promise<{ from: number; to: number }> {
    this.assertOpen();
    return this.inNewTransaction(async (client) => {
      await client.query(this.migrationLockSql);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.S}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${this.S}.schema_version (version integer PRIMARY KEY, description text NOT NULL, applied_at text NOT NULL)`,
      );
      const recorded = new Set(
        (await client.query<{ version: number }>(`SELECT version FROM ${this.S}.schema_version`)).rows.map(
          (row) => row.version,
        ),
      );
      const applied = Math.max(0, ...recorded);
      const known = PG_MIGRATIONS[PG_MIGRATIONS.length - 1]!.version;
      refuseNewerSchema(applied, known);
      // Every migration not recorded yet, in order (also one numbered below the newest applied: branches that
      // numbered theirs apart, merged later).
      for (const migration of PG_MIGRATIONS) {
        if (recorded.has(migration.version)) continue;
        await client.query(migration.sql(this.S));
        await client.query(
          `INSERT INTO ${this.S}.schema_version (version, description, applied_at) VALUES ($1, $2, $3)`,
          [migration.version, migration.description, new Date().toISOString()],
        );
      }
      return { from: applied, to: Math.max(applied, known) };
    }, 'none');
  }

  /**
   * After the database was restored to an earlier point: version numbers written since the backup may have been
   * anchored, so new versions' ledger keys carry a new epoch (migration 9). Returns the new epoch.
   */
  async startKeyEpoch(): Promise<number> {
    this.assertOpen();
    const { rows } = await this.pool.query<{ epoch: number }>(
      `UPDATE ${this.S}.write_clock SET epoch = epoch + 1 RETURNING epoch`,
    );
    return rows[0]!.epoch;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.clockPool.end();
    if (this.ownsPool) await this.pool.end();
  }

  /** Runs one statement in this view's open transaction (else on the pool): for state kept with a write. */
  query(text: string, values: unknown[]): Promise<pg.QueryResult> {
    return this.onConnection((q) => q.query(text, values));
  }

  read(resourceType: string, id: string): Promise<StoredVersion | undefined> {
    return this.onConnection(async (q) => {
      // In a transaction, what it read stays current until it ends (read-then-write takes turns per resource).
      if (this.openTransaction()) await q.query(this.resourceLockSql(resourceType, id));
      const { rows } = await q.query<VersionRow>(this.sql.read, [resourceType, id]);
      return rows[0] ? toStoredVersion(rows[0]) : undefined;
    });
  }

  vread(resourceType: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    return this.onConnection((q) => this.vreadOn(q, resourceType, id, versionId));
  }

  write(request: WriteRequest): Promise<StoredVersion> {
    const tx = this.openTransaction();
    // No savepoint needed: a write's checks and anchor callback run before its one INSERT statement, so a write
    // that fails leaves nothing (a failing statement would abort the whole transaction anyway).
    if (tx) return tx.run(() => this.writeOn(tx.client, request));
    return this.inNewTransaction((client) => this.writeOn(client, request));
  }

  history(query: HistoryQuery): Promise<HistoryPage> {
    return this.onConnection((q) => this.historyOn(q, query));
  }

  async transaction<T>(work: (store: ResourceStore) => Promise<T>): Promise<T> {
    const open = this.openTransaction();
    if (open) return open.nested(() => work(this));
    return this.inNewTransaction(async (client) => {
      const tx = new OpenTransaction(client);
      const view = Object.create(this) as PostgresResourceStore;
      view.tx = tx;
      try {
        return await work(view);
      } finally {
        // Let calls `work` started but did not await finish before COMMIT/ROLLBACK, then refuse later ones.
        await tx.mutex.run(() => undefined);
        tx.ended = true;
      }
    });
  }

  /** Current versions matching a compiled search: the shared search SQL (../search-sql.ts) on one connection. */
  search(request: StoreSearchRequest): Promise<StoreSearchResult> {
    this.assertReady();
    const tx = this.openTransaction();
    if (tx) return tx.run((client) => this.searcher.search(client, request));
    return this.withClient((client) => this.searcher.search(client, request));
  }

  pendingAnchors(limit: number): Promise<PendingAnchor[]> {
    return this.onConnection(async (q) => {
      const { rows } = await q.query<AnchorRow>(this.sql.pendingAnchors, [Math.max(0, Math.floor(limit))]);
      return rows.map((row) => {
        const { status: _status, ...pending } = toAnchorState(row) as PendingAnchor & { status: 'pending' };
        return pending;
      });
    });
  }

  async markAnchored(
    keys: VersionKey[],
    anchor: Omit<AnchorReference, 'leafIndex'> & { leafIndexes: number[] },
  ): Promise<void> {
    if (keys.length !== anchor.leafIndexes.length) {
      throw new Error(`markAnchored: ${keys.length} keys but ${anchor.leafIndexes.length} leaf indexes`);
    }
    await this.atomically(async (q) => {
      const { rows } = await q.query<{ n: number }>(this.sql.markAnchored, [
        keys.map((k) => k.resourceType),
        keys.map((k) => k.id),
        keys.map((k) => k.versionId),
        anchor.leafIndexes,
        anchor.transactionId,
        anchor.blockNumber,
        anchor.batchId,
        anchor.root,
        anchor.leafCount,
      ]);
      if (rows[0]!.n !== keys.length) {
        throw new Error(
          `markAnchored: ${keys.length - rows[0]!.n} of ${keys.length} versions have no queued anchor`,
        );
      }
    });
  }

  anchorState(key: VersionKey): Promise<AnchorState | undefined> {
    return this.onConnection(async (q) => {
      const { rows } = await q.query<AnchorRow>(this.sql.anchorState, [
        key.resourceType,
        key.id,
        key.versionId,
      ]);
      return rows[0] ? toAnchorState(rows[0]) : undefined;
    });
  }

  vreadMany(keys: readonly VersionKey[]): Promise<(StoredVersion | undefined)[]> {
    return this.byVersionKeys<VersionRow, StoredVersion>(this.sql.vreadMany, keys, toStoredVersion);
  }

  /** vreadMany, each text encoded once here (PostgreSQL sends text; as bytea it would travel as hex, twice the size). */
  async vreadManyBytes(keys: readonly VersionKey[]): Promise<(StoredVersionBytes | undefined)[]> {
    return (await this.vreadMany(keys)).map(withJsonBytes);
  }

  anchorStates(keys: readonly VersionKey[]): Promise<(AnchorState | undefined)[]> {
    return this.byVersionKeys<AnchorRow, AnchorState>(this.sql.anchorStates, keys, toAnchorState);
  }

  /**
   * One query for many version keys (vreadMany, anchorStates): their columns as arrays, each row numbered by its
   * key's position (`ord`, from 1); a key without a row answers undefined in its place.
   */
  private byVersionKeys<Row extends pg.QueryResultRow, T>(
    sql: string,
    keys: readonly VersionKey[],
    toValue: (row: Row) => T,
  ): Promise<(T | undefined)[]> {
    if (keys.length === 0) return Promise.resolve([]);
    return this.onConnection(async (q) => {
      const { rows } = await q.query<Row & { ord: string | number }>(sql, [
        keys.map((k) => k.resourceType),
        keys.map((k) => k.id),
        keys.map((k) => k.versionId),
      ]);
      const values = new Array<T | undefined>(keys.length).fill(undefined);
      for (const row of rows) values[Number(row.ord) - 1] = toValue(row);
      return values;
    });
  }

  async *allVersions(): AsyncIterable<{ version: StoredVersion; anchor?: AnchorState }> {
    // Keyset chunks up to the newest seq at the start: fixed while new versions arrive, bounded memory.
    const top = await this.onConnection((q) => this.stableTop(q));
    let after = 0;
    for (;;) {
      const rows = await this.onConnection(
        async (q) =>
          (await q.query<VersionRow & AnchorRow>(this.sql.allVersionsChunk, [after, top, CHUNK])).rows,
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
    return this.onConnection(
      async (q) =>
        (await q.query(this.sql.eraseSalts, [new Date().toISOString(), resourceType, id])).rowCount ?? 0,
    );
  }

  /** GDPR erasure of content (docs/erasure.md): every version keeps its row, as a deletion without text. */
  eraseContent(resourceType: string, id: string): Promise<number> {
    this.assertReady();
    const erase = async (q: Queryable) => {
      await q.query(this.resourceLockSql(resourceType, id));
      return (await q.query<{ n: number }>(this.sql.eraseContent, [resourceType, id])).rows[0]!.n;
    };
    const tx = this.openTransaction();
    return tx ? tx.run(erase) : this.inNewTransaction(erase);
  }

  replaceIndex(key: VersionKey, entries: readonly IndexEntry[]): Promise<boolean> {
    this.assertReady();
    const replace = async (q: Queryable) => {
      await q.query(this.resourceLockSql(key.resourceType, key.id));
      const { rows } = await q.query<{ n: number }>(this.sql.replaceIndex, [
        key.resourceType,
        key.id,
        key.versionId,
        entries.map((e) => e.param),
        entries.map((e) => e.type),
        entries.map((e) => e.system ?? null),
        entries.map((e) => e.value ?? null),
        entries.map((e) => finiteOrNull(e.low)),
        entries.map((e) => finiteOrNull(e.high)),
        entries.map((e) => e.reference ?? null),
      ]);
      return rows[0]!.n === 1;
    };
    // Under the resource's lock, like its writes: the version checked is the one whose rows are replaced.
    const tx = this.openTransaction();
    return tx ? tx.run(replace) : this.inNewTransaction(replace);
  }

  async rebuildIndex(extract: (json: string) => IndexEntry[]): Promise<number> {
    this.assertReady();
    const S = this.S;
    const BATCH = 500;
    let rebuilt = 0;
    for (;;) {
      // One batch per transaction, excluding writes (a write between two batches re-indexes itself).
      const batch = await this.inNewTransaction(async (q) => {
        const state = (
          await q.query<{ name: string; row_type: string | null; after_seq: string }>(
            `SELECT name, row_type, after_seq FROM ${S}.index_rebuild ORDER BY name LIMIT 1`,
          )
        ).rows[0];
        if (!state) return undefined;
        const { rows } = await q.query<{ seq: string; resource_type: string; id: string; json: string }>(
          `SELECT v.seq, v.resource_type, v.id, v.json FROM ${S}.resource_version v JOIN ${S}.resource_current c
             ON c.resource_type = v.resource_type AND c.id = v.id AND c.seq = v.seq
           WHERE v.seq > $1 AND NOT c.deleted AND v.json IS NOT NULL AND ($2::text IS NULL OR EXISTS (
             SELECT 1 FROM ${S}.search_index si WHERE si.seq = v.seq AND si.type = $2))
           ORDER BY v.seq LIMIT ${BATCH}`,
          [state.after_seq, state.row_type],
        );
        const columns: unknown[][] = [[], [], [], [], [], [], [], [], [], [], []];
        for (const row of rows) {
          extract(row.json).forEach((e, i) => {
            const values = [row.resource_type, row.id, i, e.param, e.type, e.system, e.value, e.low, e.high];
            values.push(e.reference, row.seq);
            values.forEach((value, k) =>
              columns[k]!.push(typeof value === 'number' && !Number.isFinite(value) ? null : (value ?? null)),
            );
          });
        }
        await q.query(
          `DELETE FROM ${S}.search_index si USING unnest($1::text[], $2::text[]) AS k (resource_type, id)
           WHERE si.resource_type = k.resource_type AND si.id = k.id`,
          [rows.map((r) => r.resource_type), rows.map((r) => r.id)],
        );
        await q.query(
          `INSERT INTO ${S}.search_index (resource_type, id, ord, param, type, system, value, low, high, reference, seq)
           SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::float8[], $9::float8[], $10::text[], $11::bigint[])`,
          columns,
        );
        if (rows.length < BATCH)
          await q.query(`DELETE FROM ${S}.index_rebuild WHERE name = $1`, [state.name]);
        else
          await q.query(`UPDATE ${S}.index_rebuild SET after_seq = $1 WHERE name = $2`, [
            rows[rows.length - 1]!.seq,
            state.name,
          ]);
        return rows.length;
      }, 'exclusive');
      if (batch === undefined) return rebuilt;
      rebuilt += batch;
    }
  }

  indexEntries(resourceType: string, id: string): Promise<IndexEntry[]> {
    return this.onConnection(async (q) => {
      const { rows } = await q.query<Record<string, unknown>>(this.sql.indexEntries, [resourceType, id]);
      return rows.map((row) => {
        const entry: IndexEntry = { param: row.param as string, type: row.type as IndexEntry['type'] };
        for (const key of ['system', 'value', 'low', 'high', 'reference'] as const) {
          if (row[key] !== null) (entry as unknown as Record<string, unknown>)[key] = row[key];
        }
        return entry;
      });
    });
  }

  // ---------------------------------------------------------------------------------------------------------

  private async writeOn(client: Queryable, request: WriteRequest): Promise<StoredVersion> {
    const { resourceType, id } = request;
    // The resource's lock first: the state read after it is the one the version number builds on.
    await client.query(this.resourceLockSql(resourceType, id));
    const state = (await client.query<WriteStateRow>(this.sql.writeState, [resourceType, id])).rows[0];
    const current = state ? { versionId: state.version_id!, deleted: state.deleted === true } : undefined;
    // Only a write that will store a version takes a clock tick (a failed one leaves a gap, as a rollback does).
    const planned = planWrite(request, current, null);
    if (planned.kind === 'unchanged')
      return (await this.vreadOn(client, resourceType, id, planned.versionId))!;
    const tick = (
      await this.clockPool.query<{ seq: number; ms: number; epoch: number }>(this.sql.clockTick, [Date.now()])
    ).rows[0]!;
    const plan = planWrite(request, current, null, new Date(tick.ms).toISOString());
    if (plan.kind === 'unchanged') return (await this.vreadOn(client, resourceType, id, plan.versionId))!;
    const { version } = plan;
    // Before the insert: a callback that throws leaves nothing, as the transaction rolls back.
    const pending = anchorOf(request, version, tick.epoch);
    const entries = version.deleted ? [] : (request.index ?? []);
    await client.query(this.sql.insertVersion, [
      tick.seq,
      resourceType,
      id,
      version.versionId,
      version.lastUpdated,
      version.deleted,
      version.method,
      version.json ?? null,
      version.custodian ?? null,
      request.patients === undefined ? null : JSON.stringify(request.patients),
      current !== undefined && !current.deleted,
      entries.map((e) => e.param),
      entries.map((e) => e.type),
      entries.map((e) => e.system ?? null),
      entries.map((e) => e.value ?? null),
      entries.map((e) => finiteOrNull(e.low)),
      entries.map((e) => finiteOrNull(e.high)),
      entries.map((e) => e.reference ?? null),
      pending !== undefined,
      pending?.salt ?? null,
      pending?.leafHash ?? null,
      pending?.ledgerKey ?? null,
      pending?.leafVersion ?? 1,
      accessKeysOf(request, version.deleted),
    ]);
    return version;
  }

  private async vreadOn(
    q: Queryable,
    resourceType: string,
    id: string,
    versionId: number,
  ): Promise<StoredVersion | undefined> {
    const { rows } = await q.query<VersionRow>(this.sql.vread, [resourceType, id, versionId]);
    return rows[0] ? toStoredVersion(rows[0]) : undefined;
  }

  private async historyOn(q: Queryable, query: HistoryQuery): Promise<HistoryPage> {
    if (query.id !== undefined && query.resourceType === undefined)
      throw new Error('history: an id needs a resourceType');
    const count = Math.floor(query.count);
    if (!(count >= 0)) throw fhirError('parameter-invalid', `Invalid history page size ${query.count}`);
    const level: HistoryLevel =
      query.id !== undefined ? 'instance' : query.resourceType !== undefined ? 'type' : 'system';
    const at = query.at !== undefined;
    const scope =
      level === 'instance' ? [query.resourceType!, query.id!] : level === 'type' ? [query.resourceType!] : [];
    const statement = historySql(this.S, level, at);
    const visible = query.visible;
    /** Rows of the range below `after`, newest first, in chunks, while `onRow` returns true. */
    const walk = async (lo: number, hi: number, after: number, onRow: (row: VersionRow) => boolean) => {
      for (let from = after; ;) {
        const { rows } = await q.query<VersionRow>(statement.page, [lo, hi, ...scope, from, HISTORY_CHUNK]);
        for (const row of rows) if (!onRow(row)) return;
        if (rows.length < HISTORY_CHUNK) return;
        from = rows[rows.length - 1]!.seq;
      }
    };

    let cursor: HistoryCursor;
    if (query.cursor !== undefined) {
      cursor = decodeCursor(query.cursor);
    } else {
      const top = await this.stableTop(q);
      let lo = 1;
      let hi = top;
      if (query.since !== undefined) {
        const first = (
          await q.query<{ seq: number }>(this.sql.seqSince, [instantBound(query.since, '_since')])
        ).rows[0];
        lo = first?.seq ?? top + 1;
      }
      if (query.at !== undefined) {
        const last = (await q.query<{ seq: number }>(this.sql.seqAt, [instantBound(query.at, '_at')]))
          .rows[0];
        hi = Math.min(top, last?.seq ?? 0);
      }
      let total = 0;
      if (hi >= lo && visible) {
        // No search here: the caller's visibility is applied after the query (every version of the range read).
        await walk(lo, hi, hi + 1, (row) => {
          if (visible(toStoredVersion(row))) total++;
          return true;
        });
      } else if (hi >= lo)
        total = (await q.query<{ n: number }>(statement.count, [lo, hi, ...scope])).rows[0]!.n;
      cursor = { after: hi + 1, lo, hi, total };
    }
    const { lo, hi, total } = cursor;
    if (count === 0 || cursor.after <= lo || hi < lo) return { versions: [], total };
    if (visible) {
      const kept: VersionRow[] = [];
      let more = false;
      await walk(lo, hi, cursor.after, (row) => {
        if (!visible(toStoredVersion(row))) return true;
        if (kept.length === count) {
          more = true;
          return false;
        }
        kept.push(row);
        return true;
      });
      const page: HistoryPage = { versions: kept.map(toStoredVersion), total };
      if (more) page.next = encodeCursor({ ...cursor, after: kept[kept.length - 1]!.seq });
      return page;
    }
    const { rows } = await q.query<VersionRow>(statement.page, [lo, hi, ...scope, cursor.after, count + 1]);
    const page: HistoryPage = { versions: rows.slice(0, count).map(toStoredVersion), total };
    if (rows.length > count) page.next = encodeCursor({ ...cursor, after: rows[count - 1]!.seq });
    return page;
  }

  /** Takes the resource's transaction-scoped lock (a hash of schema, type and id; a collision only makes two wait). */
  private resourceLockSql(resourceType: string, id: string): pg.QueryConfig {
    const key = createHash('sha256')
      .update(`${this.schema}\0${resourceType}\0${id}`)
      .digest()
      .readBigInt64BE(0);
    return { text: 'SELECT pg_advisory_xact_lock($1::bigint)', values: [key.toString()] };
  }

  /**
   * The newest seq such that every smaller one is decided (committed or rolled back): taken after the writes in
   * flight have finished (the schema's lock exclusively, for this one statement). Inside a transaction, which
   * holds that lock shared itself, the newest committed seq.
   */
  private async stableTop(q: Queryable): Promise<number> {
    const read = async (c: Queryable) =>
      (await c.query<{ top: number | null }>(this.sql.maxSeq)).rows[0]!.top ?? 0;
    if (this.openTransaction()) return read(q);
    return this.inNewTransaction(read, 'exclusive');
  }

  /** The open transaction of this view, if any (none on the store itself, nor once it has ended). */
  private openTransaction(): OpenTransaction | undefined {
    const tx = this.tx;
    return tx && !tx.ended ? tx : undefined;
  }

  /** A read: inside the caller's transaction (its connection, in turn), or on any pooled connection. */
  private onConnection<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    this.assertReady();
    const tx = this.openTransaction();
    return tx ? tx.run(fn) : fn(this.pool);
  }

  /** fn on one pooled connection (several statements, no transaction). */
  private async withClient<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  }

  /** All of fn or nothing: a savepoint inside the caller's transaction, else a transaction of its own. */
  private atomically<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    this.assertReady();
    const tx = this.openTransaction();
    if (tx) return tx.run((client) => tx.savepoint(() => fn(client)));
    return this.inNewTransaction(fn, 'none');
  }

  /** BEGIN (holding the schema's lock shared, as writes do, unless told otherwise), fn, COMMIT; ROLLBACK on a throw. */
  private async inNewTransaction<T>(
    fn: (client: pg.PoolClient) => Promise<T>,
    schemaLock: SchemaLock = 'shared',
  ): Promise<T> {
    this.assertOpen();
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query(this.lockSql[schemaLock]);
      try {
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch((rollbackError: Error) => (broken = rollbackError));
        throw err;
      }
    } finally {
      client.release(broken);
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('PostgresResourceStore is closed');
  }

  private assertReady(): void {
    this.assertOpen();
    if (!this.initialised) throw new Error('PostgresResourceStore: call init() first');
  }
}

/** The adapter's SQL, for one schema. Texts are constant per store, so PostgreSQL can cache their plans. */
function statements(S: string) {
  const versionColumns = VERSION_COLUMNS.split(', ')
    .map((c) => `v.${c}`)
    .join(', ');
  return {
    writeState: `SELECT version_id, deleted FROM ${S}.resource_current WHERE resource_type = $1 AND id = $2`,
    // The write clock (migration 9): the next seq and lastUpdated (ms), after every one allocated, at least `now`.
    clockTick: `UPDATE ${S}.write_clock SET seq = seq + 1, ms = greatest(ms + 1, $1::bigint) RETURNING seq, ms, epoch`,
    // One statement stores everything a write stores; its parts run against the same snapshot, so the DELETE
    // removes only the previous version's index rows.
    insertVersion: `
      WITH v AS (
        INSERT INTO ${S}.resource_version (seq, resource_type, id, version_id, last_updated, deleted, method, json, custodian, patients)
        OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq
      ), c AS (
        INSERT INTO ${S}.resource_current (resource_type, id, version_id, seq, deleted)
        SELECT $2, $3, $4, v.seq, $6 FROM v
        ON CONFLICT (resource_type, id) DO UPDATE
          SET version_id = EXCLUDED.version_id, seq = EXCLUDED.seq, deleted = EXCLUDED.deleted
      ), d AS (
        DELETE FROM ${S}.search_index WHERE $11::boolean AND resource_type = $2 AND id = $3
      ), i AS (
        INSERT INTO ${S}.search_index (resource_type, id, ord, param, type, system, value, low, high, reference, seq)
        SELECT $2, $3, x.ord - 1, x.param, x.type, x.system, x.value, x.low, x.high, x.reference, $1::bigint
        FROM unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::float8[], $17::float8[], $18::text[])
          WITH ORDINALITY AS x (param, type, system, value, low, high, reference, ord)
      ), a AS (
        INSERT INTO ${S}.anchor (seq, resource_type, id, version_id, salt, leaf_hash, ledger_key, status, leaf_version)
        SELECT v.seq, $2, $3, $4, $20, $21, $22, 'pending', $23 FROM v WHERE $19::boolean
      ), dk AS (
        DELETE FROM ${S}.access_key WHERE $11::boolean AND resource_type = $2 AND id = $3
      ), ik AS (
        INSERT INTO ${S}.access_key (resource_type, key, id) SELECT DISTINCT $2, k, $3 FROM unnest($24::text[]) AS k
      )
      SELECT seq FROM v`,
    read:
      `SELECT ${versionColumns} FROM ${S}.resource_current c JOIN ${S}.resource_version v ON v.seq = c.seq ` +
      'WHERE c.resource_type = $1 AND c.id = $2',
    vread: `SELECT ${VERSION_COLUMNS} FROM ${S}.resource_version WHERE resource_type = $1 AND id = $2 AND version_id = $3`,
    maxSeq: `SELECT max(seq) AS top FROM ${S}.resource_version`,
    seqSince: `SELECT seq FROM ${S}.resource_version WHERE last_updated >= $1 ORDER BY last_updated, seq LIMIT 1`,
    seqAt: `SELECT seq FROM ${S}.resource_version WHERE last_updated <= $1 ORDER BY last_updated DESC, seq DESC LIMIT 1`,
    pendingAnchors: `SELECT ${ANCHOR_COLUMNS} FROM ${S}.anchor a WHERE a.status = 'pending' ORDER BY a.seq LIMIT $1`,
    markAnchored: `
      WITH k AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::integer[]) AS k (resource_type, id, version_id, leaf_index)
      ), u AS (
        UPDATE ${S}.anchor a
        SET status = CASE WHEN a.status = 'erased' THEN 'erased' ELSE 'anchored' END,
            transaction_id = $5, block_number = $6, batch_id = $7, batch_root = $8, leaf_index = k.leaf_index, leaf_count = $9
        FROM k JOIN ${S}.resource_version v ON v.resource_type = k.resource_type AND v.id = k.id AND v.version_id = k.version_id
        WHERE a.seq = v.seq
        RETURNING 1
      )
      SELECT count(*)::integer AS n FROM u`,
    anchorState:
      `SELECT ${ANCHOR_COLUMNS} FROM ${S}.resource_version v JOIN ${S}.anchor a ON a.seq = v.seq ` +
      'WHERE v.resource_type = $1 AND v.id = $2 AND v.version_id = $3',
    vreadMany:
      `SELECT k.ord, ${versionColumns} ` +
      'FROM unnest($1::text[], $2::text[], $3::integer[]) WITH ORDINALITY AS k(resource_type, id, version_id, ord) ' +
      `JOIN ${S}.resource_version v ON v.resource_type = k.resource_type AND v.id = k.id AND v.version_id = k.version_id`,
    anchorStates:
      `SELECT k.ord, ${ANCHOR_COLUMNS} ` +
      'FROM unnest($1::text[], $2::text[], $3::integer[]) WITH ORDINALITY AS k(resource_type, id, version_id, ord) ' +
      `JOIN ${S}.resource_version v ON v.resource_type = k.resource_type AND v.id = k.id AND v.version_id = k.version_id ` +
      `JOIN ${S}.anchor a ON a.seq = v.seq`,
    allVersionsChunk:
      `SELECT ${versionColumns}, ${ANCHOR_COLUMNS} FROM ${S}.resource_version v LEFT JOIN ${S}.anchor a ON a.seq = v.seq ` +
      'WHERE v.seq > $1 AND v.seq <= $2 ORDER BY v.seq LIMIT $3',
    eraseSalts:
      `UPDATE ${S}.anchor a SET status = 'erased', salt = NULL, erased_at = $1 FROM ${S}.resource_version v ` +
      "WHERE v.seq = a.seq AND v.resource_type = $2 AND v.id = $3 AND a.status <> 'erased'",
    eraseContent: `
      WITH e AS (
        UPDATE ${S}.resource_version SET json = NULL, patients = NULL, deleted = true
        WHERE resource_type = $1 AND id = $2 AND (json IS NOT NULL OR patients IS NOT NULL OR NOT deleted)
        RETURNING 1
      ), d AS (
        DELETE FROM ${S}.search_index WHERE resource_type = $1 AND id = $2
      ), c AS (
        UPDATE ${S}.resource_current SET deleted = true WHERE resource_type = $1 AND id = $2
      ), k AS (
        DELETE FROM ${S}.access_key WHERE resource_type = $1 AND id = $2
      )
      SELECT count(*)::integer AS n FROM e`,
    // The rows of the current version, replaced only while it is still `$3` and not deleted (replaceIndex).
    replaceIndex: `
      WITH cur AS (
        SELECT seq FROM ${S}.resource_current WHERE resource_type = $1 AND id = $2 AND version_id = $3 AND NOT deleted
      ), d AS (
        DELETE FROM ${S}.search_index WHERE resource_type = $1 AND id = $2 AND EXISTS (SELECT 1 FROM cur)
      ), i AS (
        INSERT INTO ${S}.search_index (resource_type, id, ord, param, type, system, value, low, high, reference, seq)
        SELECT $1, $2, x.ord - 1, x.param, x.type, x.system, x.value, x.low, x.high, x.reference, cur.seq
        FROM cur, unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::float8[], $9::float8[], $10::text[])
          WITH ORDINALITY AS x (param, type, system, value, low, high, reference, ord)
      )
      SELECT count(*)::integer AS n FROM cur`,
    indexEntries: `SELECT param, type, system, value, low, high, reference FROM ${S}.search_index WHERE resource_type = $1 AND id = $2 ORDER BY ord`,
  };
}

/** The access keys of a version (none for a deletion): its custodian's, then one per patient compartment. */
function accessKeysOf(request: WriteRequest, deleted: boolean): string[] {
  if (deleted) return [];
  const keys = request.custodian !== undefined ? [`${ACCESS_KEY_CUSTODIAN}${request.custodian}`] : [];
  return request.patients ? keys.concat(request.patients) : keys;
}

/** Version rows read per query while history filters them by the caller's visibility. */
const HISTORY_CHUNK = 500;

/**
 * History SQL per level (see the SQLite adapter): parameters $1 lo, $2 hi, then the scope (type, id),
 * then for pages `after` and `limit`.
 */
function historySql(S: string, level: HistoryLevel, at: boolean): { count: string; page: string } {
  const scope =
    level === 'instance'
      ? ' AND resource_type = $3 AND id = $4'
      : level === 'type'
        ? ' AND resource_type = $3'
        : '';
  const next = level === 'instance' ? 5 : level === 'type' ? 4 : 3;
  const after = `$${next}`;
  const limit = `$${next + 1}`;
  if (!at) {
    const where = `WHERE seq BETWEEN $1 AND $2${scope}`;
    return {
      count: `SELECT count(*) AS n FROM ${S}.resource_version ${where}`,
      page: `SELECT ${VERSION_COLUMNS} FROM ${S}.resource_version ${where} AND seq < ${after} ORDER BY seq DESC LIMIT ${limit}`,
    };
  }
  const currentAt = `SELECT max(seq) AS seq FROM ${S}.resource_version WHERE seq <= $2${scope} GROUP BY resource_type, id`;
  return {
    count: `SELECT count(*) AS n FROM (${currentAt}) AS cur WHERE seq >= $1`,
    page:
      `SELECT ${VERSION_COLUMNS} FROM ${S}.resource_version WHERE seq IN (${currentAt}) AND seq >= $1 AND seq < ${after} ` +
      `ORDER BY seq DESC LIMIT ${limit}`,
  };
}
