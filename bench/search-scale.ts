/**
 * Search latency at two data sizes (issue 16): the Synthea patients of ../shared/data/synthea-bundles, and the same
 * bundles loaded COPIES times under new ids (every id and reference gets `-cK`), each copy a full patient record.
 * For each size: p50 and p99 of a token search, a date range, a string prefix, a chain, `_has`, an `_include`, a
 * compartment search, and a walk of 10 pages by `next` links (the whole walk), through the service in process
 * (fastify inject: parse, access, store, Bundle JSON; dev-open access), and the ratio large/small per query.
 * Targets: p50 under 5 ms for simple searches, under 20 ms for chains, `_has` and includes, at both sizes.
 * The store is loaded through its own write path (index extraction, one transaction per bundle; no anchors).
 * Each size also reports what else ran during each query's measured runs (see Window): a service just opened on a
 * large store runs its start-up integrity check in the background for seconds to minutes (docs/store.md).
 *
 * Run: npm run bench:search-scale [patients=100] [copies=5] [runs=41]
 * Environment: BENCH_STORE_DIR=DIR keeps the loaded stores there and reuses them; BENCH_INTEGRITY=full|quick|off
 * (the start-up check; default full, the service's) or `ab` (each query on a service opened for it with the check
 * and without, the order alternated); BENCH_READY=1 measures once the check is done (when /readyz turns ready).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { buildApp, type App } from '../src/app/app.js';
import { loadConfig } from '../src/config/config.js';
import { parseFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import { patientCompartments } from '../src/fhir/search/definitions.js';
import { SqliteResourceStore } from '../src/fhir/store/sqlite/sqlite-store.js';
import { CHECK_NICE } from '../src/fhir/store/sqlite/integrity-check.js';

const PATIENTS = Number(process.argv[2] ?? 100);
const COPIES = Number(process.argv[3] ?? 5);
const RUNS = Number(process.argv[4] ?? 41);
const dir = join(process.cwd(), '../shared/data/synthea-bundles');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .slice(0, PATIENTS)
  .map((f) => join(dir, f));

type Json = Record<string, any>;

/** A bundle's resources under copy `k` (k = 0: the bundle's own ids). */
function copyOf(file: string, k: number): FhirResource[] {
  const raw = readFileSync(file, 'utf8');
  const bundle = parseFhirJson<{ entry: { fullUrl: string; resource: FhirResource }[] }>(raw);
  const suffix = k === 0 ? '' : `-c${k}`;
  const map = new Map<string, string>();
  for (const e of bundle.entry)
    map.set(e.fullUrl, `${e.resource.resourceType}/${e.fullUrl.replace('urn:uuid:', '')}${suffix}`);
  const text = raw.replace(/urn:uuid:[0-9a-f-]{36}/g, (m) => map.get(m) ?? m);
  const rewritten = parseFhirJson<{ entry: { resource: FhirResource }[] }>(text);
  return rewritten.entry.map((e, i) => ({
    ...e.resource,
    id: `${bundle.entry[i]!.fullUrl.replace('urn:uuid:', '')}${suffix}`,
  }));
}

async function load(file: string, copies: number): Promise<number> {
  const store = new SqliteResourceStore({ file });
  await store.init();
  let count = 0;
  for (let k = 0; k < copies; k++)
    for (const bundle of files) {
      const resources = copyOf(bundle, k);
      await store.transaction(async (tx) => {
        for (const resource of resources)
          await tx.write({
            resourceType: resource.resourceType,
            id: resource.id!,
            resource,
            method: 'PUT',
            index: extractIndex(resource),
            patients: patientCompartments(resource),
          });
      });
      count += resources.length;
    }
  store.db.exec('ANALYZE');
  await store.close();
  return count;
}

/** Query makers: each gets the run number, so runs spread over the patients of the first copy. */
interface Subject {
  patient: Json;
  encounter?: Json;
  condition?: Json;
}
const SYNTHEA_ID = 'https://github.com/synthetichealth/synthea';

