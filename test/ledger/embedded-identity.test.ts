/** The embedded CA and the embedded ledger's first start (service identity enrolment, file modes). */
import { statSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as x509 from '@peculiar/x509';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChainIntegrityError, openEmbeddedLedger } from '../../src/ledger/embedded/index.js';
import {
  EmbeddedCa,
  FABRIC_ATTRIBUTES_OID,
  certificateAttributes,
} from '../../src/ledger/identity/embedded-ca.js';
import { hex, tempDir } from './helpers.js';

const require = createRequire(import.meta.url);
const { ClientIdentity } = require('fabric-shim') as {
  ClientIdentity: new (stub: object) => {
    getID(): string;
    getMSPID(): string;
    getAttributeValue(name: string): string | null;
    assertAttributeValue(name: string, value: string): boolean;
  };
};

let dir: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
});

afterEach(async () => {
  await cleanup();
});

const mode = (file: string): number => statSync(file).mode & 0o777;

/** What fabric-shim's ClientIdentity (the chaincode's ctx.clientIdentity on a peer) reads from a certificate. */
function shimIdentity(mspId: string, certificate: string) {
  return new ClientIdentity({
    getChannelID: () => 'hie',
    getTxID: () => 'tx',
    getCreator: () => ({ mspid: mspId, idBytes: Buffer.from(certificate) }),
  });
}

describe('EmbeddedCa', () => {
  it('issues ECDSA P-384 certificates with Fabric CA attributes that fabric-shim reads', async () => {
    const ca = await EmbeddedCa.open(path.join(dir, 'ca'), { mspId: 'Org1MSP' });
    const enrollment = await ca.enroll({
      enrollmentId: 'pseudo-7f3a',
      attrs: { 'hie.role': 'clinician', 'hie.id': 'pseudo-7f3a' },
    });
    const certificate = new x509.X509Certificate(enrollment.certificate);
    expect((certificate.publicKey.algorithm as { namedCurve: string }).namedCurve).toBe('P-384');
    expect(Buffer.from(certificate.getExtension(FABRIC_ATTRIBUTES_OID)!.value).toString()).toBe(
      '{"attrs":{"hie.role":"clinician","hie.id":"pseudo-7f3a"}}',
    );
    expect(certificateAttributes(enrollment.certificate)).toEqual({
      'hie.role': 'clinician',
      'hie.id': 'pseudo-7f3a',
    });
    expect(await ca.verify(enrollment.certificate)).toBe(true);

    const identity = shimIdentity('Org1MSP', enrollment.certificate);
    expect(identity.getMSPID()).toBe('Org1MSP');
    expect(identity.getID()).toBe('x509::/CN=pseudo-7f3a/OU=client/O=Org1MSP::/CN=ca.Org1MSP/O=Org1MSP');
    expect(identity.getAttributeValue('hie.role')).toBe('clinician');
    expect(identity.assertAttributeValue('hie.role', 'service')).toBe(false);
    expect(enrollment.privateKey).toContain('-----BEGIN PRIVATE KEY-----');
  });

  it('accepts P-256 keys', async () => {
    const ca = await EmbeddedCa.open(path.join(dir, 'ca'), { mspId: 'Org1MSP' });
    const enrollment = await ca.enroll({
      enrollmentId: 'lab-0001',
      attrs: { 'hie.role': 'lab' },
      keyType: 'P-256',
    });
    const algorithm = new x509.X509Certificate(enrollment.certificate).publicKey.algorithm as {
      namedCurve: string;
    };
    expect(algorithm.namedCurve).toBe('P-256');
    expect(shimIdentity('Org1MSP', enrollment.certificate).getAttributeValue('hie.role')).toBe('lab');
  });

  it('keeps its key with mode 0600 and the same CA across reopen', async () => {
    const caDir = path.join(dir, 'ca');
    const ca = await EmbeddedCa.open(caDir, { mspId: 'Org1MSP' });
    expect(mode(path.join(caDir, 'ca-key.pem'))).toBe(0o600);
    expect(mode(caDir)).toBe(0o700);
    const reopened = await EmbeddedCa.open(caDir, { mspId: 'Org1MSP' });
    expect(reopened.certificate).toBe(ca.certificate);
    const enrollment = await reopened.enroll({ enrollmentId: 'x-0001', attrs: {} });
    expect(await ca.verify(enrollment.certificate)).toBe(true);
  });

  it('revokes certificates persistently and lists them in a signed CRL', async () => {
    const caDir = path.join(dir, 'ca');
    const ca = await EmbeddedCa.open(caDir, { mspId: 'Org1MSP' });
    const kept = await ca.enroll({ enrollmentId: 'kept-0001', attrs: {} });
    const revoked = await ca.enroll({ enrollmentId: 'gone-0001', attrs: {} });
    ca.revoke(revoked.serial);
    expect(ca.isRevoked(revoked.certificate)).toBe(true);
    expect(ca.isRevoked(kept.certificate)).toBe(false);
    expect(await ca.verify(revoked.certificate)).toBe(false);
    expect(mode(path.join(caDir, 'revoked.json'))).toBe(0o600);

    const reopened = await EmbeddedCa.open(caDir, { mspId: 'Org1MSP' });
    expect(reopened.isRevoked(revoked.certificate)).toBe(true);
    const crl = new x509.X509Crl(await reopened.crl());
    expect(crl.entries.map((entry) => entry.serialNumber)).toEqual([revoked.serial]);
    expect(await crl.verify({ publicKey: new x509.X509Certificate(ca.certificate).publicKey })).toBe(true);
  });

  it('does not vouch for certificates of another CA', async () => {
    const ca = await EmbeddedCa.open(path.join(dir, 'ca1'), { mspId: 'Org1MSP' });
    const other = await EmbeddedCa.open(path.join(dir, 'ca2'), { mspId: 'Org1MSP' });
    const foreign = await other.enroll({ enrollmentId: 'svc-0001', attrs: { 'hie.role': 'service' } });
    expect(await ca.verify(foreign.certificate)).toBe(false);
    expect(ca.isRevoked(foreign.certificate)).toBe(false);
  });
});

