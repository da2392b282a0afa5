/**
 * `_summary` and `_elements` (http://hl7.org/fhir/R4/search.html#summary, #elements) on one resource.
 * Both work on top-level elements (nested summary trimming is not done); the result is marked SUBSETTED.
 * Summary elements come from the official StructureDefinitions (isSummary), read once per type.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fhirError } from '../outcome.js';
import type { FhirResource } from '../fhir-json.js';

const require = createRequire(import.meta.url);
const EXAMPLES_DIR = dirname(require.resolve('hl7.fhir.r4.examples/package.json'));

const SUBSETTED = {
  system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue',
  code: 'SUBSETTED',
  display: 'subsetted',
};
const ALWAYS = new Set(['resourceType', 'id', 'meta']);

export interface Representation {
  summary?: 'true' | 'text' | 'data' | 'false' | 'count';
  elements?: string[];
}

/** `_summary`/`_elements` of a query, validated; undefined when the full resource is wanted. */
export function representationOf(query: Record<string, string[]>): Representation | undefined {
  const summary = query._summary?.[0];
  const elements = query._elements
    ?.flatMap((v) => v.split(','))
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (summary !== undefined && !['true', 'text', 'data', 'false', 'count'].includes(summary)) {
    throw fhirError(
      'parameter-invalid',
      `_summary must be true, text, data, count or false, not '${summary}'`,
      { expression: '_summary' },
    );
  }
  if ((summary === undefined || summary === 'false') && (!elements || elements.length === 0))
    return undefined;
  return { summary: summary as Representation['summary'], elements };
}

const summaryElementsByType = new Map<string, Set<string> | undefined>();

/** Top-level element names (JSON keys' stems: `value` for `value[x]`) flagged isSummary, or undefined if unknown. */
function summaryElements(resourceType: string): Set<string> | undefined {
  if (summaryElementsByType.has(resourceType)) return summaryElementsByType.get(resourceType);
  let names: Set<string> | undefined;
  try {
    const definition = JSON.parse(
      readFileSync(join(EXAMPLES_DIR, `StructureDefinition-${resourceType}.json`), 'utf8'),
    ) as {
      snapshot?: { element?: { path: string; isSummary?: boolean; min?: number }[] };
    };
    names = new Set();
    for (const element of definition.snapshot?.element ?? []) {
      const parts = element.path.split('.');
      if (parts.length === 2 && (element.isSummary || (element.min ?? 0) > 0))
        names.add(parts[1].replace('[x]', ''));
    }
  } catch {
    names = undefined;
  }
  summaryElementsByType.set(resourceType, names);
  return names;
}

function stemOf(key: string, stems: Set<string>): string {
  if (stems.has(key)) return key;
  const match = /^([a-z][A-Za-z0-9]*?)[A-Z][A-Za-z0-9]*$/.exec(key);
  return match && stems.has(match[1]) ? match[1] : key;
}

function markSubsetted(resource: FhirResource): FhirResource {
  const meta = { ...(resource.meta ?? {}) } as Record<string, unknown>;
  meta.tag = [...((meta.tag as unknown[]) ?? []), SUBSETTED];
  return { ...resource, meta: meta as FhirResource['meta'] };
}

/** The resource reduced as asked (a new object; the input is not changed). */
export function applyRepresentation(resource: FhirResource, representation: Representation): FhirResource {
  const { summary, elements } = representation;
  if (summary === 'data') {
    const { text: _text, ...rest } = resource;
    return markSubsetted(rest as FhirResource);
  }
  if (summary === 'text') {
    const out: FhirResource = { resourceType: resource.resourceType };
    for (const key of ['id', 'meta', 'text']) if (resource[key] !== undefined) out[key] = resource[key];
    return markSubsetted(out);
  }
  if (summary === 'true') {
    const stems = summaryElements(resource.resourceType);
    if (!stems) return resource;
    const out: FhirResource = { resourceType: resource.resourceType };
    for (const key of Object.keys(resource)) {
      if (ALWAYS.has(key) || stems.has(stemOf(key.replace(/^_/, ''), stems))) out[key] = resource[key];
    }
    return markSubsetted(out);
  }
  if (elements && elements.length > 0) {
    const wanted = new Set(
      elements.map((e) => e.replace(new RegExp(`^${resource.resourceType}\\.`), '').split('.')[0]),
    );
    const out: FhirResource = { resourceType: resource.resourceType };
    for (const key of Object.keys(resource)) {
      const bare = key.replace(/^_/, '');
      if (ALWAYS.has(key) || wanted.has(bare) || wanted.has(stemOf(bare, wanted))) out[key] = resource[key];
    }
    return markSubsetted(out);
  }
  return resource;
}
