/**
 * `POST [B]/Patient/{id}/$network-save` over the three-member harness: records A anchored, answered as B's pull
 * answers them (A's evidence Bundle, verified at B: receivedBundleText), saved by a clinician at B as B's copies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ORIGINAL_TEXT_EXTENSION_URL } from '../../src/exchange/received-copy.js';
import { EVIDENCE_EXTENSION_URL, recordEvidenceBundle } from '../../src/exchange/record-evidence.js';
import { receivedBundleText, verifyEvidenceBundle } from '../../src/exchange/record-verifier.js';
import { CachedBatchSource } from '../../src/integrity/verification.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { expectErrorCode } from '../support/error-codes.js';
import { demoPatient, observation, startNetwork, type TestNetwork } from './network-harness.js';

let network: TestNetwork;
let drB: string;
let fetched: string;
let aVersions: StoredVersion[];

beforeAll(async () => {
  network = await startNetwork();
  const { a, b } = network;
  await a.request(a.system, 'PUT', '/Patient/pa1', demoPatient('pa1'));
  await b.request(b.system, 'PUT', '/Patient/pb1', demoPatient('pb1'));
  drB = await b.enrol('dr-b', 'clinician', 'Practitioner/dr-b', b.organization);
  const enc = await a.request(a.system, 'PUT', '/Encounter/e1', {
    resourceType: 'Encounter',
    id: 'e1',
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
    subject: { reference: 'Patient/pa1' },
    serviceProvider: { reference: 'Organization/hosp-a' },
  });
  expect(enc.status, enc.text).toBe(201);
  // A number written as 1.50: the copy and the original text keep it.
  const obs = await a.request(
    a.system,
    'PUT',
    '/Observation/o1',
    JSON.stringify({ ...observation('o1', 'Patient/pa1'), encounter: { reference: 'Encounter/e1' } }).replace(
      '"status":"final"',
      '"status":"final","valueQuantity":{"value":1.50,"unit":"mmol/L"}',
    ),
  );
  expect(obs.status, obs.text).toBe(201);
  await a.app.integrity!.anchorer.drain();
  aVersions = [(await a.app.store.read('Encounter', 'e1'))!, (await a.app.store.read('Observation', 'o1'))!];
  // What B's $network-everything answers for these records (A's evidence, verified at B).
  const aEntry = await a.entry();
  const evidence = await recordEvidenceBundle(
    aVersions,
    { store: a.app.store, journal: a.app.integrity!.journal },
    aEntry,
  );
  const answer = await verifyEvidenceBundle(evidence, aEntry, new CachedBatchSource(b.app.ledger!));
  expect(answer.records.map((r) => r.status)).toEqual(['verified', 'verified']);
  fetched = receivedBundleText([answer]);
});

afterAll(async () => {
  await network?.stop();
});

async function countAt(type: string): Promise<number> {
  const { b } = network;
  const res = await b.request(b.system, 'GET', `/${type}?_summary=count`);
  return res.body.total as number;
}

describe('$network-save at B', () => {
  it('stores verified records as B’s copies with a Provenance keeping the custodian URL, the original text and the evidence', async () => {
    const { a, b } = network;
    const res = await b.request(drB, 'POST', '/Patient/pb1/$network-save', fetched);
    expect(res.status, res.text).toBe(200);
    const saved = (
      res.body.parameter as {
        part: { name: string; valueUri?: string; valueReference?: { reference: string } }[];
      }[]
    ).map((p) => Object.fromEntries(p.part.map((q) => [q.name, q.valueUri ?? q.valueReference!.reference])));
    expect(saved.map((s) => s.source)).toEqual([
      `${a.baseUrl}/Encounter/e1/_history/1`,
      `${a.baseUrl}/Observation/o1/_history/1`,
    ]);
    const [encounterCopy, observationCopy] = saved.map((s) => s.copy);
    expect(encounterCopy).toMatch(/^Encounter\/[0-9a-f-]{36}$/);

    const copy = await b.request(drB, 'GET', `/${observationCopy}`);
    expect(copy.status, copy.text).toBe(200);
    // B's record now: in B's patient's compartment, pointing at B's copy of the encounter.
    expect(copy.body.subject).toEqual({ reference: 'Patient/pb1' });
    expect(copy.body.encounter).toEqual({ reference: encounterCopy });
    expect(copy.text).toContain('"value":1.50');
    const encounter = await b.request(drB, 'GET', `/${encounterCopy}`);
    // What is not saved points at A, absolutely (a relative reference would name one of B's resources).
    expect(encounter.body.serviceProvider).toEqual({ reference: `${a.baseUrl}/Organization/hosp-a` });

    const provenance = await b.request(drB, 'GET', `/${saved[1].provenance}`);
    expect(provenance.status, provenance.text).toBe(200);
    expect(provenance.body.target).toEqual([{ reference: observationCopy }]);
    expect(provenance.body.entity).toEqual([
      { role: 'source', what: { reference: `${a.baseUrl}/Observation/o1/_history/1` } },
    ]);
    expect(provenance.body.agent[0].who.identifier.value).toBe(a.mspId);
    const original = provenance.body.extension.find(
      (e: { url: string }) => e.url === ORIGINAL_TEXT_EXTENSION_URL,
    );
    expect(Buffer.from(original.valueBase64Binary, 'base64').toString('utf8')).toBe(aVersions[1].json);
    const evidence = provenance.body.extension.find((e: { url: string }) => e.url === EVIDENCE_EXTENSION_URL);
    const parts = Object.fromEntries(
      (evidence.extension as { url: string; valueCode?: string; valueString?: string }[]).map((p) => [
        p.url,
        p.valueCode ?? p.valueString,
      ]),
    );
    expect(parts.status).toBe('verified');
    expect(parts.anchoredBy).toBe(a.mspId);
  });

  it('refuses the whole save, storing nothing, when one record no longer verifies (its text altered)', async () => {
    const { b } = network;
    const observations = await countAt('Observation');
    const encounters = await countAt('Encounter');
    const altered = fetched.replace('"value":1.50', '"value":9.50');
    expect(altered).not.toBe(fetched);
    const res = await b.request(drB, 'POST', '/Patient/pb1/$network-save', altered);
    expect(res.status, res.text).toBe(422);
    expectErrorCode(res.text, 'network-save-unverified');
    expect(res.text).toContain('/Observation/o1/_history/1');
    expect(await countAt('Observation')).toBe(observations);
    expect(await countAt('Encounter')).toBe(encounters);
  });

  it('refuses records without their Provenance, and a Patient the caller may not see as an absent one', async () => {
    const { b } = network;
    const bundle = JSON.parse(fetched) as { entry: { resource: { resourceType: string } }[] };
    const withoutProvenance = {
      ...bundle,
      entry: bundle.entry.filter((e) => e.resource.resourceType !== 'Provenance'),
    };
    const bare = await b.request(drB, 'POST', '/Patient/pb1/$network-save', withoutProvenance);
    expect(bare.status).toBe(400);
    expectErrorCode(bare.text, 'network-save-invalid');
    const outsider = await b.enrol('dr-out', 'clinician', 'Practitioner/dr-out', 'Organization/elsewhere');
    const hidden = await b.request(outsider, 'POST', '/Patient/pb1/$network-save', fetched);
    const absent = await b.request(outsider, 'POST', '/Patient/nobody/$network-save', fetched);
    expect([hidden.status, absent.status]).toEqual([404, 404]);
    expect(hidden.text.replace('pb1', 'ID')).toBe(absent.text.replace('nobody', 'ID'));
  });
});
