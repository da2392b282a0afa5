import { describe, expect, it } from 'vitest';
import { parseSearch, splitOr, LIMITS } from '../../src/fhir/search/parse.js';
import { FhirError } from '../../src/fhir/outcome.js';
import { parseQuery } from '../../src/fhir/query.js';

const q = (o: Record<string, string | string[]>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Array.isArray(v) ? v : [v]]));
/** Parses under `Prefer: handling=lenient` (warnings) unless `strict` (the default handling: 400). */
const parse = (type: string | undefined, o: Record<string, string | string[]>, strict = false) =>
  parseSearch(q(o), { resourceType: type, lenient: !strict });
const status = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FhirError);
    return (err as FhirError).status;
  }
  return 200;
};

describe('search query parsing', () => {
  it('OR by commas (with escapes), AND by repetition', () => {
    expect(splitOr('a,b\\,c,d')).toEqual(['a', 'b,c', 'd']);
    const c = parse('Patient', { gender: 'male,female', family: ['smith', 'jones'] });
    expect(c.filters).toHaveLength(3);
    expect(c.filters[0]).toMatchObject({
      kind: 'param',
      param: 'gender',
      values: [{ code: 'male' }, { code: 'female' }],
    });
  });

  it('tokens: system|code, |code, system|, :text, :not', () => {
    const [a, b, c, d, e] = parse('Observation', {
      code: ['http://loinc.org|1234-5', '|x', 'http://loinc.org|'],
      'code:text': 'Body',
      'status:not': 'final',
    }).filters as any[];
    expect(a.values[0]).toEqual({ kind: 'token', system: 'http://loinc.org', code: '1234-5' });
    expect(b.values[0]).toEqual({ kind: 'token', system: '', code: 'x' });
    expect(c.values[0]).toEqual({ kind: 'token', system: 'http://loinc.org', code: undefined });
    expect(d).toMatchObject({ modifier: 'text', values: [{ text: 'body' }] });
    expect(e).toMatchObject({ negate: true, modifier: 'not' });
  });

  it('dates and quantities with prefixes and implicit precision', () => {
    const [d, n] = parse('Observation', {
      date: 'ge2020-01',
      'value-quantity': 'lt5.4|http://unitsofmeasure.org|mg',
    }).filters as any[];
    expect(d.values[0]).toMatchObject({
      prefix: 'ge',
      low: Date.UTC(2020, 0, 1),
      high: Date.UTC(2020, 1, 1) - 1,
    });
    expect(n.values[0]).toMatchObject({
      prefix: 'lt',
      value: 5.4,
      system: 'http://unitsofmeasure.org',
      code: 'mg',
    });
    expect(n.values[0].low).toBeCloseTo(5.35);
  });

  it('references: Type/id, bare id expanded to targets, :Type, :identifier, absolute URLs', () => {
    const [a, b, c, d] = parse('Observation', {
      subject: 'Patient/1',
      patient: '2',
      'subject:Group': '3',
      'subject:identifier': 'urn:mrn|9',
    }).filters as any[];
    expect(a.values[0].references).toEqual(['Patient/1']);
    expect(b.values[0].references).toEqual(expect.arrayContaining(['Patient/2']));
    expect(c.values[0].references).toEqual(['Group/3']);
    expect(d.values[0].identifier).toEqual({ system: 'urn:mrn', value: '9' });
    const [e] = parse('Observation', { subject: 'http://x.org/fhir/Patient/5/_history/2' }).filters as any[];
    expect(e.values[0].references).toEqual(['http://x.org/fhir/Patient/5', 'Patient/5']);
  });

  it("references: an absolute URL under another server's base matches only that URL (search.html#reference)", () => {
    const under = (value: string) =>
      (
        parseSearch(q({ subject: value }), {
          resourceType: 'Observation',
          serverBase: 'http://here.org/fhir/',
        }).filters[0] as any
      ).values[0].references;
    expect(under('http://elsewhere.org/fhir/Patient/5')).toEqual(['http://elsewhere.org/fhir/Patient/5']);
    expect(under('http://here.org/other/Patient/5')).toEqual(['http://here.org/other/Patient/5']);
    // A relative value also matches a reference stored as an absolute URL under this server's base.
    expect(under('Patient/5')).toEqual(['Patient/5', 'http://here.org/fhir/Patient/5']);
    // This server's own base: the same as the relative reference.
    expect(under('http://here.org/fhir/Patient/5/_history/2')).toEqual([
      'http://here.org/fhir/Patient/5',
      'Patient/5',
    ]);
  });

  it('composites: token$quantity, token$token; malformed ones are 400', () => {
    const [bp, concept] = parse('Observation', {
      'component-code-value-quantity': 'http://loinc.org|8480-6$gt100|http://unitsofmeasure.org|mm[Hg]',
      'code-value-concept': '1234-5$http://snomed.info/sct|123',
    }).filters as any[];
    expect(bp.values[0]).toMatchObject({
      kind: 'composite',
      secondType: 'quantity',
      first: { system: 'http://loinc.org', code: '8480-6' },
      second: { prefix: 'gt', value: 100, code: 'mm[Hg]' },
    });
    expect(concept.values[0]).toMatchObject({
      first: { code: '1234-5' },
      second: { system: 'http://snomed.info/sct', code: '123' },
    });
    expect(status(() => parse('Observation', { 'code-value-quantity': 'no-dollar' }))).toBe(400);
  });

  it('chains (multi-level) and _has', () => {
    const [chain] = parse('Observation', { 'subject:Patient.organization.name': 'acme' }).filters as any[];
    expect(chain).toMatchObject({
      kind: 'chain',
      param: 'subject',
      targetTypes: ['Patient'],
      inner: { kind: 'chain', param: 'organization', inner: { kind: 'param', param: 'name' } },
    });
    const [has] = parse('Patient', { '_has:Observation:patient:code': '1234-5' }).filters as any[];
    expect(has).toMatchObject({
      kind: 'has',
      sourceType: 'Observation',
      param: 'patient',
      inner: { param: 'code' },
    });
  });

  it('result parameters: _sort, _count (capped), _offset, _total, _summary=count, _include(:iterate), _revinclude, _elements', () => {
    const c = parse('Observation', {
      _sort: '-date,code',
      _count: '99999',
      _offset: '20',
      _total: 'accurate',
      _summary: 'count',
      _include: 'Observation:subject',
      '_include:iterate': 'Patient:organization',
      _revinclude: 'Provenance:target',
      _elements: 'status,code',
    });
    expect(c.sort).toEqual([
      { param: 'date', type: 'date', descending: true },
      { param: 'code', type: 'token', descending: false },
    ]);
    expect(c.count).toBe(LIMITS.maxCount);
    expect(c.offset).toBe(20);
    expect(c.total).toBe('accurate');
    expect(c.summaryCount).toBe(true);
    expect(c.include).toEqual([
      { sourceType: 'Observation', param: 'subject', targetType: undefined, iterate: false },
      { sourceType: 'Patient', param: 'organization', targetType: undefined, iterate: true },
    ]);
    expect(c.revinclude).toEqual([
      { sourceType: 'Provenance', param: 'target', targetType: undefined, iterate: false },
    ]);
    expect(c.elements).toEqual(['status', 'code']);
  });

  it('system search: _type restricts types; parameters must exist on all of them', () => {
    const c = parse(undefined, { _type: 'Patient,Practitioner', name: 'x' });
    expect(c.resourceTypes).toEqual(['Patient', 'Practitioner']);
    expect(c.filters).toHaveLength(1);
    expect(parse(undefined, { _type: 'Patient,Observation', name: 'x' }).warnings).toHaveLength(1);
    expect(status(() => parse(undefined, { _type: 'Patient,Observation', name: 'x' }, true))).toBe(400);
    // without _type only parameters common to all resources apply
    expect(status(() => parseSearch(q({ name: 'x' }), {}))).toBe(400);
    expect(parseSearch(q({ _id: 'a', _lastUpdated: 'gt2020' }), {}).filters).toHaveLength(2);
  });

  it('system search: _type is kept in what was applied (paging links carry it)', () => {
    expect(parseSearch(q({ _type: 'Patient,Condition', _count: '3' }), {}).applied).toContainEqual([
      '_type',
      'Patient,Condition',
    ]);
  });

  it('unknown parameters and modifiers: 400 by default and under strict, warnings under lenient', () => {
    expect(status(() => parseSearch(q({ foo: 'x' }), { resourceType: 'Patient' }))).toBe(400);
    expect(status(() => parseSearch(q({ 'code:in': 'x' }), { resourceType: 'Observation' }))).toBe(400);
    expect(parse('Patient', { foo: 'x', 'name:fuzzy': 'y' }).warnings).toHaveLength(2);
    expect(status(() => parse('Patient', { foo: 'x' }, true))).toBe(400);
    expect(status(() => parse('Patient', { 'name:fuzzy': 'x' }, true))).toBe(400);
  });

  it('hostile input is a 400, never anything else', () => {
    const cases: Record<string, string | string[]>[] = [
      { name: 'x'.repeat(LIMITS.maxValueLength + 1) },
      Object.fromEntries(
        Array.from({ length: LIMITS.maxParameters + 1 }, (_, i) => [`name`.concat(String(i)), 'x']),
      ),
      { name: Array.from({ length: LIMITS.maxParameters + 1 }, () => 'x') },
      { name: Array.from({ length: LIMITS.maxOrValues + 1 }, () => 'x').join(',') },
      { 'subject:Patient.organization.partof.partof.partof.name': 'x' },
      { date: "1' OR 1=1 --" },
      { _count: 'ten' },
      { _id: '../../etc/passwd' },
      { 'value-quantity': '5|a|b|c' },
      { _has: 'x' },
      { '_has:Nope:patient:code': 'x' },
      { _include: 'Nope:subject' },
      { _total: 'sometimes' },
      { subject: 'Patient/1/2/3/4 x' },
      { _type: 'Nope' },
    ];
    for (const c of cases)
      expect(
        status(() => parse(c._type ? undefined : 'Observation', c)),
        JSON.stringify(c).slice(0, 100),
      ).toBe(400);
  });
});

describe('query maps without a prototype', () => {
  const names = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__'];

  it.each(names)('keeps %s as an ordinary parameter, repeated ones in order', (name) => {
    const query = parseQuery(`${name}=1&_count=5&${name}=2`);
    expect(Object.getPrototypeOf(query)).toBeNull();
    expect(Object.keys(query)).toEqual([name, '_count']);
    expect(query[name]).toEqual(['1', '2']);
    expect(query._format).toBeUndefined();
  });

  it.each(names)('parses a search with %s as an unknown parameter (400, or ignored when lenient)', (name) => {
    const compiled = parseSearch(parseQuery(`${name}=1&_count=5&_sort=${name}`), {
      resourceType: 'Patient',
      lenient: true,
    });
    expect(compiled.count).toBe(5);
    expect(compiled.filters).toEqual([]);
    expect(compiled.warnings.join(' ')).toContain(name);
    expect(() => parseSearch(parseQuery(`${name}=1`), { resourceType: 'Patient', strict: true })).toThrow(
      FhirError,
    );
    expect(() => parseSearch(parseQuery(`${name}=1`), { resourceType: 'Patient' })).toThrow(FhirError);
  });
});
