import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { canonicalUtf8, canonicalizeResourceText, canonicalizeText } from '../../src/fhir/canonical.js';
import { JsonSyntaxError, parseFhirJson, stringifyFhirJson } from '../../src/fhir/fhir-json.js';
import { leafHashOf } from '../../src/integrity/hashing.js';

/** What canonicalUtf8 must give: the UTF-8 bytes of the string pass, or its error. */
function expectSameAsText(text: string): void {
  let expected: Buffer | undefined;
  let error: unknown;
  try {
    expected = Buffer.from(canonicalizeText(text), 'utf8');
  } catch (err) {
    error = err;
  }
  if (error) {
    expect(() => canonicalUtf8(text)).toThrow(JsonSyntaxError);
    expect(() => canonicalUtf8(text)).toThrow((error as Error).message);
    return;
  }
  expect(Buffer.from(canonicalUtf8(text).bytes).equals(expected!), text.slice(0, 200)).toBe(true);
}

describe('canonicalUtf8: the canonical form written as UTF-8 bytes', () => {
  it('equals the UTF-8 of canonicalizeText on Synthea resources (compact, pretty, whole bundles) and R4 examples', () => {
    const texts: string[] = [];
    const synthea = path.join('..', 'shared', 'data', 'synthea-bundles');
    for (const file of readdirSync(synthea).slice(0, 4)) {
      const text = readFileSync(path.join(synthea, file), 'utf8');
      texts.push(text);
      for (const entry of parseFhirJson<{ entry: { resource: unknown }[] }>(text).entry) {
        texts.push(stringifyFhirJson(entry.resource));
        texts.push(JSON.stringify(entry.resource, null, 2));
      }
    }
    const examples = path.join('node_modules', 'hl7.fhir.r4.examples');
    const small = readdirSync(examples).filter(
      (f) => f.endsWith('.json') && statSync(path.join(examples, f)).size < 200_000,
    );
    for (const file of small.slice(0, 400)) texts.push(readFileSync(path.join(examples, file), 'utf8'));
    expect(texts.length).toBeGreaterThan(2000);
    for (const text of texts) expectSameAsText(text);
  });

  it('writes escapes, non-ASCII text, surrogates and numbers exactly as the string pass', () => {
    const cases = [
      '{"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","b":1}',
      '{"z":"Müller €","a":"😀 \\ud83d\\ude00","m":"\\u2028\\u2029"}',
      '{"lone":"\\ud800","other":"\\udc00x"}',
      '{"raw lone":"\ud800"}',
      '{"raw lone low":"a\udc00b","x":[1]}',
      '{"replacement":"\ufffd","x":1}',
      '{"b":[1.50,{"z":105.00,"a":-0.0}],"a":1E3,"c":12345678901234567890,"d":7,"e":-1e-7,"f":0}',
      ' [ 1 , "x" , { "b" : true , "a" : null } , false , [ ] , { } ] ',
      '"just a string"',
      '-12.5e+3',
      '{"\\u00e9":1,"e":2}',
      '{"é":1,"e":2,"f":{"ü":1}}',
      '{"\\r":1,"1":2}',
      '{"a\\"b":1}',
      '{"del\u007f":1,"a":2}',
      '{"a":{"c":{"e":1,"d":2},"b":[{"y":1,"x":2}]},"0":"first"}',
      '{\n\t"b" : 1,\r\n "a" : 2\n}',
    ];
    for (const text of cases) expectSameAsText(text);
  });

  it('refuses what the string pass refuses, with its error', () => {
    const bad = [
      '{"a":1,"a":2}',
      '{"b":1,"a":2,"b":3}',
      '{"x":{"k":1,"k":1}}',
      '{"a":01}',
      '{"a":1.}',
      '{"a":.5}',
      '{"a":1e}',
      '{"a":-}',
      '{"a":1-2}',
      '{"a":+1}',
      '{"a":"tab\there"}',
      '{"a":"unterminated}',
      '{"a":tru}',
      '{"a":nul}',
      '{"a":1,}',
      '[1,]',
      '{"a" 1}',
      '{"a":1} extra',
      '{"a":1',
      '',
      '   ',
      '{"a":"\\x"}',
      '{"a":"\\u12"}',
      '{a:1}',
    ];
    for (const text of bad) {
      expect(() => canonicalizeText(text), text).toThrow();
      expectSameAsText(text);
    }
  });

  it('gives the named top-level members as JSON texts of their values', () => {
    const text =
      '{"resourceType":"Observation","id":"o1","meta":{"versionId":"3","lastUpdated":"2024-01-01T00:00:00Z"},"x":{"id":"inner"}}';
    const { members } = canonicalUtf8(text, ['resourceType', 'id', 'meta', 'absent']);
    expect([...members.keys()].sort()).toEqual(['id', 'meta', 'resourceType']);
    expect(JSON.parse(members.get('resourceType')!)).toBe('Observation');
    expect(JSON.parse(members.get('id')!)).toBe('o1');
    expect(JSON.parse(members.get('meta')!)).toEqual({ versionId: '3', lastUpdated: '2024-01-01T00:00:00Z' });
    // The string pass (a lone surrogate elsewhere): the same values.
    const uncommon = text.replace('"x":', '"lone":"\ud800","x":');
    const fromStrings = canonicalUtf8(uncommon, ['id', 'meta']).members;
    expect(JSON.parse(fromStrings.get('id')!)).toBe('o1');
    expect(JSON.parse(fromStrings.get('meta')!)).toEqual(
      JSON.parse(canonicalizeResourceText(text).members.get('meta')!),
    );
    expect(canonicalUtf8('[{"id":"a"}]', ['id']).members.size).toBe(0);
  });

  it('hashes to the same leaf as the canonical text', () => {
    const salt = 'ab'.repeat(32);
    const text = '{"resourceType":"Patient","name":[{"family":"Müller"}],"id":"p"}';
    for (const version of [1, 2] as const)
      expect(leafHashOf(salt, canonicalUtf8(text).bytes, version, 'Organization/a')).toBe(
        leafHashOf(salt, canonicalizeText(text), version, 'Organization/a'),
      );
  });
});
