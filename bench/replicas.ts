/**
 * `npm run bench:replicas`: the service on PostgreSQL with one replica and with two replicas on one database
 * (issue 19), beside the SQLite single process, in one run.
 *
 * Starts, as child processes: a ledger host (`serve --serve-ledger`, the embedded ledger served over the Fabric
 * Gateway protocol, started as test/store/postgres-replicas.test.ts starts it, by test/support/served-ledger.ts: an
 * embedded ledger is one process's, so replicas share a served one), one replica on schema `bench_one`, two replicas on schema `bench_two` (each replica its own
 * data directory, copies of one `ledger connect`ed directory: the mounted secret store), and a SQLite service
 * (embedded store and ledger). Anchoring is on everywhere (the default); with two replicas exactly one drains (the
 * drain lease, docs/replicas.md). The schemas are dropped and made afresh by the replicas' migrations.
 *
 * Load: autocannon, BENCH_CONNECTIONS in all (default 10); with two replicas they are split evenly between the two
 * (a round-robin balancer's share) and the two rates summed. Measured: validated creates/s (POST of a Synthea
 * Observation) and reads/s of a search (`Observation?code=<its code>&_count=10`), in BENCH_ROUNDS interleaved
 * slices (default 2) of BENCH_DURATION/BENCH_ROUNDS seconds each (BENCH_DURATION default 10), so a change in the
 * machine's load hits every setup alike. Then the ratio two/one, and each PostgreSQL setup's anchor backlog right
 * after its creates (pending anchors + journalled batches not yet committed) and again after a settle of
 * BENCH_DURATION seconds: a backlog that does not shrink shows anchoring below the create rate.
 *
 * Then the import (issue 19): those setups stopped, in each of BENCH_ROUNDS rounds the three setups are started
 * afresh (schemas `bench_import_one_R`, `bench_import_two_R`, new data directories) and BENCH_IMPORT_BUNDLES Synthea
 * bundles (default 10; 0 skips it) are imported through each in turn (order rotated per round) by
 * `hie-ledger import FILES --url BASE` (the CLI as an operator runs it against a service, its batches of PUTs
 * validated, indexed and anchored by the service). With two replicas the files are split between the replicas
 * (alternate files), two import jobs at once, one per replica, as two jobs behind a balancer would run; their
 * resources are summed over the wall time from the first start to the last exit. A control row: one replica taking
 * the same two jobs (an import job is one client waiting on its batches: two jobs are twice the concurrency). Resources/s (stored + unchanged;
 * rejections counted apart; median of the rounds), the anchor backlog right after and after a settle of
 * BENCH_DURATION seconds.
 *
 * BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:55440/h_pgbench19); BENCH_FROM=tsx runs the service
 * from the sources instead of dist/. Any error (a non-2xx answer included) exits non-zero.
 */
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import pg from 'pg';
import { spawnCli, waitForOutput, type CliProcess } from '../test/support/cli-process.js';
import { connectToLedger, replicaArgs, startLedgerHost } from '../test/support/served-ledger.js';
import { printTable, ROOT, serviceEntry, startService, stopChild } from './support.js';

const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const DATABASE_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:55440/h_pgbench19';
const SCHEMAS = { one: 'bench_one', two: 'bench_two' } as const;
const IMPORT_BUNDLES = Number(process.env.BENCH_IMPORT_BUNDLES ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
/** The import's schemas, fresh ones each round. */
const importSchemas = (round: number) => ({
  one: `bench_import_one_${round}`,
  two: `bench_import_two_${round}`,
  jobs: `bench_import_jobs_${round}`,
});
const ALL_SCHEMAS = [
  ...Object.values(SCHEMAS),
  ...Array.from({ length: ROUNDS }, (_, r) => Object.values(importSchemas(r))).flat(),
];
/** Search reads need stored matches: seeded per setup before measuring. */
const SEED = 200;

const children: ChildProcess[] = [];

/** `hie-ledger ARGS` from this checkout as bench:rest runs it (dist/, or tsx: serviceEntry), stopped at the end. */
function runCli(args: string[]): CliProcess {
  // Output kept up to 1 MB (the start-up lines and any error); the rest is read and dropped.
  const started = spawnCli(serviceEntry().args, args, { cwd: ROOT, maxOutput: 1_000_000 });
  children.push(started.child);
  return started;
}

/** How long a process may take to print what is waited for (a loaded machine, the service through tsx). */
const START_TIMEOUT_MS = 180_000;

const SYNTHEA = join(ROOT, '..', 'shared', 'data', 'synthea-bundles');

/** The Synthea bundle files, by name. */
function syntheaFiles(): string[] {
  return readdirSync(SYNTHEA)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => join(SYNTHEA, f));
}

