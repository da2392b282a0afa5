/**
 * What search_index's secondary indexes cost a write (issue 17): CPU time to insert the index rows of a loaded store
 * (in seq order, 2,000 rows a transaction, as an import's batches do) into an empty copy of the table, in memory,
 * under each set of indexes: migration 11's six, migration 13's, and none (the table alone). Interleaved rounds
 * (the order reversed every other round), median per set: CPU time, so other work on the machine inflates it less.
 *
 * Run: npx tsx bench/search-index-cost.ts STORE_FILE [rounds=5] (a loaded store of schema 11 or later, read only).
 */
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../src/fhir/store/sqlite/schema.js';

const file = process.argv[2];
if (!file) throw new Error('usage: search-index-cost.ts STORE_FILE [rounds]');
const ROUNDS = Number(process.argv[3] ?? 5);

/** The CREATE INDEX statements on search_index of a migration's SQL, made on table `t`. */
function indexesOf(version: number): string[] {
  const sql = MIGRATIONS.find((m) => m.version === version)!.sql;
  return [...sql.matchAll(/CREATE INDEX (\w+) ON search_index ([^;]+);/g)].map(
    ([, name, rest]) => `CREATE INDEX ${name} ON t ${rest!.replace(/\s+/g, ' ')}`,
  );
}
const migration11 = indexesOf(11);
const sets: [string, string[]][] = [
  ['migration 11 (six)', migration11],
  [
    'migration 13',
    [...migration11.filter((s) => /search_index_(value|reference) /.test(s)), ...indexesOf(13)],
  ],
  ['none', []],
];

const source = new Database(file, { readonly: true });
const rows = source
  .prepare(
    'SELECT seq, ord, param_key, type, system, value, low, high, reference FROM search_index ORDER BY seq, ord',
  )
  .raw()
  .all() as unknown[][];
source.close();

const cpuMs: Record<string, number[]> = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, indexes] of round % 2 ? [...sets].reverse() : sets) {
    const db = new Database(':memory:');
    db.exec(
      'CREATE TABLE t (seq INTEGER NOT NULL, ord INTEGER NOT NULL, param_key INTEGER NOT NULL, type TEXT NOT NULL, ' +
        'system TEXT, value TEXT, low REAL, high REAL, reference TEXT, PRIMARY KEY (seq, ord)) WITHOUT ROWID',
    );
    for (const index of indexes) db.exec(index);
    const insert = db.prepare('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
    const insertBatch = db.transaction((batch: unknown[][]) => {
      for (const row of batch) insert.run(...row);
    });
    const start = process.cpuUsage();
    for (let i = 0; i < rows.length; i += 2000) insertBatch(rows.slice(i, i + 2000));
    const used = process.cpuUsage(start);
    (cpuMs[name] ??= []).push((used.user + used.system) / 1000);
    db.close();
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`${rows.length} index rows of ${file}, ${ROUNDS} interleaved rounds, CPU ms to insert them:`);
for (const [name, indexes] of sets)
  console.log(
    `  ${name.padEnd(20)} ${indexes.length} indexes  median ${median(cpuMs[name]!).toFixed(0)}  rounds ${cpuMs[name]!.map((x) => x.toFixed(0)).join(' ')}`,
  );
