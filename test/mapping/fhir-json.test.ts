import { describe, expect, it } from 'vitest';
import {
  JsonSyntaxError,
  cloneFhirJson,
  isLosslessNumber,
  parseFhirJson,
  stringifyFhirJson,
  toPlainJson,
} from '../../src/mapping/fhir-json.js';

describe('FHIR JSON keeps numbers as written', () => {
  it.each(['1.50', '105.00', '1e2', '1E+2', '-0', '0.10', '100000000000000000000', '1.0'])(
    'round-trips %s exactly',
    (literal) => {
      const text = `{"resourceType":"Observation","valueQuantity":{"value":${literal}}}`;
      expect(stringifyFhirJson(parseFhirJson(text))).toBe(text);
    },
  );

  it('keeps plain numbers plain (the native fast path)', () => {
    const value = parseFhirJson<any>('{"a":1.5,"b":[3,-2.25],"c":"1.50"}');
    expect(value).toEqual({ a: 1.5, b: [3, -2.25], c: '1.50' });
  });

  it('does not mistake digits inside strings for numbers', () => {
    const value = parseFhirJson<any>('{"s":"1.50 \\"2.0\\"","n":2}');
    expect(value).toEqual({ s: '1.50 "2.0"', n: 2 });
  });

  it('gives validators plain numbers and keeps the original untouched', () => {
    const value = parseFhirJson<any>('{"v":1.50}');
    expect(isLosslessNumber(value.v)).toBe(true);
    expect(toPlainJson(value)).toEqual({ v: 1.5 });
    expect(isLosslessNumber(value.v)).toBe(true);
  });

  it('clones without losing precision', () => {
    const value = parseFhirJson<any>('{"v":[105.00]}');
    const copy = cloneFhirJson(value);
    copy.extra = true;
    expect(stringifyFhirJson(copy)).toBe('{"v":[105.00],"extra":true}');
    expect(value.extra).toBeUndefined();
  });

  it('pretty-prints with precision', () => {
    expect(stringifyFhirJson(parseFhirJson('{"v":1.50}'), 2)).toBe('{\n  "v": 1.50\n}');
  });

  it.each(['', '{', '{"a":}', '{"a":1.50,}', '[1.50', 'nul'])('refuses malformed JSON %j', (text) => {
    expect(() => parseFhirJson(text)).toThrow(JsonSyntaxError);
  });
});