/** The first Observation of the first Synthea bundle, without its id (as bench:rest creates). */
function syntheaObservation(): Record<string, unknown> {
  const file = syntheaFiles()[0]!;
  const bundle = JSON.parse(readFileSync(file, 'utf8')) as {
    entry: { resource: Record<string, unknown> }[];
  };
  const observation = bundle.entry.map((e) => e.resource).find((r) => r.resourceType === 'Observation');
  if (!observation) throw new Error(`no Observation in ${file}`);
  const { id: _id, ...rest } = observation;
  return rest;
}

/** One setup under load: its replicas' FHIR bases and, on PostgreSQL, its schema. */
interface Setup {
  name: string;
  bases: string[];
  schema?: string;
}

/** Stops a child: SIGTERM, then SIGKILL after 30 s (a replica that hangs on stopping must not hang the run). */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await stopChild(child);
  clearTimeout(killer);
}

interface ImportResult {
  /** Stored + unchanged, over all the setup's import jobs. */
  resources: number;
  rejected: number;
  /** First start to last exit, the CLI's start-up included. */
  seconds: number;
  /** The longest of the jobs' own import time (their summary's "This run: ... in X s"): start-up aside. */
  runSeconds: number;
}

/**
 * `hie-ledger import FILES --url BASE` against the setup: with several replicas the files split between them
 * (alternate files), one import job per replica at once; exit 1 (some resources rejected) is counted, not thrown.
 */
async function importThrough(setup: Setup, files: string[], journals: string): Promise<ImportResult> {
  const started = performance.now();
  const jobs = setup.bases.map((base, r) =>
    runCli([
      'import',
      ...files.filter((_, i) => i % setup.bases.length === r),
      '--url',
      base,
      '--no-progress',
      '--journal',
      join(journals, `${setup.schema ?? 'sqlite'}-${r}.sqlite`),
    ]),
  );
  const codes = await Promise.all(jobs.map((job) => job.exited));
  const seconds = (performance.now() - started) / 1000;
  let resources = 0;
  let rejected = 0;
  let runSeconds = 0;
  jobs.forEach((job, r) => {
    const total = /^total +(\d+) +(\d+) +(\d+)/m.exec(job.output());
    if ((codes[r] !== 0 && codes[r] !== 1) || !total)
      throw new Error(`${setup.name}: hie-ledger import exited with ${codes[r]}:\n${job.output()}`);
    resources += Number(total[1]) + Number(total[2]);
    rejected += Number(total[3]);
    const run = /^This run: \d+ resources in ([\d.]+) s/m.exec(job.output());
    runSeconds = Math.max(runSeconds, Number(run?.[1] ?? seconds));
  });
  return { resources, rejected, seconds, runSeconds };
}

interface Slice {
  rate: number;
  failed: number;
}

/** CONNECTIONS split evenly over the setup's replicas, their rates summed; any failed request fails the run. */
async function load(
  setup: Setup,
  seconds: number,
  options: (base: string) => Partial<autocannon.Options>,
): Promise<Slice> {
  const share = Math.max(1, Math.floor(CONNECTIONS / setup.bases.length));
  const results = await Promise.all(
    setup.bases.map((base) =>
      autocannon({ url: base, connections: share, duration: seconds, ...options(base) }),
    ),
  );
  const failed = results.reduce((sum, r) => sum + r.non2xx + r.errors + r.timeouts, 0);
  if (failed > 0) throw new Error(`${setup.name}: ${failed} requests failed`);
  return { rate: results.reduce((sum, r) => sum + r.requests.average, 0), failed };
}

