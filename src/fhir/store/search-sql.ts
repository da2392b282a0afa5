/**
 * The one definition of the store's search SQL (issue 19): runs a CompiledQuery (src/fhir/search/parse.ts) over the
 * tables every SQL adapter has (resource_current, resource_version, search_index, access_key), for SQLite
 * (sqlite/sqlite-search.ts) and PostgreSQL (postgres/postgres-search.ts) alike. What differs between the two is in
 * a `SearchDialect` (JSON list functions, planner hints, literals, byte-order collation, NULL order); which queries
 * run, in which order, with which conditions, is written once here.
 *
 * The plan is a generator that yields the queries it needs (`SearchEffect`) and is resumed with their results: the
 * SQLite adapter answers them synchronously (better-sqlite3; the search stays synchronous, its rows streamed), the
 * PostgreSQL adapter asynchronously.
 *
 * Visibility (access control) is enforced here, in the one place candidates are produced:
 * - every candidate row passes `canRead` before it is counted, paged or returned, so invisible resources are
 *   absent and `total` counts visible ones only;
 * - chains and `_has` are resolved inner-first into sets of *visible* resources (each inner match passes
 *   `canRead`), and the outer query only matches through those sets, so nothing can be learned through an
 *   invisible resource. An inner set larger than MAX_INNER_MATCHES is refused (400 too-costly).
 * Every value reaches SQL as a bound parameter (`?`); only parameter-free fragments are concatenated.
 */
import { fhirError } from '../outcome.js';
import type { StoredVersion } from './resource-store.js';
import type { VersionRow } from './store-support.js';
import { decodeJson } from './json-codec.js';
import type {
  Filter,
  IndexedAs,
  Prefix,
  ReadScope,
  SearchPosition,
  SearchValue,
  SortKey,
  StoreSearchRequest,
  StoreSearchResult,
  TextQuery,
} from './search-query.js';

export const MAX_INNER_MATCHES = 10_000;

export type Bind = string | number;
export interface Fragment {
  sql: string;
  binds: Bind[];
}

/** A candidate row: a current version's metadata (no body), in the version row shape both adapters share. */
export type SearchRow = VersionRow;

/** What a search plan asks its adapter to run; `?` placeholders, binds in order. */
export type SearchEffect =
  /** The rows, in order (an adapter may stream them: the plan reads them before its next effect). */
  | { op: 'rows'; sql: string; binds: Bind[] }
  /** The first column of the first row, as a number. */
  | { op: 'count'; sql: string; binds: Bind[] }
  /** The first column of every row. */
  | { op: 'column'; sql: string; binds: Bind[] }
  /** The stored text of these versions (by seq), in the same order. */
  | { op: 'bodies'; seqs: number[] };

/** A search plan: yields effects, resumed with each one's result. */
export type SearchPlan<T> = Generator<SearchEffect, T, unknown>;

/** The SQL that differs between the adapters. */
export interface SearchDialect {
  readonly name: 'sqlite' | 'postgres';
  /** A table's name as the adapter's queries write it (PostgreSQL: schema-qualified). */
  table(name: 'search_index' | 'resource_current' | 'resource_version' | 'access_key'): string;
  /** A FROM item over the JSON array of text `source` (a bound `?` or a column), its elements as `alias.value`. */
  jsonValues(alias: string, source?: string): string;
  /** 1-based position of `needle` in `haystack`, 0 when absent. */
  instr(haystack: string, needle: string): string;
  /**
   * After `search_index si` when the condition is on a range's low and high: SQLite's INDEXED BY (see matchingIds),
   * the index by `low` (dates and numbers) or by `high` (a date bounded above only, a quantity).
   */
  rangeLowIndexHint: string;
  rangeHighIndexHint: string;
  /** After `search_index si` walked in seq order by a range's entries (rangeSeqRows): SQLite's INDEXED BY. */
  rangeSeqIndexHint: string;
  /**
   * Rows `alias` of the range type `type` (date, number, quantity), as the WHERE of the adapter's range indexes needs
   * them named so that the database may use those partial indexes: SQLite's are of their types (migration 13),
   * PostgreSQL's of the rows with a `low`.
   */
  rangeRows(alias: string, type: string): string;
  /** The condition on resource_current `c` that its version is not a deletion. */
  notDeleted: string;
  /** Always true / always false, as conditions. */
  true: string;
  false: string;
  /** A bound text parameter where the context gives no type. */
  textParam: string;
  /** `expr` compared byte by byte (sort keys: SQLite's BINARY collation). */
  bytewise(expr: string): string;
  /** Placed after a sort key that may be NULL: NULLs first ascending, last descending (SQLite's order). */
  nullOrder(descending: boolean): string;
  /**
   * The seq (current version) of resources whose full-text row `param` (`_text`/`_content`) matches `query` (of
   * `types`, or more: the caller's query names the types): SQLite through its FTS5 table, PostgreSQL through the GIN
   * index over the row's tsvector.
   */
  fullText(types: string[], param: string, query: TextQuery): Fragment;
  /**
   * Index rows `alias` of one of `types` and one of `params` (any pair of them), as a condition with its binds.
   * SQLite's rows name the pair by an integer key (schema migration 11): the keys of the pairs, bound (one key is an
   * equality, so an index ending in seq still gives its entries in seq order); PostgreSQL's rows have the two columns.
   * `seqProbe`: the rows are looked up by their seq (a candidate's own rows, primary key prefix); SQLite is told not
   * to read them through an index on the key instead (`+key`: otherwise it may walk every entry of the pair there).
   */
  rowKeys(alias: string, types: readonly string[], params: readonly string[], seqProbe?: boolean): Fragment;
}

/** A range type (date, number, quantity) to write into SQL: one of a fixed set, never input. */
function rangeType(type: string): string {
  if (type !== 'date' && type !== 'number' && type !== 'quantity')
    throw new Error(`not a range type: ${type}`);
  return type;
}

export const SQLITE_DIALECT: SearchDialect = {
  name: 'sqlite',
  table: (name) => name,
  jsonValues: (alias, source = '?') => `json_each(${source}) ${alias}`,
  instr: (haystack, needle) => `instr(${haystack}, ${needle})`,
  rangeLowIndexHint: ' INDEXED BY search_index_range_low',
  rangeHighIndexHint: ' INDEXED BY search_index_range_high',
  rangeSeqIndexHint: ' INDEXED BY search_index_range_seq',
  rangeRows: (alias, type) => `${alias}.type = '${rangeType(type)}'`,
  notDeleted: 'c.deleted = 0',
  true: '1',
  false: '0',
  textParam: '?',
  bytewise: (expr) => expr,
  nullOrder: () => '',
  // A document's rowid is 2 seq + 1 for _content (sqlite/schema.ts, migration 6).
  fullText: (_types, param, query) => ({
    sql: `SELECT t.rowid >> 1 FROM search_text t WHERE search_text MATCH ? AND (t.rowid & 1) = ?`,
    binds: [fts5Query(query), param === '_content' ? 1 : 0],
  }),
  // Without the store's keys at hand (sqliteDialect has them): the keys looked up in the query itself.
  rowKeys: (alias, types, params, seqProbe) => ({
    sql:
      `${seqProbe ? '+' : ''}${alias}.param_key IN (SELECT k.id FROM search_param_key k WHERE k.resource_type IN (${placeholders(types.length)}) ` +
      `AND k.param IN (${placeholders(params.length)}))`,
    binds: [...types, ...params],
  }),
};

/**
 * SQLite with the store's (resource type, parameter) keys (sqlite/param-keys.ts): `keyOf` gives a pair's key, or
 * undefined when nothing was ever indexed under it (no row can match it).
 */
export function sqliteDialect(
  keyOf: (resourceType: string, param: string) => number | undefined,
): SearchDialect {
  return {
    ...SQLITE_DIALECT,
    rowKeys: (alias, types, params, seqProbe) => {
      const keys = new Set<number>();
      for (const type of types)
        for (const param of params) {
          const key = keyOf(type, param);
          if (key !== undefined) keys.add(key);
        }
      if (keys.size === 0) return { sql: SQLITE_DIALECT.false, binds: [] };
      return {
        sql: `${seqProbe ? '+' : ''}${alias}.param_key IN (${placeholders(keys.size)})`,
        binds: [...keys],
      };
    },
  };
}

/** PostgreSQL over the tables of `schema` (quoted): text compared as bytes (COLLATE "C"), as SQLite does. */
export function postgresDialect(schema: string): SearchDialect {
  return {
    name: 'postgres',
    table: (name) => `${schema}.${name}`,
    jsonValues: (alias, source = '?') => `jsonb_array_elements_text(${source}::jsonb) AS ${alias}(value)`,
    instr: (haystack, needle) => `strpos(${haystack}, ${needle})`,
    rangeLowIndexHint: '',
    rangeHighIndexHint: '',
    rangeSeqIndexHint: '',
    rangeRows: (alias, type) => `${alias}.low IS NOT NULL AND ${alias}.type = '${rangeType(type)}'`,
    notDeleted: 'NOT c.deleted',
    true: 'TRUE',
    false: 'FALSE',
    textParam: '?::text',
    bytewise: (expr) => `${expr} COLLATE "C"`,
    nullOrder: (descending) => (descending ? ' NULLS LAST' : ' NULLS FIRST'),
    // The expression of the search_index_text index (schema.ts), so the planner uses it.
    fullText: (types, param, query) => ({
      sql: `SELECT si.seq FROM ${schema}.search_index si WHERE si.type = 'special' AND to_tsvector('simple'::regconfig, si.system) @@ ?::tsquery AND si.param = ? AND si.resource_type IN (${placeholders(types.length)})`,
      binds: [tsQuery(query), param, ...types],
    }),
    rowKeys: (alias, types, params) => ({
      sql: `${alias}.resource_type IN (${placeholders(types.length)}) AND ${alias}.param IN (${placeholders(params.length)})`,
      binds: [...types, ...params],
    }),
  };
}

