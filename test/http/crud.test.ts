import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issue } from '../../src/fhir/outcome.js';
import type { ResourceValidator } from '../../src/fhir/validation/validator.js';
import { send, FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';
import { expectErrorCode } from '../support/error-codes.js';

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

const patient = (extra: Record<string, unknown> = {}) => ({
  resourceType: 'Patient',
  name: [{ family: 'Chalmers', given: ['Peter'] }],
  birthDate: '1974-12',
  ...extra,
});

async function create(resource: unknown, headers: Record<string, string> = {}) {
  return app.fastify.inject({
    method: 'POST',
    url: '/fhir/Patient',
    headers: { ...FHIR_JSON, ...headers },
    payload: JSON.stringify(resource),
  });
}

function expectOutcome(body: string, code?: string) {
  const outcome = json(body);
  expect(outcome.resourceType).toBe('OperationOutcome');
  expect(outcome.issue.length).toBeGreaterThan(0);
  if (code) expect(outcome.issue[0].code).toBe(code);
  return outcome;
}

describe('create', () => {
  it('assigns an id and version, and answers 201 with Location, ETag and Last-Modified', async () => {
    const res = await create({ ...patient(), id: 'ignored', meta: { versionId: '99' } });
    expect(res.statusCode).toBe(201);
    const body = json(res.body);
    expect(body.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(body.id).not.toBe('ignored');
    expect(body.meta.versionId).toBe('1');
    expect(res.headers.location).toBe(`http://localhost:80/fhir/Patient/${body.id}/_history/1`);
    expect(res.headers.etag).toBe('W/"1"');
    expect(new Date(String(res.headers['last-modified'])).getTime()).toBeGreaterThan(0);
    expect(res.headers['content-type']).toBe('application/fhir+json; charset=utf-8');
    expect(res.headers['x-request-id']).toBeTruthy();
  });

  it('keeps decimals exactly as written and partial dates partial', async () => {
    const text =
      '{"resourceType":"Observation","status":"final","code":{"text":"weight"},"effectiveDateTime":"2020-03","valueQuantity":{"value":1.50,"unit":"kg"},"component":[{"code":{"text":"x"},"valueQuantity":{"value":100.000}}]}';
    const res = await send(app, { method: 'POST', url: '/fhir/Observation', body: text }, 201);
    expect(res.body).toContain('"value":1.50');
    expect(res.body).toContain('"value":100.000');
    expect(res.body).toContain('"effectiveDateTime":"2020-03"');
    const read = await app.fastify.inject({ url: `/fhir/Observation/${json(res.body).id}` });
    expect(read.body).toBe(res.body);
  });

  it('honours Prefer: return=minimal and return=OperationOutcome', async () => {
    const minimal = await create(patient(), { prefer: 'return=minimal' });
    expect(minimal.statusCode).toBe(201);
    expect(minimal.body).toBe('');
    expect(minimal.headers.location).toMatch(/\/fhir\/Patient\/[^/]+\/_history\/1$/);
    const outcome = await create(patient(), { prefer: 'handling=strict, return=OperationOutcome' });
    expect(outcome.statusCode).toBe(201);
    expectOutcome(outcome.body, 'informational');
    const representation = await create(patient(), { prefer: 'return=representation' });
    expect(json(representation.body).resourceType).toBe('Patient');
  });

  it('refuses invalid resources with 400 and the validator issues, storing nothing', async () => {
    const before = json((await app.fastify.inject({ url: '/fhir/Patient/_history' })).body).total;
    const res = await create({ resourceType: 'Patient', birthDate: 'yesterday', foo: 1 });
    expect(res.statusCode).toBe(400);
    const outcome = expectErrorCode(res, 'resource-invalid');
    expect(outcome.issue.some((i: any) => i.expression?.length > 0)).toBe(true);
    const after = json((await app.fastify.inject({ url: '/fhir/Patient/_history' })).body).total;
    expect(after).toBe(before);
  });

  it('refuses a body whose resourceType is not the URL type (400, expression resourceType)', async () => {
    const res = await send(
      app,
      { method: 'POST', url: '/fhir/Observation', body: JSON.stringify(patient()) },
      400,
    );
    expect(expectErrorCode(res, 'resource-type-mismatch').issue[0].expression).toEqual(['resourceType']);
  });

  it('answers malformed JSON with 400 naming the position', async () => {
    const res = await send(
      app,
      { method: 'POST', url: '/fhir/Patient', body: '{"resourceType":"Patient",,}' },
      400,
    );
    expect(expectErrorCode(res, 'body-not-json').issue[0].diagnostics).toMatch(/character \d+/);
  });

  it('answers non-object JSON, empty bodies and missing resourceType with 400', async () => {
    for (const payload of ['[1,2]', '"text"', '{}', ' ']) {
      const res = await app.fastify.inject({
        method: 'POST',
        url: '/fhir/Patient',
        headers: FHIR_JSON,
        payload,
      });
      expect(res.statusCode, payload).toBe(400);
      expectOutcome(res.body);
    }
  });

  it('creates conditionally with If-None-Exist: no match creates, one match returns it, several are 412', async () => {
    const system = `urn:test:${Date.now()}`;
    const withIdentifier = patient({ identifier: [{ system, value: '1' }] });
    const ifNoneExist = { 'if-none-exist': `identifier=${system}|1` };
    const first = await create(withIdentifier, ifNoneExist);
    expect(first.statusCode).toBe(201);
    const second = await create(withIdentifier, ifNoneExist);
    expect(second.statusCode).toBe(200);
    expect(json(second.body).id).toBe(json(first.body).id);
    expect(second.headers.etag).toBe('W/"1"');
    await create(withIdentifier); // a duplicate, created unconditionally
    const third = await create(withIdentifier, ifNoneExist);
    expect(third.statusCode).toBe(412);
    expectErrorCode(third, 'conditional-multiple-matches');
  });

  it('answers unknown resource types with 404', async () => {
    const res = await send(
      app,
      { method: 'POST', url: '/fhir/Unicorn', body: '{"resourceType":"Unicorn"}' },
      404,
    );
    expectErrorCode(res, 'resource-type-unsupported');
    expect((await app.fastify.inject({ url: '/fhir/Unicorn/1' })).statusCode).toBe(404);
  });
});

describe('read and vread', () => {
  it('reads the current version and a given version, with ETag and Last-Modified', async () => {
    const created = json((await create(patient())).body);
    await send(
      app,
      {
        method: 'PUT',
        url: `/fhir/Patient/${created.id}`,
        body: JSON.stringify({ ...patient({ gender: 'male' }), id: created.id }),
      },
      200,
    );
    const read = await send(app, { url: `/fhir/Patient/${created.id}` }, 200);
    expect(read.headers.etag).toBe('W/"2"');
    expect(json(read.body).gender).toBe('male');
    const v1 = await send(app, { url: `/fhir/Patient/${created.id}/_history/1` }, 200);
    expect(v1.headers.etag).toBe('W/"1"');
    expect(json(v1.body).gender).toBeUndefined();
    expect((await app.fastify.inject({ url: `/fhir/Patient/${created.id}/_history/3` })).statusCode).toBe(
      404,
    );
    expect((await app.fastify.inject({ url: `/fhir/Patient/${created.id}/_history/abc` })).statusCode).toBe(
      404,
    );
  });

  it('answers 404 for an unknown id and 400 for a malformed one', async () => {
    const missing = await send(app, { url: '/fhir/Patient/does-not-exist' }, 404);
    expectErrorCode(missing, 'resource-not-found');
    await send(app, { url: `/fhir/Patient/${'x'.repeat(65)}` }, 400);
    await send(app, { url: '/fhir/Patient/a_b' }, 400);
  });

  it('answers 304 to If-None-Match (W/"n" and *) and If-Modified-Since', async () => {
    const created = json((await create(patient())).body);
    const url = `/fhir/Patient/${created.id}`;
    const etag = await send(app, { url, headers: { 'if-none-match': 'W/"1"' } }, 304);
    expect(etag.body).toBe('');
    expect(etag.headers.etag).toBe('W/"1"');
    expect((await app.fastify.inject({ url, headers: { 'if-none-match': '*' } })).statusCode).toBe(304);
    expect((await app.fastify.inject({ url, headers: { 'if-none-match': 'W/"7"' } })).statusCode).toBe(200);
    const later = new Date(Date.now() + 60_000).toUTCString();
    expect((await app.fastify.inject({ url, headers: { 'if-modified-since': later } })).statusCode).toBe(304);
    const earlier = new Date(Date.now() - 3_600_000).toUTCString();
    expect((await app.fastify.inject({ url, headers: { 'if-modified-since': earlier } })).statusCode).toBe(
      200,
    );
    await send(app, { url: `${url}/_history/1`, headers: { 'if-none-match': 'W/"1"' } }, 304);
  });

  it('answers HEAD like GET without a body', async () => {
    const created = json((await create(patient())).body);
    const head = await send(app, { method: 'HEAD', url: `/fhir/Patient/${created.id}` }, 200);
    expect(head.headers.etag).toBe('W/"1"');
    expect(head.body).toBe('');
  });
});

describe('update', () => {
  it('creates with a client id (201), then updates (200) with a new version', async () => {
    const id = `client-${Date.now()}`;
    const put = (body: unknown, headers: Record<string, string> = {}) =>
      app.fastify.inject({
        method: 'PUT',
        url: `/fhir/Patient/${id}`,
        headers: { ...FHIR_JSON, ...headers },
        payload: JSON.stringify(body),
      });
    const first = await put({ ...patient(), id });
    expect(first.statusCode).toBe(201);
    expect(first.headers.location).toBe(`http://localhost:80/fhir/Patient/${id}/_history/1`);
    const second = await put({ ...patient({ active: true }), id });
    expect(second.statusCode).toBe(200);
    expect(second.headers.etag).toBe('W/"2"');
    expect(json(second.body).meta.versionId).toBe('2');
  });

  it('requires the body id to be present and equal to the URL id (400)', async () => {
    const missing = await send(
      app,
      { method: 'PUT', url: '/fhir/Patient/abc', body: JSON.stringify(patient()) },
      400,
    );
    expect(expectErrorCode(missing, 'resource-id-mismatch').issue[0].expression).toEqual(['Patient.id']);
    await send(
      app,
      { method: 'PUT', url: '/fhir/Patient/abc', body: JSON.stringify({ ...patient(), id: 'xyz' }) },
      400,
    );
  });

  it('checks If-Match: the right version wins, a stale one gets 412 and stores nothing', async () => {
    const created = json((await create(patient())).body);
    const url = `/fhir/Patient/${created.id}`;
    const body = JSON.stringify({ ...patient({ gender: 'female' }), id: created.id });
    await send(app, { method: 'PUT', url, headers: { ...FHIR_JSON, 'if-match': 'W/"1"' }, body: body }, 200);
    const stale = await send(
      app,
      { method: 'PUT', url, headers: { ...FHIR_JSON, 'if-match': 'W/"1"' }, body: body },
      412,
    );
    expectErrorCode(stale, 'version-conflict');
    expect((await app.fastify.inject({ url })).headers.etag).toBe('W/"2"');
  });

  it('runs two concurrent updates with the same If-Match: exactly one wins, the other gets 412', async () => {
    const created = json((await create(patient())).body);
    const url = `/fhir/Patient/${created.id}`;
    const attempt = (gender: string) =>
      app.fastify.inject({
        method: 'PUT',
        url,
        headers: { ...FHIR_JSON, 'if-match': 'W/"1"' },
        payload: JSON.stringify({ ...patient({ gender }), id: created.id }),
      });
    const results = await Promise.all([attempt('male'), attempt('female')]);
    expect(results.map((r) => r.statusCode).sort()).toEqual([200, 412]);
  });
});

describe('delete', () => {
  it('deletes logically: read gives 410, vread of the old version still works, a PUT revives', async () => {
    const created = json((await create(patient())).body);
    const url = `/fhir/Patient/${created.id}`;
    const deleted = await send(app, { method: 'DELETE', url }, 200);
    expect(deleted.headers.etag).toBe('W/"2"');
    expectOutcome(deleted.body, 'informational');
    const gone = await send(app, { url }, 410);
    expectErrorCode(gone, 'resource-deleted');
    expect((await app.fastify.inject({ url: `${url}/_history/1` })).statusCode).toBe(200);
    expect((await app.fastify.inject({ url: `${url}/_history/2` })).statusCode).toBe(410);
    await send(app, { method: 'DELETE', url, headers: { prefer: 'return=minimal' } }, 204);
    const revived = await send(
      app,
      { method: 'PUT', url, body: JSON.stringify({ ...patient(), id: created.id }) },
      201,
    );
    expect(revived.headers.etag).toBe('W/"3"');
  });

  it('checks If-Match on delete (412)', async () => {
    const created = json((await create(patient())).body);
    await send(
      app,
      { method: 'DELETE', url: `/fhir/Patient/${created.id}`, headers: { 'if-match': 'W/"5"' } },
      412,
    );
    expect((await app.fastify.inject({ url: `/fhir/Patient/${created.id}` })).statusCode).toBe(200);
  });
});

describe('HTTP protocol refusals', () => {
  it('answers a method a path does not serve with 405 and Allow', async () => {
    // (DELETE /fhir/Patient is a conditional delete: its criteria are missing, 400; conditional-writes.test.ts)
    const res = await send(app, { method: 'DELETE', url: '/fhir/Patient/_history' }, 405);
    expect(res.headers.allow).toContain('GET');
    expectErrorCode(res, 'method-not-allowed');
    const post = await send(app, { method: 'POST', url: '/fhir/Patient/1', body: '{}' }, 405);
    expect(String(post.headers.allow)).toMatch(/GET.*PUT.*PATCH.*DELETE/);
  });

  it('answers unknown paths with a 404 OperationOutcome, inside and outside /fhir', async () => {
    for (const url of ['/fhir/Patient/1/foo/bar/baz', '/nothing-here']) {
      const res = await app.fastify.inject({ url });
      expect(res.statusCode, url).toBe(404);
      expectErrorCode(res, 'endpoint-not-found');
    }
  });

  it('answers media types other than JSON and XML with 415', async () => {
    const text = await send(
      app,
      { method: 'POST', url: '/fhir/Patient', headers: { 'content-type': 'text/plain' }, body: 'hello' },
      415,
    );
    expectErrorCode(text, 'media-type-unsupported');
  });

  it('accepts fhirVersion=4.0 on Content-Type and Accept, refuses other versions (415/406)', async () => {
    const ok = await create(patient(), {
      'content-type': 'application/fhir+json; fhirVersion=4.0',
      accept: 'application/fhir+json; fhirVersion=4.0',
    });
    expect(ok.statusCode).toBe(201);
    const wrongBody = await create(patient(), { 'content-type': 'application/fhir+json; fhirVersion=3.0' });
    expect(wrongBody.statusCode).toBe(415);
    const wrongAccept = await send(
      app,
      { url: '/fhir/metadata', headers: { accept: 'application/fhir+json; fhirVersion=5.0' } },
      406,
    );
    expectErrorCode(wrongAccept, 'format-not-acceptable');
    const plain = await create(patient(), { 'content-type': 'application/json', accept: 'application/json' });
    expect(plain.statusCode).toBe(201);
    expect(plain.headers['content-type']).toBe('application/json; charset=utf-8');
  });

  it('answers Accept or _format naming no format it serves with 406', async () => {
    const accept = await send(app, { url: '/fhir/metadata', headers: { accept: 'text/turtle' } }, 406);
    expectErrorCode(accept, 'format-not-acceptable');
    const format = await send(app, { url: '/fhir/metadata?_format=ttl' }, 406);
    expect(expectErrorCode(format, 'format-not-acceptable').issue[0].expression).toEqual(['_format']);
    await send(
      app,
      { url: '/fhir/metadata', headers: { accept: 'text/turtle, application/fhir+json;q=0.5' } },
      200,
    );
  });

  it('serves _format=application/fhir+json typed in a URL (the + arrives as a space)', async () => {
    const res = await send(app, { url: '/fhir/metadata?_format=application/fhir+json&_summary=true' }, 200);
    expect(res.headers['content-type']).toMatch(/^application\/fhir\+json/);
  });

  it('serves _format=json and pretty-prints with _pretty=true, keeping decimals', async () => {
    const created = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Observation',
      headers: FHIR_JSON,
      payload:
        '{"resourceType":"Observation","status":"final","code":{"text":"t"},"valueQuantity":{"value":2.50}}',
    });
    const id = json(created.body).id;
    for (const format of ['json', 'application/fhir+json', 'application/json']) {
      const res = await app.fastify.inject({
        url: `/fhir/Observation/${id}?_format=${encodeURIComponent(format)}`,
      });
      expect(res.statusCode, format).toBe(200);
    }
    const pretty = await app.fastify.inject({ url: `/fhir/Observation/${id}?_pretty=true` });
    expect(pretty.body).toContain('\n  "resourceType": "Observation"');
    expect(pretty.body).toContain('"value": 2.50');
    const compact = await app.fastify.inject({ url: `/fhir/Observation/${id}?_pretty=false` });
    expect(compact.body).not.toContain('\n');
  });

  it('applies _summary and _elements to a read', async () => {
    const created = json(
      (
        await create({
          ...patient(),
          text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">P</div>' },
          gender: 'male',
        })
      ).body,
    );
    const elements = json(
      (await app.fastify.inject({ url: `/fhir/Patient/${created.id}?_elements=gender` })).body,
    );
    expect(Object.keys(elements).sort()).toEqual(['gender', 'id', 'meta', 'resourceType']);
    expect(elements.meta.tag[0].code).toBe('SUBSETTED');
    const data = json((await app.fastify.inject({ url: `/fhir/Patient/${created.id}?_summary=data` })).body);
    expect(data.text).toBeUndefined();
    expect(data.name).toBeDefined();
    const text = json((await app.fastify.inject({ url: `/fhir/Patient/${created.id}?_summary=text` })).body);
    expect(text.text).toBeDefined();
    expect(text.name).toBeUndefined();
    const summary = json(
      (await app.fastify.inject({ url: `/fhir/Patient/${created.id}?_summary=true` })).body,
    );
    expect(summary.name).toBeDefined();
    expect(summary.text).toBeUndefined();
    expect((await app.fastify.inject({ url: `/fhir/Patient/${created.id}?_summary=maybe` })).statusCode).toBe(
      400,
    );
  });

  it('echoes a sane X-Request-Id and replaces a hostile one', async () => {
    const given = await app.fastify.inject({ url: '/fhir/metadata', headers: { 'x-request-id': 'abc-123' } });
    expect(given.headers['x-request-id']).toBe('abc-123');
    for (const url of ['/fhir/Patient/unknown-id', '/nowhere', '/fhir/Patient/a_b']) {
      const refused = await app.fastify.inject({ url, headers: { 'x-request-id': 'req-7' } });
      expect(refused.headers['x-request-id'], url).toBe('req-7');
    }
    const hostile = await app.fastify.inject({
      url: '/fhir/metadata',
      headers: { 'x-request-id': 'a\u0001b"}{' },
    });
    expect(hostile.headers['x-request-id']).not.toContain('"');
  });

  it('never logs Authorization headers or tokens', async () => {
    await app.fastify.inject({
      url: '/fhir/metadata?access_token=SECRET-TOKEN-1',
      headers: { authorization: 'Bearer SECRET-TOKEN-2' },
    });
    const all = app.logs.join('');
    expect(all).toContain('/fhir/metadata');
    expect(all).not.toContain('SECRET-TOKEN');
  });
});

