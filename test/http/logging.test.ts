/**
 * Structured request logs: every line about a request carries its request id, the one echoed in X-Request-Id, and
 * no health data: request lines name the route template and the query parameter names, never ids or values;
 * refusal lines carry the status and issue code, never the text quoting the resource.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { createHttpServer } from '../../src/fhir/http/server.js';
import { send, startTestApp, FHIR_JSON, type TestApp } from './helpers.js';

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
    const res = await send(app, { method: 'GET', url: '/fhir/Patient/nobody' }, 404);
    const reqId = String(res.headers['x-request-id']);
    expect(reqId).toMatch(/^[0-9a-f-]{36}$/);
    const lines = linesOf(reqId);
    expect(lines.map((l) => l.msg)).toEqual(['incoming request', 'request refused', 'request completed']);
    expect(lines[0]).toMatchObject({ req: { method: 'GET', route: '/fhir/Patient/:id' } });
    expect(lines[1]).toMatchObject({ status: 404, code: 'not-found' });
    expect(lines[2]).toMatchObject({ level: 30, res: { statusCode: 404 } });
    expect(JSON.stringify(lines)).not.toContain('nobody');
  });

  it("uses the client's X-Request-Id when it is a sane token, and never logs the Authorization header", async () => {
    const res = await send(
      app,
      {
        method: 'POST',
        url: '/fhir/Patient',
        headers: { ...FHIR_JSON, 'x-request-id': 'ehr-42.a', authorization: 'Bearer secret-token' },
        body: JSON.stringify({ resourceType: 'Patient', active: true }),
      },
      201,
    );
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

/** Values that must never reach the logs: each is in a query, a path or a body below. */
const HEALTH_DATA = [
  'Zebulonova',
  'Quintrell',
  'MRN7730219',
  'mrn.hospital-a.example',
  '1961-04-12',
  'HIVSECRETCODE',
  'MRN5512840',
  'MRN9981123',
  'Kesselwick',
  'not-a-date-8812',
  'MRN3320045',
];

describe('request logs carry no health data', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp();
  });
  afterAll(async () => {
    await app.stop();
  });

  const send = async (
    method: 'GET' | 'POST' | 'PUT' | 'DELETE',
    url: string,
    payload?: unknown,
  ): Promise<{ status: number; lines: Record<string, unknown>[] }> => {
    const res = await app.fastify.inject({
      method,
      url,
      headers: payload === undefined ? {} : FHIR_JSON,
      payload: payload === undefined ? undefined : JSON.stringify(payload),
    });
    const reqId = String(res.headers['x-request-id']);
    const lines = app.logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.reqId === reqId);
    return { status: res.statusCode, lines };
  };
  const requestLine = (lines: Record<string, unknown>[]) =>
    lines.find((l) => l.msg === 'incoming request')?.req as Record<string, unknown>;

  it('logs route templates and parameter names for searches, reads, writes, refusals and errors', async () => {
    const search = await send(
      'GET',
      '/fhir/Patient?name=Zebulonova&identifier=mrn.hospital-a.example|MRN7730219&birthdate=1961-04-12',
    );
    expect(search.status).toBe(200);
    expect.soft(requestLine(search.lines)).toEqual({
      method: 'GET',
      route: '/fhir/Patient',
      params: ['name', 'identifier', 'birthdate'],
      remoteAddress: '127.0.0.1',
    });

    const conditions = await send('GET', '/fhir/Condition?code:text=HIVSECRETCODE&_count=5');
    expect(conditions.status).toBe(200);
    expect.soft(requestLine(conditions.lines)).toMatchObject({
      route: '/fhir/Condition',
      params: ['code:text', '_count'],
    });

    // An unknown parameter: the refusal quotes it back to the client, not to the logs.
    const unknownParam = await send('GET', '/fhir/Patient?name=Quintrell&nickname=Quintrell');
    expect(unknownParam.status).toBeGreaterThanOrEqual(200);

    const created = await send('PUT', '/fhir/Patient/MRN5512840', {
      resourceType: 'Patient',
      id: 'MRN5512840',
      name: [{ family: 'Kesselwick' }],
      birthDate: '1961-04-12',
    });
    expect(created.status).toBe(201);
    expect.soft(requestLine(created.lines)).toMatchObject({ method: 'PUT', route: '/fhir/Patient/:id' });

    const read = await send('GET', '/fhir/Patient/MRN5512840');
    expect(read.status).toBe(200);
    const vread = await send('GET', '/fhir/Patient/MRN5512840/_history/1');
    expect(vread.status).toBe(200);
    expect.soft(requestLine(vread.lines)).toMatchObject({ route: '/fhir/Patient/:id/_history/:vid' });
    const history = await send('GET', '/fhir/Patient/MRN5512840/_history?_count=1');
    expect.soft(requestLine(history.lines)).toMatchObject({
      route: '/fhir/Patient/:id/_history',
      params: ['_count'],
    });
    const everything = await send('GET', '/fhir/Patient/MRN5512840/$everything');
    expect.soft(requestLine(everything.lines)).toMatchObject({ route: '/fhir/Patient/:id/$everything' });

    // Refused writes: an invalid value, an id mismatch; the texts quote the values.
    const invalid = await send('POST', '/fhir/Patient', {
      resourceType: 'Patient',
      name: [{ family: 'Zebulonova' }],
      birthDate: 'not-a-date-8812',
    });
    expect(invalid.status).toBe(400);
    expect(invalid.lines.find((l) => l.msg === 'request refused')).toMatchObject({
      status: 400,
      error: 'resource-invalid',
    });
    const mismatch = await send('PUT', '/fhir/Patient/MRN9981123', {
      resourceType: 'Patient',
      id: 'MRN3320045',
    });
    expect(mismatch.status).toBe(400);

    // Absent, malformed, unknown type and unrouted paths.
    const absent = await send('DELETE', '/fhir/Observation/MRN9981123');
    expect.soft(requestLine(absent.lines)).toMatchObject({ route: '/fhir/Observation/:id' });
    const unknownType = await send('GET', '/fhir/MRN7730219/1961-04-12');
    expect(unknownType.status).toBe(404);
    expect.soft(requestLine(unknownType.lines)).toMatchObject({ route: '/fhir/:type/:id' });
    const unknownOperation = await send('GET', '/fhir/Patient/MRN7730219/$Quintrell');
    expect
      .soft(requestLine(unknownOperation.lines))
      .toMatchObject({ route: '/fhir/Patient/:id/$:operation' });
    const deep = await send('GET', '/fhir/Patient/MRN7730219/Zebulonova/Kesselwick');
    expect.soft(requestLine(deep.lines)).toMatchObject({ route: '/fhir/:unknown' });
    const unrouted = await send('GET', '/MRN7730219?name=Zebulonova');
    expect(unrouted.status).toBe(404);
    expect.soft(requestLine(unrouted.lines)).toMatchObject({ params: ['name'] });
    const badEncoding = await send('GET', '/fhir/Patient/MRN7730219%E0%A4%A');
    expect(badEncoding.status).toBe(400);

    const all = app.logs.join('\n');
    for (const value of HEALTH_DATA) expect(all, value).not.toContain(value);
  });
});

