/**
 * Hostile input over HTTP: every answer is a 4xx OperationOutcome (or the normal answer), never a 500, and nothing
 * a client could not have meant is stored. Query parameters named like Object.prototype members, JSON nested
 * too deeply, duplicate property names, invalid UTF-8 and lone UTF-16 surrogates, on every route family.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH } from '../../src/fhir/fhir-json.js';
import { send, FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';
import { expectErrorCode } from '../support/error-codes.js';
import type { ErrorCode } from '../../src/fhir/error-catalogue.js';

let app: TestApp;
let patientId: string;

beforeAll(async () => {
  app = await startTestApp();
  const created = await send(
    app,
    {
      method: 'POST',
      url: '/fhir/Patient',
      body: JSON.stringify({ resourceType: 'Patient', gender: 'female' }),
    },
    201,
  );
  patientId = json(created.body).id;
});
afterAll(async () => {
  await app?.stop();
});

type Injected = Awaited<ReturnType<TestApp['fastify']['inject']>>;

/** The refusal's code (and status); the diagnostics too where naming the place is the point of the test. */
function expectOutcome(res: Injected, code: ErrorCode, diagnostics?: RegExp): void {
  const outcome = expectErrorCode(res, code);
  if (diagnostics) expect(outcome.issue[0].diagnostics).toMatch(diagnostics);
}

async function count(type: string): Promise<number> {
  const res = await send(app, { url: `/fhir/${type}?_summary=count` }, 200);
  return json(res.body).total;
}

const PROTOTYPE_NAMES = [
  'constructor',
  '__proto__',
  'toString',
  'hasOwnProperty',
  'valueOf',
  'isPrototypeOf',
  'propertyIsEnumerable',
  'toLocaleString',
  '__defineGetter__',
  '__lookupSetter__',
];

describe('query parameters named like Object.prototype members', () => {
  const getRoutes = (id: string): [string, number][] => [
    ['/fhir/metadata', 200],
    [`/fhir/Patient/${id}`, 200],
    [`/fhir/Patient/${id}/_history/1`, 200],
    ['/fhir/Patient', 200],
    ['/fhir', 200],
    [`/fhir/Patient/${id}/_history`, 200],
    ['/fhir/Patient/_history', 200],
    ['/fhir/_history', 200],
    [`/fhir/Patient/${id}/$everything`, 200],
    [`/fhir/Patient/${id}/$validate`, 200],
  ];

  it.each(PROTOTYPE_NAMES)('GET on every route family with ?%s=1 answers as without it', async (name) => {
    // Searches refuse a parameter they cannot apply (400) as for any unknown name, and leave it out under
    // Prefer: handling=lenient; the other routes take no such parameter.
    const searches = new Set(['/fhir/Patient', '/fhir']);
    for (const [url, status] of getRoutes(patientId)) {
      for (const query of [`${name}=1`, `${name}=1&${name}=2`, `${name}:exact=1`, `_sort=${name}`]) {
        const res = await app.fastify.inject({ url: `${url}?${query}` });
        expect(res.statusCode, `${url}?${query}: ${res.body}`).toBe(searches.has(url) ? 400 : status);
        if (!searches.has(url)) continue;
        expect(res.body).toContain('search-param-unsupported');
        const lenient = await app.fastify.inject({
          url: `${url}?${query}`,
          headers: { prefer: 'handling=lenient' },
        });
        expect(lenient.statusCode, `${url}?${query}: ${lenient.body}`).toBe(status);
      }
    }
  });

  it.each(PROTOTYPE_NAMES)(
    'writes, conditional writes and POST _search with %s answer 4xx or 2xx',
    async (name) => {
      const before = await count('Patient');
      const body = JSON.stringify({ resourceType: 'Patient' });
      await send(app, { method: 'POST', url: `/fhir/Patient?${name}=1`, body: body }, 201);
      const conditionalCreate = await app.fastify.inject({
        method: 'POST',
        url: '/fhir/Patient',
        headers: { ...FHIR_JSON, 'if-none-exist': `${name}=1` },
        payload: body,
      });
      expect(conditionalCreate.statusCode, conditionalCreate.body).toBeLessThan(500);
      for (const method of ['PUT', 'DELETE'] as const) {
        const res = await app.fastify.inject({
          method,
          url: `/fhir/Patient?${name}=1`,
          headers: FHIR_JSON,
          payload: method === 'PUT' ? body : undefined,
        });
        expect(res.statusCode, `${method}: ${res.body}`).toBeLessThan(500);
      }
      const search = await app.fastify.inject({
        method: 'POST',
        url: '/fhir/Patient/_search',
        headers: { 'content-type': 'application/x-www-form-urlencoded', prefer: 'handling=lenient' },
        payload: `${name}=1&gender=female`,
      });
      expect(search.statusCode, search.body).toBe(200);
      expect(json(search.body).entry.length).toBeGreaterThan(0);
      const validate = await app.fastify.inject({
        method: 'POST',
        url: `/fhir/Patient/$validate?${name}=1`,
        headers: FHIR_JSON,
        payload: body,
      });
      expect(validate.statusCode, validate.body).toBe(200);
      // Only the plain create (and perhaps the conditional ones) stored anything; nothing answered 500.
      expect(await count('Patient')).toBeGreaterThan(before);
    },
  );

  it.each(PROTOTYPE_NAMES)('batch and transaction entries with %s in their URLs', async (name) => {
    for (const type of ['batch', 'transaction']) {
      const post = (prefer: Record<string, string>) =>
        app.fastify.inject({
          method: 'POST',
          url: '/fhir',
          headers: { ...FHIR_JSON, ...prefer },
          payload: JSON.stringify({
            resourceType: 'Bundle',
            type,
            entry: [
              { request: { method: 'GET', url: `Patient/${patientId}?${name}=1` } },
              { request: { method: 'GET', url: `Patient?${name}=1` } },
            ],
          }),
        });
      // The search entry refuses the unknown parameter, unless the Bundle says Prefer: handling=lenient.
      const res = await post({ prefer: 'handling=lenient' });
      expect(res.statusCode, res.body).toBe(200);
      for (const entry of json(res.body).entry) expect(entry.response.status).toMatch(/^200/);
      const strict = await post({});
      expect(strict.statusCode, strict.body).toBe(type === 'batch' ? 200 : 400);
      expect(strict.body).toContain('search-param-unsupported');
      if (type === 'batch')
        expect(json(strict.body).entry.map((e: any) => e.response.status.slice(0, 3))).toEqual([
          '200',
          '400',
        ]);
    }
  });
});

