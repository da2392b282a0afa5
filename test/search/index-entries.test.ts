import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import {
  dateRange,
  extractIndex,
  numberRange,
  normaliseString,
  DATE_MAX,
} from '../../src/fhir/search/index-entries.js';
import {
  patientCompartments,
  searchDefinitions,
  searchParameter,
} from '../../src/fhir/search/definitions.js';

const examplesDir = dirname(createRequire(import.meta.url).resolve('hl7.fhir.r4.examples/package.json'));
const example = (name: string): FhirResource =>
  parseFhirJson<FhirResource>(readFileSync(join(examplesDir, `${name}.json`), 'utf8'));
const rows = (r: FhirResource, param: string) => extractIndex(r).filter((e) => e.param === param);

describe('search parameter definitions', () => {
  it('loads every R4 resource type with its parameters, and lists the unsupported ones', () => {
    const defs = searchDefinitions();
    expect(defs.resourceTypes).toContain('Patient');
    expect(defs.resourceTypes).toContain('Observation');
    expect(defs.resourceTypes.length).toBeGreaterThanOrEqual(145);
    expect(searchParameter('Observation', 'value-quantity')?.type).toBe('quantity');
    expect(searchParameter('Observation', 'patient')?.target).toContain('Patient');
    expect(searchParameter('Patient', '_tag')?.type).toBe('token');
    expect(defs.unsupported).not.toContain('Observation.code-value-quantity');
    expect(defs.unsupported).toContain('DocumentReference.relationship'); // reference+token composites are not indexed
  });

  it('keeps only the union parts of a shared expression that belong to the type', () => {
    const patient = searchParameter('Observation', 'patient')!;
    expect(patient.expression).toBe('Observation.subject.where(resolve() is Patient)');
  });
});

