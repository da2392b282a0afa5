/**
 * `npm run bench:rest`: the FHIR REST facade under load, next to a bare fastify route as the ceiling.
 *
 * Starts two child processes on free ports: the service (`hie-ledger serve` on the embedded store and ledger, in a
 * temporary data directory, no authentication) and a bare fastify app with one "hello" route. Loads each from this
 * process with autocannon and prints requests/s and p50/p99 latency for: the bare route, read, create (validated,
 * a Synthea Observation) and update (PUT of a new version, over a pool of resources); read also from a second
 * service started with `--read-cache 0`, to show the store's read path without its cache.
 *
 * Targets on the 2-core development machine: read >= 40% of the bare route's throughput; create >= 2,000/s.
 * The bare route and read are measured in alternating slices (BENCH_ROUNDS, default 5), so a change in the
 * machine's load affects both alike. So is the write path (measureWritePath): creates with group commit and
 * anchoring on (the default), anchoring off, and the single-write path (`--group-commit off`) with anchoring on and
 * off, each its own service, in interleaved slices; medians of creates/s and of CPU per create, and the ratios
 * (targets: anchoring on within 10% of off; the write path at least 2x the single-write path).
 * Environment: BENCH_DURATION (seconds per scenario, default 10), BENCH_CONNECTIONS (default 10),
 * BENCH_FROM=tsx to run the service from the sources instead of dist/; BENCH_WRITE_ONLY=1 measures the write path
 * alone (its four variants, no bare route, reads or updates). BENCH_BASELINE=dir (a built checkout of the code
 * before a change: `git archive` it, link node_modules and chaincode/dist, build) adds its create path, with
 * anchoring on and off, to the interleaved write-path slices: before and after measured in one run. BENCH_BEFORE=dir
 * (another built checkout, e.g. main before a branch's change) adds its create path with anchoring on too, so one run
 * gives both the ratio to the baseline and the branch's own step. BENCH_CPU_PROF=dir profiles every service
 * (`--cpu-prof`) and prints, per write-path variant, its CPU per create by part of the request (bench/cpu-split.ts:
 * HTTP, body parsing, validation, index extraction, anchor hook, the store's deflate and SQLite, the response...),
 * from the samples inside its own load slices. BENCH_AUTH=1 adds a variant with authentication on (`--auth smart`,
 * a system participant's Bearer token): token check, access policy and the access audit on every create.
 * BENCH_STORE=1 measures the store's part of a create alone, in this process (measureStoreWrites): CPU time per write
 * through SqliteResourceStore.write in batches (as group commit makes them) for this checkout and the BENCH_BASELINE
 * / BENCH_BEFORE builds, with parts left out (index rows; the full-text rows), and the index extraction alone. It
 * counts CPU, not throughput, so a loaded machine blurs it far less than the HTTP rates.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import autocannon from 'autocannon';
import { openParticipantDirectory } from '../src/commands/participant.js';
import {
  freePort,
  printTable,
  ROOT,
  serviceEntry,
  startChild,
  startService,
  stopChild,
  tokenFrom,
  waitFor,
} from './support.js';
import { profileClockUs, readProfile, splitByPart } from './cpu-split.js';
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const POOL = 500;
/** Alternating slices of the bare route and read. */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);

/** A realistic resource: the first Observation of the first Synthea bundle, without its id. */
function syntheaObservation(): Record<string, unknown> {
  const dir = join(ROOT, '..', 'shared', 'data', 'synthea-bundles');
  const file = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()[0];
  const bundle = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
    entry: { resource: Record<string, unknown> }[];
  };
  const observation = bundle.entry.map((e) => e.resource).find((r) => r.resourceType === 'Observation');
  if (!observation) throw new Error(`no Observation in ${file}`);
  const { id: _id, ...rest } = observation;
  return rest;
}

interface Row {
  name: string;
  requestsPerSecond: number;
  p50: number;
  p99: number;
  ok: number;
  failed: number;
}

