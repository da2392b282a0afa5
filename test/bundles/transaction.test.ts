import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, FHIR_JSON, json, type TestApp } from '../http/helpers.js';
import { syntheaFiles } from '../search/helpers.js';

let app: TestApp;
const files = syntheaFiles(3);
/** Transaction-response bundles of the loaded Synthea files. */
const loadedResponses: any[] = [];

async function get(url: string, headers: Record<string, string> = {}) {
  return app.fastify.inject({ method: 'GET', url: `/fhir/${url}`, headers });
}
async function post(url: string, body: unknown, headers: Record<string, string> = FHIR_JSON) {
  return app.fastify.inject({
    method: 'POST',
    url: `/fhir${url}`,
    headers,
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
}
const matchIds = (bundle: any) =>
  (bundle.entry ?? [])
    .filter((e: any) => e.search?.mode === 'match')
    .map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);

beforeAll(async () => {
  app = await startTestApp();
  for (const file of files) {
    const res = await post('', readFileSync(file, 'utf8'));
    expect(res.statusCode, res.body.slice(0, 2000)).toBe(200);
    loadedResponses.push(json(res.body));
  }
}, 120_000);
afterAll(async () => app.stop());

/** The server's id of the Synthea resource of fullUrl `urn:uuid:x` in bundle `i`. */
function serverRef(i: number, predicate: (resource: any) => boolean): { ref: string; source: any } {
  const source = JSON.parse(readFileSync(files[i], 'utf8'));
  const index = source.entry.findIndex((e: any) => predicate(e.resource));
  const location: string = loadedResponses[i].entry[index].response.location;
  return { ref: location.split('/_history/')[0], source: source.entry[index].resource };
}

describe('transaction bundles', () => {
  it('stores every Synthea entry, answering 201 with location, etag and lastModified, in entry order', () => {
    for (const [i, response] of loadedResponses.entries()) {
      const source = JSON.parse(readFileSync(files[i], 'utf8'));
      expect(response.type).toBe('transaction-response');
      expect(response.entry).toHaveLength(source.entry.length);
      for (const [k, entry] of response.entry.entries()) {
        expect(entry.response.status).toBe('201 Created');
        expect(entry.response.location).toMatch(
          new RegExp(`^${source.entry[k].resource.resourceType}/[^/]+/_history/1$`),
        );
        expect(entry.response.etag).toBe('W/"1"');
        expect(entry.response.lastModified).toMatch(/^\d{4}-\d{2}-\d{2}T/);
      }
    }
  });

  it('gives each entry the exact lastModified of its version, milliseconds included, even with return=minimal', async () => {
    for (const prefer of ['return=minimal', 'return=representation']) {
      const res = await post(
        '',
        {
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [
            {
              request: { method: 'POST', url: 'Patient' },
              resource: { resourceType: 'Patient', active: true },
            },
            {
              request: { method: 'PUT', url: 'Patient/lm-1' },
              resource: { resourceType: 'Patient', id: 'lm-1' },
            },
          ],
        },
        { ...FHIR_JSON, prefer },
      );
      expect(res.statusCode).toBe(200);
      for (const entry of json(res.body).entry) {
        const stored = json((await get(entry.response.location.split('/_history/')[0])).body);
        expect(entry.response.lastModified, prefer).toBe(stored.meta.lastUpdated);
      }
    }
  });

  it('rewrote urn:uuid references to the assigned ids, so searches by patient and code work', async () => {
    const { ref: patient } = serverRef(0, (r) => r.resourceType === 'Patient');
    const source = JSON.parse(readFileSync(files[0], 'utf8'));
    const patientUrn = source.entry.find((e: any) => e.resource.resourceType === 'Patient').fullUrl;
    const obs = source.entry.filter(
      (e: any) => e.resource.resourceType === 'Observation' && e.resource.subject.reference === patientUrn,
    );
    const code = obs[0].resource.code.coding[0];
    const expected = obs.filter((e: any) =>
      e.resource.code.coding.some((c: any) => c.system === code.system && c.code === code.code),
    ).length;
    const res = await get(
      `Observation?subject=${patient}&code=${encodeURIComponent(`${code.system}|${code.code}`)}&_count=500`,
    );
    expect(res.statusCode).toBe(200);
    const bundle = json(res.body);
    expect(bundle.type).toBe('searchset');
    expect(bundle.total).toBe(expected);
    for (const e of bundle.entry) {
      expect(e.resource.subject.reference).toBe(patient);
      expect(e.fullUrl).toMatch(/^http.*\/fhir\/Observation\//);
    }
    const raw = (await get(`${bundle.entry[0].resource.resourceType}/${bundle.entry[0].resource.id}`)).body;
    expect(raw).not.toContain('urn:uuid:');
  });

  it('searches encounters of a patient with their observations (_revinclude)', async () => {
    const { ref: patient } = serverRef(1, (r) => r.resourceType === 'Patient');
    const res = await get(`Encounter?patient=${patient}&_revinclude=Observation:encounter&_count=1000`);
    const bundle = json(res.body);
    const encounters = matchIds(bundle);
    expect(encounters.length).toBeGreaterThan(0);
    const included = bundle.entry.filter((e: any) => e.search.mode === 'include');
    expect(included.length).toBeGreaterThan(0);
    for (const e of included) {
      expect(e.resource.resourceType).toBe('Observation');
      expect(encounters).toContain(e.resource.encounter.reference);
    }
  });

  it("rolls everything back when one entry fails, answering with that entry's outcome", async () => {
    const before = json((await get('Patient?_summary=count')).body).total;
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:11111111-1111-4111-8111-111111111111',
          resource: { resourceType: 'Patient', name: [{ family: 'Rollback' }] },
          request: { method: 'POST', url: 'Patient' },
        },
        {
          resource: { resourceType: 'Observation', status: 'not-a-status', code: { text: 'x' } },
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    };
    const res = await post('', bundle);
    expect(res.statusCode).toBeGreaterThanOrEqual(400);
    expect(res.statusCode).toBeLessThan(500);
    const outcome = json(res.body);
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(outcome)).toContain('Bundle.entry[1]');
    expect(json((await get('Patient?_summary=count')).body).total).toBe(before);
    expect(json((await get('Patient?family=Rollback')).body).entry ?? []).toEqual([]);
  });

  it('conditional create (ifNoneExist) reuses the match and rewrites references to it; references in extensions too', async () => {
    const patientEntry = (urn: string) => ({
      fullUrl: urn,
      resource: {
        resourceType: 'Patient',
        identifier: [{ system: 'urn:test:mrn', value: 'cond-1' }],
        name: [{ family: 'Conditional' }],
      },
      request: { method: 'POST', url: 'Patient', ifNoneExist: 'identifier=urn:test:mrn|cond-1' },
    });
    const observation = (urn: string) => ({
      resource: {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'note' },
        subject: { reference: urn },
        extension: [{ url: 'http://example.org/ext', valueReference: { reference: urn } }],
      },
      request: { method: 'POST', url: 'Observation' },
    });
    const first = json(
      (
        await post('', {
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [
            patientEntry('urn:uuid:aaaaaaaa-0000-4000-8000-000000000001'),
            observation('urn:uuid:aaaaaaaa-0000-4000-8000-000000000001'),
          ],
        })
      ).body,
    );
    expect(first.entry[0].response.status).toBe('201 Created');
    const patientRef = first.entry[0].response.location.split('/_history/')[0];
    const second = json(
      (
        await post('', {
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [
            patientEntry('urn:uuid:bbbbbbbb-0000-4000-8000-000000000002'),
            observation('urn:uuid:bbbbbbbb-0000-4000-8000-000000000002'),
          ],
        })
      ).body,
    );
    expect(second.entry[0].response.status).toBe('200 OK');
    expect(second.entry[0].response.location.split('/_history/')[0]).toBe(patientRef);
    const obs = json((await get(second.entry[1].response.location.split('/_history/')[0])).body);
    expect(obs.subject.reference).toBe(patientRef);
    expect(obs.extension[0].valueReference.reference).toBe(patientRef);
    expect(json((await get('Patient?identifier=urn:test:mrn|cond-1')).body).total).toBe(1);
  });

  it('processes DELETE before POST before PUT before GET, and conditional update/delete by search URL', async () => {
    const created = json(
      (
        await post('/Patient', {
          resourceType: 'Patient',
          identifier: [{ system: 'urn:test:mrn', value: 'order-1' }],
        })
      ).body,
    );
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'GET', url: 'Patient?identifier=urn:test:mrn|order-2' } },
        {
          resource: {
            resourceType: 'Patient',
            identifier: [{ system: 'urn:test:mrn', value: 'order-2' }],
            gender: 'female',
          },
          request: { method: 'PUT', url: 'Patient?identifier=urn:test:mrn|order-2' },
        },
        { request: { method: 'DELETE', url: 'Patient?identifier=urn:test:mrn|order-1' } },
      ],
    };
    const res = await post('', bundle);
    expect(res.statusCode, res.body).toBe(200);
    const out = json(res.body);
    expect(out.entry[2].response.status).toMatch(/^(200|204)/);
    expect(out.entry[1].response.status).toBe('201 Created');
    // the GET ran last: it sees the PUT's result
    expect(out.entry[0].resource.total).toBe(1);
    expect((await get(`Patient/${created.id}`)).statusCode).toBe(410);
    // conditional update of the now existing one
    const update = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: {
            resourceType: 'Patient',
            identifier: [{ system: 'urn:test:mrn', value: 'order-2' }],
            gender: 'male',
          },
          request: { method: 'PUT', url: 'Patient?identifier=urn:test:mrn|order-2' },
        },
      ],
    };
    const updated = json((await post('', update)).body);
    expect(updated.entry[0].response.status).toBe('200 OK');
    expect(updated.entry[0].response.etag).toBe('W/"2"');
  });

  it('applies PATCH entries (JSON Patch in a Binary, FHIRPath Patch in Parameters)', async () => {
    const created = json(
      (await post('/Patient', { resourceType: 'Patient', gender: 'male', active: true })).body,
    );
    const jsonPatch = Buffer.from(
      JSON.stringify([{ op: 'replace', path: '/gender', value: 'female' }]),
    ).toString('base64');
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: jsonPatch },
          request: { method: 'PATCH', url: `Patient/${created.id}` },
        },
      ],
    };
    const res = await post('', bundle);
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res.body).entry[0].response.status).toBe('200 OK');
    expect(json((await get(`Patient/${created.id}`)).body).gender).toBe('female');
    const fhirPathPatch = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        {
          resource: {
            resourceType: 'Parameters',
            parameter: [
              {
                name: 'operation',
                part: [
                  { name: 'type', valueCode: 'replace' },
                  { name: 'path', valueString: 'Patient.active' },
                  { name: 'value', valueBoolean: false },
                ],
              },
            ],
          },
          request: { method: 'PATCH', url: `Patient/${created.id}` },
        },
      ],
    };
    const res2 = json((await post('', fhirPathPatch)).body);
    expect(res2.entry[0].response.status, JSON.stringify(res2)).toBe('200 OK');
    expect(json((await get(`Patient/${created.id}`)).body).active).toBe(false);
  });

  it('refuses malformed transactions with 400', async () => {
    for (const body of [
      { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: { resourceType: 'Patient' } }] },
      {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ request: { method: 'FOO', url: 'Patient' } }],
      },
      {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ request: { method: 'POST', url: 'Patient' } }],
      },
      { resourceType: 'Bundle', type: 'transaction', entry: 'nope' },
      {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { resource: { resourceType: 'Patient', id: 'a' }, request: { method: 'PUT', url: 'Patient/a' } },
          { resource: { resourceType: 'Patient', id: 'a' }, request: { method: 'PUT', url: 'Patient/a' } },
        ],
      },
    ]) {
      const res = await post('', body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(json(res.body).resourceType).toBe('OperationOutcome');
    }
  });
});