describe('index extraction on the official examples', () => {
  it('never throws on any example resource', () => {
    // every example but the big definition files and bundles (the bundles' entries are examples themselves)
    const skip =
      /^(StructureDefinition|SearchParameter|Bundle|CodeSystem|ValueSet|ConceptMap|OperationDefinition|CapabilityStatement|ImplementationGuide|NamingSystem|CompartmentDefinition)-/;
    const files = readdirSync(examplesDir).filter(
      (f) => /^[A-Z][A-Za-z]+-.+\.json$/.test(f) && !skip.test(f),
    );
    let total = 0;
    for (const f of files) {
      const resource = parseFhirJson<FhirResource>(readFileSync(join(examplesDir, f), 'utf8'));
      if (typeof resource.resourceType !== 'string') continue;
      total += extractIndex(resource).length;
    }
    expect(total).toBeGreaterThan(1000);
  });

  it('Observation-example: tokens, references, quantity with precision, date', () => {
    const obs = example('Observation-example');
    expect(rows(obs, 'code')).toEqual(
      expect.arrayContaining([
        { param: 'code', type: 'token', system: 'http://loinc.org', value: '29463-7' },
      ]),
    );
    expect(rows(obs, 'code:text').map((r) => r.value)).toContain('body weight');
    expect(rows(obs, 'subject')).toEqual([
      { param: 'subject', type: 'reference', reference: 'Patient/example' },
    ]);
    expect(rows(obs, 'patient')).toEqual([
      { param: 'patient', type: 'reference', reference: 'Patient/example' },
    ]);
    const [q] = rows(obs, 'value-quantity');
    expect(q.system).toBe('http://unitsofmeasure.org');
    expect(q.value).toBe('[lb_av]');
    // a quantity without comparator is its value (the searched value's precision decides eq)
    expect([q.low, q.high]).toEqual([185, 185]);
    // unit rows: code and unit as written, and the UCUM code in canonical units (185 [lb_av] = 83914.6 g)
    expect(rows(obs, 'value-quantity||lbs')).toEqual([
      { param: 'value-quantity||lbs', type: 'quantity', low: 185, high: 185 },
    ]);
    expect(rows(obs, 'value-quantity||[lb_av]')).toHaveLength(1);
    const [canonical] = rows(obs, 'value-quantity|http://unitsofmeasure.org|g');
    expect(canonical.low).toBeCloseTo(83914.6, 1);
    expect(canonical.high).toBe(canonical.low);
    const [date] = rows(obs, 'date');
    expect(date.low).toBe(Date.UTC(2016, 2, 28));
    expect(date.high).toBe(Date.UTC(2016, 2, 29) - 1);
  });

  it('Patient-example: names by part, accents stripped, identifiers, gender, birthdate, address', () => {
    const p = example('Patient-example');
    expect(rows(p, 'family').map((r) => r.value)).toContain('chalmers');
    expect(rows(p, 'family').map((r) => r.system)).toContain('Chalmers');
    expect(rows(p, 'given').map((r) => r.value)).toEqual(expect.arrayContaining(['peter', 'james', 'jim']));
    expect(rows(p, 'gender')).toEqual([{ param: 'gender', type: 'token', value: 'male' }]);
    expect(rows(p, 'identifier')).toEqual(
      expect.arrayContaining([
        { param: 'identifier', type: 'token', system: 'urn:oid:1.2.36.146.595.217.0.1', value: '12345' },
      ]),
    );
    expect(rows(p, 'birthdate')[0].low).toBe(Date.UTC(1974, 11, 25));
    expect(rows(p, 'address-city').map((r) => r.value)).toContain('pleasantville');
    expect(rows(p, 'organization')).toEqual([
      { param: 'organization', type: 'reference', reference: 'Organization/1' },
    ]);
    expect(normaliseString('Agustín Müller')).toBe('agustin muller');
  });

  it('Encounter periods become ranges; open ends are unbounded', () => {
    const e = example('Encounter-example');
    expect(rows(e, 'status')).toEqual([{ param: 'status', type: 'token', value: 'in-progress' }]);
    const closed = extractIndex({
      resourceType: 'Encounter',
      status: 'finished',
      period: { start: '2020-01-01T10:00:00Z', end: '2020-01-01T11:00' },
    } as FhirResource).find((r) => r.param === 'date')!;
    expect(closed.low).toBe(Date.UTC(2020, 0, 1, 10));
    expect(closed.high).toBe(Date.UTC(2020, 0, 1, 11, 1) - 1);
    const open = extractIndex({
      resourceType: 'Encounter',
      status: 'in-progress',
      period: { start: '2020-01-01' },
    } as FhirResource).find((r) => r.param === 'date')!;
    expect(open.low).toBe(Date.UTC(2020, 0, 1));
    expect(open.high).toBe(DATE_MAX);
  });

  it('precision of numbers and dates', () => {
    expect(numberRange('100')).toEqual({ value: 100, low: 99.5, high: 100.5 });
    const r = numberRange('1.50')!;
    expect(r.low).toBeCloseTo(1.495, 10);
    expect(r.high).toBeCloseTo(1.505, 10);
    expect(numberRange('1e2')!.low).toBeCloseTo(50);
    expect(dateRange('2020')).toEqual({ low: Date.UTC(2020, 0, 1), high: Date.UTC(2021, 0, 1) - 1 });
    expect(dateRange('2020-02')).toEqual({ low: Date.UTC(2020, 1, 1), high: Date.UTC(2020, 2, 1) - 1 });
    expect(dateRange('2020-02-03T04:05:06+02:00')).toEqual({
      low: Date.UTC(2020, 1, 3, 2, 5, 6),
      high: Date.UTC(2020, 1, 3, 2, 5, 6) + 999,
    });
    expect(dateRange('2020-02-03T04:05:06.123Z')).toEqual({
      low: Date.UTC(2020, 1, 3, 4, 5, 6, 123),
      high: Date.UTC(2020, 1, 3, 4, 5, 6, 123),
    });
    expect(dateRange('not a date')).toBeUndefined();
  });

  it('keeps the written precision of decimals parsed losslessly', () => {
    const obs = parseFhirJson<FhirResource>(
      '{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50,"code":"mg"}}',
    );
    const [q] = rows(obs, 'value-quantity');
    expect([q.low, q.high]).toEqual([1.5, 1.5]);
    // composites keep the precision range (compositeEntries)
    const composite = extractIndex(
      parseFhirJson<FhirResource>(
        '{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"s","code":"c"}]},"valueQuantity":{"value":1.50,"code":"mg"}}',
      ),
    ).find((r) => r.param === 'code-value-quantity')!;
    expect(composite.low).toBeCloseTo(1.495, 10);
    expect(composite.high).toBeCloseTo(1.505, 10);
  });

  it('quantities with a comparator stand for what lies beyond their value', () => {
    const obs = (comparator: string) =>
      rows(
        {
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'x' },
          valueQuantity: { value: 5, comparator, system: 'http://unitsofmeasure.org', code: 'mg' },
        } as FhirResource,
        'value-quantity',
      )[0]!;
    expect(obs('<=')).toMatchObject({ low: -Number.MAX_VALUE, high: 5 });
    expect(obs('<').high).toBeLessThan(5);
    expect(obs('<').high).toBeGreaterThan(4.999999);
    expect(obs('>=')).toMatchObject({ low: 5, high: Number.MAX_VALUE });
    expect(obs('>').low).toBeGreaterThan(5);
  });

  it('resolve() rule: `where(resolve() is Patient)` keeps only Patient references, also contained ones', () => {
    const obs = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Group/1' },
      performer: [{ reference: '#p1' }, { reference: 'http://other.org/fhir/Practitioner/9/_history/2' }],
      contained: [{ resourceType: 'Practitioner', id: 'p1' }],
    } as FhirResource;
    expect(rows(obs, 'patient')).toEqual([]);
    expect(rows(obs, 'subject')).toEqual([{ param: 'subject', type: 'reference', reference: 'Group/1' }]);
    expect(rows(obs, 'performer').map((r) => r.reference)).toEqual([
      '#p1',
      'http://other.org/fhir/Practitioner/9',
    ]);
  });

  it('indexes `Bundle.entry[0].resource` (composition, message)', () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'document',
      entry: [
        { resource: { resourceType: 'Composition', id: 'c1' } },
        { resource: { resourceType: 'Patient', id: 'p' } },
      ],
    } as FhirResource;
    expect(rows(bundle, 'composition')).toHaveLength(0); // a resource, not a Reference: nothing to index as reference
    expect(searchParameter('Bundle', 'composition')?.evaluate?.(bundle)).toEqual([
      { resourceType: 'Composition', id: 'c1' },
    ]);
  });

  it('aliases (combo-*, phonetic) have no rows of their own: the rows of the parameters they unite answer them', () => {
    expect(searchParameter('Observation', 'combo-code')?.indexedAs?.sort()).toEqual([
      'code',
      'component-code',
    ]);
    expect(searchParameter('Observation', 'combo-code-value-quantity')?.indexedAs?.sort()).toEqual([
      'code-value-quantity',
      'component-code-value-quantity',
    ]);
    expect(searchParameter('Patient', 'phonetic')?.indexedAs).toEqual(['name']);
    expect(searchParameter('Observation', 'patient')?.indexedAs).toBeUndefined();
    expect(searchParameter('Observation', 'subject')?.indexedAs).toBeUndefined();
    const obs = example('Observation-example');
    expect(extractIndex(obs).filter((r) => r.param.startsWith('combo-'))).toEqual([]);
    expect(rows(example('Patient-example'), 'phonetic')).toEqual([]);
  });

  it('bare paths (`name | alias` of InsurancePlan) start at the resource', () => {
    const plan = { resourceType: 'InsurancePlan', name: 'Gold', alias: ['Oro'] } as FhirResource;
    expect(rows(plan, 'name').map((r) => r.value)).toEqual(['gold', 'oro']);
  });

  it('deceased: the non-path expression is evaluated as fhirpath would', () => {
    const alive = { resourceType: 'Patient', deceasedBoolean: false } as FhirResource;
    const dead = { resourceType: 'Patient', deceasedDateTime: '2020-01-01' } as FhirResource;
    expect(rows(alive, 'deceased').map((r) => r.value)).toEqual(['false']);
    expect(rows(dead, 'deceased').map((r) => r.value)).toEqual(['true']);
  });
});

