/**
 * Writes that change nothing store nothing (docs/architecture.md): a PUT of the current content, or a PATCH with no
 * effect, answers 200 with the current version's ETag and Last-Modified; no new version, no new anchor. "The same"
 * is the resource's content with meta.versionId and meta.lastUpdated aside, member order aside, and decimals as
 * written (`1.50` is not `1.5`). An unknown JSON Patch op is 400.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OUTCOME_CODE_SYSTEM } from '../../src/fhir/error-catalogue.js';
import { send, FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

const JSON_PATCH = { 'content-type': 'application/json-patch+json' };
const ORIGINAL =
  '{"resourceType":"Observation","status":"final","code":{"text":"weight"},"valueQuantity":{"value":70.50,"unit":"kg"},"note":[{"text":"caf\\u00e9"}]}';

/** A new Observation: its URL, its stored text (JSON.parse would lose `70.50`), id and Last-Modified. */
async function created(): Promise<{ url: string; id: string; text: string; lastModified: string }> {
  const res = await send(app, { method: 'POST', url: '/fhir/Observation', body: ORIGINAL }, 201);
  const id = json(res.body).id as string;
  return {
    url: `/fhir/Observation/${id}`,
    id,
    text: res.body,
    lastModified: String(res.headers['last-modified']),
  };
}

async function versionsOf(url: string): Promise<number> {
  const history = json((await app.fastify.inject({ url: `${url}/_history` })).body);
  return history.total ?? history.entry.length;
}

function expectUnchanged(
  res: { statusCode: number; headers: Record<string, unknown>; body: string },
  lastModified: string,
) {
  expect(res.statusCode, res.body).toBe(200);
  expect(res.headers.etag).toBe('W/"1"');
  expect(res.headers['last-modified']).toBe(lastModified);
  expect(json(res.body).meta.versionId).toBe('1');
}

describe('a PUT of the current content', () => {
  it('stores nothing and answers 200 with the current ETag and Last-Modified, whatever meta and member order say', async () => {
    const { url, id, text, lastModified } = await created();
    const anchorsBefore = (await app.store.pendingAnchors(10_000)).length;
    // The same content: members in another order, the escape written out, and a stale meta.versionId/lastUpdated.
    const reordered = `{"note":[{"text":"café"}],"valueQuantity":{"unit":"kg","value":70.50},"code":{"text":"weight"},"status":"final","id":"${id}","meta":{"versionId":"9","lastUpdated":"2020-01-01T00:00:00Z"},"resourceType":"Observation"}`;
    for (const payload of [text, reordered]) {
      const res = await app.fastify.inject({ method: 'PUT', url, headers: FHIR_JSON, payload });
      expectUnchanged(res, lastModified);
      expect(res.body).toContain('"value":70.50');
    }
    const withIfMatch = await app.fastify.inject({
      method: 'PUT',
      url,
      headers: { ...FHIR_JSON, 'if-match': 'W/"1"', prefer: 'return=OperationOutcome' },
      payload: reordered,
    });
    expect(withIfMatch.statusCode).toBe(200);
    // The outcome says so with a stable code (docs/errors.md), the prose aside.
    expect(json(withIfMatch.body).issue[0]).toMatchObject({
      severity: 'information',
      diagnostics: expect.stringMatching(/version 1 unchanged: nothing stored/),
      details: { coding: [{ system: OUTCOME_CODE_SYSTEM, code: 'write-unchanged' }] },
    });
    expect(await versionsOf(url)).toBe(1);
    expect(await app.store.vread('Observation', id, 2)).toBeUndefined();
    expect((await app.store.pendingAnchors(10_000)).length).toBe(anchorsBefore);
    // A stale If-Match is still 412, even for identical content.
    const stale = await app.fastify.inject({
      method: 'PUT',
      url,
      headers: { ...FHIR_JSON, 'if-match': 'W/"2"' },
      payload: reordered,
    });
    expect(stale.statusCode).toBe(412);
  });

  it('stores a new version when only the written precision of a decimal differs (1.5 is not 1.50)', async () => {
    const { url, text } = await created();
    const payload = text.replace('"value":70.50', '"value":70.5');
    expect(payload).not.toBe(text);
    const res = await app.fastify.inject({ method: 'PUT', url, headers: FHIR_JSON, payload });
    expect(res.statusCode).toBe(200);
    expect(res.headers.etag).toBe('W/"2"');
    expect(res.body).toContain('"value":70.5,');
    const changedMeta = await app.fastify.inject({
      method: 'PUT',
      url,
      headers: FHIR_JSON,
      payload: res.body.replace(/"meta":\{[^}]*\}/, '"meta":{"source":"http://example.org/ehr"}'),
    });
    expect(changedMeta.headers.etag).toBe('W/"3"'); // meta other than versionId/lastUpdated is content
  });

  it('is a no-op inside a transaction too', async () => {
    const { id, text } = await created();
    const res = await app.fastify.inject({
      method: 'POST',
      url: '/fhir',
      headers: FHIR_JSON,
      payload: `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":${text},"request":{"method":"PUT","url":"Observation/${id}"}}]}`,
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res.body).entry[0].response).toMatchObject({ status: '200 OK', etag: 'W/"1"' });
    expect(await versionsOf(`/fhir/Observation/${id}`)).toBe(1);
  });
});

