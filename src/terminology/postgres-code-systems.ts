/**
 * The loaded code systems in the PostgreSQL database of `--store postgres` (docs/terminology.md): loaded once by
 * `hie-ledger terminology load --store postgres`, read by every replica. Tables of PostgreSQL migration 10
 * (src/fhir/store/postgres/schema.ts), the same as terminology.sqlite's.
 *
 * Reading: the LoadedCodeSystems port is synchronous (the validator asks in the middle of a walk). A synchronous
 * lookup that misses the cache goes through SyncQuery (a worker thread holding one connection) and blocks this
 * thread until the database answers, so the service reads ahead instead: `prefetch` (before a request's handler
 * runs, src/app/app.ts) reads, on a pool and without blocking, every concept a document's Codings name, with its
 * properties and all its ancestors, so that the validation's concept, property and subsumption lookups of those
 * codes answer from memory. What was not read ahead (expansions: descendants, pages) still blocks. The concepts,
 * ancestor sets, subsumptions and properties read are kept in bounded caches, since exchange traffic repeats a
 * few thousand codes. Writing: a load is read from the owner's files into a scratch SQLite file by the same loaders as the
 * SQLite store, then copied to the database in one transaction that replaces the system's content.
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import type { LoadedCodeSystems, LoadedConcept, LoadedSystemInfo } from '../fhir/terminology-port.js';
import { SyncQuery } from './sync-query.js';

const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

/** Deepest is-a walk followed (as the SQLite store). */
const MAX_DEPTH = 100;
/** Entries of each cache (concepts, subsumptions, properties). */
const CACHE_ENTRIES = 20_000;
/** Rows per INSERT when a load is copied to the database. */
const COPY_BATCH = 5_000;

/** Codes of one document read ahead at most (beyond: looked up as asked); well under a cache's size. */
const PREFETCH_CODES = CACHE_ENTRIES / 4;

/** A map that forgets its least recently used entries beyond `limit`. */
class BoundedCache<V> {
  private readonly entries = new Map<string, V>();
  constructor(private readonly limit: number) {}

  get(key: string, compute: () => V): V {
    const hit = this.peek(key);
    if (hit) return hit.value;
    const value = compute();
    this.set(key, value);
    return value;
  }

  /** The entry of `key` if cached (an undefined value is one too: a code known to be missing). */
  peek(key: string): { value: V } | undefined {
    if (!this.entries.has(key)) return undefined;
    const value = this.entries.get(key) as V;
    this.entries.delete(key);
    this.entries.set(key, value);
    return { value };
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  set(key: string, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.limit) this.entries.delete(this.entries.keys().next().value as string);
  }
}

/** A concept row as the concept queries return it. */
interface ConceptRow {
  code: string;
  display: string | null;
  active: boolean;
  designations: { value: string; use: string | null; language: string | null }[];
  properties: { code: string; value: string }[];
  parents: string[];
}

function toConcept(row: ConceptRow): LoadedConcept {
  return {
    code: row.code,
    ...(row.display !== null ? { display: row.display } : {}),
    active: row.active,
    designations: row.designations.map((d) => ({
      value: d.value,
      ...(d.use !== null ? { use: d.use } : {}),
      ...(d.language !== null ? { language: d.language } : {}),
    })),
    properties: row.properties,
    parents: row.parents,
  };
}

/**
 * The codes of the Codings in a FHIR JSON value (any object with a string `system` and `code`: Coding,
 * CodeableConcept.coding, Quantity, in contained resources and bundle entries too), by system, for the systems
 * `wanted` accepts; at most `limit` codes in all.
 */
export function codingsIn(
  document: unknown,
  wanted: (system: string) => boolean,
  limit: number,
): Map<string, Set<string>> {
  const found = new Map<string, Set<string>>();
  let count = 0;
  const stack: unknown[] = [document];
  while (stack.length > 0 && count < limit) {
    const value = stack.pop();
    if (Array.isArray(value)) {
      for (const item of value) if (item !== null && typeof item === 'object') stack.push(item);
      continue;
    }
    if (value === null || typeof value !== 'object') continue;
    const { system, code } = value as { system?: unknown; code?: unknown };
    if (typeof system === 'string' && typeof code === 'string' && wanted(system)) {
      let codes = found.get(system);
      if (!codes) found.set(system, (codes = new Set()));
      if (!codes.has(code)) {
        codes.add(code);
        count++;
      }
    }
    for (const item of Object.values(value)) if (item !== null && typeof item === 'object') stack.push(item);
  }
  return found;
}

interface SystemRow {
  url: string;
  name: string;
  version: string | null;
  count: number;
  hierarchical: boolean;
}

