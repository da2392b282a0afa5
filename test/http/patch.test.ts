import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { send, FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';
import { expectErrorCode } from '../support/error-codes.js';

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

const JSON_PATCH = { 'content-type': 'application/json-patch+json' };

async function createPatient(testApp: TestApp = app) {
  const res = await send(
    testApp,
    {
      method: 'POST',
      url: '/fhir/Patient',
      body: '{"resourceType":"Patient","active":true,"name":[{"family":"Ng","given":["Ann","Bea"]},{"family":"Old"}],"birthDate":"1970-05","deceasedBoolean":false,"extension":[{"url":"http://example.org/w","valueDecimal":70.50}]}',
    },
    201,
  );
  return json(res.body).id as string;
}

function patch(url: string, headers: Record<string, string>, payload: unknown) {
  return app.fastify.inject({
    method: 'PATCH',
    url,
    headers,
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
}

const operation = (parts: Record<string, unknown>[]) => ({ name: 'operation', part: parts });
const fhirPathPatch = (...operations: Record<string, unknown>[][]) => ({
  resourceType: 'Parameters',
  parameter: operations.map(operation),
});

describe('JSON Patch', () => {
  it('applies operations, keeps untouched decimals, and makes a new version', async () => {
    const id = await createPatient();
    const res = await patch(`/fhir/Patient/${id}`, JSON_PATCH, [
      { op: 'replace', path: '/active', value: false },
      { op: 'add', path: '/gender', value: 'female' },
      { op: 'remove', path: '/name/1' },
    ]);
    expect(res.statusCode).toBe(200);
    expect(res.headers.etag).toBe('W/"2"');
    const body = json(res.body);
    expect(body.active).toBe(false);
    expect(body.gender).toBe('female');
    expect(body.name).toHaveLength(1);
    expect(res.body).toContain('"valueDecimal":70.50');
    expect(body.meta.versionId).toBe('2');
  });

  it('keeps decimals written in the patch', async () => {
    const id = await createPatient();
    const res = await patch(
      `/fhir/Patient/${id}`,
      JSON_PATCH,
      '[{"op":"replace","path":"/extension/0/valueDecimal","value":80.250}]',
    );
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('"valueDecimal":80.250');
  });

  it('answers a failing test op or a missing path with 422, storing nothing', async () => {
    const id = await createPatient();
    const failedTest = await patch(`/fhir/Patient/${id}`, JSON_PATCH, [
      { op: 'test', path: '/active', value: false },
    ]);
    expectErrorCode(failedTest, 'patch-not-applicable');
    expect(json(failedTest.body).resourceType).toBe('OperationOutcome');
    const missing = await patch(`/fhir/Patient/${id}`, JSON_PATCH, [
      { op: 'replace', path: '/nothing/here', value: 1 },
    ]);
    expectErrorCode(missing, 'patch-not-applicable');
    expect((await app.fastify.inject({ url: `/fhir/Patient/${id}` })).headers.etag).toBe('W/"1"');
  });

  it('answers a patch that makes the resource invalid, or changes its id, with 422', async () => {
    const id = await createPatient();
    const invalid = await patch(`/fhir/Patient/${id}`, JSON_PATCH, [
      { op: 'add', path: '/birthDate', value: 'not a date' },
    ]);
    expectErrorCode(invalid, 'patch-result-invalid');
    expect(json(invalid.body).issue[0].expression[0]).toContain('birthDate');
    const renamed = await patch(`/fhir/Patient/${id}`, JSON_PATCH, [
      { op: 'replace', path: '/id', value: 'other' },
    ]);
    expectErrorCode(renamed, 'patch-not-applicable');
  });

  it('answers a malformed patch document with 400', async () => {
    const id = await createPatient();
    expectErrorCode(await patch(`/fhir/Patient/${id}`, JSON_PATCH, { op: 'add' }), 'patch-invalid');
    expectErrorCode(
      await patch(`/fhir/Patient/${id}`, JSON_PATCH, [{ op: 'frobnicate', path: '/a' }]),
      'patch-invalid',
    );
    expectErrorCode(await patch(`/fhir/Patient/${id}`, JSON_PATCH, '[{'), 'body-not-json');
  });

  it('checks If-Match (412), answers 404 for unknown and 410 for deleted resources', async () => {
    const id = await createPatient();
    await send(
      app,
      {
        method: 'PATCH',
        url: `/fhir/Patient/${id}`,
        headers: { ...JSON_PATCH, 'if-match': 'W/"9"' },
        body: '[{"op":"replace","path":"/active","value":false}]',
      },
      412,
    );
    expectErrorCode(await patch('/fhir/Patient/nope', JSON_PATCH, []), 'resource-not-found');
    await app.fastify.inject({ method: 'DELETE', url: `/fhir/Patient/${id}` });
    expectErrorCode(await patch(`/fhir/Patient/${id}`, JSON_PATCH, []), 'resource-deleted');
  });

  it('answers other patch media types with 415', async () => {
    const id = await createPatient();
    const res = await patch(`/fhir/Patient/${id}`, { 'content-type': 'application/merge-patch+json' }, '{}');
    expectErrorCode(res, 'media-type-unsupported');
  });
});

describe('FHIRPath Patch', () => {
  it('adds, inserts, replaces, moves and deletes', async () => {
    const id = await createPatient();
    const res = await patch(
      `/fhir/Patient/${id}`,
      FHIR_JSON,
      fhirPathPatch(
        [
          { name: 'type', valueCode: 'add' },
          { name: 'path', valueString: 'Patient' },
          { name: 'name', valueString: 'gender' },
          { name: 'value', valueCode: 'male' },
        ],
        [
          { name: 'type', valueCode: 'insert' },
          { name: 'path', valueString: 'Patient.name[0].given' },
          { name: 'index', valueInteger: 0 },
          { name: 'value', valueString: 'Zoe' },
        ],
        [
          { name: 'type', valueCode: 'replace' },
          { name: 'path', valueString: 'Patient.birthDate' },
          { name: 'value', valueDate: '1971' },
        ],
        [
          { name: 'type', valueCode: 'move' },
          { name: 'path', valueString: 'Patient.name' },
          { name: 'source', valueInteger: 1 },
          { name: 'destination', valueInteger: 0 },
        ],
        [
          { name: 'type', valueCode: 'delete' },
          { name: 'path', valueString: "Patient.name.where(family='Ng').given[2]" },
        ],
        [
          { name: 'type', valueCode: 'replace' },
          { name: 'path', valueString: 'Patient.deceased' },
          { name: 'value', valueDateTime: '2020-01' },
        ],
        [
          { name: 'type', valueCode: 'add' },
          { name: 'path', valueString: 'Patient' },
          { name: 'name', valueString: 'telecom' },
          {
            name: 'value',
            part: [
              { name: 'system', valueCode: 'phone' },
              { name: 'value', valueString: '555' },
            ],
          },
        ],
      ),
    );
    expect(res.statusCode, res.body).toBe(200);
    const body = json(res.body);
    expect(body.gender).toBe('male');
    expect(body.birthDate).toBe('1971');
    expect(body.name[0].family).toBe('Old');
    expect(body.name[1].given).toEqual(['Zoe', 'Ann']);
    expect(body.deceasedBoolean).toBeUndefined();
    expect(body.deceasedDateTime).toBe('2020-01');
    expect(body.telecom).toEqual([{ system: 'phone', value: '555' }]);
    expect(res.body).toContain('"valueDecimal":70.50');
  });

  it('answers a replace whose path matches several elements, or an insert out of range, with 422', async () => {
    const id = await createPatient();
    const several = await patch(
      `/fhir/Patient/${id}`,
      FHIR_JSON,
      fhirPathPatch([
        { name: 'type', valueCode: 'replace' },
        { name: 'path', valueString: 'Patient.name' },
        { name: 'value', valueHumanName: { family: 'X' } },
      ]),
    );
    expectErrorCode(several, 'patch-not-applicable');
    const range = await patch(
      `/fhir/Patient/${id}`,
      FHIR_JSON,
      fhirPathPatch([
        { name: 'type', valueCode: 'insert' },
        { name: 'path', valueString: 'Patient.name' },
        { name: 'index', valueInteger: 7 },
        { name: 'value', valueHumanName: { family: 'X' } },
      ]),
    );
    expectErrorCode(range, 'patch-not-applicable');
  });

  it('answers malformed FHIRPath Patch documents with 400', async () => {
    const id = await createPatient();
    const notParameters = await patch(`/fhir/Patient/${id}`, FHIR_JSON, { resourceType: 'Patient' });
    expectErrorCode(notParameters, 'patch-invalid');
    const badType = await patch(
      `/fhir/Patient/${id}`,
      FHIR_JSON,
      fhirPathPatch([
        { name: 'type', valueCode: 'explode' },
        { name: 'path', valueString: 'Patient' },
      ]),
    );
    expectErrorCode(badType, 'patch-invalid');
    const badPath = await patch(
      `/fhir/Patient/${id}`,
      FHIR_JSON,
      fhirPathPatch([
        { name: 'type', valueCode: 'delete' },
        { name: 'path', valueString: 'Patient.name.where(' },
      ]),
    );
    expectErrorCode(badPath, 'patch-invalid');
    expect(json(badPath.body).issue[0].expression).toEqual(['Parameters.parameter[0]']);
  });
});

describe('patch racing another write', () => {
  it('answers 409 when the resource changes between the patch being computed and stored', async () => {
    // A store whose read lets another writer in first: exactly the interleaving a busy server can produce.
    let raced = false;
    const createStore = (file: string): ResourceStore => {
      const store = new SqliteResourceStore({ file });
      const read = store.read.bind(store);
      store.read = async (type, id) => {
        const current = await read(type, id);
        if (!raced && current && type === 'Patient' && current.versionId === 2) {
          raced = true;
          await store.write({
            resourceType: type,
            id,
            method: 'PUT',
            resource: { ...JSON.parse(current.json!), gender: 'other' },
          });
        }
        return current;
      };
      return store;
    };
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const racing = await startTestApp({
      store: createStore(join(mkdtempSync(join(tmpdir(), 'hie-race-')), 'r.sqlite')),
    });
    try {
      const id = await createPatient(racing);
      await send(
        racing,
        {
          method: 'PATCH',
          url: `/fhir/Patient/${id}`,
          headers: JSON_PATCH,
          body: '[{"op":"replace","path":"/active","value":false}]',
        },
        200,
      );
      const second = await send(
        racing,
        {
          method: 'PATCH',
          url: `/fhir/Patient/${id}`,
          headers: JSON_PATCH,
          body: '[{"op":"replace","path":"/active","value":true}]',
        },
        409,
      );
      expect(json(second.body).issue[0].code).toBe('conflict');
      const current = json((await racing.fastify.inject({ url: `/fhir/Patient/${id}` })).body);
      expect(current.gender).toBe('other');
      expect(current.active).toBe(false);
      expect(current.meta.versionId).toBe('3');
    } finally {
      await racing.stop();
    }
  });
});
