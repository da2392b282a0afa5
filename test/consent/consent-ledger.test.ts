import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { ConsentService, type LedgerGrant } from '../../src/consent/consent-service.js';
import { consentToGrants } from '../../src/consent/consent-resource.js';
import { TestPseudonyms } from '../ledger/helpers.js';

const scope = {
  coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }],
};
const actor = (reference: string) => ({ reference: { reference } });
function privacyConsent(patient: string, provision: object, status = 'active') {
  return { resourceType: 'Consent', status, scope, patient: { reference: patient }, provision };
}

describe('consent chaincode and the consent service over the embedded ledger', () => {
  let dir: string;
  let org1: Ledger;
  let org2: Ledger;
  let releaseChain: () => Promise<void>;
  const pseudonyms = new TestPseudonyms();
  let clock = Date.parse('2026-03-01T12:00:00Z');
  let service: ConsentService;
  const actorPs = 'actor-pseudonym-1';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hie-consent-'));
    const ca1 = await EmbeddedCa.open(join(dir, 'ca1'), { mspId: 'Org1MSP' });
    const ca2 = await EmbeddedCa.open(join(dir, 'ca2'), { mspId: 'Org2MSP' });
    const { chain, release } = await acquireChain({
      file: join(dir, 'chain.sqlite'),
      msps: [
        { mspId: 'Org1MSP', rootCertificates: [ca1.certificate], isRevoked: (pem) => ca1.isRevoked(pem) },
        { mspId: 'Org2MSP', rootCertificates: [ca2.certificate], isRevoked: (pem) => ca2.isRevoked(pem) },
      ],
    });
    releaseChain = release;
    org1 = chain.connect(await serviceIdentity(ca1, join(dir, 'svc1')));
    org2 = chain.connect(await serviceIdentity(ca2, join(dir, 'svc2')));
    service = await ConsentService.open({
      ledger: org1,
      pseudonyms,
      checkpointFile: join(dir, 'checkpoints', 'consent.json'),
      now: () => clock,
    });
  });
  afterAll(async () => {
    await service?.close();
    await releaseChain?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('chaincode: only the home service grants and revokes; one key per (patient, grantee, consent)', async () => {
    const grant = {
      patient: 'patient-aaaa',
      grantee: 'grantee-bbbb',
      consent: 'consent-cccc',
      actor: actorPs,
      inPerson: false,
      classes: ['Observation'],
    };
    await expect(org1.submit('consent:GrantAccess', [JSON.stringify(grant)])).rejects.toThrow(
      /not registered/,
    );
    await org1.submit('consent:RegisterPatient', ['patient-aaaa']);
    await org1.submit('consent:RegisterPatient', ['patient-aaaa']); // idempotent for the home
    await expect(org2.submit('consent:RegisterPatient', ['patient-aaaa'])).rejects.toThrow(
      /another organisation/,
    );
    await expect(org2.submit('consent:GrantAccess', [JSON.stringify(grant)])).rejects.toThrow(/home service/);
    const granted = JSON.parse(
      (await org1.submit('consent:GrantAccess', [JSON.stringify(grant)])).result,
    ) as LedgerGrant;
    expect(granted).toMatchObject({
      status: 'active',
      grantedBy: actorPs,
      grantedInPerson: false,
      mspId: 'Org1MSP',
      classes: ['Observation'],
    });
    await org1.submit('consent:GrantAccess', [
      JSON.stringify({ ...grant, consent: 'consent-dddd', classes: [], inPerson: true }),
    ]);
    const list = JSON.parse(await org1.evaluate('consent:ListGrants', ['patient-aaaa'])) as LedgerGrant[];
    expect(list.map((g) => g.consent)).toEqual(['consent-cccc', 'consent-dddd']);
    expect(list[1].grantedInPerson).toBe(true);

    const check = (type: string) =>
      org2.evaluate('consent:CheckAccess', ['patient-aaaa', 'grantee-bbbb', type, '2026-03-01T00:00:00Z']);
    expect(JSON.parse(await check('Observation'))).toEqual({
      allowed: true,
      consents: ['consent-cccc', 'consent-dddd'],
    });
    await expect(
      org2.submit('consent:RevokeAccess', [
        JSON.stringify({
          patient: 'patient-aaaa',
          grantee: 'grantee-bbbb',
          consent: 'consent-dddd',
          actor: actorPs,
          inPerson: false,
        }),
      ]),
    ).rejects.toThrow(/home service/);
    const revoked = JSON.parse(
      (
        await org1.submit('consent:RevokeAccess', [
          JSON.stringify({
            patient: 'patient-aaaa',
            grantee: 'grantee-bbbb',
            consent: 'consent-dddd',
            actor: 'patient-self-1',
            inPerson: false,
          }),
        ])
      ).result,
    );
    expect(revoked).toMatchObject({ status: 'revoked', revokedBy: 'patient-self-1' });
    expect(JSON.parse(await check('Condition'))).toEqual({ allowed: false, consents: [] });
    expect(JSON.parse(await check('Observation'))).toEqual({ allowed: true, consents: ['consent-cccc'] });
  });

  it('chaincode: refuses malformed arguments and non-pseudonyms', async () => {
    await expect(org1.submit('consent:RegisterPatient', ['Patient/1'])).rejects.toThrow(/pseudonym/);
    await expect(org1.submit('consent:GrantAccess', ['{not json'])).rejects.toThrow(/JSON/);
    await expect(
      org1.submit('consent:GrantAccess', [
        JSON.stringify({
          patient: 'patient-aaaa',
          grantee: 'grantee-bbbb',
          consent: 'consent-eeee',
          actor: actorPs,
          inPerson: 'yes',
        }),
      ]),
    ).rejects.toThrow(/inPerson/);
    await expect(org1.submit('consent:RecordAccess', ['[]'])).rejects.toThrow(/records/);
  });

  it('service: a grant is in force once committed, for its classes and period; revocation refuses before commit', async () => {
    const consent = privacyConsent('Patient/p1', {
      type: 'permit',
      actor: [actor('Organization/b'), actor('Practitioner/d')],
      class: [{ code: 'Observation' }, { code: 'Condition' }],
      period: { start: '2026-02-01T00:00:00Z', end: '2026-04-01T00:00:00Z' },
      provision: [{ type: 'deny', actor: [actor('Practitioner/d')], class: [{ code: 'Condition' }] }],
    });
    const prepared = service.prepareConsent('Consent/c1', consentToGrants(consent), {
      pseudonym: actorPs,
      inPerson: false,
    });
    expect(service.allows('Patient/p1', ['Organization/b'], 'Observation')).toBe(false); // not committed yet
    await prepared.commit();
    expect(service.allows('Patient/p1', ['Organization/b'], 'Observation')).toBe(true);
    expect(service.allows('Patient/p1', ['Organization/b'], 'Condition')).toBe(true);
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Condition')).toBe(false); // nested deny
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    expect(service.allows('Patient/p1', ['Organization/b'], 'MedicationRequest')).toBe(false);
    expect(service.allows('Patient/p1', ['Organization/x'], 'Observation')).toBe(false);
    expect(service.allows('Patient/p2', ['Organization/b'], 'Observation')).toBe(false);

    // Expiry is exact: the end instant is excluded.
    clock = Date.parse('2026-04-01T00:00:00Z') - 1;
    expect(service.allows('Patient/p1', ['Organization/b'], 'Observation')).toBe(true);
    clock += 1;
    expect(service.allows('Patient/p1', ['Organization/b'], 'Observation')).toBe(false);
    clock = Date.parse('2026-03-01T12:00:00Z');

    // Narrow the Consent (drop Organization/b): refused at once, before anything reaches the ledger.
    const narrowed = privacyConsent('Patient/p1', {
      type: 'permit',
      actor: [actor('Practitioner/d')],
      class: [{ code: 'Observation' }],
    });
    const narrowing = service.prepareConsent('Consent/c1', consentToGrants(narrowed), {
      pseudonym: actorPs,
      inPerson: false,
    });
    expect(service.allows('Patient/p1', ['Organization/b'], 'Observation')).toBe(false);
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(false); // changed grant: refused until the new one commits
    await narrowing.commit();
    expect(service.allows('Patient/p1', ['Organization/b'], 'Observation')).toBe(false);
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    const onLedger = await service.listGrants('Patient/p1');
    expect(onLedger.find((g) => g.grantee === pseudonyms.existingPseudonymOf('Organization/b'))?.status).toBe(
      'revoked',
    );

    // A rolled-back write lifts its refusal.
    const inactive = service.prepareConsent(
      'Consent/c1',
      consentToGrants(privacyConsent('Patient/p1', {}, 'inactive')),
      { pseudonym: actorPs, inPerson: false },
    );
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(false);
    inactive.rollback();
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
  });

  it('service: the cache is rebuilt from events and the checkpoint after a restart', async () => {
    await service.close();
    const fresh = await ConsentService.open({
      ledger: org1,
      pseudonyms,
      checkpointFile: join(dir, 'checkpoints', 'consent.json'),
      now: () => clock,
    });
    expect(fresh.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    expect(fresh.allows('Patient/p1', ['Organization/b'], 'Observation')).toBe(false);
    const noCheckpoint = await ConsentService.open({ ledger: org1, pseudonyms, now: () => clock });
    expect(noCheckpoint.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    // Grants committed by another instance of the service arrive through events.
    const other = service.prepareConsent.call(
      noCheckpoint,
      'Consent/c2',
      consentToGrants(privacyConsent('Patient/p1', { type: 'permit', actor: [actor('Organization/z')] })),
      { pseudonym: actorPs, inPerson: true },
    );
    await other.commit();
    for (let i = 0; i < 50 && !fresh.allows('Patient/p1', ['Organization/z'], 'Encounter'); i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(fresh.allows('Patient/p1', ['Organization/z'], 'Encounter')).toBe(true);
    await noCheckpoint.close();
    service = fresh;
  });

  it('service: access records are batched to the ledger and listed per patient', async () => {
    const at = new Date(clock).toISOString();
    service.recordAccess({
      patient: 'Patient/p1',
      accessor: 'accessor-1234',
      interaction: 'read',
      resourceType: 'Observation',
      outcome: 'allowed',
      at,
    });
    service.recordAccess({
      patient: 'Patient/p1',
      accessor: 'accessor-5678',
      interaction: 'search-type',
      resourceType: 'Condition',
      outcome: 'refused',
      at,
    });
    await service.flushAccess();
    const records = await service.listAccess('Patient/p1');
    expect(records.map((r) => [r.accessor, r.outcome])).toEqual([
      ['accessor-1234', 'allowed'],
      ['accessor-5678', 'refused'],
    ]);
    expect(records[0].txId).toBe(records[1].txId); // one transaction for the batch
  });
});
