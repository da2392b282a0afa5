/**
 * FHIR XML conversion cost (src/fhir/fhir-xml.ts) on the resources of the Synthea Bundles
 * (../shared/data/synthea-bundles): JSON -> XML (an XML answer) and XML -> JSON text (an XML write), per resource,
 * against the JSON work the same request does anyway (parseFhirJson + stringifyFhirJson), measured in the same run.
 *
 *   npm run bench:xml [-- --limit N]
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { coreRegistry } from '../src/fhir/definitions/definition-registry.js';
import { FhirXml } from '../src/fhir/fhir-xml.js';
import { parseFhirJson, stringifyFhirJson } from '../src/fhir/fhir-json.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.join(root, '../shared/data/synthea-bundles');
const limitArg = process.argv.indexOf('--limit');
const limit = limitArg > 0 ? Number(process.argv[limitArg + 1]) : 20_000;

const texts: string[] = [];
for (const file of fs
  .readdirSync(dir)
  .filter((name) => name.endsWith('.json'))
  .sort()) {
  const bundle = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  for (const entry of bundle.entry ?? [])
    if (entry.resource && texts.length < limit) texts.push(JSON.stringify(entry.resource));
  if (texts.length >= limit) break;
}
const xml = new FhirXml((type) => coreRegistry().typeDefinition(type));
const resources = texts.map((text) => parseFhirJson(text));
const xmlTexts = resources.map((resource) => xml.toXml(resource)); // also warms the element models

function time(label: string, run: () => void): { label: string; micros: number } {
  run(); // warm-up
  const start = performance.now();
  run();
  return { label, micros: ((performance.now() - start) * 1000) / texts.length };
}

const baseline = time('JSON parse + stringify (baseline)', () => {
  for (const text of texts) stringifyFhirJson(parseFhirJson(text));
});
const rows = [
  baseline,
  time('JSON -> XML (toXml of the parsed resource)', () => {
    for (const resource of resources) xml.toXml(resource);
  }),
  time('XML -> JSON text (toJsonText)', () => {
    for (const text of xmlTexts) xml.toJsonText(text);
  }),
];
const bytes = (list: string[]) => list.reduce((sum, s) => sum + s.length, 0) / list.length;
console.log(
  `${texts.length} resources, mean ${Math.round(bytes(texts))} chars as JSON, ${Math.round(bytes(xmlTexts))} as XML\n`,
);
console.log('what                                         µs/resource  x baseline');
for (const row of rows)
  console.log(
    `${row.label.padEnd(44)} ${row.micros.toFixed(1).padStart(11)}  ${(row.micros / baseline.micros).toFixed(1).padStart(10)}`,
  );
