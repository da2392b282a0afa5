/**
 * The pull at B over the in-process three-member network (test/exchange/network-harness.ts): real apps on loopback,
 * one embedded chain. `GET|POST [B]/Patient/{id}/$network-everything` as a clinician at B calls it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NETWORK_OUTCOME_SYSTEM } from '../../src/exchange/network-everything.js';
import { expectErrorCode } from '../support/error-codes.js';
import {
  demoPatient,
  networkConsent,
  observation,
  startNetwork,
  type TestNetwork,
} from './network-harness.js';

let network: TestNetwork;
let drB: string;

beforeAll(async () => {
  network = await startNetwork();
  const { a, b, c } = network;
  await a.request(a.system, 'PUT', '/Patient/pa1', demoPatient('pa1'));
  await b.request(b.system, 'PUT', '/Patient/pb1', demoPatient('pb1'));
  await b.request(b.system, 'PUT', '/Patient/pb-unlinked', demoPatient('pb-unlinked', 'Berg', 'Ola'));
  await c.request(c.system, 'PUT', '/Patient/pc1', demoPatient('pc1'));
  await c.request(c.system, 'PUT', '/Observation/oc1', observation('oc1', 'Patient/pc1'));
  drB = await b.enrol('dr-b', 'clinician', 'Practitioner/dr-b', b.organization);
  await network.link(a, 'pa1', b, 'pb1');
  await network.link(a, 'pa1', c, 'pc1');
});

afterAll(async () => {
  await network?.stop();
});

interface SearchsetEntry {
  fullUrl?: string;
  search: { mode: string };
  resource: {
    resourceType: string;
    issue?: {
      severity: string;
      code: string;
      diagnostics: string;
      details?: { coding: { system: string; code: string }[] };
    }[];
  };
}

describe('$network-everything at B', () => {
  it('is declared in the CapabilityStatement by its own OperationDefinition; $everything keeps its R4 one', async () => {
    const res = await network.b.request(undefined, 'GET', '/metadata');
    expect(res.status).toBe(200);
    const patient = res.body.rest[0].resource.find((r: { type: string }) => r.type === 'Patient');
    const operations = patient.operation as { name: string; definition: string }[];
    expect(operations.find((o) => o.name === 'everything')?.definition).toBe(
      'http://hl7.org/fhir/OperationDefinition/Patient-everything',
    );
    expect(operations.find((o) => o.name === 'network-everything')?.definition).toBe(
      '#Patient-network-everything',
    );
    expect(res.body.contained).toContainEqual(
      expect.objectContaining({
        resourceType: 'OperationDefinition',
        id: 'Patient-network-everything',
        code: 'network-everything',
      }),
    );
  });

  it('answers a Patient linked to no network patient with only a network-not-linked outcome', async () => {
    const res = await network.b.request(drB, 'GET', '/Patient/pb-unlinked/$network-everything');
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.body).toMatchObject({ resourceType: 'Bundle', type: 'searchset', total: 0 });
    const entries = res.body.entry as SearchsetEntry[];
    expect(entries).toHaveLength(1);
    expect(entries[0].search.mode).toBe('outcome');
    expect(entries[0].resource.issue![0].details!.coding).toEqual([
      { system: NETWORK_OUTCOME_SYSTEM, code: 'network-not-linked' },
    ]);
  });

  it('answers a Patient the caller may not see exactly as an absent one, asking no member', async () => {
    const { b } = network;
    const outsider = await b.enrol(
      'dr-other',
      'clinician',
      'Practitioner/dr-other',
      'Organization/elsewhere',
    );
    const hidden = await b.request(outsider, 'GET', '/Patient/pb1/$network-everything');
    const absent = await b.request(outsider, 'GET', '/Patient/nobody/$network-everything');
    expect(hidden.status).toBe(404);
    expect(absent.status).toBe(404);
    expectErrorCode(hidden.text, 'resource-not-found');
    expect(hidden.text.replace('pb1', 'ID')).toBe(absent.text.replace('nobody', 'ID'));
  });

  it('refuses a parameter outside the network search subset with 400 naming it, GET and POST', async () => {
    const { b } = network;
    const get = await b.request(drB, 'GET', '/Patient/pb1/$network-everything?_include=Observation:subject');
    expect(get.status).toBe(400);
    expectErrorCode(get.text, 'parameter-unsupported');
    expect(get.text).toContain("'_include'");
    const post = await b.request(drB, 'POST', '/Patient/pb1/$network-everything', {
      resourceType: 'Parameters',
      parameter: [{ name: 'start', valueDate: '2020-01-01' }],
    });
    expect(post.status).toBe(400);
    expectErrorCode(post.text, 'parameter-unsupported');
    expect(post.text).toContain("'start'");
  });

  it("at the patient's home, locates in process: without a grant nobody is asked; with one, the linked custodian is", async () => {
    const { a } = network;
    const drA = await a.enrol('dr-a', 'clinician', 'Practitioner/dr-a', a.organization);
    const before = await a.request(drA, 'GET', '/Patient/pa1/$network-everything');
    expect(before.status, before.text).toBe(200);
    expect(before.body.total).toBe(0);
    const codes = (res: typeof before) =>
      (res.body.entry as SearchsetEntry[])
        .filter((e) => e.search.mode === 'outcome')
        .flatMap((e) => e.resource.issue!.map((i) => i.details?.coding?.[0]?.code ?? i.diagnostics));
    expect(codes(before)).toEqual(['network-no-grant']);

    // The patient grants dr-a by its handle (a network grant, even at its own member).
    const patient = await a.enrol('pat-a1', 'patient', 'Patient/pa1');
    const consent = await a.request(
      patient,
      'POST',
      '/Consent',
      networkConsent('Patient/pa1', a.handleOf('dr-a')),
    );
    expect(consent.status, consent.text).toBe(201);
    const after = await a.request(drA, 'GET', '/Patient/pa1/$network-everything');
    expect(after.status, after.text).toBe(200);
    expect(codes(after)).not.toContain('network-no-grant');
    // C, linked to the network patient, was asked (its records, or an issue naming it); A never asks itself.
    expect(after.text).toContain(network.c.mspId);
    expect(after.text).not.toContain(`member ${a.mspId}`);
  });

  it('is refused to another member calling with a network token', async () => {
    const { a, b } = network;
    const token = await network.networkToken(a, b, {
      subjectId: 'x',
      subjectRole: 'clinician',
      purposes: ['TREAT'],
      consentReferences: [],
    });
    const res = await b.request(token, 'GET', '/Patient/pb1/$network-everything');
    expect(res.status).toBe(403);
    expectErrorCode(res.text, 'network-token-scope');
  });
  // Last: it stops A.
  it('answers with C’s records and an outcome naming A when the home A is stopped (the custodians it last listed)', async () => {
    const { a, b, c } = network;
    const patient = await a.enrol('pat-a2', 'patient', 'Patient/pa1');
    const consent = await a.request(
      patient,
      'POST',
      '/Consent',
      networkConsent('Patient/pa1', b.handleOf('dr-b')),
    );
    expect(consent.status, consent.text).toBe(201);
    await c.app.integrity!.anchorer.drain();
    const before = await b.request(drB, 'GET', '/Patient/pb1/$network-everything?_type=Observation');
    expect(before.status, before.text).toBe(200);
    expect((before.body.entry as SearchsetEntry[]).map((e) => e.fullUrl)).toContain(
      `${c.baseUrl}/Observation/oc1/_history/1`,
    );

    await a.app.fastify.close();
    const after = await b.request(drB, 'GET', '/Patient/pb1/$network-everything?_type=Observation');
    expect(after.status, after.text).toBe(200);
    const entries = after.body.entry as SearchsetEntry[];
    expect(entries.filter((e) => e.search.mode === 'match').map((e) => e.fullUrl)).toEqual([
      `${c.baseUrl}/Observation/oc1/_history/1`,
    ]);
    const issues = entries.find((e) => e.search.mode === 'outcome')!.resource.issue!;
    expect(issues.map((i) => i.diagnostics)).toEqual([
      expect.stringMatching(new RegExp(`^member ${a.mspId}: connection failed`)),
    ]);
  });
});
