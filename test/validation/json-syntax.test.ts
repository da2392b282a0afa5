import { describe, expect, it } from 'vitest';
import { parseJsonLeniently } from '../../src/fhir/validation/json-syntax.js';

describe('lenient JSON reader', () => {
  it('reads strict JSON with no issues', () => {
    const out = parseJsonLeniently(
      '{"resourceType":"Patient","name":[{"given":["a","b"]}],"active":true,"x":-1.5e3,"n":null}',
    );
    expect(out.issues).toEqual([]);
    expect(out.value).toEqual({
      resourceType: 'Patient',
      name: [{ given: ['a', 'b'] }],
      active: true,
      x: -1500,
      n: null,
    });
  });

  it('reports comments at the next property, missing commas and unquoted names at their object', () => {
    const out = parseJsonLeniently(
      '{\n "resourceType": "Patient", // c\n "id": "x",\n "name": [{ "family": "a" "given": ["b"] }],\n gender: "male"\n}',
    );
    expect(out.issues.map((i) => [i.expression?.[0], i.diagnostics])).toEqual([
      ['Patient.id', 'Comments are not allowed in JSON'],
      ['Patient.name[0]', 'A Comma is missing in the JSON'],
      ['Patient', "The JSON property 'gender' has no quotes around the name of the property"],
    ]);
    expect((out.value as { gender: string }).gender).toBe('male');
  });

  it('accepts comments when allowed (the reference validator allow-comments), other problems still reported', () => {
    const out = parseJsonLeniently(
      '{\n "resourceType": "Patient", // c\n /* d */ "id": "x",\n gender: "male"\n}',
      { allowComments: true },
    );
    expect(out.issues.map((i) => [i.expression?.[0], i.diagnostics])).toEqual([
      ['Patient', "The JSON property 'gender' has no quotes around the name of the property"],
    ]);
    expect(out.value).toEqual({ resourceType: 'Patient', id: 'x', gender: 'male' });
  });

  it('unrecoverable text is one fatal issue and no value', () => {
    for (const text of [
      '{"resourceType": "Patient"',
      '{"a": [1, 2}',
      'nonsense',
      '',
      '{"a": "unclosed}',
      '['.repeat(5000),
    ]) {
      const out = parseJsonLeniently(text);
      expect(out.value).toBeUndefined();
      expect(out.issues).toEqual([expect.objectContaining({ severity: 'fatal' })]);
    }
  });

  it('does not let __proto__ keys reach the prototype', () => {
    const out = parseJsonLeniently('{"__proto__": {"polluted": 1}}');
    expect(Object.getPrototypeOf(out.value)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
