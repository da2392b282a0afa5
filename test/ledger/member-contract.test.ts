/** The member directory chaincode, run through the embedded ledger with two organisations' real X.509 identities. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { LedgerTransactionError, type Ledger } from '../../src/ledger/ledger.js';
import { creatorOf, makeOrg, openChain, tempDir, type TestOrg } from './helpers.js';
import { rejectionOf } from '../support/rejection.js';

let cleanup: () => Promise<void>;
let dir: string;
let org1: TestOrg;
let org2: TestOrg;
let chain: EmbeddedChain;
let service1: Ledger;
let service2: Ledger;
let cert1: string;
let cert2: string;

const URL1 = 'https://hospital-a.example/fhir';

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  org1 = await makeOrg(dir, 'Org1MSP');
  org2 = await makeOrg(dir, 'Org2MSP');
  chain = await openChain(dir, [org1, org2]);
  service1 = chain.connect(org1.service);
  service2 = chain.connect(org2.service);
  cert1 = (await org1.ca.enroll({ enrollmentId: 'exchange-1', attrs: {}, keyType: 'P-256' })).certificate;
  cert2 = (await org2.ca.enroll({ enrollmentId: 'exchange-2', attrs: {}, keyType: 'P-256' })).certificate;
});

afterEach(async () => {
  await chain.close();
  await cleanup();
});

const refusal = (promise: Promise<unknown>) => rejectionOf(promise, LedgerTransactionError);

const register = (ledger: Ledger, mspId: string, organization: string, url: string, cert: string) =>
  ledger.submit('member:RegisterMember', [mspId, organization, url, cert]);

async function read(mspId: string): Promise<Record<string, unknown> | null> {
  return JSON.parse(await service2.evaluate('member:ReadMember', [mspId])) as Record<string, unknown> | null;
}

describe('member:RegisterMember', () => {
  it('registers the caller’s own entry with the transaction’s time, readable by every member', async () => {
    const submitted = await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1);
    const record = JSON.parse(submitted.result) as Record<string, unknown>;
    expect(record).toEqual({
      docType: 'member',
      mspId: 'Org1MSP',
      organization: 'Hospital A',
      fhirBaseUrl: URL1,
      serviceCertificate: cert1,
      status: 'active',
      registeredAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
      updatedAt: record.registeredAt,
      txId: submitted.transactionId,
    });
    expect(await service2.evaluate('member:ReadMember', ['Org1MSP'])).toBe(submitted.result);
    expect(await read('Org3MSP')).toBeNull();
  });

  it('refuses an entry for another MSP, a non-service identity, and a second registration', async () => {
    expect((await refusal(register(service2, 'Org1MSP', 'Mallory', URL1, cert2))).message).toMatch(
      /only Org1MSP may write its directory entry/,
    );
    const clinician = chain.connect(org1.clinician);
    expect((await refusal(register(clinician, 'Org1MSP', 'Hospital A', URL1, cert1))).message).toMatch(
      /requires a service identity/,
    );
    await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1);
    expect((await refusal(register(service1, 'Org1MSP', 'Hospital A', URL1, cert1))).message).toMatch(
      /already registered; use UpdateMember/,
    );
  });

  it('accepts https, and http only on a loopback host', async () => {
    for (const url of [
      'http://localhost:8081/fhir',
      'http://127.0.0.1:8082/fhir',
      'http://[::1]:8083/fhir',
    ]) {
      await register(service1, 'Org1MSP', 'Hospital A', url, cert1);
      await service1.submit('member:RevokeMember', ['Org1MSP']);
      cert1 = (await org1.ca.enroll({ enrollmentId: `exchange-${url.length}`, attrs: {}, keyType: 'P-256' }))
        .certificate;
    }
    for (const [url, problem] of [
      ['http://hospital-a.example/fhir', /http is allowed only for a loopback host/],
      ['http://10.0.0.5/fhir', /http is allowed only for a loopback host/],
      ['ftp://hospital-a.example/fhir', /scheme must be https/],
      ['hospital-a.example/fhir', /not an absolute URL/],
      ['https://user:pw@hospital-a.example/fhir', /credentials/],
      ['https://hospital-a.example/fhir?x=1', /query or a fragment/],
      ['https://hospital-a.example/fhir/', /must not end with/],
      ['https://HOSPITAL-A.example/fhir', /normal form/],
    ] as const) {
      expect((await refusal(register(service1, 'Org1MSP', 'Hospital A', url, cert1))).message, url).toMatch(
        problem,
      );
    }
  });

  it('refuses a service certificate that is not one P-256 X.509 certificate of the caller’s CA', async () => {
    const p384 = (await org1.ca.enroll({ enrollmentId: 'exchange-p384', attrs: {} })).certificate;
    const garbled = cert1.replace(/\n[A-Za-z0-9+/]{8}/, '\nAAAAAAAA');
    for (const [cert, problem] of [
      ['not a certificate', /one PEM-encoded X.509 certificate/],
      [garbled, /does not parse as an X.509 certificate|not valid|issued|P-256/],
      [p384, /ECDSA P-256/],
      [org1.ca.certificate, /ECDSA P-256|CA certificate/],
      [cert2, /not issued by the CA of Org1MSP/],
      [cert1 + cert1, /one PEM-encoded X.509 certificate/],
    ] as const) {
      expect((await refusal(register(service1, 'Org1MSP', 'Hospital A', URL1, cert))).message).toMatch(
        problem,
      );
    }
    expect(await read('Org1MSP')).toBeNull();
  });

  it('refuses a bad organisation name and MSP id', async () => {
    for (const organization of ['', ' Hospital A', 'Hospital\nA', 'x'.repeat(201)]) {
      expect((await refusal(register(service1, 'Org1MSP', organization, URL1, cert1))).message).toMatch(
        /invalid argument organization/,
      );
    }
    expect((await refusal(register(service1, 'Org1/MSP', 'A', URL1, cert1))).message).toMatch(
      /invalid argument mspId/,
    );
  });
});

describe('member:UpdateMember and member:RevokeMember', () => {
  it('lets the owner update its entry, keeping the registration time', async () => {
    const first = JSON.parse((await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1)).result);
    const newCert = (await org1.ca.enroll({ enrollmentId: 'exchange-1b', attrs: {}, keyType: 'P-256' }))
      .certificate;
    const updated = await service1.submit('member:UpdateMember', [
      'Org1MSP',
      'Hospital A (North)',
      'https://a-north.example/fhir',
      newCert,
    ]);
    expect(await read('Org1MSP')).toEqual({
      ...first,
      organization: 'Hospital A (North)',
      fhirBaseUrl: 'https://a-north.example/fhir',
      serviceCertificate: newCert,
      updatedAt: expect.any(String),
      txId: updated.transactionId,
    });
  });

  it('refuses an update or revocation of another member’s entry, and leaves it unchanged', async () => {
    const registered = await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1);
    expect(
      (
        await refusal(
          service2.submit('member:UpdateMember', [
            'Org1MSP',
            'Hospital A',
            'https://evil.example/fhir',
            cert2,
          ]),
        )
      ).message,
    ).toMatch(/only Org1MSP may write its directory entry \(the caller is of Org2MSP\)/);
    expect((await refusal(service2.submit('member:RevokeMember', ['Org1MSP']))).message).toMatch(
      /only Org1MSP may write/,
    );
    expect(await service2.evaluate('member:ReadMember', ['Org1MSP'])).toBe(registered.result);
    expect(
      (await refusal(service2.submit('member:UpdateMember', ['Org2MSP', 'Lab C', URL1, cert2]))).message,
    ).toMatch(/Org2MSP is not registered/);
  });

  it('keeps a revoked entry readable, refuses updating it, and refuses re-registering its certificate', async () => {
    await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1);
    const revoked = await service1.submit('member:RevokeMember', ['Org1MSP']);
    expect(await read('Org1MSP')).toMatchObject({ status: 'revoked', txId: revoked.transactionId });
    expect((await refusal(service1.submit('member:RevokeMember', ['Org1MSP']))).message).toMatch(
      /already revoked/,
    );
    expect(
      (await refusal(service1.submit('member:UpdateMember', ['Org1MSP', 'Hospital A', URL1, cert1]))).message,
    ).toMatch(/is revoked; register it again/);
    expect((await refusal(register(service1, 'Org1MSP', 'Hospital A', URL1, cert1))).message).toMatch(
      /was revoked; register a new one/,
    );
    const newCert = (await org1.ca.enroll({ enrollmentId: 'exchange-1c', attrs: {}, keyType: 'P-256' }))
      .certificate;
    await register(service1, 'Org1MSP', 'Hospital A', URL1, newCert);
    expect(await read('Org1MSP')).toMatchObject({ status: 'active', serviceCertificate: newCert });
  });
});

describe('member:ListMembers', () => {
  it('lists every entry, active and revoked, in MSP order', async () => {
    expect(JSON.parse(await service1.evaluate('member:ListMembers', []))).toEqual([]);
    await register(service2, 'Org2MSP', 'Lab C', 'https://lab-c.example/fhir', cert2);
    await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1);
    await service2.submit('member:RevokeMember', ['Org2MSP']);
    const listed = JSON.parse(await service1.evaluate('member:ListMembers', [])) as Record<string, unknown>[];
    expect(listed.map((m) => [m.mspId, m.organization, m.status])).toEqual([
      ['Org1MSP', 'Hospital A', 'active'],
      ['Org2MSP', 'Lab C', 'revoked'],
    ]);
  });
});

describe('key-level endorsement of a directory entry', () => {
  it('invalidates a write to another member’s entry endorsed by a single other organisation', async () => {
    await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1);
    const before = await service2.evaluate('member:ReadMember', ['Org1MSP']);
    // Org2's peer endorsing alone: it may produce any read-write set it likes (here: the one Org1's update would
    // produce, pointing Org1's entry at Org2's URL and certificate), but only with Org2's endorsement.
    const forged = await chain.endorse({
      transaction: 'member:UpdateMember',
      args: ['Org1MSP', 'Hospital A', 'https://evil.example/fhir', cert1],
      creator: creatorOf(org1.service),
    });
    expect(forged.response.status).toBe(200);
    const endorsedByOrg2 = { ...forged, creator: creatorOf(org2.service) };
    const status = await chain.commit(endorsedByOrg2);
    expect(status.validationCode).toBe('ENDORSEMENT_POLICY_FAILURE');
    expect(await service2.evaluate('member:ReadMember', ['Org1MSP'])).toBe(before);

    // The owner's own endorsement of the same change is valid.
    const genuine = await chain.endorse({
      transaction: 'member:UpdateMember',
      args: ['Org1MSP', 'Hospital A', 'https://a2.example/fhir', cert1],
      creator: creatorOf(org1.service),
    });
    expect((await chain.commit(genuine)).validationCode).toBe('VALID');
    expect(await read('Org1MSP')).toMatchObject({ fhirBaseUrl: 'https://a2.example/fhir' });
  });

  it('still enforces the policy after the chain is reopened', async () => {
    await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1);
    await chain.close();
    chain = await openChain(dir, [org1, org2]);
    const forged = await chain.endorse({
      transaction: 'member:UpdateMember',
      args: ['Org1MSP', 'Hospital A', 'https://evil.example/fhir', cert1],
      creator: creatorOf(org1.service),
    });
    const status = await chain.commit({ ...forged, creator: creatorOf(org2.service) });
    expect(status.validationCode).toBe('ENDORSEMENT_POLICY_FAILURE');
  });

  it('invalidates a change of the entry’s policy itself by another organisation', async () => {
    await register(service1, 'Org1MSP', 'Hospital A', URL1, cert1);
    const registration = await chain.endorse({
      transaction: 'member:UpdateMember',
      args: ['Org1MSP', 'Hospital A', URL1, cert1],
      creator: creatorOf(org1.service),
    });
    // Only the policy write (reserved companion key), as Org2 would send to hand the key to itself.
    const policyOnly = {
      ...registration,
      creator: creatorOf(org2.service),
      rwset: {
        ...registration.rwset,
        writes: registration.rwset.writes.filter((w) => w.key.startsWith('\x00')),
      },
    };
    expect(policyOnly.rwset.writes).toHaveLength(1);
    expect((await chain.commit(policyOnly)).validationCode).toBe('ENDORSEMENT_POLICY_FAILURE');
  });
});