/** The query in SQLite FTS5 syntax (words are letters only, so quoting them is always safe). */
function fts5Query(query: TextQuery): string {
  switch (query.op) {
    case 'phrase':
      return `"${query.words.join(' ')}"`;
    case 'and':
      return `(${query.parts.map(fts5Query).join(' AND ')})`;
    case 'or':
      return `(${query.parts.map(fts5Query).join(' OR ')})`;
  }
}

/** The query as PostgreSQL tsquery text (cast with `::tsquery`: the words are already normalised). */
function tsQuery(query: TextQuery): string {
  switch (query.op) {
    case 'phrase':
      return query.words.length === 1
        ? `'${query.words[0]}'`
        : `(${query.words.map((w) => `'${w}'`).join(' <-> ')})`;
    case 'and':
      return `(${query.parts.map(tsQuery).join(' & ')})`;
    case 'or':
      return `(${query.parts.map(tsQuery).join(' | ')})`;
  }
}

// Typed effects: `yield* rowsOf(...)` gives the plan the result's type.
function* rowsOf(sql: string, binds: Bind[]): SearchPlan<Iterable<SearchRow>> {
  return (yield { op: 'rows', sql, binds }) as Iterable<SearchRow>;
}
function* countOf(sql: string, binds: Bind[]): SearchPlan<number> {
  return (yield { op: 'count', sql, binds }) as number;
}
function* columnOf(sql: string, binds: Bind[]): SearchPlan<string[]> {
  return (yield { op: 'column', sql, binds }) as string[];
}
function* bodiesOf(seqs: number[]): SearchPlan<string[]> {
  return (yield { op: 'bodies', seqs }) as string[];
}

/** Runs a plan whose effects are answered synchronously (SQLite). */
export function runPlanSync<T>(plan: SearchPlan<T>, perform: (effect: SearchEffect) => unknown): T {
  let step = plan.next();
  while (!step.done) {
    let result: unknown;
    try {
      result = perform(step.value);
    } catch (err) {
      step = plan.throw(err);
      continue;
    }
    step = plan.next(result);
  }
  return step.value;
}

/** Runs a plan whose effects are answered asynchronously (PostgreSQL). */
export async function runPlan<T>(
  plan: SearchPlan<T>,
  perform: (effect: SearchEffect) => Promise<unknown>,
): Promise<T> {
  let step = plan.next();
  while (!step.done) {
    let result: unknown;
    try {
      result = await perform(step.value);
    } catch (err) {
      step = plan.throw(err);
      continue;
    }
    step = plan.next(result);
  }
  return step.value;
}

// Many rows share one patient list (one patient's record): parse each distinct text once per search burst.
let patientsCache = new Map<string, string[]>();
function parsePatients(text: string): string[] {
  let list = patientsCache.get(text);
  if (!list) {
    if (patientsCache.size > 10_000) patientsCache = new Map();
    list = Object.freeze(JSON.parse(text) as string[]) as string[];
    patientsCache.set(text, list);
  }
  return list;
}

function toVersion(row: SearchRow): StoredVersion {
  const version: StoredVersion = {
    resourceType: row.resource_type,
    id: row.id,
    versionId: row.version_id,
    lastUpdated: row.last_updated,
    deleted: row.deleted === true || row.deleted === 1,
    method: row.method,
  };
  if (row.json !== null) version.json = decodeJson(row.json);
  if (row.custodian !== null) version.custodian = row.custodian;
  if (row.patients !== null) version.patients = parsePatients(row.patients);
  return version;
}

const escapeLike = (text: string): string => text.replace(/[\\%_]/g, (c) => `\\${c}`);

/** ISO instant for an epoch ms, clamped to years 0000..9999 so text order = time order. */
function isoInstant(ms: number): string {
  const clamped = Math.min(Math.max(ms, -62167219200000), 253402300799999);
  return new Date(clamped).toISOString();
}

/** One search value as a condition on search_index rows `si`. */
function valueCondition(d: SearchDialect, filterType: string, value: SearchValue): Fragment {
  switch (value.kind) {
    case 'string':
      return { sql: 'si.value >= ? AND si.value < ?', binds: [value.text, `${value.text}\uffff`] };
    case 'token': {
      if (value.text !== undefined)
        return { sql: 'si.value >= ? AND si.value < ?', binds: [value.text, `${value.text}\uffff`] };
      const parts: string[] = [];
      const binds: Bind[] = [];
      if (value.system === '') parts.push('si.system IS NULL');
      else if (value.system !== undefined) {
        parts.push('si.system = ?');
        binds.push(value.system);
      }
      if (value.code !== undefined) {
        parts.push('si.value = ?');
        binds.push(value.code);
      }
      return { sql: parts.join(' AND ') || d.true, binds };
    }
    case 'reference':
      if (value.identifier) {
        return value.identifier.system
          ? {
              sql: 'si.system = ? AND si.value = ?',
              binds: [value.identifier.system, value.identifier.value],
            }
          : { sql: 'si.value = ? AND si.reference IS NULL', binds: [value.identifier.value] };
      }
      return {
        sql: `si.reference IN (${value.references!.map(() => '?').join(', ')})`,
        binds: value.references!,
      };
    case 'uri':
      return { sql: 'si.value = ?', binds: [value.uri] };
    case 'range':
      return filterType === 'date' ? dateCondition(value) : numberCondition(value);
    case 'missing':
      return { sql: d.true, binds: [] };
    case 'composite':
      return compositeCondition(d, value);
  }
}

/** A token as stored in composite rows (`system|code` text in `column`). */
function compositeToken(column: string, token: { system?: string; code?: string }): Fragment {
  if (token.system !== undefined && token.code !== undefined)
    return { sql: `${column} = ?`, binds: [`${token.system}|${token.code}`] };
  if (token.system !== undefined)
    return { sql: `${column} LIKE ? ESCAPE '\\'`, binds: [`${escapeLike(token.system)}|%`] };
  return { sql: `${column} LIKE ? ESCAPE '\\'`, binds: [`%|${escapeLike(token.code ?? '')}`] };
}

/** Composite rows (index-entries.ts compositeEntries): first token in `system`, the second part per its type. */
function compositeCondition(d: SearchDialect, value: Extract<SearchValue, { kind: 'composite' }>): Fragment {
  const first = compositeToken('si.system', value.first);
  const second = value.second;
  let rest: Fragment;
  if (second.kind === 'token') rest = compositeToken('si.value', second);
  else if (second.kind === 'string')
    rest = { sql: 'si.value >= ? AND si.value < ?', binds: [second.text, `${second.text}\uffff`] };
  else if (second.kind === 'range' && value.secondType === 'date') rest = dateCondition(second);
  else if (second.kind === 'range') {
    const core = numberCondition({ ...second, system: undefined, code: undefined });
    const unit =
      second.system !== undefined || second.code !== undefined
        ? compositeToken('si.value', {
            system: second.system ?? (second.code !== undefined ? undefined : ''),
            code: second.code,
          })
        : undefined;
    rest = unit ? { sql: `${core.sql} AND ${unit.sql}`, binds: [...core.binds, ...unit.binds] } : core;
  } else rest = { sql: d.false, binds: [] };
  // The rows' type, the WHERE of search_index_range_seq (sqlite/schema.ts migration 13), so that a range's matches
  // come from it in seq order.
  return {
    sql: `si.type = 'composite' AND ${first.sql} AND ${rest.sql}`,
    binds: [...first.binds, ...rest.binds],
  };
}

/** Dates: the target's [low, high] against the search value's [low, high] (both inclusive ms). */
function dateCondition(value: Extract<SearchValue, { kind: 'range' }>): Fragment {
  const { low, high } = value;
  switch (value.prefix) {
    case 'eq':
      return { sql: 'si.low >= ? AND si.high <= ?', binds: [low, high] };
    case 'ne':
      return { sql: 'NOT (si.low >= ? AND si.high <= ?)', binds: [low, high] };
    case 'gt':
      return { sql: 'si.high > ?', binds: [high] };
    case 'lt':
      return { sql: 'si.low < ?', binds: [low] };
    case 'ge':
      return { sql: 'si.high >= ?', binds: [low] };
    case 'le':
      return { sql: 'si.low <= ?', binds: [high] };
    case 'sa':
      return { sql: 'si.low > ?', binds: [high] };
    case 'eb':
      return { sql: 'si.high < ?', binds: [low] };
    case 'ap': {
      // approximately: within 10% of the distance to now, at least a day
      const slack = Math.max(Math.abs(Date.now() - low) * 0.1, 86_400_000);
      return { sql: 'si.high >= ? AND si.low <= ?', binds: [low - slack, high + slack] };
    }
  }
}

/**
 * Numbers and quantities: the stored value (midpoint of its precision range) against the search value;
 * `eq` uses the search value's implicit precision ([99.5, 100.5) for `100`), the others its exact value.
 */
