/**
 * `hie-ledger migrate --database-url URL --from-data-dir DIR`: moves what a single-node deployment kept in its data
 * directory's SQLite files into the tables the replicas share (docs/replicas.md, "Moving a deployment to
 * replicas"): participants and pseudonyms (identity/participants.sqlite), network patient ids, the grant index and
 * the home MSP (identity/network-ids.sqlite), patient links with their history, redeemed link tokens, disclosures
 * under links, wrong-link reports and the locator (exchange/patient-links.sqlite), and the bulk jobs' records
 * (bulk/jobs.sqlite, their files copied to --bulk-dir when it is another folder).
 *
 * All in one transaction, under the data directory's lock (the single node must be stopped). A row already in the
 * database as it is in the file is left alone, so a second run changes nothing; a row that differs (same key, other
 * values; or another key holding the same unique value: a pseudonym, an npid) is a conflict: nothing is copied and
 * each conflict is named (table, key and the columns that differ, never their values). Rows numbered by a sequence
 * only (ended links, disclosures) are known by their values instead: a second node's, numbered alike, are copied
 * under new numbers (its wrong-link reports follow), so two nodes merge. Prints the counts per table.
 */
import { cpSync, existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import type pg from 'pg';
import { bulkDirId } from '../bulk/postgres-job-store.js';

/** One table copied: where from, where to, its key and its columns (same names on both sides). */
interface TableCopy {
  /** What the operator reads in the counts. */
  label: string;
  file: string;
  from: string;
  to: string;
  /** Its key columns (one but for the locator's). */
  key: readonly string[];
  columns: readonly string[];
  /** `key` is a bigserial copied as it is: the sequence is moved past the copied values. */
  serial?: boolean;
  /**
   * `key` is a mere sequence number (serial), the row is known by its other columns: another node's rows numbered
   * alike are copied under new numbers (renumbered), its rows already there (same values, any number) are left.
   * `by` narrows the look-up of rows already there (a column the file's rows give).
   */
  renumber?: { by: string };
  /** A column holding another table's renumbered key: it follows the renumbering. */
  follows?: { column: string; table: string };
  /** Columns the copy sets that the file has not (with their values). */
  extra?: Record<string, string | number | null>;
}

export interface CopyCount {
  label: string;
  /** Rows in the file. */
  read: number;
  copied: number;
  /** Rows already in the database as in the file. */
  unchanged: number;
  /** Rows copied under a new number (another node's rows held theirs). */
  renumbered?: number;
}

export class CopyConflictError extends Error {
  constructor(readonly conflicts: string[]) {
    super(
      `${conflicts.length} row(s) of the data directory conflict with rows already in the database; nothing was copied:\n` +
        conflicts.map((c) => `  ${c}`).join('\n'),
    );
  }
}

const BATCH = 1000;
/** Conflicts named at most (the rest counted). */
const NAMED_CONFLICTS = 20;

type Row = Record<string, string | number | null>;

function tables(dataDir: string, filesAt: string): TableCopy[] {
  const participants = join(dataDir, 'identity', 'participants.sqlite');
  const networkIds = join(dataDir, 'identity', 'network-ids.sqlite');
  return [
    {
      label: 'participants',
      file: participants,
      from: 'participants',
      to: 'participant',
      key: ['client_id'],
      columns: [
        'client_id',
        'pseudonym',
        'role',
        'resource',
        'organization',
        'status',
        'serial',
        'certificate',
        'created_at',
        'revoked_at',
      ],
    },
    {
      label: 'pseudonyms',
      file: participants,
      from: 'pseudonyms',
      to: 'ref_pseudonym',
      key: ['reference'],
      columns: ['reference', 'pseudonym', 'created_at'],
    },
    {
      label: 'network patient ids',
      file: networkIds,
      from: 'network_patients',
      to: 'network_patient',
      key: ['reference'],
      columns: ['reference', 'npid'],
    },
    {
      label: 'grant index',
      file: networkIds,
      from: 'grant_index',
      to: 'grant_link',
      key: ['grant_id'],
      columns: ['grant_id', 'patient_reference', 'patient', 'grantee', 'consent'],
    },
    {
      label: 'network meta (home MSP)',
      file: networkIds,
      from: 'meta',
      to: 'network_meta',
      key: ['name'],
      columns: ['name', 'value'],
    },
    ...linkTables(join(dataDir, 'exchange', 'patient-links.sqlite')),
    {
      label: 'bulk jobs',
      file: join(dataDir, 'bulk', 'jobs.sqlite'),
      from: 'bulk_job',
      to: 'bulk_job',
      key: ['id'],
      columns: [
        'id',
        'kind',
        'owner',
        'status',
        'request',
        'state',
        'error',
        'created_at',
        'completed_at',
        'expires_at',
      ],
      extra: { files_at: filesAt },
    },
  ];
}

/** exchange/patient-links.sqlite (src/exchange/patient-links.ts) -> the link tables of migration 15. */
function linkTables(file: string): TableCopy[] {
  const link = ['local_patient', 'npid', 'home_msp', 'linked_at'];
  return [
    {
      label: 'patient links',
      file,
      from: 'patient_links',
      to: 'patient_link',
      key: ['local_patient'],
      columns: link,
    },
    {
      label: 'ended patient links',
      file,
      from: 'link_history',
      to: 'patient_link_history',
      key: ['seq'],
      columns: ['seq', ...link, 'ended_at', 'reason'],
      serial: true,
      renumber: { by: 'local_patient' },
    },
    {
      label: 'redeemed link tokens',
      file,
      from: 'spent_link_tokens',
      to: 'spent_link_token',
      key: ['token'],
      columns: ['token', 'expires_at'],
    },
    {
      label: 'disclosures under links',
      file,
      from: 'link_disclosures',
      to: 'link_disclosure',
      key: ['seq'],
      columns: [
        'seq',
        'local_patient',
        'npid',
        'at',
        'accessor_msp',
        'accessor',
        'purpose',
        'records',
        'types',
        'audit_event',
      ],
      serial: true,
      renumber: { by: 'local_patient' },
    },
    {
      label: 'wrong-link reports',
      file,
      from: 'wrong_link_reports',
      to: 'wrong_link_report',
      key: ['history_seq'],
      columns: ['history_seq', 'owner_npid', 'reported_at'],
      follows: { column: 'history_seq', table: 'patient_link_history' },
    },
    {
      label: 'link locator',
      file,
      from: 'locator',
      to: 'link_locator',
      key: ['npid', 'custodian_msp'],
      columns: ['npid', 'custodian_msp', 'since'],
    },
  ];
}

/** The rows of a SQLite table, read-only; none when the file or the table is missing (nothing kept there). */
function readRows(copy: TableCopy): Row[] {
  if (!existsSync(copy.file)) return [];
  const db = new Database(copy.file, { readonly: true, fileMustExist: true });
  try {
    const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(copy.from);
    if (!exists) return [];
    return db
      .prepare(`SELECT ${copy.columns.join(', ')} FROM ${copy.from} ORDER BY ${copy.key.join(', ')}`)
      .all() as Row[];
  } finally {
    db.close();
  }
}

/** Text as PostgreSQL returns it (bigint as a string), for comparing a file's row with the database's. */
function same(a: unknown, b: unknown): boolean {
  if (a === null || a === undefined) return b === null || b === undefined;
  return b !== null && b !== undefined && String(a) === String(b);
}

/** The value as text (the file's integers, the database's bigints), null as null. */
function text(value: string | number | null | undefined): string | null {
  return value === null || value === undefined ? null : String(value);
}

/**
 * The rows of a table whose key is a mere sequence number, numbered for the database: a row already there with the
 * same other values (at any number) is left (`unchanged`, its number noted in `numbers`), a new row keeps its number
 * when it is free, else gets the next of the table's sequence (noted in `numbers` too: rows naming it follow).
 */
async function renumberRows(
  client: pg.PoolClient,
  S: string,
  copy: TableCopy & { renumber: { by: string } },
  rows: Row[],
  numbers: Map<string, string>,
): Promise<{ rows: Row[]; unchanged: number; renumbered: number }> {
  const [key] = copy.key as [string];
  const values = copy.columns.filter((column) => column !== key);
  const valuesOf = (row: Row) => JSON.stringify(values.map((column) => text(row[column])));
  const table = `${S}.${copy.to}`;
  // New numbers come after both the database's and the file's: a number kept from the file is never handed out.
  const highest = Math.max(0, ...rows.map((row) => Number(row[key])));
  await client.query(
    `SELECT setval(pg_get_serial_sequence($1, $2), greatest((SELECT max(${key}) FROM ${table}), $3::bigint, 1))`,
    [table, key, highest],
  );
  const out: Row[] = [];
  let unchanged = 0;
  let renumbered = 0;
  for (let start = 0; start < rows.length; start += BATCH) {
    const batch = rows.slice(start, start + BATCH);
    const { rows: there } = await client.query<Row>(
      `SELECT ${copy.columns.join(', ')} FROM ${table}
       WHERE ${copy.renumber.by} = ANY($1::text[]) OR ${key} = ANY($2::bigint[])`,
      [[...new Set(batch.map((row) => text(row[copy.renumber.by])))], batch.map((row) => text(row[key]))],
    );
    const taken = new Set(there.map((row) => text(row[key])));
    const numbersOf = new Map<string, string[]>();
    for (const row of there) {
      const list = numbersOf.get(valuesOf(row)) ?? [];
      list.push(text(row[key])!);
      numbersOf.set(valuesOf(row), list);
    }
    const fresh: Row[] = [];
    for (const row of batch) {
      const number = text(row[key])!;
      const same = numbersOf.get(valuesOf(row));
      if (same) {
        unchanged++;
        numbers.set(number, same.includes(number) ? number : same[0]!);
      } else if (!taken.has(number)) {
        numbers.set(number, number);
        out.push(row);
      } else fresh.push(row);
    }
    if (fresh.length === 0) continue;
    const { rows: next } = await client.query<{ n: string }>(
      `SELECT nextval(pg_get_serial_sequence($1, $2))::text AS n FROM generate_series(1, $3::int)`,
      [table, key, fresh.length],
    );
    fresh.forEach((row, i) => {
      numbers.set(text(row[key])!, next[i]!.n);
      out.push({ ...row, [key]: next[i]!.n });
    });
    renumbered += fresh.length;
  }
  return { rows: out, unchanged, renumbered };
}

/** Copies one table's rows in batches; returns its count and adds its conflicts. */
async function copyTable(
  client: pg.PoolClient,
  S: string,
  copy: TableCopy,
  conflicts: string[],
  renumbering: Map<string, Map<string, string>>,
): Promise<CopyCount> {
  let rows = readRows(copy);
  const read = rows.length;
  let unchanged = 0;
  let renumbered: number | undefined;
  if (copy.follows) {
    const numbers = renumbering.get(copy.follows.table);
    const column = copy.follows.column;
    if (numbers)
      rows = rows.map((row) => ({ ...row, [column]: numbers.get(text(row[column])!) ?? row[column] }));
  }
  if (copy.renumber) {
    const numbers = new Map<string, string>();
    renumbering.set(copy.to, numbers);
    const numbered = await renumberRows(client, S, { ...copy, renumber: copy.renumber }, rows, numbers);
    ({ rows, unchanged, renumbered } = numbered);
  }
  const extra = Object.entries(copy.extra ?? {});
  const columns = [...copy.columns, ...extra.map(([name]) => name)];
  const count: CopyCount = { label: copy.label, read, copied: 0, unchanged, renumbered };
  if (rows.length === 0) return count;
  // The file's values go as text arrays; the database's bigint columns (epoch ms) are cast back.
  const { rows: targetTypes } = await client.query<{ column_name: string; data_type: string }>(
    'SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2',
    [S.slice(1, -1).replace(/""/g, '"'), copy.to],
  );
  const typeOf = new Map(targetTypes.map((t) => [t.column_name, t.data_type]));
  const casts = columns.map((_column, i) => `$${i + 1}::text[]`).join(', ');
  const typed = (column: string) => {
    const type = typeOf.get(column);
    return type === 'bigint' || type === 'integer' ? type : 'text';
  };
  const select = columns.map((column) => `${column}::${typed(column)}`).join(', ');
  // The key (one column, or several: the locator's) as one text, on both sides.
  const keyOf = (row: Row) => copy.key.map((column) => String(row[column])).join(' ');
  const keySql = `concat_ws(' ', ${copy.key.join(', ')})`;
  const keyMatch = `(${copy.key.join(', ')}) IN (SELECT * FROM unnest(${copy.key
    .map((column, i) => `$${i + 1}::${typed(column)}[]`)
    .join(', ')}))`;
  for (let start = 0; start < rows.length; start += BATCH) {
    const batch = rows.slice(start, start + BATCH);
    const values = [
      ...copy.columns.map((column) => batch.map((row) => text(row[column]))),
      ...extra.map(([, value]) => batch.map(() => text(value))),
    ];
    // ON CONFLICT DO NOTHING with no target: a clash on any unique column (the key, a pseudonym, an npid) skips.
    const inserted = await client.query<{ key: string }>(
      `INSERT INTO ${S}.${copy.to} (${columns.join(', ')})
       SELECT ${select} FROM unnest(${casts}) AS source(${columns.join(', ')})
       ON CONFLICT DO NOTHING RETURNING ${keySql} AS key`,
      values,
    );
    count.copied += inserted.rowCount ?? 0;
    const done = new Set(inserted.rows.map((row) => row.key));
    const skipped = batch.filter((row) => !done.has(keyOf(row)));
    if (skipped.length === 0) continue;
    const { rows: existing } = await client.query<Row>(
      `SELECT ${copy.columns.join(', ')} FROM ${S}.${copy.to} WHERE ${keyMatch}`,
      copy.key.map((column) => skipped.map((row) => text(row[column]))),
    );
    const byKey = new Map(existing.map((row) => [keyOf(row), row]));
    for (const row of skipped) {
      const there = byKey.get(keyOf(row));
      const name = `${copy.to} ${copy.key.join(',')}=${keyOf(row)}`;
      if (!there) {
        conflicts.push(`${name}: another row holds one of its unique values`);
        continue;
      }
      const differing = copy.columns.filter((column) => !same(row[column], there[column]));
      if (differing.length === 0) count.unchanged++;
      else conflicts.push(`${name}: differs in ${differing.join(', ')}`);
    }
  }
  // Rows made later number on from the copied ones.
  if (copy.serial)
    await client.query(
      `SELECT setval(pg_get_serial_sequence($1, $2), (SELECT max(${copy.key[0]}) FROM ${S}.${copy.to}))`,
      [`${S}.${copy.to}`, copy.key[0]],
    );
  return count;
}

export interface DataDirCopyOptions {
  pool: pg.Pool;
  schema: string;
  dataDir: string;
  /** Where the replicas' bulk files are (--bulk-dir); absent: the data directory's own bulk folder. */
  bulkDir?: string;
}

/** Copies a data directory's shared state into the database; throws CopyConflictError (nothing copied). */
export async function copyDataDir(options: DataDirCopyOptions): Promise<CopyCount[]> {
  const S = `"${options.schema.replace(/"/g, '""')}"`;
  const sourceBulk = join(options.dataDir, 'bulk');
  const bulkDir = options.bulkDir ?? sourceBulk;
  const filesAt = bulkDirId(bulkDir);
  const client = await options.pool.connect();
  const counts: CopyCount[] = [];
  const conflicts: string[] = [];
  // The new numbers of renumbered rows, per table: file's number -> database's.
  const renumbering = new Map<string, Map<string, string>>();
  try {
    await client.query('BEGIN');
    for (const copy of tables(options.dataDir, filesAt))
      counts.push(await copyTable(client, S, copy, conflicts, renumbering));
    if (conflicts.length > 0) {
      const named = conflicts.slice(0, NAMED_CONFLICTS);
      if (conflicts.length > named.length) named.push(`... and ${conflicts.length - named.length} more`);
      throw new CopyConflictError(named);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
  // The jobs' files, where the replicas look for them (existing files are left as they are).
  if (resolve(bulkDir) !== resolve(sourceBulk) && existsSync(sourceBulk))
    for (const kind of readdirSync(sourceBulk))
      if (['export', 'import', 'reindex'].includes(kind))
        cpSync(join(sourceBulk, kind), join(bulkDir, kind), {
          recursive: true,
          force: false,
          errorOnExist: false,
        });
  return counts;
}
