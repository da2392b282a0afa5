/**
 * The linking operations over HTTP: two members' apps (buildApp, development mode) over one embedded chain with
 * two MSPs and the member directory on it. The home (Org1) issues `$network-link-token`; the patient carries it to
 * the custodian (Org2), whose `$network-link` links its Patient; `$network-unlink` ends the link.
 */
import { createPrivateKey } from 'node:crypto';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { compactDecrypt, decodeJwt } from 'jose';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemberDirectory } from '../../src/exchange/member-directory.js';
import { serviceKeyFileIn } from '../../src/exchange/patient-links-setup.js';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { bootApp, send, type BootedApp } from '../support/app-harness.js';
import { HOME_ORGANIZATION, startHarness } from '../access/app-harness.js';
import { expectErrorCode } from '../support/error-codes.js';
import { makeOrg, openChain, tempDir, type TestOrg } from '../ledger/helpers.js';

let cleanup: () => Promise<void>;
let chain: EmbeddedChain;
let home: BootedApp;
let custodian: BootedApp;

async function boot(org: TestOrg): Promise<BootedApp> {
  return bootApp(
    {
      logLevel: 'warn',
      auth: 'dev-open',
      mspId: org.mspId,
      validation: 'schema',
      auditCron: 'off',
      linkTokenSeconds: 120,
    },
    { ledger: chain.connect(org.service) },
    `hie-link-${org.mspId}-`,
  );
}

/** Registers the org in the directory and gives its service the key (as `hie-ledger member register` does). */
async function register(org: TestOrg, booted: BootedApp): Promise<void> {
  keys.set(org.mspId, await registerMember(org));
  giveKey(booted.dataDir, keys.get(org.mspId)!);
}

const keys = new Map<string, string>();

function giveKey(dataDir: string, privateKey: string): void {
  const keyFile = serviceKeyFileIn(dataDir);
  mkdirSync(dirname(keyFile), { recursive: true, mode: 0o700 });
  writeFileSync(keyFile, privateKey, { mode: 0o600 });
}

async function registerMember(org: TestOrg): Promise<string> {
  const enrollment = await org.ca.enroll({
    enrollmentId: `exchange-${org.mspId}`,
    attrs: {},
    keyType: 'P-256',
  });
  await new MemberDirectory(chain.connect(org.service)).register({
    mspId: org.mspId,
    organization: `Organisation ${org.mspId}`,
    fhirBaseUrl: `https://${org.mspId.toLowerCase()}.example/fhir`,
    serviceCertificate: enrollment.certificate,
  });
  return enrollment.privateKey;
}

const patient = (id: string, family: string) => ({
  resourceType: 'Patient',
  id,
  name: [{ family, given: ['Anna'] }],
  birthDate: '1980-04-02',
  gender: 'female',
});

const parameters = (name: string, value: string) => ({
  resourceType: 'Parameters',
  parameter: [{ name, valueString: value }],
});

function parameter(body: string, name: string): Record<string, unknown> | undefined {
  return (JSON.parse(body) as { parameter: Record<string, unknown>[] }).parameter.find(
    (p) => p.name === name,
  );
}

let org1: TestOrg;
let org2: TestOrg;

beforeAll(async () => {
  const temp = await tempDir();
  cleanup = temp.cleanup;
  org1 = await makeOrg(temp.dir, 'Org1MSP');
  org2 = await makeOrg(temp.dir, 'Org2MSP');
  chain = await openChain(temp.dir, [org1, org2]);
  home = await boot(org1);
  custodian = await boot(org2);
  await register(org1, home);
  await register(org2, custodian);
  await send(home.app, { method: 'PUT', url: '/fhir/Patient/h1', body: patient('h1', 'Müller') }, 201);
  await send(custodian.app, { method: 'PUT', url: '/fhir/Patient/c1', body: patient('c1', 'Muller') }, 201);
  await send(custodian.app, { method: 'PUT', url: '/fhir/Patient/c2', body: patient('c2', 'Meier') }, 201);
});

afterAll(async () => {
  await home?.stop();
  await custodian?.stop();
  await chain?.close();
  await cleanup?.();
});

const issue = (custodianMsp: string) =>
  send(home.app, {
    method: 'POST',
    url: '/fhir/Patient/h1/$network-link-token',
    body: parameters('custodian', custodianMsp),
  });

