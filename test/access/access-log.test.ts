/**
 * `Patient/[id]/$access-log` tells who looked at a patient's data. That is the patient's to know (and a
 * service-wide admin's); the ledger's access records name no custodian, so an organisation reads the disclosures of
 * its own records as AuditEvents instead. A grantee (even a system of another organisation the patient opened their
 * record to) learns nothing of who else looked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, privacyConsent, startHarness, type Harness } from './app-harness.js';
import { expectErrorCode } from '../support/error-codes.js';

describe('$access-log: who else looked is not a grantee’s to learn', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('log-sys-a', 'system', 'Organization/hosp-a');
    tokens.sysB = await h.enrol('log-sys-b', 'system', 'Organization/hosp-b');
    tokens.drB = await h.enrol('log-dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    tokens.patient1 = await h.enrol('log-patient-1', 'patient', 'Patient/p1');
    tokens.patient2 = await h.enrol('log-patient-2', 'patient', 'Patient/p2');
    tokens.admin = await h.enrol('log-admin', 'admin');
    for (const id of ['p1', 'p2']) {
      const res = await h.request(tokens.sysA, 'PUT', `/Patient/${id}`, { resourceType: 'Patient', id });
      expect(res.status, res.text).toBe(201);
    }
    const consent = await h.request(
      tokens.patient1,
      'POST',
      '/Consent',
      privacyConsent('Patient/p1', { type: 'permit', actor: [actor('Organization/hosp-b')] }),
    );
    expect(consent.status, consent.text).toBe(201);
    // Hospital B's clinician reads under the grant: an access record the patient and hospital A may see.
    expect((await h.request(tokens.drB, 'GET', '/Patient/p1')).status).toBe(200);
    expect((await h.request(tokens.sysB, 'GET', '/Patient/p1')).status).toBe(200);
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('the patient and a service admin see the log; grantees and organisations get 403 and no record', async () => {
    expect((await h.request(tokens.patient1, 'GET', '/Patient/p1/$access-log')).status).toBe(200);
    // It changes nothing: POST with a Parameters body answers as GET does.
    const posted = await h.request(
      tokens.patient1,
      'POST',
      '/Patient/p1/$access-log',
      {
        resourceType: 'Parameters',
      },
      { 'content-type': 'application/fhir+json' },
    );
    expect(posted.status, posted.text).toBe(200);
    expect(posted.body.resourceType).toBe('Parameters');
    const admin = await h.request(tokens.admin, 'GET', '/Patient/p1/$access-log', undefined, {
      'x-access-reason': 'patient request 7',
    });
    expect(admin.status, admin.text).toBe(200);
    for (const grantee of ['sysB', 'drB', 'sysA']) {
      const res = await h.request(tokens[grantee], 'GET', '/Patient/p1/$access-log');
      expect(res.status, `${grantee}: ${res.text}`).toBe(403);
      expect(res.text).not.toContain('accessor');
    }
  });

  it('another patient gets the same 404 as for an unknown patient', async () => {
    const hidden = await h.request(tokens.patient2, 'GET', '/Patient/p1/$access-log');
    const absent = await h.request(tokens.patient2, 'GET', '/Patient/nobody/$access-log');
    expectErrorCode(hidden.text, 'resource-not-found');
    expectErrorCode(absent.text, 'resource-not-found');
    expect(hidden.status).toBe(404);
    expect(absent.status).toBe(404);
    expect(hidden.body.issue[0].code).toBe(absent.body.issue[0].code);
  });
});