async function load(name: string, options: autocannon.Options): Promise<Row> {
  const result = await autocannon({ connections: CONNECTIONS, duration: DURATION, ...options });
  const failed = result.non2xx + result.errors + result.timeouts;
  return {
    name,
    requestsPerSecond: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    ok: result.requests.total - result.non2xx,
    failed,
  };
}

/** Several measurement slices of one scenario as one row: throughput over all, latencies as the median slice's. */
function merge(name: string, slices: Row[]): Row {
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  return {
    name,
    requestsPerSecond: slices.reduce((sum, r) => sum + r.requestsPerSecond, 0) / slices.length,
    p50: median(slices.map((r) => r.p50)),
    p99: median(slices.map((r) => r.p99)),
    ok: slices.reduce((sum, r) => sum + r.ok, 0),
    failed: slices.reduce((sum, r) => sum + r.failed, 0),
  };
}

function printScenarios(rows: Row[], ceiling: number): void {
  const header = ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'ok', 'failed', '% of bare'];
  const lines = rows.map((r) => [
    r.name,
    r.requestsPerSecond.toFixed(0),
    r.p50.toFixed(1),
    r.p99.toFixed(1),
    String(r.ok),
    String(r.failed),
    `${((100 * r.requestsPerSecond) / ceiling).toFixed(0)}%`,
  ]);
  printTable(header, lines);
}

/** A service of the write-path comparison: its flags and environment. */
interface WriteVariant {
  name: string;
  flags: string[];
  env: NodeJS.ProcessEnv;
  /** The checkout the service runs from (default this one). */
  root?: string;
  /** Authentication on (`--auth smart`): a system participant's Bearer token on every create (BENCH_AUTH=1). */
  authenticated?: boolean;
}

/**
 * The create path in its variants, each a service of its own on a fresh data directory: group commit (today's
 * default) with anchoring on and off, and the single-write path (`--group-commit off`: a commit per write) as the
 * baseline. Measured in interleaved slices (BENCH_ROUNDS of each, in turn), so a change in the machine's load hits
 * every variant alike; each variant's figure is the median of its slices. Beside creates/s, the service's CPU time
 * per create (Linux /proc): what a create costs, less sensitive to other processes than the rate.
 */
const WRITE_VARIANTS: WriteVariant[] = [
  { name: 'create (validated)', flags: [], env: {} },
  { name: 'create (validated, anchoring off)', flags: [], env: { HIE_ANCHORING: 'off' } },
  { name: 'create (validated, single-write path)', flags: ['--group-commit', 'off'], env: {} },
  {
    name: 'create (single-write path, anchoring off)',
    flags: ['--group-commit', 'off'],
    env: { HIE_ANCHORING: 'off' },
  },
  ...(process.env.BENCH_BASELINE
    ? [
        { name: 'baseline: create (validated)', flags: [], env: {}, root: process.env.BENCH_BASELINE },
        {
          name: 'baseline: create (anchoring off)',
          flags: [],
          env: { HIE_ANCHORING: 'off' },
          root: process.env.BENCH_BASELINE,
        },
      ]
    : []),
  ...(process.env.BENCH_BEFORE
    ? [{ name: 'before: create (validated)', flags: [], env: {}, root: process.env.BENCH_BEFORE }]
    : []),
  ...(process.env.BENCH_AUTH === '1'
    ? [
        {
          name: 'create (validated, authenticated)',
          flags: ['--auth', 'smart', '--organization', 'Organization/bench-org'],
          env: {},
          authenticated: true,
        },
      ]
    : []),
];

/**
 * For an authenticated variant: a system participant of the service's organisation, enrolled in `dataDir` before
 * the service starts; `token` gets its access token from the running service (a client assertion signed with its key).
 */
