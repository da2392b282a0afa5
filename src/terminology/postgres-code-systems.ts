/**
 * The loaded code systems in the PostgreSQL database of `--store postgres` (docs/terminology.md): loaded once by
 * `hie-ledger terminology load --store postgres`, read by every replica. Tables of PostgreSQL migration 10
 * (src/fhir/store/postgres/schema.ts), the same as terminology.sqlite's.
 *
 * Reading: the LoadedCodeSystems port is synchronous (the validator asks in the middle of a walk), so queries go
 * through SyncQuery (a worker thread holding one connection); each concept is one round trip, and the concepts,
 * subsumptions and properties asked are kept in a bounded cache, since exchange traffic repeats a few thousand
 * codes. Writing: a load is read from the owner's files into a scratch SQLite file by the same loaders as the
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

/** A map that forgets its least recently used entries beyond `limit`. */
class BoundedCache<V> {
  private readonly entries = new Map<string, V>();
  constructor(private readonly limit: number) {}

  get(key: string, compute: () => V): V {
    const hit = this.entries.get(key);
    if (hit !== undefined || this.entries.has(key)) {
      this.entries.delete(key);
      this.entries.set(key, hit as V);
      return hit as V;
    }
    const value = compute();
    this.entries.set(key, value);
    if (this.entries.size > this.limit) this.entries.delete(this.entries.keys().next().value as string);
    return value;
  }
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
  const query = new SyncQuery(location.connectionString);
  try {
    const store = new PostgresCodeSystems(query, location.schema ?? 'hie');
    if (store.systems().length > 0) return store;
  } catch (err) {
    await query.close();
    throw err;
  }
  await query.close();
  return undefined;
}

export class PostgresCodeSystems implements LoadedCodeSystems {
  private readonly known: Map<string, LoadedSystemInfo>;
  private readonly sql;
  private readonly concepts = new BoundedCache<LoadedConcept | undefined>(CACHE_ENTRIES);
  private readonly subsumptions = new BoundedCache<boolean>(CACHE_ENTRIES);
  private readonly properties = new BoundedCache<string[]>(CACHE_ENTRIES);

  constructor(
    private readonly query: SyncQuery,
    schema: string,
  ) {
    const S = quoteIdent(schema);
    const rows = query.query<SystemRow>(
      `SELECT url, name, version, count, hierarchical FROM ${S}.ts_system`,
      [],
    );
    this.known = new Map(rows.map((r) => [r.url, toInfo(r)]));
    const up = `WITH RECURSIVE up(code, depth) AS (
        SELECT parent, 1 FROM ${S}.ts_parent WHERE system = $1 AND code = $2
        UNION SELECT p.parent, up.depth + 1 FROM ${S}.ts_parent p JOIN up ON p.system = $1 AND p.code = up.code
        WHERE up.depth < ${MAX_DEPTH})`;
    this.sql = {
      // One round trip per concept: its designations, properties and parents as JSON arrays.
      concept: `SELECT c.display, c.active,
          (SELECT coalesce(json_agg(json_build_object('value', d.value, 'use', d.use, 'language', d.language)
             ORDER BY d.ord), '[]') FROM ${S}.ts_designation d WHERE d.system = c.system AND d.code = c.code)
            AS designations,
          (SELECT coalesce(json_agg(json_build_object('code', p.property, 'value', p.value) ORDER BY p.ord), '[]')
             FROM ${S}.ts_property p WHERE p.system = c.system AND p.code = c.code) AS properties,
          (SELECT coalesce(json_agg(p.parent ORDER BY p.parent), '[]')
             FROM ${S}.ts_parent p WHERE p.system = c.system AND p.code = c.code) AS parents
        FROM ${S}.ts_concept c WHERE c.system = $1 AND c.code = $2`,
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

  concept(system: string, code: string): LoadedConcept | undefined {
    if (!this.known.has(system)) return undefined;
    return this.concepts.get(`${system}|${code}`, () => {
      const row = this.query.query<{
        display: string | null;
        active: boolean;
        designations: { value: string; use: string | null; language: string | null }[];
        properties: { code: string; value: string }[];
        parents: string[];
      }>(this.sql.concept, [system, code])[0];
      if (!row) return undefined;
      return {
        code,
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
    });
  }

  subsumes(system: string, ancestor: string, code: string): boolean {
    if (ancestor === code) return this.concept(system, code) !== undefined;
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

  close(): Promise<void> {
    return this.query.close();
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