function numberCondition(value: Extract<SearchValue, { kind: 'range' }>): Fragment {
  const mid = '((si.low + si.high) / 2.0)';
  const unit: Fragment = { sql: '', binds: [] };
  if (value.system !== undefined) {
    unit.sql += ' AND si.system = ?';
    unit.binds.push(value.system);
  }
  if (value.code !== undefined) {
    unit.sql += ' AND si.value = ?';
    unit.binds.push(value.code);
  }
  let core: Fragment;
  switch (value.prefix) {
    case 'eq':
      core = { sql: `${mid} >= ? AND ${mid} < ?`, binds: [value.low, value.high] };
      break;
    case 'ne':
      core = { sql: `NOT (${mid} >= ? AND ${mid} < ?)`, binds: [value.low, value.high] };
      break;
    case 'gt':
    case 'sa':
      core = { sql: `${mid} > ?`, binds: [value.value] };
      break;
    case 'lt':
    case 'eb':
      core = { sql: `${mid} < ?`, binds: [value.value] };
      break;
    case 'ge':
      core = { sql: `${mid} >= ?`, binds: [value.value] };
      break;
    case 'le':
      core = { sql: `${mid} <= ?`, binds: [value.value] };
      break;
    case 'ap': {
      const slack = Math.abs(value.value) * 0.1;
      core = { sql: `${mid} >= ? AND ${mid} <= ?`, binds: [value.value - slack, value.value + slack] };
      break;
    }
  }
  return { sql: `(${core.sql})${unit.sql}`, binds: [...core.binds, ...unit.binds] };
}

/**
 * A quantity parameter's values as a condition on its rows `si` (index-entries.ts quantityEntries): each value reads
 * its unit rows (or, without a unit, the param's own rows) and compares the interval [low, high] a stored quantity
 * stands for (its value; with a comparator what lies beyond it) with the searched value `v` and its precision
 * range [sl, sh) (R4 search.html#prefix): eq: sl <= low, high < sh; ne: not eq; gt: high > v; ge: high >= v;
 * lt: low < v; le: low <= v; sa: low >= sh; eb: high < sl; ap: [low, high] meets v ± 10% (at least [sl, sh)).
 * Read from search_index_range_high (rows of the range types: `si.type = 'quantity'`): a bound on `high` is a seek,
 * the others read the unit's entries there (low and high from the index).
 */
function quantityRowsCondition(
  keys: (suffix: string) => Fragment,
  filter: Extract<Filter, { kind: 'param' }>,
): Fragment {
  const parts = filter.values.map((value): Fragment => {
    if (value.kind !== 'range') return { sql: '0 = 1', binds: [] };
    const rows = value.unitRows;
    const rowKeys = keys(rows?.suffix ?? '');
    const interval = quantityInterval(rows ?? value);
    let sql = `${rowKeys.sql} AND si.type = 'quantity' AND ${interval.sql}`;
    const binds: Bind[] = [...rowKeys.binds, ...interval.binds];
    // `n|system|` (a system, no code): the param's own rows of that system
    if (!rows && value.system !== undefined) {
      sql += ' AND si.system = ?';
      binds.push(value.system);
    }
    return { sql, binds };
  });
  return {
    sql: parts.length === 1 ? parts[0]!.sql : `(${parts.map((p) => `(${p.sql})`).join(' OR ')})`,
    binds: parts.flatMap((p) => p.binds),
  };
}

function quantityInterval(v: { prefix: Prefix; low: number; high: number; value: number }): Fragment {
  switch (v.prefix) {
    case 'eq':
      return { sql: 'si.low >= ? AND si.low < ? AND si.high < ?', binds: [v.low, v.high, v.high] };
    case 'ne':
      return { sql: 'NOT (si.low >= ? AND si.high < ?)', binds: [v.low, v.high] };
    case 'gt':
      return { sql: 'si.high > ?', binds: [v.value] };
    case 'ge':
      return { sql: 'si.high >= ?', binds: [v.value] };
    case 'lt':
      return { sql: 'si.low < ?', binds: [v.value] };
    case 'le':
      return { sql: 'si.low <= ?', binds: [v.value] };
    case 'sa':
      return { sql: 'si.low >= ?', binds: [v.high] };
    case 'eb':
      return { sql: 'si.high < ?', binds: [v.low] };
    case 'ap': {
      const slack = Math.abs(v.value) * 0.1;
      const low = Math.min(v.value - slack, v.low);
      const high = Math.max(v.value + slack, v.high);
      return { sql: 'si.high >= ? AND si.low <= ?', binds: [low, high] };
    }
  }
}

function lastUpdatedCondition(value: Extract<SearchValue, { kind: 'range' }>): Fragment {
  const low = isoInstant(value.low);
  const high = isoInstant(value.high);
  switch (value.prefix) {
    case 'eq':
      return { sql: 'v.last_updated >= ? AND v.last_updated <= ?', binds: [low, high] };
    case 'ne':
      return { sql: 'NOT (v.last_updated >= ? AND v.last_updated <= ?)', binds: [low, high] };
    case 'gt':
    case 'sa':
      return { sql: 'v.last_updated > ?', binds: [high] };
    case 'lt':
    case 'eb':
      return { sql: 'v.last_updated < ?', binds: [low] };
    case 'ge':
      return { sql: 'v.last_updated >= ?', binds: [low] };
    case 'le':
      return { sql: 'v.last_updated <= ?', binds: [high] };
    case 'ap': {
      const slack = Math.max(Math.abs(Date.now() - value.low) * 0.1, 86_400_000);
      return {
        sql: 'v.last_updated >= ? AND v.last_updated <= ?',
        binds: [isoInstant(value.low - slack), isoInstant(value.high + slack)],
      };
    }
  }
}

const placeholders = (n: number): string => Array.from({ length: n }, () => '?').join(', ');

/** This candidate's own index rows of the given params (primary key prefix probe: rows are keyed by seq). */
function indexRowsOf(d: SearchDialect, types: readonly string[], params: readonly string[]): Fragment {
  const keys = d.rowKeys('si', types, params, true);
  return {
    sql: `FROM ${d.table('search_index')} si WHERE si.seq = c.seq AND ${keys.sql}`,
    binds: keys.binds,
  };
}

const RANGE_TYPES = new Set(['date', 'number', 'quantity']);

/**
 * The INDEXED BY hint `hint` unless `keys` names no (type, parameter) key (nothing was indexed under it): with a
 * condition that is always false, SQLite cannot prove the partial index's WHERE and fails ("no query solution").
 */
const hinted = (d: SearchDialect, hint: string, keys: Fragment): string => (keys.sql === d.false ? '' : hint);

/**
 * Range filter types whose condition reads only an entry's low and high (no system: a quantity's unit is not in the
 * index), so search_index_range_seq ((type, param), seq, low, high) answers it alone (rangeSeqRows,
 * rangeSeqCheck).
 */
const SEQ_INDEXED_RANGES = new Set(['date', 'number']);

/** Whether a filter is a positive range answered by search_index_range_seq alone (see SEQ_INDEXED_RANGES). */
function seqIndexed(filter: Filter): filter is Extract<Filter, { kind: 'param' }> {
  return (
    filter.kind === 'param' &&
    !filter.negate &&
    filter.modifier === undefined &&
    SEQ_INDEXED_RANGES.has(filter.type) &&
    filter.values.every((v) => v.kind === 'range' && v.system === undefined)
  );
}

/** The index rows a modifier searches instead of the parameter's own: `{code}:text`, `{code}:of-type`. */
const derivedRows = (modifier: string | undefined): string =>
  modifier === 'text' || modifier === 'of-type' ? `:${modifier}` : '';

/**
 * `v.seq IN (index rows of param ? matching condition)`: not correlated, so the database runs it once from a
 * search_index index (whose entries end in seq) and reads resource_version by its key. Binds: the rows' keys (then,
 * for range types, the lowest number), then the condition's.
 *
 * Range conditions read a range index (sqlite/schema.ts migration 13), by INDEXED BY: with sampled statistics SQLite
 * chose other indexes and scanned every index row of the type (measured 72 ms vs 5 ms on 14,000 Observations). A date
 * bounded above only (`highOnly`: gt, ge, eb) and a quantity read search_index_range_high ((type, param), high, low),
 * other date and number conditions search_index_range_low ((type, param), low, high): the matching entries are a
 * range of the index, or (a bound it cannot seek) the param's entries read from the index alone, no row read.
 */
function rangeIndexHint(d: SearchDialect, type: string, keys: Fragment, highOnly: boolean): string {
  return hinted(d, type === 'quantity' || highOnly ? d.rangeHighIndexHint : d.rangeLowIndexHint, keys);
}

/** `v.seq IN (index rows of param ? matching condition)`: see matchRows for the range types' indexes. */
function matchingIds(
  d: SearchDialect,
  types: string[],
  params: string[],
  condition: Fragment,
  paramType: string,
  drive = true,
  /** A date condition bounding `high` only (paramCondition). */
  highOnly = false,
): Fragment {
  // Not driving: a probe of this resource's own index rows (primary key prefix), once per candidate.
  if (!drive) {
    const own = indexRowsOf(d, types, params);
    return { sql: `EXISTS (SELECT 1 ${own.sql}${condition.sql})`, binds: [...own.binds, ...condition.binds] };
  }
  const keys = d.rowKeys('si', types, params);
  if (RANGE_TYPES.has(paramType)) {
    return {
      sql: `v.seq IN (SELECT si.seq FROM ${d.table('search_index')} si${rangeIndexHint(d, paramType, keys, highOnly)} WHERE ${keys.sql} AND ${d.rangeRows('si', paramType)}${condition.sql})`,
      binds: [...keys.binds, ...condition.binds],
    };
  }
  return {
    sql: `v.seq IN (SELECT si.seq FROM ${d.table('search_index')} si WHERE ${keys.sql}${condition.sql})`,
    binds: [...keys.binds, ...condition.binds],
  };
}

/**
 * A parameter filter's values as one condition on its index rows `si`, the index type that answers it, and whether it
 * is a date condition that bounds only `high` (every value gt, ge or eb: read from search_index_range_high, the
 * matching entries only, instead of every entry of the param in search_index_range_low).
 */