function subjects(): Subject[] {
  return files.map((file) => {
    const resources = copyOf(file, 0) as Json[];
    const patient = resources.find((r) => r.resourceType === 'Patient')!;
    return {
      patient,
      encounter: resources.find((r) => r.resourceType === 'Encounter'),
      condition: resources.find((r) => r.resourceType === 'Condition'),
    };
  });
}

const QUERIES: { name: string; kind: 'simple' | 'related'; url: (s: Subject) => string; pages?: number }[] = [
  {
    name: 'token (Patient?identifier=system|value)',
    kind: 'simple',
    url: (s) => `Patient?identifier=${encodeURIComponent(`${SYNTHEA_ID}|${s.patient.identifier[0].value}`)}`,
  },
  {
    name: 'token + reference (Observation?subject&code)',
    kind: 'simple',
    url: (s) => `Observation?subject=Patient/${s.patient.id}&code=http://loinc.org|8302-2`,
  },
  {
    name: 'date range (Encounter?date=ge&date=lt, one day)',
    kind: 'simple',
    url: (s) => {
      const day = (s.encounter?.period?.start ?? '2015-01-01').slice(0, 10);
      const next = new Date(Date.parse(`${day}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);
      return `Encounter?date=ge${day}&date=lt${next}`;
    },
  },
  {
    name: 'string prefix (Patient?family=3 letters)',
    kind: 'simple',
    url: (s) => `Patient?family=${encodeURIComponent(s.patient.name[0].family.slice(0, 3))}`,
  },
  {
    name: 'compartment (Patient/x/Condition)',
    kind: 'simple',
    url: (s) => `Patient/${s.patient.id}/Condition`,
  },
  {
    name: 'chain (Encounter?subject:Patient.identifier)',
    kind: 'related',
    url: (s) =>
      `Encounter?subject:Patient.identifier=${encodeURIComponent(`${SYNTHEA_ID}|${s.patient.identifier[0].value}`)}&_count=20`,
  },
  {
    name: '_has (Patient?_has:Condition:patient:code&family)',
    kind: 'related',
    url: (s) => {
      const coding = s.condition?.code?.coding?.[0] ?? {
        system: 'http://snomed.info/sct',
        code: '444814009',
      };
      return `Patient?_has:Condition:patient:code=${encodeURIComponent(`${coding.system}|${coding.code}`)}&family=${encodeURIComponent(s.patient.name[0].family.slice(0, 3))}`;
    },
  },
  {
    name: '_include (Encounter?subject&_include x2, 20)',
    kind: 'related',
    url: (s) =>
      `Encounter?subject=Patient/${s.patient.id}&_include=Encounter:participant&_include=Encounter:service-provider&_count=20`,
  },
  {
    name: '10-page walk (Observation?subject&_count=10), whole walk',
    kind: 'related',
    pages: 10,
    url: (s) => `Observation?subject=Patient/${s.patient.id}&_count=10`,
  },
];

async function timeQuery(app: App, url: string, pages = 1): Promise<number> {
  const start = performance.now();
  let next: string | undefined = `/fhir/${url}`;
  for (let page = 0; page < pages && next; page++) {
    const response = await app.fastify.inject({ url: next });
    if (response.statusCode !== 200)
      throw new Error(`${next}: ${response.statusCode} ${response.body.slice(0, 300)}`);
    const bundle = JSON.parse(response.body) as Json;
    const link = (bundle.link as Json[]).find((l) => l.relation === 'next')?.url as string | undefined;
    next = link ? link.slice(link.indexOf('/fhir/')) : undefined;
  }
  return performance.now() - start;
}

const quantile = (sorted: number[], q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

/**
 * What else the service did while a query's runs were measured (the window: its RUNS runs, warm-up excluded):
 * runs started while the start-up integrity check was still running (docs/store.md), the anchor backlog, GC pauses
 * on the main thread, and (Linux, from /proc) the CPU time of the thread serving the requests, of the check's
 * process (the child at CHECK_NICE) and of every other thread of this process (V8's helpers, the validation pool,
 * libuv), against the window's wall time.
 */
interface Window {
  p50: number;
  p99: number;
  duringCheck: number;
  anchorBacklog: number;
  gcCount: number;
  gcMs: number;
  wallMs: number;
  cpu?: { main: number; check: number; other: number };
}

/** GC pauses of the main thread (start on performance.now()'s clock); delivered later, in a macrotask. */
const gcPauses: { start: number; ms: number }[] = [];
const gcObserver = new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcPauses.push({ start: entry.startTime, ms: entry.duration });
});
gcObserver.observe({ entryTypes: ['gc'] });

/** Check processes set back to normal priority by openService (BENCH_INTEGRITY=ab), still counted as the check. */
const renicedChecks = new Set<string>();

/** CPU ms and nice value of one /proc stat file (Linux); undefined once it has ended. */
function statOf(path: string): { ms: number; nice: number } | undefined {
  try {
    const stat = readFileSync(path, 'utf8');
    // Fields after the command name: state is field 3, utime 14, stime 15, nice 19 (proc(5)); USER_HZ = 100.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ms: (Number(fields[11]) + Number(fields[12])) * 10, nice: Number(fields[16]) };
  } catch {
    return undefined;
  }
}

/**
 * CPU ms of each thread of this process (`t:TID`) and of each child process with its threads (`c:PID`, the
 * start-up check among them), with nice values (Linux); undefined elsewhere.
 */
function cpuSnapshot(): Map<string, { ms: number; nice: number }> | undefined {
  if (process.platform !== 'linux') return undefined;
  const out = new Map<string, { ms: number; nice: number }>();
  for (const tid of readdirSync('/proc/self/task')) {
    const thread = statOf(`/proc/self/task/${tid}/stat`);
    if (thread) out.set(`t:${tid}`, thread);
    let children = '';
    try {
      children = readFileSync(`/proc/self/task/${tid}/children`, 'utf8');
    } catch {
      // The thread ended meanwhile.
    }
    for (const pid of children.split(' ').filter(Boolean)) {
      const child = statOf(`/proc/${pid}/stat`);
      if (child) out.set(`c:${pid}`, child);
    }
  }
  return out;
}

function cpuBetween(
  before: Map<string, { ms: number; nice: number }> | undefined,
  after: Map<string, { ms: number; nice: number }> | undefined,
): Window['cpu'] {
  if (!before || !after) return undefined;
  const cpu = { main: 0, check: 0, other: 0 };
  for (const [key, now] of after) {
    const ms = now.ms - (before.get(key)?.ms ?? 0);
    if (key === `t:${process.pid}`) cpu.main += ms;
    else if (key.startsWith('c:') && (now.nice === CHECK_NICE || renicedChecks.has(key))) cpu.check += ms;
    else cpu.other += ms;
  }
  return cpu;
}

async function measureQuery(app: App, query: (typeof QUERIES)[number], people: Subject[]): Promise<Window> {
  for (let i = 0; i < 5; i++) await timeQuery(app, query.url(people[i % people.length]!), query.pages);
  const anchorBacklog = (await app.integrity?.anchorer.pendingCount(10_000)) ?? 0;
  const threadsBefore = cpuSnapshot();
  const wallBefore = performance.now();
  let duringCheck = 0;
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    if (app.store.integrityStatus?.() === 'checking') duringCheck++;
    times.push(await timeQuery(app, query.url(people[(i * 7) % people.length]!), query.pages));
  }
  const wallAfter = performance.now();
  const wallMs = wallAfter - wallBefore;
  const cpu = cpuBetween(threadsBefore, cpuSnapshot());
  // The observer's entries arrive in a later turn of the event loop (the runs themselves may never leave it).
  for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
  const gc = gcPauses
    .filter((pause) => pause.start >= wallBefore && pause.start < wallAfter)
    .map((p) => p.ms);
  times.sort((a, b) => a - b);
  return {
    p50: quantile(times, 0.5),
    p99: quantile(times, 0.99),
    duringCheck,
    anchorBacklog,
    gcCount: gc.length,
    gcMs: gc.reduce((a, b) => a + b, 0),
    wallMs,
    cpu,
  };
}

type CheckMode = 'full' | 'quick' | 'off';
const SIDES = ['off', 'below', 'normal'] as const;
type Sides = Record<(typeof SIDES)[number], Window>;

/**
 * The service on the loaded store, as `serve` opens it (the store built here only to choose the start-up check).
 * `checkNice`: the check's process is set to this nice value once the service is open (0: the service's own, as
 * the check ran before it was lowered; raising a priority needs root or CAP_SYS_NICE).
 */
async function openService(dataDir: string, check: CheckMode, checkNice?: number): Promise<App> {
  const config = loadConfig({ dataDir, port: 0, host: '127.0.0.1', auth: 'dev-open', logLevel: 'warn' }, {});
  const store = new SqliteResourceStore({ file: join(dataDir, 'resources.sqlite'), integrityCheck: check });
  const app = await buildApp(config, {
    store,
    logStream: new Writable({ write: (_c, _e, done) => done() }),
  });
  const opened = performance.now();
  void store.integrityChecked().then((result) => {
    if (result)
      console.log(
        `  start-up integrity check (${result.mode}${result.background ? ', background' : ''}) ${result.ok ? 'passed' : 'FAILED'}: ` +
          `${Math.round(performance.now() - opened)} ms after the service opened`,
      );
  });
  if (checkNice !== undefined)
    for (const [key, child] of cpuSnapshot() ?? [])
      if (key.startsWith('c:') && child.nice === CHECK_NICE) {
        setPriority(Number(key.slice(2)), checkNice);
        renicedChecks.add(key);
      }
  if (READY) await store.integrityChecked();
  return app;
}

/**
 * BENCH_INTEGRITY: the start-up check the service runs (default full, the service's default), or `ab`: each query
 * measured on three services opened for it, in rotated order: no check; the full check below normal priority (as the
 * service runs it); the same check set back to the service's priority (as before).
 */
const CHECK = (process.env.BENCH_INTEGRITY ?? 'full') as CheckMode | 'ab';
/**
 * BENCH_READY=1: measure once the service is ready (/readyz waits on the start-up check), as traffic routed by a
 * readiness probe sees it; default: from the moment it opens, as a client calling it directly sees it.
 */
const READY = process.env.BENCH_READY === '1';

/**
 * One size: the store loaded (or reused from BENCH_STORE_DIR), then every query on one service opened on it; with
 * BENCH_INTEGRITY=ab each query on a service opened for it twice, with the check and without, the order alternated.
 */
async function measure(copies: number): Promise<Map<string, Window | Sides>> {
  const kept = process.env.BENCH_STORE_DIR;
  const dataDir = kept
    ? join(kept, `${files.length}x${copies}`)
    : mkdtempSync(join(tmpdir(), 'hie-bench-search-scale-'));
  try {
    const file = join(dataDir, 'resources.sqlite');
    if (!existsSync(file)) {
      mkdirSync(dataDir, { recursive: true });
      const t0 = performance.now();
      const count = await load(file, copies);
      console.log(
        `loaded ${copies} x ${files.length} bundles = ${count} resources in ${((performance.now() - t0) / 1000).toFixed(0)} s`,
      );
    } else console.log(`reusing ${file}`);
    console.log(`  store ${(statSync(file).size / 1e6).toFixed(0)} MB`);
    const people = subjects();
    const out = new Map<string, Window | Sides>();
    if (CHECK !== 'ab') {
      const app = await openService(dataDir, CHECK);
      try {
        for (const query of QUERIES) out.set(query.name, await measureQuery(app, query, people));
      } finally {
        await app.close();
      }
      return out;
    }
    let index = 0;
    for (const query of QUERIES) {
      const result: Partial<Sides> = {};
      const order = SIDES.map((_, k) => SIDES[(index + k) % SIDES.length]!);
      index++;
      for (const side of order) {
        const app = await openService(
          dataDir,
          side === 'off' ? 'off' : 'full',
          side === 'normal' ? 0 : undefined,
        );
        try {
          result[side] = await measureQuery(app, query, people);
        } finally {
          await app.close();
        }
      }
      out.set(query.name, result as Sides);
    }
    return out;
  } finally {
    if (!kept) rmSync(dataDir, { recursive: true, force: true });
  }
}

const small = await measure(1);
const large = COPIES > 1 ? await measure(COPIES) : undefined;
const n = files.length;
const sizes: [number, Map<string, Window | Sides>][] = [[n, small]];
if (large) sizes.push([n * COPIES, large]);
const f = (x: number) => x.toFixed(2);
const background = (w: Window) =>
  `${w.duringCheck}/${RUNS} | ${w.anchorBacklog} | ${w.gcCount} (${w.gcMs.toFixed(0)} ms) | ${w.wallMs.toFixed(0)} | ` +
  (w.cpu ? `${w.cpu.main.toFixed(0)} | ${w.cpu.check.toFixed(0)} | ${w.cpu.other.toFixed(0)}` : '- | - | -');

if (CHECK !== 'ab') {
  console.log(
    `\n| query | target p50 | ${n} p50 ms | ${n} p99 ms |${large ? ` ${n * COPIES} p50 ms | ${n * COPIES} p99 ms | p50 ratio |` : ''}`,
  );
  console.log(`|---|---:|---:|---:|${large ? '---:|---:|---:|' : ''}`);
  for (const query of QUERIES) {
    const a = small.get(query.name) as Window;
    const b = large?.get(query.name) as Window | undefined;
    const target = query.kind === 'simple' ? 5 : 20;
    console.log(
      `| ${query.name} | ${target} | ${f(a.p50)} | ${f(a.p99)} |${b ? ` ${f(b.p50)} | ${f(b.p99)} | ${f(b.p50 / a.p50)} |` : ''}`,
    );
  }
  console.log(
    '\nBackground work during each measured window: runs started while the start-up integrity check ran; anchor ' +
      'backlog; GC pauses of the main thread; the window (wall ms); CPU ms of the thread serving the requests, of ' +
      "the check's process and of this process's other threads (Linux):",
  );
  console.log(
    '| patients | query | runs during check | anchor backlog | GC | window ms | main CPU ms | check CPU ms | other CPU ms |',
  );
  console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const [patients, results] of sizes)
    for (const query of QUERIES)
      console.log(`| ${patients} | ${query.name} | ${background(results.get(query.name) as Window)} |`);
} else {
  console.log(
    '\nEach query on a service just opened: no check; the check below normal priority (now); at normal priority ' +
      '(before). p50 ms, runs during the check, CPU ms of the requests thread / of the check over the window:',
  );
  console.log(
    '| patients | query | off p50 | below p50 | normal p50 | below: runs during check, main / check CPU ms | normal: same |',
  );
  console.log('|---:|---|---:|---:|---:|---|---|');
  const cpuOf = (w: Window) =>
    `${w.duringCheck}/${RUNS}, ${w.cpu ? `${w.cpu.main.toFixed(0)} / ${w.cpu.check.toFixed(0)}` : '-'} (${w.wallMs.toFixed(0)} ms)`;
  for (const [patients, results] of sizes)
    for (const query of QUERIES) {
      const { off, below, normal } = results.get(query.name) as Sides;
      console.log(
        `| ${patients} | ${query.name} | ${f(off.p50)} | ${f(below.p50)} | ${f(normal.p50)} | ${cpuOf(below)} | ${cpuOf(normal)} |`,
      );
    }
}
