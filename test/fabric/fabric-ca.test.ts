/**
 * The Fabric CA identity provider (fabric-ca-client 2.2) against a Fabric CA REST test server: register with
 * hie.* attributes by a restricted registrar, enrol, re-enrol, revoke with a CRL, list; the participant directory
 * on top of it; and a service identity from it accepted by the chaincode.
 */
import {
  createPrivateKey,
  createPublicKey,
  randomBytes,
  sign,
  verify,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ParticipantDirectory } from '../../src/access/participants.js';
import { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { certificateAttributes } from '../../src/ledger/identity/embedded-ca.js';
import { enrollWithSecret, FabricCaIdentityProvider } from '../../src/ledger/identity/fabric-ca.js';
import { FabricCaTestServer } from './support/fabric-ca-server.js';
import { participantCli } from '../support/participants.js';
import { ecdsaTwin, isLowS, toLowS } from '../../src/ledger/identity/ec-keys.js';
import { EmbeddedChainBackend } from '../../src/ledger/embedded/gateway/embedded-backend.js';
import { GatewayServer } from '../../src/ledger/embedded/gateway/gateway-server.js';
import { createTestTls } from './support/tls.js';
import { openFabricLedger } from '../../src/ledger/fabric/fabric-ledger.js';
import { parseFabricConfig } from '../../src/ledger/fabric/config.js';
import { LedgerTransactionError } from '../../src/ledger/ledger.js';

const MSP_ID = 'Hospital1MSP';
let server: FabricCaTestServer;
let provider: FabricCaIdentityProvider;
let dir: string;
let registrarIdentity: { certificate: string; privateKey: string };

function keyMatches(certificate: string, privateKey: string): boolean {
  const data = randomBytes(32);
  return verify(
    'sha256',
    data,
    new X509Certificate(certificate).publicKey,
    sign('sha256', data, createPrivateKey(privateKey)),
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hie-fabric-ca-'));
  server = new FabricCaTestServer({ caName: 'ca-hospital1', mspId: MSP_ID });
  await server.start();
  const connection = {
    url: server.url,
    caName: 'ca-hospital1',
    tlsRootCertificate: server.tls.caCertificate,
  };
  // As network/scripts/enroll.sh: the CA admin registers hie-registrar, which may only hand out hie.* attributes.
  const admin = await enrollWithSecret({ ...connection, enrollmentId: 'admin', secret: 'adminpw' });
  const bootstrap = new FabricCaIdentityProvider({ ...connection, registrar: admin });
  const { secret } = await bootstrap.register({
    enrollmentId: 'hie-registrar',
    attrs: {
      'hf.Registrar.Roles': 'client',
      'hf.Registrar.Attributes': 'hie.*',
      'hf.Revoker': 'true',
      'hf.GenCRL': 'true',
    },
  });
  const registrar = await enrollWithSecret({ ...connection, enrollmentId: 'hie-registrar', secret: secret! });
  registrarIdentity = registrar;
  provider = new FabricCaIdentityProvider({ ...connection, registrar });
});

afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('FabricCaIdentityProvider', () => {
  it('registers with hie.role and hie.id as ecert attributes and enrols with a CSR', async () => {
    const id = `p-${randomBytes(6).toString('hex')}`;
    const { secret } = await provider.register({
      enrollmentId: id,
      attrs: { 'hie.role': 'clinician', 'hie.id': id },
    });
    expect(secret).toBeTruthy();
    const enrollment = await provider.enroll({
      enrollmentId: id,
      secret,
      attrs: { 'hie.role': 'clinician', 'hie.id': id },
    });
    expect(certificateAttributes(enrollment.certificate)).toEqual({ 'hie.role': 'clinician', 'hie.id': id });
    const certificate = new X509Certificate(enrollment.certificate);
    expect(certificate.subject).toContain(`CN=${id}`);
    expect(certificate.subject).toContain('OU=client');
    expect(certificate.verify(createPublicKey(await provider.caCertificate()))).toBe(true);
    expect(enrollment.serial).toBe(certificate.serialNumber.toLowerCase());
    expect(createPrivateKey(enrollment.privateKey).asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    expect(keyMatches(enrollment.certificate, enrollment.privateKey)).toBe(true);
    expect(server.requests).toContain('POST register');
  });

  it('enrols without the secret (the registrar sets a fresh one) and registers on first use', async () => {
    const id = `p-${randomBytes(6).toString('hex')}`;
    const enrollment = await provider.enroll({
      enrollmentId: id,
      attrs: { 'hie.role': 'lab', 'hie.id': id },
      keyType: 'P-256',
    });
    expect(certificateAttributes(enrollment.certificate)).toEqual({ 'hie.role': 'lab', 'hie.id': id });
    const again = await provider.enroll({ enrollmentId: id, attrs: { 'hie.role': 'lab', 'hie.id': id } });
    expect(again.serial).not.toBe(enrollment.serial);
  });

  it('refuses attributes outside the registrar’s hf.Registrar.Attributes', async () => {
    await expect(
      provider.register({
        enrollmentId: `p-${randomBytes(6).toString('hex')}`,
        attrs: { 'hf.Revoker': 'true' },
      }),
    ).rejects.toThrow(/may not register attribute hf\.Revoker/);
  });

  it('re-enrols with a new key and the same attributes', async () => {
    const id = `p-${randomBytes(6).toString('hex')}`;
    const first = await provider.enroll({ enrollmentId: id, attrs: { 'hie.role': 'patient', 'hie.id': id } });
    const renewed = await provider.reenroll({ enrollmentId: id, current: first });
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.privateKey).not.toBe(first.privateKey);
    expect(keyMatches(renewed.certificate, renewed.privateKey)).toBe(true);
    expect(certificateAttributes(renewed.certificate)).toEqual({ 'hie.role': 'patient', 'hie.id': id });
    expect(server.requests).toContain('POST reenroll');
  });

  it('revokes one certificate or the identity, with a CRL listing them, and lists who is revoked', async () => {
    const id = `p-${randomBytes(6).toString('hex')}`;
    const first = await provider.enroll({
      enrollmentId: id,
      attrs: { 'hie.role': 'clinician', 'hie.id': id },
    });
    const second = await provider.enroll({
      enrollmentId: id,
      attrs: { 'hie.role': 'clinician', 'hie.id': id },
    });
    await provider.revoke({ enrollmentId: id, serial: first.serial, reason: 'superseded' });
    let crl = new x509.X509Crl(await provider.crl());
    expect(crl.entries.map((e) => e.serialNumber.toLowerCase())).toContain(first.serial);
    expect(crl.entries.map((e) => e.serialNumber.toLowerCase())).not.toContain(second.serial);
    expect((await provider.list()).find((r) => r.enrollmentId === id)).toMatchObject({
      revoked: false,
      attrs: { 'hie.role': 'clinician' },
    });

    await provider.revoke({ enrollmentId: id, reason: 'revoked by admin' });
    crl = new x509.X509Crl(await provider.crl());
    expect(crl.entries.map((e) => e.serialNumber.toLowerCase())).toContain(second.serial);
    expect((await provider.list()).find((r) => r.enrollmentId === id)?.revoked).toBe(true);
    await expect(
      provider.enroll({ enrollmentId: id, attrs: { 'hie.role': 'clinician', 'hie.id': id } }),
    ).rejects.toThrow(/revoked/);
  });
});

describe('participants on Fabric CA', () => {
  it('enrols, re-enrols and revokes participants through the participant directory', async () => {
    const directory = ParticipantDirectory.open(join(dir, 'data'), provider);
    try {
      const { participant, enrollment } = await directory.enroll({
        clientId: 'ehr-1',
        role: 'clinician',
        resource: 'Practitioner/p1',
        organization: 'Organization/o1',
      });
      expect(certificateAttributes(enrollment.certificate)).toEqual({
        'hie.role': 'clinician',
        'hie.id': participant.pseudonym,
      });
      expect(
        server.registry
          .get(participant.pseudonym)
          ?.attrs.map((a) => a.name)
          .sort(),
      ).toEqual(['hie.id', 'hie.role']);
      const renewed = await directory.enroll({
        clientId: 'ehr-1',
        role: 'clinician',
        resource: 'Practitioner/p1',
        organization: 'Organization/o1',
      });
      // The superseded certificate is revoked at the CA.
      expect(server.certificates.get(enrollment.serial)?.revokedAt).toBeDefined();
      expect(server.certificates.get(renewed.enrollment.serial)?.revokedAt).toBeUndefined();
      await directory.revoke('ehr-1');
      expect(server.registry.get(participant.pseudonym)?.state).toBe(-1);
      expect(server.certificates.get(renewed.enrollment.serial)?.revokedAt).toBeDefined();
    } finally {
      directory.close();
    }
  });
});

describe('service identity from Fabric CA', () => {
  it('is accepted by the chaincode as a service (hie.role=service), and a clinician is not', async () => {
    const chain = await EmbeddedChain.open({
      file: join(dir, 'chain.sqlite'),
      msps: [{ mspId: MSP_ID, rootCertificates: [await provider.caCertificate()] }],
    });
    try {
      const service = await provider.enroll({
        enrollmentId: 'hospital1-service',
        attrs: { 'hie.role': 'service', 'hie.id': 'hospital1-service' },
      });
      const clinician = await provider.enroll({
        enrollmentId: 'c-1',
        attrs: { 'hie.role': 'clinician', 'hie.id': 'c-1' },
      });
      const key = randomBytes(32).toString('hex');
      const committed = await chain
        .connect({ mspId: MSP_ID, ...service })
        .submit('anchor:AnchorVersion', [key, randomBytes(32).toString('hex')]);
      expect(JSON.parse(committed.result)).toMatchObject({ key, mspId: MSP_ID });
      await expect(
        chain
          .connect({ mspId: MSP_ID, ...clinician })
          .submit('anchor:AnchorVersion', [randomBytes(32).toString('hex'), key]),
      ).rejects.toThrow(/access denied/);
    } finally {
      await chain.close();
    }
  });
});

describe('hie-ledger participant ... --ca fabric', () => {
  it('enrols, lists and revokes a participant with the Fabric CA named in the --fabric-config file', async () => {
    const files = join(dir, 'cli');
    rmSync(files, { recursive: true, force: true });
    const write = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const fabricConfig = write(
      'hospital1.fabric.json',
      JSON.stringify({
        peerEndpoint: '127.0.0.1:7051',
        tlsRootCertPath: write('peer-tls.pem', server.tls.caCertificate),
        mspId: MSP_ID,
        channel: 'hie',
        chaincode: 'hie',
        identity: {
          certPath: write('svc-cert.pem', registrarIdentity.certificate),
          keyPath: write('svc-key.pem', registrarIdentity.privateKey),
        },
        ca: {
          url: server.url,
          caName: 'ca-hospital1',
          tlsRootCertPath: write('ca-tls.pem', server.tls.caCertificate),
          registrar: {
            certPath: write('reg-cert.pem', registrarIdentity.certificate),
            keyPath: write('reg-key.pem', registrarIdentity.privateKey),
          },
        },
      }),
    );
    // An existing data directory (the participant commands create none: docs/configuration.md).
    mkdirSync(join(dir, 'cli-data'), { recursive: true });
    const cli = (args: string[]) =>
      participantCli([
        'participant',
        ...args,
        '--data-dir',
        join(dir, 'cli-data'),
        '--ca',
        'fabric',
        '--fabric-config',
        fabricConfig,
      ]);
    const enrolled = JSON.parse(
      await cli([
        'enroll',
        '--role',
        'patient',
        '--id',
        'patient-app-1',
        '--resource',
        'Patient/pat1',
        '--out',
        files,
      ]),
    );
    expect(enrolled).toMatchObject({ clientId: 'patient-app-1', role: 'patient', status: 'enrolled' });
    const certificate = readFileSync(join(files, 'cert.pem'), 'utf8');
    expect(certificateAttributes(certificate)).toEqual({
      'hie.role': 'patient',
      'hie.id': enrolled.pseudonym,
    });
    expect(new X509Certificate(certificate).verify(createPublicKey(server.caCertificate))).toBe(true);
    const revoked = JSON.parse(await cli(['revoke', '--id', 'patient-app-1']));
    expect(revoked.status).toBe('revoked');
    expect(server.registry.get(enrolled.pseudonym)?.state).toBe(-1);
  });
});

describe('revocation reaches the peers only through the channel configuration', () => {
  it('keeps accepting a revoked service certificate until its CRL is in the channel MSP, then refuses it', async () => {
    const chain = await EmbeddedChain.open({
      file: join(dir, 'crl-chain.sqlite'),
      msps: [{ mspId: MSP_ID, rootCertificates: [await provider.caCertificate()] }],
    });
    const tls = await createTestTls('peer0.hospital1.hie.example.com');
    const peer = await provider.enroll({ enrollmentId: 'peer0-crl', attrs: {}, keyType: 'P-256' });
    const gateway = new GatewayServer({
      backend: new EmbeddedChainBackend(chain, 'hie'),
      tls,
      channel: 'hie',
      members: [{ mspId: MSP_ID, caCertificates: [await provider.caCertificate()] }],
      peerIdentity: { mspId: MSP_ID, ...peer },
    });
    await gateway.start();
    const service = await provider.enroll({
      enrollmentId: 'hospital1-service-crl',
      attrs: { 'hie.role': 'service', 'hie.id': 'hospital1-service-crl' },
      keyType: 'P-256',
    });
    const write = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return name;
    };
    const ledger = openFabricLedger({
      config: parseFabricConfig(
        {
          peerEndpoint: gateway.address,
          hostAlias: 'peer0.hospital1.hie.example.com',
          tlsRootCertPath: write('crl-tls.pem', tls.caCertificate),
          mspId: MSP_ID,
          channel: 'hie',
          chaincode: 'hie',
          identity: {
            certPath: write('crl-svc.pem', service.certificate),
            keyPath: write('crl-svc-key.pem', service.privateKey),
          },
        },
        'test',
        dir,
      ),
      logger: { info() {}, warn() {}, error() {} },
      retry: { initialDelayMs: 10, maxDelayMs: 50 },
    });
    const anchor = () => ledger.submit('anchor:AnchorBatch', [randomBytes(32).toString('hex'), '1']);
    try {
      await anchor();
      await provider.revoke({
        enrollmentId: 'hospital1-service-crl',
        serial: service.serial,
        reason: 'keycompromise',
      });
      // Revoked at the CA, but the channel does not know yet: the peer still accepts it.
      await anchor();
      // network/scripts/update-crl.sh: the CA's CRL goes into the channel's MSP configuration.
      await gateway.members.setCrl(MSP_ID, await provider.crl());
      const refused = await anchor().catch((error) => error);
      expect(refused).toBeInstanceOf(LedgerTransactionError);
      expect(refused.code).toBe('ENDORSEMENT_FAILURE');
      expect(refused.retryable).toBe(false);
      expect(refused.message).toContain('revoked');
    } finally {
      await ledger.close();
      await gateway.close();
      await chain.close();
    }
  });
});

