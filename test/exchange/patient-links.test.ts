/**
 * Patient identity across members: a home (Org1) issues a link token for a custodian (Org2); the custodian redeems
 * it and links its local Patient. Three organisations share one embedded chain with the real member directory on
 * it; each has its own link store and service key, and a clock the test moves (no sleeps).
 */
import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { CompactEncrypt, SignJWT } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NetworkIds } from '../../src/consent/network-ids.js';
import {
  demographicsOf,
  jaroWinkler,
  LINK_SCORE_THRESHOLD,
  normaliseName,
  scoreDemographics,
} from '../../src/exchange/demographics.js';
import { MemberDirectory } from '../../src/exchange/member-directory.js';
import { LinkTokens, PatientLinkStore } from '../../src/exchange/patient-links.js';
import { PatientLinkService } from '../../src/exchange/patient-link-service.js';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { FhirError } from '../../src/fhir/outcome.js';
import type { ErrorCode } from '../../src/fhir/error-catalogue.js';
import { expectErrorCode as expectOutcomeCode } from '../support/error-codes.js';
import { makeOrg, openChain, tempDir, type TestOrg } from '../ledger/helpers.js';

const START = Date.UTC(2026, 11, 1, 9, 0, 0);

interface Member {
  org: TestOrg;
  key: KeyObject;
  certificate: string;
  directory: MemberDirectory;
  links: PatientLinkStore;
  tokens: LinkTokens;
  patients: Map<string, FhirResource>;
  service: PatientLinkService;
}

let dir: string;
let cleanup: () => Promise<void>;
let chain: EmbeddedChain;
let now: number;
let home: Member;
let custodian: Member;
let other: Member;
let homeIds: NetworkIds;

async function member(org: TestOrg, withHomeIds?: NetworkIds): Promise<Member> {
  const enrollment = await org.ca.enroll({
    enrollmentId: `exchange-${org.mspId}`,
    attrs: {},
    keyType: 'P-256',
  });
  const directory = new MemberDirectory(chain.connect(org.service));
  await directory.register({
    mspId: org.mspId,
    organization: `Organisation ${org.mspId}`,
    fhirBaseUrl: `https://${org.mspId.toLowerCase()}.example/fhir`,
    serviceCertificate: enrollment.certificate,
  });
  const key = createPrivateKey(enrollment.privateKey);
  const links = new PatientLinkStore(path.join(dir, org.mspId, 'exchange', 'patient-links.sqlite'));
  const tokens = new LinkTokens({
    mspId: org.mspId,
    serviceKey: () => key,
    members: directory,
    spent: links,
    now: () => now,
  });
  const patients = new Map<string, FhirResource>();
  const service = new PatientLinkService({
    mspId: org.mspId,
    store: links,
    tokens,
    readPatient: (id) => Promise.resolve(patients.get(id)),
    home: withHomeIds,
    now: () => now,
  });
  return { org, key, certificate: enrollment.certificate, directory, links, tokens, patients, service };
}

function patient(id: string, extra: Partial<FhirResource> = {}): FhirResource {
  return {
    resourceType: 'Patient',
    id,
    name: [{ use: 'official', family: 'Müller', given: ['Anna', 'Maria'] }],
    birthDate: '1980-04-02',
    gender: 'female',
    address: [{ use: 'home', postalCode: '8001' }],
    ...extra,
  } as FhirResource;
}

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  now = START;
  const orgs = [await makeOrg(dir, 'Org1MSP'), await makeOrg(dir, 'Org2MSP'), await makeOrg(dir, 'Org3MSP')];
  chain = await openChain(dir, orgs);
  homeIds = new NetworkIds();
  home = await member(orgs[0]!, homeIds);
  custodian = await member(orgs[1]!);
  other = await member(orgs[2]!);
  home.patients.set('h1', patient('h1'));
  // The custodian's record of the same person: another id, spelling and postal code format.
  custodian.patients.set(
    'c1',
    patient('c1', {
      name: [{ family: 'MULLER', given: ['anna'] }],
      address: [{ postalCode: ' 8001 ' }],
    }),
  );
});

