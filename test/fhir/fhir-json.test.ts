import { describe, expect, it } from 'vitest';
import {
  JsonSyntaxError,
  MAX_JSON_DEPTH,
  cloneFhirJson,
  firstInvalidUtf8,
  parseClientJson,
  isLosslessNumber,
  parseFhirJson,
  stringifyFhirJson,
  toPlainJson,
} from '../../src/fhir/fhir-json.js';

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

describe('JSON from clients (parseClientJson)', () => {
  const nested = (levels: number) => `${'['.repeat(levels - 1)}{"a":1.50}${']'.repeat(levels - 1)}`;

  it(`accepts ${MAX_JSON_DEPTH} levels and refuses one more, with the position, before parsing`, () => {
    expect(stringifyFhirJson(parseClientJson(nested(MAX_JSON_DEPTH)))).toBe(nested(MAX_JSON_DEPTH));
    const error = (() => {
      try {
        parseClientJson(nested(MAX_JSON_DEPTH + 1));
      } catch (err) {
        return err as JsonSyntaxError;
      }
    })();
    expect(error).toBeInstanceOf(JsonSyntaxError);
    expect(error?.message).toMatch(/nested more than 100 levels deep/);
    expect(error?.position).toBe(MAX_JSON_DEPTH);
    // 100,000 levels: refused by the scan, no stack overflow (RangeError) anywhere.
    expect(() => parseClientJson(`${'['.repeat(100_000)}${']'.repeat(100_000)}`)).toThrow(JsonSyntaxError);
  });

  it('ignores brackets inside strings when counting depth', () => {
    const text = `{"s":"${'['.repeat(500)}"}`;
    expect(parseClientJson<any>(text).s).toHaveLength(500);
  });

  it.each([
    ['{"a":1,"a":2}', 'a', 7],
    ['{"a":1,"a":1}', 'a', 7],
    ['{"x":{"b":1.50,"c":2,"b":1.50}}', 'b', 21],
    ['[{"k":1},{"k":1,"k":1}]', 'k', 16],
    ['{"__proto__":1,"__proto__":2}', '__proto__', 15],
    ['{"\\u0061":1,"a":2}', 'a', 12],
  ])('refuses duplicate property names in %s (both parse paths)', (text, key, position) => {
    expect(() => parseClientJson(text)).toThrow(JsonSyntaxError);
    try {
      parseClientJson(text);
    } catch (err) {
      expect((err as JsonSyntaxError).message).toBe(
        `the property '${key}' appears more than once in one object`,
      );
      expect((err as JsonSyntaxError).position).toBe(position);
    }
  });

  it('accepts the same name in different objects, and __proto__ as an ordinary member', () => {
    const value = parseClientJson<any>('{"a":{"a":1},"b":[{"a":2},{"a":3}],"__proto__":{"x":1.50}}');
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
    expect(Object.keys(value)).toEqual(['a', 'b', '__proto__']);
    const copy = cloneFhirJson(value);
    expect(Object.keys(copy)).toEqual(['a', 'b', '__proto__']);
    expect(Object.getPrototypeOf(copy)).toBe(Object.prototype);
  });

  it.each([
    ['"\\ud800"', '\\ud800', 1],
    ['"x\\uDC00"', '\\uDC00', 2],
    ['"\\ud83d\\u0041"', '\\ud83d', 1],
    ['"\\ud83d\\n"', '\\ud83d', 1],
    ['"\\ud83d"', '\\ud83d', 1],
    ['"a\ud800b"', '\\ud800', 2],
    ['"a\udfffb"', '\\udfff', 2],
    ['{"k\\ud800":1}', '\\ud800', 3],
  ])('refuses the unpaired surrogate in %s', (text, shown, position) => {
    try {
      parseClientJson(text);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(JsonSyntaxError);
      expect((err as JsonSyntaxError).message).toContain(`surrogate ${shown} without its pair`);
      expect((err as JsonSyntaxError).position).toBe(position);
    }
  });

  it('accepts surrogate pairs, escaped, raw or mixed, and escaped backslashes before a u', () => {
    expect(parseClientJson('"\\ud83d\\ude00"')).toBe('\u{1F600}');
    expect(parseClientJson('"\u{1F600}"')).toBe('\u{1F600}');
    expect(parseClientJson('"\\\\ud800"')).toBe('\\ud800');
  });

  it('keeps numbers exactly as written, like parseFhirJson', () => {
    expect(stringifyFhirJson(parseClientJson('{"v":1.50,"w":[100.000,2]}'))).toBe(
      '{"v":1.50,"w":[100.000,2]}',
    );
  });

  it('finds the first byte that is not UTF-8', () => {
    expect(firstInvalidUtf8(Buffer.from('plain ascii, é, \u20ac, \u{1F600}'))).toBe(-1);
    expect(firstInvalidUtf8(Buffer.from([0x41, 0xff]))).toBe(1);
    expect(firstInvalidUtf8(Buffer.from([0x41, 0xc3]))).toBe(1);
    expect(firstInvalidUtf8(Buffer.from([0xc0, 0xaf]))).toBe(0);
    expect(firstInvalidUtf8(Buffer.from([0x41, 0x42, 0xed, 0xa0, 0x80]))).toBe(2);
    expect(firstInvalidUtf8(Buffer.from([0xf4, 0x90, 0x80, 0x80]))).toBe(0);
    expect(firstInvalidUtf8(Buffer.from([0xe2, 0x82, 0x41]))).toBe(0);
  });
});

describe('duplicate names with numbers that need the lossless path', () => {
  it('are refused by parseClientJson with the same message as on the native path', () => {
    for (const [text, position] of [
      ['{"a":1.50,"a":2.50}', 10],
      ['{"a":1,"a":2}', 7],
    ] as const) {
      try {
        parseClientJson(text);
        expect.unreachable();
      } catch (err) {
        expect((err as JsonSyntaxError).message).toBe(
          "the property 'a' appears more than once in one object",
        );
        expect((err as JsonSyntaxError).position).toBe(position);
      }
    }
  });
});