function paramCondition(
  d: SearchDialect,
  filter: Extract<Filter, { kind: 'param' }>,
): {
  condition: Fragment;
  indexType: string;
  highOnly: boolean;
} {
  const parts = filter.values.map((v): Fragment => {
    if (filter.type === 'string' && v.kind === 'string') {
      if (filter.modifier === 'exact') return { sql: 'si.system = ?', binds: [v.exact] };
      if (filter.modifier === 'contains')
        return { sql: "si.value LIKE ? ESCAPE '\\'", binds: [`%${escapeLike(v.text)}%`] };
    }
    if (filter.type === 'uri' && v.kind === 'uri') {
      if (filter.modifier === 'below')
        return { sql: "si.value LIKE ? ESCAPE '\\'", binds: [`${escapeLike(v.uri)}%`] };
      if (filter.modifier === 'above')
        return { sql: `substr(${d.textParam}, 1, length(si.value)) = si.value`, binds: [v.uri] };
    }
    return valueCondition(d, filter.type, v);
  });
  return {
    condition: {
      sql: ` AND (${parts.map((p) => `(${p.sql})`).join(' OR ')})`,
      binds: parts.flatMap((p) => p.binds),
    },
    indexType: filter.modifier === 'text' ? 'string' : filter.type,
    highOnly:
      filter.type === 'date' &&
      filter.modifier === undefined &&
      filter.values.every(
        (v) => v.kind === 'range' && (v.prefix === 'gt' || v.prefix === 'ge' || v.prefix === 'eb'),
      ),
  };
}

/** Prefix of a custodian's key in the access_key table (a patient's key is its `Patient/x` reference). */
export const ACCESS_KEY_CUSTODIAN = 'custodian|';

/**
 * Below this many rows a side of a search is small: the caller's rows of the searched types (access_key), or a
 * filter's index matches. The query starts from the caller's rows unless they are many and the filter's matches
 * few, so rows the caller may not see are never visited, or at most SMALL_SIDE of them when the caller's own
 * rows are more than that anyway.
 */
export const SMALL_SIDE = 1000;

const HAS_PATIENTS = "(v.patients IS NOT NULL AND v.patients <> '[]')";

/** JSON text of a patient list, made once per list (consent lists are cached and frozen: one per grant state). */
const patientsJson = new WeakMap<readonly string[], string>();
function jsonOfList(list: readonly string[]): string {
  let text = patientsJson.get(list);
  if (text === undefined) patientsJson.set(list, (text = JSON.stringify(list)));
  return text;
}

/** The caller's read scopes of the searched types as SQL. */
interface AccessFilter {
  /** On the current-row alias `v`: admits exactly what the scopes admit (decide()'s rules, per type). */
  residual: Fragment;
  /**
   * When every type's scope is narrow (no public rows): the keys (JSON array) of every row the scopes admit, and
   * the residual to use when the query starts from those keys' rows.
   */
  keyed?: { keys: string; residual: Fragment };
}

/** The clauses of one type's read scope on the version row alias `v` (each a branch of decide()). */
function admitsOf(d: SearchDialect, s: ReadScope): { admits: Fragment[]; allPatients?: Fragment } {
  const admits: Fragment[] = [];
  if (s.withoutPatients) admits.push({ sql: `NOT ${HAS_PATIENTS}`, binds: [] });
  if (s.custodian !== undefined) admits.push({ sql: 'v.custodian = ?', binds: [s.custodian] });
  if (s.patients.length === 0) return { admits };
  // At least one patient, and all of them in the list (decide(): every patient must have opened it).
  // One patient (no comma: ids have none): its reference is the text between `["` and `"]`, probed in the
  // list (built once per query); several: each of them must be in the list.
  const list = jsonOfList(s.patients);
  const allPatients = {
    sql:
      `(${HAS_PATIENTS} AND CASE WHEN ${d.instr('v.patients', "','")} = 0 ` +
      `THEN substr(v.patients, 3, length(v.patients) - 4) IN (SELECT l.value FROM ${d.jsonValues('l')}) ` +
      `ELSE NOT EXISTS (SELECT 1 FROM ${d.jsonValues('p', 'v.patients')} WHERE p.value NOT IN (SELECT l.value FROM ${d.jsonValues('l')})) END)`,
    binds: [list, list],
  };
  admits.push(allPatients);
  return { admits, allPatients };
}

/**
 * What a narrow read scope admits, as a condition on the version row alias `v` (the history of one type or
 * resource); undefined for an unrestricted scope.
 */
export function scopeConditionIn(d: SearchDialect, s: ReadScope): Fragment | undefined {
  if (s.unrestricted) return undefined;
  const { admits } = admitsOf(d, s);
  if (admits.length === 0) return { sql: d.false, binds: [] };
  return { sql: `(${admits.map((p) => p.sql).join(' OR ')})`, binds: admits.flatMap((p) => p.binds) };
}

function accessFilter(
  d: SearchDialect,
  types: string[],
  scope: StoreSearchRequest['scope'],
): AccessFilter | undefined {
  if (!scope) return undefined;
  const scopes = types.map((type) => scope(type));
  if (scopes.every((s) => s.unrestricted)) return undefined;
  const exact: Fragment[] = [];
  const whenKeyed: Fragment[] = [];
  scopes.forEach((s, i) => {
    const type = types[i]!;
    if (s.unrestricted) {
      exact.push({ sql: 'v.resource_type = ?', binds: [type] });
      return;
    }
    const { admits, allPatients } = admitsOf(d, s);
    const either = (parts: Fragment[]): Fragment => ({
      sql: `(v.resource_type = ? AND ${parts.length > 0 ? `(${parts.map((p) => p.sql).join(' OR ')})` : d.false})`,
      binds: [type, ...parts.flatMap((p) => p.binds)],
    });
    exact.push(either(admits));
    // Reached through its keys (one scope for all types): a row whose custodian is not the caller's came through
    // a patient in the list, so with one patient (no comma in its list: ids have none) it is admitted.
    whenKeyed.push(
      either([
        ...(s.custodian !== undefined ? [{ sql: 'v.custodian = ?', binds: [s.custodian] }] : []),
        ...(allPatients ? [{ sql: `${d.instr('v.patients', "','")} = 0`, binds: [] }, allPatients] : []),
      ]),
    );
  });
  const or = (parts: Fragment[]): Fragment => ({
    sql: `(${parts.map((p) => p.sql).join(' OR ')})`,
    binds: parts.flatMap((p) => p.binds),
  });
  const residual = or(exact);
  if (scopes.some((s) => s.unrestricted || s.withoutPatients)) return { residual };
  const first = scopes[0]!;
  const oneScope = scopes.every((s) => s.custodian === first.custodian && s.patients === first.patients);
  return {
    residual,
    keyed: { keys: keysJson(scopes), residual: oneScope ? or(whenKeyed) : residual },
  };
}

/** The access_key keys of these scopes as one JSON array (the custodian's key, then the patients). */
function keysJson(scopes: ReadScope[]): string {
  const custodians = [...new Set(scopes.flatMap((s) => (s.custodian !== undefined ? [s.custodian] : [])))];
  const head = custodians.map((c) => JSON.stringify(`${ACCESS_KEY_CUSTODIAN}${c}`)).join(',');
  const lists = [...new Set(scopes.map((s) => s.patients))].filter((list) => list.length > 0);
  // One patient list (the usual case: one type, or types granted alike): its cached JSON text, not rebuilt.
  const patients =
    lists.length === 0
      ? ''
      : lists.length === 1
        ? jsonOfList(lists[0]!).slice(1, -1)
        : JSON.stringify([...new Set(lists.flat())]).slice(1, -1);
  return `[${[head, patients].filter((part) => part !== '').join(',')}]`;
}

const NEVER_DRIVES = 99;

/** What drives a candidate query, and the caller's read scope in it (SearchRun.scopeAndDriver). */
interface CandidateScope {
  /** The filter whose matches drive (an IN list); none when the caller's rows or the store order drive. */
  driver?: Filter;
  /** The part of the caller's read scope probed per candidate. */
  residual?: Fragment;
  /** The caller's rows by its access keys, when they drive. */
  callerRows?: Fragment;
  /** Whether the caller's scope is (partly) given by access keys. */
  keyed: boolean;
}

/**
 * A range's plan is chosen by a bounded probe of its index entries (SearchRun.rangeChoice): they are counted up to
 * smallSide x this many (index entries only, no row read). Fewer: the range is selective and its entries drive, their
 * lowest seqs read from the index (a top-N of at most that many integers). More: see UNSELECTIVE_WALK_DIVISOR.
 */
const RANGE_PROBE_FACTOR = 5;
/**
 * An unselective range (at least smallSide x RANGE_PROBE_FACTOR matches) first walks the store order, for matches
 * dense among the first current versions, but at most smallSide / this many (250): enough for matches of a density
 * of 5% or more to fill a page of 10 there. A walked version costs a row read and a probe (~2-4 us, measured), an
 * index entry of the top-N that drives past the walk ~0.06 us, so the walk costs at most what a top-N of about
 * 15,000 entries does, wherever the matches lie (a walk of 5,000 before: ~300,000 entries' worth).
 */
const UNSELECTIVE_WALK_DIVISOR = 4;

/**
 * How well a filter narrows the candidates, by kind (no statistics needed): ids and reverse chains name resources,
 * references and codes usually match few, strings by prefix more, ranges, text and negations many.
 */
