import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send, startTestApp, type TestApp } from '../http/helpers.js';

describe('CapabilityStatement security', () => {
  let smart: TestApp;
  let open: TestApp;
  beforeAll(async () => {
    smart = await startTestApp({}, { auth: 'smart' });
    open = await startTestApp();
  });
  afterAll(async () => {
    await smart.stop();
    await open.stop();
  });

  it('tells SMART clients where the token endpoint is, and that it is the one /auth/token answers at', async () => {
    const res = await send(smart, { url: '/fhir/metadata', headers: { host: 'hie.example:8443' } }, 200);
    const security = JSON.parse(res.body).rest[0].security;
    expect(security.service[0].coding[0].code).toBe('SMART-on-FHIR');
    const oauth = security.extension.find((e: any) => e.url.endsWith('/oauth-uris'));
    const token = oauth.extension.find((e: any) => e.url === 'token').valueUri;
    expect(token).toBe('http://hie.example:8443/auth/token');
    // The advertised endpoint exists: a request without an assertion is an OAuth error, not a 404.
    const answer = await smart.fastify.inject({ method: 'POST', url: new URL(token).pathname, payload: {} });
    expect(answer.statusCode).toBe(400);
    expect(JSON.parse(answer.body).error).toMatch(/invalid_request|unsupported_grant_type/);
  });

  it('claims no security service when access is open (development)', async () => {
    const res = await open.fastify.inject({ url: '/fhir/metadata' });
    expect(JSON.parse(res.body).rest[0].security).toBeUndefined();
  });
});