const deep = (levels: number) =>
  `{"resourceType":"Patient","extension":[${'{"extension":['.repeat(levels)}${']}'.repeat(levels)}]}`;
const DEPTH_REFUSED = /nested more than 100 levels deep/;

describe('JSON nested too deeply is 400 before anything walks it', () => {
  it(`refuses 10,000 levels on create, update, $validate, batch and transaction (limit ${MAX_JSON_DEPTH})`, async () => {
    const body = deep(10_000);
    const before = await count('Patient');
    for (const [method, url] of [
      ['POST', '/fhir/Patient'],
      ['PUT', `/fhir/Patient/${patientId}`],
      ['POST', '/fhir/Patient/$validate'],
    ] as const) {
      const res = await app.fastify.inject({ method, url, headers: FHIR_JSON, payload: body });
      expectOutcome(res, 'body-not-json', DEPTH_REFUSED);
    }
    for (const type of ['batch', 'transaction']) {
      const res = await app.fastify.inject({
        method: 'POST',
        url: '/fhir',
        headers: FHIR_JSON,
        payload: `{"resourceType":"Bundle","type":"${type}","entry":[{"resource":${body},"request":{"method":"POST","url":"Patient"}}]}`,
      });
      expectOutcome(res, 'body-not-json', DEPTH_REFUSED);
    }
    expect(await count('Patient')).toBe(before);
  });

  it('refuses 10,000 levels in a JSON Patch and a FHIRPath Patch', async () => {
    const nested = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
    const jsonPatch = await app.fastify.inject({
      method: 'PATCH',
      url: `/fhir/Patient/${patientId}`,
      headers: { 'content-type': 'application/json-patch+json' },
      payload: `[{"op":"add","path":"/extension","value":${nested}}]`,
    });
    expectOutcome(jsonPatch, 'body-not-json', DEPTH_REFUSED);
    const fhirPathPatch = await app.fastify.inject({
      method: 'PATCH',
      url: `/fhir/Patient/${patientId}`,
      headers: FHIR_JSON,
      payload: `{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"value","valueString":"x"}]}],"x":${nested}}`,
    });
    expectOutcome(fhirPathPatch, 'body-not-json', DEPTH_REFUSED);
    const read = await app.fastify.inject({ url: `/fhir/Patient/${patientId}` });
    expect(json(read.body).meta.versionId).toBe('1');
  });

  it('accepts resources as deeply nested as the limit allows past the JSON reader', async () => {
    // 40 nested extensions (81 levels with the arrays): not refused for depth (the validator then judges it).
    const res = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Patient/$validate',
      headers: FHIR_JSON,
      payload: deep(40),
    });
    expect(res.body).not.toMatch(DEPTH_REFUSED);
    expect(res.statusCode).toBeLessThan(500);
  });
});