function driveRank(filter: Filter): number {
  switch (filter.kind) {
    case 'id':
      return filter.negate ? NEVER_DRIVES : 0;
    case 'has':
      return 1;
    case 'chain':
      return 3;
    case 'lastUpdated':
      return NEVER_DRIVES;
    case 'text':
      return 5;
    case 'compartment':
      return 2;
    case 'param': {
      if (filter.negate || filter.values.some((v) => v.kind === 'missing')) return NEVER_DRIVES;
      if (filter.type === 'reference') return 2;
      if (filter.type === 'token' && filter.modifier !== 'text')
        return filter.values.every((v) => v.kind === 'token' && v.code !== undefined) ? 3 : 6;
      if (filter.type === 'string' && filter.modifier === 'exact') return 3;
      if (filter.type === 'string' || filter.type === 'uri') return filter.modifier === 'contains' ? 8 : 4;
      return 7;
    }
  }
}

export type SearchResult = StoreSearchResult & { hasMore: boolean };

/** The visible ones of a chain's or _has's inner matches; more than MAX_INNER_MATCHES is refused. */
function visibleOf<T extends StoredVersion>(
  candidates: Iterable<T>,
  canRead: StoreSearchRequest['canRead'],
): T[] {
  const out: T[] = [];
  for (const version of candidates) {
    if (!canRead(version)) continue;
    if (out.length >= MAX_INNER_MATCHES) {
      throw fhirError(
        'search-too-costly',
        `A chained or _has condition matches more than ${MAX_INNER_MATCHES} resources; narrow it`,
      );
    }
    out.push(version);
  }
  return out;
}

/** A candidate version with its place in the search's order (SearchPosition) and, on a first page, the store's newest seq. */
type Candidate = StoredVersion & {
  seq: number;
  keys: (string | number | null)[];
  pos: number;
  high?: number;
};

type CandidateRow = SearchRow & { pos: number | string; high?: number | string | null } & Record<
    string,
    unknown
  >;

function* candidatesOf(rows: Iterable<SearchRow>, sortKeys: number): Generator<Candidate> {
  for (const row of rows as Iterable<CandidateRow>) {
    const keys: (string | number | null)[] = [];
    for (let i = 0; i < sortKeys; i++) keys.push((row[`k${i}`] ?? null) as string | number | null);
    const candidate: Candidate = Object.assign(toVersion(row), { seq: row.seq, keys, pos: Number(row.pos) });
    if (row.high !== undefined && row.high !== null) candidate.high = Number(row.high);
    yield candidate;
  }
}

function* countingRows<T>(rows: Iterable<T>, count: () => void): Generator<T> {
  for (const row of rows) {
    count();
    yield row;
  }
}

/** One search: its request (aliases, visibility) and the dialect its SQL is written in. */
export class SearchRun {
  private readonly indexedAs: IndexedAs;

  constructor(
    private readonly d: SearchDialect,
    private readonly request: StoreSearchRequest,
    /** See SMALL_SIDE (a smaller bound lets tests and benchmarks take either side of the choice on little data). */
    private readonly smallSide = SMALL_SIDE,
  ) {
    this.indexedAs = request.indexedAs ?? (() => undefined);
  }

  /**
   * The index row params that answer `code` on `types` (more than one for aliases such as Observation `combo-code`,
   * see StoreSearchRequest.indexedAs); `suffix` selects derived rows (`:text`).
   */
  private rowParams(types: string[], code: string, suffix = ''): string[] {
    const out = new Set<string>();
    for (const type of types) for (const c of this.indexedAs(type, code) ?? [code]) out.add(c + suffix);
    return [...out];
  }

  /** The condition of one filter on the current-row aliases `c` (resource_current) and `v` (resource_version). */
  // One piece on purpose: a per-request hot path (bench:rest, bench:import); split it only with a benchmark run.
  private *filterCondition(types: string[], filter: Filter, drive: boolean): SearchPlan<Fragment> {
    const d = this.d;
    switch (filter.kind) {
      case 'id':
        return {
          sql: `${filter.negate ? 'NOT ' : ''}c.id IN (${filter.ids.map(() => '?').join(', ')})`,
          binds: filter.ids,
        };
      case 'lastUpdated': {
        const parts = filter.values.map(lastUpdatedCondition);
        return {
          sql: `(${parts.map((p) => `(${p.sql})`).join(' OR ')})`,
          binds: parts.flatMap((p) => p.binds),
        };
      }
      case 'param': {
        const params = this.rowParams(types, filter.param, derivedRows(filter.modifier));
        const missing = filter.values.find((v) => v.kind === 'missing');
        if (missing && missing.kind === 'missing') {
          const matches = matchingIds(d, types, params, { sql: '', binds: [] }, filter.type, drive);
          return { sql: `${missing.missing ? 'NOT ' : ''}${matches.sql}`, binds: matches.binds };
        }
        if (filter.type === 'quantity') {
          const rows = quantityRowsCondition(
            (suffix) => d.rowKeys('si', types, this.rowParams(types, filter.param, suffix), !drive),
            filter,
          );
          const sql = drive
            ? `v.seq IN (SELECT si.seq FROM ${d.table('search_index')} si WHERE ${rows.sql})`
            : `EXISTS (SELECT 1 FROM ${d.table('search_index')} si WHERE si.seq = c.seq AND (${rows.sql}))`;
          return { sql, binds: rows.binds };
        }
        const { condition, indexType, highOnly } = paramCondition(d, filter);
        const matches = matchingIds(d, types, params, condition, indexType, drive, highOnly);
        return { sql: `${filter.negate ? 'NOT ' : ''}${matches.sql}`, binds: matches.binds };
      }
      case 'chain': {
        // Visible targets of the inner condition, then the references to them (relative, or absolute under this
        // server's base: the same resource).
        const keys: string[] = [];
        const base = this.request.query.serverBase;
        for (const targetType of filter.targetTypes) {
          for (const version of yield* this.visibleMatches([targetType], [filter.inner])) {
            keys.push(`${version.resourceType}/${version.id}`);
            if (base !== undefined) keys.push(`${base}/${version.resourceType}/${version.id}`);
          }
        }
        return matchingIds(
          d,
          types,
          this.rowParams(types, filter.param),
          {
            sql: ` AND si.reference IN (SELECT k.value FROM ${d.jsonValues('k')})`,
            binds: [JSON.stringify(keys)],
          },
          'reference',
          drive,
        );
      }
      case 'compartment': {
        // Driving: the members' seqs from the reference index (one seek per parameter). Probed: this candidate's
        // own rows of its type's compartment parameters (primary key prefix), or it is the compartment's resource.
        if (drive) {
          const members = this.compartmentRows(types, filter);
          return { sql: `v.seq IN (${members.sql})`, binds: members.binds };
        }
        const parts: Fragment[] = [];
        for (const type of types) {
          const params = this.compartmentParams(type, filter);
          if (params.length > 0) {
            const own = indexRowsOf(d, [type], params);
            parts.push({
              sql: `(c.resource_type = ? AND EXISTS (SELECT 1 ${own.sql} AND si.reference = ?))`,
              binds: [type, ...own.binds, filter.reference],
            });
          }
          if (filter.own?.type === type)
            parts.push({ sql: '(c.resource_type = ? AND c.id = ?)', binds: [type, filter.own.id] });
        }
        return parts.length === 0
          ? { sql: d.false, binds: [] }
          : { sql: `(${parts.map((p) => p.sql).join(' OR ')})`, binds: parts.flatMap((p) => p.binds) };
      }
      case 'text': {
        // Not correlated whether it drives or not: the text index answers the whole set once.
        const matches = d.fullText(types, filter.param, filter.query);
        return { sql: `v.seq IN (${matches.sql})`, binds: matches.binds };
      }
      case 'has': {
        // Visible sources matching the inner condition; this resource must be one they reference through `param`.
        const sources = (yield* this.visibleMatches([filter.sourceType], [filter.inner])).map((v) => v.seq);
        const hasKeys = d.rowKeys(
          'si',
          [filter.sourceType],
          this.rowParams([filter.sourceType], filter.param),
          true,
        );
        const stored = yield* columnOf(
          `SELECT DISTINCT si.reference AS reference FROM ${d.table('search_index')} si
           WHERE si.seq IN (SELECT ${d.name === 'postgres' ? 'k.value::bigint' : 'k.value'} FROM ${d.jsonValues('k')}) AND ${hasKeys.sql} AND si.reference IS NOT NULL`,
          [JSON.stringify(sources), ...hasKeys.binds],
        );
        // A reference stored as an absolute URL under this server's base names the resource `Type/id` here.
        const own =
          this.request.query.serverBase !== undefined ? `${this.request.query.serverBase}/` : undefined;
        const referenced = own ? stored.map((r) => (r.startsWith(own) ? r.slice(own.length) : r)) : stored;
        const slash = d.instr('r.value', "'/'");
        return {
          sql: `(c.resource_type, c.id) IN (SELECT substr(r.value, 1, ${slash} - 1), substr(r.value, ${slash} + 1) FROM ${d.jsonValues('r')})`,
          binds: [JSON.stringify(referenced)],
        };
      }
    }
  }

  /** The index params of a type's compartment parameters (aliases such as Coverage `patient` by their parts). */
  private compartmentParams(type: string, filter: Extract<Filter, { kind: 'compartment' }>): string[] {
    const out = new Set<string>();
    for (const code of filter.params[type] ?? []) for (const p of this.rowParams([type], code)) out.add(p);
    return [...out];
  }

