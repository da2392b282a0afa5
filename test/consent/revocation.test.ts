/**
 * Revocation: a clinician reading in a loop loses access on the first request after the revocation is accepted,
 * and a grant only opens access once committed on the ledger. A revocation never fails and is never undone: with
 * the ledger away it is accepted, in force at once and across restarts, and reaches the ledger when it is back.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ledgerGrantsOf } from './ledger-grants.js';
import {
  actor,
  grantedObservation,
  privacyConsent,
  startHarness,
  storePatientWithObservation,
  type Harness,
} from '../access/app-harness.js';
import { startFabricHarness, type FabricHarness } from '../fabric/support/harness.js';

describe('revocation while a clinician reads in a loop', () => {
  let h: Harness;
  let sys: string;
  let doctor: string;
  let patient: string;

  beforeAll(async () => {
    h = await startHarness();
    sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    doctor = await h.enrol('dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    patient = await h.enrol('pat-9', 'patient', 'Patient/p9');
    await storePatientWithObservation(h, sys, 'p9', 'o9');
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('no access before the grant, access once the grant is committed, none from the first request after revocation', async () => {
    expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(404);
    const granted = await h.request(
      patient,
      'POST',
      '/Consent',
      privacyConsent('Patient/p9', { type: 'permit', actor: [actor('Practitioner/dr-b')] }),
    );
    expect(granted.status, granted.text).toBe(201);
    // The 201 came after the grant committed: in force at once.
    expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(200);

    for (let round = 0; round < 3; round++) {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await h.request(doctor, 'GET', '/Observation/o9')).status);
      expect(statuses.every((s) => s === 200)).toBe(true);

      // Revoke without waiting for the answer; reads go on meanwhile.
      const revoking = h.request(patient, 'PUT', `/Consent/${granted.body.id}`, {
        ...granted.body,
        status: 'inactive',
      });
      const during: number[] = [];
      let revoked = false;
      void revoking.then(() => (revoked = true));
      while (!revoked && during.length < 5000) {
        during.push((await h.request(doctor, 'GET', '/Observation/o9')).status);
        await new Promise((resolve) => setImmediate(resolve)); // let the ledger's timers run
      }
      const revocation = await revoking;
      expect(revocation.status, revocation.text).toBe(200);
      // Once refused, never allowed again: the refusal starts when the revocation is accepted, not at commit.
      const firstRefusal = during.indexOf(404);
      if (firstRefusal >= 0) expect(during.slice(firstRefusal).every((s) => s === 404)).toBe(true);
      for (let i = 0; i < 5; i++)
        expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(404);
      expect((await h.request(doctor, 'GET', '/Observation?subject=Patient/p9')).body.entry ?? []).toEqual(
        [],
      );

      // Grant again for the next round.
      const regrant = await h.request(patient, 'PUT', `/Consent/${granted.body.id}`, {
        ...granted.body,
        status: 'active',
      });
      expect(regrant.status, regrant.text).toBe(200);
      expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(200);
    }

    // Deleting the Consent revokes too.
    expect((await h.request(patient, 'DELETE', `/Consent/${granted.body.id}`)).status).toBe(200);
    expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(404);
    const grants = await ledgerGrantsOf(h.dataDir, h.app.ledger!, 'Patient/p9');
    expect(grants.map((g) => g.status)).toEqual(['revoked']);
  });

  it('a Consent in a transaction grants once the transaction commits; a rolled-back one grants nothing', async () => {
    const consent = privacyConsent('Patient/p9', { type: 'permit', actor: [actor('Organization/hosp-b')] });
    const failing = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:0f8e7b52-7c56-4d0b-9d8a-1c1f1f1f1f1f',
          resource: consent,
          request: { method: 'POST', url: 'Consent' },
        },
        {
          resource: { resourceType: 'Observation', status: 'not-a-status' },
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    };
    const failed = await h.request(patient, 'POST', '', failing);
    expect(failed.status).toBeGreaterThanOrEqual(400);
    expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(404);
    const ok = { ...failing, entry: [failing.entry[0]] };
    const committed = await h.request(patient, 'POST', '', ok);
    expect(committed.status, committed.text.slice(0, 300)).toBe(200);
    expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(200);
  });
});

describe('revocation while the ledger is away (Fabric peer down)', () => {
  let fabric: FabricHarness;
  let h: Harness;
  // Short waits: the peer is refused at once while stopped, so these only bound the adapter's own retries.
  const connect = () => fabric.connect({ retry: { attempts: 2, initialDelayMs: 20, maxDelayMs: 100 } });

  beforeAll(async () => {
    fabric = await startFabricHarness();
    h = await startHarness({ ledger: connect() });
    await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    await h.enrol('dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
  });
  afterAll(async () => {
    await h?.stop();
    await fabric?.close();
  });

  it('is accepted, refused at once and after a restart, and reaches the ledger once it is back', async () => {
    const sys = await h.token('sys-a');
    const { patient, granted } = await grantedObservation(h, sys, 7);

    fabric.server.stop();
    // A grant needs the ledger: refused while it is away (nothing of it in force).
    const otherGrant = await h.request(
      patient,
      'POST',
      '/Consent',
      privacyConsent('Patient/p7', { type: 'permit', actor: [actor('Organization/hosp-c')] }),
    );
    expect(otherGrant.status).toBe(503);
    // The revocation is stored and in force at once (FHIR: the Consent update succeeded).
    const revoked = await h.request(patient, 'PUT', `/Consent/${granted.body.id}`, {
      ...granted.body,
      status: 'inactive',
    });
    expect(revoked.status, revoked.text).toBe(200);
    expect((await h.request(await h.token('dr-b'), 'GET', '/Observation/o7')).status).toBe(404);

    // Restarted while the ledger is still away: the revocation is still in force.
    await h.restart({ ledger: connect() });
    expect((await h.request(await h.token('dr-b'), 'GET', '/Observation/o7')).status).toBe(404);

    // The ledger is back: the outbox sends the revocation, and the local deny ends only once it is there.
    await fabric.server.start();
    const patientPseudonym = h.participants.existingPseudonymOf('Patient/p7')!;
    const reader = connect();
    const statuses = async () =>
      (await ledgerGrantsOf(h.dataDir, reader, 'Patient/p7')).map((grant) => grant.status);
    for (let i = 0; i < 400 && (await statuses()).includes('active'); i++)
      await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await statuses()).toEqual(['revoked']);
    expect((await h.request(await h.token('dr-b'), 'GET', '/Observation/o7')).status).toBe(404);
    const pendingFile = join(h.dataDir, 'consent-revocations.json');
    for (
      let i = 0;
      i < 100 && existsSync(pendingFile) && readFileSync(pendingFile, 'utf8').includes(patientPseudonym);
      i++
    )
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(JSON.parse(readFileSync(pendingFile, 'utf8')).revocations).toEqual([]);
  });

  it('a narrowing change while the ledger is away: old terms refused at once and after a restart, revoked once it is back', async () => {
    const sys = await h.token('sys-a');
    const { patient, granted } = await grantedObservation(h, sys, 8);

    fabric.server.stop();
    const narrowed = {
      ...granted.body,
      provision: {
        type: 'permit',
        actor: [actor('Practitioner/dr-b')],
        class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Encounter' }],
      },
    };
    // Its new grant needs the ledger (503), but what it withdraws is refused now.
    expect((await h.request(patient, 'PUT', `/Consent/${granted.body.id}`, narrowed)).status).toBe(503);
    expect((await h.request(await h.token('dr-b'), 'GET', '/Observation/o8')).status).toBe(404);
    await h.restart({ ledger: connect() });
    expect((await h.request(await h.token('dr-b'), 'GET', '/Observation/o8')).status).toBe(404);

    await fabric.server.start();
    const reader = connect();
    const grants = () => ledgerGrantsOf(h.dataDir, reader, 'Patient/p8');
    for (let i = 0; i < 400 && (await grants()).some((grant) => grant.status === 'active'); i++)
      await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await grants()).map((grant) => grant.status)).toEqual(['revoked']);
    expect((await h.request(await h.token('dr-b'), 'GET', '/Observation/o8')).status).toBe(404);

    // Sent again with the ledger back: the narrowed grant is in force, and only it.
    expect((await h.request(patient, 'PUT', `/Consent/${granted.body.id}`, narrowed)).status).toBe(200);
    expect((await grants()).map((grant) => [grant.status, grant.classes])).toEqual([
      ['active', ['Encounter']],
    ]);
    expect((await h.request(await h.token('dr-b'), 'GET', '/Observation/o8')).status).toBe(404);
  });
});