function toInfo(r: SystemRow): LoadedSystemInfo {
  return {
    url: r.url,
    name: r.name,
    ...(r.version !== null ? { version: r.version } : {}),
    count: Number(r.count),
    hierarchical: r.hierarchical,
  };
}

/** Where the tables are: the database of `--database-url` and the schema of its `schema` parameter. */
export interface PostgresTerminologyLocation {
  connectionString: string;
  /** Default `hie`, as the resource store's. */
  schema?: string;
}

/** The loaded code systems of a database, when any were loaded (its schema migrated to version 10 or later). */
export async function openPostgresCodeSystems(
  location: PostgresTerminologyLocation,
): Promise<PostgresCodeSystems | undefined> {
  const schema = location.schema ?? 'hie';
  // Read-ahead connections; the synchronous lookups have the worker's own.
  const pool = new pg.Pool({ connectionString: location.connectionString, max: 2 });
  let systems: SystemRow[];
  try {
    systems = (
      await pool.query<SystemRow>(
        `SELECT url, name, version, count, hierarchical FROM ${quoteIdent(schema)}.ts_system`,
      )
    ).rows;
  } catch (err) {
    await pool.end();
    throw err;
  }
  if (systems.length === 0) {
    await pool.end();
    return undefined;
  }
  return new PostgresCodeSystems(new SyncQuery(location.connectionString), pool, schema, systems.map(toInfo));
}

export class PostgresCodeSystems implements LoadedCodeSystems {
  private readonly known: Map<string, LoadedSystemInfo>;
  private readonly sql;
  private readonly concepts = new BoundedCache<LoadedConcept | undefined>(CACHE_ENTRIES);
  /** system|code -> every ancestor of the code (read ahead: subsumption of a prefetched code needs no query). */
  private readonly ancestorSets = new BoundedCache<ReadonlySet<string>>(CACHE_ENTRIES);
  private readonly subsumptions = new BoundedCache<boolean>(CACHE_ENTRIES);
  private readonly properties = new BoundedCache<string[]>(CACHE_ENTRIES);

  constructor(
    private readonly query: SyncQuery,
    private readonly pool: pg.Pool,
    schema: string,
    systems: LoadedSystemInfo[],
  ) {
    const S = quoteIdent(schema);
    this.known = new Map(systems.map((info) => [info.url, info]));
    const up = `WITH RECURSIVE up(code, depth) AS (
        SELECT parent, 1 FROM ${S}.ts_parent WHERE system = $1 AND code = $2
        UNION SELECT p.parent, up.depth + 1 FROM ${S}.ts_parent p JOIN up ON p.system = $1 AND p.code = up.code
        WHERE up.depth < ${MAX_DEPTH})`;
    const concepts = `SELECT c.code, c.display, c.active,
          (SELECT coalesce(json_agg(json_build_object('value', d.value, 'use', d.use, 'language', d.language)
             ORDER BY d.ord), '[]') FROM ${S}.ts_designation d WHERE d.system = c.system AND d.code = c.code)
            AS designations,
          (SELECT coalesce(json_agg(json_build_object('code', p.property, 'value', p.value) ORDER BY p.ord), '[]')
             FROM ${S}.ts_property p WHERE p.system = c.system AND p.code = c.code) AS properties,
          (SELECT coalesce(json_agg(p.parent ORDER BY p.parent), '[]')
             FROM ${S}.ts_parent p WHERE p.system = c.system AND p.code = c.code) AS parents
        FROM ${S}.ts_concept c WHERE c.system = $1`;
    this.sql = {
      // One round trip per concept: its designations, properties and parents as JSON arrays.
      concept: `${concepts} AND c.code = $2`,
      // The read-ahead: the concepts of many codes of one system, and the ancestors of each.
      concepts: `${concepts} AND c.code = ANY($2::text[])`,
      ancestorSets: `WITH RECURSIVE up(start, code, depth) AS (
          SELECT code, parent, 1 FROM ${S}.ts_parent WHERE system = $1 AND code = ANY($2::text[])
          UNION SELECT up.start, p.parent, up.depth + 1 FROM ${S}.ts_parent p JOIN up ON p.system = $1 AND p.code = up.code
          WHERE up.depth < ${MAX_DEPTH})
        SELECT start, array_agg(DISTINCT code) AS ancestors FROM up GROUP BY start`,
      exists: `SELECT 1 FROM ${S}.ts_concept WHERE system = $1 AND code = $2`,
      isAncestor: `${up} SELECT 1 FROM up WHERE code = $3 LIMIT 1`,
      ancestors: `${up} SELECT DISTINCT code FROM up LIMIT $3`,
      descendants: `WITH RECURSIVE down(code, depth) AS (
          SELECT code, 1 FROM ${S}.ts_parent WHERE system = $1 AND parent = $2
          UNION SELECT p.code, down.depth + 1 FROM ${S}.ts_parent p JOIN down ON p.system = $1 AND p.parent = down.code
          WHERE down.depth < ${MAX_DEPTH})
        SELECT DISTINCT code FROM down LIMIT $3`,
      property: `SELECT value FROM ${S}.ts_property WHERE system = $1 AND code = $2 AND property = $3 ORDER BY ord`,
      count: `SELECT count(*)::integer AS n FROM ${S}.ts_concept WHERE system = $1`,
      page: `SELECT code, display FROM ${S}.ts_concept WHERE system = $1 ORDER BY code LIMIT $2 OFFSET $3`,
      countText: `SELECT count(*)::integer AS n FROM ${S}.ts_concept WHERE system = $1
          AND (strpos(lower(code), $2) > 0 OR strpos(lower(coalesce(display, '')), $2) > 0)`,
      pageText: `SELECT code, display FROM ${S}.ts_concept WHERE system = $1
          AND (strpos(lower(code), $2) > 0 OR strpos(lower(coalesce(display, '')), $2) > 0)
          ORDER BY code LIMIT $3 OFFSET $4`,
    };
  }

