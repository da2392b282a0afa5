/**
 * The embedded certificate authority: one per organisation, used when no Fabric CA runs (the default).
 * It issues X.509 certificates the way Fabric CA does, so the chaincode reads them unchanged through
 * ctx.clientIdentity: ECDSA keys, attributes as JSON `{"attrs":{...}}` in extension 1.2.3.4.5.6.7.8.1.
 * The CA key and the revocation list live in its directory with mode 0600.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { ecdsaSigning, newEcKeyPair, privateKeyPem, type EcKeyType } from './ec-keys.js';

/** OID of Fabric CA's attribute extension (fabric-ca/lib/attrmgr). */
export const FABRIC_ATTRIBUTES_OID = '1.2.3.4.5.6.7.8.1';

export type { EcKeyType };

export interface EnrollRequest {
  /** The subject's common name: a random pseudonym, never a person's name. */
  enrollmentId: string;
  attrs: Record<string, string>;
  keyType?: EcKeyType;
  /** Fabric node OU (client, peer, admin, orderer); default client. */
  nodeOu?: 'client' | 'peer' | 'admin' | 'orderer';
  /** Validity in days; default 365. */
  validityDays?: number;
}

export interface Enrollment {
  certificate: string;
  privateKey: string;
  /** Hexadecimal serial number of the certificate (for revoke). */
  serial: string;
}

interface RevokedEntry {
  serial: string;
  revokedAt: string;
}

