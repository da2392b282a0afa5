/**
 * Runs a CompiledQuery (src/fhir/search/parse.ts) over the SQLite store's tables (schema.ts: resource_current,
 * resource_version, search_index, access_key). The queries themselves are defined once for both SQL adapters in
 * ../search-sql.ts (SQLITE_DIALECT here); this file answers them synchronously through better-sqlite3 (statements
 * cached per database, candidate rows streamed) and keeps SQLite's planner statistics current.
 */
import type { Database, Statement } from 'better-sqlite3';
import { decodeJson } from '../json-codec.js';
import { searchParamKeys, type SearchParamKeys } from './param-keys.js';
import { fhirError } from '../../outcome.js';
import type { ReadScope, StoreSearchRequest } from '../search-query.js';
import {
  runPlanSync,
  scopeConditionIn,
  SearchRun,
  SMALL_SIDE,
  SQLITE_DIALECT,
  sqliteDialect,
  type Fragment,
  type SearchDialect,
  type SearchEffect,
  type SearchResult,
} from '../search-sql.js';

export { ACCESS_KEY_CUSTODIAN, MAX_INNER_MATCHES, type Fragment } from '../search-sql.js';

export type SqliteSearchRequest = StoreSearchRequest;
export type SqliteSearchResult = SearchResult;

/**
 * What a narrow read scope admits, as a condition on the version row alias `v` (the history of one type or
 * resource: sqlite-store.ts); undefined for an unrestricted scope.
 */
export function scopeCondition(s: ReadScope): Fragment | undefined {
  return scopeConditionIn(SQLITE_DIALECT, s);
}

/** The SQLite dialect over a store's connection, its index rows named by the store's keys (schema migration 11). */
export function sqliteStoreDialect(db: Database): SearchDialect {
  const keys = searchParamKeys(db);
  return sqliteDialect((type, param) => keys.existingKey(type, param));
}

export class SqliteSearch {
  private readonly statements = new Map<string, Statement>();

  /** Store size (max seq) at the last ANALYZE; see refreshStatistics. */
  private analyzedAtSeq = 0;
  private searchesSinceCheck = 0;

  /** See SMALL_SIDE in ../search-sql.ts (smaller in tests and benchmarks, to take either side on little data). */
  private readonly smallSide: number;

  private readonly perform = (effect: SearchEffect): unknown => {
    switch (effect.op) {
      case 'rows': {
        const statement = this.prepare(effect.sql);
        // Lazy: the statement runs when the plan iterates, so nothing else uses the connection meanwhile.
        return { [Symbol.iterator]: () => statement.iterate(...effect.binds) };
      }
      case 'count':
        return this.prepare(effect.sql)
          .pluck()
          .get(...effect.binds) as number;
      case 'column':
        return this.prepare(effect.sql)
          .pluck()
          .all(...effect.binds);
      case 'bodies': {
        const body = this.prepare('SELECT json FROM resource_version WHERE seq = ?').pluck();
        return effect.seqs.map((seq) => decodeJson(body.get(seq) as string | Uint8Array));
      }
    }
  };

  /** The store's (type, parameter) keys (schema migration 11) and the dialect that names index rows by them. */
  private readonly keys: SearchParamKeys;
  private readonly dialect: SearchDialect;

  constructor(
    private readonly db: Database,
    options: { smallSide?: number } = {},
  ) {
    this.smallSide = options.smallSide ?? SMALL_SIDE;
    this.keys = searchParamKeys(db);
    this.dialect = sqliteStoreDialect(db);
  }

  /**
   * Keeps SQLite's planner statistics current: without them it cannot tell a selective condition (one patient) from
   * a broad one (a common LOINC code) and may drive the query from the wrong index (measured: 18 ms vs 0.35 ms on
   * 8,000 resources). ANALYZE (bounded by analysis_limit) runs when the store has doubled since the last one,
   * checked every 100 searches, never inside a transaction.
   */
  private refreshStatistics(): void {
    if (this.searchesSinceCheck++ % 100 !== 0 || this.db.inTransaction) return;
    const size = (this.prepare('SELECT max(seq) FROM resource_version').pluck().get() as number | null) ?? 0;
    if (size < 500 || size < this.analyzedAtSeq * 2) return;
    try {
      this.db.pragma('analysis_limit = 1000');
      this.db.exec('ANALYZE');
      this.analyzedAtSeq = size;
      this.statements.clear();
    } catch {
      // busy (another process writing): try again at the next check
    }
  }

  private prepare(sql: string): Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      if (this.statements.size > 500) this.statements.clear();
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  search(request: SqliteSearchRequest): SqliteSearchResult {
    this.refreshStatistics();
    this.keys.settle();
    return runPlanSync(new SearchRun(this.dialect, request, this.smallSide).search(), this.perform);
  }
}

const searchers = new WeakMap<Database, SqliteSearch>();

/** Runs a compiled search on a SQLite store database (statements cached per database). */
export function searchSqlite(db: Database, request: SqliteSearchRequest): SqliteSearchResult {
  let searcher = searchers.get(db);
  if (!searcher) {
    searcher = new SqliteSearch(db);
    searchers.set(db, searcher);
  }
  try {
    return searcher.search(request);
  } catch (err) {
    // SQLite's own limits (variables, expression depth, pattern size) reached by a large query: the client's to narrow.
    const message = err instanceof Error ? err.message : '';
    if (
      (err as { code?: string }).code === 'SQLITE_TOOBIG' ||
      /too many SQL variables|too large|too complex|too many terms/i.test(message)
    ) {
      throw fhirError('search-too-costly', `The search is too large for this server: ${message}`);
    }
    throw err;
  }
}