describe('duplicate property names are 400, never last-wins', () => {
  it('refuses resourceType Patient then Observation, and stores nothing', async () => {
    const before = { patients: await count('Patient'), observations: await count('Observation') };
    const text =
      '{"resourceType":"Patient","resourceType":"Observation","status":"final","code":{"text":"x"}}';
    for (const url of ['/fhir/Patient', '/fhir/Observation']) {
      const res = await app.fastify.inject({ method: 'POST', url, headers: FHIR_JSON, payload: text });
      expectOutcome(res, 'body-not-json', /property 'resourceType' appears more than once in one object/);
      expect(json(res.body).issue[0].diagnostics).toMatch(/at character 26/);
    }
    expect(await count('Patient')).toBe(before.patients);
    expect(await count('Observation')).toBe(before.observations);
  });

  it('refuses equal duplicates and nested duplicates, in every body that is JSON', async () => {
    const cases: [string, string, Record<string, string>, string][] = [
      ['POST', '/fhir/Patient', FHIR_JSON, '{"resourceType":"Patient","gender":"male","gender":"male"}'],
      [
        'PUT',
        `/fhir/Patient/${patientId}`,
        FHIR_JSON,
        `{"resourceType":"Patient","id":"${patientId}","name":[{"family":"A","family":"B"}]}`,
      ],
      [
        'PATCH',
        `/fhir/Patient/${patientId}`,
        { 'content-type': 'application/json-patch+json' },
        '[{"op":"replace","op":"add","path":"/gender","value":"male"}]',
      ],
      [
        'POST',
        '/fhir',
        FHIR_JSON,
        '{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","gender":"male","gender":"female"},"request":{"method":"POST","url":"Patient"}}]}',
      ],
      [
        'POST',
        '/fhir/Patient/$validate',
        FHIR_JSON,
        '{"resourceType":"Patient","active":true,"active":false}',
      ],
    ];
    for (const [method, url, headers, payload] of cases) {
      const res = await app.fastify.inject({ method: method as 'POST', url, headers, payload });
      expectOutcome(res, 'body-not-json', /appears more than once in one object/);
    }
    const read = await app.fastify.inject({ url: `/fhir/Patient/${patientId}` });
    expect(json(read.body).meta.versionId).toBe('1');
  });
});