type CryptoKey = webcrypto.CryptoKey;
type EcKeyAlgorithm = webcrypto.EcKeyAlgorithm;
const crypto = webcrypto;
const MSP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class EmbeddedCa {
  private constructor(
    private readonly dir: string,
    readonly mspId: string,
    /** The CA certificate, PEM. */
    readonly certificate: string,
    private readonly caCert: x509.X509Certificate,
    private readonly caKey: CryptoKey,
    private readonly keyType: EcKeyType,
    private readonly revoked: Map<string, RevokedEntry>,
  ) {}

  /** Opens the CA kept in `dir`, creating its key and self-signed certificate at first use. */
  static async open(dir: string, options: { mspId: string; keyType?: EcKeyType }): Promise<EmbeddedCa> {
    const { mspId } = options;
    if (!MSP_ID.test(mspId)) throw new Error(`invalid MSP id ${JSON.stringify(mspId)}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const certPath = join(dir, 'ca-cert.pem');
    const keyPath = join(dir, 'ca-key.pem');
    let certificatePem = readIfExists(certPath);
    let keyPem = readIfExists(keyPath);
    if (certificatePem === undefined || keyPem === undefined) {
      const created = await createCa(mspId, options.keyType ?? 'P-384');
      // Write the key first and exclusively: a concurrent first start keeps whichever CA won the race.
      if (writeExclusive(keyPath, created.keyPem)) {
        writeFileSync(certPath, created.certificatePem, { mode: 0o600 });
      } else {
        await waitForFile(certPath);
      }
      certificatePem = readFileSync(certPath, 'utf8');
      keyPem = readFileSync(keyPath, 'utf8');
    }
    const caCert = new x509.X509Certificate(certificatePem);
    const keyType = curveOf(caCert);
    const caKey = await crypto.subtle.importKey(
      'pkcs8',
      x509.PemConverter.decodeFirst(keyPem),
      { name: 'ECDSA', namedCurve: keyType },
      false,
      ['sign'],
    );
    const revokedPath = join(dir, 'revoked.json');
    const revokedList = JSON.parse(readIfExists(revokedPath) ?? '[]') as RevokedEntry[];
    return new EmbeddedCa(
      dir,
      mspId,
      certificatePem,
      caCert,
      caKey,
      keyType,
      new Map(revokedList.map((entry) => [entry.serial, entry])),
    );
  }

  /** Issues a key pair and a certificate carrying `attrs` in the Fabric CA attribute extension. */
  async enroll(request: EnrollRequest): Promise<Enrollment> {
    const { enrollmentId, attrs } = request;
    if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/.test(enrollmentId)) {
      throw new Error(`invalid enrollment id ${JSON.stringify(enrollmentId)}`);
    }
    const keyType = request.keyType ?? 'P-384';
    const keys = await newEcKeyPair(keyType);
    const notBefore = new Date(Date.now() - 60_000);
    const notAfter = new Date(notBefore.getTime() + (request.validityDays ?? 365) * 86_400_000);
    const serial = randomSerial();
    const certificate = await x509.X509CertificateGenerator.create(
      {
        serialNumber: serial,
        subject: [{ CN: [enrollmentId] }, { OU: [request.nodeOu ?? 'client'] }, { O: [this.mspId] }],
        issuer: this.caCert.subjectName,
        notBefore,
        notAfter,
        publicKey: keys.publicKey,
        signingKey: this.caKey,
        signingAlgorithm: ecdsaSigning(this.keyType),
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
          await x509.AuthorityKeyIdentifierExtension.create(this.caCert.publicKey, false, crypto),
          new x509.Extension(FABRIC_ATTRIBUTES_OID, false, Buffer.from(JSON.stringify({ attrs }), 'utf8')),
        ],
      },
      crypto,
    );
    return {
      certificate: certificate.toString('pem'),
      privateKey: await privateKeyPem(keys.privateKey),
      serial: certificate.serialNumber,
    };
  }

  /** Revokes a certificate by its hexadecimal serial number (idempotent; persisted). */
  revoke(serial: string): void {
    const normalized = normalizeSerial(serial);
    if (this.revoked.has(normalized)) return;
    this.revoked.set(normalized, { serial: normalized, revokedAt: new Date().toISOString() });
    const path = join(this.dir, 'revoked.json');
    writeFileSync(`${path}.tmp`, JSON.stringify([...this.revoked.values()], null, 2), { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  }

  /** True when the certificate (PEM) was issued by this CA and has been revoked. */
  isRevoked(certificatePem: string): boolean {
    const { issuer, serial } = this.parsed(certificatePem);
    return issuer === this.caCert.subject && this.revoked.has(serial);
  }

  /** Issuer and serial of a certificate; cached because the ledger asks for every transaction. */
  private parsed(certificatePem: string): { issuer: string; serial: string } {
    let entry = this.parsedCertificates.get(certificatePem);
    if (!entry) {
      const certificate = new x509.X509Certificate(certificatePem);
      entry = { issuer: certificate.issuer, serial: normalizeSerial(certificate.serialNumber) };
      if (this.parsedCertificates.size >= 1024) this.parsedCertificates.clear();
      this.parsedCertificates.set(certificatePem, entry);
    }
    return entry;
  }

  private readonly parsedCertificates = new Map<string, { issuer: string; serial: string }>();

  /** True when the certificate was signed by this CA, is within its validity period and is not revoked. */
  async verify(certificatePem: string, at: Date = new Date()): Promise<boolean> {
    const certificate = new x509.X509Certificate(certificatePem);
    if (certificate.issuer !== this.caCert.subject) return false;
    if (this.revoked.has(normalizeSerial(certificate.serialNumber))) return false;
    return certificate.verify({ publicKey: this.caCert.publicKey, date: at }, crypto);
  }

  /** A CRL (PEM) signed by the CA listing every revoked serial, e.g. for a Fabric MSP's crls folder. */
  async crl(): Promise<string> {
    const crl = await x509.X509CrlGenerator.create(
      {
        issuer: this.caCert.subjectName,
        thisUpdate: new Date(),
        nextUpdate: new Date(Date.now() + 7 * 86_400_000),
        signingKey: this.caKey,
        signingAlgorithm: ecdsaSigning(this.keyType),
        entries: [...this.revoked.values()].map((entry) => ({
          serialNumber: entry.serial,
          revocationDate: new Date(entry.revokedAt),
        })),
      },
      crypto,
    );
    return crl.toString('pem');
  }
}

/** Reads the Fabric CA attributes of a certificate (PEM); empty when it has none. */
export function certificateAttributes(certificatePem: string): Record<string, string> {
  const extension = new x509.X509Certificate(certificatePem).getExtension(FABRIC_ATTRIBUTES_OID);
  if (!extension) return {};
  const parsed = JSON.parse(Buffer.from(extension.value).toString('utf8')) as {
    attrs?: Record<string, string>;
  };
  return parsed.attrs ?? {};
}

async function createCa(
  mspId: string,
  keyType: EcKeyType,
): Promise<{ certificatePem: string; keyPem: string }> {
  const keys = await newEcKeyPair(keyType);
  const notBefore = new Date(Date.now() - 60_000);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: [{ CN: [`ca.${mspId}`] }, { O: [mspId] }],
      notBefore,
      notAfter: new Date(notBefore.getTime() + 10 * 365 * 86_400_000),
      keys,
      signingAlgorithm: ecdsaSigning(keyType),
      extensions: [
        new x509.BasicConstraintsExtension(true, 1, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return {
    certificatePem: certificate.toString('pem'),
    keyPem: await privateKeyPem(keys.privateKey),
  };
}

function curveOf(certificate: x509.X509Certificate): EcKeyType {
  const algorithm = certificate.publicKey.algorithm as EcKeyAlgorithm;
  if (algorithm.name !== 'ECDSA' || (algorithm.namedCurve !== 'P-384' && algorithm.namedCurve !== 'P-256')) {
    throw new Error(`unsupported CA key ${algorithm.name} ${algorithm.namedCurve ?? ''}`);
  }
  return algorithm.namedCurve;
}

/** A positive 128-bit serial (first byte below 0x80 so the DER integer needs no padding). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}

function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^(00)+/, '');
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

function writeExclusive(path: string, data: string): boolean {
  try {
    writeFileSync(path, data, { mode: 0o600, flag: 'wx' });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
}

async function waitForFile(path: string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    if (readIfExists(path) !== undefined) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out waiting for ${path} written by a concurrent start`);
}