  /**
   * `SELECT seq ...`: the current versions of `types` in the compartment, from the reference index (search_index_reference
   * ((type, param), reference, seq): one seek per type and parameter) and, for the compartment's own type,
   * its resource by key. Their number is the member's record, whatever the size of the store.
   */
  private compartmentRows(types: string[], filter: Extract<Filter, { kind: 'compartment' }>): Fragment {
    const d = this.d;
    const parts: Fragment[] = [];
    for (const type of types) {
      const params = this.compartmentParams(type, filter);
      if (params.length > 0) {
        const keys = d.rowKeys('si', [type], params);
        parts.push({
          sql: `SELECT si.seq FROM ${d.table('search_index')} si WHERE ${keys.sql} AND si.reference = ?`,
          binds: [...keys.binds, filter.reference],
        });
      }
      if (filter.own?.type === type)
        parts.push({
          sql: `SELECT o.seq FROM ${d.table('resource_current')} o WHERE o.resource_type = ? AND o.id = ?`,
          binds: [type, filter.own.id],
        });
    }
    // No type of the compartment: no member (a query that returns no row).
    if (parts.length === 0)
      return { sql: `SELECT o.seq FROM ${d.table('resource_current')} o WHERE ${d.false}`, binds: [] };
    return { sql: parts.map((p) => p.sql).join(' UNION ALL '), binds: parts.flatMap((p) => p.binds) };
  }

  /** Every visible current version of `types` matching all `filters` (for chains and _has); capped. */
  private *visibleMatches(types: string[], filters: Filter[]): SearchPlan<Candidate[]> {
    return visibleOf(yield* this.candidates(types, filters, []), this.request.canRead);
  }

  /** Does this SELECT give fewer than smallSide rows? (Reads at most that many.) */
  private *fewer(select: string, binds: Bind[]): SearchPlan<boolean> {
    const alias = this.d.name === 'postgres' ? ' AS few' : '';
    const count = yield* countOf(`SELECT count(*) FROM (${select} LIMIT ${this.smallSide})${alias}`, binds);
    return count < this.smallSide;
  }

  /**
   * Does this driving filter match few index rows (whoever may see them)? Ids name at most the resources the
   * client listed; a parameter is counted up to smallSide; chains and _has are not counted (their inner sets
   * are resolved first): the caller's rows drive.
   */
  private *fewMatches(types: string[], filter: Filter): SearchPlan<boolean> {
    if (filter.kind === 'id') return true;
    if (filter.kind === 'compartment') {
      const members = this.compartmentRows(types, filter);
      return yield* this.fewer(members.sql, members.binds);
    }
    if (filter.kind !== 'param') return false;
    const rows = this.matchRows(types, filter, '1');
    return yield* this.fewer(rows.sql, rows.binds);
  }

  /**
   * The plan of a first page driven by a range (dates, numbers, quantities; any prefix), chosen by selectivity: each
   * positive range filter's matching index entries are counted up to smallSide x RANGE_PROBE_FACTOR (a bounded probe:
   * `count(*)` over a LIMIT, index entries only). The one with the fewest, when fewer than that, is `selective`: its
   * entries drive (their lowest seqs from the index). None: every range is unselective, the store order walk comes
   * first. The same on every store: no statistics, one bounded count per range filter.
   */
  private *rangeChoice(
    types: string[],
    filters: Filter[],
  ): SearchPlan<{ selective?: Extract<Filter, { kind: 'param' }> }> {
    const probe = this.smallSide * RANGE_PROBE_FACTOR;
    const alias = this.d.name === 'postgres' ? ' AS probe' : '';
    let selective: Extract<Filter, { kind: 'param' }> | undefined;
    let fewest = probe;
    for (const filter of filters) {
      if (filter.kind !== 'param' || filter.negate || !RANGE_TYPES.has(filter.type)) continue;
      if (filter.values.some((v) => v.kind === 'missing')) continue;
      const rows = this.matchRows(types, filter, '1');
      const count = yield* countOf(`SELECT count(*) FROM (${rows.sql} LIMIT ${probe})${alias}`, rows.binds);
      if (count < fewest) {
        fewest = count;
        selective = filter;
      }
    }
    return { selective };
  }

  /**
   * `SELECT {column} FROM search_index si WHERE ...`: the index rows matching a (positive) parameter filter, read from
   * the index its condition bounds; the WHERE clause ends with a condition, so more can be appended with AND.
   */
  private matchRows(types: string[], filter: Extract<Filter, { kind: 'param' }>, column: string): Fragment {
    const d = this.d;
    if (filter.type === 'quantity') {
      const rows = quantityRowsCondition(
        (suffix) => d.rowKeys('si', types, this.rowParams(types, filter.param, suffix)),
        filter,
      );
      return {
        sql: `SELECT ${column} FROM ${d.table('search_index')} si WHERE (${rows.sql})`,
        binds: rows.binds,
      };
    }
    const keys = d.rowKeys('si', types, this.rowParams(types, filter.param, derivedRows(filter.modifier)));
    const { condition, indexType, highOnly } = paramCondition(d, filter);
    const range = RANGE_TYPES.has(indexType);
    return {
      sql:
        `SELECT ${column} FROM ${d.table('search_index')} si${range ? rangeIndexHint(d, indexType, keys, highOnly) : ''} WHERE ${keys.sql}` +
        `${range ? ` AND ${d.rangeRows('si', indexType)}` : ''}${condition.sql}`,
      binds: [...keys.binds, ...condition.binds],
    };
  }

  /**
   * `SELECT si.seq FROM search_index si WHERE ...`: a date or number range's entries in seq order (the
   * search_index_range_seq index: the type's and param's entries by seq, each with its low and high), the condition
   * checked on the index entry itself: a walk up to the page's matches reads index entries only, however many match.
   */
  private rangeSeqRows(types: string[], filter: Extract<Filter, { kind: 'param' }>): Fragment {
    const d = this.d;
    const keys = d.rowKeys('si', types, this.rowParams(types, filter.param));
    const { condition } = paramCondition(d, filter);
    return {
      sql:
        `SELECT si.seq FROM ${d.table('search_index')} si${hinted(d, d.rangeSeqIndexHint, keys)} WHERE ${keys.sql} ` +
        `AND ${d.rangeRows('si', filter.type)}${condition.sql}`,
      binds: [...keys.binds, ...condition.binds],
    };
  }

  /**
   * `EXISTS (...)`: whether the version of seq `seq` (an SQL expression) has an entry of a date or number range
   * filter matching it, looked up in search_index_range_seq by (type, param, seq), low and high read from the index.
   */
  private rangeSeqCheck(types: string[], filter: Extract<Filter, { kind: 'param' }>, seq: string): Fragment {
    const d = this.d;
    const keys = d.rowKeys('sr', types, this.rowParams(types, filter.param));
    const { condition } = paramCondition(d, filter);
    return {
      sql:
        `EXISTS (SELECT 1 FROM ${d.table('search_index')} sr${hinted(d, d.rangeSeqIndexHint, keys)} WHERE ${keys.sql} ` +
        `AND sr.seq = ${seq} AND ${d.rangeRows('sr', filter.type)}${condition.sql.replace(/\bsi\./g, 'sr.')})`,
      binds: [...keys.binds, ...condition.binds],
    };
  }

  /**
   * The first page in store order when one parameter filter with many matches drives (seqOrderCandidates): its
   * matching index rows give seqs (rows are keyed by the current version's seq, schema migration 6), read in seq
   * order, `batch` at a time: straight from the index for an equal value or reference (its entries end in seq), or
   * the lowest seqs of the index range the condition bounds (the index alone, no row read, no join), so a page never
   * joins or orders more than its batch whatever the number of matches. The batch's versions are then read by seq
   * with the other conditions; a batch they thin out is followed by the next, four times larger.
   */
  private *driverWalk(
    types: string[],
    driver: Extract<Filter, { kind: 'param' }>,
    others: Filter[],
    scope: CandidateScope,
    select: string,
    limit: number,
    /** Only matches after this seq (a bounded walk passed the ones before). */
    start = 0,
    /** Only matches up to this seq (a later page: the first page's mark). */
    end?: number,
    /**
     * The driver's entries walked in seq order (rangeSeqRows: an unselective date or number range), instead of its
     * matches' lowest seqs taken from the index its condition bounds.
     */
    inSeqOrder = false,
  ): SearchPlan<SearchRow[]> {
    const d = this.d;
    const driven =
      inSeqOrder && seqIndexed(driver)
        ? this.rangeSeqRows(types, driver)
        : this.matchRows(types, driver, 'si.seq');
    // Other date or number ranges (the other side of a one-day range) are checked on each match's seq from
    // search_index_range_seq alone, before the matches are ordered and cut: no row read for a candidate they reject.
    const checked = others.filter(seqIndexed);
    const matches: Fragment = { sql: driven.sql, binds: [...driven.binds] };
    for (const filter of checked) {
      const check = this.rangeSeqCheck(types, filter, 'si.seq');
      matches.sql += ` AND ${check.sql}`;
      matches.binds.push(...check.binds);
    }
    const { where, binds } = yield* this.matchConditions(
      types,
      others.filter((f) => !(checked as Filter[]).includes(f)),
      undefined,
      scope,
    );
    const seqList = `SELECT ${d.name === 'postgres' ? 'k.value::bigint' : 'k.value'} FROM ${d.jsonValues('k')}`;
    const out: SearchRow[] = [];
    let after = start;
    for (let batch = limit; ; batch *= 4) {
      const raw = (yield* columnOf(
        `${matches.sql} AND si.seq > ?${end !== undefined ? ' AND si.seq <= ?' : ''} ORDER BY si.seq LIMIT ${batch}`,
        [...matches.binds, after, ...(end !== undefined ? [end] : [])],
      )).map(Number);
      if (raw.length === 0) break;
      const seqs = [...new Set(raw)];
      for (const row of yield* rowsOf(
        `${select} WHERE v.seq IN (${seqList}) AND ${where.join(' AND ')} ORDER BY v.seq LIMIT ${limit - out.length}`,
        [JSON.stringify(seqs), ...binds],
      ))
        out.push(row);
      if (out.length >= limit || raw.length < batch) break;
      after = raw[raw.length - 1]!;
    }
    return out;
  }