describe('the linking operations', () => {
  it('a service without an exchange service key refuses with member-not-registered', async () => {
    const keyFile = serviceKeyFileIn(home.dataDir);
    renameSync(keyFile, `${keyFile}.away`);
    try {
      const res = await issue('Org2MSP');
      expect(res.statusCode).toBe(409);
      expectErrorCode(res.body, 'member-not-registered');
    } finally {
      renameSync(`${keyFile}.away`, keyFile);
    }
  });

  it('links the custodian’s Patient with the home’s token; a replay is refused', async () => {
    const issued = await issue('Org2MSP');
    expect(issued.statusCode, issued.body).toBe(200);
    expect(issued.headers['cache-control']).toBe('no-store');
    const token = parameter(issued.body, 'token')!.valueString as string;
    // --link-token-seconds sets the lifetime: the custodian's key opens the token to show it.
    const { plaintext } = await compactDecrypt(token, createPrivateKey(keys.get('Org2MSP')!));
    const claims = decodeJwt(new TextDecoder().decode(plaintext));
    expect(claims.exp! - claims.iat!).toBe(120);
    expect(parameter(issued.body, 'expires')!.valueInstant).toBe(new Date(claims.exp! * 1000).toISOString());

    const linked = await send(
      custodian.app,
      { method: 'POST', url: '/fhir/Patient/c1/$network-link', body: parameters('token', token) },
      200,
    );
    expect(parameter(linked.body, 'home')).toEqual({ name: 'home', valueString: 'Org1MSP' });
    expect(linked.body).not.toContain((await home.app.patientLinks!.npidOf('Patient/h1'))!);
    const npid = await home.app.patientLinks!.npidOf('Patient/h1');
    expect(npid).toBeDefined();
    expect(await custodian.app.patientLinks!.npidOf('Patient/c1')).toBe(npid);
    expect(await custodian.app.patientLinks!.homeOf('Patient/c1')).toBe('Org1MSP');

    const replayed = await send(custodian.app, {
      method: 'POST',
      url: '/fhir/Patient/c1/$network-link',
      body: parameters('token', token),
    });
    expect(replayed.statusCode).toBe(400);
    expectErrorCode(replayed.body, 'link-token-invalid');
  });

  it('refuses a mismatch (422), a missing token (400), an unknown Patient (404), a GET (405)', async () => {
    const { body } = await issue('Org2MSP');
    const token = parameter(body, 'token')!.valueString as string;
    const mismatch = await send(custodian.app, {
      method: 'POST',
      url: '/fhir/Patient/c2/$network-link',
      body: parameters('token', token),
    });
    expect(mismatch.statusCode).toBe(422);
    expectErrorCode(mismatch.body, 'link-demographics-mismatch');
    const missing = await send(custodian.app, {
      method: 'POST',
      url: '/fhir/Patient/c2/$network-link',
      body: { resourceType: 'Parameters' },
    });
    expectErrorCode(missing.body, 'parameter-missing');
    const inUrl = await send(custodian.app, {
      method: 'POST',
      url: `/fhir/Patient/c2/$network-link?token=${token}`,
    });
    expect(inUrl.statusCode).toBe(400);
    expectErrorCode(inUrl.body, 'parameter-invalid');
    const unknown = await send(custodian.app, {
      method: 'POST',
      url: '/fhir/Patient/nobody/$network-link',
      body: parameters('token', token),
    });
    expect(unknown.statusCode).toBe(404);
    expectErrorCode(unknown.body, 'resource-not-found');
    const get = await send(custodian.app, { method: 'GET', url: '/fhir/Patient/c1/$network-unlink' });
    expect(get.statusCode).toBe(405);
  });

  it('unlinks, and a second unlink finds no link', async () => {
    const token = parameter((await issue('Org2MSP')).body, 'token')!.valueString as string;
    await send(
      custodian.app,
      { method: 'POST', url: '/fhir/Patient/c1/$network-link', body: parameters('token', token) },
      200,
    );
    const unlinked = await send(
      custodian.app,
      { method: 'POST', url: '/fhir/Patient/c1/$network-unlink' },
      200,
    );
    expect(parameter(unlinked.body, 'patient')).toEqual({
      name: 'patient',
      valueReference: { reference: 'Patient/c1' },
    });
    expect(await custodian.app.patientLinks!.npidOf('Patient/c1')).toBeUndefined();
    const again = await send(custodian.app, { method: 'POST', url: '/fhir/Patient/c1/$network-unlink' });
    expect(again.statusCode).toBe(404);
    expectErrorCode(again.body, 'link-not-found');
  });

  it('the CapabilityStatement declares the three operations on Patient', async () => {
    const res = await send(custodian.app, { method: 'GET', url: '/fhir/metadata' }, 200);
    const patientResource = (
      JSON.parse(res.body) as { rest: { resource: { type: string; operation?: { name: string }[] }[] }[] }
    ).rest[0]!.resource.find((r) => r.type === 'Patient')!;
    const names = (patientResource.operation ?? []).map((o) => o.name);
    expect(names).toEqual(expect.arrayContaining(['network-link-token', 'network-link', 'network-unlink']));
  });
});

describe('who may link (SMART): the patient themself and the custodian’s systems', () => {
  it('the patient links their own Patient and unlinks it; another patient is answered as absent; a clinician is refused', async () => {
    const harness = await startHarness({
      ledger: chain.connect(org2.service),
      flags: { mspId: 'Org2MSP', validation: 'schema', auditCron: 'off', logLevel: 'warn' },
    });
    try {
      giveKey(harness.dataDir, keys.get('Org2MSP')!);
      const system = await harness.enrol('ehr', 'system', undefined, HOME_ORGANIZATION);
      for (const id of ['s1', 's2'])
        expect((await harness.request(system, 'PUT', `/Patient/${id}`, patient(id, 'Muller'))).status).toBe(
          201,
        );
      const self = await harness.enrol('anna', 'patient', 'Patient/s1');
      const clinician = await harness.enrol('doc', 'clinician', 'Practitioner/d1', HOME_ORGANIZATION);
      const token = parameter((await issue('Org2MSP')).body, 'token')!.valueString as string;

      const notHers = await harness.request(
        self,
        'POST',
        '/Patient/s2/$network-link',
        parameters('token', token),
      );
      expect(notHers.status).toBe(404);
      expectErrorCode(notHers.text, 'resource-not-found');
      const byClinician = await harness.request(
        clinician,
        'POST',
        '/Patient/s1/$network-link',
        parameters('token', token),
      );
      expect(byClinician.status).toBe(403);
      expectErrorCode(byClinician.text, 'access-denied');

      const own = await harness.request(
        self,
        'POST',
        '/Patient/s1/$network-link',
        parameters('token', token),
      );
      expect(own.status, own.text).toBe(200);
      expect(await harness.app.patientLinks!.homeOf('Patient/s1')).toBe('Org1MSP');
      expect((await harness.request(self, 'POST', '/Patient/s1/$network-unlink')).status).toBe(200);
      expect(await harness.app.patientLinks!.homeOf('Patient/s1')).toBeUndefined();
    } finally {
      await harness.stop();
    }
  });
});
