/**
 * FHIR XML round trip over the official R4 examples (hl7.fhir.r4.examples): every example up to 64 KB (about 5,000;
 * the larger ones are definitional Bundles of megabytes, too slow for the suite) goes JSON -> XML -> JSON and comes
 * back equal to the original, decimals as written, in shards so that no test runs long.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { coreRegistry } from '../../src/fhir/definitions/definition-registry.js';
import { FhirXml } from '../../src/fhir/fhir-xml.js';
import { canonicalize } from '../../src/fhir/canonical.js';
import { parseFhirJson } from '../../src/fhir/fhir-json.js';
import { suiteCacheDir } from '../support/cli-build.js';

const EXAMPLES = dirname(createRequire(import.meta.url).resolve('hl7.fhir.r4.examples/package.json'));
const MAX_BYTES = 64 * 1024;
const SHARDS = 12;

const files = readdirSync(EXAMPLES)
  .filter((name) => name.endsWith('.json') && name !== 'package.json' && !name.startsWith('.'))
  .filter((name) => statSync(join(EXAMPLES, name)).size <= MAX_BYTES)
  .sort();
const converter = new FhirXml((type) => coreRegistry({ cacheDir: suiteCacheDir() }).typeDefinition(type));

describe('R4 examples: JSON -> XML -> JSON', () => {
  // The R4 definitions load here (a hook's timeout), not in the first shard.
  beforeAll(() => {
    converter.toXml({ resourceType: 'Patient' });
  });

  it('covers most of the package', () => {
    expect(files.length).toBeGreaterThan(4500);
  });

  for (let shard = 0; shard < SHARDS; shard++) {
    it(`shard ${shard + 1}/${SHARDS} comes back equal (canonical form, decimals as written)`, () => {
      const differ: string[] = [];
      for (let i = shard; i < files.length; i += SHARDS) {
        const original = parseFhirJson<Record<string, unknown>>(
          readFileSync(join(EXAMPLES, files[i]), 'utf8'),
        );
        if (typeof original?.resourceType !== 'string') continue;
        const back = converter.toJson(converter.toXml(original));
        if (canonicalize(back) !== canonicalize(original)) differ.push(files[i]);
      }
      expect(differ).toEqual([]);
    });
  }
});