async function enrolSystemClient(dataDir: string): Promise<{ token: (base: string) => Promise<string> }> {
  const participants = await openParticipantDirectory(dataDir);
  const { enrollment } = await participants.enroll({
    clientId: 'bench-system',
    role: 'system',
    resource: 'Organization/bench-org',
  });
  participants.close();
  return {
    token: (base) => tokenFrom(base, 'bench-system', enrollment.privateKey),
  };
}

interface WritePathResult {
  rows: Row[];
  /** Median CPU microseconds per create, per variant (undefined where /proc is not readable). */
  cpuPerCreate: (number | undefined)[];
  slices: number;
  /** With BENCH_CPU_PROF: per variant, CPU µs per create by part of the request (its profile, its load slices). */
  split?: { part: string; us: number }[][];
}

/** User + system CPU time of a process so far, in ms (Linux); undefined elsewhere. */
function processCpuMs(pid: number | undefined): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const ticksPerMs = 100 / 1000; // USER_HZ is 100 on Linux
    return (Number(fields[11]) + Number(fields[12])) / ticksPerMs;
  } catch {
    return undefined;
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function measureWritePath(body: string, headers: Record<string, string>): Promise<WritePathResult> {
  const started: { dir: string; child: ChildProcess; base: string; headers: Record<string, string> }[] = [];
  try {
    for (const variant of WRITE_VARIANTS) {
      const dir = mkdtempSync(join(tmpdir(), 'hie-bench-rest-write-'));
      const client = variant.authenticated ? await enrolSystemClient(dir) : undefined;
      const service = await startService(
        dir,
        variant.flags,
        variant.authenticated ? variant.env : { HIE_AUTH: 'dev-open', ...variant.env },
        variant.root,
      );
      // The token is verified on its first use and remembered (src/access/tokens.ts): the creates pay the lookup.
      const withToken = client
        ? { ...headers, authorization: `Bearer ${await client.token(service.base)}` }
        : headers;
      started.push({ dir, ...service, headers: withToken });
    }
    const slices: Row[][] = WRITE_VARIANTS.map(() => []);
    const cpu: number[][] = WRITE_VARIANTS.map(() => []);
    const windows: { from: number; to: number }[][] = WRITE_VARIANTS.map(() => []);
    const seconds = Math.max(1, Math.round(DURATION / ROUNDS));
    for (let round = 0; round < ROUNDS; round++) {
      // The order turns each round, so no variant always runs right after the same one.
      for (let k = 0; k < WRITE_VARIANTS.length; k++) {
        const i = (k + round) % WRITE_VARIANTS.length;
        const { child, base, headers: variantHeaders } = started[i]!;
        const before = processCpuMs(child.pid);
        const from = profileClockUs();
        const row = await load(WRITE_VARIANTS[i]!.name, {
          url: `${base}/fhir/Observation`,
          method: 'POST',
          headers: variantHeaders,
          body,
          duration: seconds,
        });
        const after = processCpuMs(child.pid);
        windows[i]!.push({ from, to: profileClockUs() });
        slices[i]!.push(row);
        if (before !== undefined && after !== undefined && row.ok > 0)
          cpu[i]!.push(((after - before) * 1000) / row.ok);
      }
    }
    const rows = WRITE_VARIANTS.map((variant, i) => {
      const merged = merge(variant.name, slices[i]!);
      return { ...merged, requestsPerSecond: median(slices[i]!.map((r) => r.requestsPerSecond)) };
    });
    // The profiles are written when the services exit.
    await Promise.all(started.map(({ child }) => stopChild(child)));
    const profiles = process.env.BENCH_CPU_PROF;
    return {
      rows,
      cpuPerCreate: cpu.map((values) => (values.length ? median(values) : undefined)),
      slices: ROUNDS,
      split: profiles
        ? started.map(({ child }, i) => {
            const profile = readProfile(resolve(profiles), child.pid!);
            return profile ? splitByPart(profile, windows[i]!, rows[i]!.ok) : [];
          })
        : undefined,
    };
  } finally {
    for (const { child, dir } of started) {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

/**
 * The CPU split of each variant (BENCH_CPU_PROF), the variants side by side: each part's share of the profile's
 * busy samples times the variant's CPU per create (/proc). A sample's weight is wall time, which a loaded machine
 * stretches when the service waits for a core; the shares hold better than the profile's own µs.
 */
function printSplit(split: { part: string; us: number }[][], cpuPerCreate: (number | undefined)[]): void {
  const parts = [...new Set(split.flatMap((rows) => rows.map((r) => r.part)))].filter((p) => p !== 'total');
  const cell = (i: number, part: string) => {
    const total = split[i]!.find((r) => r.part === 'total')?.us;
    const us = split[i]!.find((r) => r.part === part)?.us;
    if (total === undefined || us === undefined) return '-';
    const cpu = cpuPerCreate[i];
    return cpu === undefined ? `${((100 * us) / total).toFixed(0)}%` : ((us / total) * cpu).toFixed(0);
  };
  console.log(
    'CPU per create by part (µs: share of the profile samples in the load slices x CPU per create):',
  );
  printTable(
    ['part', ...WRITE_VARIANTS.map((v) => v.name.replace(/^create \(validated, |^create \(/, '('))],
    [
      ...parts.map((part) => [part, ...split.map((_, i) => cell(i, part))]),
      ['total (CPU per create)', ...cpuPerCreate.map((c) => (c === undefined ? '-' : c.toFixed(0)))],
    ],
  );
}

function printWritePath({ rows, cpuPerCreate, slices, split }: WritePathResult): void {
  if (split) printSplit(split, cpuPerCreate);
  const [grouped, plain, single] = rows;
  const [groupedCpu, plainCpu, singleCpu] = cpuPerCreate;
  const at = (name: string) => WRITE_VARIANTS.findIndex((v) => v.name === name);
  const baseline = rows[at('baseline: create (validated)')];
  const baselinePlain = rows[at('baseline: create (anchoring off)')];
  const before = rows[at('before: create (validated)')];
  const baselineCpu = cpuPerCreate[at('baseline: create (validated)')];
  const baselinePlainCpu = cpuPerCreate[at('baseline: create (anchoring off)')];
  const beforeCpu = cpuPerCreate[at('before: create (validated)')];
  console.log(`write path: median of ${slices} interleaved slices per variant, ${CONNECTIONS} connections`);
  rows.forEach((row, i) => {
    const cpu = cpuPerCreate[i];
    console.log(
      `  ${row.name.padEnd(44)} ${row.requestsPerSecond.toFixed(0).padStart(6)}/s` +
        (cpu === undefined ? '' : `  ${cpu.toFixed(0).padStart(5)} us CPU per create`) +
        // A failed create (non-2xx, error, timeout) would make a variant look faster than it is: named.
        (row.failed > 0 ? `  ${row.failed} FAILED of ${row.ok + row.failed}` : ''),
    );
  });
  const ratio = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined || b === 0 ? 'n/a' : (a / b).toFixed(2);
  console.log(
    `  anchoring on / off: ${ratio(grouped!.requestsPerSecond, plain!.requestsPerSecond)} of the rate ` +
      `(target >= 0.90), CPU per create ${ratio(groupedCpu, plainCpu)}x`,
  );
  console.log(
    `  group commit / single-write path: ${ratio(grouped!.requestsPerSecond, single!.requestsPerSecond)}x the rate ` +
      `(target >= 2), CPU per create ${ratio(groupedCpu, singleCpu)}x the single-write path's`,
  );
  if (baseline && baselinePlain) {
    console.log(
      `  this / baseline (BENCH_BASELINE): ${ratio(grouped!.requestsPerSecond, baseline.requestsPerSecond)}x the ` +
        `rate, CPU per create ${ratio(groupedCpu, baselineCpu)}x the baseline's; baseline anchoring on / off: ` +
        `${ratio(baseline.requestsPerSecond, baselinePlain.requestsPerSecond)} of the rate, CPU per create ` +
        `${ratio(baselineCpu, baselinePlainCpu)}x`,
    );
  }
  if (before) {
    console.log(
      `  this / before (BENCH_BEFORE): ${ratio(grouped!.requestsPerSecond, before.requestsPerSecond)}x the rate, ` +
        `CPU per create ${ratio(groupedCpu, beforeCpu)}x the before's`,
    );
  }
}

async function main(): Promise<void> {
  if (process.env.BENCH_STORE === '1') return measureStoreWrites();
  if (process.env.BENCH_WRITE_ONLY === '1') return writePathOnly();
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-rest-'));
  const barePort = await freePort();
  console.log(
    `bench:rest  ${cpus().length} cores, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}, ` + `${CONNECTIONS} connections, ${DURATION}s per scenario`,
  );
  // The built service (what `npm start` runs; npm run bench:rest builds first), else the sources through tsx.
  console.log(
    `service: ${serviceEntry().built ? 'dist/src/cli.js (built)' : 'src/cli.ts through tsx'}, embedded store and ledger, no authentication`,
  );
  const service = await startService(dataDir, [], { HIE_AUTH: 'dev-open' });
  const bare = startChild([
    '--input-type=module',
    '-e',
    `import Fastify from 'fastify';
     const app = Fastify();
     app.get('/hello', async () => ({ hello: 'world' }));
     await app.listen({ port: ${barePort}, host: '127.0.0.1' });
     process.on('SIGTERM', () => app.close().then(() => process.exit(0)));`,
  ]);
  try {
    const base = `${service.base}/fhir`;
    await waitFor(`http://127.0.0.1:${barePort}/hello`, bare);

    const observation = syntheaObservation();
    const body = JSON.stringify(observation);
    const headers = { 'content-type': 'application/fhir+json' };
    // A pool of stored resources to read and update, in the service and in a second one without the read cache.
    const seed = async (fhirBase: string): Promise<string[]> => {
      const ids: string[] = [];
      for (let i = 0; i < POOL; i++) {
        const res = await fetch(`${fhirBase}/Observation`, {
          method: 'POST',
          headers: { ...headers, prefer: 'return=minimal' },
          body,
        });
        if (res.status !== 201) throw new Error(`seeding failed: ${res.status} ${await res.text()}`);
        ids.push(String(res.headers.get('location')).split('/')[5]);
      }
      return ids;
    };
    const ids = await seed(base);
    const pick = () => ids[Math.floor(Math.random() * ids.length)];
    let updates = 0;
    const uncachedDir = mkdtempSync(join(tmpdir(), 'hie-bench-rest-uncached-'));
    const uncached = await startService(uncachedDir, ['--read-cache', '0'], { HIE_AUTH: 'dev-open' });
    const rows: Row[] = [];
    try {
      const uncachedIds = await seed(`${uncached.base}/fhir`);
      const readRequests = (pool: string[]) => [
        {
          method: 'GET' as const,
          setupRequest: (req: autocannon.Request) => ({
            ...req,
            path: `/fhir/Observation/${pool[Math.floor(Math.random() * pool.length)]}`,
          }),
        },
      ];
      // The ceiling and the reads alternate in short slices, so a change in the machine's load hits all alike.
      const bareSlices: Row[] = [];
      const readSlices: Row[] = [];
      const uncachedSlices: Row[] = [];
      const slice = Math.max(1, Math.round(DURATION / ROUNDS));
      for (let round = 0; round < ROUNDS; round++) {
        bareSlices.push(await load('bare', { url: `http://127.0.0.1:${barePort}/hello`, duration: slice }));
        readSlices.push(await load('read', { url: base, duration: slice, requests: readRequests(ids) }));
        uncachedSlices.push(
          await load('read, cache off', {
            url: uncached.base,
            duration: slice,
            requests: readRequests(uncachedIds),
          }),
        );
      }
      rows.push(
        merge('bare fastify "hello"', bareSlices),
        merge('read', readSlices),
        merge('read (--read-cache 0)', uncachedSlices),
      );
    } finally {
      await stopChild(uncached.child);
      rmSync(uncachedDir, { recursive: true, force: true });
    }
    rows.push(
      await load('update (validated)', {
        url: base,
        requests: [
          {
            method: 'PUT',
            headers,
            setupRequest: (req) => {
              const id = pick();
              // A new `issued` each time: a PUT of the current content stores nothing (a no-op), not an update.
              updates++;
              return {
                ...req,
                path: `/fhir/Observation/${id}`,
                body: JSON.stringify({
                  ...observation,
                  id,
                  issued: new Date(Date.UTC(2020, 0, 1) + updates).toISOString(),
                }),
              };
            },
          },
        ],
      }),
    );
    const writePath = await measureWritePath(body, headers);
    rows.push(...writePath.rows);
    console.log('');
    printScenarios(rows, rows[0].requestsPerSecond);
    const read = rows[1].requestsPerSecond / rows[0].requestsPerSecond;
    const uncachedRead = rows[2].requestsPerSecond / rows[0].requestsPerSecond;
    console.log('');
    console.log(
      `read / bare = ${(100 * read).toFixed(0)}% (target >= 40%; without the read cache ${(100 * uncachedRead).toFixed(0)}%); ` +
        `create = ${writePath.rows[0]!.requestsPerSecond.toFixed(0)}/s (target >= 2000/s)`,
    );
    console.log('');
    printWritePath(writePath);
    console.log(
      `load average after: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
  } finally {
    await Promise.all([stopChild(service.child), stopChild(bare)]);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** BENCH_WRITE_ONLY=1: the write-path comparison alone (measureWritePath), for working on the create path. */
async function writePathOnly(): Promise<void> {
  console.log(
    `bench:rest (write path only)  ${cpus().length} cores, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}, ${CONNECTIONS} connections, ${DURATION}s per variant`,
  );
  const writePath = await measureWritePath(JSON.stringify(syntheaObservation()), {
    'content-type': 'application/fhir+json',
  });
  printWritePath(writePath);
  console.log(
    `load average after: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
}

/** What measureStoreWrites uses of a checkout's built store and index extraction (any build since group commit). */
interface StoreModule {
  SqliteResourceStore: new (options: { file: string }) => {
    readonly db: { exec(sql: string): unknown };
    init(): Promise<void>;
    write(request: Record<string, unknown>): Promise<unknown>;
    close(): Promise<void>;
  };
}
interface IndexModule {
  extractIndex(resource: Record<string, unknown>): { type: string }[];
}

/**
 * BENCH_STORE=1: CPU microseconds per write of the store alone (no HTTP, no validation), median of BENCH_ROUNDS
 * runs, for each build (this one, BENCH_BASELINE, BENCH_BEFORE), each on a fresh store file: the Synthea Observation
 * under new ids with its index rows (extracted per write, as the API does), a custodian, one patient and a pending
 * anchor, written `batch` at a time (concurrent writes: one group commit each). Variants: everything; without the
 * full-text entries (`_text`/`_content`: no FTS5 document, whichever way a build writes them); without index rows.
 */
async function measureStoreWrites(): Promise<void> {
  const builds = [
    { name: 'this', root: ROOT },
    ...(process.env.BENCH_BASELINE ? [{ name: 'baseline', root: process.env.BENCH_BASELINE }] : []),
    ...(process.env.BENCH_BEFORE ? [{ name: 'before', root: process.env.BENCH_BEFORE }] : []),
  ];
  const observation = syntheaObservation();
  const writes = Number(process.env.BENCH_STORE_WRITES ?? 3000);
  const variants = ['all', 'no full-text rows', 'no index rows'] as const;
  console.log(
    `bench:rest (store writes only)  ${cpus().length} cores, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}, ${writes} writes per run, median of ${ROUNDS} runs`,
  );
  for (const build of builds) {
    const dist = (path: string) => pathToFileURL(join(build.root, 'dist', 'src', path)).href;
    const { SqliteResourceStore } = (await import(dist('fhir/store/sqlite/sqlite-store.js'))) as StoreModule;
    const { extractIndex } = (await import(dist('fhir/search/index-entries.js'))) as IndexModule;
    const sample = extractIndex({ ...observation, id: 'x' });
    // Index extraction alone: part of every create, done before the store is called (so not in the store's figures).
    for (let i = 0; i < 1000; i++) extractIndex({ ...observation, id: `w${i}` });
    const extractRuns: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const start = process.cpuUsage();
      for (let i = 0; i < writes; i++) extractIndex({ ...observation, id: `x${i}` });
      const used = process.cpuUsage(start);
      extractRuns.push((used.user + used.system) / writes);
    }
    console.log(
      `  ${build.name.padEnd(8)} index rows per write ${sample.length} (${sample.filter((e) => e.type === 'special').length} full-text); ` +
        `extraction ${median(extractRuns).toFixed(0)} us CPU`,
    );
    for (const batch of [1, CONNECTIONS, 50]) {
      const cells: string[] = [];
      for (const variant of variants) {
        const runs: number[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          const dir = mkdtempSync(join(tmpdir(), 'hie-bench-rest-store-'));
          const store = new SqliteResourceStore({ file: join(dir, 'resources.sqlite') });
          try {
            await store.init();
            // UUIDv7-shaped, increasing: as the API's ids append to the keyed indexes. Resources and their index
            // entries made up front, so the figures are the store's alone.
            const total = Math.ceil(200 / batch) * batch + Math.ceil(writes / batch) * batch;
            const inputs = Array.from({ length: total }, (_, k) => {
              const id = `01930000-0000-7000-8000-${String(k).padStart(12, '0')}`;
              const resource = { ...observation, id };
              const index =
                variant === 'no index rows'
                  ? []
                  : variant === 'no full-text rows'
                    ? extractIndex(resource).filter((e) => e.type !== 'special')
                    : extractIndex(resource);
              return { id, resource, index };
            });
            let n = 0;
            const writeBatch = async () => {
              const pending: Promise<unknown>[] = [];
              for (let i = 0; i < batch; i++) {
                const { id, resource, index } = inputs[n++]!;
                pending.push(
                  store.write({
                    resourceType: 'Observation',
                    id,
                    resource,
                    method: 'POST',
                    ifNoneExist: true,
                    patients: ['Patient/p1'],
                    index,
                    custodian: 'Organization/o1',
                    anchor: (version: { resourceType: string; id: string; versionId: number }) => ({
                      resourceType: version.resourceType,
                      id: version.id,
                      versionId: version.versionId,
                      salt: 'ab'.repeat(32),
                      leafHash: 'cd'.repeat(32),
                      ledgerKey: 'ef'.repeat(32),
                      leafVersion: 1,
                    }),
                  }),
                );
              }
              await Promise.all(pending);
            };
            // Warm-up (statements prepared, caches filled), then the measured writes.
            for (let i = 0; i < Math.ceil(200 / batch); i++) await writeBatch();
            const start = process.cpuUsage();
            for (let i = 0; i < Math.ceil(writes / batch); i++) await writeBatch();
            const used = process.cpuUsage(start);
            runs.push((used.user + used.system) / (Math.ceil(writes / batch) * batch));
          } finally {
            await store.close();
            rmSync(dir, { recursive: true, force: true });
          }
        }
        cells.push(`${variant} ${median(runs).toFixed(0).padStart(5)}`);
      }
      console.log(`    batches of ${String(batch).padEnd(3)} us CPU per write: ${cells.join(', ')}`);
    }
  }
  console.log(
    `load average after: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