describe('text that is not Unicode is 400, never U+FFFD', () => {
  const bytes = (before: string, raw: number[], after: string) =>
    Buffer.concat([Buffer.from(before), Buffer.from(raw), Buffer.from(after)]);
  const prefix = '{"resourceType":"Patient","name":[{"family":"';

  it.each([
    ['a byte that starts nothing', [0xff]],
    ['a truncated sequence', [0xc3]],
    ['an overlong form', [0xc0, 0xaf]],
    ['an encoded surrogate (CESU-8)', [0xed, 0xa0, 0x80]],
    ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
  ])('refuses %s with the byte offset, and stores nothing', async (_name, raw) => {
    const before = await count('Patient');
    for (const [method, url, type] of [
      ['POST', '/fhir/Patient', 'application/fhir+json'],
      ['POST', '/fhir/Patient/$validate', 'application/fhir+json'],
      ['PATCH', `/fhir/Patient/${patientId}`, 'application/json-patch+json'],
      ['POST', '/fhir/Patient/_search', 'application/x-www-form-urlencoded'],
    ] as const) {
      const res = await app.fastify.inject({
        method,
        url,
        headers: { 'content-type': type },
        payload: bytes(prefix, raw, '"}]}'),
      });
      expectOutcome(res, 'body-not-json', new RegExp(`not valid UTF-8: byte ${Buffer.byteLength(prefix)} `));
    }
    expect(await count('Patient')).toBe(before);
  });

  it.each([
    ['a lone high surrogate', '\\ud800', '\\ud800'],
    ['a lone low surrogate', '\\udc00', '\\udc00'],
    ['a high surrogate followed by a letter', '\\uD83Dx', '\\uD83D'],
    ['two high surrogates', '\\ud83d\\ud83d\\ude00', '\\ud83d'],
  ])('refuses %s in a string', async (_name, escaped, named) => {
    const before = await count('Patient');
    const res = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Patient',
      headers: FHIR_JSON,
      payload: `{"resourceType":"Patient","name":[{"family":"a${escaped}b"}]}`,
    });
    expectOutcome(res, 'body-not-json', /UTF-16 surrogate .* without its pair/);
    expect(json(res.body).issue[0].diagnostics).toContain(named);
    expect(await count('Patient')).toBe(before);
  });

  it('accepts a surrogate pair, escaped or as UTF-8, and keeps the character', async () => {
    for (const payload of [
      '{"resourceType":"Patient","name":[{"family":"Smile \\ud83d\\ude00"}]}',
      Buffer.from('{"resourceType":"Patient","name":[{"family":"Smile \u{1F600}"}]}'),
    ]) {
      const res = await app.fastify.inject({
        method: 'POST',
        url: '/fhir/Patient',
        headers: FHIR_JSON,
        payload,
      });
      expect(res.statusCode, res.body).toBe(201);
      expect(json(res.body).name[0].family).toBe('Smile \u{1F600}');
    }
  });
});

describe('hostile values elsewhere', () => {
  it('NUL bytes, huge numbers and very long names or values in URLs are 4xx, never 500', async () => {
    const queries = [
      '_count=99999999999999999999',
      '_count=-1',
      '_offset=1e9',
      '_since=9999-99-99',
      'birthdate=ge99999999999',
      `name=${'x'.repeat(20_000)}`,
      `${'n'.repeat(20_000)}=1`,
      'name=%00',
      '_id=a%00b',
      'x%00=1',
      'name=%FF',
      'general-practitioner=Patient/%00',
    ];
    for (const query of queries)
      for (const url of ['/fhir/Patient', '/fhir/Patient/_history', '/fhir/_history']) {
        const res = await app.fastify.inject({ url: `${url}?${query}` });
        expect(res.statusCode, `${url}?${query.slice(0, 40)}: ${res.body.slice(0, 200)}`).toBeLessThan(500);
      }
    for (const url of [
      '/fhir/Patient/a%00b',
      `/fhir/Patient/${patientId}/_history/%00`,
      `/fhir/Patient/${patientId}/_history/99999999999999999999`,
      `/fhir/Patient/${'a'.repeat(400)}`,
      '/fhir/Patient/$%00',
    ])
      for (const method of ['GET', 'DELETE'] as const) {
        const res = await app.fastify.inject({ method, url });
        expect(res.statusCode, `${method} ${url.slice(0, 60)}: ${res.body}`).toBeLessThan(500);
      }
  });

  it('odd Prefer, If-Match, If-None-Match and Accept headers are not 500', async () => {
    const headers: Record<string, string>[] = [
      { 'if-match': `W/"${'9'.repeat(400)}"` },
      { 'if-none-match': 'W/"99999999999999999999999"' },
      { prefer: `return=${'x'.repeat(5000)}` },
      { prefer: 'handling=strict;;;;,,,return="' },
      { 'if-modified-since': 'Sat, 01 Jan 300000 00:00:00 GMT' },
      { accept: 'application/fhir+json;q=1e999;__proto__=x;constructor=y' },
    ];
    for (const extra of headers) {
      const res = await app.fastify.inject({
        method: 'PUT',
        url: `/fhir/Patient/${patientId}`,
        headers: { ...FHIR_JSON, ...extra },
        payload: JSON.stringify({ resourceType: 'Patient', id: patientId, gender: 'female' }),
      });
      expect(res.statusCode, `${JSON.stringify(extra).slice(0, 60)}: ${res.body}`).toBeLessThan(500);
    }
  });
});