describe('conditional references (http.html#trules)', () => {
  const SYSTEM = 'urn:test:conditional-reference';
  const patientWith = (value: string) => ({
    resourceType: 'Patient',
    identifier: [{ system: SYSTEM, value }],
  });
  const observation = (code: string, reference: string) => ({
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'urn:test:code', code }] },
    subject: { reference },
  });
  const postEntry = (resource: unknown) => ({ resource, request: { method: 'POST', url: 'Observation' } });
  const stored = async (code: string) =>
    json((await get(`Observation?code=urn:test:code|${code}`)).body).entry?.map((e: any) => e.resource) ?? [];
  let single: string;

  beforeAll(async () => {
    const created = await post('/Patient', patientWith('one'));
    expect(created.statusCode).toBe(201);
    single = json(created.body).id;
    for (let i = 0; i < 2; i++) expect((await post('/Patient', patientWith('two'))).statusCode).toBe(201);
  });

  it('in a transaction, replaces a reference with exactly one match by Type/id', async () => {
    const res = await post('', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [postEntry(observation('cr-one', `Patient?identifier=${SYSTEM}|one`))],
    });
    expect(res.statusCode, res.body).toBe(200);
    const [obs] = await stored('cr-one');
    expect(obs.subject.reference).toBe(`Patient/${single}`);
  });

  it('fails the whole transaction, naming the entry, when a reference matches several (412) or none (400)', async () => {
    for (const [value, status, code] of [
      ['two', 412, 'conditional-multiple-matches'],
      ['none', 400, 'conditional-reference-no-match'],
    ] as const) {
      const res = await post('', {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          postEntry(observation(`cr-tx-${value}`, `Patient/${single}`)),
          postEntry(observation(`cr-tx-${value}`, `Patient?identifier=${SYSTEM}|${value}`)),
        ],
      });
      expect(res.statusCode, res.body).toBe(status);
      const outcome = json(res.body);
      expect(outcome.issue[0].details.coding[0].code).toBe(code);
      expect(outcome.issue[0].expression[0]).toBe('Bundle.entry[1].resource.subject.reference');
      expect(await stored(`cr-tx-${value}`)).toEqual([]);
    }
  });

  it('in a batch, resolves the entry that matches once and fails only the entries that do not', async () => {
    const res = await post('', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        postEntry(observation('cr-batch', `Patient?identifier=${SYSTEM}|one`)),
        postEntry(observation('cr-batch', `Patient?identifier=${SYSTEM}|two`)),
        postEntry(observation('cr-batch', `Patient?identifier=${SYSTEM}|none`)),
      ],
    });
    expect(res.statusCode, res.body).toBe(200);
    const statuses = json(res.body).entry.map((e: any) => e.response.status);
    expect(statuses).toEqual(['201 Created', '412 Precondition Failed', '400 Bad Request']);
    const kept = await stored('cr-batch');
    expect(kept.map((o: any) => o.subject.reference)).toEqual([`Patient/${single}`]);
  });
});