afterEach(async () => {
  for (const m of [home, custodian, other]) m?.links.close();
  homeIds.close();
  await chain.close();
  await cleanup();
});

/** A FhirError with this code in its OperationOutcome. */
function expectErrorCode(err: unknown, code: ErrorCode): void {
  expect(err).toBeInstanceOf(FhirError);
  expectOutcomeCode((err as FhirError).outcome, code);
}

async function refusal(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('expected a refusal'),
    (err: unknown) => err,
  );
}

/** A token as a home would make it, with claims the test chooses (for the refusals a real home never issues). */
async function craftedToken(options: {
  signWith: KeyObject;
  iss: string;
  aud: string;
  encryptTo: string;
  npid: string;
  exp?: number;
}): Promise<string> {
  const iat = Math.floor(now / 1000);
  const signed = await new SignJWT({ npid: options.npid, dem: demographicsOf(home.patients.get('h1')!) })
    .setProtectedHeader({ alg: 'ES256', typ: 'hie-link+jwt' })
    .setIssuer(options.iss)
    .setAudience(options.aud)
    .setJti(randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(options.exp ?? iat + 600)
    .sign(options.signWith);
  const { X509Certificate } = await import('node:crypto');
  return new CompactEncrypt(new TextEncoder().encode(signed))
    .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', cty: 'JWT' })
    .encrypt(new X509Certificate(options.encryptTo).publicKey);
}

describe('linking a patient across members', () => {
  it('a token issued at the home and redeemed at the custodian stores the link; the token hides npid and names', async () => {
    const { token, expiresAt } = await home.service.issueToken('h1', 'Org2MSP');
    expect(expiresAt).toBe(START + 600_000);
    const npid = homeIds.existingNpidOf('Patient/h1')!;
    expect(npid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(token.split('.')).toHaveLength(5);
    expect(token).not.toContain(npid);
    expect(Buffer.from(token.split('.')[0]!, 'base64url').toString()).not.toMatch(/muller|npid/i);

    now += 60_000;
    const { link, corrected } = await custodian.service.link('c1', token);
    expect(link).toEqual({
      localPatient: 'Patient/c1',
      npid,
      homeMsp: 'Org1MSP',
      linkedAt: new Date(START + 60_000).toISOString(),
    });
    expect(corrected).toBeUndefined();
    expect(await custodian.service.npidOf('Patient/c1')).toBe(npid);
    expect(await custodian.service.homeOf('Patient/c1')).toBe('Org1MSP');
    expect(await custodian.service.localPatientsOf(npid)).toEqual(['Patient/c1']);
    // At the home, the npid is NetworkIds' and the home is itself.
    expect(await home.service.npidOf('Patient/h1')).toBe(npid);
    expect(await home.service.homeOf('Patient/h1')).toBe('Org1MSP');
    expect(await home.service.localPatientsOf(npid)).toEqual(['Patient/h1']);
    // Patients who never linked are not findable.
    expect(await other.service.npidOf('Patient/c1')).toBeUndefined();
    expect(await other.service.localPatientsOf(npid)).toEqual([]);
    // The link table is private to the service's user.
    const file = path.join(dir, 'Org2MSP', 'exchange', 'patient-links.sqlite');
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('the link is durable: a new store over the same file has it, and a spent token stays spent', async () => {
    const { token } = await home.service.issueToken('h1', 'Org2MSP');
    await custodian.service.link('c1', token);
    custodian.links.close();
    custodian = await reopened(custodian);
    expect(await custodian.service.homeOf('Patient/c1')).toBe('Org1MSP');
    expectErrorCode(await refusal(custodian.service.link('c1', token)), 'link-token-invalid');
  });

  it('a token for another custodian is refused: encrypted to another key, or naming another audience', async () => {
    const { token } = await home.service.issueToken('h1', 'Org3MSP');
    const wrongKey = await refusal(custodian.service.link('c1', token));
    expect(String((wrongKey as Error).message)).toMatch(/not issued for this member, or it was altered/);
    expectErrorCode(wrongKey, 'link-token-invalid');

    const npid = homeIds.npidOf('Patient/h1');
    const forOrg3 = await craftedToken({
      signWith: home.key,
      iss: 'Org1MSP',
      aud: 'Org3MSP',
      encryptTo: custodian.certificate,
      npid,
    });
    const wrongAudience = await refusal(custodian.service.link('c1', forOrg3));
    expectErrorCode(wrongAudience, 'link-token-invalid');
    expect((wrongAudience as Error).message).toMatch(/issued for another member/);
    expect(custodian.links.linkOf('Patient/c1')).toBeUndefined();
  });

  it('an expired token is refused', async () => {
    const { token } = await home.service.issueToken('h1', 'Org2MSP');
    now += 600_000 + 6_000; // past exp and the 5 s tolerance
    const expired = await refusal(custodian.service.link('c1', token));
    expectErrorCode(expired, 'link-token-invalid');
    expect((expired as Error).message).toMatch(/expired/);
    expect(custodian.links.linkOf('Patient/c1')).toBeUndefined();
  });

  it('a replayed token is refused, also when its first redemption failed', async () => {
    const { token } = await home.service.issueToken('h1', 'Org2MSP');
    await custodian.service.link('c1', token);
    const replayed = await refusal(custodian.service.link('c1', token));
    expectErrorCode(replayed, 'link-token-invalid');
    expect((replayed as Error).message).toMatch(/already used/);

    custodian.patients.set('c2', patient('c2', { birthDate: '1990-01-01' }));
    const second = await home.service.issueToken('h1', 'Org2MSP');
    expectErrorCode(await refusal(custodian.service.link('c2', second.token)), 'link-demographics-mismatch');
    // A spent token cannot be used to try demographics again.
    expectErrorCode(await refusal(custodian.service.link('c1', second.token)), 'link-token-invalid');
  });

  it('demographics that do not match refuse the link and store nothing', async () => {
    custodian.patients.set('c1', patient('c1', { name: [{ family: 'Meier', given: ['Anna'] }] }));
    const { token } = await home.service.issueToken('h1', 'Org2MSP');
    const mismatch = await refusal(custodian.service.link('c1', token));
    expectErrorCode(mismatch, 'link-demographics-mismatch');
    // Field names only, never the values.
    expect((mismatch as Error).message).not.toMatch(/meier|muller/i);
    expect(custodian.links.linkOf('Patient/c1')).toBeUndefined();
  });

  it('a tampered token, and one signed by a key other than the home directory certificate, are refused', async () => {
    const { token } = await home.service.issueToken('h1', 'Org2MSP');
    const parts = token.split('.');
    const text = Buffer.from(parts[3]!, 'base64url');
    text[10] ^= 0x01;
    parts[3] = text.toString('base64url');
    expectErrorCode(await refusal(custodian.service.link('c1', parts.join('.'))), 'link-token-invalid');

    // Org3 claims to be Org1 (the home): its signature does not verify with Org1's directory certificate.
    const forged = await craftedToken({
      signWith: other.key,
      iss: 'Org1MSP',
      aud: 'Org2MSP',
      encryptTo: custodian.certificate,
      npid: homeIds.npidOf('Patient/h1'),
    });
    const refused = await refusal(custodian.service.link('c1', forged));
    expectErrorCode(refused, 'link-token-invalid');
    expect((refused as Error).message).toMatch(/signature or claims/);
    expectErrorCode(await refusal(custodian.service.link('c1', 'not.a.token')), 'link-token-invalid');
  });

  it('a token from a home whose directory entry was revoked is refused', async () => {
    const { token } = await home.service.issueToken('h1', 'Org2MSP');
    await home.directory.revoke('Org1MSP');
    const refused = await refusal(custodian.service.link('c1', token));
    expect((refused as Error).message).toMatch(/not an active member/);
  });

  it('the home refuses a token for a non-member, for itself, and for a Patient linked to another home', async () => {
    expectErrorCode(await refusal(home.service.issueToken('h1', 'Org9MSP')), 'parameter-invalid');
    expectErrorCode(await refusal(home.service.issueToken('h1', 'Org1MSP')), 'parameter-invalid');
    const { token } = await home.service.issueToken('h1', 'Org2MSP');
    await custodian.service.link('c1', token);
    expectErrorCode(await refusal(custodian.service.issueToken('c1', 'Org3MSP')), 'link-not-home');
  });

  it('the home records each custodian it issued a link token for (the locator): idempotent, durable, refusals not recorded', async () => {
    const npid = homeIds.npidOf('Patient/h1');
    expect(await home.service.custodiansOf(npid)).toEqual([]);
    await home.service.issueToken('h1', 'Org3MSP');
    now += 60_000;
    await home.service.issueToken('h1', 'Org2MSP');
    now += 60_000;
    await home.service.issueToken('h1', 'Org2MSP');
    // Listed whether or not the custodian redeemed the token (the locator may over-list, never under-list).
    expect(await home.service.custodiansOf(npid)).toEqual(['Org2MSP', 'Org3MSP']);
    // Refused tokens record nothing.
    await refusal(home.service.issueToken('h1', 'Org9MSP'));
    await refusal(home.service.issueToken('h1', 'Org1MSP'));
    expect(await home.service.custodiansOf(npid)).toEqual(['Org2MSP', 'Org3MSP']);
    // Another network patient has its own entries; a custodian keeps none.
    expect(await home.service.custodiansOf(homeIds.npidOf('Patient/h2'))).toEqual([]);
    expect(await custodian.service.custodiansOf(npid)).toEqual([]);

    // Survives a restart; the first issue's time stays.
    home.links.close();
    home = await reopened(home);
    expect(await home.service.custodiansOf(npid)).toEqual(['Org2MSP', 'Org3MSP']);
    const db = new Database(path.join(dir, 'Org1MSP', 'exchange', 'patient-links.sqlite'), {
      readonly: true,
    });
    try {
      expect(db.prepare('SELECT custodian_msp, since FROM locator ORDER BY custodian_msp').all()).toEqual([
        { custodian_msp: 'Org2MSP', since: new Date(START + 60_000).toISOString() },
        { custodian_msp: 'Org3MSP', since: new Date(START).toISOString() },
      ]);
    } finally {
      db.close();
    }
  });

  it('unlink ends the link and keeps it in the history; a relink to another network patient records the correction', async () => {
    const first = await home.service.issueToken('h1', 'Org2MSP');
    const { link } = await custodian.service.link('c1', first.token);
    now += 1_000;
    const ended = await custodian.service.unlink('c1');
    expect(ended).toEqual({
      ...link,
      endedAt: new Date(now).toISOString(),
      reason: 'revoked',
      seq: expect.any(Number),
    });
    expect(await custodian.service.npidOf('Patient/c1')).toBeUndefined();
    expectErrorCode(await refusal(custodian.service.unlink('c1')), 'link-not-found');

    // Linked again, then corrected to another network patient (the home had two records of the person).
    const again = await home.service.issueToken('h1', 'Org2MSP');
    await custodian.service.link('c1', again.token);
    home.patients.set('h2', patient('h2'));
    const corrected = await home.service.issueToken('h2', 'Org2MSP');
    now += 1_000;
    const result = await custodian.service.link('c1', corrected.token);
    expect(result.corrected).toMatchObject({ npid: link.npid, reason: 'corrected' });
    expect(result.link.npid).toBe(homeIds.existingNpidOf('Patient/h2'));
    expect(custodian.links.history('Patient/c1').map((h) => h.reason)).toEqual(['revoked', 'corrected']);
  });

  it('a merged Patient: the link follows replaced-by to the surviving Patient, and npidOf follows it too', async () => {
    custodian.patients.set(
      'c-old',
      patient('c-old', { link: [{ other: { reference: 'Patient/c1' }, type: 'replaced-by' }] }),
    );
    const { token } = await home.service.issueToken('h1', 'Org2MSP');
    const { link } = await custodian.service.link('c-old', token);
    expect(link.localPatient).toBe('Patient/c1');
    expect(custodian.links.linkOf('Patient/c-old')).toBeUndefined();
    expect(await custodian.service.npidOf('Patient/c-old')).toBe(link.npid);
    expect(await custodian.service.npidOf('Patient/c1')).toBe(link.npid);
    // Unlinking through the replaced Patient ends the survivor's link.
    expect((await custodian.service.unlink('c-old')).localPatient).toBe('Patient/c1');
  });

  it('at the home, a token asked on a merged Patient carries the surviving Patient’s network id', async () => {
    home.patients.set(
      'h-old',
      patient('h-old', { link: [{ other: { reference: 'Patient/h1' }, type: 'replaced-by' }] }),
    );
    const { token } = await home.service.issueToken('h-old', 'Org2MSP');
    const { link } = await custodian.service.link('c1', token);
    expect(link.npid).toBe(homeIds.existingNpidOf('Patient/h1'));
    expect(homeIds.existingNpidOf('Patient/h-old')).toBeUndefined();
  });

  it('two local Patients linked to one network patient: refused unless marked as the same person', async () => {
    custodian.patients.set('c2', patient('c2'));
    await custodian.service.link('c1', (await home.service.issueToken('h1', 'Org2MSP')).token);
    const conflict = await refusal(
      custodian.service.link('c2', (await home.service.issueToken('h1', 'Org2MSP')).token),
    );
    expectErrorCode(conflict, 'link-conflict');
    expect(custodian.links.linkOf('Patient/c2')).toBeUndefined();

    custodian.patients.set(
      'c2',
      patient('c2', { link: [{ other: { reference: 'Patient/c1' }, type: 'seealso' }] }),
    );
    await custodian.service.link('c2', (await home.service.issueToken('h1', 'Org2MSP')).token);
    const npid = homeIds.existingNpidOf('Patient/h1')!;
    expect(await custodian.service.localPatientsOf(npid)).toEqual(['Patient/c1', 'Patient/c2']);
  });
});

describe('concurrent links', () => {
  it('two local Patients linked at once to one network patient: one is linked, the other refused', async () => {
    custodian.patients.set('c2', patient('c2'));
    const first = await home.service.issueToken('h1', 'Org2MSP');
    const second = await home.service.issueToken('h1', 'Org2MSP');
    const results = await Promise.allSettled([
      custodian.service.link('c1', first.token),
      custodian.service.link('c2', second.token),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
    expectErrorCode(refused.reason, 'link-conflict');
    expect(await custodian.service.localPatientsOf(homeIds.existingNpidOf('Patient/h1')!)).toHaveLength(1);
  });
});

async function reopened(m: Member): Promise<Member> {
  const links = new PatientLinkStore(path.join(dir, m.org.mspId, 'exchange', 'patient-links.sqlite'));
  const tokens = new LinkTokens({
    mspId: m.org.mspId,
    serviceKey: () => m.key,
    members: m.directory,
    spent: links,
    now: () => now,
  });
  const service = new PatientLinkService({
    mspId: m.org.mspId,
    store: links,
    tokens,
    readPatient: (id) => Promise.resolve(m.patients.get(id)),
    now: () => now,
  });
  return { ...m, links, tokens, service };
}

describe('demographic scoring', () => {
  it('normalises names: diacritics, case, punctuation', () => {
    expect(normaliseName('Müller-Lüdenscheidt')).toBe('mullerludenscheidt');
    expect(normaliseName("O'Brien")).toBe('obrien');
  });

  it('Jaro-Winkler has the textbook values', () => {
    expect(jaroWinkler('martha', 'marhta')).toBeCloseTo(0.9611, 4);
    expect(jaroWinkler('dwayne', 'duane')).toBeCloseTo(0.84, 2);
    expect(jaroWinkler('dixon', 'dicksonx')).toBeCloseTo(0.8133, 4);
    expect(jaroWinkler('anna', 'anna')).toBe(1);
    expect(jaroWinkler('', 'anna')).toBe(0);
  });

  it('needs the same full birth date, then the threshold in points', () => {
    const base = { family: 'muller', given: ['anna'], birthDate: '1980-04-02', gender: 'female' };
    expect(scoreDemographics(base, base)).toEqual({
      score: 8,
      matches: true,
      agreed: ['birthDate', 'family', 'given', 'gender'],
    });
    expect(scoreDemographics(base, { ...base, birthDate: '1980-04-03' }).matches).toBe(false);
    expect(scoreDemographics({ ...base, birthDate: '1980' }, { ...base, birthDate: '1980' }).matches).toBe(
      false,
    );
    // A typo in the family name, the given name exact, gender agreeing: 2 + 3 + 1 = 6.
    expect(scoreDemographics(base, { ...base, family: 'mueller' }).score).toBe(LINK_SCORE_THRESHOLD);
    // Same birth date and family name alone: 4 (+1 gender) is not enough.
    expect(scoreDemographics(base, { ...base, given: ['peter'] }).matches).toBe(false);
    // A gender disagreement costs 2: exact names alone (7 - 2 = 5) do not pass.
    expect(scoreDemographics(base, { ...base, gender: 'male' }).matches).toBe(false);
  });
});

describe('wrong links in the link store', () => {
  const disclosure = (localPatient: string, npid: string, at: string) => ({
    localPatient,
    npid,
    at,
    accessorMsp: 'Org2MSP',
    accessor: 'actor-0001',
    purpose: 'TREAT',
    records: 2,
    types: ['Observation', 'Patient'],
    auditEvent: `ae-${at}`,
  });
  const X = 'x'.repeat(43);
  const Y = 'y'.repeat(43);

  it('a relink and an unlink as wrong leave a pending report; an ordinary unlink none; the window is the link’s', () => {
    const store = new PatientLinkStore();
    try {
      store.link({
        localPatient: 'Patient/c1',
        npid: X,
        homeMsp: 'Org1MSP',
        linkedAt: '2026-01-01T00:00:00.000Z',
      });
      store.noteDisclosure(disclosure('Patient/c1', X, '2026-01-02T00:00:00.000Z'));
      // Another Patient's disclosure, and one under another npid: not the link's.
      store.noteDisclosure(disclosure('Patient/c2', X, '2026-01-02T00:00:00.000Z'));
      store.noteDisclosure(disclosure('Patient/c1', Y, '2026-01-02T00:00:00.000Z'));
      const corrected = store.link({
        localPatient: 'Patient/c1',
        npid: Y,
        homeMsp: 'Org3MSP',
        linkedAt: '2026-01-03T00:00:00.000Z',
      })!;
      // After the correction, under Y: not X's link's.
      store.noteDisclosure(disclosure('Patient/c1', X, '2026-01-04T00:00:00.000Z'));
      expect(store.disclosuresUnder(corrected).map((d) => [d.localPatient, d.npid, d.at])).toEqual([
        ['Patient/c1', X, '2026-01-02T00:00:00.000Z'],
      ]);
      expect(store.pendingReports()).toEqual([{ ended: corrected, ownerNpid: Y }]);
      store.reported(corrected.seq, '2026-01-03T00:00:01.000Z');
      expect(store.pendingReports()).toEqual([]);

      const revoked = store.unlink('Patient/c1', '2026-01-05T00:00:00.000Z')!;
      expect(revoked.reason).toBe('revoked');
      expect(store.pendingReports()).toEqual([]);
      store.link({
        localPatient: 'Patient/c1',
        npid: X,
        homeMsp: 'Org1MSP',
        linkedAt: '2026-01-06T00:00:00.000Z',
      });
      const wrong = store.unlink('Patient/c1', '2026-01-07T00:00:00.000Z', true)!;
      expect(wrong.reason).toBe('wrong');
      expect(store.pendingReports()).toEqual([{ ended: wrong }]);
      expect(store.history('Patient/c1').map((h) => h.reason)).toEqual(['corrected', 'revoked', 'wrong']);
    } finally {
      store.close();
    }
  });
});
