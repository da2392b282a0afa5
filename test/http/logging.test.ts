/** Structured request logs: every line about a request carries its request id, the one echoed in X-Request-Id. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, FHIR_JSON, type TestApp } from './helpers.js';

describe('request logs', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp();
  });
  afterAll(async () => {
    await app.stop();
  });

  const linesOf = (reqId: string) =>
    app.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.reqId === reqId);

  it('logs incoming and completed with the request id it answers in X-Request-Id', async () => {
    const res = await app.fastify.inject({ method: 'GET', url: '/fhir/Patient/nobody' });
    expect(res.statusCode).toBe(404);
    const reqId = String(res.headers['x-request-id']);
    expect(reqId).toMatch(/^[0-9a-f-]{36}$/);
    const lines = linesOf(reqId);
    expect(lines.map((l) => l.msg)).toEqual(['incoming request', 'request refused', 'request completed']);
    expect(lines[1]).toMatchObject({ status: 404, issue: 'Patient/nobody is not known' });
    expect(lines[2]).toMatchObject({ level: 30, res: { statusCode: 404 } });
  });

  it("uses the client's X-Request-Id when it is a sane token, and never logs the Authorization header", async () => {
    const res = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Patient',
      headers: { ...FHIR_JSON, 'x-request-id': 'ehr-42.a', authorization: 'Bearer secret-token' },
      payload: JSON.stringify({ resourceType: 'Patient', active: true }),
    });
    expect(res.statusCode).toBe(201);
    expect(res.headers['x-request-id']).toBe('ehr-42.a');
    expect(linesOf('ehr-42.a').length).toBe(2);
    expect(app.logs.join('\n')).not.toContain('secret-token');

    const hostile = await app.fastify.inject({
      method: 'GET',
      url: '/fhir/metadata',
      headers: { 'x-request-id': 'bad id\nwith newline' },
    });
    expect(hostile.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});
