import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OpenAccess, type AccessPolicy } from '../../src/fhir/interactions/access-policy.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { registerFhirRoutes } from '../../src/fhir/http/fhir-routes.js';
import { createHttpServer } from '../../src/fhir/http/server.js';
import { send, FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';
import { expectErrorCode } from '../support/error-codes.js';

let app: TestApp;
const ids: string[] = [];
let createdAt = '';
beforeAll(async () => {
  app = await startTestApp();
  // Three patients; the first updated twice and then deleted: 3 + 3 = 6 versions.
  for (let i = 0; i < 3; i++) {
    const res = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Patient',
      headers: FHIR_JSON,
      payload: JSON.stringify({ resourceType: 'Patient', gender: 'male' }),
    });
    ids.push(json(res.body).id);
  }
  createdAt = json((await app.fastify.inject({ url: `/fhir/Patient/${ids[2]}` })).body).meta.lastUpdated;
  await new Promise((resolve) => setTimeout(resolve, 5));
  for (const gender of ['female', 'other']) {
    await app.fastify.inject({
      method: 'PUT',
      url: `/fhir/Patient/${ids[0]}`,
      headers: FHIR_JSON,
      payload: JSON.stringify({ resourceType: 'Patient', id: ids[0], gender }),
    });
  }
  await app.fastify.inject({ method: 'DELETE', url: `/fhir/Patient/${ids[0]}` });
  await app.fastify.inject({
    method: 'POST',
    url: '/fhir/Observation',
    headers: FHIR_JSON,
    payload:
      '{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":3.10}}',
  });
});
afterAll(async () => {
  await app?.stop();
});

describe('history', () => {
  it('lists an instance history newest first, with request/response per entry and the deletion without a resource', async () => {
    const res = await send(app, { url: `/fhir/Patient/${ids[0]}/_history` }, 200);
    const bundle = json(res.body);
    expect(bundle.resourceType).toBe('Bundle');
    expect(bundle.type).toBe('history');
    expect(bundle.total).toBe(4);
    expect(bundle.entry.map((e: any) => e.response.etag)).toEqual(['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']);
    expect(bundle.entry[0].request).toEqual({ method: 'DELETE', url: `Patient/${ids[0]}` });
    expect(bundle.entry[0].resource).toBeUndefined();
    expect(bundle.entry[1].resource.gender).toBe('other');
    expect(bundle.entry[3].request).toEqual({ method: 'POST', url: 'Patient' });
    expect(bundle.entry[3].response.status).toBe('201 Created');
    expect(bundle.entry[1].fullUrl).toBe(`http://localhost:80/fhir/Patient/${ids[0]}`);
    expect(bundle.link[0]).toEqual({
      relation: 'self',
      url: `http://localhost:80/fhir/Patient/${ids[0]}/_history`,
    });
  });

  it('lists type and system history, keeping stored decimals', async () => {
    const type = json((await app.fastify.inject({ url: '/fhir/Patient/_history' })).body);
    expect(type.total).toBe(6);
    expect(type.entry.every((e: any) => e.fullUrl.includes('/Patient/'))).toBe(true);
    const system = await app.fastify.inject({ url: '/fhir/_history' });
    expect(json(system.body).total).toBe(7);
    expect(system.body).toContain('"value":3.10');
  });

  it('pages with _count and next links until the end', async () => {
    const seen: string[] = [];
    let url: string | undefined = '/fhir/_history?_count=2';
    let pages = 0;
    while (url) {
      const res = await send(app, { url }, 200);
      const bundle = json(res.body);
      expect(bundle.entry.length).toBeLessThanOrEqual(2);
      for (const entry of bundle.entry) seen.push(`${entry.fullUrl}|${entry.response.etag}`);
      const next = bundle.link.find((l: any) => l.relation === 'next')?.url as string | undefined;
      expect(bundle.link.find((l: any) => l.relation === 'self')).toBeDefined();
      url = next?.replace('http://localhost:80', '');
      if (next) expect(next).toContain('_count=2');
      pages++;
    }
    expect(pages).toBe(4);
    expect(seen).toHaveLength(7);
    expect(new Set(seen).size).toBe(7);
  });

  it('answers _count=0 with the total only', async () => {
    const bundle = json((await app.fastify.inject({ url: '/fhir/_history?_count=0' })).body);
    expect(bundle.total).toBe(7);
    expect(bundle.entry).toEqual([]);
  });

  it('filters with _since and _at', async () => {
    const since = json(
      (await app.fastify.inject({ url: `/fhir/Patient/_history?_since=${encodeURIComponent(createdAt)}` }))
        .body,
    );
    // The third create (at createdAt) and the three later versions of the first patient.
    expect(since.entry).toHaveLength(4);
    const at = json(
      (
        await app.fastify.inject({
          url: `/fhir/Patient/${ids[0]}/_history?_at=${encodeURIComponent(createdAt)}`,
        })
      ).body,
    );
    expect(at.entry.map((e: any) => e.response.etag)).toEqual(['W/"1"']);
    const future = json(
      (await app.fastify.inject({ url: '/fhir/_history?_since=2999-01-01T00:00:00Z' })).body,
    );
    expect(future.entry).toHaveLength(0);
    const year = json((await app.fastify.inject({ url: '/fhir/_history?_since=2000' })).body);
    expect(year.entry).toHaveLength(7);
  });

  it('refuses malformed parameters with 400 saying which', async () => {
    for (const [query, name] of [
      ['_count=abc', '_count'],
      ['_since=yesterday', '_since'],
      ['_at=soon', '_at'],
      ['_since=2020-01-01T00:00:00Z&_since=2021-01-01T00:00:00Z', '_since'],
    ]) {
      const res = await app.fastify.inject({ url: `/fhir/_history?${query}` });
      expect(expectErrorCode(res, 'parameter-invalid').issue[0].expression).toEqual([name]);
    }
    expectErrorCode(
      await app.fastify.inject({ url: '/fhir/_history?_cursor=garbage' }),
      'page-cursor-invalid',
    );
  });

  it('answers 404 for the history of an unknown resource', async () => {
    expect((await app.fastify.inject({ url: '/fhir/Patient/unknown/_history' })).statusCode).toBe(404);
  });
});

