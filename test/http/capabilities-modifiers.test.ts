/**
 * The CapabilityStatement's searchParam documentation names exactly the modifiers the search applies (issue 16):
 * derived from the parser's own modifier registry (supportedModifiers), including the token modifiers answered from
 * terminology (`:in`, `:not-in`, `:below`, `:above`) where the server has terminology, and `:of-type`. Each
 * documented modifier is run over HTTP and applied; a standard modifier not documented is refused (400).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, send, startTestApp, type TestApp } from './helpers.js';

/** Every search modifier of R4 (search.html#modifiers), and a value to try each with on Patient.gender. */
const R4_MODIFIERS = [
  'missing',
  'exact',
  'contains',
  'not',
  'text',
  'in',
  'not-in',
  'below',
  'above',
  'type',
  'identifier',
  'of-type',
];
const GENDER_VALUE: Record<string, string> = {
  missing: 'true',
  in: 'http://hl7.org/fhir/ValueSet/administrative-gender',
  'not-in': 'http://hl7.org/fhir/ValueSet/administrative-gender',
  below: 'http://hl7.org/fhir/administrative-gender|female',
  above: 'http://hl7.org/fhir/administrative-gender|female',
};

function documentedModifiers(statement: any, type: string, param: string): string[] {
  const resource = statement.rest[0].resource.find((r: any) => r.type === type);
  const documentation: string = resource.searchParam.find((p: any) => p.name === param).documentation;
  return [...documentation.matchAll(/:([a-z-]+|\[type\])/g)].map((m) => m[1]);
}

async function statementOf(app: TestApp): Promise<any> {
  return json((await send(app, { url: '/fhir/metadata' }, 200)).body);
}

describe('with terminology (full validation)', () => {
  let app: TestApp;
  let statement: any;
  beforeAll(async () => {
    app = await startTestApp({}, { validation: 'full' });
    statement = await statementOf(app);
  });
  afterAll(async () => {
    await app?.stop();
  });

  it('documents :in, :not-in, :below, :above and :of-type on token parameters', () => {
    expect(documentedModifiers(statement, 'Patient', 'gender').sort()).toEqual(
      ['above', 'below', 'in', 'missing', 'not', 'not-in', 'of-type', 'text'].sort(),
    );
    expect(documentedModifiers(statement, 'Observation', 'code')).toEqual(
      expect.arrayContaining(['in', 'not-in', 'below', 'above', 'of-type']),
    );
  });

  it('applies every documented token modifier and refuses every other one', async () => {
    const documented = new Set(documentedModifiers(statement, 'Patient', 'gender'));
    for (const modifier of R4_MODIFIERS) {
      if (modifier === 'of-type') continue; // identifier-only; run below
      const value = GENDER_VALUE[modifier] ?? 'female';
      const res = await app.fastify.inject({
        url: `/fhir/Patient?gender:${modifier}=${encodeURIComponent(value)}`,
      });
      expect(res.statusCode, `:${modifier} ${res.body}`).toBe(documented.has(modifier) ? 200 : 400);
    }
    const ofType = await app.fastify.inject({
      url: `/fhir/Patient?identifier:of-type=${encodeURIComponent('http://terminology.hl7.org/CodeSystem/v2-0203|MR|123')}`,
    });
    expect(ofType.statusCode, ofType.body).toBe(200);
  });
});

describe('without terminology (schema validation)', () => {
  let app: TestApp;
  let statement: any;
  beforeAll(async () => {
    app = await startTestApp({}, { validation: 'schema' });
    statement = await statementOf(app);
  });
  afterAll(async () => {
    await app?.stop();
  });

  it('does not document the terminology modifiers, and refuses them', async () => {
    const documented = documentedModifiers(statement, 'Patient', 'gender');
    expect(documented).toEqual(expect.arrayContaining(['of-type', 'not', 'text', 'missing']));
    for (const modifier of ['in', 'not-in', 'below', 'above']) {
      expect(documented).not.toContain(modifier);
      const res = await app.fastify.inject({
        url: `/fhir/Patient?gender:${modifier}=${encodeURIComponent(GENDER_VALUE[modifier])}`,
      });
      expect(res.statusCode, `:${modifier}`).toBe(400);
    }
  });
});