describe('batch bundles', () => {
  it('runs entries independently, each with its own status', async () => {
    const { ref: patient } = serverRef(0, (r) => r.resourceType === 'Patient');
    const bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: patient } },
        { request: { method: 'GET', url: 'Patient/does-not-exist' } },
        {
          resource: { resourceType: 'Patient', gender: 'not-a-gender' },
          request: { method: 'POST', url: 'Patient' },
        },
        {
          resource: { resourceType: 'Patient', name: [{ family: 'Batchy' }] },
          request: { method: 'POST', url: 'Patient' },
        },
        { request: { method: 'GET', url: 'Patient?family=Batchy' } },
      ],
    };
    const res = await post('', bundle);
    expect(res.statusCode).toBe(200);
    const out = json(res.body);
    expect(out.type).toBe('batch-response');
    expect(out.entry[0].response.status).toBe('200 OK');
    expect(`Patient/${out.entry[0].resource.id}`).toBe(patient);
    expect(out.entry[1].response.status).toBe('404 Not Found');
    expect(out.entry[1].response.outcome.resourceType).toBe('OperationOutcome');
    expect(out.entry[2].response.status).toMatch(/^(400|422)/);
    expect(out.entry[3].response.status).toBe('201 Created');
    expect(out.entry[4].resource.total).toBe(1);
  });
});