describe('patient compartment', () => {
  it('places a resource in the compartments of the patients it references', () => {
    expect(patientCompartments(example('Observation-example'))).toEqual(['Patient/example']);
    expect(patientCompartments(example('Patient-example'))).toContain('Patient/example');
    expect(patientCompartments(example('Organization-1'))).toEqual([]);
    const appt = example('Appointment-example');
    expect(patientCompartments(appt)).toEqual(['Patient/example']);
  });
});

describe('repeated index rows', () => {
  it('are stored once, the first kept in order, however many rows a parameter has', () => {
    // 40 members (more than are compared pairwise), then repeats of some: one row each, in document order.
    const members = Array.from({ length: 40 }, (_, i) => `Patient/m${i}`);
    const group = {
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: [...members, 'Patient/m5', 'Patient/m0', 'Patient/m39'].map((reference) => ({
        entity: { reference },
      })),
    } as FhirResource;
    expect(rows(group, 'member').map((e) => e.reference)).toEqual(members);
    // Few rows: a repeated code once, the same code of another system kept.
    const observation = {
      resourceType: 'Observation',
      status: 'final',
      code: {
        coding: [
          { system: 'http://loinc.org', code: '8302-2' },
          { system: 'http://loinc.org', code: '8302-2' },
          { system: 'http://example.org', code: '8302-2' },
        ],
      },
    } as FhirResource;
    expect(rows(observation, 'code').map((e) => `${e.system}|${e.value}`)).toEqual([
      'http://loinc.org|8302-2',
      'http://example.org|8302-2',
    ]);
  });
});
