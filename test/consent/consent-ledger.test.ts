import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { ConsentService, type LedgerGrant } from '../../src/consent/consent-service.js';
import { NetworkIds } from '../../src/consent/network-ids.js';
import type { AccessPage } from 'hie-ledger-chaincode';
import { hex as tag } from '../ledger/helpers.js';
import { consentToGrants, NETWORK_PARTICIPANT_SYSTEM } from '../../src/consent/consent-resource.js';
import { TestPseudonyms } from '../ledger/helpers.js';

const scope = {
  coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }],
};
const actor = (reference: string) => ({ reference: { reference } });
/** A participant of a member named by its handle `<mspId>|<pseudonym>` (what `$network-actor` answers). */
const networkActor = (handle: string) => ({
  reference: { identifier: { system: NETWORK_PARTICIPANT_SYSTEM, value: handle } },
});
function privacyConsent(patient: string, provision: object, status = 'active') {
  return { resourceType: 'Consent', status, scope, patient: { reference: patient }, provision };
}

describe('consent chaincode and the consent service over the embedded ledger', () => {
  let dir: string;
  let org1: Ledger;
  let org2: Ledger;
  let releaseChain: () => Promise<void>;
  const pseudonyms = new TestPseudonyms();
  // The home's network ids and grant index (its data directory), shared by the service's instances here.
  const networkIds = new NetworkIds();
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
      networkIds,
      checkpointFile: join(dir, 'checkpoints', 'consent.json'),
      now: () => clock,
    });
  });
  afterAll(async () => {
    await service?.close();
    await releaseChain?.();
    networkIds.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('chaincode: a grant belongs to the MSP that created it; only it changes or revokes it', async () => {
    const grant = {
      grantId: 'grant-aaaa-0001',
      patientTag: tag('a'),
      grantee: 'grantee-bbbb',
      classes: ['Observation'],
    };
    const granted = JSON.parse(
      (await org1.submit('consent:GrantAccess', [JSON.stringify(grant)])).result,
    ) as LedgerGrant;
    // The home and the grantee's MSP are the creator's (the grantee's when not named), purpose treatment.
    expect(granted).toMatchObject({
      status: 'active',
      homeMsp: 'Org1MSP',
      granteeMsp: 'Org1MSP',
      purpose: ['TREAT'],
      classes: ['Observation'],
      grantedInPerson: false,
    });
    // Another MSP can neither change nor revoke it (nor move it to another patient or grantee).
    await expect(
      org2.submit('consent:GrantAccess', [JSON.stringify({ ...grant, classes: [] })]),
    ).rejects.toThrow(/belongs to its home service's organisation/);
    await expect(org2.submit('consent:RevokeAccess', ['grant-aaaa-0001'])).rejects.toThrow(
      /belongs to its home service's organisation/,
    );
    await expect(
      org1.submit('consent:GrantAccess', [JSON.stringify({ ...grant, patientTag: tag('b') })]),
    ).rejects.toThrow(/another patient or grantee/);
    // What the chaincode records itself is never an argument.
    await expect(
      org2.submit('consent:GrantAccess', [
        JSON.stringify({ ...grant, grantId: 'grant-x-0001', homeMsp: 'Org1MSP' }),
      ]),
    ).rejects.toThrow(/homeMsp: recorded by the chaincode/);
    // The home changes its terms (same record) and sets purposes.
    await org1.submit('consent:GrantAccess', [
      JSON.stringify({
        ...grant,
        classes: [],
        purpose: ['TREAT', 'HRESCH', 'TREAT'],
        granteeMsp: 'Org2MSP',
        inPerson: true,
      }),
    ]);
    const read = JSON.parse(await org2.evaluate('consent:ReadGrant', ['grant-aaaa-0001'])) as LedgerGrant;
    expect(read).toMatchObject({
      classes: [],
      purpose: ['HRESCH', 'TREAT'],
      granteeMsp: 'Org2MSP',
      grantedInPerson: true,
    });
    expect(await org2.evaluate('consent:ReadGrant', ['grant-none-0001'])).toBe('null');

    const check = (type: string, purpose = '', grantee = 'grantee-bbbb') =>
      org2
        .evaluate('consent:CheckGrant', ['grant-aaaa-0001', grantee, type, '2026-03-01T00:00:00Z', purpose])
        .then((text) => JSON.parse(text) as { allowed: boolean });
    expect(await check('Condition')).toEqual({ allowed: true });
    expect(await check('Condition', 'HRESCH')).toEqual({ allowed: true });
    expect(await check('Condition', 'HPAYMT')).toEqual({ allowed: false });
    expect(await check('Condition', '', 'grantee-other')).toEqual({ allowed: false });

    const revoked = JSON.parse(
      (await org1.submit('consent:RevokeAccess', ['grant-aaaa-0001'])).result,
    ) as LedgerGrant;
    expect(revoked).toMatchObject({ status: 'revoked', homeMsp: 'Org1MSP' });
    expect(revoked.revokedAt).toMatch(/^2\d{3}-/);
    expect(await check('Condition')).toEqual({ allowed: false });
    // Revoking twice is a no-op; a grant that does not exist cannot be revoked.
    expect(
      (JSON.parse((await org1.submit('consent:RevokeAccess', ['grant-aaaa-0001'])).result) as LedgerGrant)
        .revokedTxId,
    ).toBe(revoked.revokedTxId);
    await expect(org1.submit('consent:RevokeAccess', ['grant-none-0001'])).rejects.toThrow(/no grant/);
  });

  it('chaincode: access records carry the creator as custodian, are written once and listed in pages', async () => {
    const record = (recordId: string, extra: object = {}) => ({
      recordId,
      patientTag: tag(recordId),
      sealed: Buffer.from(`sealed ${recordId}`).toString('base64url'),
      ...extra,
    });
    const summary = JSON.parse(
      (
        await org2.submit('consent:RecordAccess', [
          JSON.stringify([
            record('rec-page-0001'),
            record('rec-page-0002', { accessorMsp: 'Org1MSP', purpose: 'HRESCH', grantTag: tag('g') }),
            record('rec-page-0003'),
          ]),
        ])
      ).result,
    ) as { count: number; custodianMsp: string };
    expect(summary).toMatchObject({ count: 3, custodianMsp: 'Org2MSP' });
    await expect(
      org1.submit('consent:RecordAccess', [JSON.stringify([record('rec-page-0001')])]),
    ).rejects.toThrow(/already recorded/);
    await expect(
      org1.submit('consent:RecordAccess', [
        JSON.stringify([record('rec-page-0009', { custodianMsp: 'Org2MSP' })]),
      ]),
    ).rejects.toThrow(/custodianMsp: recorded by the chaincode/);
    const first = JSON.parse(await org1.evaluate('consent:ListAccess', ['', '2'])) as AccessPage;
    const second = JSON.parse(await org1.evaluate('consent:ListAccess', [first.next!, '2'])) as AccessPage;
    const listed = [...first.records, ...second.records].filter((r) => r.recordId.startsWith('rec-page-'));
    expect(listed.map((r) => [r.recordId, r.custodianMsp, r.accessorMsp, r.purpose, r.grantTag])).toEqual([
      ['rec-page-0001', 'Org2MSP', 'Org2MSP', 'TREAT', undefined],
      ['rec-page-0002', 'Org2MSP', 'Org1MSP', 'HRESCH', tag('g')],
      ['rec-page-0003', 'Org2MSP', 'Org2MSP', 'TREAT', undefined],
    ]);
    expect(second.next).toBeUndefined();
  });

  it('chaincode: refuses malformed arguments and non-pseudonyms', async () => {
    await expect(org1.submit('consent:GrantAccess', ['{not json'])).rejects.toThrow(/JSON/);
    await expect(
      org1.submit('consent:GrantAccess', [
        JSON.stringify({ grantId: 'Patient/1', patientTag: tag('a'), grantee: 'grantee-bbbb' }),
      ]),
    ).rejects.toThrow(/grantId/);
    await expect(
      org1.submit('consent:GrantAccess', [
        JSON.stringify({ grantId: 'grant-bad-0001', patientTag: 'not-hex', grantee: 'grantee-bbbb' }),
      ]),
    ).rejects.toThrow(/patientTag/);
    await expect(
      org1.submit('consent:GrantAccess', [
        JSON.stringify({
          grantId: 'grant-bad-0001',
          patientTag: tag('a'),
          grantee: 'grantee-bbbb',
          purpose: [],
        }),
      ]),
    ).rejects.toThrow(/purpose/);
    await expect(org1.submit('consent:RecordAccess', ['[]'])).rejects.toThrow(/records/);
    await expect(org1.evaluate('consent:ListAccess', ['', '0'])).rejects.toThrow(/limit/);
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
      networkIds,
      checkpointFile: join(dir, 'checkpoints', 'consent.json'),
      now: () => clock,
    });
    expect(fresh.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    expect(fresh.allows('Patient/p1', ['Organization/b'], 'Observation')).toBe(false);
    const noCheckpoint = await ConsentService.open({
      ledger: org1,
      pseudonyms,
      networkIds,
      now: () => clock,
    });
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

  it("service: a grant to another member's participant never opens a local read, even under a local pseudonym", async () => {
    // The remote participant's pseudonym is, by chance or on purpose, the one this service gave Practitioner/d.
    const localDr = pseudonyms.existingPseudonymOf('Practitioner/d')!;
    const remote = `Org2MSP|${localDr}`;
    const consent = privacyConsent('Patient/p3', {
      type: 'permit',
      actor: [networkActor(remote), actor('Organization/b')],
      class: [{ code: 'Observation' }],
      provision: [
        {
          type: 'deny',
          actor: [networkActor(remote)],
          class: [{ code: 'Observation' }],
          period: { start: '2026-06-01', end: '2026-06-30' },
        },
      ],
    });
    await service
      .prepareConsent('Consent/c3', consentToGrants(consent), { pseudonym: actorPs, inPerson: false })
      .commit();

    // On the ledger: the pseudonym as given, the grantee's MSP, the home's MSP.
    const onLedger = await service.listGrants('Patient/p3');
    const remoteGrant = onLedger.find((g) => g.granteeMsp === 'Org2MSP');
    expect(remoteGrant).toMatchObject({
      grantee: localDr,
      granteeMsp: 'Org2MSP',
      homeMsp: 'Org1MSP',
      status: 'active',
    });
    expect(remoteGrant?.deny).toEqual([
      {
        classes: ['Observation'],
        period: { start: '2026-06-01T00:00:00.000Z', end: '2026-07-01T00:00:00.000Z' },
      },
    ]);
    // The local grant of the same Consent is not narrowed by the remote participant's deny.
    expect(onLedger.find((g) => g.granteeMsp === 'Org1MSP')?.deny).toEqual([]);

    // No local read for the participant whose local pseudonym it is: not a decision, not a search scope.
    expect(service.allows('Patient/p3', ['Practitioner/d'], 'Observation')).toBe(false);
    expect(service.patientsAllowing(['Practitioner/d'], 'Observation')).not.toContain('Patient/p3');
    expect(service.allows('Patient/p3', ['Organization/b'], 'Observation')).toBe(true);
    expect(service.patientsAllowing(['Organization/b'], 'Observation')).toContain('Patient/p3');

    // For the home's locate: the records naming (pseudonym, MSP); none for the same pseudonym at another MSP.
    expect(service.networkGrantsOf('Patient/p3', localDr, 'Org2MSP')).toEqual([remoteGrant]);
    expect(service.networkGrantsOf('Patient/p3', localDr, 'Org3MSP')).toEqual([]);
    expect(service.networkGrantsOf('Patient/p1', localDr, 'Org2MSP')).toEqual([]);
    expect(service.networkGrantsOf('Patient/none', localDr, 'Org2MSP')).toEqual([]);

    // Rebuilt from the chain's events after a restart (no checkpoint): the same, still no local read.
    const rebuilt = await ConsentService.open({ ledger: org1, pseudonyms, networkIds, now: () => clock });
    try {
      expect(rebuilt.networkGrantsOf('Patient/p3', localDr, 'Org2MSP')).toEqual([remoteGrant]);
      expect(rebuilt.allows('Patient/p3', ['Practitioner/d'], 'Observation')).toBe(false);
      expect(rebuilt.patientsAllowing(['Practitioner/d'], 'Observation')).not.toContain('Patient/p3');
    } finally {
      await rebuilt.close();
    }

    // Withdrawn: reported revoked from the Consent write on, before the ledger has the revocation.
    const withdrawing = service.prepareConsent(
      'Consent/c3',
      consentToGrants(
        privacyConsent('Patient/p3', {
          type: 'permit',
          actor: [actor('Organization/b')],
          class: [{ code: 'Observation' }],
        }),
      ),
      { pseudonym: actorPs, inPerson: false },
    );
    expect(service.networkGrantsOf('Patient/p3', localDr, 'Org2MSP').map((g) => g.status)).toEqual([
      'revoked',
    ]);
    expect(service.allows('Patient/p3', ['Organization/b'], 'Observation')).toBe(true); // unchanged grant
    await withdrawing.commit();
    const [revoked] = service.networkGrantsOf('Patient/p3', localDr, 'Org2MSP');
    expect(revoked).toMatchObject({ status: 'revoked', grantId: remoteGrant!.grantId });
    expect(revoked.revokedTxId).toBeDefined();
  });

  it("service: a handle naming this member's own MSP opens network requests only; local reads follow references", async () => {
    // The pseudonym as given, even when it is the one this service gave a reference it can read for.
    const localDr = pseudonyms.existingPseudonymOf('Practitioner/d')!;
    await service
      .prepareConsent(
        'Consent/c4',
        consentToGrants(
          privacyConsent('Patient/p4', { type: 'permit', actor: [networkActor(`Org1MSP|${localDr}`)] }),
        ),
        { pseudonym: actorPs, inPerson: false },
      )
      .commit();
    expect(service.allows('Patient/p4', ['Practitioner/d'], 'Observation')).toBe(false);
    expect(service.patientsAllowing(['Practitioner/d'], 'Observation')).not.toContain('Patient/p4');
    const [grant] = service.networkGrantsOf('Patient/p4', localDr, 'Org1MSP');
    expect(grant).toMatchObject({
      grantee: localDr,
      granteeMsp: 'Org1MSP',
      homeMsp: 'Org1MSP',
      status: 'active',
    });
    expect(service.networkGrantsOf('Patient/p4', localDr, 'Org2MSP')).toEqual([]);
    // A grant by reference is not a network participant's.
    expect(service.networkGrantsOf('Patient/p1', localDr, 'Org1MSP')).toEqual([]);
  });

  it('service: grants by handle keep their key across a restart from the checkpoint', async () => {
    const localDr = pseudonyms.existingPseudonymOf('Practitioner/d')!;
    const before = service.networkGrantsOf('Patient/p4', localDr, 'Org1MSP');
    expect(before).toHaveLength(1);
    await service.close();
    service = await ConsentService.open({
      ledger: org1,
      pseudonyms,
      networkIds,
      checkpointFile: join(dir, 'checkpoints', 'consent.json'),
      now: () => clock,
    });
    expect(service.networkGrantsOf('Patient/p4', localDr, 'Org1MSP')).toEqual(before);
    expect(service.networkGrantsOf('Patient/p3', localDr, 'Org2MSP').map((g) => g.status)).toEqual([
      'revoked',
    ]);
    expect(service.allows('Patient/p4', ['Practitioner/d'], 'Observation')).toBe(false);
    expect(service.allows('Patient/p3', ['Organization/b'], 'Observation')).toBe(true);
  });
});
