/**
 * Runs a CompiledQuery (src/fhir/search/parse.ts) over the SQLite store's tables (schema.ts:
 * resource_current, resource_version, search_index).
 *
 * Visibility (access control) is enforced here, in the one place candidates are produced:
 * - every candidate row passes `canRead` before it is counted, paged or returned, so invisible resources are
 *   absent and `total` counts visible ones only;
 * - chains and `_has` are resolved inner-first into sets of *visible* resources (each inner match passes
 *   `canRead`), and the outer query only matches through those sets, so nothing can be learned through an
 *   invisible resource. An inner set larger than MAX_INNER_MATCHES is refused (400 too-costly).
 * Every value reaches SQL as a bound parameter; only parameter-free fragments are concatenated.
 */
import type { Database, Statement } from 'better-sqlite3';
import { fhirError } from '../../outcome.js';
import type { StoredVersion } from '../resource-store.js';
import type {
  Filter,
  IndexedAs,
  ReadScope,
  SearchValue,
  SortKey,
  StoreSearchRequest,
  StoreSearchResult,
} from '../search-query.js';

export const MAX_INNER_MATCHES = 10_000;

export type SqliteSearchRequest = StoreSearchRequest;
export type SqliteSearchResult = StoreSearchResult & { hasMore: boolean };

type Bind = string | number;
export interface Fragment {
  sql: string;
  binds: Bind[];
}