describe('with authentication on', () => {
  let smart: TestApp;
  beforeAll(async () => {
    smart = await startTestApp({}, { auth: 'smart' });
  });
  afterAll(async () => {
    await smart?.stop();
  });

  it.each(PROTOTYPE_NAMES)(
    'serves /metadata?%s=1 unauthenticated, and refuses the rest with 401',
    async (name) => {
      const metadata = await smart.fastify.inject({ url: `/fhir/metadata?${name}=1` });
      expect(metadata.statusCode, metadata.body).toBe(200);
      expect(json(metadata.body).resourceType).toBe('CapabilityStatement');
      await send(smart, { url: `/fhir/Patient/x?${name}=1` }, 401);
    },
  );

  it.each(PROTOTYPE_NAMES)(
    'answers a token request with a %s form field with an OAuth error',
    async (name) => {
      const res = await send(
        smart,
        {
          method: 'POST',
          url: `/auth/token?${name}=1`,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `${name}=1&grant_type=client_credentials&${name}=2`,
        },
        400,
      );
      expect(res.json().error).toBe('invalid_request');
    },
  );
});

describe('member names like __proto__ in patches', () => {
  it('a FHIRPath Patch value part named __proto__ is judged like any unknown element, not silently dropped', async () => {
    const created = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Patient',
      headers: FHIR_JSON,
      payload: JSON.stringify({ resourceType: 'Patient', gender: 'female' }),
    });
    const id = json(created.body).id;
    const patch = {
      resourceType: 'Parameters',
      parameter: [
        {
          name: 'operation',
          part: [
            { name: 'type', valueCode: 'add' },
            { name: 'path', valueString: 'Patient' },
            { name: 'name', valueString: 'contact' },
            {
              name: 'value',
              part: [
                { name: 'gender', valueCode: 'male' },
                { name: 'name', part: [{ name: 'family', valueString: 'Contact' }] },
                { name: '__proto__', part: [{ name: 'gender', valueCode: 'other' }] },
              ],
            },
          ],
        },
      ],
    };
    const res = await app.fastify.inject({
      method: 'PATCH',
      url: `/fhir/Patient/${id}`,
      headers: FHIR_JSON,
      payload: JSON.stringify(patch),
    });
    expect(res.statusCode, res.body).toBeGreaterThanOrEqual(400);
    expect(res.statusCode).toBeLessThan(500);
    expect(res.body).toContain('__proto__');
    const read = await app.fastify.inject({ url: `/fhir/Patient/${id}` });
    expect(json(read.body).meta.versionId).toBe('1');
  });

  it.each(['constructor', 'toString', 'hasOwnProperty'])(
    'a FHIRPath Patch adding an element named %s is refused as an unknown element',
    async (name) => {
      const patch = {
        resourceType: 'Parameters',
        parameter: [
          {
            name: 'operation',
            part: [
              { name: 'type', valueCode: 'add' },
              { name: 'path', valueString: 'Patient' },
              { name: 'name', valueString: name },
              { name: 'value', valueString: 'x' },
            ],
          },
        ],
      };
      const res = await app.fastify.inject({
        method: 'PATCH',
        url: `/fhir/Patient/${patientId}`,
        headers: FHIR_JSON,
        payload: JSON.stringify(patch),
      });
      expect(res.statusCode, res.body).toBe(422);
      expect(res.body).toContain(`Unrecognized property '${name}'`);
    },
  );

  it('a JSON Patch path through __proto__ is refused and changes nothing', async () => {
    const version = async () =>
      json((await app.fastify.inject({ url: `/fhir/Patient/${patientId}` })).body).meta.versionId;
    const before = await version();
    for (const operation of [
      { op: 'add', path: '/__proto__/polluted', value: 'yes' },
      { op: 'add', path: '/name/__proto__', value: [{ family: 'X' }] },
      { op: 'replace', path: '/constructor/prototype', value: {} },
    ]) {
      const res = await app.fastify.inject({
        method: 'PATCH',
        url: `/fhir/Patient/${patientId}`,
        headers: { 'content-type': 'application/json-patch+json' },
        payload: JSON.stringify([operation]),
      });
      expect(res.statusCode, `${operation.path}: ${res.body}`).toBeGreaterThanOrEqual(400);
      expect(res.statusCode).toBeLessThan(500);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(await version()).toBe(before);
  });
});
