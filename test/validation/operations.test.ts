import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFhirValidatorSync } from '../../src/fhir/validation/index.js';
import { registerValidationOperations } from '../../src/fhir/operations/validate.js';
import { send, FHIR_JSON, json, startTestApp, type TestApp } from '../http/helpers.js';
import { expectErrorCode } from '../support/error-codes.js';

let app: TestApp;
beforeAll(async () => {
  const validator = createFhirValidatorSync();
  app = await startTestApp({ validator }, { logLevel: 'warn' });
  registerValidationOperations(app.registry, validator);
});
afterAll(async () => {
  await app?.stop();
});

const post = (url: string, body: unknown) =>
  app.fastify.inject({ method: 'POST', url, headers: FHIR_JSON, payload: JSON.stringify(body) });
const get = (url: string) => app.fastify.inject({ method: 'GET', url });
const param = (out: { parameter: { name: string }[] }, name: string) =>
  out.parameter.find((p) => p.name === name) as Record<string, unknown> | undefined;

describe('$validate', () => {
  it('type level: a valid resource gives 200 and an all-OK outcome; nothing is stored', async () => {
    const res = await post('/fhir/Patient/$validate', { resourceType: 'Patient', gender: 'male' });
    expect(res.statusCode).toBe(200);
    const oo = json(res.body);
    expect(oo.resourceType).toBe('OperationOutcome');
    expect(oo.issue.some((i: { severity: string }) => i.severity === 'error')).toBe(false);
    expect(json((await get('/fhir/Patient')).body).total ?? 0).toBe(0);
  });

  it('type level: an invalid resource gives 200 with its errors and their locations', async () => {
    const res = await post('/fhir/Patient/$validate', {
      resourceType: 'Patient',
      gender: 'mail',
      birthDate: '1980-13-01',
    });
    expect(res.statusCode).toBe(200);
    const errors = json(res.body).issue.filter((i: { severity: string }) => i.severity === 'error');
    expect(errors.map((e: { expression: string[] }) => e.expression[0]).sort()).toEqual([
      'Patient.birthDate',
      'Patient.gender',
    ]);
  });

  it('reports cross-resource rules of conformance resources as errors, where a write takes them as warnings', async () => {
    const validator = createFhirValidatorSync();
    const local = await startTestApp({ validator }, { logLevel: 'warn' });
    try {
      registerValidationOperations(local.registry, validator);
      validator.registerResource({
        resourceType: 'Measure',
        url: 'http://example.net/fhir/Measure/beds',
        status: 'active',
        group: [{ code: { text: 'beds' } }],
      });
      const report = {
        resourceType: 'MeasureReport',
        id: 'r1',
        status: 'complete',
        type: 'summary',
        measure: 'http://example.net/fhir/Measure/beds',
        period: { start: '2020-01-01', end: '2020-01-31' },
        group: [{ code: { text: 'chairs' } }],
      };
      const oo = json(
        (
          await local.fastify.inject({
            method: 'POST',
            url: '/fhir/MeasureReport/$validate',
            headers: FHIR_JSON,
            payload: JSON.stringify(report),
          })
        ).body,
      );
      expect(
        oo.issue
          .filter((i: { severity: string }) => i.severity === 'error')
          .map((i: { expression: string[] }) => i.expression[0]),
      ).toEqual(['MeasureReport.group[0].code']);
      const write = await local.fastify.inject({
        method: 'PUT',
        url: '/fhir/MeasureReport/r1',
        headers: FHIR_JSON,
        payload: JSON.stringify(report),
      });
      expect(write.statusCode).toBe(201);
    } finally {
      await local.stop();
    }
  });

  it('accepts a Parameters body with resource, mode and profile', async () => {
    const body = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'resource', resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' } } },
        { name: 'profile', valueUri: 'http://hl7.org/fhir/StructureDefinition/vitalsigns' },
      ],
    };
    const oo = json((await post('/fhir/Observation/$validate', body)).body);
    expect(oo.issue.some((i: { severity: string }) => i.severity === 'error')).toBe(true);
    const unknownProfile = {
      resourceType: 'Parameters',
      parameter: [body.parameter[0], { name: 'profile', valueUri: 'http://nowhere.example.net/p' }],
    };
    const oo2 = json((await post('/fhir/Observation/$validate', unknownProfile)).body);
    expect(oo2.issue).toContainEqual(expect.objectContaining({ severity: 'error', code: 'not-supported' }));
    const badMode = await post('/fhir/Observation/$validate?mode=explode', body.parameter[0].resource);
    expect(badMode.statusCode).toBe(400);
  });

  it("takes the reference validator's per-run settings as parameters; absent ones keep the service's", async () => {
    const patient = {
      resourceType: 'Patient',
      name: [{ text: 'Ann <b>Smith</b>' }],
      extension: [{ url: 'https://ehr.example.net/fhir/ext/a', valueString: 'x' }],
    };
    const at = async (query: string) =>
      json((await post(`/fhir/Patient/$validate${query}`, patient)).body)
        .issue.filter((i: { expression?: string[] }) => i.expression?.[0]?.startsWith('Patient.'))
        .map((i: { severity: string; expression: string[] }) => `${i.severity} ${i.expression[0]}`)
        .sort();
    expect(await at('')).toEqual(['information Patient.name[0].text', 'warning Patient.extension[0]']);
    expect(await at('?security-checks=true&unknown-extension-severity=error')).toEqual([
      'error Patient.extension[0]',
      'error Patient.name[0].text',
    ]);
    expect(await at('?extension-domain=https://ehr.example.net/fhir/')).toEqual([
      'information Patient.name[0].text',
    ]);
    // The same in a Parameters body.
    const body = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'resource', resource: patient },
        { name: 'security-checks', valueBoolean: true },
      ],
    };
    const oo = json((await post('/fhir/Patient/$validate', body)).body);
    expect(oo.issue).toContainEqual(
      expect.objectContaining({ severity: 'error', expression: ['Patient.name[0].text'] }),
    );
    for (const bad of ['security-checks=yes', 'unknown-extension-severity=fatal', 'html-in-markdown=loud']) {
      const res = await post(`/fhir/Patient/$validate?${bad}`, patient);
      expect(res.statusCode).toBe(400);
      expectErrorCode(res, 'parameter-invalid');
    }
  });

  it('instance level: GET validates the stored resource; mode=update checks the id; mode=delete needs the instance', async () => {
    const put = await app.fastify.inject({
      method: 'PUT',
      url: '/fhir/Patient/v1',
      headers: FHIR_JSON,
      payload: JSON.stringify({ resourceType: 'Patient', id: 'v1', active: true }),
    });
    expect(put.statusCode).toBeLessThan(300);
    const stored = await get('/fhir/Patient/v1/$validate');
    expect(stored.statusCode).toBe(200);
    expect(json(stored.body).issue.some((i: { severity: string }) => i.severity === 'error')).toBe(false);
    const mismatch = json(
      (await post('/fhir/Patient/v1/$validate?mode=update', { resourceType: 'Patient', id: 'other' })).body,
    );
    expect(mismatch.issue).toContainEqual(
      expect.objectContaining({ severity: 'error', expression: ['Patient.id'] }),
    );
    expect((await post('/fhir/Patient/v1/$validate?mode=delete', {})).statusCode).toBe(200);
    expect((await get('/fhir/Patient/nope/$validate')).statusCode).toBe(404);
  });

  it('Parameters/$validate takes a bare Parameters body as the resource', async () => {
    const res = await post('/fhir/Parameters/$validate', {
      resourceType: 'Parameters',
      parameter: [{ name: 'x', valueFoo: 1 }],
    });
    expect(res.statusCode).toBe(200);
    expect(json(res.body).issue).toContainEqual(
      expect.objectContaining({ severity: 'error', expression: ['Parameters.parameter[0]'] }),
    );
  });

  it('bad bodies are 400 OperationOutcomes', async () => {
    const res = await send(
      app,
      { method: 'POST', url: '/fhir/Patient/$validate', body: '{"resourceType":' },
      400,
    );
    expect(json(res.body).resourceType).toBe('OperationOutcome');
  });
});

