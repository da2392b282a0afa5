/**
 * The index each search shape reads (issue 17): every statement a catalogue of searches runs against search_index
 * on a loaded Synthea store, with the plan SQLite gives it (EXPLAIN QUERY PLAN, the statement's own binds), and the
 * statements that scan search_index whole. A store's indexes are cheap to change and costly to every write: this
 * shows which index each query shape needs before one is dropped.
 *
 * Run: npx tsx bench/search-plans.ts STORE_FILE (a loaded store: test/search/synthea-service.ts loadedStoreFile, or
 * bench:search-scale's BENCH_STORE_DIR; opened on a copy, so a migration may upgrade it). Prints one line per
 * distinct statement: the search URL that ran it first, the search_index plan lines, `SCAN` when it scans the table.
 * BENCH_RUNS=N adds each search's median time (`TIME ms url` lines).
 */
import Database from 'better-sqlite3';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { buildApp } from '../src/app/app.js';
import { loadConfig } from '../src/config/config.js';

const source = process.argv[2];
if (!source) throw new Error('usage: search-plans.ts STORE_FILE');

type Json = Record<string, any>;
/** Statements run on search_index (source and binds), first seen with the URL that ran them. */
const seen = new Map<string, { url: string; binds: unknown[]; source: string }>();
let currentUrl = '';
let recording = true;

// Every statement the store runs passes through these methods: record the ones reading search_index.
const probe = new Database(':memory:');
const statementProto = Object.getPrototypeOf(probe.prepare('SELECT 1')) as Record<string, unknown>;
probe.close();
for (const method of ['iterate', 'get', 'all'] as const) {
  const original = statementProto[method] as (...args: unknown[]) => unknown;
  statementProto[method] = function (this: { source: string; reader: boolean }, ...args: unknown[]) {
    if (recording && this.reader && /search_index/.test(this.source)) {
      const shape = this.source.replace(/\?(, \?)+/g, '?, ...');
      if (!seen.has(shape)) seen.set(shape, { url: currentUrl, binds: args, source: this.source });
    }
    return original.apply(this, args);
  };
}

const dataDir = mkdtempSync(join(tmpdir(), 'hie-search-plans-'));
copyFileSync(source, join(dataDir, 'resources.sqlite'));
const config = loadConfig({ dataDir, port: 0, host: '127.0.0.1', auth: 'dev-open', logLevel: 'warn' }, {});
const app = await buildApp(config, { logStream: new Writable({ write: (_c, _e, done) => done() }) });

const get = async (url: string): Promise<Json | undefined> => {
  currentUrl = url;
  const response = await app.fastify.inject({ url: `/fhir/${url}` });
  if (response.statusCode !== 200) {
    console.log(`# ${url}: ${response.statusCode} ${response.body.slice(0, 200)}`);
    return undefined;
  }
  return JSON.parse(response.body) as Json;
};

