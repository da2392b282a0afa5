/**
 * The official R4 examples (npm hl7.fhir.r4.examples@4.0.1), PUT with their own ids and read back.
 * Selection: every instance example (all resource types except the definitional and terminology resources,
 * which are the specification's own definitions), plus the first few files of each of those types.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { isLosslessNumber, parseFhirJson } from '../../src/fhir/fhir-json.js';

const require = createRequire(import.meta.url);
export const EXAMPLES_DIR = dirname(require.resolve('hl7.fhir.r4.examples/package.json'));

export const DEFINITIONAL_TYPES = new Set([
  'StructureDefinition',
  'SearchParameter',
  'ValueSet',
  'CodeSystem',
  'ConceptMap',
  'CompartmentDefinition',
  'OperationDefinition',
  'NamingSystem',
  'ImplementationGuide',
  'CapabilityStatement',
  'StructureMap',
]);
const DEFINITIONAL_SAMPLE = 5;

export interface Example {
  file: string;
  resourceType: string;
  id: string;
  text: string;
}

export function selectExamples(): Example[] {
  const files = readdirSync(EXAMPLES_DIR)
    .filter((f) => f.endsWith('.json') && f !== 'package.json' && !f.startsWith('.'))
    .sort();
  const perDefinitionalType = new Map<string, number>();
  const seen = new Set<string>();
  const out: Example[] = [];
  for (const file of files) {
    const text = readFileSync(join(EXAMPLES_DIR, file), 'utf8');
    const resource = JSON.parse(text) as { resourceType?: string; id?: string };
    if (!resource.resourceType || !resource.id) continue;
    const key = `${resource.resourceType}/${resource.id}`;
    if (seen.has(key)) continue; // ImplementationGuide/fhir comes twice
    if (DEFINITIONAL_TYPES.has(resource.resourceType)) {
      const n = perDefinitionalType.get(resource.resourceType) ?? 0;
      if (n >= DEFINITIONAL_SAMPLE) continue;
      perDefinitionalType.set(resource.resourceType, n + 1);
    }
    seen.add(key);
    out.push({ file, resourceType: resource.resourceType, id: resource.id, text });
  }
  return out;
}

/**
 * A canonical text of a resource for comparison: keys sorted, numbers exactly as written (lossless),
 * meta.versionId and meta.lastUpdated dropped (the server sets them), an empty meta dropped.
 */
export function comparable(text: string): string {
  const resource = parseFhirJson<Record<string, any>>(text);
  if (resource.meta) {
    const { versionId: _v, lastUpdated: _l, ...rest } = resource.meta;
    if (Object.keys(rest).length === 0) delete resource.meta;
    else resource.meta = rest;
  }
  return canonical(resource);
}

function canonical(value: unknown): string {
  if (isLosslessNumber(value)) return value.value;
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    return `{${Object.keys(record)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(record[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Official examples the service refuses (they break R4 rules), with the reason: test/support/known-bad-examples.ts. */
export { KNOWN_BAD_EXAMPLES as REFUSED_EXAMPLES } from '../support/known-bad-examples.js';

/** The body limit for this test: the largest example (Bundle-resources.json) is 35 MB. */
export const EXAMPLES_BODY_LIMIT = '64MiB';
