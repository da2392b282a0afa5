/** Precision test: decimals such as 1.50 and 105.00 hash, verify and read back with exactly those digits. */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { canonicalizeResourceText, canonicalizeText } from '../../src/fhir/canonical.js';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { decodeJson, encodeJson } from '../../src/fhir/store/json-codec.js';
import { CUSTODIAN, openFixture, type Fixture } from './helpers.js';

let fixture: Fixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

const TEXT =
  '{"resourceType":"Observation","id":"prec","status":"final","code":{"text":"panel"},' +
  '"valueQuantity":{"value":1.50,"unit":"mmol/L"},' +
  '"component":[{"code":{"text":"a"},"valueQuantity":{"value":105.00,"unit":"mg"}}]}';

describe('decimal precision through the integrity path', () => {
  it('stores, hashes, anchors and verifies 1.50 and 105.00 with their digits', async () => {
    fixture = await openFixture({ batchSize: 10 });
    const f = fixture;
    const version = await f.write(parseFhirJson<FhirResource>(TEXT));
    expect(version.json).toContain('"value":1.50');
    expect(version.json).toContain('"value":105.00');

    const canonical = canonicalizeText(version.json!);
    expect(canonical).toContain('"value":1.50');
    expect(canonical).toContain('"value":105.00');

    await f.integrity.anchorer.drain();
    const read = await f.store.read('Observation', 'prec');
    expect(read?.json).toContain('"value":1.50');
    expect(read?.json).toContain('"value":105.00');

    const result = await f.integrity.verifier.verifyVersion(read!);
    expect(result).toMatchObject({ status: 'anchored', verified: true });
    // The anchored hash is the salted hash (leaf format 2: with the custodian) of the canonical text with the
    // written digits, recomputable by anyone holding the record, its salt and custodian.
    expect(result).toMatchObject({ leafVersion: 2, custodian: CUSTODIAN });
    const leaf = (text: string) =>
      createHash('sha256')
        .update(Buffer.from(result.salt!, 'hex'))
        .update(`hie-ledger leaf v2\n${JSON.stringify(CUSTODIAN)}\n${text}`, 'utf8')
        .digest('hex');
    const expected = leaf(canonical);
    expect(result.hash).toBe(expected);
    expect(leaf(canonical.replace('"value":1.50', '"value":1.5'))).not.toBe(expected);
  });

  it('treats dropping a trailing zero (1.50 -> 1.5) in the stored text as an alteration', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hie-precision-'));
    fixture = await openFixture({ batchSize: 10 }, dir);
    await fixture.write(parseFhirJson<FhirResource>(TEXT));
    await fixture.integrity.anchorer.drain();
    await fixture.close();
    fixture = undefined;

    const db = new Database(path.join(dir, 'resources.sqlite'));
    // The text is kept deflated (json-codec.ts): decoded, edited and encoded again.
    const stored = db.prepare(`SELECT json FROM resource_version WHERE id = 'prec'`).pluck().get() as Buffer;
    db.prepare(`UPDATE resource_version SET json = ? WHERE id = 'prec'`).run(
      encodeJson(decodeJson(stored).replace('"value":1.50', '"value":1.5')),
    );
    db.close();

    fixture = await openFixture({ batchSize: 10 }, dir);
    const read = await fixture.store.read('Observation', 'prec');
    expect(read?.json).toContain('"value":1.5,');
    expect(await fixture.integrity.verifier.verifyVersion(read!)).toMatchObject({
      status: 'mismatch',
      verified: false,
    });
    // (openFixture with an explicit dir leaves it: remove it here.)
    await fixture.close();
    fixture = undefined;
    await rm(dir, { recursive: true, force: true });
  });
});

describe('canonicalizeResourceText', () => {
  it('gives the canonical text and each top-level member’s canonical value, from one pass', () => {
    const text =
      '{ "resourceType":"Observation", "meta":{"versionId":"3","lastUpdated":"2024-01-01T00:00:00Z"},' +
      ' "id":"o\\u0031", "valueQuantity":{"value":1.50,"id":"inner"}, "note":[{"id":"x"}] }';
    const { canonical, members } = canonicalizeResourceText(text);
    expect(canonical).toBe(canonicalizeText(text));
    expect([...members.keys()].sort()).toEqual(['id', 'meta', 'note', 'resourceType', 'valueQuantity']);
    expect(members.get('id')).toBe('"o1"');
    expect(members.get('meta')).toBe('{"lastUpdated":"2024-01-01T00:00:00Z","versionId":"3"}');
    expect(members.get('valueQuantity')).toBe('{"id":"inner","value":1.50}');
    // Not an object at the top: no members, even of objects inside it.
    expect(canonicalizeResourceText('[{"id":"a"}]').members.size).toBe(0);
    expect(() => canonicalizeResourceText('{"id":"a","id":"b"}')).toThrow(/Duplicate/);
  });
});
