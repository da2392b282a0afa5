/**
 * `npm run bench:disk`: bytes on disk per stored version of the embedded store, by table and index (issue 17: under
 * 3.5 KB). Imports the first BENCH_BUNDLES Synthea records (../shared/data/synthea-bundles, default 20) into a fresh
 * data directory with `hie-ledger import --consents inert` (what an operator runs), then reads SQLite's `dbstat`
 * (`SELECT name, sum(pgsize), sum(payload), sum(unused) FROM dbstat GROUP BY name`) of `resources.sqlite`.
 *
 * Prints, per table or index: bytes a version (pages), payload bytes a version (the rows' own bytes), unused bytes
 * a version (free space in its pages); then the total. BENCH_COMPARE=DIR adds the same columns for the
 * `resources.sqlite` of another data directory (e.g. one made by the code before a change, same records) and the
 * ratio of the totals. BENCH_FROM=tsx runs the CLI from the sources (default: dist/, built by the npm script).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ROOT, serviceEntry } from './support.js';

const BUNDLES = Number(process.env.BENCH_BUNDLES ?? 20);
const COMPARE = process.env.BENCH_COMPARE;

interface Usage {
  versions: number;
  /** Per table or index name: bytes of its pages, of its rows' payload, unused in its pages. */
  byName: Map<string, { bytes: number; payload: number; unused: number }>;
  total: number;
}

/** dbstat of a store file, summed by table or index. */
function usage(file: string): Usage {
  const db = new Database(file, { readonly: true });
  try {
    const versions = db.prepare('SELECT count(*) FROM resource_version').pluck().get() as number;
    const rows = db
      .prepare(
        'SELECT name, sum(pgsize) AS bytes, sum(payload) AS payload, sum(unused) AS unused FROM dbstat GROUP BY name',
      )
      .all() as { name: string; bytes: number; payload: number; unused: number }[];
    return {
      versions,
      byName: new Map(rows.map((r) => [r.name, r])),
      total: rows.reduce((sum, r) => sum + r.bytes, 0),
    };
  } finally {
    db.close();
  }
}

function importRecords(dataDir: string): void {
  const dir = join(ROOT, '..', 'shared', 'data', 'synthea-bundles');
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, BUNDLES)
    .map((f) => join(dir, f));
  const run = spawnSync(
    process.execPath,
    [
      ...serviceEntry().args,
      'import',
      '--data-dir',
      dataDir,
      '--no-progress',
      '--consents',
      'inert',
      ...files,
    ],
    { cwd: ROOT, encoding: 'utf8' },
  );
  // Exit code 1: some resources were rejected (reported); the rest is stored.
  if (run.status !== 0 && run.status !== 1)
    throw new Error(`hie-ledger import failed:\n${run.stdout}${run.stderr}`);
}

const perVersion = (bytes: number | undefined, versions: number) =>
  bytes === undefined ? '' : Math.round(bytes / versions).toLocaleString('en-US');

const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-disk-'));
try {
  importRecords(dataDir);
  const now = usage(join(dataDir, 'resources.sqlite'));
  const before = COMPARE ? usage(join(COMPARE, 'resources.sqlite')) : undefined;
  const names = [...new Set([...now.byName.keys(), ...(before?.byName.keys() ?? [])])].sort(
    (a, b) =>
      (now.byName.get(b)?.bytes ?? 0) - (now.byName.get(a)?.bytes ?? 0) ||
      (before?.byName.get(b)?.bytes ?? 0) - (before?.byName.get(a)?.bytes ?? 0),
  );
  console.log(
    `Disk per stored version, ${BUNDLES} Synthea records: ${now.versions} versions` +
      (before ? ` (compared: ${before.versions})` : '') +
      `; load ${loadavg()[0]!.toFixed(1)}`,
  );
  const header = ['table or index', 'bytes', 'payload', 'unused', ...(before ? ['compared', 'payload'] : [])];
  const table = names.map((name) => {
    const n = now.byName.get(name);
    const b = before?.byName.get(name);
    return [
      name,
      perVersion(n?.bytes, now.versions),
      perVersion(n?.payload, now.versions),
      perVersion(n?.unused, now.versions),
      ...(before ? [perVersion(b?.bytes, before.versions), perVersion(b?.payload, before.versions)] : []),
    ];
  });
  table.push([
    'total',
    perVersion(now.total, now.versions),
    '',
    '',
    ...(before ? [perVersion(before.total, before.versions), ''] : []),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (row: string[]) =>
    row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  console.log(line(header));
  for (const row of table) console.log(line(row));
  if (before)
    console.log(
      `ratio of totals: ${(now.total / now.versions / (before.total / before.versions)).toFixed(2)}`,
    );
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