describe('terminology operations', () => {
  it('CodeSystem/$lookup', async () => {
    const out = json(
      (await get('/fhir/CodeSystem/$lookup?system=http://hl7.org/fhir/administrative-gender&code=female'))
        .body,
    );
    expect(param(out, 'display')?.valueString).toBe('Female');
    expect(
      (await get('/fhir/CodeSystem/$lookup?system=http://hl7.org/fhir/administrative-gender&code=nope'))
        .statusCode,
    ).toBe(404);
    expect((await get('/fhir/CodeSystem/$lookup?system=http://nowhere.example.net&code=x')).statusCode).toBe(
      404,
    );
  });

  it('ValueSet/$expand with filter and paging', async () => {
    const all = json(
      (await get('/fhir/ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/administrative-gender')).body,
    );
    expect(all.expansion.total).toBe(4);
    expect(all.expansion.contains.map((c: { code: string }) => c.code).sort()).toEqual([
      'female',
      'male',
      'other',
      'unknown',
    ]);
    const page = json(
      (
        await get(
          '/fhir/ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/administrative-gender&offset=1&count=2',
        )
      ).body,
    );
    expect(page.expansion.contains).toHaveLength(2);
    expect(page.expansion.offset).toBe(1);
    const filtered = json(
      (await get('/fhir/ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/administrative-gender&filter=fem'))
        .body,
    );
    expect(filtered.expansion.contains.map((c: { code: string }) => c.code)).toEqual(['female']);
    expect((await get('/fhir/ValueSet/$expand?url=http://nowhere.example.net/vs')).statusCode).toBe(404);
  });

  it('ValueSet/$validate-code', async () => {
    const yes = json(
      (
        await get(
          '/fhir/ValueSet/$validate-code?url=http://hl7.org/fhir/ValueSet/administrative-gender&system=http://hl7.org/fhir/administrative-gender&code=male',
        )
      ).body,
    );
    expect(param(yes, 'result')?.valueBoolean).toBe(true);
    const no = json(
      (
        await get(
          '/fhir/ValueSet/$validate-code?url=http://hl7.org/fhir/ValueSet/administrative-gender&system=http://hl7.org/fhir/administrative-gender&code=mail',
        )
      ).body,
    );
    expect(param(no, 'result')?.valueBoolean).toBe(false);
  });

  it('ConceptMap/$translate, forwards and reverse', async () => {
    const base = '/fhir/ConceptMap/$translate?url=http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v2';
    const out = json(
      (await get(`${base}&system=http://hl7.org/fhir/administrative-gender&code=female`)).body,
    );
    expect(param(out, 'result')?.valueBoolean).toBe(true);
    const match = out.parameter.find((p: { name: string }) => p.name === 'match');
    expect(match.part).toContainEqual({
      name: 'concept',
      valueCoding: { system: 'http://terminology.hl7.org/CodeSystem/v2-0001', code: 'F' },
    });
    const back = json(
      (await get(`${base}&system=http://terminology.hl7.org/CodeSystem/v2-0001&code=F&reverse=true`)).body,
    );
    expect(back.parameter.find((p: { name: string }) => p.name === 'match').part).toContainEqual({
      name: 'concept',
      valueCoding: { system: 'http://hl7.org/fhir/administrative-gender', code: 'female' },
    });
    const none = json((await get(`${base}&system=http://hl7.org/fhir/administrative-gender&code=nope`)).body);
    expect(param(none, 'result')?.valueBoolean).toBe(false);
  });

  describe('ill-typed input is a 4xx or no match, never a 500', () => {
    const gender = 'http://hl7.org/fhir/administrative-gender';
    const genderVs = 'http://hl7.org/fhir/ValueSet/administrative-gender';
    const cmUrl = 'http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v2';
    const parameters = (...parameter: unknown[]) => ({ resourceType: 'Parameters', parameter });

    it('$lookup and $translate refuse a coding whose system or code is not a string', async () => {
      expectErrorCode(
        await post(
          '/fhir/CodeSystem/$lookup',
          parameters({ name: 'coding', valueCoding: { system: 5, code: 'male' } }),
        ),
        'parameter-invalid',
      );
      // Read as absent, a system that is not a string would widen the match to every system.
      expectErrorCode(
        await post(
          '/fhir/ConceptMap/$translate',
          parameters(
            { name: 'url', valueUri: cmUrl },
            { name: 'coding', valueCoding: { system: 5, code: 'male' } },
          ),
        ),
        'parameter-invalid',
      );
      expectErrorCode(
        await post(
          '/fhir/ConceptMap/$translate',
          parameters(
            { name: 'url', valueUri: cmUrl },
            { name: 'coding', valueCoding: { system: gender, code: 7 } },
          ),
        ),
        'parameter-invalid',
      );
    });

    it('$validate-code refuses a codeableConcept.coding that is no list, and a valueSet whose url is no string', async () => {
      expectErrorCode(
        await post(
          '/fhir/ValueSet/$validate-code',
          parameters(
            { name: 'url', valueUri: genderVs },
            { name: 'codeableConcept', valueCodeableConcept: { coding: { length: 2 } } },
          ),
        ),
        'parameter-missing',
      );
      expectErrorCode(
        await post(
          '/fhir/ValueSet/$validate-code',
          parameters(
            { name: 'valueSet', resource: { resourceType: 'ValueSet', status: 'active', url: 5 } },
            { name: 'code', valueCode: 'male' },
          ),
        ),
        'parameter-missing',
      );
    });

    it('$translate with a concept map that is null or has a null group finds no mapping', async () => {
      for (const conceptMap of [null, { resourceType: 'ConceptMap', group: [null] }]) {
        const res = await post(
          '/fhir/ConceptMap/$translate',
          parameters({ name: 'conceptMap', resource: conceptMap }, { name: 'code', valueCode: 'a' }),
        );
        expect(res.statusCode, res.body).toBe(200);
        expect(param(json(res.body), 'result')?.valueBoolean).toBe(false);
      }
    });
  });
});