describe('search over HTTP', () => {
  it('answers GET and POST _search alike, and system search with _type', async () => {
    const a = json((await get('Patient?gender=male&_sort=birthdate')).body);
    const b = json(
      (
        await app.fastify.inject({
          method: 'POST',
          url: '/fhir/Patient/_search',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          payload: 'gender=male&_sort=birthdate',
        })
      ).body,
    );
    expect(matchIds(b)).toEqual(matchIds(a));
    const sys = json((await get('?_type=Patient&gender=male')).body);
    expect(matchIds(sys).sort()).toEqual(matchIds(a).sort());
  });

  it('refuses unknown parameters (by default and under Prefer: handling=strict), warns under handling=lenient', async () => {
    const refused = await get('Patient?foo=bar');
    expect(refused.statusCode).toBe(400);
    expect(refused.body).toContain('search-param-unsupported');
    expect(refused.body).toContain('foo');
    const strict = await get('Patient?foo=bar', { prefer: 'handling=strict' });
    expect(strict.statusCode).toBe(400);
    const lenient = json((await get('Patient?foo=bar', { prefer: 'handling=lenient' })).body);
    expect(lenient.entry.some((e: any) => e.search.mode === 'outcome')).toBe(true);
  });

  it('routes compartment searches: Patient/[id]/[type] and Patient/[id]/*', async () => {
    const { ref } = serverRef(0, (r) => r.resourceType === 'Patient');
    const byType = json((await get(`Observation?subject=${ref}&_count=1000`)).body);
    const compartment = await get(`${ref}/Observation?_count=1000`);
    expect(compartment.statusCode, compartment.body).toBe(200);
    expect(matchIds(json(compartment.body)).sort()).toEqual(matchIds(byType).sort());
    const all = json((await get(`${ref}/*?_type=Patient`)).body);
    expect(matchIds(all)).toEqual([ref]);
    expect((await get(`${ref}/Organization`)).statusCode).toBe(400);
    expect((await get('Practitioner/x/Observation')).statusCode).toBe(404);
  });

  it('$everything refuses start/end (care dates it cannot apply) unless Prefer: handling=lenient', async () => {
    const { ref } = serverRef(0, (r) => r.resourceType === 'Patient');
    const refused = await get(`${ref}/$everything?start=2020-01-01`);
    expect(refused.statusCode, refused.body).toBe(400);
    expect(refused.body).toContain('parameter-invalid');
    const lenient = await get(`${ref}/$everything?start=2020-01-01&_count=1`, { prefer: 'handling=lenient' });
    expect(lenient.statusCode, lenient.body).toBe(200);
    expect(json(lenient.body).entry.some((e: any) => e.search?.mode === 'outcome')).toBe(true);
  });

  it('applies _elements to matches', async () => {
    const res = json((await get('Patient?_elements=gender&_count=2')).body);
    for (const e of res.entry.filter((x: any) => x.search.mode === 'match')) {
      expect(Object.keys(e.resource).sort()).toEqual(
        expect.arrayContaining(['gender', 'id', 'resourceType']),
      );
      expect(e.resource.name).toBeUndefined();
    }
  });

  it('answers hostile queries with a 400 OperationOutcome (never a 500), and stores nothing odd', async () => {
    const hostile = [
      `Patient?name=${'x'.repeat(5000)}`,
      `Patient?${Array.from({ length: 300 }, (_, i) => `p${i}=1`).join('&')}`,
      'Observation?subject:Patient.organization.partof.partof.partof.name=x',
      `Observation?code=${Array.from({ length: 500 }, () => 'a').join(',')}`,
      'Patient?birthdate=2020%27%3B%20DROP%20TABLE%20resource_version%3B--',
      'Patient?_count=abc',
      'Patient?_sort=-',
      'Observation?value-quantity=gt%27OR%271',
      'Patient?_has:Observation:patient:_has:Observation:patient:_has:Observation:patient:_has:Observation:patient:code=x',
      'Patient?_include=Patient:*:*:*',
    ];
    for (const url of hostile) {
      const res = await get(url);
      expect(res.statusCode, url.slice(0, 80)).toBeLessThan(500);
      if (res.statusCode !== 200) {
        expect(res.statusCode, url.slice(0, 80)).toBe(400);
        expect(json(res.body).resourceType).toBe('OperationOutcome');
      }
    }
    const sqlish = await get("Patient?name=x'%3B%20DROP%20TABLE%20resource_version%3B%20--");
    expect(sqlish.statusCode).toBe(200);
    expect(json(sqlish.body).entry ?? []).toEqual([]);
    expect(json((await get('Patient?_summary=count')).body).total).toBeGreaterThan(0);
  });

  it('serves conditional create (If-None-Exist) through search', async () => {
    const body = { resourceType: 'Patient', identifier: [{ system: 'urn:test:mrn', value: 'ine-1' }] };
    const headers = { ...FHIR_JSON, 'if-none-exist': 'identifier=urn:test:mrn|ine-1' };
    const first = await post('/Patient', body, headers);
    expect(first.statusCode).toBe(201);
    const second = await post('/Patient', body, headers);
    expect(second.statusCode).toBe(200);
    expect(json(second.body).id).toBe(json(first.body).id);
  });

  it('lists search parameters, batch and transaction in /metadata', async () => {
    const cs = json((await get('metadata')).body);
    const rest = cs.rest[0];
    const patient = rest.resource.find((r: any) => r.type === 'Patient');
    expect(patient.searchParam.map((p: any) => p.name)).toEqual(
      expect.arrayContaining(['name', 'birthdate', 'identifier', '_id']),
    );
    expect(patient.interaction.map((i: any) => i.code)).toContain('search-type');
    expect(rest.interaction.map((i: any) => i.code)).toEqual(
      expect.arrayContaining(['batch', 'transaction', 'search-system']),
    );
  });
});
