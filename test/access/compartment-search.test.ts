/**
 * Compartment search (`Patient/[id]/[type]`, `Patient/[id]/*`) is consent-filtered like any search (issue 16): a
 * clinician of another organisation finds nothing in a patient's compartment until the patient grants it, and the
 * answer without a grant is the one for a patient that does not exist.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  actor,
  privacyConsent,
  startHarness,
  storePatientWithObservation,
  type Harness,
} from './app-harness.js';

let h: Harness;
let sys: string;
let patient: string;

beforeAll(async () => {
  h = await startHarness();
  sys = await h.enrol('cs-sys', 'system', 'Organization/hosp-a');
  await h.enrol('dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
  patient = await h.enrol('cs-pat', 'patient', 'Patient/cs1');
  await storePatientWithObservation(h, sys, 'cs1', 'cs-o1');
});
afterAll(async () => {
  await h?.stop();
});

const ids = (body: unknown) =>
  ((body as { entry?: { resource: { resourceType: string; id: string } }[] }).entry ?? [])
    .map((e) => `${e.resource.resourceType}/${e.resource.id}`)
    .sort();

describe('compartment search and consent', () => {
  it('shows a clinician without a grant nothing, as for a patient that does not exist; a grant opens it', async () => {
    const dr = await h.token('dr-b');
    for (const path of ['/Patient/cs1/Observation', '/Patient/cs1/*', '/Patient/no-such/Observation']) {
      const res = await h.request(dr, 'GET', `${path}?_total=accurate`);
      expect(res.status, res.text).toBe(200);
      expect((res.body as { total: number }).total, path).toBe(0);
      expect(ids(res.body)).toEqual([]);
    }
    // The custodian's system sees the compartment.
    expect(ids((await h.request(sys, 'GET', '/Patient/cs1/*')).body)).toEqual([
      'Observation/cs-o1',
      'Patient/cs1',
    ]);
    const granted = await h.request(
      patient,
      'POST',
      '/Consent',
      privacyConsent('Patient/cs1', { type: 'permit', actor: [actor('Practitioner/dr-b')] }),
    );
    expect(granted.status, granted.text).toBe(201);
    const after = await h.token('dr-b');
    expect(ids((await h.request(after, 'GET', '/Patient/cs1/Observation')).body)).toEqual([
      'Observation/cs-o1',
    ]);
    expect(ids((await h.request(after, 'GET', '/Patient/cs1/*')).body)).toEqual(
      expect.arrayContaining(['Observation/cs-o1', 'Patient/cs1']),
    );
  });
});