async function backlog(pool: pg.Pool, schema: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    `SELECT (SELECT count(*) FROM "${schema}".anchor WHERE status = 'pending')
          + (SELECT count(*) FROM "${schema}".anchor_batch WHERE state = 'prepared') AS n`,
  );
  return Number(rows[0]!.n);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const withSchema = (schema: string) =>
  `${DATABASE_URL}${DATABASE_URL.includes('?') ? '&' : '?'}schema=${schema}`;

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'hie-bench-replicas-'));
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
  try {
    console.log(
      `bench:replicas  ${cpus().length} cores, load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}, ${CONNECTIONS} connections in all, ${ROUNDS} slices of ` +
        `${Math.max(1, Math.round(DURATION / ROUNDS))}s per setup and operation`,
    );
    console.log(
      `service: ${serviceEntry().built ? 'dist/src/cli.js (built)' : 'src/cli.ts through tsx'}, ` +
        `PostgreSQL ${DATABASE_URL.replace(/\/\/[^@/]*@/, '//')}, anchoring on`,
    );

    // Phase 1: fresh schemas.
    for (const schema of ALL_SCHEMAS) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);

    // Phase 2: the ledger host and the organisation's identity, copied to every replica's data directory.
    // Log level info (the default): the address is an info line.
    const serve = ['serve', '--port', '0', '--auth', 'dev-open', '--audit-cron', 'off'];
    const ledger = await startLedgerHost(runCli, root, serve, START_TIMEOUT_MS);
    const identity = join(root, 'identity');
    const fabricConfig = await connectToLedger(runCli, ledger, identity);

    // Phase 3: the replicas (one on bench_one, two on bench_two; started one after the other, as a rollout would),
    // and the SQLite service. `prefix` names the data directories (the import's are fresh ones); `processes` gets
    // the setups' processes (stopped before the import).
    const replica = async (name: string, schema: string, processes: ChildProcess[]): Promise<string> => {
      const dataDir = join(root, name);
      cpSync(identity, dataDir, { recursive: true });
      const started = runCli(replicaArgs(serve, dataDir, fabricConfig, withSchema(schema)));
      processes.push(started.child);
      return (await waitForOutput(started, /"fhirBase":"([^"]+)"/, START_TIMEOUT_MS))[1]!;
    };
    const startSetups = async (
      prefix: string,
      schemas: { one: string; two: string },
      processes: ChildProcess[],
    ): Promise<[Setup, Setup, Setup]> => {
      const one: Setup = {
        name: 'PostgreSQL, one replica',
        bases: [await replica(`${prefix}one`, schemas.one, processes)],
        schema: schemas.one,
      };
      const two: Setup = {
        name: 'PostgreSQL, two replicas',
        bases: [
          await replica(`${prefix}two-a`, schemas.two, processes),
          await replica(`${prefix}two-b`, schemas.two, processes),
        ],
        schema: schemas.two,
      };
      const sqliteService = await startService(join(root, `${prefix}sqlite`), ['--audit-cron', 'off'], {
        HIE_AUTH: 'dev-open',
      });
      children.push(sqliteService.child);
      processes.push(sqliteService.child);
      const sqlite: Setup = {
        name: 'SQLite, one process (embedded ledger)',
        bases: [`${sqliteService.base}/fhir`],
      };
      return [sqlite, one, two];
    };
    const measured: ChildProcess[] = [];
    const setups = await startSetups('', SCHEMAS, measured);
    const [, one, two] = setups as [Setup, Setup, Setup];

    // Phase 4: seed the searched code in every setup (through each replica in turn).
    const observation = syntheaObservation();
    const body = JSON.stringify(observation);
    const coding = (observation.code as { coding: { system: string; code: string }[] }).coding[0]!;
    const search = `Observation?code=${encodeURIComponent(`${coding.system}|${coding.code}`)}&_count=10`;
    const headers = { 'content-type': 'application/fhir+json', prefer: 'return=minimal' };
    for (const setup of setups) {
      for (let i = 0; i < SEED; i++) {
        const res = await fetch(`${setup.bases[i % setup.bases.length]}/Observation`, {
          method: 'POST',
          headers,
          body,
        });
        if (res.status !== 201)
          throw new Error(`${setup.name}: seeding failed: ${res.status} ${await res.text()}`);
      }
      const check = await fetch(`${setup.bases[0]}/${search}`);
      const bundle = (await check.json()) as { entry?: unknown[] };
      if (check.status !== 200 || (bundle.entry?.length ?? 0) === 0)
        throw new Error(`${setup.name}: the search found nothing (${check.status})`);
    }

    // Phase 5: interleaved slices, creates then searches; the backlog right after the last create slice.
    const seconds = Math.max(1, Math.round(DURATION / ROUNDS));
    const creates = setups.map((): number[] => []);
    const searches = setups.map((): number[] => []);
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < setups.length; k++) {
        const i = (k + round) % setups.length;
        const slice = await load(setups[i]!, seconds, (base) => ({
          url: `${base}/Observation`,
          method: 'POST',
          headers,
          body,
        }));
        creates[i]!.push(slice.rate);
      }
    }
    const backlogAfter = await Promise.all([one, two].map((s) => backlog(pool, s.schema!)));
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < setups.length; k++) {
        const i = (k + round) % setups.length;
        const slice = await load(setups[i]!, seconds, (base) => ({ url: `${base}/${search}` }));
        searches[i]!.push(slice.rate);
      }
    }
    // The searches took ROUNDS x 3 slices; then a settle of DURATION seconds more without load.
    await new Promise((resolve) => setTimeout(resolve, DURATION * 1000));
    const backlogSettled = await Promise.all([one, two].map((s) => backlog(pool, s.schema!)));

    // Phase 5b: the import, in BENCH_ROUNDS rounds (the measured setups stopped first: idle, but processes to
    // schedule). Each round starts the three setups afresh (new schemas and data directories), imports into each
    // in turn (the order rotated per round, as the slices above) and stops them; the backlog right after each
    // import and after a settle. Each figure is the median of the rounds.
    const importSetups = [...setups.map((s) => s.name), 'PostgreSQL, one replica, two import jobs'];
    const imports = importSetups.map((): ImportRound[] => []);
    if (IMPORT_BUNDLES > 0) {
      for (const child of measured) await stop(child);
      const files = syntheaFiles().slice(0, IMPORT_BUNDLES);
      for (let round = 0; round < ROUNDS; round++) {
        const processes: ChildProcess[] = [];
        const schemas = importSchemas(round);
        const started = await startSetups(`import${round}-`, schemas, processes);
        // The control: one replica taking two import jobs at once (each job is one client waiting on its batches, so
        // two jobs are twice the concurrency, whatever the replicas): two/one replica is read against it.
        const oneReplicaTwoJobs = await replica(`import${round}-jobs`, schemas.jobs, processes);
        const fresh: Setup[] = [
          ...started,
          {
            name: 'PostgreSQL, one replica, two import jobs',
            bases: [oneReplicaTwoJobs, oneReplicaTwoJobs],
            schema: schemas.jobs,
          },
        ];
        for (let k = 0; k < fresh.length; k++) {
          const i = (k + round) % fresh.length;
          const setup = fresh[i]!;
          const result = await importThrough(setup, files, join(root, `import${round}-journals`));
          const after = setup.schema ? await backlog(pool, setup.schema) : -1;
          await new Promise((resolve) => setTimeout(resolve, DURATION * 1000));
          const settled = setup.schema ? await backlog(pool, setup.schema) : -1;
          imports[i]!.push({ ...result, after, settled, load: loadavg()[0]! });
        }
        for (const child of processes) await stop(child);
      }
    }

    // Phase 6: the table.
    const rate = setups.map((_, i) => ({ create: median(creates[i]!), search: median(searches[i]!) }));
    const header = ['setup', 'creates/s', 'searches/s', 'backlog after creates', 'after settle'];
    const lines = setups.map((setup, i) => [
      setup.name,
      rate[i]!.create.toFixed(0),
      rate[i]!.search.toFixed(0),
      i === 0 ? '-' : String(backlogAfter[i - 1]),
      i === 0 ? '-' : String(backlogSettled[i - 1]),
    ]);
    lines.push([
      'ratio two / one replica',
      (rate[2]!.create / rate[1]!.create).toFixed(2),
      (rate[2]!.search / rate[1]!.search).toFixed(2),
      '',
      '',
    ]);
    lines.push([
      'ratio one replica / SQLite',
      (rate[1]!.create / rate[0]!.create).toFixed(2),
      (rate[1]!.search / rate[0]!.search).toFixed(2),
      '',
      '',
    ]);
    printTable(header, lines);
    console.log(
      `(backlog: pending anchors + journalled batches not yet committed, right after the creates and ` +
        `${DURATION}s after the searches; load average at the end ${loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')})`,
    );
    if (IMPORT_BUNDLES > 0) printImports(importSetups, imports);
  } finally {
    for (const child of children.reverse()) await stop(child);
    for (const schema of ALL_SCHEMAS) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
    rmSync(root, { recursive: true, force: true });
  }
}

