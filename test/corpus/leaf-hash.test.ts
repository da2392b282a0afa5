/**
 * The leaf hash of a stored version (leafHashOfVersion: the anchor hook of every write, and the verifier) stays what
 * other members recompute: the SHA-256 of the salt and the canonical text of canonicalizeText, the reference string
 * pass. Checked on every Synthea resource in its stored form (../shared/data/synthea-bundles, as a write stores it)
 * and on every official R4 example up to 256 KB as written (5,246 of 5,307: the larger ones are definitional Bundles
 * of megabytes, 137 MB in all, too slow for the suite), in both leaf formats; and on fixed versions against hashes computed
 * with the release before leafHashOfVersion (main at 87dd149), so that a change of both passes would show too.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { canonicalizeText } from '../../src/fhir/canonical.js';
import { JsonSyntaxError, parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { serialiseVersion } from '../../src/fhir/store/store-support.js';
import { canonicalOfVersion, leafHashOf, leafHashOfVersion } from '../../src/integrity/hashing.js';

const SALT = '5a'.repeat(32);
const SYNTHEA = join('..', 'shared', 'data', 'synthea-bundles');
const EXAMPLES = dirname(createRequire(import.meta.url).resolve('hl7.fhir.r4.examples/package.json'));
const SHARDS = 4;
const EXAMPLE_MAX_BYTES = 256 * 1024;

/** A version as the store hands it to the anchor hook. */
function stored(json: string, custodian?: string) {
  return {
    resourceType: 'Observation',
    id: 'o1',
    versionId: 3,
    lastUpdated: '2026-12-07T23:00:00.000Z',
    deleted: false,
    json,
    custodian,
  };
}

/** leafHashOfVersion against the string pass, in both leaf formats; the texts that differ. */
function differing(texts: Iterable<string>): string[] {
  const differ: string[] = [];
  for (const json of texts) {
    const version = stored(json, 'Organization/custodian-ü');
    const canonical = canonicalizeText(json);
    for (const leafVersion of [1, 2] as const) {
      if (
        leafHashOfVersion(SALT, version, leafVersion) !==
        leafHashOf(SALT, canonical, leafVersion, version.custodian)
      )
        differ.push(json.slice(0, 120));
    }
  }
  return differ;
}

describe('leafHashOfVersion: the hash other members verify', () => {
  it('gives the hashes of the release before it on fixed versions (v1, v2, a deletion)', () => {
    const json =
      '{"resourceType":"Observation","id":"o1","meta":{"versionId":"3","lastUpdated":"2026-12-07T23:00:00.000Z"},' +
      '"status":"final","valueQuantity":{"value":1.50,"unit":"mg"},"note":[{"text":"Müller \\u2028 😀 \\"q\\""}],' +
      '"code":{"text":"x","coding":[{"system":"http://loinc.org","code":"1-8"}]},"effectiveDateTime":"2026-12-07"}';
    expect(leafHashOfVersion(SALT, stored(json), 1)).toBe(
      '843874e643bdbfdf5667cc8055cfe9d3ff2d12503aaa4a53d485cf06bd1f1487',
    );
    expect(leafHashOfVersion(SALT, stored(json, 'Organization/a'), 2)).toBe(
      'b34e3b092595738de13ecd5db126ea076233697e7a62ccbe5557fcd001bdd55d',
    );
    expect(leafHashOfVersion(SALT, { ...stored(json), json: undefined, deleted: true }, 2)).toBe(
      'a7699b7c976dca36bcb390a3f106265d1aa812dcc1d6420ce9f559b3084ed84b',
    );
  });

  it('throws what canonicalOfVersion throws for a stored text that is not JSON', () => {
    for (const json of ['{"a":1,"a":2}', '{"a":', '{"a":01}', '[1,]']) {
      let expected: unknown;
      try {
        canonicalOfVersion(stored(json));
      } catch (err) {
        expected = err;
      }
      expect(expected).toBeInstanceOf(JsonSyntaxError);
      expect(() => leafHashOfVersion(SALT, stored(json), 2)).toThrow((expected as Error).message);
    }
  });

  const bundles = readdirSync(SYNTHEA)
    .filter((f) => f.endsWith('.json'))
    .sort();
  for (let shard = 0; shard < SHARDS; shard++) {
    it(`equals the string pass on every Synthea resource as stored, shard ${shard + 1}/${SHARDS}`, () => {
      const texts: string[] = [];
      for (let i = shard; i < bundles.length; i += SHARDS) {
        const bundle = parseFhirJson<{ entry: { resource: FhirResource }[] }>(
          readFileSync(join(SYNTHEA, bundles[i]), 'utf8'),
        );
        for (const { resource } of bundle.entry)
          texts.push(serialiseVersion(resource, resource.id ?? 'x', 1, '2026-12-07T23:00:00.000Z'));
      }
      expect(texts.length).toBeGreaterThan(5000);
      expect(differing(texts)).toEqual([]);
    });
  }

  const examples = readdirSync(EXAMPLES)
    .filter((f) => f.endsWith('.json') && f !== 'package.json' && !f.startsWith('.'))
    .filter((f) => statSync(join(EXAMPLES, f)).size <= EXAMPLE_MAX_BYTES)
    .sort();
  for (let shard = 0; shard < SHARDS; shard++) {
    it(`equals the string pass on every R4 example up to 256 KB as written, shard ${shard + 1}/${SHARDS}`, () => {
      expect(examples.length).toBeGreaterThan(5000);
      const texts: string[] = [];
      for (let i = shard; i < examples.length; i += SHARDS)
        texts.push(readFileSync(join(EXAMPLES, examples[i]), 'utf8'));
      expect(differing(texts)).toEqual([]);
    });
  }
});
