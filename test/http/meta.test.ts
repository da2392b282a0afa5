/** $meta, $meta-add and $meta-delete over HTTP: each change a new version, validated, access-checked and anchored. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

const TAG_A = { system: 'urn:test:tags', code: 'a' };
const TAG_B = { system: 'urn:test:tags', code: 'b' };
const SECURITY = { system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' };
const metaParameters = (meta: Record<string, unknown>) => ({
  resourceType: 'Parameters',
  parameter: [{ name: 'meta', valueMeta: meta }],
});
function call(method: 'GET' | 'POST', url: string, payload?: unknown) {
  return app.fastify.inject({
    method,
    url: `/fhir/${url}`,
    headers: FHIR_JSON,
    ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }),
  });
}
const returned = (body: string) => json(body).parameter.find((p: any) => p.name === 'return').valueMeta;

describe('$meta, $meta-add, $meta-delete', () => {
  it('reads, adds and deletes tags and security labels, each change a new version', async () => {
    const created = await call('POST', 'Patient', { resourceType: 'Patient', meta: { tag: [TAG_A] } });
    expect(created.statusCode).toBe(201);
    const id = json(created.body).id;

    const first = await call('GET', `Patient/${id}/$meta`);
    expect(first.statusCode, first.body).toBe(200);
    expect(returned(first.body).tag).toEqual([TAG_A]);

    const added = await call(
      'POST',
      `Patient/${id}/$meta-add`,
      metaParameters({ tag: [TAG_B, TAG_A], security: [SECURITY] }),
    );
    expect(added.statusCode, added.body).toBe(200);
    expect(added.headers.etag).toBe('W/"2"');
    expect(returned(added.body).tag).toEqual([TAG_A, TAG_B]);
    expect(returned(added.body).security).toEqual([SECURITY]);
    expect(returned(added.body).versionId).toBe('2');
    const read = json((await call('GET', `Patient/${id}`)).body);
    expect(read.meta.tag).toEqual([TAG_A, TAG_B]);

    // adding what is there already stores nothing
    const again = await call('POST', `Patient/${id}/$meta-add`, metaParameters({ tag: [TAG_B] }));
    expect(again.statusCode).toBe(200);
    expect(again.headers.etag).toBe('W/"2"');

    const deleted = await call(
      'POST',
      `Patient/${id}/$meta-delete`,
      metaParameters({ tag: [TAG_A], security: [SECURITY] }),
    );
    expect(deleted.statusCode, deleted.body).toBe(200);
    expect(deleted.headers.etag).toBe('W/"3"');
    expect(returned(deleted.body).tag).toEqual([TAG_B]);
    expect(returned(deleted.body).security).toBeUndefined();

    // $meta of an earlier version; every version is in the history, and queued for anchoring like any write
    expect(returned((await call('GET', `Patient/${id}/_history/1/$meta`)).body).tag).toEqual([TAG_A]);
    const history = json((await call('GET', `Patient/${id}/_history`)).body);
    expect(history.entry.map((e: any) => e.resource.meta.versionId)).toEqual(['3', '2', '1']);
    const verify = await call('GET', `Patient/${id}/_history/3/$verify`);
    expect(verify.statusCode, verify.body).toBe(200);
    const status = json(verify.body).parameter.find((p: any) => p.name === 'status');
    expect(['pending', 'anchored']).toContain(status.valueCode ?? status.valueString);
  });

  it('answers an unknown resource with 404 and a body without a meta parameter with 400', async () => {
    expect((await call('GET', 'Patient/no-such-patient/$meta')).statusCode).toBe(404);
    expect(
      (await call('POST', 'Patient/no-such-patient/$meta-add', metaParameters({ tag: [TAG_A] }))).statusCode,
    ).toBe(404);
    const id = json((await call('POST', 'Patient', { resourceType: 'Patient' })).body).id;
    const missing = await call('POST', `Patient/${id}/$meta-add`, { resourceType: 'Parameters' });
    expect(missing.statusCode).toBe(400);
    expect((await call('GET', `Patient/${id}/$meta-add`)).statusCode).toBe(405);
  });
});