describe('body limit', () => {
  it('answers a body over the limit with 413, storing nothing', async () => {
    const small = await startTestApp({}, { bodyLimit: '2048' });
    try {
      const big = JSON.stringify({ ...patient(), name: [{ family: 'x'.repeat(4096) }] });
      const res = await send(small, { method: 'POST', url: '/fhir/Patient', body: big }, 413);
      expectErrorCode(res, 'body-too-large');
      expect(json((await small.fastify.inject({ url: '/fhir/_history' })).body).total).toBe(0);
    } finally {
      await small.stop();
    }
  });
});

describe('hostile input', () => {
  it('answers every one of these with a 4xx OperationOutcome, never a 500', async () => {
    const J = FHIR_JSON;
    await app.fastify.inject({
      method: 'PUT',
      url: '/fhir/Patient/h1',
      headers: J,
      payload: '{"resourceType":"Patient","id":"h1","name":[{"given":["a"]}]}',
    });
    const parameters = (parameter: unknown) => JSON.stringify({ resourceType: 'Parameters', parameter });
    const cases: {
      method?: 'GET' | 'POST' | 'PUT' | 'PATCH';
      url: string;
      headers?: Record<string, string>;
      payload?: string;
    }[] = [
      { url: '/fhir/%E0%A4%A' },
      { url: '/fhir/Patient/%00' },
      { url: `/fhir/Patient/${'a'.repeat(5000)}` },
      { url: '/fhir/_history?_cursor=%7B%22a%22%3A1%7D' },
      {
        method: 'POST',
        url: '/fhir/Patient',
        headers: J,
        payload: '{"resourceType":"Patient","__proto__":{"x":1}}',
      },
      { method: 'POST', url: '/fhir/Patient', headers: J, payload: '['.repeat(100_000) },
      {
        method: 'POST',
        url: '/fhir/Patient',
        headers: J,
        payload: '{"resourceType":"Patient","birthDate":1e999}',
      },
      {
        method: 'POST',
        url: '/fhir/Patient',
        headers: { 'content-type': 'application/fhir+json; charset=utf-16' },
        payload: '{}',
      },
      {
        method: 'PATCH',
        url: '/fhir/Patient/h1',
        headers: { 'content-type': 'application/json-patch+json' },
        payload: '[{"op":"add","path":"/__proto__/x","value":1}]',
      },
      { method: 'PATCH', url: '/fhir/Patient/h1', headers: J, payload: parameters('x') },
      { method: 'PATCH', url: '/fhir/Patient/h1', headers: J, payload: parameters([null, 1, 'x']) },
      {
        method: 'PATCH',
        url: '/fhir/Patient/h1',
        headers: J,
        payload: parameters([
          {
            name: 'operation',
            part: [
              null,
              { name: 'type', valueCode: 'replace' },
              { name: 'path', valueString: 'Patient.name' },
            ],
          },
        ]),
      },
      {
        method: 'PATCH',
        url: '/fhir/Patient/h1',
        headers: J,
        payload: parameters([
          {
            name: 'operation',
            part: [
              { name: 'type', valueCode: 'add' },
              { name: 'path', valueString: 'Patient' },
              { name: 'name', valueString: '__proto__' },
              { name: 'value', valueString: 'y' },
            ],
          },
        ]),
      },
    ];
    for (const request of cases) {
      const res = await app.fastify.inject(request);
      expect(res.statusCode, `${request.method ?? 'GET'} ${request.url.slice(0, 60)}`).toBeGreaterThanOrEqual(
        400,
      );
      expect(
        res.statusCode,
        `${request.method ?? 'GET'} ${request.url.slice(0, 60)}: ${res.body.slice(0, 200)}`,
      ).toBeLessThan(500);
      expectOutcome(res.body);
    }
    expect((await app.fastify.inject({ url: '/fhir/Patient/h1' })).headers.etag).toBe('W/"1"');
  });
});

