/**
 * What a member reading the whole ledger learns about patients (docs/threat-model.md, "What a member reading the
 * ledger learns"): the consent records are read raw from the embedded chain's file (every key and value, every
 * transaction as committed), after two patients each made two grants and several accesses happened. No key or
 * value links two records to one patient, and none is a stable per-patient value. Also: another member cannot
 * write or change a grant for this home's patient, even knowing the patient's network id.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccessRecord, GrantRecord } from 'hie-ledger-chaincode';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { ConsentService } from '../../src/consent/consent-service.js';
import { consentToGrants } from '../../src/consent/consent-resource.js';
import { grantTag, NetworkIds, newRecordId, patientTag } from '../../src/consent/network-ids.js';
import { actor, privacyConsent } from '../access/app-harness.js';
import { TestPseudonyms } from '../ledger/helpers.js';

type LedgerRecord = GrantRecord | AccessRecord;
interface RawEntry {
  key: string;
  value: string;
  record: LedgerRecord;
}

/** Written by the transaction and shown by its block anyway: a batch's records share them by construction. */
const TRANSACTION_FIELDS = new Set(['txId', 'time', 'grantedTxId', 'grantedAt', 'revokedTxId', 'revokedAt']);

/** Every leaf value of a record (arrays and objects walked), as `field=value` so equal values of one field meet. */
function leaves(record: LedgerRecord): Set<string> {
  const out = new Set<string>();
  const walk = (value: unknown, field: string) => {
    if (Array.isArray(value)) value.forEach((item) => walk(item, field));
    else if (value !== null && typeof value === 'object')
      for (const [name, inner] of Object.entries(value)) walk(inner, `${field}.${name}`);
    else out.add(`${field}=${String(value)}`);
  };
  for (const [name, value] of Object.entries(record)) if (!TRANSACTION_FIELDS.has(name)) walk(value, name);
  return out;
}