  system(url: string): LoadedSystemInfo | undefined {
    return this.known.get(url);
  }

  systems(): LoadedSystemInfo[] {
    return [...this.known.values()].sort((a, b) => a.url.localeCompare(b.url));
  }

  /**
   * Reads ahead, on the pool (this thread keeps serving meanwhile), the concepts the Codings of a FHIR JSON text
   * name in the loaded systems, with all their ancestors: their concept, property and subsumption lookups then
   * answer from memory. Never fails: what could not be read is looked up as asked (and fails there).
   */
  async prefetch(document: string): Promise<void> {
    let parsed: unknown;
    try {
      parsed = JSON.parse(document);
    } catch {
      return; // not JSON: the request is refused before anything is validated
    }
    const wanted = codingsIn(parsed, (system) => this.known.has(system), PREFETCH_CODES);
    await Promise.all(
      [...wanted].map(async ([system, codes]) => {
        const missing = [...codes].filter(
          (code) => !this.concepts.has(`${system}|${code}`) || !this.ancestorSets.has(`${system}|${code}`),
        );
        if (missing.length > 0) await this.readAhead(system, missing).catch(() => undefined);
      }),
    );
  }

  private async readAhead(system: string, codes: string[]): Promise<void> {
    const [concepts, ancestors] = await Promise.all([
      this.pool.query<ConceptRow>(this.sql.concepts, [system, codes]),
      this.pool.query<{ start: string; ancestors: string[] }>(this.sql.ancestorSets, [system, codes]),
    ]);
    const found = new Map(concepts.rows.map((row) => [row.code, toConcept(row)]));
    const above = new Map(ancestors.rows.map((row) => [row.start, new Set(row.ancestors)]));
    for (const code of codes) {
      this.concepts.set(`${system}|${code}`, found.get(code));
      this.ancestorSets.set(`${system}|${code}`, above.get(code) ?? new Set());
    }
  }

  concept(system: string, code: string): LoadedConcept | undefined {
    if (!this.known.has(system)) return undefined;
    return this.concepts.get(`${system}|${code}`, () => {
      const row = this.query.query<ConceptRow>(this.sql.concept, [system, code])[0];
      return row ? toConcept(row) : undefined;
    });
  }

  subsumes(system: string, ancestor: string, code: string): boolean {
    if (ancestor === code) return this.concept(system, code) !== undefined;
    const ancestors = this.ancestorSets.peek(`${system}|${code}`);
    if (ancestors) return ancestors.value.has(ancestor);
    return this.subsumptions.get(
      `${system}|${ancestor}|${code}`,
      () => this.query.query(this.sql.isAncestor, [system, code, ancestor]).length > 0,
    );
  }

  descendants(system: string, code: string, limit: number): string[] {
    return this.query
      .query<{ code: string }>(this.sql.descendants, [system, code, limit + 1])
      .map((r) => r.code);
  }

  ancestors(system: string, code: string, limit: number): string[] {
    return this.query
      .query<{ code: string }>(this.sql.ancestors, [system, code, limit + 1])
      .map((r) => r.code);
  }

  property(system: string, code: string, property: string): string[] {
    // A concept read (ahead) holds its properties, in the same order.
    const concept = this.concepts.peek(`${system}|${code}`);
    if (concept)
      return (concept.value?.properties ?? []).filter((p) => p.code === property).map((p) => p.value);
    return this.properties.get(`${system}|${code}|${property}`, () =>
      this.query.query<{ value: string }>(this.sql.property, [system, code, property]).map((r) => r.value),
    );
  }

