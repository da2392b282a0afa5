/**
 * Search latency at two data sizes (issue 16): the Synthea patients of ../shared/data/synthea-bundles, and the same
 * bundles loaded COPIES times under new ids (every id and reference gets `-cK`), each copy a full patient record.
 * For each size: p50 and p99 of a token search, a date range, a string prefix, a chain, `_has`, an `_include`, a
 * compartment search, and a walk of 10 pages by `next` links (the whole walk), through the service in process
 * (fastify inject: parse, access, store, Bundle JSON; dev-open access), and the ratio large/small per query.
 * Targets: p50 under 5 ms for simple searches, under 20 ms for chains, `_has` and includes, at both sizes.
 * The store is loaded through its own write path (index extraction, one transaction per bundle; no anchors).
 *
 * Run: npm run bench:search-scale [patients=100] [copies=5] [runs=41]
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { buildApp, type App } from '../src/app/app.js';
import { loadConfig } from '../src/config/config.js';
import { parseFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import { patientCompartments } from '../src/fhir/search/definitions.js';
import { SqliteResourceStore } from '../src/fhir/store/sqlite/sqlite-store.js';

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

async function measure(copies: number): Promise<Map<string, { p50: number; p99: number }>> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-search-scale-'));
  try {
    const t0 = performance.now();
    const count = await load(join(dataDir, 'resources.sqlite'), copies);
    console.log(
      `loaded ${copies} x ${files.length} bundles = ${count} resources in ${((performance.now() - t0) / 1000).toFixed(0)} s`,
    );
    const config = loadConfig(
      { dataDir, port: 0, host: '127.0.0.1', auth: 'dev-open', logLevel: 'warn' },
      {},
    );
    const app = await buildApp(config, { logStream: new Writable({ write: (_c, _e, done) => done() }) });
    const out = new Map<string, { p50: number; p99: number }>();
    try {
      const people = subjects();
      for (const query of QUERIES) {
        for (let i = 0; i < 5; i++) await timeQuery(app, query.url(people[i % people.length]!), query.pages);
        const times: number[] = [];
        for (let i = 0; i < RUNS; i++)
          times.push(await timeQuery(app, query.url(people[(i * 7) % people.length]!), query.pages));
        times.sort((a, b) => a - b);
        out.set(query.name, { p50: quantile(times, 0.5), p99: quantile(times, 0.99) });
      }
    } finally {
      await app.close();
    }
    return out;
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const small = await measure(1);
const large = COPIES > 1 ? await measure(COPIES) : undefined;
const n = files.length;
console.log(
  `\n| query | target p50 | ${n} p50 ms | ${n} p99 ms |${large ? ` ${n * COPIES} p50 ms | ${n * COPIES} p99 ms | p50 ratio |` : ''}`,
);
console.log(`|---|---:|---:|---:|${large ? '---:|---:|---:|' : ''}`);
for (const query of QUERIES) {
  const a = small.get(query.name)!;
  const b = large?.get(query.name);
  const target = query.kind === 'simple' ? 5 : 20;
  console.log(
    `| ${query.name} | ${target} | ${a.p50.toFixed(2)} | ${a.p99.toFixed(2)} |${b ? ` ${b.p50.toFixed(2)} | ${b.p99.toFixed(2)} | ${(b.p50 / a.p50).toFixed(2)} |` : ''}`,
  );
}