  /** A sort key's value for the candidate `c`/`v`; `_lastUpdated` is the position (the tie-breaker's SQL). */
  private sortValue(types: string[], key: SortKey, position: Fragment): Fragment {
    const d = this.d;
    if (key.type === '_id') return { sql: d.bytewise('c.id'), binds: [] };
    if (key.type === '_lastUpdated') return position;
    const aggregate = key.descending ? 'MAX' : 'MIN';
    const column =
      key.type === 'date'
        ? key.descending
          ? 'si.high'
          : 'si.low'
        : key.type === 'number' || key.type === 'quantity'
          ? '((si.low + si.high) / 2.0)'
          : key.type === 'reference'
            ? d.bytewise('si.reference')
            : 'si.value';
    const own = indexRowsOf(d, types, this.rowParams(types, key.param));
    return { sql: `(SELECT ${aggregate}(${column}) ${own.sql})`, binds: own.binds };
  }

  /**
   * Strictly after `after` in the order `keys` (each ascending or descending, then the position ascending), on the
   * candidate columns k0, k1... and pos. NULL sort values come first ascending and last descending (SQLite's order).
   */
  private afterCondition(keys: SortKey[], after: SearchPosition): Fragment {
    const binds: Bind[] = [];
    const step = (i: number): string => {
      if (i === keys.length) {
        binds.push(after.seq);
        return 'cand.pos > ?';
      }
      const column = `cand.k${i}`;
      const value = after.keys[i] ?? null;
      let later: string;
      let same: string;
      if (value === null) {
        later = keys[i]!.descending ? this.d.false : `${column} IS NOT NULL`;
        same = `${column} IS NULL`;
      } else {
        binds.push(value);
        later = keys[i]!.descending ? `(${column} < ? OR ${column} IS NULL)` : `${column} > ?`;
        binds.push(value);
        same = `${column} = ?`;
      }
      const rest = step(i + 1);
      return `(${later} OR (${same} AND ${rest}))`;
    };
    const sql = step(0);
    return { sql, binds };
  }

  /**
   * Which condition drives a candidate query, and the caller's read scope in it. One filter drives (an IN list the
   * database builds once; the others are probed per candidate), unless the caller's access keys do: its rows drive
   * when they are few or the filter's matches are not (counted only then: they may be hidden).
   */
  private *scopeAndDriver(types: string[], filters: Filter[]): SearchPlan<CandidateScope> {
    const d = this.d;
    let driver: Filter | undefined;
    for (const filter of filters)
      if (driveRank(filter) < (driver ? driveRank(driver) : NEVER_DRIVES)) driver = filter;
    const access = accessFilter(d, types, this.request.scope);
    if (!access?.keyed) return { driver, residual: access?.residual, keyed: false };
    // CROSS JOIN: from the keys to their rows (SQLite may not reorder it), one primary-key probe per key.
    const rows = `SELECT ak.resource_type, ak.id FROM ${d.jsonValues('k')} CROSS JOIN ${d.table('access_key')} ak WHERE ak.resource_type IN (${placeholders(types.length)}) AND ak.key = k.value`;
    const binds = [access.keyed.keys, ...types];
    const keysDrive = !driver || (yield* this.fewer(rows, binds)) || !(yield* this.fewMatches(types, driver));
    if (!keysDrive) return { driver, residual: access.residual, keyed: true };
    const callerRows = { sql: `(c.resource_type, c.id) IN (${rows})`, binds };
    return { driver: undefined, residual: access.keyed.residual, callerRows, keyed: true };
  }

  /** The WHERE conditions of a candidate query: current versions of the types, the caller's scope, every filter. */
  private *matchConditions(
    types: string[],
    filters: Filter[],
    driver: Filter | undefined,
    scope: CandidateScope,
  ): SearchPlan<{ where: string[]; binds: Bind[] }> {
    const where: string[] = [this.d.notDeleted, `v.resource_type IN (${placeholders(types.length)})`];
    const binds: Bind[] = [...types];
    for (const fragment of [scope.callerRows, scope.residual]) {
      if (!fragment) continue;
      where.push(fragment.sql);
      binds.push(...fragment.binds);
    }
    for (const filter of filters) {
      const fragment = yield* this.filterCondition(types, filter, filter === driver);
      where.push(fragment.sql);
      binds.push(...fragment.binds);
    }
    return { where, binds };
  }

  /**
   * Current, non-deleted versions matching the filters, in sort order (visibility not yet applied). For a page of
   * the search itself (`paging`), each also carries its sort key values and position (see SearchPosition), the
   * first page the store's newest seq (read in the same statement), and a later page starts after `paging.after`.
   */
  private *candidates(
    types: string[],
    filters: Filter[],
    sort: SortKey[],
    paging?: { after?: SearchPosition; limit?: number },
  ): SearchPlan<Iterable<Candidate>> {
    const d = this.d;
    // A page in the default order: the store order itself (seq), walked from an index and cut after `limit` rows.
    if (paging?.limit !== undefined && sort.length === 0)
      return yield* this.seqOrderCandidates(types, filters, paging.limit, paging.after);
    const scope = yield* this.scopeAndDriver(types, filters);
    const { where, binds } = yield* this.matchConditions(types, filters, scope.driver, scope);
    // The tie-breaker: the seq of the resource's newest version when the first page was made (its current seq
    // unless it was written since; NULL for a resource created since, which a later page does not match).
    const after = paging?.after;
    const position: Fragment = after
      ? {
          sql: `CASE WHEN v.seq <= ? THEN v.seq ELSE (SELECT max(o.seq) FROM ${d.table('resource_version')} o WHERE o.resource_type = v.resource_type AND o.id = v.id AND o.seq <= ?) END`,
          binds: [after.high, after.high],
        }
      : { sql: 'v.seq', binds: [] };
    const keys = sort.map((k) => this.sortValue(types, k, position));
    const columns = [
      ...keys.map((k, i) => `${k.sql} AS k${i}`),
      `${position.sql} AS pos`,
      ...(paging && !after ? [`(SELECT max(h.seq) FROM ${d.table('resource_version')} h) AS high`] : []),
    ];
    const inner = `SELECT v.seq, v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.method, NULL AS json, v.custodian, v.patients, ${columns.join(', ')}
      FROM ${d.table('resource_version')} v JOIN ${d.table('resource_current')} c ON c.resource_type = v.resource_type AND c.id = v.id AND c.seq = v.seq
      WHERE ${where.join(' AND ')}`;
    const selectBinds = [...keys.flatMap((k) => k.binds), ...position.binds];
    const next = after ? this.afterCondition(sort, after) : undefined;
    const order = [
      ...sort.map((k, i) => `cand.k${i} ${k.descending ? 'DESC' : 'ASC'}${d.nullOrder(k.descending)}`),
      'cand.pos ASC',
    ];
    const sql = `SELECT cand.* FROM (${inner}) AS cand${next ? ` WHERE cand.pos IS NOT NULL AND ${next.sql}` : ''}
      ORDER BY ${order.join(', ')}`;
    const rows = yield* rowsOf(sql, [...selectBinds, ...binds, ...(next?.binds ?? [])]);
    return { [Symbol.iterator]: () => candidatesOf(rows, sort.length) };
  }