  page(
    system: string,
    options: { text?: string; offset: number; count: number },
  ): { total: number; concepts: { code: string; display?: string }[] } {
    const text = options.text?.toLowerCase();
    const total = text
      ? this.query.query<{ n: number }>(this.sql.countText, [system, text])
      : this.query.query<{ n: number }>(this.sql.count, [system]);
    const rows = text
      ? this.query.query<{ code: string; display: string | null }>(this.sql.pageText, [
          system,
          text,
          options.count,
          options.offset,
        ])
      : this.query.query<{ code: string; display: string | null }>(this.sql.page, [
          system,
          options.count,
          options.offset,
        ]);
    return {
      total: total[0]!.n,
      concepts: rows.map((r) => ({ code: r.code, ...(r.display !== null ? { display: r.display } : {}) })),
    };
  }

  async close(): Promise<void> {
    await Promise.all([this.query.close(), this.pool.end()]);
  }
}

/** Namespace of the advisory lock a load holds while it replaces a system ("HIET"). */
const LOAD_LOCK_CLASS = 0x48494554;

/**
 * Copies one system, as a loader wrote it to the scratch SQLite file `scratchFile`, into the database: the system's
 * previous rows are replaced in one transaction (readers see the old content or the new one, never a mix), under an
 * advisory lock so that two loads take turns. Returns how many concepts were copied.
 */
export async function copySystemToPostgres(
  pool: pg.Pool,
  schema: string,
  scratchFile: string,
  systemUrl: string,
): Promise<number> {
  const S = quoteIdent(schema);
  const scratch = new Database(scratchFile, { readonly: true });
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SELECT pg_advisory_xact_lock(${LOAD_LOCK_CLASS}, 0)`);
    for (const table of ['ts_concept', 'ts_designation', 'ts_property', 'ts_parent'])
      await client.query(`DELETE FROM ${S}.${table} WHERE system = $1`, [systemUrl]);
    await client.query(`DELETE FROM ${S}.ts_system WHERE url = $1`, [systemUrl]);
    const copy = async (select: string, insert: string, columns: number): Promise<void> => {
      let batch: unknown[][] = Array.from({ length: columns }, () => []);
      const flush = async () => {
        if (batch[0]!.length === 0) return;
        await client.query(insert, [systemUrl, ...batch]);
        batch = Array.from({ length: columns }, () => []);
      };
      for (const row of scratch.prepare(select).raw().iterate(systemUrl) as Iterable<unknown[]>) {
        row.forEach((value, i) => batch[i]!.push(value));
        if (batch[0]!.length >= COPY_BATCH) await flush();
      }
      await flush();
    };
    await copy(
      'SELECT code, display, active = 1 FROM ts_concept WHERE system = ?',
      `INSERT INTO ${S}.ts_concept (system, code, display, active)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::boolean[])`,
      3,
    );
    await copy(
      'SELECT code, rowid, value, use, language FROM ts_designation WHERE system = ?',
      `INSERT INTO ${S}.ts_designation (system, code, ord, value, use, language)
         SELECT $1, * FROM unnest($2::text[], $3::integer[], $4::text[], $5::text[], $6::text[])`,
      5,
    );
    await copy(
      'SELECT code, rowid, property, value FROM ts_property WHERE system = ?',
      `INSERT INTO ${S}.ts_property (system, code, ord, property, value)
         SELECT $1, * FROM unnest($2::text[], $3::integer[], $4::text[], $5::text[])`,
      4,
    );
    await copy(
      'SELECT code, parent FROM ts_parent WHERE system = ?',
      `INSERT INTO ${S}.ts_parent (system, code, parent) SELECT $1, * FROM unnest($2::text[], $3::text[])`,
      2,
    );
    const info = scratch
      .prepare(
        'SELECT url, name, version, count, hierarchical, loaded_at, source FROM ts_system WHERE url = ?',
      )
      .get(systemUrl) as {
      url: string;
      name: string;
      version: string | null;
      count: number;
      hierarchical: number;
      loaded_at: string;
      source: string;
    };
    await client.query(
      `INSERT INTO ${S}.ts_system (url, name, version, count, hierarchical, loaded_at, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [info.url, info.name, info.version, info.count, info.hierarchical === 1, info.loaded_at, info.source],
    );
    await client.query('COMMIT');
    return info.count;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
    scratch.close();
  }
}

/** The loaded systems of the database (for `hie-ledger terminology list`), read with the pool. */
export async function listPostgresSystems(pool: pg.Pool, schema: string): Promise<LoadedSystemInfo[]> {
  const rows = (
    await pool.query<SystemRow>(
      `SELECT url, name, version, count, hierarchical FROM ${quoteIdent(schema)}.ts_system ORDER BY url`,
    )
  ).rows;
  return rows.map(toInfo);
}