describe('request logs with --log-values on (operator debugging)', () => {
  it('logs the full URL and refusal texts, secrets still redacted', async () => {
    const app = await startTestApp({}, { logValues: 'on' });
    try {
      const res = await send(
        app,
        { method: 'GET', url: '/fhir/Patient/MRN5512840?name=Zebulonova&access_token=secret-token' },
        404,
      );
      const reqId = String(res.headers['x-request-id']);
      const lines = app.logs
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.reqId === reqId);
      expect(lines[0]).toMatchObject({
        req: {
          route: '/fhir/Patient/:id',
          url: '/fhir/Patient/MRN5512840?name=Zebulonova&access_token=[redacted]',
        },
      });
      expect(lines[1]).toMatchObject({ status: 404, issue: expect.stringContaining('MRN5512840') });
      expect(app.logs.join('\n')).not.toContain('secret-token');
    } finally {
      await app.stop();
    }
  });
});

describe('errors in the logs', () => {
  const loggedError = (logValues: boolean) => {
    const lines: string[] = [];
    const logStream = new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const app = createHttpServer({ logLevel: 'info', bodyLimit: 1024, logStream, logValues });
    const err = Object.assign(new TypeError("Cannot read 'MRN7730219' of Zebulonova"), { code: 'E_TEST' });
    app.log.child({ component: 'store' }).error({ err }, 'a bug');
    return JSON.parse(lines[0]) as { err: { type: string; code?: string; message: string; stack: string } };
  };

  it('carry the type, code and stack frames, not the message (which may quote a request)', () => {
    const { err } = loggedError(false);
    expect(err).toMatchObject({ type: 'TypeError', code: 'E_TEST' });
    expect(err.stack).toMatch(/^TypeError\n {4}at /);
    expect(JSON.stringify(err)).not.toMatch(/MRN7730219|Zebulonova/);
  });

  it('carry the message with --log-values on', () => {
    expect(loggedError(true).err.message).toBe("Cannot read 'MRN7730219' of Zebulonova");
  });
});