describe('ECDSA low-S form of CA request signatures (Fabric CA: "Invalid S. Must be smaller than half the order")', () => {
  /** A signed GET /api/v1/identities with the token's signature made by `signToken`. */
  async function identitiesWith(
    identity: { certificate: string; privateKey: string },
    signToken: (text: Buffer, key: KeyObject) => Buffer,
  ): Promise<{ status: number; body: string }> {
    const path = '/api/v1/identities';
    const certB64 = Buffer.from(identity.certificate).toString('base64');
    const text = Buffer.from(`GET.${Buffer.from(path).toString('base64')}..${certB64}`);
    const token = `${certB64}.${signToken(text, createPrivateKey(identity.privateKey)).toString('base64')}`;
    return await new Promise((resolve, reject) => {
      const req = httpsRequest(
        `${server.url}${path}`,
        { method: 'GET', headers: { authorization: token }, ca: server.tls.caCertificate },
        (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  it.each(['P-256', 'P-384'] as const)(
    '%s: the test CA refuses a high-S token signature and accepts its low-S twin',
    async (keyType) => {
      const connection = {
        url: server.url,
        caName: 'ca-hospital1',
        tlsRootCertificate: server.tls.caCertificate,
      };
      const admin = await enrollWithSecret({
        ...connection,
        enrollmentId: 'admin',
        secret: 'adminpw',
        keyType,
      });
      const high = await identitiesWith(admin, (text, key) => {
        const signature = sign('sha256', text, key);
        return isLowS(signature, keyType) ? ecdsaTwin(signature, keyType) : signature;
      });
      expect(high.status).toBe(401);
      expect(high.body).toContain('Invalid S. Must be smaller than half the order');
      const low = await identitiesWith(admin, (text, key) => toLowS(sign('sha256', text, key), keyType));
      expect(low.status).toBe(201);
    },
  );

  it.each(['P-256', 'P-384'] as const)(
    '%s: every request the provider signs is in low-S form',
    async (keyType) => {
      const connection = {
        url: server.url,
        caName: 'ca-hospital1',
        tlsRootCertificate: server.tls.caCertificate,
      };
      const admin = await enrollWithSecret({
        ...connection,
        enrollmentId: 'admin',
        secret: 'adminpw',
        keyType,
      });
      const asAdmin = new FabricCaIdentityProvider({ ...connection, registrar: admin });
      const before = server.refusedHighS;
      // 3 signed requests each; a signer that ignored the form would sign half of them high-S.
      for (let i = 0; i < 16; i++) await asAdmin.list();
      expect(server.refusedHighS).toBe(before);
    },
  );
});
