/**
 * Custom SearchParameter resources (docs/search.md, "Custom search parameters"), over HTTP, on SQLite and (with
 * HIE_TEST_POSTGRES_URL) PostgreSQL: what is refused, indexing of new writes at once, no search before `$reindex`
 * completed, the job (202 + Content-Location, status), the CapabilityStatement, retirement and deletion, a restart;
 * then, with SMART auth, admin only and consent honoured.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bootApp, send, type BootedApp } from '../support/app-harness.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { startHarness, grantedObservation, type Harness } from '../access/app-harness.js';
import { setCustomSearchParameters } from '../../src/fhir/search/definitions.js';
import {
  EYE_COLOUR_EXTENSION as EYE,
  eyeColourParameter as eyeParameter,
} from '../support/eye-colour-parameter.js';

function patient(id: string, colour: string): Record<string, unknown> {
  return { resourceType: 'Patient', id, extension: [{ url: EYE, valueCode: colour }] };
}

type Target = { name: string; flags: () => Record<string, unknown>; skip?: string };

const schemas: string[] = [];
const pgSkip = postgresSkipReason('custom search parameters on PostgreSQL');
const targets: Target[] = [
  { name: 'SQLite', flags: () => ({}) },
  {
    name: 'PostgreSQL',
    skip: pgSkip,
    flags: () => {
      const schema = `hie_test_${randomBytes(6).toString('hex')}`;
      schemas.push(schema);
      const url = POSTGRES_URL!;
      return { store: 'postgres', databaseUrl: `${url}${url.includes('?') ? '&' : '?'}schema=${schema}` };
    },
  },
];

afterAll(async () => {
  if (!POSTGRES_URL || schemas.length === 0) return;
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
  for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
});

for (const target of targets) {
  describe.skipIf(target.skip !== undefined)(`custom search parameters (${target.name})`, () => {
    let booted: BootedApp;
    const req = (method: string, url: string, body?: unknown, headers?: Record<string, string>) =>
      send(booted.app, { method: method as 'GET', url: `/fhir${url}`, body, headers });
    const ids = (res: { body: string }) =>
      ((JSON.parse(res.body).entry ?? []) as { search?: { mode: string }; resource: { id: string } }[])
        .filter((e) => e.search?.mode !== 'outcome')
        .map((e) => e.resource.id)
        .sort();

    beforeEach(async () => {
      booted = await bootApp({
        auth: 'dev-open',
        logLevel: 'warn',
        validation: 'schema',
        anchoring: 'off',
        searchParamRefresh: 0,
        reindexPause: 0,
        ...target.flags(),
      });
    });
    afterEach(async () => {
      await booted.stop();
      setCustomSearchParameters([]);
    });

    it('refuses what it cannot index: resolve(), memberOf(), a base code, a composite, an unknown base (400 naming it)', async () => {
      const refusals: [Record<string, unknown>, RegExp][] = [
        [{ expression: 'Patient.generalPractitioner.resolve().name' }, /resolve\(\)/],
        [{ expression: "Patient.maritalStatus.memberOf('http://x/vs')" }, /memberOf\(\)/],
        [{ expression: "Patient.conformsTo('http://x/sd')" }, /conformsTo\(\)/],
        [{ expression: "Patient.name.trace('x')" }, /trace\(\)/],
        [{ expression: '%terminologies.expand(x)' }, /%terminologies|expand/],
        [{ expression: 'Patient.name.(' }, /not valid FHIRPath/],
        [{ code: 'family' }, /already a search parameter of Patient/],
        [{ type: 'composite' }, /composite/],
        [{ base: ['Resource'] }, /Resource/],
        [{ code: '_secret' }, /code/],
      ];
      for (const [change, message] of refusals) {
        const res = await req('PUT', '/SearchParameter/eye-colour', eyeParameter(change));
        expect(res.statusCode, JSON.stringify(change)).toBe(400);
        expect(res.body).toMatch(message);
        expect(res.body).toContain('search-parameter-invalid');
      }
      // A draft defines nothing here: stored as it is.
      const draft = await req(
        'PUT',
        '/SearchParameter/eye-colour',
        eyeParameter({ status: 'draft', expression: 'Patient.link.other.resolve()' }),
      );
      expect(draft.statusCode).toBe(201);
    });

    it('indexes new writes at once, refuses the search until $reindex completed, then answers over all data', async () => {
      const app = booted.app;
      await req('PUT', '/Patient/old-blue', patient('old-blue', 'blue'), undefined);
      await req('PUT', '/Patient/old-brown', patient('old-brown', 'brown'));
      expect((await req('PUT', '/SearchParameter/eye-colour', eyeParameter())).statusCode).toBe(201);
      await req('PUT', '/Patient/new-blue', patient('new-blue', 'blue'));
      const store = app.store;
      expect(await store.indexEntries!('Patient', 'new-blue')).toContainEqual({
        param: 'eye-colour',
        type: 'token',
        value: 'blue',
      });
      expect((await store.indexEntries!('Patient', 'old-blue')).some((e) => e.param === 'eye-colour')).toBe(
        false,
      );

      // Not searchable yet: a refusal that says why, never a partial answer; not in the CapabilityStatement.
      const early = await req('GET', '/Patient?eye-colour=blue');
      expect(early.statusCode).toBe(400);
      expect(early.body).toMatch(/not searchable yet.*\$reindex/);
      const lenient = await req('GET', '/Patient?eye-colour=blue', undefined, {
        prefer: 'handling=lenient',
      });
      expect(lenient.statusCode).toBe(200);
      expect(ids(lenient)).toEqual(['new-blue', 'old-blue', 'old-brown']); // the condition left out, and said so
      expect(lenient.body).toMatch(/not searchable yet/);
      const before = JSON.parse((await req('GET', '/metadata')).body);
      const patientEntry = (statement: any) =>
        statement.rest[0].resource.find((r: { type: string }) => r.type === 'Patient');
      expect(patientEntry(before).searchParam.some((p: { name: string }) => p.name === 'eye-colour')).toBe(
        false,
      );

      // $reindex: the Bulk Data async pattern.
      expect((await req('POST', '/$reindex')).statusCode).toBe(400); // respond-async needed
      const kickOff = await req('POST', '/$reindex', undefined, { prefer: 'respond-async' });
      expect(kickOff.statusCode, kickOff.body).toBe(202);
      const location = String(kickOff.headers['content-location']);
      expect(location).toMatch(/\/bulk\/reindex\/[0-9a-f-]+$/);
      await app.bulk!.reindexing.settled();
      const status = await send(app, { method: 'GET', url: new URL(location).pathname });
      expect(status.statusCode, status.body).toBe(200);
      expect(JSON.parse(status.body)).toMatchObject({ types: ['Patient'], searchable: ['eye-colour'] });

      expect(ids(await req('GET', '/Patient?eye-colour=blue'))).toEqual(['new-blue', 'old-blue']);
      expect(ids(await req('GET', '/Patient?eye-colour=brown'))).toEqual(['old-brown']);
      expect(ids(await req('GET', '/Patient?eye-colour:not=blue'))).toEqual(['old-brown']);
      const after = JSON.parse((await req('GET', '/metadata')).body);
      const declared = patientEntry(after).searchParam.find((p: { name: string }) => p.name === 'eye-colour');
      expect(declared).toMatchObject({
        type: 'token',
        definition: 'http://example.org/fhir/SearchParameter/eye-colour',
      });
      expect(declared.documentation).toContain('The colour of the eyes.');

      // Known after a restart (from the store, with its $reindex mark).
      booted.app = await booted.restart();
      expect(ids(await req('GET', '/Patient?eye-colour=blue'))).toEqual(['new-blue', 'old-blue']);

      // A changed definition needs $reindex again; a retired one is not searchable at all.
      await req('PUT', '/SearchParameter/eye-colour', eyeParameter({ description: 'Eyes.' }));
      expect((await req('GET', '/Patient?eye-colour=blue')).statusCode).toBe(400);
      await req('POST', '/$reindex', undefined, { prefer: 'respond-async' });
      await booted.app.bulk!.reindexing.settled();
      expect(ids(await req('GET', '/Patient?eye-colour=blue'))).toEqual(['new-blue', 'old-blue']);
      await req('PUT', '/SearchParameter/eye-colour', eyeParameter({ status: 'retired' }));
      const retired = await req('GET', '/Patient?eye-colour=blue');
      expect(retired.statusCode).toBe(400);
      expect(retired.body).toMatch(/Unknown search parameter 'eye-colour'/);
      const metadata = JSON.parse((await req('GET', '/metadata')).body);
      expect(patientEntry(metadata).searchParam.some((p: { name: string }) => p.name === 'eye-colour')).toBe(
        false,
      );
      // Active again: pending until reindexed; deleted: unknown.
      await req('PUT', '/SearchParameter/eye-colour', eyeParameter());
      expect((await req('GET', '/Patient?eye-colour=blue')).body).toMatch(/not searchable yet/);
      await req('DELETE', '/SearchParameter/eye-colour');
      expect((await req('GET', '/Patient?eye-colour=blue')).body).toMatch(/Unknown search parameter/);
    });

    it('$reindex of one resource rebuilds its rows at once; a second parameter may not take a code in use', async () => {
      await req('PUT', '/Patient/old-blue', patient('old-blue', 'blue'));
      await req('PUT', '/SearchParameter/eye-colour', eyeParameter());
      const clash = await req(
        'PUT',
        '/SearchParameter/other',
        eyeParameter({ id: 'other', url: 'http://example.org/other' }),
      );
      expect(clash.statusCode).toBe(400);
      expect(clash.body).toMatch(/SearchParameter\/eye-colour already defines 'eye-colour'/);
      const one = await req('POST', '/Patient/old-blue/$reindex');
      expect(one.statusCode, one.body).toBe(200);
      expect(await booted.app.store.indexEntries!('Patient', 'old-blue')).toContainEqual({
        param: 'eye-colour',
        type: 'token',
        value: 'blue',
      });
      expect((await req('POST', '/Patient/never/$reindex')).statusCode).toBe(404);
    });
  });
}

describe('custom search parameters with SMART auth: admins only, consent honoured', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await startHarness({ flags: { searchParamRefresh: 0, reindexPause: 0, anchoring: 'off' } });
  });
  afterEach(async () => {
    await h.stop();
    setCustomSearchParameters([]);
  });

  it('refuses SearchParameter writes and $reindex to non-admins; a search on a custom parameter sees only what consent opens', async () => {
    const sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    const admin = await h.enrol('admin-1', 'admin');
    await h.enrol('dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    // Observation/o1 granted to dr-b; Observation/o2 (same code text) not.
    await grantedObservation(h, sys, 1);
    await h.request(sys, 'PUT', '/Patient/p2', { resourceType: 'Patient', id: 'p2' });
    await h.request(sys, 'PUT', '/Observation/o2', {
      resourceType: 'Observation',
      id: 'o2',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/p2' },
    });
    const parameter = {
      resourceType: 'SearchParameter',
      id: 'code-text',
      url: 'http://example.org/fhir/SearchParameter/code-text',
      name: 'CodeText',
      status: 'active',
      description: 'The code text.',
      code: 'code-text',
      base: ['Observation'],
      type: 'string',
      expression: 'Observation.code.text',
    };
    expect((await h.request(sys, 'PUT', '/SearchParameter/code-text', parameter)).status).toBe(403);
    const created = await h.request(admin, 'PUT', '/SearchParameter/code-text', parameter);
    expect(created.status, created.text).toBe(201);
    const doctor = await h.token('dr-b');
    expect(
      (await h.request(doctor, 'POST', '/$reindex', undefined, { prefer: 'respond-async' })).status,
    ).toBe(403);
    const kickOff = await h.request(admin, 'POST', '/$reindex', undefined, { prefer: 'respond-async' });
    expect(kickOff.status, kickOff.text).toBe(202);
    await h.app.bulk!.reindexing.settled();

    const found = await h.request(doctor, 'GET', '/Observation?code-text=x');
    expect(found.status, found.text).toBe(200);
    expect(found.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual(['o1']);
    // The system of the custodian sees both, as with any base parameter.
    const all = await h.request(sys, 'GET', '/Observation?code-text=x');
    expect(all.body.entry.map((e: { resource: { id: string } }) => e.resource.id).sort()).toEqual([
      'o1',
      'o2',
    ]);
    // The same answer as a base parameter gives the doctor.
    const base = await h.request(doctor, 'GET', '/Observation?code:text=x');
    expect(base.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual(['o1']);
  });
});