const open = new OpenAccess();

describe('access policy on read paths', () => {
  it('hides what the caller may not see: read is 404, history leaves it out', async () => {
    // The same store and registry behind a policy that hides the first patient.
    const hidden = ids[1];
    const hideOne: AccessPolicy = {
      caller: open.caller,
      authorize: () => undefined,
      canRead: (version: StoredVersion) => version.id !== hidden,
      canWrite: () => true,
    };
    const fastify = createHttpServer({ logLevel: 'silent', bodyLimit: 1024 * 1024 });
    await registerFhirRoutes(fastify, {
      prefix: '/fhir',
      registry: app.registry,
      context: { store: app.store, validator: app.validator },
      accessFor: () => hideOne,
    });
    try {
      expect((await fastify.inject({ url: `/fhir/Patient/${hidden}` })).statusCode).toBe(404);
      expect((await fastify.inject({ url: `/fhir/Patient/${hidden}/_history/1` })).statusCode).toBe(404);
      expect((await fastify.inject({ url: `/fhir/Patient/${hidden}/_history` })).statusCode).toBe(404);
      const type = json((await fastify.inject({ url: '/fhir/Patient/_history' })).body);
      expect(type.entry).toHaveLength(5);
      // Counted as if the hidden resource did not exist.
      expect(type.total).toBe(5);
      expect(type.entry.some((e: any) => e.fullUrl.endsWith(hidden))).toBe(false);
      expect((await fastify.inject({ url: `/fhir/Patient/${ids[2]}` })).statusCode).toBe(200);
    } finally {
      await fastify.close();
    }
  });

  it('refuses writes the policy forbids with 403, storing nothing', async () => {
    const readOnly: AccessPolicy = {
      caller: open.caller,
      authorize: () => undefined,
      canRead: () => true,
      canWrite: () => false,
    };
    const fastify = createHttpServer({ logLevel: 'silent', bodyLimit: 1024 * 1024 });
    await registerFhirRoutes(fastify, {
      prefix: '/fhir',
      registry: app.registry,
      context: { store: app.store, validator: app.validator },
      accessFor: () => readOnly,
    });
    try {
      const before = json((await fastify.inject({ url: '/fhir/_history' })).body).total;
      const res = await fastify.inject({
        method: 'POST',
        url: '/fhir/Patient',
        headers: FHIR_JSON,
        payload: '{"resourceType":"Patient"}',
      });
      expectErrorCode(res, 'access-denied');
      expect(json((await fastify.inject({ url: '/fhir/_history' })).body).total).toBe(before);
    } finally {
      await fastify.close();
    }
  });
});