interface Row {
  seq: number;
  resource_type: string;
  id: string;
  version_id: number;
  last_updated: string;
  deleted: number;
  method: StoredVersion['method'];
  json: string | null;
  custodian: string | null;
  patients: string | null;
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

function toVersion(row: Row): StoredVersion {
  const version: StoredVersion = {
    resourceType: row.resource_type,
    id: row.id,
    versionId: row.version_id,
    lastUpdated: row.last_updated,
    deleted: row.deleted !== 0,
    method: row.method,
  };
  if (row.json !== null) version.json = row.json;
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
function valueCondition(filterType: string, value: SearchValue): Fragment {
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
      return { sql: parts.join(' AND ') || '1', binds };
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
      return { sql: '1', binds: [] };
    case 'composite':
      return compositeCondition(value);
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
function compositeCondition(value: Extract<SearchValue, { kind: 'composite' }>): Fragment {
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
  } else rest = { sql: '0', binds: [] };
  return { sql: `${first.sql} AND ${rest.sql}`, binds: [...first.binds, ...rest.binds] };
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

/** This candidate's own index rows of the given params (primary key prefix probe). */
const indexRowsOf = (params: string[]): string =>
  `FROM search_index si WHERE si.resource_type = c.resource_type AND si.id = c.id AND si.param IN (${placeholders(params.length)})`;

const RANGE_TYPES = new Set(['date', 'number', 'quantity']);

/**
 * `(c.resource_type, c.id) IN (index rows of param ? matching condition)`: not correlated, so SQLite runs it once
 * from a search_index index and probes resource_current by its key. Binds: the types, then the param (then, for
 * range types, the lowest number).
 *
 * Range conditions mostly bound `high`, the last column of search_index_range: on its own SQLite cannot use that
 * index and, with sampled statistics, scanned every index row of the type (measured 72 ms vs 5 ms on 14,000
 * Observations). A bound on `low` that every row meets plus INDEXED BY make it use the index.
 */
function matchingIds(
  types: string[],
  params: string[],
  condition: string,
  paramType: string,
  drive = true,
): string {
  // Not driving: a probe of this resource's own index rows (primary key prefix), once per candidate.
  if (!drive) return `EXISTS (SELECT 1 ${indexRowsOf(params)}${condition})`;
  const paramList = placeholders(params.length);
  const typeList = types.map(() => '?').join(', ');
  if (RANGE_TYPES.has(paramType)) {
    return `(c.resource_type, c.id) IN (SELECT si.resource_type, si.id FROM search_index si INDEXED BY search_index_range WHERE si.resource_type IN (${typeList}) AND si.param IN (${paramList}) AND si.low >= ?${condition})`;
  }
  return `(c.resource_type, c.id) IN (SELECT si.resource_type, si.id FROM search_index si WHERE si.resource_type IN (${typeList}) AND si.param IN (${paramList})${condition})`;
}

/** Binds that go with matchingIds. */
function matchingBinds(types: string[], params: string[], paramType: string, drive = true): Bind[] {
  if (!drive) return params;
  return RANGE_TYPES.has(paramType) ? [...types, ...params, -Number.MAX_VALUE] : [...types, ...params];
}

/** A parameter filter's values as one condition on its index rows `si`, and the index type that answers it. */
function paramCondition(filter: Extract<Filter, { kind: 'param' }>): {
  condition: Fragment;
  indexType: string;
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
        return { sql: 'substr(?, 1, length(si.value)) = si.value', binds: [v.uri] };
    }
    return valueCondition(filter.type, v);
  });
  return {
    condition: {
      sql: ` AND (${parts.map((p) => `(${p.sql})`).join(' OR ')})`,
      binds: parts.flatMap((p) => p.binds),
    },
    indexType: filter.modifier === 'text' ? 'string' : filter.type,
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
const SMALL_SIDE = 1000;

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
function admitsOf(s: ReadScope): { admits: Fragment[]; allPatients?: Fragment } {
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
      `(${HAS_PATIENTS} AND CASE WHEN instr(v.patients, ',') = 0 ` +
      'THEN substr(v.patients, 3, length(v.patients) - 4) IN (SELECT value FROM json_each(?)) ' +
      'ELSE NOT EXISTS (SELECT 1 FROM json_each(v.patients) p WHERE p.value NOT IN (SELECT value FROM json_each(?))) END)',
    binds: [list, list],
  };
  admits.push(allPatients);
  return { admits, allPatients };
}

/**
 * What a narrow read scope admits, as a condition on the version row alias `v` (the history of one type or
 * resource: sqlite-store.ts); undefined for an unrestricted scope.
 */
export function scopeCondition(s: ReadScope): Fragment | undefined {
  if (s.unrestricted) return undefined;
  const { admits } = admitsOf(s);
  if (admits.length === 0) return { sql: '0', binds: [] };
  return { sql: `(${admits.map((p) => p.sql).join(' OR ')})`, binds: admits.flatMap((p) => p.binds) };
}

function accessFilter(types: string[], scope: SqliteSearchRequest['scope']): AccessFilter | undefined {
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
    const { admits, allPatients } = admitsOf(s);
    const either = (parts: Fragment[]): Fragment => ({
      sql: `(v.resource_type = ? AND ${parts.length > 0 ? `(${parts.map((p) => p.sql).join(' OR ')})` : '0'})`,
      binds: [type, ...parts.flatMap((p) => p.binds)],
    });
    exact.push(either(admits));
    // Reached through its keys (one scope for all types): a row whose custodian is not the caller's came through
    // a patient in the list, so with one patient (no comma in its list: ids have none) it is admitted.
    whenKeyed.push(
      either([
        ...(s.custodian !== undefined ? [{ sql: 'v.custodian = ?', binds: [s.custodian] }] : []),
        ...(allPatients ? [{ sql: "instr(v.patients, ',') = 0", binds: [] }, allPatients] : []),
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

export class SqliteSearch {
  private readonly statements = new Map<string, Statement>();

  /** Store size (max seq) at the last ANALYZE; see refreshStatistics. */
  private analyzedAtSeq = 0;
  private searchesSinceCheck = 0;

  /** See SMALL_SIDE (a smaller bound lets tests and benchmarks take either side of the choice on little data). */
  private readonly smallSide: number;

  /** The current search's aliases (StoreSearchRequest.indexedAs); set by search(), which runs synchronously. */
  private indexedAs: IndexedAs = () => undefined;

  constructor(
    private readonly db: Database,
    options: { smallSide?: number } = {},
  ) {
    this.smallSide = options.smallSide ?? SMALL_SIDE;
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

  /**
   * The index row params that answer `code` on `types` (more than one for aliases such as Observation `combo-code`,
   * see StoreSearchRequest.indexedAs); `suffix` selects derived rows (`:text`).
   */
  private rowParams(types: string[], code: string, suffix = ''): string[] {
    const out = new Set<string>();
    for (const type of types) for (const c of this.indexedAs(type, code) ?? [code]) out.add(c + suffix);
    return [...out];
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

  /** The condition of one filter on the current-row aliases `c` (resource_current) and `v` (resource_version). */
  // One piece on purpose: a per-request hot path (bench:rest, bench:import); split it only with a benchmark run.
  private filterCondition(
    types: string[],
    filter: Filter,
    canRead: SqliteSearchRequest['canRead'],
    scope: SqliteSearchRequest['scope'],
    drive: boolean,
  ): Fragment {
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
        const params = this.rowParams(types, filter.param, filter.modifier === 'text' ? ':text' : '');
        const missing = filter.values.find((v) => v.kind === 'missing');
        if (missing && missing.kind === 'missing') {
          return {
            sql: `${missing.missing ? 'NOT ' : ''}${matchingIds(types, params, '', filter.type, drive)}`,
            binds: matchingBinds(types, params, filter.type, drive),
          };
        }
        const { condition, indexType } = paramCondition(filter);
        const sql = `${filter.negate ? 'NOT ' : ''}${matchingIds(types, params, condition.sql, indexType, drive)}`;
        return { sql, binds: [...matchingBinds(types, params, indexType, drive), ...condition.binds] };
      }
      case 'chain': {
        // Visible targets of the inner condition, then the references to them.
        const keys: string[] = [];
        for (const targetType of filter.targetTypes) {
          for (const version of this.visibleMatches([targetType], [filter.inner], canRead, scope))
            keys.push(`${version.resourceType}/${version.id}`);
        }
        return {
          sql: matchingIds(
            types,
            this.rowParams(types, filter.param),
            ' AND si.reference IN (SELECT value FROM json_each(?))',
            'reference',
            drive,
          ),
          binds: [
            ...matchingBinds(types, this.rowParams(types, filter.param), 'reference', drive),
            JSON.stringify(keys),
          ],
        };
      }
      case 'has': {
        // Visible sources matching the inner condition; this resource must be one they reference through `param`.
        const sources = [...this.visibleMatches([filter.sourceType], [filter.inner], canRead, scope)].map(
          (v) => v.id,
        );
        const hasParams = this.rowParams([filter.sourceType], filter.param);
        const referenced = this.prepare(
          `SELECT DISTINCT si.reference AS reference FROM search_index si
           WHERE si.resource_type = ? AND si.param IN (${placeholders(hasParams.length)}) AND si.id IN (SELECT value FROM json_each(?)) AND si.reference IS NOT NULL`,
        )
          .all(filter.sourceType, ...hasParams, JSON.stringify(sources))
          .map((r) => (r as { reference: string }).reference);
        return {
          sql: "(c.resource_type, c.id) IN (SELECT substr(value, 1, instr(value, '/') - 1), substr(value, instr(value, '/') + 1) FROM json_each(?))",
          binds: [JSON.stringify(referenced)],
        };
      }
    }
  }

  /** Every visible current version of `types` matching all `filters` (for chains and _has); capped. */
  private *visibleMatches(
    types: string[],
    filters: Filter[],
    canRead: SqliteSearchRequest['canRead'],
    scope: SqliteSearchRequest['scope'],
  ): Generator<StoredVersion> {
    let count = 0;
    for (const version of this.candidates(types, filters, [], canRead, scope)) {
      if (!canRead(version)) continue;
      if (++count > MAX_INNER_MATCHES) {
        throw fhirError(
          'search-too-costly',
          `A chained or _has condition matches more than ${MAX_INNER_MATCHES} resources; narrow it`,
        );
      }
      yield version;
    }
  }

  /** Does this SELECT give fewer than smallSide rows? (Reads at most that many.) */
  private fewer(select: string, binds: Bind[]): boolean {
    const count = this.prepare(`SELECT count(*) FROM (${select} LIMIT ${this.smallSide})`)
      .pluck()
      .get(...binds) as number;
    return count < this.smallSide;
  }

  /**
   * Does this driving filter match few index rows (whoever may see them)? Ids name at most the resources the
   * client listed; a parameter is counted up to smallSide; chains and _has are not counted (their inner sets
   * are resolved first): the caller's rows drive.
   */
  private fewMatches(types: string[], filter: Filter): boolean {
    if (filter.kind === 'id') return true;
    if (filter.kind !== 'param') return false;
    const params = this.rowParams(types, filter.param, filter.modifier === 'text' ? ':text' : '');
    const { condition, indexType } = paramCondition(filter);
    const range = RANGE_TYPES.has(indexType);
    const select =
      `SELECT 1 FROM search_index si${range ? ' INDEXED BY search_index_range' : ''} WHERE si.resource_type IN (${placeholders(types.length)}) ` +
      `AND si.param IN (${placeholders(params.length)})${range ? ' AND si.low >= ?' : ''}${condition.sql}`;
    return this.fewer(select, [...matchingBinds(types, params, indexType, true), ...condition.binds]);
  }

  private sortExpression(types: string[], key: SortKey): Fragment {
    const direction = key.descending ? 'DESC' : 'ASC';
    if (key.type === '_id') return { sql: `c.id ${direction}`, binds: [] };
    if (key.type === '_lastUpdated') return { sql: `v.seq ${direction}`, binds: [] };
    const aggregate = key.descending ? 'MAX' : 'MIN';
    const column =
      key.type === 'date'
        ? key.descending
          ? 'si.high'
          : 'si.low'
        : key.type === 'number' || key.type === 'quantity'
          ? '((si.low + si.high) / 2.0)'
          : key.type === 'reference'
            ? 'si.reference'
            : 'si.value';
    const params = this.rowParams(types, key.param);
    return { sql: `(SELECT ${aggregate}(${column}) ${indexRowsOf(params)}) ${direction}`, binds: params };
  }

  /** Current, non-deleted versions matching the filters, in sort order (visibility not yet applied). */
  private candidates(
    types: string[],
    filters: Filter[],
    sort: SortKey[],
    canRead: SqliteSearchRequest['canRead'],
    scope: SqliteSearchRequest['scope'],
  ): IterableIterator<StoredVersion & { seq: number }> {
    const where: string[] = ['c.deleted = 0'];
    const binds: Bind[] = [];
    where.push(`v.resource_type IN (${types.map(() => '?').join(', ')})`);
    binds.push(...types);
    // One filter drives (an IN list SQLite builds once); the others are probed per candidate.
    let driver: Filter | undefined;
    for (const filter of filters)
      if (driveRank(filter) < (driver ? driveRank(driver) : NEVER_DRIVES)) driver = filter;
    // The caller's read scope inside the query: its rows drive unless a filter's matches are the smaller side.
    const access = accessFilter(types, scope);
    let residual = access?.residual;
    if (access?.keyed) {
      // CROSS JOIN: from the keys to their rows (SQLite may not reorder it), one primary-key probe per key.
      const callerRows = `SELECT ak.resource_type, ak.id FROM json_each(?) k CROSS JOIN access_key ak WHERE ak.resource_type IN (${placeholders(types.length)}) AND ak.key = k.value`;
      const callerBinds = [access.keyed.keys, ...types];
      // The caller's rows first: when they are few, the filter's matches are not even counted (they may be hidden).
      if (!driver || this.fewer(callerRows, callerBinds) || !this.fewMatches(types, driver)) {
        driver = undefined;
        where.push(`(c.resource_type, c.id) IN (${callerRows})`);
        binds.push(...callerBinds);
        residual = access.keyed.residual;
      }
    }
    if (residual) {
      where.push(residual.sql);
      binds.push(...residual.binds);
    }
    for (const filter of filters) {
      const fragment = this.filterCondition(types, filter, canRead, scope, filter === driver);
      where.push(fragment.sql);
      binds.push(...fragment.binds);
    }
    const order = sort.map((k) => this.sortExpression(types, k));
    const orderSql = [...order.map((o) => o.sql), 'v.seq ASC'].join(', ');
    const sql = `SELECT v.seq, v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.method, NULL AS json, v.custodian, v.patients
      FROM resource_version v JOIN resource_current c ON c.resource_type = v.resource_type AND c.id = v.id AND c.seq = v.seq
      WHERE ${where.join(' AND ')}
      ORDER BY ${orderSql}`;
    const rows = this.prepare(sql).iterate(
      ...binds,
      ...order.flatMap((o) => o.binds),
    ) as IterableIterator<Row>;
    return (function* () {
      for (const row of rows) yield Object.assign(toVersion(row), { seq: row.seq });
    })();
  }

  search(request: SqliteSearchRequest): SqliteSearchResult {
    this.refreshStatistics();
    this.indexedAs = request.indexedAs ?? (() => undefined);
    const { query, canRead, scope } = request;
    const page: (StoredVersion & { seq: number })[] = [];
    let visible = 0;
    let hasMore = false;
    const iterator = this.candidates(query.resourceTypes, query.filters, query.sort, canRead, scope);
    try {
      for (const version of iterator) {
        if (!canRead(version)) continue;
        visible++;
        if (visible <= query.offset) continue;
        if (page.length < query.count) page.push(version);
        else {
          hasMore = true;
          if (!request.wantTotal) break;
        }
      }
    } finally {
      iterator.return?.();
    }
    // Bodies only for the page: sorting and counting work on the small metadata rows.
    const body = this.prepare('SELECT json FROM resource_version WHERE seq = ?').pluck();
    const versions = page.map(({ seq, ...version }) => ({ ...version, json: body.get(seq) as string }));
    return { versions, total: request.wantTotal ? visible : undefined, hasMore };
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
