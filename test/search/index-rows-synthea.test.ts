/**
 * The index rows of real data stay what they were: every resource of the first 5 Synthea bundles, its rows
 * (extractIndex, full-text rows included) serialised field by field, hashed. The digest was taken from the code
 * before the extraction was made cheaper (issue 17, main at 45f9f3b): a change to the rows a resource gets must be
 * deliberate (rows already stored would differ from those of new writes until `$reindex`), and update it.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import { syntheaFiles } from './helpers.js';

const field = (v: string | number | undefined): string =>
  v === undefined ? '∅' : typeof v === 'number' ? (Object.is(v, -0) ? '-0' : String(v)) : JSON.stringify(v);

describe('index rows of Synthea resources', () => {
  it('are byte for byte those of the code before issue 17', () => {
    const hash = createHash('sha256');
    let resources = 0;
    let rows = 0;
    for (const file of syntheaFiles(5)) {
      const bundle = parseFhirJson<{ entry: { resource: FhirResource }[] }>(readFileSync(file, 'utf8'));
      for (const { resource } of bundle.entry) {
        resources++;
        hash.update(`${resource.resourceType}/${String(resource.id)}\n`);
        for (const e of extractIndex(resource)) {
          rows++;
          hash.update(
            [e.param, e.type, e.system, e.value, e.reference, e.low, e.high].map(field).join('\t') + '\n',
          );
        }
      }
    }
    expect({ resources, rows, digest: hash.digest('hex') }).toEqual({
      resources: 1476,
      rows: 18360,
      digest: '6aced0c22b28409ca02a34ce34aebcc98647ddfecb480f6ec064a0da58ceb14d',
    });
  });
});