describe('a PATCH with no effect', () => {
  it('stores nothing: [], replacing a value or the whole resource with the same, FHIRPath Patch deleting nothing or replacing with the same', async () => {
    const { url, text, lastModified } = await created();
    const withoutMeta = text.replace(/"meta":\{[^}]*\},/, '');
    expect(withoutMeta).not.toContain('versionId');
    const patches: [Record<string, string>, string][] = [
      [JSON_PATCH, '[]'],
      [JSON_PATCH, '[{"op":"replace","path":"/status","value":"final"}]'],
      [JSON_PATCH, '[{"op":"replace","path":"/valueQuantity/value","value":70.50}]'],
      [JSON_PATCH, `[{"op":"replace","path":"","value":${withoutMeta}}]`],
      [
        JSON_PATCH,
        '[{"op":"test","path":"/status","value":"final"},{"op":"copy","from":"/status","path":"/status"}]',
      ],
      [
        FHIR_JSON,
        JSON.stringify({
          resourceType: 'Parameters',
          parameter: [
            {
              name: 'operation',
              part: [
                { name: 'type', valueCode: 'delete' },
                { name: 'path', valueString: 'Observation.issued' },
              ],
            },
            {
              name: 'operation',
              part: [
                { name: 'type', valueCode: 'replace' },
                { name: 'path', valueString: 'Observation.status' },
                { name: 'value', valueCode: 'final' },
              ],
            },
          ],
        }),
      ],
    ];
    for (const [headers, payload] of patches) {
      const res = await app.fastify.inject({ method: 'PATCH', url, headers, payload });
      expectUnchanged(res, lastModified);
    }
    expect(await versionsOf(url)).toBe(1);
    // A patch that does change something still makes version 2; decimals as written count.
    const changed = await app.fastify.inject({
      method: 'PATCH',
      url,
      headers: JSON_PATCH,
      payload: '[{"op":"replace","path":"/valueQuantity/value","value":70.5}]',
    });
    expect(changed.headers.etag).toBe('W/"2"');
  });

  it('answers an op JSON Patch does not define with 400 and stores nothing', async () => {
    const { url } = await created();
    for (const op of ['_get', 'frobnicate', 'Replace']) {
      const res = await app.fastify.inject({
        method: 'PATCH',
        url,
        headers: JSON_PATCH,
        payload: JSON.stringify([{ op, path: '/status', value: 'final' }]),
      });
      expect(res.statusCode, `${op}: ${res.body}`).toBe(400);
      expect(json(res.body).issue[0].code).toBe('invalid');
    }
    expect(await versionsOf(url)).toBe(1);
  });
});