// Subjects from the store itself.
const first = async (url: string): Promise<Json> => (await get(url))?.entry?.[0]?.resource as Json;
const patient = await first('Patient?_count=1');
const encounter = await first(`Encounter?subject=Patient/${patient.id}&_count=1`);
const day = String(encounter.period.start).slice(0, 10);
const next = new Date(Date.parse(`${day}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);
const family = String(patient.name[0].family);
const identifier = `${patient.identifier[0].system}|${patient.identifier[0].value}`;
const e = encodeURIComponent;
const LOINC = 'http://loinc.org';
const SCT = 'http://snomed.info/sct';
const UCUM = 'http://unitsofmeasure.org';

const urls = [
  // token
  `Patient?identifier=${e(identifier)}`,
  `Observation?code=${e(`${LOINC}|8302-2`)}`,
  `Observation?code=8302-2`,
  `Observation?code=${e(`${LOINC}|`)}`,
  `Observation?code:not=${e(`${LOINC}|8302-2`)}&subject=Patient/${patient.id}`,
  `Observation?status=final&_count=5`,
  `Observation?code:text=glucose`,
  `Patient?identifier:of-type=${e('http://terminology.hl7.org/CodeSystem/v2-0203|MR|')}${e(String(patient.identifier[1]?.value ?? 'x'))}`,
  `Condition?code:below=${e(`${SCT}|73211009`)}`,
  `Condition?code:above=${e(`${SCT}|44054006`)}`,
  `Condition?code:in=${e('http://hl7.org/fhir/ValueSet/condition-code')}&_count=5`,
  `Condition?code:not-in=${e('http://hl7.org/fhir/ValueSet/condition-code')}&_count=5`,
  `Observation?_id=${encounter.id}`,
  `Observation?_lastUpdated=ge2000-01-01&_count=5`,
  // string
  `Patient?family=${e(family.slice(0, 3))}`,
  `Patient?family:exact=${e(family)}`,
  `Patient?family:contains=${e(family.slice(1, 4))}`,
  `Patient?name=${e(family)}&gender=female`,
  `Patient?address-city=Boston`,
  `Patient?family:missing=true`,
  `Patient?deceased:missing=false`,
  // uri
  `Observation?_profile=${e('http://hl7.org/fhir/StructureDefinition/vitalsigns')}`,
  `Observation?_profile:below=${e('http://hl7.org/fhir/StructureDefinition/')}`,
  `Observation?_profile:above=${e('http://hl7.org/fhir/StructureDefinition/vitalsigns/x')}`,
  // reference
  `Observation?subject=Patient/${patient.id}`,
  `Observation?patient=${patient.id}&_count=5`,
  `Encounter?subject:missing=true`,
  `Observation?subject:Patient=${patient.id}`,
  `Observation?encounter=Encounter/${encounter.id}`,
  `Observation?subject:identifier=${e(identifier)}`,
  // date, each prefix
  `Encounter?date=ge${day}&date=lt${next}`,
  `Encounter?date=${day}`,
  `Encounter?date=ge${day}`,
  `Encounter?date=gt${day}`,
  `Encounter?date=eb${day}`,
  `Encounter?date=lt${day}`,
  `Encounter?date=le1990-01-01`,
  `Encounter?date=lt1950-01-01`,
  `Encounter?date=sa${day}`,
  `Encounter?date=ap${day}`,
  `Encounter?date=ne${day}&_count=5`,
  `Observation?date=ge2019-01-01`,
  `Observation?date=ge2030-01-01`,
  `Observation?date=lt1950-01-01`,
  `Observation?date=2015`,
  `Observation?date=ge2015-01-01&date=lt2015-02-01&code=${e(`${LOINC}|8302-2`)}`,
  `Observation?subject=Patient/${patient.id}&date=ge2015`,
  `Patient?birthdate=${patient.birthDate}`,
  `Patient?birthdate=lt1950`,
  `Patient?death-date:missing=false`,
  `Condition?onset-date=ge2010&_count=3`,
  // number (RiskAssessment.probability: none in Synthea, shapes still planned)
  `RiskAssessment?probability=gt0.5`,
  `RiskAssessment?probability=lt0.5`,
  `RiskAssessment?probability=0.5`,
  // quantity
  `Observation?value-quantity=gt150`,
  `Observation?value-quantity=ge100000`,
  `Observation?value-quantity=lt1`,
  `Observation?value-quantity=le0.01`,
  `Observation?value-quantity=5.4`,
  `Observation?value-quantity=${e(`183||cm`)}`,
  `Observation?value-quantity=${e(`gt1.5|${UCUM}|m`)}`,
  `Observation?value-quantity=${e(`lt10|${UCUM}|kg`)}`,
  `Observation?value-quantity=${e(`ap70|${UCUM}|kg`)}`,
  `Observation?value-quantity=${e(`sa100|${UCUM}|mg/dL`)}`,
  `Observation?value-quantity=${e(`eb50|${UCUM}|mg/dL`)}`,
  `Observation?value-quantity=${e(`ne5.4|${UCUM}|%`)}&_count=5`,
  `Observation?component-value-quantity=gt140`,
  `Observation?value-quantity=${e(`gt100|${UCUM}|`)}`,
  // composite
  `Observation?code-value-quantity=${e(`${LOINC}|8302-2$gt150`)}`,
  `Observation?code-value-quantity=${e(`${LOINC}|8302-2$lt100|${UCUM}|cm`)}`,
  `Observation?component-code-value-quantity=${e(`${LOINC}|8480-6$gt140`)}`,
  // full text
  `Observation?_text=glucose`,
  `Condition?_content=diabetes`,
  // chains, reverse chains, _has
  `Encounter?subject:Patient.identifier=${e(identifier)}&_count=20`,
  `Observation?subject.family=${e(family)}`,
  `Observation?subject:Patient.birthdate=lt1950&_count=5`,
  `Observation?encounter.date=ge${day}&_count=5`,
  `Patient?_has:Condition:patient:code=${e(`${SCT}|44054006`)}&family=${e(family.slice(0, 3))}`,
  `Patient?_has:Observation:patient:code=${e(`${LOINC}|8302-2`)}&_count=5`,
  `Patient?_has:Observation:patient:date=ge2019&_count=5`,
  `Patient?_has:Encounter:patient:_has:Observation:encounter:code=${e(`${LOINC}|8302-2`)}&_count=3`,
  // includes
  `Encounter?subject=Patient/${patient.id}&_include=Encounter:participant&_include=Encounter:service-provider&_count=20`,
  `Patient?_id=${patient.id}&_revinclude=Observation:subject&_count=5`,
  `Patient?_id=${patient.id}&_revinclude=Encounter:patient&_revinclude:iterate=Observation:encounter`,
  `MedicationRequest?subject=Patient/${patient.id}&_include=MedicationRequest:medication&_include:iterate=Medication:manufacturer`,
  // sort
  `Observation?subject=Patient/${patient.id}&_sort=date`,
  `Observation?subject=Patient/${patient.id}&_sort=-date`,
  `Observation?subject=Patient/${patient.id}&_sort=code`,
  `Observation?subject=Patient/${patient.id}&_sort=-value-quantity`,
  `Patient?_sort=family&_count=5`,
  `Observation?code=${e(`${LOINC}|8302-2`)}&_sort=-date&_count=5`,
  `Encounter?_sort=date&_count=5`,
  // compartments, totals, paging
  `Patient/${patient.id}/Condition`,
  `Patient/${patient.id}/Observation?code=${e(`${LOINC}|8302-2`)}`,
  `Observation?subject=Patient/${patient.id}&_total=accurate&_count=5`,
  `Observation?code=${e(`${LOINC}|8302-2`)}&_summary=count`,
  `Observation?date=ge2019-01-01&_summary=count`,
  `Observation?value-quantity=gt150&_summary=count`,
];

for (const url of urls) {
  let bundle = await get(url);
  // Three pages: a later page's statements too.
  for (let page = 1; page < 3 && bundle; page++) {
    const link = (bundle.link as Json[] | undefined)?.find((l) => l.relation === 'next')?.url as
      string | undefined;
    if (!link) break;
    currentUrl = `${url} (page ${page + 1})`;
    const response = await app.fastify.inject({ url: link.slice(link.indexOf('/fhir/')) });
    bundle = response.statusCode === 200 ? (JSON.parse(response.body) as Json) : undefined;
  }
}

recording = false;
// BENCH_RUNS=N: also each search's median time through the service (N runs, after one warm-up), to compare two
// builds' stores shape by shape (run each build on its own copy of the same store, alternately).
const RUNS = Number(process.env.BENCH_RUNS ?? 0);
if (RUNS > 0) {
  for (const url of urls) {
    const times: number[] = [];
    for (let run = 0; run <= RUNS; run++) {
      const start = performance.now();
      await app.fastify.inject({ url: `/fhir/${url}` });
      if (run > 0) times.push(performance.now() - start);
    }
    times.sort((a, b) => a - b);
    console.log(`TIME ${times[Math.floor(times.length / 2)]!.toFixed(3)} ${url}`);
  }
}
await app.close();
const db = new Database(join(dataDir, 'resources.sqlite'), { readonly: true });
let scans = 0;
for (const [sql, { url, binds, source: statement }] of seen) {
  let plan: { detail: string }[];
  try {
    plan = db.prepare(`EXPLAIN QUERY PLAN ${statement}`).all(...(binds as never[])) as { detail: string }[];
  } catch (err) {
    console.log(`? ${url}\n  ${sql}\n  (${(err as Error).message})`);
    continue;
  }
  const lines = plan.map((p) => p.detail).filter((d) => /\b(si|sr|search_index)\b/.test(d));
  // `WHERE 0`: a parameter nothing was ever indexed under (no key): nothing is read.
  const scan =
    !/WHERE 0 /.test(statement) &&
    plan.some((p) => /^SCAN (search_index|si|sr)\b/.test(p.detail) && !/INDEX/.test(p.detail));
  if (scan) scans++;
  console.log(
    `${scan ? 'SCAN ' : ''}${url}\n  ${sql.replace(/\s+/g, ' ').slice(0, 400)}\n  ${lines.join('\n  ')}`,
  );
}
console.log(`\n${seen.size} statements on search_index, ${scans} scanning it`);
db.close();
rmSync(dataDir, { recursive: true, force: true });
