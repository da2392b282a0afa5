/**
 * Bulk Data $export (docs/bulk.md) in development mode: the async pattern (kick-off, status, manifest, files,
 * cancel), the content exported exactly as stored, and the parameters refused with 400.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FHIR_JSON, json, send, startTestApp, type TestApp } from '../http/helpers.js';
import { canonicalizeText } from '../../src/fhir/canonical.js';
import { leafHashOf, type LeafVersion } from '../../src/integrity/hashing.js';
import { verifyProof, type ProofStep } from '../../src/integrity/merkle.js';

let app: TestApp;
const ASYNC = { prefer: 'respond-async', accept: 'application/fhir+json' };

async function kickOff(url: string, init: { method?: 'GET' | 'POST'; body?: unknown } = {}): Promise<string> {
  const res = await send(app, { method: init.method ?? 'GET', url, headers: ASYNC, body: init.body }, 202);
  const location = res.headers['content-location'] as string;
  expect(location).toMatch(/\/fhir\/bulk\/export\/[0-9a-f-]{36}$/);
  return new URL(location).pathname;
}

async function manifestOf(statusPath: string): Promise<any> {
  await app.bulk!.exports.settled();
  const res = await send(app, { url: statusPath }, 200);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  return json(res.body);
}

async function fileLines(url: string): Promise<string[]> {
  const res = await send(app, { url: new URL(url).pathname }, 200);
  expect(res.headers['content-type']).toBe('application/fhir+ndjson');
  return res.body.split('\n').filter((l) => l !== '');
}

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

describe('$export: the async pattern', () => {
  it('exports every resource written, each line the stored text (numbers as written)', async () => {
    const patient = json(
      (
        await send(
          app,
          {
            method: 'POST',
            url: '/fhir/Patient',
            headers: FHIR_JSON,
            body: { resourceType: 'Patient', birthDate: '1974-12' },
          },
          201,
        )
      ).body,
    );
    const observation = `{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/${patient.id}"},"valueQuantity":{"value":72.50,"unit":"kg"}}`;
    await send(app, { method: 'POST', url: '/fhir/Observation', headers: FHIR_JSON, body: observation }, 201);
    const status = await kickOff('/fhir/$export?_type=Patient,Observation');
    const manifest = await manifestOf(status);
    expect(manifest.requiresAccessToken).toBe(true);
    expect(manifest.request).toContain('$export?_type=');
    expect(Date.parse(manifest.transactionTime)).not.toBeNaN();
    expect(manifest.error).toEqual([]);
    const byType = Object.fromEntries(manifest.output.map((o: any) => [o.type, o]));
    expect(Object.keys(byType).sort()).toEqual(['Observation', 'Patient']);
    const observations = await fileLines(byType.Observation.url);
    expect(observations).toHaveLength(byType.Observation.count);
    expect(observations[0]).toContain('"value":72.50');
    for (const line of [...observations, ...(await fileLines(byType.Patient.url))]) {
      const { resourceType, id } = JSON.parse(line);
      const read = await send(app, { url: `/fhir/${resourceType}/${id}` }, 200);
      expect(line).toBe(read.body);
    }
  });

  it('includeAssociatedData=_integrity: a Provenance per resource whose salt and proof verify its exported text', async () => {
    await send(
      app,
      {
        method: 'POST',
        url: '/fhir/Observation',
        headers: FHIR_JSON,
        body: '{"resourceType":"Observation","status":"final","code":{"text":"bp"},"valueQuantity":{"value":1.50}}',
      },
      201,
    );
    await app.integrity!.anchorer.drain();
    const manifest = await manifestOf(
      await kickOff('/fhir/$export?_type=Observation&includeAssociatedData=_integrity'),
    );
    const observations = await fileLines(manifest.output.find((o: any) => o.type === 'Observation').url);
    const provenance = manifest.output.find((o: any) => o.url.endsWith('Provenance.integrity.ndjson'));
    expect(provenance.type).toBe('Provenance');
    const provenances = (await fileLines(provenance.url)).map((l) => JSON.parse(l));
    expect(provenances).toHaveLength(observations.length);
    for (const [i, line] of observations.entries()) {
      const resource = JSON.parse(line);
      const p = provenances[i];
      expect(p.target[0].reference).toMatch(
        new RegExp(`/Observation/${resource.id}/_history/${resource.meta.versionId}$`),
      );
      const parts = Object.fromEntries(
        p.extension[0].extension
          .filter((e: any) => e.url !== 'proof')
          .map((e: any) => [e.url, Object.values(e)[1]]),
      );
      expect(parts.status).toBe('anchored');
      const proof: ProofStep[] = p.extension[0].extension
        .filter((e: any) => e.url === 'proof')
        .map((e: any) => ({ side: e.valueString.split(':')[0], hash: e.valueString.split(':')[1] }));
      const leaf = leafHashOf(
        parts.salt,
        canonicalizeText(line),
        parts.leafVersion as LeafVersion,
        parts.custodian,
      );
      expect(
        verifyProof(leaf, proof, parts.root, { leafIndex: parts.leafIndex, leafCount: parts.leafCount }),
      ).toBe(true);
      // A changed text does not verify.
      const altered = leafHashOf(
        parts.salt,
        canonicalizeText(line.replace('"final"', '"amended"')),
        parts.leafVersion,
        parts.custodian,
      );
      expect(
        verifyProof(altered, proof, parts.root, { leafIndex: parts.leafIndex, leafCount: parts.leafCount }),
      ).toBe(false);
    }
  });

  it('is declared in the CapabilityStatement at system level and on Patient and Group', async () => {
    const statement = json((await send(app, { url: '/fhir/metadata' }, 200)).body);
    const names = (list: any[] | undefined) => (list ?? []).map((o) => o.name);
    expect(names(statement.rest[0].operation)).toEqual(expect.arrayContaining(['export', 'import']));
    for (const type of ['Patient', 'Group'])
      expect(names(statement.rest[0].resource.find((r: any) => r.type === type).operation)).toContain(
        'export',
      );
  });

  it("_typeFilter: one type's filters OR-ed, each resource once; _since leaves out what did not change after it", async () => {
    const write = async (status: string) =>
      json(
        (
          await send(
            app,
            {
              method: 'POST',
              url: '/fhir/Observation',
              headers: FHIR_JSON,
              body: { resourceType: 'Observation', status, code: { text: 'filter-test' } },
            },
            201,
          )
        ).body,
      );
    const final = await write('final');
    const amended = await write('amended');
    await write('cancelled');
    const filters = [
      'Observation%3Fstatus%3Dfinal',
      'Observation%3Fstatus%3Damended',
      'Observation%3Fstatus%3Dfinal%252Camended',
    ];
    const manifest = await manifestOf(
      await kickOff(`/fhir/$export?_type=Observation&_typeFilter=${filters.join(',')}`),
    );
    const ids = (await fileLines(manifest.output[0].url))
      .map((l) => JSON.parse(l))
      .filter((r) => r.code?.text === 'filter-test')
      .map((r) => r.id);
    expect(ids.sort()).toEqual([final.id, amended.id].sort());
    const since = await manifestOf(
      await kickOff(`/fhir/$export?_type=Observation&_since=${encodeURIComponent(final.meta.lastUpdated)}`),
    );
    const after = (await fileLines(since.output[0].url)).map((l) => JSON.parse(l).id);
    expect(after).not.toContain(final.id);
    expect(after).toContain(amended.id);
  });

  it('a finished job and its files are deleted after the retention time', async () => {
    const status = await kickOff('/fhir/$export?_type=Patient');
    const manifest = await manifestOf(status);
    const file = new URL(manifest.output[0].url).pathname;
    expect(await app.bulk!.exports.sweep(Date.now())).toBe(0); // not yet
    expect(await app.bulk!.exports.sweep(Date.now() + 3_600_000 + 1)).toBeGreaterThan(0);
    await send(app, { url: status }, 404);
    await send(app, { url: file }, 404);
  });

  it('needs Prefer: respond-async (400)', async () => {
    const res = await send(app, { url: '/fhir/$export', headers: { accept: 'application/fhir+json' } }, 400);
    expect(json(res.body).issue[0].details.coding[0].code).toBe('respond-async-required');
  });

  it('an unknown job is a 404; DELETE cancels (202) and the job is unknown afterwards', async () => {
    const unknown = await send(app, { url: '/fhir/bulk/export/00000000-0000-4000-8000-000000000000' }, 404);
    expect(json(unknown.body).issue[0].details.coding[0].code).toBe('bulk-job-not-found');
    const status = await kickOff('/fhir/$export');
    await send(app, { method: 'DELETE', url: status }, 202);
    await send(app, { url: status }, 404);
    await send(app, { method: 'DELETE', url: status }, 404);
    await app.bulk!.exports.settled();
  });

  it('refuses parameters it cannot serve with 400 naming them', async () => {
    for (const [query, code, expression] of [
      ['_outputFormat=application/xml', 'parameter-invalid', '_outputFormat'],
      ['_since=yesterday', 'parameter-invalid', '_since'],
      ['_type=NotAType', 'parameter-invalid', '_type'],
      ['_typeFilter=Observation%3Fnot-a-param%3D1', 'search-param-unsupported', undefined],
      ['_typeFilter=Observation%3F_sort%3Ddate', 'parameter-invalid', '_typeFilter'],
      ['_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal', 'parameter-invalid', '_typeFilter'],
      ['_elements=id', 'parameter-unsupported', '_elements'],
      ['includeAssociatedData=LatestProvenanceResources', 'parameter-unsupported', 'includeAssociatedData'],
      ['unknownParam=1', 'parameter-unsupported', 'unknownParam'],
    ] as const) {
      const res = await send(app, { url: `/fhir/$export?${query}`, headers: ASYNC });
      expect(res.statusCode, query).toBe(400);
      const first = json(res.body).issue[0];
      if (code !== 'search-param-unsupported') expect(first.details.coding[0].code, query).toBe(code);
      if (expression) expect(first.expression, query).toEqual([expression]);
    }
    const patientLevel = await send(app, { url: '/fhir/Patient/$export?_type=Organization', headers: ASYNC });
    expect(patientLevel.statusCode).toBe(400);
  });
});
