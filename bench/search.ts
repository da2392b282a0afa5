/**
 * Search benchmarks: definition loading and index extraction per resource on the Synthea bundles.
 * Run: npx tsx bench/search.ts [bundleCount]
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseFhirJson, type FhirResource } from '../src/mapping/fhir-json.js';
import { searchDefinitions } from '../src/fhir/search/definitions.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';

const dir = join(process.cwd(), '../shared/data/synthea-bundles');
const bundleCount = Number(process.argv[2] ?? 20);

const t0 = performance.now();
const defs = searchDefinitions();
const loadMs = performance.now() - t0;

const resources: FhirResource[] = [];
for (const file of readdirSync(dir).filter((f) => f.endsWith('.json')).slice(0, bundleCount)) {
  const bundle = parseFhirJson<{ entry: { resource: FhirResource }[] }>(readFileSync(join(dir, file), 'utf8'));
  for (const entry of bundle.entry) resources.push(entry.resource);
}

// warm-up (lazy compilation of expressions)
for (const r of resources.slice(0, 2000)) extractIndex(r);

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

console.log(`definitions load: ${loadMs.toFixed(1)} ms (${defs.resourceTypes.length} types, ${defs.unsupported.length} params not indexed)`);
console.log(`extraction: ${resources.length} resources from ${bundleCount} bundles, ${rows} rows, ${((totalMs * 1000) / resources.length).toFixed(1)} µs/resource, ${Math.round(resources.length / (totalMs / 1000))} resources/s`);
console.log('\n| type | count | µs/resource | rows/resource |\n|---|---:|---:|---:|');
for (const [type, agg] of [...perType].sort((a, b) => b[1].n - a[1].n)) {
  console.log(`| ${type} | ${agg.n} | ${(agg.us / agg.n).toFixed(1)} | ${(agg.rows / agg.n).toFixed(1)} |`);
}
