/**
 * Conditional update, patch and delete over plain HTTP (`PUT/PATCH/DELETE [type]?criteria`,
 * http://hl7.org/fhir/R4/http.html#cond-update): the spec's 200/201/400/404/412 rules.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

const SYSTEM = 'urn:test:conditional-writes';
const criteria = (value: string) => `identifier=${SYSTEM}|${value}`;
const patient = (value: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Patient',
  identifier: [{ system: SYSTEM, value }],
  ...extra,
});
function request(
  method: 'PUT' | 'PATCH' | 'DELETE' | 'POST' | 'GET',
  url: string,
  payload?: unknown,
  headers = {},
) {
  return app.fastify.inject({
    method,
    url: `/fhir/${url}`,
    headers: { ...FHIR_JSON, ...headers },
    ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }),
  });
}
const code = (body: string) => json(body).issue?.[0]?.details?.coding?.[0]?.code;
async function matching(value: string): Promise<any[]> {
  const bundle = json((await request('GET', `Patient?${criteria(value)}`)).body);
  return (bundle.entry ?? []).map((e: any) => e.resource);
}

describe('conditional update: PUT [type]?criteria', () => {
  it('creates without a match (201), then updates the one match (200, same id, next version)', async () => {
    const created = await request('PUT', `Patient?${criteria('u1')}`, patient('u1'));
    expect(created.statusCode, created.body).toBe(201);
    const id = json(created.body).id;
    expect(created.headers.location).toContain(`/Patient/${id}/_history/1`);
    const updated = await request('PUT', `Patient?${criteria('u1')}`, patient('u1', { gender: 'female' }));
    expect(updated.statusCode, updated.body).toBe(200);
    expect(json(updated.body).id).toBe(id);
    expect(updated.headers.etag).toBe('W/"2"');
    // a body id equal to the match's is fine
    const same = await request('PUT', `Patient?${criteria('u1')}`, patient('u1', { id, gender: 'male' }));
    expect(same.statusCode, same.body).toBe(200);
    expect((await matching('u1')).map((p) => p.gender)).toEqual(['male']);
  });

  it("refuses a body id that is not the match's (400), several matches (412), and no criteria (400)", async () => {
    const created = await request('PUT', `Patient?${criteria('u2')}`, patient('u2'));
    expect(created.statusCode).toBe(201);
    const other = await request('PUT', `Patient?${criteria('u2')}`, patient('u2', { id: 'not-the-match' }));
    expect(other.statusCode).toBe(400);
    expect(code(other.body)).toBe('resource-id-mismatch');
    expect((await request('POST', 'Patient', patient('u2'))).statusCode).toBe(201);
    const several = await request('PUT', `Patient?${criteria('u2')}`, patient('u2', { gender: 'other' }));
    expect(several.statusCode).toBe(412);
    expect(code(several.body)).toBe('conditional-multiple-matches');
    expect((await matching('u2')).map((p) => p.gender ?? null)).toEqual([null, null]);
    const none = await request('PUT', 'Patient', patient('u2'));
    expect(none.statusCode).toBe(400);
    expect(code(none.body)).toBe('conditional-criteria-missing');
  });

  it('no match with an id in the body is an update as create (201 with that id)', async () => {
    const res = await request('PUT', `Patient?${criteria('u3')}`, patient('u3', { id: 'cond-update-3' }));
    expect(res.statusCode, res.body).toBe(201);
    expect(json(res.body).id).toBe('cond-update-3');
  });

  it('refuses criteria it cannot apply (400) instead of matching everything', async () => {
    const res = await request('PUT', `Patient?no-such-parameter=x`, patient('u4'));
    expect(res.statusCode).toBe(400);
    expect(code(res.body)).toBe('search-param-unsupported');
    expect(await matching('u4')).toEqual([]);
  });
});

describe('conditional patch: PATCH [type]?criteria', () => {
  it('patches the one match (200), 404 without a match, 412 with several', async () => {
    const id = json((await request('POST', 'Patient', patient('p1'))).body).id;
    const ops = [{ op: 'add', path: '/gender', value: 'female' }];
    const headers = { 'content-type': 'application/json-patch+json' };
    const patched = await request('PATCH', `Patient?${criteria('p1')}`, ops, headers);
    expect(patched.statusCode, patched.body).toBe(200);
    expect(json(patched.body).id).toBe(id);
    expect(json(patched.body).gender).toBe('female');
    const none = await request('PATCH', `Patient?${criteria('p-none')}`, ops, headers);
    expect(none.statusCode).toBe(404);
    expect(code(none.body)).toBe('resource-not-found');
    await request('POST', 'Patient', patient('p1'));
    const several = await request('PATCH', `Patient?${criteria('p1')}`, ops, headers);
    expect(several.statusCode).toBe(412);
  });
});

describe('conditional delete: DELETE [type]?criteria', () => {
  it('deletes the one match, deletes nothing without a match (200/204), 412 with several', async () => {
    const id = json((await request('POST', 'Patient', patient('d1'))).body).id;
    const deleted = await request('DELETE', `Patient?${criteria('d1')}`);
    expect(deleted.statusCode, deleted.body).toBe(200);
    expect((await request('GET', `Patient/${id}`)).statusCode).toBe(410);
    expect((await request('DELETE', `Patient?${criteria('d1')}`)).statusCode).toBe(200);
    expect(
      (await request('DELETE', `Patient?${criteria('d1')}`, undefined, { prefer: 'return=minimal' }))
        .statusCode,
    ).toBe(204);
    await request('POST', 'Patient', patient('d2'));
    await request('POST', 'Patient', patient('d2'));
    const several = await request('DELETE', `Patient?${criteria('d2')}`);
    expect(several.statusCode).toBe(412);
    expect(code(several.body)).toBe('conditional-multiple-matches');
    expect(await matching('d2')).toHaveLength(2);
  });
});
