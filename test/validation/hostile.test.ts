import { describe, expect, it } from 'vitest';
import { validator } from './helpers.js';

// Bad input never crashes the validator: every case yields a result with issues (and never throws).
describe('hostile input', () => {
  const v = validator();
  const invalid = (input: unknown) => {
    const out = v.validate(input);
    expect(out.valid).toBe(false);
    expect(out.issues.length).toBeGreaterThan(0);
    return out;
  };

  it('non-objects and missing or unknown resource types', () => {
    for (const x of [
      null,
      undefined,
      42,
      'Patient',
      [],
      [{ resourceType: 'Patient' }],
      {},
      { resourceType: 7 },
      { resourceType: 'NotAType' },
      { resourceType: '__proto__' },
      { resourceType: 'Resource' },
      { resourceType: 'DomainResource' },
    ])
      invalid(x);
  });

  it('deeply nested JSON is bounded', () => {
    let deep: Record<string, unknown> = { family: 'x' };
    for (let i = 0; i < 10_000; i++)
      deep = { extension: [{ url: 'http://example.net/e', extension: [deep] }] };
    const out = invalid({ resourceType: 'Patient', extension: [deep] });
    expect(out.issues.some((i) => i.code === 'too-costly' || i.code === 'structure')).toBe(true);

    let q: Record<string, unknown> = { linkId: 'x', type: 'group' };
    for (let i = 0; i < 5_000; i++) q = { linkId: String(i), type: 'group', item: [q] };
    invalid({ resourceType: 'Questionnaire', status: 'draft', item: [q], extra: 1 });
  });

  it('huge arrays cap the number of issues', () => {
    const out = invalid({
      resourceType: 'Patient',
      name: Array.from({ length: 50_000 }, () => ({ given: [7] })),
    });
    expect(out.issues.length).toBeLessThanOrEqual(501);
    expect(out.issues.at(-1)!.code).toBe('too-costly');
  });

  it('an error after hundreds of warnings still makes the resource invalid, and is listed', () => {
    const extension = Array.from({ length: 600 }, (_, i) => ({
      url: `http://unknown.example.net/e${i}`,
      valueString: 'x',
    }));
    const out = v.validate({ resourceType: 'Patient', extension, gender: 'not-a-gender' });
    expect(out.valid).toBe(false);
    expect(out.issues.some((i) => i.severity === 'error' && i.expression?.[0] === 'Patient.gender')).toBe(
      true,
    );
  });

  it('control characters and wrong types everywhere', () => {
    invalid({ resourceType: 'Patient', id: 'a\u0000b', name: [{ family: '\u0007' }] });
    invalid({
      resourceType: 'Observation',
      status: 12,
      code: 'x',
      subject: [],
      component: {},
      valueQuantity: { value: '1', comparator: {}, extension: 'x' },
      effectiveDateTime: true,
      _status: 5,
      text: { div: 17 },
      contained: [null, 1, { resourceType: 'Patient', contained: [{ resourceType: 'Patient' }] }],
    });
  });

  it('prototype-polluting keys are just unknown properties', () => {
    const input = JSON.parse('{"resourceType":"Patient","__proto__":{"x":1},"constructor":{"prototype":{}}}');
    invalid(input);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });

  it('hostile narratives', () => {
    for (const div of [
      '<div',
      '<div xmlns="http://www.w3.org/1999/xhtml">' + '<p>'.repeat(20_000) + '</div>',
      '<div xmlns="http://www.w3.org/1999/xhtml"><img src=x onerror=alert(1)></div>',
      '<!DOCTYPE x><div/>',
    ])
      invalid({ resourceType: 'Patient', text: { status: 'generated', div } });
  });

  it('hostile bundles', () => {
    invalid({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        null,
        1,
        'x',
        { resource: 'x' },
        { fullUrl: 7, resource: { resourceType: 'Bundle', type: 'x', entry: [{}] } },
      ],
    });
  });

  it('a searchset whose self link has a malformed escape is judged by its content, not an exception', () => {
    const searchset = (self: string) => ({
      resourceType: 'Bundle',
      type: 'searchset',
      link: [{ relation: 'self', url: self }],
      entry: [
        {
          fullUrl: 'http://example.net/fhir/Patient/1',
          resource: { resourceType: 'Patient', id: '1' },
          search: { mode: 'match' },
        },
      ],
    });
    const malformed = v.validate(searchset('http://example.net/fhir/Patient?_type=%E0'));
    expect(malformed.issues.map((i) => i.code)).not.toContain('exception');
    // The _type named (not Patient) is what the entry is held to.
    expect(
      malformed.issues.some((i) => i.code === 'invalid' && i.expression?.[0] === 'Bundle.entry[0].resource'),
    ).toBe(true);
    expect(v.validate(searchset('http://example.net/fhir/Patient?_type=Patient%2CObservation')).valid).toBe(
      true,
    );
    expect(v.validate(searchset('http://example.net/fhir/Patient?_type=Observation')).valid).toBe(false);
  });
});
