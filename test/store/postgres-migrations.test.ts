/**
 * Rolling upgrades (docs/replicas.md, "Rolling upgrades"): replicas of the previous release keep working on a schema
 * that a new release migrated, so every PostgreSQL migration not marked `contract` is additive (expand/contract,
 * src/fhir/store/postgres/schema.ts). Checked twice: on the SQL text of each migration, and on a real PostgreSQL
 * schema, where every column that existed at any earlier migration level is still there, with its type, after the
 * newest migrations ran, and every column added later is nullable or has a default (the earlier code's inserts
 * name only the columns it knows).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { PG_MIGRATIONS } from '../../src/fhir/store/postgres/schema.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';

/** Statements an earlier release's code can break on: removals, renames, retyping, new constraints. */
const DESTRUCTIVE: readonly { what: string; pattern: RegExp }[] = [
  { what: 'drops a table, column or other object', pattern: /\bDROP\s+(?!INDEX\b|DEFAULT\b)\w+/i },
  { what: 'renames', pattern: /\bRENAME\b/i },
  { what: 'changes a column type', pattern: /\bALTER\s+COLUMN\b[^;]*\bTYPE\b/i },
  { what: 'makes a column NOT NULL', pattern: /\bSET\s+NOT\s+NULL\b/i },
  {
    what: 'adds a NOT NULL column without a default',
    pattern: /\bADD\s+COLUMN\b(?:(?!\bDEFAULT\b)[^;,])*\bNOT\s+NULL\b(?:(?!\bDEFAULT\b)[^;,])*(?:[;,]|$)/i,
  },
  {
    what: 'adds a constraint to an existing table',
    pattern: /\bADD\s+(CONSTRAINT|PRIMARY\s+KEY|UNIQUE|CHECK|FOREIGN\s+KEY)\b/i,
  },
  { what: 'removes rows', pattern: /\b(TRUNCATE|DELETE\s+FROM)\b/i },
];

function withoutComments(sql: string): string {
  return sql.replace(/--[^\n]*/g, '');
}

function destructiveParts(sql: string): string[] {
  const text = withoutComments(sql);
  return DESTRUCTIVE.filter(({ pattern }) => pattern.test(text)).map(({ what }) => what);
}

describe('PostgreSQL migrations are expand-only (rolling upgrades)', () => {
  it('recognises what an earlier release cannot work with (the check is not vacuous)', () => {
    expect(destructiveParts('ALTER TABLE s.anchor DROP COLUMN leaf_version;')).toContain(
      'drops a table, column or other object',
    );
    expect(destructiveParts('DROP TABLE s.access_key;')).toContain('drops a table, column or other object');
    expect(destructiveParts('ALTER TABLE s.anchor RENAME COLUMN a TO b;')).toContain('renames');
    expect(destructiveParts('ALTER TABLE s.anchor ALTER COLUMN a TYPE bigint;')).toContain(
      'changes a column type',
    );
    expect(destructiveParts('ALTER TABLE s.anchor ALTER COLUMN a SET NOT NULL;')).toContain(
      'makes a column NOT NULL',
    );
    expect(destructiveParts('ALTER TABLE s.anchor ADD COLUMN b integer NOT NULL;')).toContain(
      'adds a NOT NULL column without a default',
    );
    expect(destructiveParts('ALTER TABLE s.anchor ADD CONSTRAINT c UNIQUE (b);')).toContain(
      'adds a constraint to an existing table',
    );
    // Additive statements pass.
    expect(destructiveParts('ALTER TABLE s.anchor ADD COLUMN b integer NOT NULL DEFAULT 1;')).toEqual([]);
    expect(destructiveParts('ALTER TABLE s.anchor ADD COLUMN b integer;')).toEqual([]);
    expect(destructiveParts("CREATE TABLE s.t (a text NOT NULL, CHECK (a <> '')); DROP INDEX s.i;")).toEqual(
      [],
    );
  });

  it('has no migration that removes, renames or tightens unless marked contract', () => {
    for (const migration of PG_MIGRATIONS) {
      if (migration.contract !== undefined) {
        expect(migration.contract.trim(), `migration ${migration.version} says what it removes`).not.toBe('');
        continue;
      }
      expect(destructiveParts(migration.sql('"s"')), `migration ${migration.version}`).toEqual([]);
    }
  });

  it('numbers migrations strictly increasing', () => {
    const versions = PG_MIGRATIONS.map((m) => m.version);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    expect(new Set(versions).size).toBe(versions.length);
  });
});

interface ColumnRow {
  table_name: string;
  column_name: string;
  data_type: string;
  is_nullable: 'YES' | 'NO';
  column_default: string | null;
}

const skip = postgresSkipReason('PostgreSQL migration compatibility');
describe.skipIf(skip !== undefined)('PostgreSQL schema after the newest migrations (real server)', () => {
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
  const schemas: string[] = [];
  afterAll(async () => {
    for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  });

  async function columns(schema: string): Promise<Map<string, ColumnRow>> {
    const { rows } = await pool.query<ColumnRow>(
      `SELECT table_name, column_name, data_type, is_nullable, column_default
       FROM information_schema.columns WHERE table_schema = $1`,
      [schema],
    );
    return new Map(rows.map((row) => [`${row.table_name}.${row.column_name}`, row]));
  }

  it('keeps every column of every earlier level, with its type; later columns are nullable or defaulted', async () => {
    for (let level = 1; level < PG_MIGRATIONS.length; level++) {
      const schema = `hie_migrate_${randomBytes(4).toString('hex')}`;
      schemas.push(schema);
      const S = `"${schema}"`;
      await pool.query(`CREATE SCHEMA ${S}`);
      for (const migration of PG_MIGRATIONS.slice(0, level)) await pool.query(migration.sql(S));
      const before = await columns(schema);
      for (const migration of PG_MIGRATIONS.slice(level)) await pool.query(migration.sql(S));
      const after = await columns(schema);
      const known = PG_MIGRATIONS[level - 1]!.version;
      // A later contract step may remove or tighten (its release requires the older replicas stopped first).
      const contracted = PG_MIGRATIONS.slice(level).some((m) => m.contract !== undefined);
      for (const [name, column] of before) {
        if (contracted) continue;
        expect(after.get(name), `${name} (migration level ${known})`).toBeDefined();
        expect(after.get(name)!.data_type, `${name} type`).toBe(column.data_type);
        if (column.is_nullable === 'YES')
          expect(after.get(name)!.is_nullable, `${name} nullable`).toBe('YES');
      }
      const tablesBefore = new Set([...before.values()].map((c) => c.table_name));
      for (const [name, column] of after) {
        if (contracted || before.has(name) || !tablesBefore.has(column.table_name)) continue;
        // A column added to a table the earlier code writes: its inserts do not name it.
        const insertable = column.is_nullable === 'YES' || column.column_default !== null;
        expect(insertable, `${name}, added after migration ${known}`).toBe(true);
      }
      await pool.query(`DROP SCHEMA ${S} CASCADE`);
    }
  });
});