describe('openEmbeddedLedger', () => {
  it('enrols a pseudonymous service identity at first start (files mode 0600) and reuses it', async () => {
    const ledger = await openEmbeddedLedger({ dataDir: dir, mspId: 'Org1MSP' });
    const anchored = await ledger.submit('anchor:AnchorVersion', [hex('k'), hex('v')]);
    expect(JSON.parse(anchored.result).mspId).toBe('Org1MSP');
    await ledger.close();

    const serviceDir = path.join(dir, 'identity', 'service');
    for (const file of ['cert.pem', 'key.pem', 'enrollment-id'])
      expect(mode(path.join(serviceDir, file))).toBe(0o600);
    expect(mode(path.join(dir, 'identity', 'ca', 'ca-key.pem'))).toBe(0o600);
    const certificate = readFileSync(path.join(serviceDir, 'cert.pem'), 'utf8');
    const enrollmentId = readFileSync(path.join(serviceDir, 'enrollment-id'), 'utf8').trim();
    expect(enrollmentId).toMatch(/^svc-[A-Za-z0-9_-]{12}$/);
    expect(certificateAttributes(certificate)).toEqual({ 'hie.role': 'service', 'hie.id': enrollmentId });
    expect(shimIdentity('Org1MSP', certificate).getID()).toContain(`/CN=${enrollmentId}/`);

    const reopened = await openEmbeddedLedger({ dataDir: dir, mspId: 'Org1MSP' });
    expect(readFileSync(path.join(serviceDir, 'cert.pem'), 'utf8')).toBe(certificate);
    expect(await reopened.height()).toBe(2);
    expect(await reopened.evaluate('anchor:ReadAnchor', [hex('k')])).toBe(anchored.result);
    await reopened.close();
  });

  it('shares one chain between ledgers of the same data directory in one process', async () => {
    const first = await openEmbeddedLedger({ dataDir: dir, mspId: 'Org1MSP' });
    const second = await openEmbeddedLedger({ dataDir: dir, mspId: 'Org1MSP' });
    await first.submit('anchor:AnchorBatch', [hex('root'), '3']);
    expect(await second.height()).toBe(2);
    await first.close();
    // The chain stays open for the remaining user.
    await second.submit('anchor:AnchorBatch', [hex('root 2'), '3']);
    await second.close();
  });

  it('refuses an MSP id that does not match the data directory CA', async () => {
    await (await openEmbeddedLedger({ dataDir: dir, mspId: 'Org1MSP' })).close();
    await expect(openEmbeddedLedger({ dataDir: dir, mspId: 'Org2MSP' })).rejects.toThrow(
      'belongs to Org1MSP, not Org2MSP',
    );
  });

  it('refuses to start on a broken chain, naming the block', async () => {
    const ledger = await openEmbeddedLedger({ dataDir: dir, mspId: 'Org1MSP' });
    await ledger.submit('anchor:AnchorVersion', [hex('k'), hex('v')]);
    await ledger.submit('anchor:AnchorVersion', [hex('k2'), hex('v2')]);
    await ledger.close();
    const db = new Database(path.join(dir, 'ledger', 'chain.sqlite'));
    db.prepare('UPDATE blocks SET data_hash = ? WHERE number = 1').run(Buffer.alloc(32, 1));
    db.close();
    const error = await openEmbeddedLedger({ dataDir: dir, mspId: 'Org1MSP' }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ChainIntegrityError);
    expect((error as ChainIntegrityError).blockNumber).toBe(1);
    expect((error as Error).message).toMatch(/integrity check failed at block 1 .*chain\.sqlite/);
  });
});