describe('the consent records on the ledger, read raw by another member', () => {
  let dir: string;
  let chainFile: string;
  let home: Ledger;
  let other: Ledger;
  let release: () => Promise<void>;
  let service: ConsentService;
  const pseudonyms = new TestPseudonyms();
  const networkIds = new NetworkIds();
  const patients = ['Patient/p1', 'Patient/p2'];
  const grantees = ['Practitioner/d', 'Organization/b'];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hie-ledger-privacy-'));
    chainFile = join(dir, 'chain.sqlite');
    const caHome = await EmbeddedCa.open(join(dir, 'ca-home'), { mspId: 'HomeMSP' });
    const caOther = await EmbeddedCa.open(join(dir, 'ca-other'), { mspId: 'OtherMSP' });
    const acquired = await acquireChain({
      file: chainFile,
      msps: [
        {
          mspId: 'HomeMSP',
          rootCertificates: [caHome.certificate],
          isRevoked: (pem) => caHome.isRevoked(pem),
        },
        {
          mspId: 'OtherMSP',
          rootCertificates: [caOther.certificate],
          isRevoked: (pem) => caOther.isRevoked(pem),
        },
      ],
    });
    release = acquired.release;
    home = acquired.chain.connect(await serviceIdentity(caHome, join(dir, 'svc-home')));
    other = acquired.chain.connect(await serviceIdentity(caOther, join(dir, 'svc-other')));
    service = await ConsentService.open({ ledger: home, pseudonyms, networkIds });

    // Each patient grants the same two grantees (one Consent each), the patient acting for themself.
    for (const [index, patient] of patients.entries()) {
      const consent = privacyConsent(patient, {
        type: 'permit',
        actor: grantees.map((grantee) => actor(grantee)),
        class: [{ code: 'Observation' }],
      });
      await service
        .prepareConsent(`Consent/c${index + 1}`, consentToGrants(consent), {
          pseudonym: pseudonyms.pseudonymOf(`Practitioner/self-${index}`),
          inPerson: false,
        })
        .commit();
    }
    // Several accesses of each, in two batches, and one batch of the first patient alone.
    for (let round = 0; round < 2; round++) {
      for (const patient of patients)
        for (const grantee of grantees)
          service.recordAccess({
            patient,
            accessor: pseudonyms.pseudonymOf(grantee),
            interaction: 'read',
            resourceType: 'Observation',
            outcome: 'allowed',
            at: `2026-03-0${round + 1}T10:00:00.000Z`,
          });
      await service.flushAccess();
    }
    service.recordAccess({
      patient: 'Patient/p1',
      accessor: pseudonyms.pseudonymOf('Practitioner/d'),
      interaction: 'search-type',
      resourceType: 'Observation',
      outcome: 'refused',
      at: '2026-03-03T10:00:00.000Z',
    });
    await service.flushAccess();
  });
  afterAll(async () => {
    await service?.close();
    await release?.();
    networkIds.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Every state entry of the consent contract, straight from the chain's file. */
  function rawConsentState(): RawEntry[] {
    const db = new Database(chainFile, { readonly: true });
    try {
      const rows = db.prepare('SELECT key, value FROM state').all() as { key: Buffer; value: Buffer }[];
      return rows
        .map((row) => ({ key: row.key.toString('utf8'), value: row.value.toString('utf8') }))
        .filter(({ key }) => key.startsWith('grant/') || key.startsWith('access/'))
        .map((entry) => ({ ...entry, record: JSON.parse(entry.value) as LedgerRecord }));
    } finally {
      db.close();
    }
  }

  /** Everything the chain's file holds: state, history and every transaction envelope, as bytes. */
  function rawChainBytes(): Buffer[] {
    const db = new Database(chainFile, { readonly: true });
    try {
      const out: Buffer[] = [];
      for (const row of db.prepare('SELECT key, value FROM state').all() as { key: Buffer; value: Buffer }[])
        out.push(row.key, row.value);
      for (const row of db.prepare('SELECT envelope FROM transactions').all() as { envelope: Buffer }[])
        out.push(row.envelope);
      return out;
    } finally {
      db.close();
    }
  }

  /** Whose records these are, as only the home can tell (recomputing the tags with each patient's npid). */
  function recordsOf(entries: RawEntry[], patient: string): RawEntry[] {
    const npid = networkIds.existingNpidOf(patient)!;
    return entries.filter(({ record }) => {
      const id = record.docType === 'grant' ? record.grantId : record.recordId;
      return record.patientTag === patientTag(npid, record.docType, id);
    });
  }

  it('no key or value links two records of one patient, or carries a stable per-patient value', () => {
    const entries = rawConsentState();
    const [first, second] = patients.map((patient) => recordsOf(entries, patient));
    // Two grants and five access records of the first patient, two and four of the second: all of them found.
    expect(first.map((e) => e.record.docType).sort()).toEqual([
      'access',
      'access',
      'access',
      'access',
      'access',
      'grant',
      'grant',
    ]);
    expect(second).toHaveLength(6);
    expect(first.length + second.length).toBe(entries.length);

    // Keys, ids, tags and sealed details: each one of a kind on the whole ledger.
    const unique = (values: string[]) => expect(new Set(values).size).toBe(values.length);
    unique(entries.map((e) => e.key));
    unique(entries.map((e) => e.record.patientTag));
    unique(entries.map((e) => (e.record.docType === 'grant' ? e.record.grantId : e.record.recordId)));
    unique(entries.flatMap((e) => (e.record.docType === 'access' ? [e.record.sealed] : [])));

    // A value two records of one patient share is one records of the other patient have too: it does not single
    // out a patient (MSPs, the grantees, classes, purpose, status). Checked both ways.
    for (const [mine, theirs] of [
      [first, second],
      [second, first],
    ]) {
      const theirValues = new Set(theirs.flatMap((e) => [...leaves(e.record)]));
      for (let i = 0; i < mine.length; i++)
        for (let j = i + 1; j < mine.length; j++) {
          const a = leaves(mine[i].record);
          const shared = [...leaves(mine[j].record)].filter((value) => a.has(value));
          expect(shared.filter((value) => !theirValues.has(value))).toEqual([]);
        }
    }

    // No stable per-patient value anywhere in the chain's file (state, transactions): not the reference, the
    // pseudonym, the npid, nor their hashes, in any of the encodings a record could carry them.
    for (const patient of patients) {
      const pseudonym = pseudonyms.existingPseudonymOf(patient)!;
      const npid = networkIds.existingNpidOf(patient)!;
      const npidBytes = Buffer.from(npid, 'base64url');
      const stable = [
        patient,
        pseudonym,
        npid,
        npidBytes.toString('hex'),
        npidBytes.toString('base64'),
        createHash('sha256').update(npid).digest('hex'),
        createHash('sha256').update(npidBytes).digest('hex'),
        createHash('sha256').update(pseudonym).digest('hex'),
        createHash('sha256').update(patient).digest('hex'),
      ];
      for (const bytes of rawChainBytes())
        for (const value of stable) expect(bytes.includes(value), `${value} on the ledger`).toBe(false);
      expect(npidBytes).toHaveLength(32);
    }
    // Nor the pseudonym of who granted (the patient's own participant).
    for (const bytes of rawChainBytes())
      expect(bytes.includes(pseudonyms.existingPseudonymOf('Practitioner/self-0')!)).toBe(false);
  });

  it('the home reads its patient back: grants through its index, accesses by tag', async () => {
    const grants = await service.listGrants('Patient/p1');
    expect(grants.map((g) => [g.status, g.homeMsp, g.purpose, g.classes])).toEqual([
      ['active', 'HomeMSP', ['TREAT'], ['Observation']],
      ['active', 'HomeMSP', ['TREAT'], ['Observation']],
    ]);
    const accesses = await service.listAccess('Patient/p1');
    expect(accesses.map((a) => [a.at, a.outcome, a.mspId])).toEqual([
      ['2026-03-01T10:00:00.000Z', 'allowed', 'HomeMSP'],
      ['2026-03-01T10:00:00.000Z', 'allowed', 'HomeMSP'],
      ['2026-03-02T10:00:00.000Z', 'allowed', 'HomeMSP'],
      ['2026-03-02T10:00:00.000Z', 'allowed', 'HomeMSP'],
      ['2026-03-03T10:00:00.000Z', 'refused', 'HomeMSP'],
    ]);
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
  });

  it("another member cannot write, change or revoke a grant of this home's patient", async () => {
    const p1 = 'Patient/p1';
    const npid = service.networkIdOf(p1)!; // as a member the patient told it to would know it
    const [grant] = recordsOf(rawConsentState(), p1).filter((e) => e.record.docType === 'grant');
    const existing = grant.record as GrantRecord;

    // Change or revoke the home's grant: refused by the chaincode.
    await expect(
      other.submit('consent:GrantAccess', [
        JSON.stringify({
          grantId: existing.grantId,
          patientTag: existing.patientTag,
          grantee: existing.grantee,
          classes: [],
        }),
      ]),
    ).rejects.toThrow(/belongs to its home service's organisation/);
    await expect(other.submit('consent:RevokeAccess', [existing.grantId])).rejects.toThrow(
      /belongs to its home service's organisation/,
    );
    // Claim to be the home: the chaincode records the creator, never an argument.
    const claimed = newRecordId();
    await expect(
      other.submit('consent:GrantAccess', [
        JSON.stringify({
          grantId: claimed,
          patientTag: patientTag(npid, 'grant', claimed),
          grantee: pseudonyms.pseudonymOf('Practitioner/x'),
          homeMsp: 'HomeMSP',
        }),
      ]),
    ).rejects.toThrow(/homeMsp: recorded by the chaincode/);
    expect(
      JSON.parse(await home.evaluate('consent:ReadGrant', [existing.grantId])) as GrantRecord,
    ).toMatchObject({ status: 'active', classes: ['Observation'], homeMsp: 'HomeMSP' });

    // A grant of its own for the patient (a correct tag): on the ledger as OtherMSP's, and it opens nothing at the
    // home, even under a grant id of the home's index that the home has not written yet.
    const pending = networkIds.grantIdOf({
      patientReference: p1,
      patient: pseudonyms.pseudonymOf(p1),
      grantee: pseudonyms.pseudonymOf('Practitioner/x'),
      consent: pseudonyms.pseudonymOf('Consent/c9'),
    });
    for (const grantId of [newRecordId(), pending]) {
      const written = JSON.parse(
        (
          await other.submit('consent:GrantAccess', [
            JSON.stringify({
              grantId,
              patientTag: patientTag(npid, 'grant', grantId),
              grantee: pseudonyms.pseudonymOf('Practitioner/x'),
            }),
          ])
        ).result,
      ) as GrantRecord;
      expect(written.homeMsp).toBe('OtherMSP');
    }
    // The home's cache has followed the chain up to these writes (their events applied, or ignored).
    for (let i = 0; i < 500 && (await service.lag()).behind > 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    expect((await service.lag()).behind).toBe(0);
    expect(service.allows(p1, ['Practitioner/x'], 'Observation')).toBe(false);
  });

  it('an access opened by a grant names it by a grant tag only the npid holder can check', async () => {
    const npid = service.networkIdOf('Patient/p2')!;
    const grantId = (await service.listGrants('Patient/p2'))[0].grantId;
    for (let i = 0; i < 2; i++)
      service.recordAccess({
        patient: 'Patient/p2',
        accessor: pseudonyms.pseudonymOf('Organization/b'),
        interaction: 'read',
        outcome: 'allowed',
        at: '2026-03-04T10:00:00.000Z',
        grantId,
        accessorMsp: 'OtherMSP',
        purpose: 'TREAT',
      });
    await service.flushAccess();
    const tagged = recordsOf(rawConsentState(), 'Patient/p2')
      .map((e) => e.record)
      .filter((r): r is AccessRecord => r.docType === 'access' && r.grantTag !== undefined);
    expect(tagged).toHaveLength(2);
    for (const record of tagged) {
      expect(record.grantTag).toBe(grantTag(npid, record.recordId, grantId));
      expect(record).toMatchObject({ custodianMsp: 'HomeMSP', accessorMsp: 'OtherMSP', purpose: 'TREAT' });
      expect(JSON.stringify(record)).not.toContain(grantId);
    }
    expect(tagged[0].grantTag).not.toBe(tagged[1].grantTag);
  });
});
