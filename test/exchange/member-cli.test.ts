/**
 * `hie-ledger member register|list|revoke` on a data directory with the embedded ledger, and the MemberDirectory
 * client over the same chain: a member is an active entry with a valid service certificate.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliNodeArgs } from '../support/cli-build.js';
import { runCommandInProcess } from '../support/command-in-process.js';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exchangeIdentityDir, registerMemberCommand } from '../../src/commands/member.js';
import { MemberDirectory } from '../../src/exchange/member-directory.js';
import { openEmbeddedLedger } from '../../src/ledger/embedded/index.js';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { certificateAttributes } from '../../src/ledger/identity/embedded-ca.js';
import {
  CHAINCODE,
  CHANNEL,
  HOST_ALIAS,
  MSP_ID,
  startFabricHarness,
  type FabricHarness,
} from '../fabric/support/harness.js';

const cli = (args: string[]) => runCommandInProcess(registerMemberCommand, args);

describe('hie-ledger member', () => {
  let root: string;
  let dataDir: string;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'hie-member-'));
    dataDir = join(root, 'data');
    mkdirSync(dataDir); // the member commands create no data directory (docs/configuration.md)
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('registers this organisation with a P-256 service key issued by its CA, then lists it', async () => {
    const printed = JSON.parse(
      await cli([
        'member',
        'register',
        '--data-dir',
        dataDir,
        '--organization-name',
        'Hospital A',
        '--fhir-base-url',
        'http://127.0.0.1:8081/fhir',
      ]),
    );
    expect(printed).toMatchObject({
      action: 'registered',
      mspId: 'Org1MSP',
      organization: 'Hospital A',
      fhirBaseUrl: 'http://127.0.0.1:8081/fhir',
      status: 'active',
      serviceKey: join(exchangeIdentityDir(dataDir), 'key.pem'),
    });
    const keyPath = join(exchangeIdentityDir(dataDir), 'key.pem');
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(statSync(exchangeIdentityDir(dataDir)).mode & 0o777).toBe(0o700);
    const certificate = readFileSync(join(exchangeIdentityDir(dataDir), 'cert.pem'), 'utf8');
    const x509 = new X509Certificate(certificate);
    expect(x509.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(x509.fingerprint256).toBe(printed.serviceCertificateSha256);
    // Issued by the organisation's own CA, with a role that opens no ledger or FHIR access.
    const ca = await EmbeddedCa.open(join(dataDir, 'identity', 'ca'), { mspId: 'Org1MSP' });
    expect(await ca.verify(certificate)).toBe(true);
    expect(certificateAttributes(certificate)['hie.role']).toBe('exchange-service');

    const listed = JSON.parse(await cli(['member', 'list', '--data-dir', dataDir, '--json']));
    expect(listed).toEqual([
      expect.objectContaining({ mspId: 'Org1MSP', serviceCertificate: certificate, status: 'active' }),
    ]);
    const table = (await cli(['member', 'list', '--data-dir', dataDir])).split('\n');
    expect(table[0]).toMatch(/^MSP ID\s+ORGANIZATION\s+STATUS\s+FHIR BASE URL\s+UPDATED$/);
    expect(table[1]).toMatch(/^Org1MSP\s+Hospital A\s+active\s+http:\/\/127\.0\.0\.1:8081\/fhir\s+\d{4}-/);
  });

  it('updates the entry on a second register, keeping the service key', async () => {
    const key = readFileSync(join(exchangeIdentityDir(dataDir), 'key.pem'), 'utf8');
    const printed = JSON.parse(
      await cli([
        'member',
        'register',
        '--data-dir',
        dataDir,
        '--organization-name',
        'Hospital A (North)',
        '--fhir-base-url',
        'https://a-north.example/fhir',
      ]),
    );
    expect(printed).toMatchObject({ action: 'updated', organization: 'Hospital A (North)' });
    expect(readFileSync(join(exchangeIdentityDir(dataDir), 'key.pem'), 'utf8')).toBe(key);
  });

  it('refuses a URL the directory does not accept and a certificate of another CA, changing nothing', async () => {
    const before = await cli(['member', 'list', '--data-dir', dataDir, '--json']);
    const register = (url: string, ...extra: string[]) =>
      cli([
        'member',
        'register',
        '--data-dir',
        dataDir,
        '--organization-name',
        'Hospital A',
        '--fhir-base-url',
        url,
        ...extra,
      ]);
    await expect(register('http://hospital-a.example/fhir')).rejects.toThrow(
      /http is allowed only for a loopback host/,
    );
    // Another organisation's CA (the chaincode compares issuers; members verify the chain to the MSP root).
    const foreignCa = await EmbeddedCa.open(join(root, 'foreign-ca'), { mspId: 'Org2MSP' });
    const foreign = await foreignCa.enroll({ enrollmentId: 'impostor', attrs: {}, keyType: 'P-256' });
    const certFile = join(root, 'foreign.pem');
    writeFileSync(certFile, foreign.certificate);
    await expect(register('https://a.example/fhir', '--service-cert', certFile)).rejects.toThrow(
      /not issued by the CA of Org1MSP/,
    );
    expect(await cli(['member', 'list', '--data-dir', dataDir, '--json'])).toBe(before);
  });

  it('on Fabric, issues the service certificate only from the MSP’s Fabric CA', async () => {
    await expect(
      cli([
        'member',
        'register',
        '--data-dir',
        dataDir,
        '--ledger',
        'fabric',
        '--fabric-config',
        join(root, 'hospital1.fabric.json'),
        '--organization-name',
        'Hospital 1',
        '--fhir-base-url',
        'https://h1.example/fhir',
      ]),
    ).rejects.toThrow(/with --ledger fabric the service certificate comes from the MSP CA: add --ca fabric/);
  });

  it('takes a given certificate and key, refusing a key that is not the certificate’s', async () => {
    const ca = await EmbeddedCa.open(join(dataDir, 'identity', 'ca'), { mspId: 'Org1MSP' });
    const given = await ca.enroll({ enrollmentId: 'given-service', attrs: {}, keyType: 'P-256' });
    const other = await ca.enroll({ enrollmentId: 'other-service', attrs: {}, keyType: 'P-256' });
    writeFileSync(join(root, 'given.pem'), given.certificate);
    writeFileSync(join(root, 'given-key.pem'), given.privateKey);
    writeFileSync(join(root, 'other-key.pem'), other.privateKey);
    const args = ['member', 'register', '--data-dir', dataDir, '--organization-name', 'Hospital A'];
    await expect(
      cli([
        ...args,
        '--fhir-base-url',
        'https://a.example/fhir',
        '--service-cert',
        join(root, 'given.pem'),
        '--service-key',
        join(root, 'other-key.pem'),
      ]),
    ).rejects.toThrow(/is not the private key of --service-cert/);
    const printed = JSON.parse(
      await cli([
        ...args,
        '--fhir-base-url',
        'https://a.example/fhir',
        '--service-cert',
        join(root, 'given.pem'),
        '--service-key',
        join(root, 'given-key.pem'),
      ]),
    );
    expect(printed.serviceCertificateSha256).toBe(new X509Certificate(given.certificate).fingerprint256);
    expect(readFileSync(join(exchangeIdentityDir(dataDir), 'key.pem'), 'utf8')).toBe(given.privateKey);
  });

  it('revokes the entry: listed as revoked, no longer a member', async () => {
    const printed = JSON.parse(await cli(['member', 'revoke', '--data-dir', dataDir]));
    expect(printed).toMatchObject({ mspId: 'Org1MSP', status: 'revoked' });
    const ledger = await openEmbeddedLedger({ dataDir, mspId: 'Org1MSP' });
    try {
      const directory = new MemberDirectory(ledger);
      expect(await directory.read('Org1MSP')).toMatchObject({ status: 'revoked' });
      expect(await directory.member('Org1MSP')).toBeUndefined();
      expect(await directory.member('Org2MSP')).toBeUndefined();
    } finally {
      await ledger.close();
    }
  });
});

describe('hie-ledger member register on a served embedded ledger (--ledger fabric, `ledger connect`)', () => {
  let fabric: FabricHarness;
  let root: string;

  beforeAll(async () => {
    fabric = await startFabricHarness();
    root = mkdtempSync(join(tmpdir(), 'hie-member-served-'));
  });
  afterAll(async () => {
    await fabric.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('issues the service certificate from the data directory’s CA when that CA issued the ledger identity', async () => {
    // As after `hie-ledger ledger connect`: the data directory's embedded CA is the member's MSP CA (the one the
    // served ledger admits), and the connection's identity is its service identity, issued by it.
    const dataDir = join(root, 'member');
    mkdirSync(join(dataDir, 'identity', 'ca'), { recursive: true, mode: 0o700 });
    for (const file of ['ca-cert.pem', 'ca-key.pem'])
      copyFileSync(join(fabric.dir, 'ca', file), join(dataDir, 'identity', 'ca', file));
    writeFileSync(join(root, 'service-cert.pem'), fabric.service.certificate);
    writeFileSync(join(root, 'service-key.pem'), fabric.service.privateKey, { mode: 0o600 });
    const connection = join(root, 'connection.json');
    writeFileSync(
      connection,
      JSON.stringify({
        peerEndpoint: fabric.server.address,
        hostAlias: HOST_ALIAS,
        tlsRootCertPath: join(fabric.dir, 'tls-ca.pem'),
        mspId: MSP_ID,
        channel: CHANNEL,
        chaincode: CHAINCODE,
        identity: { certPath: 'service-cert.pem', keyPath: 'service-key.pem' },
      }),
    );
    const ledgerFlags = ['--data-dir', dataDir, '--ledger', 'fabric', '--fabric-config', connection];
    const printed = JSON.parse(
      await cli([
        'member',
        'register',
        ...ledgerFlags,
        '--organization-name',
        'Hospital 1',
        '--fhir-base-url',
        'http://127.0.0.1:8081/fhir',
      ]),
    );
    expect(printed).toMatchObject({ action: 'registered', mspId: MSP_ID, status: 'active' });
    const certificate = readFileSync(join(exchangeIdentityDir(dataDir), 'cert.pem'), 'utf8');
    expect(await fabric.ca.verify(certificate)).toBe(true);
    expect(certificateAttributes(certificate)['hie.role']).toBe('exchange-service');
    const listed = JSON.parse(await cli(['member', 'list', ...ledgerFlags, '--json']));
    expect(listed).toEqual([expect.objectContaining({ mspId: MSP_ID, serviceCertificate: certificate })]);
  });

  it('prints only its JSON on stdout: the Fabric adapter’s messages go to stderr', async () => {
    const dataDir = join(root, 'member');
    const listed = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          ...cliNodeArgs(),
          'member',
          'list',
          '--data-dir',
          dataDir,
          '--ledger',
          'fabric',
          '--fabric-config',
          join(root, 'connection.json'),
          '--json',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.once('exit', (code) => resolve({ code, stdout, stderr }));
    });
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ mspId: MSP_ID })]);
    expect(listed.stderr).toMatch(/\[fabric\] connected to the Fabric peer/);
  });

  it('still refuses when the data directory’s CA did not issue the ledger identity', async () => {
    const dataDir = join(root, 'other');
    await EmbeddedCa.open(join(dataDir, 'identity', 'ca'), { mspId: MSP_ID });
    await expect(
      cli([
        'member',
        'register',
        '--data-dir',
        dataDir,
        '--ledger',
        'fabric',
        '--fabric-config',
        join(root, 'connection.json'),
        '--organization-name',
        'Hospital 1',
        '--fhir-base-url',
        'http://127.0.0.1:8081/fhir',
      ]),
    ).rejects.toThrow(/with --ledger fabric the service certificate comes from the MSP CA/);
  });
});

describe('MemberDirectory.member', () => {
  it('is an active entry whose service certificate is valid at the time asked', async () => {
    const root = mkdtempSync(join(tmpdir(), 'hie-member-dir-'));
    const ledger = await openEmbeddedLedger({ dataDir: root, mspId: 'Org1MSP' });
    try {
      const ca = await EmbeddedCa.open(join(root, 'identity', 'ca'), { mspId: 'Org1MSP' });
      const { certificate } = await ca.enroll({ enrollmentId: 'svc-x', attrs: {}, keyType: 'P-256' });
      const directory = new MemberDirectory(ledger);
      const written = await directory.register({
        mspId: 'Org1MSP',
        organization: 'Hospital A',
        fhirBaseUrl: 'https://a.example/fhir',
        serviceCertificate: certificate,
      });
      expect(written.updated).toBe(false);
      const validTo = new Date(new X509Certificate(certificate).validTo);
      expect(await directory.member('Org1MSP')).toEqual(written.entry);
      expect(await directory.member('Org1MSP', new Date(validTo.getTime() + 1000))).toBeUndefined();
    } finally {
      await ledger.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