describe('validation status', () => {
  it('answers 422 when the only errors are business rules (profiles), 400 when the resource is not valid R4', async () => {
    // The real schema validator plus one business rule, as a network profile would add.
    const base = app.validator;
    const withRule: ResourceValidator = {
      isResourceType: (type) => base.isResourceType(type),
      resourceTypes: base.resourceTypes,
      validate(resource, options) {
        const result = base.validate(resource, options);
        const r = resource as { resourceType?: string; gender?: string };
        if (r.resourceType === 'Patient' && r.gender === 'unknown') {
          const rule = issue(
            'error',
            'business-rule',
            'The network profile requires a known gender',
            'Patient.gender',
          );
          return { valid: false, issues: [...result.issues, rule] };
        }
        return result;
      },
    };
    const ruled = await startTestApp({ validator: withRule });
    try {
      const post = (payload: unknown) =>
        ruled.fastify.inject({
          method: 'POST',
          url: '/fhir/Patient',
          headers: FHIR_JSON,
          payload: JSON.stringify(payload),
        });
      const business = await post({ resourceType: 'Patient', gender: 'unknown' });
      expect(business.statusCode).toBe(422);
      expect(expectErrorCode(business, 'resource-rule-violated').issue[0].expression).toEqual([
        'Patient.gender',
      ]);
      const both = await post({ resourceType: 'Patient', gender: 'unknown', birthDate: 'soon' });
      expect(both.statusCode).toBe(400);
      expect((await post({ resourceType: 'Patient', gender: 'male' })).statusCode).toBe(201);
    } finally {
      await ruled.stop();
    }
  });
});