  /**
   * The candidates of a page in the default order (seq) without a total: at most `limit` rows, in an order the
   * database reads from an index (resource_current (resource_type, seq)) instead of ordering every match first, so a
   * page costs what a page costs whatever the number of matches. The filters are probed per row, unless one matches
   * few index rows (fewer than smallSide): then its rows drive (they are few to order). A later page: the versions
   * after the position up to the first page's mark in seq order (LIMIT), and the few resources written since
   * the mark (placed by their version at the mark), ordered together.
   */
  private *seqOrderCandidates(
    types: string[],
    filters: Filter[],
    limit: number,
    after: SearchPosition | undefined,
  ): SearchPlan<Iterable<Candidate>> {
    const d = this.d;
    const scope = yield* this.scopeAndDriver(types, filters);
    let driver = scope.driver;
    // A later page of an equal value or reference: a seek from the position in its index (seq order), as the first
    // page's walk (no count of its matches, no reading of the matches before the position).
    if (after && !scope.keyed && driver?.kind === 'param' && !driver.negate && !RANGE_TYPES.has(driver.type))
      return yield* this.seekAfter(types, driver, filters, scope, limit, after);
    let walked: Filter | undefined;
    if (!scope.keyed && driver?.kind === 'param' && (!after || !(yield* this.fewMatches(types, driver)))) {
      // A first page: the filter's matches in seq order (driverWalk), few or many, so they are not counted first
      // (a count of a token's rows reads each row's system). A later page with many matches: walk the store order
      // and probe; few: they drive (ordering them is cheap).
      walked = driver;
      driver = undefined;
    }
    const { where, binds } = yield* this.matchConditions(types, filters, driver, scope);
    const from = `FROM ${d.table('resource_version')} v JOIN ${d.table('resource_current')} c ON c.resource_type = v.resource_type AND c.id = v.id AND c.seq = v.seq`;
    const columns =
      'v.seq, v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.method, NULL AS json, v.custodian, v.patients';
    const alias = (name: string) => (d.name === 'postgres' ? ` AS ${name}` : '');
    // Walking: the order of resource_current (resource_type, seq), current versions only. A set that drives (few
    // rows) is ordered instead: `c.seq + 0` keeps the planner from walking the index and probing the set per row.
    const seqOrder = driver || scope.keyed ? 'c.seq + 0' : 'c.seq';
    if (!after) {
      const select = `SELECT ${columns}, c.seq AS pos, (SELECT max(h.seq) FROM ${d.table('resource_version')} h) AS high ${from}`;
      // An equal value or reference: its matches come out of the index in seq order. A range (dates, numbers,
      // quantities): its matches must be ordered, so a bounded probe of its index entries chooses (rangeChoice):
      // few, its entries drive as an equal value's do; many, the bounded walk below comes first.
      const range =
        walked?.kind === 'param' && RANGE_TYPES.has(walked.type)
          ? yield* this.rangeChoice(types, filters)
          : undefined;
      const indexDriver = walked?.kind === 'param' && !walked.negate && !range ? walked : range?.selective;
      if (indexDriver) {
        const rows = yield* this.driverWalk(
          types,
          indexDriver,
          filters.filter((f) => f !== indexDriver),
          scope,
          select,
          limit,
        );
        return { [Symbol.iterator]: () => candidatesOf(rows, 0) };
      }
      // An unselective date or number range: its entries walked in seq order, index-only, up to the page
      // (search_index_range_seq); no walk of the store order, no ordering of its matches.
      if (range && walked && seqIndexed(walked)) {
        const rows = yield* this.driverWalk(
          types,
          walked,
          filters.filter((f) => f !== walked),
          scope,
          select,
          limit,
          0,
          undefined,
          true,
        );
        return { [Symbol.iterator]: () => candidatesOf(rows, 0) };
      }
      if (!walked || types.length !== 1) {
        const rows = yield* rowsOf(
          `${select} WHERE ${where.join(' AND ')} ORDER BY ${seqOrder} LIMIT ${limit}`,
          binds,
        );
        return { [Symbol.iterator]: () => candidatesOf(rows, 0) };
      }
      // The walk is bounded: matches may all lie late in the store order (a code in use since last month), and a
      // walk to them would pass every earlier version. Past the first WALK_ROWS current versions the filter's rows
      // drive instead (ordered: as costly as before the walk existed, never more than that plus the bounded walk).
      const bound = (yield* columnOf(
        `SELECT c.seq FROM ${d.table('resource_current')} c WHERE c.resource_type = ? ORDER BY c.seq LIMIT 1 OFFSET ${Math.max(1, Math.floor(this.smallSide / UNSELECTIVE_WALK_DIVISOR)) - 1}`,
        [types[0]!],
      ))[0];
      if (bound === undefined) {
        const rows = yield* rowsOf(
          `${select} WHERE ${where.join(' AND ')} ORDER BY c.seq LIMIT ${limit}`,
          binds,
        );
        return { [Symbol.iterator]: () => candidatesOf(rows, 0) };
      }
      const near = [
        ...(yield* rowsOf(
          `${select} WHERE ${where.join(' AND ')} AND c.seq <= ? ORDER BY c.seq LIMIT ${limit}`,
          [...binds, bound],
        )),
      ];
      if (near.length >= limit) return { [Symbol.iterator]: () => candidatesOf(near, 0) };
      // Past the bound: the walked filter's matches after it, in seq order (driverWalk).
      let farRows: Iterable<SearchRow>;
      if (walked.kind === 'param' && !walked.negate) {
        const others = filters.filter((f) => f !== walked);
        farRows = yield* this.driverWalk(
          types,
          walked,
          others,
          scope,
          select,
          limit - near.length,
          Number(bound),
        );
      } else {
        const far = yield* this.matchConditions(types, filters, walked, scope);
        farRows = yield* rowsOf(
          `${select} WHERE ${far.where.join(' AND ')} AND c.seq > ? ORDER BY c.seq + 0 LIMIT ${limit - near.length}`,
          [...far.binds, bound],
        );
      }
      const rows = [...near, ...farRows];
      return { [Symbol.iterator]: () => candidatesOf(rows, 0) };
    }
    // Versions up to the mark keep their seq as position; a resource written since is placed by its newest version
    // at the mark (none: created since, not matched).
    const older = `SELECT ${columns}, c.seq AS pos ${from} WHERE ${where.join(' AND ')} AND c.seq > ? AND c.seq <= ? ORDER BY ${seqOrder} LIMIT ${limit}`;
    const newer = `SELECT ${columns}, (SELECT max(o.seq) FROM ${d.table('resource_version')} o WHERE o.resource_type = v.resource_type AND o.id = v.id AND o.seq <= ?) AS pos ${from} WHERE ${where.join(' AND ')} AND c.seq > ?`;
    const sql = `SELECT cand.* FROM (SELECT * FROM (${older})${alias('a')} UNION ALL SELECT * FROM (${newer})${alias('b')}) AS cand
      WHERE cand.pos IS NOT NULL AND cand.pos > ? ORDER BY cand.pos LIMIT ${limit}`;
    const rows = yield* rowsOf(sql, [
      ...binds,
      after.seq,
      after.high,
      after.high,
      ...binds,
      after.high,
      after.seq,
    ]);
    return { [Symbol.iterator]: () => candidatesOf(rows, 0) };
  }

  /**
   * A later page in the default order driven by an equal value or reference (its index entries end in seq): the
   * matches after the position up to the first page's mark, read from the index in seq order (driverWalk, `limit`
   * at a time), and those written since the mark (their current seq is past it: the same index from the mark), placed
   * by their version at the mark (none: created since, not matched). Both ordered by position, the first `limit` kept.
   */
  private *seekAfter(
    types: string[],
    driver: Extract<Filter, { kind: 'param' }>,
    filters: Filter[],
    scope: CandidateScope,
    limit: number,
    after: SearchPosition,
  ): SearchPlan<Iterable<Candidate>> {
    const d = this.d;
    const others = filters.filter((f) => f !== driver);
    const from = `FROM ${d.table('resource_version')} v JOIN ${d.table('resource_current')} c ON c.resource_type = v.resource_type AND c.id = v.id AND c.seq = v.seq`;
    const columns =
      'v.seq, v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.method, NULL AS json, v.custodian, v.patients';
    const older = yield* this.driverWalk(
      types,
      driver,
      others,
      scope,
      `SELECT ${columns}, c.seq AS pos ${from}`,
      limit,
      after.seq,
      after.high,
    );
    const matches = this.matchRows(types, driver, 'si.seq');
    const { where, binds } = yield* this.matchConditions(types, others, undefined, scope);
    const newer = yield* rowsOf(
      `SELECT cand.* FROM (SELECT ${columns}, (SELECT max(o.seq) FROM ${d.table('resource_version')} o WHERE o.resource_type = v.resource_type AND o.id = v.id AND o.seq <= ?) AS pos ${from}
        WHERE v.seq IN (${matches.sql} AND si.seq > ?) AND ${where.join(' AND ')}) AS cand
        WHERE cand.pos IS NOT NULL AND cand.pos > ? ORDER BY cand.pos LIMIT ${limit}`,
      [after.high, ...matches.binds, after.high, ...binds, after.seq],
    );
    const rows = [...older, ...newer] as CandidateRow[];
    rows.sort((a, b) => Number(a.pos) - Number(b.pos));
    return { [Symbol.iterator]: () => candidatesOf(rows.slice(0, limit), 0) };
  }

  /** The page of visible matches (bodies read for the page only), the visible total when asked, and whether more follow. */
  *search(): SearchPlan<SearchResult> {
    const { query, after } = this.request;
    // Without a total a page needs offset + count + 1 visible rows (the last says whether more follow); rows the
    // caller may not see are few (its read scope is in the query), so asking again for more is rare.
    let limit = this.request.wantTotal ? undefined : (after ? 0 : query.offset) + query.count + 1;
    let paged: { page: Candidate[]; visible: number; hasMore: boolean };
    for (;;) {
      const candidates = yield* this.candidates(query.resourceTypes, query.filters, query.sort, {
        after,
        limit,
      });
      let read = 0;
      paged = pageOf(
        countingRows(candidates, () => read++),
        this.request,
      );
      if (limit === undefined || paged.hasMore || read < limit || query.sort.length > 0) break;
      limit *= 4;
    }
    const { page, visible, hasMore } = paged;
    // Bodies only for the page: sorting and counting work on the small metadata rows.
    const bodies = page.length > 0 ? yield* bodiesOf(page.map((version) => version.seq)) : [];
    const versions = page.map(({ seq: _seq, keys: _keys, pos: _pos, high: _high, ...version }, i) => ({
      ...version,
      json: bodies[i]!,
    }));
    const high = after?.high ?? page[0]?.high;
    const positions =
      high !== undefined ? page.map((c): SearchPosition => ({ high, keys: c.keys, seq: c.pos })) : undefined;
    const next = hasMore ? positions?.[positions.length - 1] : undefined;
    return { versions, total: this.request.wantTotal ? visible : undefined, hasMore, next, positions };
  }
}

/**
 * The visible candidates of the requested page, how many are visible (all of them when a total is wanted) and
 * whether more follow. A plain function, not part of the plan's generator: the per-row loop stays optimisable.
 */
function pageOf(
  candidates: Iterable<Candidate>,
  request: StoreSearchRequest,
): { page: Candidate[]; visible: number; hasMore: boolean } {
  const { query, canRead } = request;
  // A later page starts after its position, not at an offset.
  const offset = request.after ? 0 : query.offset;
  const page: Candidate[] = [];
  let visible = 0;
  let hasMore = false;
  for (const version of candidates) {
    if (!canRead(version)) continue;
    visible++;
    if (visible <= offset) continue;
    if (page.length < query.count) page.push(version);
    else {
      hasMore = true;
      if (!request.wantTotal) break;
    }
  }
  return { page, visible, hasMore };
}
