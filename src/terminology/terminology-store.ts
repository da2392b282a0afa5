/**
 * The loaded code systems in the data directory's `terminology.sqlite` (docs/terminology.md): one SQLite file
 * whatever the resource store is (the validator asks synchronously, on the write path). `hie-ledger terminology
 * load` writes it while the service is stopped; the service opens it read-only at start when it exists.
 *
 * Tables: the systems loaded, their concepts, designations (other names), properties and is-a parents (the child
 * first in the key, an index on the parent for descendants). A load replaces one system's content in one
 * transaction: a failed load leaves the previous content.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { LoadedCodeSystems, LoadedConcept, LoadedSystemInfo } from '../fhir/terminology-port.js';
import { ensurePrivateFile } from '../platform/private-files.js';

export const TERMINOLOGY_FILE = 'terminology.sqlite';

/** The terminology file of a data directory. */
export function terminologyFile(dataDir: string): string {
  return path.join(dataDir, TERMINOLOGY_FILE);
}

/** The data directory's loaded code systems, read-only, when any were loaded. */
export function openLoadedCodeSystems(dataDir: string): SqliteCodeSystems | undefined {
  return SqliteCodeSystems.openIfPresent(terminologyFile(dataDir));
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS ts_system (
  url TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT, count INTEGER NOT NULL,
  hierarchical INTEGER NOT NULL, loaded_at TEXT NOT NULL, source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ts_concept (
  system TEXT NOT NULL, code TEXT NOT NULL, display TEXT, active INTEGER NOT NULL DEFAULT 1,
  display_rank INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (system, code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ts_designation (
  system TEXT NOT NULL, code TEXT NOT NULL, value TEXT NOT NULL, use TEXT, language TEXT
);
CREATE INDEX IF NOT EXISTS ts_designation_code ON ts_designation (system, code);
CREATE TABLE IF NOT EXISTS ts_property (
  system TEXT NOT NULL, code TEXT NOT NULL, property TEXT NOT NULL, value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ts_property_code ON ts_property (system, code, property);
CREATE TABLE IF NOT EXISTS ts_parent (
  system TEXT NOT NULL, code TEXT NOT NULL, parent TEXT NOT NULL,
  PRIMARY KEY (system, code, parent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ts_parent_down ON ts_parent (system, parent, code);
`;

/** Deepest is-a walk followed (SNOMED CT's hierarchy is about 30 deep). */
const MAX_DEPTH = 100;

/** The loaded code systems of a terminology file, read-only (the LoadedCodeSystems port). */
export class SqliteCodeSystems implements LoadedCodeSystems {
  private readonly db: Database.Database;
  private readonly known: Map<string, LoadedSystemInfo>;
  private readonly statements;

  /** Opens `file` read-only; undefined when it does not exist (nothing loaded). */
  static openIfPresent(file: string): SqliteCodeSystems | undefined {
    return existsSync(file) ? new SqliteCodeSystems(new Database(file, { readonly: true })) : undefined;
  }

  constructor(db: Database.Database) {
    this.db = db;
    const rows = db.prepare('SELECT url, name, version, count, hierarchical FROM ts_system').all() as {
      url: string;
      name: string;
      version: string | null;
      count: number;
      hierarchical: number;
    }[];
    this.known = new Map(
      rows.map((r) => [
        r.url,
        {
          url: r.url,
          name: r.name,
          ...(r.version !== null ? { version: r.version } : {}),
          count: r.count,
          hierarchical: r.hierarchical === 1,
        },
      ]),
    );
    this.statements = {
      concept: db.prepare('SELECT display, active FROM ts_concept WHERE system = ? AND code = ?'),
      designations: db.prepare(
        'SELECT value, use, language FROM ts_designation WHERE system = ? AND code = ?',
      ),
      properties: db.prepare('SELECT property, value FROM ts_property WHERE system = ? AND code = ?'),
      property: db.prepare('SELECT value FROM ts_property WHERE system = ? AND code = ? AND property = ?'),
      parents: db.prepare('SELECT parent FROM ts_parent WHERE system = ? AND code = ?'),
      ancestors: db.prepare(
        `WITH RECURSIVE up(code, depth) AS (
           SELECT parent, 1 FROM ts_parent WHERE system = @p1 AND code = @p2
           UNION SELECT p.parent, up.depth + 1 FROM ts_parent p JOIN up ON p.system = @p1 AND p.code = up.code
           WHERE up.depth < ${MAX_DEPTH})
         SELECT DISTINCT code FROM up LIMIT @p3`,
      ),
      isAncestor: db.prepare(
        `WITH RECURSIVE up(code, depth) AS (
           SELECT parent, 1 FROM ts_parent WHERE system = @p1 AND code = @p2
           UNION SELECT p.parent, up.depth + 1 FROM ts_parent p JOIN up ON p.system = @p1 AND p.code = up.code
           WHERE up.depth < ${MAX_DEPTH})
         SELECT 1 FROM up WHERE code = @p3 LIMIT 1`,
      ),
      descendants: db.prepare(
        `WITH RECURSIVE down(code, depth) AS (
           SELECT code, 1 FROM ts_parent WHERE system = @p1 AND parent = @p2
           UNION SELECT p.code, down.depth + 1 FROM ts_parent p JOIN down ON p.system = @p1 AND p.parent = down.code
           WHERE down.depth < ${MAX_DEPTH})
         SELECT DISTINCT code FROM down LIMIT @p3`,
      ),
      count: db.prepare('SELECT count(*) AS n FROM ts_concept WHERE system = ?'),
      page: db.prepare(
        'SELECT code, display FROM ts_concept WHERE system = ? ORDER BY code LIMIT ? OFFSET ?',
      ),
      countText: db.prepare(
        "SELECT count(*) AS n FROM ts_concept WHERE system = @p1 AND (instr(lower(code), @p2) > 0 OR instr(lower(coalesce(display, '')), @p2) > 0)",
      ),
      pageText: db.prepare(
        "SELECT code, display FROM ts_concept WHERE system = @p1 AND (instr(lower(code), @p2) > 0 OR instr(lower(coalesce(display, '')), @p2) > 0) ORDER BY code LIMIT @p3 OFFSET @p4",
      ),
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
    const row = this.statements.concept.get(system, code) as
      { display: string | null; active: number } | undefined;
    if (!row) return undefined;
    const designations = (
      this.statements.designations.all(system, code) as {
        value: string;
        use: string | null;
        language: string | null;
      }[]
    ).map((d) => ({
      value: d.value,
      ...(d.use !== null ? { use: d.use } : {}),
      ...(d.language !== null ? { language: d.language } : {}),
    }));
    const properties = (
      this.statements.properties.all(system, code) as { property: string; value: string }[]
    ).map((p) => ({ code: p.property, value: p.value }));
    const parents = (this.statements.parents.all(system, code) as { parent: string }[]).map((p) => p.parent);
    return {
      code,
      ...(row.display !== null ? { display: row.display } : {}),
      active: row.active === 1,
      designations,
      properties,
      parents,
    };
  }

  subsumes(system: string, ancestor: string, code: string): boolean {
    if (ancestor === code) return this.statements.concept.get(system, code) !== undefined;
    return this.statements.isAncestor.get({ p1: system, p2: code, p3: ancestor }) !== undefined;
  }

  descendants(system: string, code: string, limit: number): string[] {
    return (
      this.statements.descendants.all({ p1: system, p2: code, p3: limit + 1 }) as { code: string }[]
    ).map((r) => r.code);
  }

  ancestors(system: string, code: string, limit: number): string[] {
    return (this.statements.ancestors.all({ p1: system, p2: code, p3: limit + 1 }) as { code: string }[]).map(
      (r) => r.code,
    );
  }

  property(system: string, code: string, property: string): string[] {
    return (this.statements.property.all(system, code, property) as { value: string }[]).map((r) => r.value);
  }

  page(
    system: string,
    options: { text?: string; offset: number; count: number },
  ): { total: number; concepts: { code: string; display?: string }[] } {
    const text = options.text?.toLowerCase();
    const total = (
      text ? this.statements.countText.get({ p1: system, p2: text }) : this.statements.count.get(system)
    ) as { n: number };
    const rows = (
      text
        ? this.statements.pageText.all({ p1: system, p2: text, p3: options.count, p4: options.offset })
        : this.statements.page.all(system, options.count, options.offset)
    ) as { code: string; display: string | null }[];
    return {
      total: total.n,
      concepts: rows.map((r) => ({ code: r.code, ...(r.display !== null ? { display: r.display } : {}) })),
    };
  }

  close(): void {
    this.db.close();
  }
}

/** One concept as a loader reads it from the owner's files. */
export interface ConceptRow {
  code: string;
  display?: string;
  active?: boolean;
  /** A loader that meets a concept more than once keeps the display of the lowest rank (RxNorm's term types). */
  displayRank?: number;
}

/** The rank of a concept without a display (any display given later replaces it). */
const NO_DISPLAY_RANK = 1_000_000;

/** What a loader writes: one system's content, replacing what was loaded for it before (one transaction). */
export class TerminologyWriter {
  private readonly db: Database.Database;
  private readonly insert;

  constructor(file: string) {
    ensurePrivateFile(file);
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.exec(SCHEMA);
    // A loader's scratch list (SNOMED CT's preferred description ids), on disk rather than in memory.
    this.db.exec('CREATE TEMP TABLE IF NOT EXISTS ts_preferred (id TEXT PRIMARY KEY) WITHOUT ROWID');
    this.insert = {
      concept: this.db.prepare(
        `INSERT INTO ts_concept (system, code, display, active, display_rank) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (system, code) DO UPDATE SET
           display = CASE WHEN excluded.display_rank < ts_concept.display_rank OR ts_concept.display IS NULL
                          THEN excluded.display ELSE ts_concept.display END,
           display_rank = min(excluded.display_rank, ts_concept.display_rank),
           active = max(excluded.active, ts_concept.active)`,
      ),
      designation: this.db.prepare(
        'INSERT INTO ts_designation (system, code, value, use, language) VALUES (?, ?, ?, ?, ?)',
      ),
      property: this.db.prepare(
        'INSERT INTO ts_property (system, code, property, value) VALUES (?, ?, ?, ?)',
      ),
      parent: this.db.prepare('INSERT OR IGNORE INTO ts_parent (system, code, parent) VALUES (?, ?, ?)'),
      display: this.db.prepare(
        'UPDATE ts_concept SET display = @p1, display_rank = @p2 WHERE system = @p3 AND code = @p4 AND display_rank > @p2',
      ),
      markPreferred: this.db.prepare('INSERT OR IGNORE INTO temp.ts_preferred (id) VALUES (?)'),
      isPreferred: this.db.prepare('SELECT 1 FROM temp.ts_preferred WHERE id = ?'),
    };
  }

  /** Starts replacing `system`: its previous content is removed inside the load's transaction. */
  begin(system: string): void {
    this.db.exec('BEGIN IMMEDIATE');
    this.db.exec('DELETE FROM temp.ts_preferred');
    for (const table of ['ts_concept', 'ts_designation', 'ts_property', 'ts_parent', 'ts_system'])
      this.db
        .prepare(`DELETE FROM ${table} WHERE ${table === 'ts_system' ? 'url' : 'system'} = ?`)
        .run(system);
  }

  concept(system: string, row: ConceptRow): void {
    this.insert.concept.run(
      system,
      row.code,
      row.display ?? null,
      row.active === false ? 0 : 1,
      row.display === undefined ? NO_DISPLAY_RANK : (row.displayRank ?? 0),
    );
  }

  designation(system: string, code: string, value: string, use?: string, language?: string): void {
    this.insert.designation.run(system, code, value, use ?? null, language ?? null);
  }

  property(system: string, code: string, property: string, value: string): void {
    this.insert.property.run(system, code, property, value);
  }

  parent(system: string, code: string, parent: string): void {
    this.insert.parent.run(system, code, parent);
  }

  /** Gives a concept this display unless it has one of a lower (better) rank. */
  display(system: string, code: string, display: string, rank: number): void {
    this.insert.display.run({ p1: display, p2: rank, p3: system, p4: code });
  }

  markPreferred(id: string): void {
    this.insert.markPreferred.run(id);
  }

  isPreferred(id: string): boolean {
    return this.insert.isPreferred.get(id) !== undefined;
  }

  /** Records the system and commits. Returns how many concepts it has. */
  commit(info: Omit<LoadedSystemInfo, 'count'> & { source: string }): number {
    const count = (
      this.db.prepare('SELECT count(*) AS n FROM ts_concept WHERE system = ?').get(info.url) as { n: number }
    ).n;
    this.db
      .prepare(
        'INSERT INTO ts_system (url, name, version, count, hierarchical, loaded_at, source) VALUES (?, ?, ?, ?, ?, ?, ?)',
      )
      .run(
        info.url,
        info.name,
        info.version ?? null,
        count,
        info.hierarchical ? 1 : 0,
        new Date().toISOString(),
        info.source,
      );
    this.db.exec('COMMIT');
    return count;
  }

  rollback(): void {
    if (this.db.inTransaction) this.db.exec('ROLLBACK');
  }

  close(): void {
    this.rollback();
    this.db.close();
  }
}