interface ImportRound extends ImportResult {
  /** Anchor backlog right after the import and after the settle (-1: SQLite, not measured). */
  after: number;
  settled: number;
  /** 1-minute load average after it. */
  load: number;
}

/** The import table: one row per setup (medians of the rounds), the ratios as the first table's. */
function printImports(names: string[], imports: ImportRound[][]): void {
  const rate = imports.map((rounds) => median(rounds.map((r) => r.resources / r.seconds)));
  const runRate = imports.map((rounds) => median(rounds.map((r) => r.resources / r.runSeconds)));
  const list = (values: number[], digits = 0) =>
    values[0]! < 0 ? '-' : values.map((v) => v.toFixed(digits)).join(' / ');
  const header = [
    'import (hie-ledger import --url)',
    'resources/s',
    'without start-up',
    'resources',
    'rejected',
    'backlog after import',
    'after settle',
    'load',
  ];
  const lines = imports.map((rounds, i) => [
    names[i]!,
    rate[i]!.toFixed(1),
    runRate[i]!.toFixed(1),
    list(rounds.map((r) => r.resources)),
    list(rounds.map((r) => r.rejected)),
    list(rounds.map((r) => r.after)),
    list(rounds.map((r) => r.settled)),
    list(
      rounds.map((r) => r.load),
      1,
    ),
  ]);
  lines.push([
    'ratio two / one replica',
    (rate[2]! / rate[1]!).toFixed(2),
    (runRate[2]! / runRate[1]!).toFixed(2),
    ...Array<string>(5).fill(''),
  ]);
  lines.push([
    'ratio two jobs on one replica / one',
    (rate[3]! / rate[1]!).toFixed(2),
    (runRate[3]! / runRate[1]!).toFixed(2),
    ...Array<string>(5).fill(''),
  ]);
  lines.push([
    'ratio one replica / SQLite',
    (rate[1]! / rate[0]!).toFixed(2),
    (runRate[1]! / runRate[0]!).toFixed(2),
    ...Array<string>(5).fill(''),
  ]);
  console.log('');
  printTable(header, lines);
  console.log(
    `(${IMPORT_BUNDLES} Synthea bundles, ${ROUNDS} rounds, each into fresh schemas and data directories, the setups ` +
      `one after the other; two replicas: the files split between them, one import job per replica at once (two ` +
      `jobs on one replica: the same split, both jobs on it). ` +
      `resources/s: stored + unchanged over first start to last exit (CLI start-up included), median of the rounds; ` +
      `without start-up: over the longest job's own import time; per round (a / b): resources, rejected, backlog ` +
      `right after and ${DURATION}s later, 1-minute load average after each)`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
