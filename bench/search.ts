/**
 * Search benchmarks (prints tables):
 *  1. definition loading and index extraction per resource on the Synthea bundles (no I/O);
 *  2. over real HTTP: loading Synthea transaction bundles (POST [base], validation + index + store), then
 *     latency of typical searches.
 * Run: npx tsx bench/search.ts [bundles for extraction=20] [bundles over HTTP=100]
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { parseFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';
import { searchDefinitions } from '../src/fhir/search/definitions.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import { parseSearch } from '../src/fhir/search/parse.js';
import { buildApp } from '../src/app/app.js';
import { loadConfig } from '../src/config/config.js';

// The service's store works on threads whose handles do not keep the event loop alive: without a handle of its own the
// process could run out of pending work mid-run and exit 0 after printing half the tables. One interval holds the loop
// for the whole run, and a run that ends before its last table fails loudly.
const keepAlive = setInterval(() => undefined, 1000);
let finished = false;
process.on('beforeExit', () => {
  if (!finished) {
    console.error(
      'bench:search ended before its last table (pending work was lost): this run measured nothing',
    );
    process.exit(1);
  }
});

const dir = join(process.cwd(), '../shared/data/synthea-bundles');
const extractionBundles = Number(process.argv[2] ?? 20);
const httpBundles = Number(process.argv[3] ?? 100);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort();

// ---- 1. extraction ----
const t0 = performance.now();
const defs = searchDefinitions();
const loadMs = performance.now() - t0;

const resources: FhirResource[] = [];
for (const file of files.slice(0, extractionBundles)) {
  const bundle = parseFhirJson<{ entry: { resource: FhirResource }[] }>(
    readFileSync(join(dir, file), 'utf8'),
  );
  for (const entry of bundle.entry) resources.push(entry.resource);
}
for (const r of resources.slice(0, 2000)) extractIndex(r); // warm-up: lazy compilation

const perType = new Map<string, { n: number; us: number; rows: number }>();
let rows = 0;
const t1 = performance.now();
for (const r of resources) {
  const s = performance.now();
  const entries = extractIndex(r);
  const us = (performance.now() - s) * 1000;
  rows += entries.length;
  const agg = perType.get(r.resourceType) ?? { n: 0, us: 0, rows: 0 };
  agg.n++;
  agg.us += us;
  agg.rows += entries.length;
  perType.set(r.resourceType, agg);
}
const totalMs = performance.now() - t1;

console.log(
  `definitions load: ${loadMs.toFixed(1)} ms (${defs.resourceTypes.length} types, ${defs.unsupported.length} parameters not indexed)`,
);
console.log(
  `extraction: ${resources.length} resources from ${extractionBundles} bundles, ${rows} rows, ${((totalMs * 1000) / resources.length).toFixed(1)} µs/resource, ${Math.round(resources.length / (totalMs / 1000))} resources/s\n`,
);
console.log('| type | count | µs/resource | rows/resource |\n|---|---:|---:|---:|');
for (const [type, agg] of [...perType].sort((a, b) => b[1].n - a[1].n)) {
  console.log(`| ${type} | ${agg.n} | ${(agg.us / agg.n).toFixed(1)} | ${(agg.rows / agg.n).toFixed(1)} |`);
}

// ---- 2. over HTTP ----
if (httpBundles > 0) {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-search-'));
  const config = loadConfig({ dataDir, port: 0, host: '127.0.0.1', logLevel: 'warn', auth: 'dev-open' }, {});
  const app = await buildApp(config, {
    logStream: new Writable({ write: (_c, _e, done) => done() }),
  });
  try {
    const address = await app.fastify.listen({ port: 0, host: '127.0.0.1' });
    const base = `${address}/fhir`;
    let entries = 0;
    let bytes = 0;
    const patients: string[] = [];
    const tLoad = performance.now();
    for (const file of files.slice(0, httpBundles)) {
      const body = readFileSync(join(dir, file), 'utf8');
      bytes += body.length;
      const res = await fetch(base, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json' },
        body,
      });
      const out = (await res.json()) as { entry: { response: { location: string } }[] };
      if (res.status !== 200) throw new Error(`${file}: ${res.status} ${JSON.stringify(out).slice(0, 500)}`);
      entries += out.entry.length;
      const patient = out.entry.map((e) => e.response.location).find((l) => l.startsWith('Patient/'));
      if (patient) patients.push(patient.split('/_history/')[0]);
    }
    const loadS = (performance.now() - tLoad) / 1000;
    console.log(
      `\nHTTP transaction load: ${httpBundles} bundles, ${entries} entries, ${(bytes / 1e6).toFixed(1)} MB in ${loadS.toFixed(1)} s = ${Math.round(entries / loadS)} entries/s (validation + index + store, one client)\n`,
    );

    const queries: [string, (i: number) => string][] = [
      ['Patient?family=prefix', (i) => `Patient?family=${['Sm', 'Jo', 'Ma', 'Ro'][i % 4]}`],
      [
        'Observation?subject&code',
        (i) => `Observation?subject=${patients[i % patients.length]}&code=http://loinc.org|8302-2`,
      ],
      [
        'Observation?patient&date=ge&_sort=-date',
        (i) => `Observation?patient=${patients[i % patients.length]}&date=ge2015-01-01&_sort=-date&_count=20`,
      ],
      [
        'Observation?code&value-quantity=gt',
        () => `Observation?code=http://loinc.org|8302-2&value-quantity=gt170&_count=20`,
      ],
      [
        'Encounter?patient&_revinclude=Observation:encounter',
        (i) =>
          `Encounter?patient=${patients[i % patients.length]}&_revinclude=Observation:encounter&_count=10`,
      ],
      [
        'Encounter?subject:Patient.family (chain)',
        (i) => `Encounter?subject:Patient.family=${['Sm', 'Jo', 'Ma', 'Ro'][i % 4]}&_count=20`,
      ],
      [
        'Patient?_has:Observation:patient:code',
        () => `Patient?_has:Observation:patient:code=http://loinc.org|8302-2&_count=20`,
      ],
      ['Observation?_total=accurate (all)', () => `Observation?_total=accurate&_count=20`],
      ['Observation?_count=20 (first page)', () => `Observation?_count=20`],
    ];
    // In-process first (the store's share: parse + SQL + access predicate), then over HTTP (adds JSON, HTTP, includes).
    console.log('In-process (parseSearch + store.search, open access):\n');
    console.log('| query | runs | mean ms | p95 ms |\n|---|---:|---:|---:|');
    for (const [name, url] of queries) {
      const times: number[] = [];
      const runs = 30;
      for (let i = 0; i < runs; i++) {
        const [path, search] = url(i).split('?');
        const raw: Record<string, string[]> = {};
        for (const [k, v] of new URLSearchParams(search)) (raw[k] ??= []).push(v);
        const s = performance.now();
        const query = parseSearch(raw, { resourceType: path });
        await app.store.search!({ query, canRead: () => true, wantTotal: query.total === 'accurate' });
        times.push(performance.now() - s);
      }
      times.sort((a, b) => a - b);
      const mean = times.reduce((a, b) => a + b, 0) / times.length;
      console.log(
        `| ${name} | ${runs} | ${mean.toFixed(2)} | ${times[Math.floor(runs * 0.95)].toFixed(2)} |`,
      );
    }
    console.log('\nOver HTTP (one client):\n');
    console.log('| query | runs | mean ms | p95 ms | entries |\n|---|---:|---:|---:|---:|');
    for (const [name, url] of queries) {
      const times: number[] = [];
      let lastEntries = 0;
      const runs = 30;
      for (let i = 0; i < runs; i++) {
        const s = performance.now();
        const res = await fetch(`${base}/${url(i)}`);
        const bundle = (await res.json()) as { entry?: unknown[] };
        if (res.status !== 200)
          throw new Error(`${url(i)}: ${res.status} ${JSON.stringify(bundle).slice(0, 300)}`);
        times.push(performance.now() - s);
        lastEntries = bundle.entry?.length ?? 0;
      }
      times.sort((a, b) => a - b);
      const mean = times.reduce((a, b) => a + b, 0) / times.length;
      console.log(
        `| ${name} | ${runs} | ${mean.toFixed(1)} | ${times[Math.floor(runs * 0.95)].toFixed(1)} | ${lastEntries} |`,
      );
    }
  } finally {
    await app.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
finished = true;
clearInterval(keepAlive);
