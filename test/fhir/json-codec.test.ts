import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  decodeJson,
  decodeJsonBytes,
  deflaterReused,
  encodeJson,
  inflaterReused,
} from '../../src/fhir/store/json-codec.js';
import { JSON_DICTIONARY_1 } from '../../src/fhir/store/json-dictionary.js';

const DICTIONARY = Buffer.from(JSON_DICTIONARY_1.join(''), 'utf8');

/** A stored body of format 1 made by zlib directly, so the test does not trust encodeJson to read it back. */
function stored(text: string): Buffer {
  return Buffer.concat([
    Buffer.from([1]),
    deflateRawSync(Buffer.from(text, 'utf8'), { dictionary: DICTIONARY }),
  ]);
}

function observation(i: number, note = ''): string {
  return JSON.stringify({
    resourceType: 'Observation',
    id: `obs-${i}`,
    meta: { versionId: '1', lastUpdated: '2026-12-07T20:00:00.000Z' },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: `${8000 + i}-1`, display: 'Body weight' }] },
    valueQuantity: { value: 70.5 + i, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
    note: note ? [{ text: note }] : undefined,
  });
}

describe('stored JSON (format 1, deflate with the preset dictionary)', () => {
  it('inflates through one reused zlib context on this Node', () => {
    expect(inflaterReused()).toBe(true);
  });

  it('gives every body back byte for byte, one after another through the reused context', () => {
    const texts = Array.from({ length: 200 }, (_, i) =>
      observation(i, i % 7 === 0 ? 'é ✓ 🩺 '.repeat(i) : ''),
    );
    for (const text of texts) {
      expect(decodeJson(stored(text))).toBe(text);
      expect(decodeJsonBytes(stored(text)).equals(Buffer.from(text, 'utf8'))).toBe(true);
    }
  });

  it('keeps a returned body intact when the next one is inflated (bytes are a copy of their own)', () => {
    const first = decodeJsonBytes(stored(observation(1)));
    decodeJsonBytes(stored(observation(2, 'x'.repeat(3000))));
    expect(first.toString('utf8')).toBe(observation(1));
  });

  it('inflates a body larger than the shared output buffer (1 MiB of text)', () => {
    const text = observation(3, 'abcdefghij'.repeat(100_000) + 'ü'.repeat(50_000));
    expect(decodeJson(stored(text))).toBe(text);
    expect(decodeJsonBytes(encodeJson(text) as Buffer).toString('utf8')).toBe(text);
    // and the reused context still answers after it
    expect(decodeJson(stored(observation(4)))).toBe(observation(4));
  });

  it('refuses a corrupt or truncated body as zlib does, and inflates the next body after it', () => {
    const good = stored(observation(5));
    const truncated = good.subarray(0, Math.floor(good.length / 2));
    expect(() => decodeJson(truncated)).toThrow(/unexpected end of file/);
    expect(() => decodeJsonBytes(Buffer.from([1, 0xff, 0xff, 0xff, 0xff]))).toThrow();
    expect(decodeJson(good)).toBe(observation(5));
    expect(inflaterReused()).toBe(true);
  });

  it('reads text stored as it is, and refuses an unknown format byte', () => {
    expect(decodeJson('{"resourceType":"Patient"}')).toBe('{"resourceType":"Patient"}');
    expect(() => decodeJson(Buffer.from([2, 0]))).toThrow(/unknown format \(2\)/);
  });

  it('deflates through one reused zlib context on this Node', () => {
    expect(deflaterReused()).toBe(true);
  });

  it('writes bodies that zlib itself inflates with the whole format-1 dictionary (Synthea resources, one after another)', () => {
    const synthea = join('..', 'shared', 'data', 'synthea-bundles');
    const texts: string[] = [];
    for (const file of readdirSync(synthea).sort().slice(0, 2)) {
      const bundle = JSON.parse(readFileSync(join(synthea, file), 'utf8')) as {
        entry: { resource: object }[];
      };
      for (const { resource } of bundle.entry) texts.push(JSON.stringify(resource));
    }
    texts.push(
      observation(6, 'é ✓ 🩺 \ud800'.repeat(40)),
      observation(7, 'y'.repeat(200_000)),
      observation(8),
    );
    expect(texts.length).toBeGreaterThan(150);
    let storedBytes = 0;
    let textBytes = 0;
    for (const text of texts) {
      const body = encodeJson(text);
      expect(Buffer.isBuffer(body)).toBe(true);
      expect((body as Buffer)[0]).toBe(1);
      const inflated = inflateRawSync((body as Buffer).subarray(1), { dictionary: DICTIONARY });
      expect(inflated.toString('utf8')).toBe(text);
      storedBytes += (body as Buffer).length;
      textBytes += Buffer.byteLength(text);
    }
    // Deflated, not just stored: about a quarter of the text (docs/store.md).
    expect(storedBytes).toBeLessThan(textBytes / 3);
    expect(deflaterReused()).toBe(true);
  });

  it('keeps a text as it is when deflating does not make it smaller', () => {
    expect(encodeJson('{}')).toBe('{}');
    expect(encodeJson('{"a":"\u00e9"}')).toBe('{"a":"\u00e9"}');
  });

  it('stores the same bytes for a text whatever was deflated before it (hie_encode_json is deterministic)', () => {
    // zlib reads a few bytes past a body's end: a reused context must not show it the bodies before (issue 17).
    const dictionaryEnd = DICTIONARY.toString('latin1', DICTIONARY.length - 300);
    const bodies = [
      dictionaryEnd.slice(0, 261),
      dictionaryEnd.slice(-269),
      `{"a":"${dictionaryEnd.slice(-120)}`,
    ];
    for (const body of bodies) {
      const answers = new Set<string>();
      for (const before of ['"', '"}}', 'a"}]}', ' ', '{"b":1}']) {
        encodeJson(before.repeat(Math.ceil(3000 / before.length)));
        const stored = encodeJson(body);
        expect(Buffer.isBuffer(stored)).toBe(true);
        answers.add((stored as Buffer).toString('hex'));
      }
      expect(answers.size).toBe(1);
    }
  });
});
