/**
 * The ledger gateway's TLS: a CA of its own and a server certificate for localhost, 127.0.0.1 and ::1, made at
 * first start and kept in the data directory (`ledger/gateway/`, keys mode 0600). Members trust `tls-ca.pem`
 * (their connection config's tlsRootCertPath); the server certificate is re-issued by the same CA when it
 * nears its end, so members keep their configuration.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { mkdirPrivate, PRIVATE_FILE_MODE } from '../../../platform/private-files.js';
import { ecdsaSigning, newEcKeyPair, privateKeyPem } from '../../identity/ec-keys.js';

export interface GatewayTls {
  /** What members trust (PEM); also in `caCertificatePath`. */
  caCertificate: string;
  caCertificatePath: string;
  serverCertificate: string;
  serverKey: string;
}

/** The TLS files of a data directory's ledger gateway. */
export function gatewayTlsPaths(dataDir: string) {
  const dir = join(dataDir, 'ledger', 'gateway');
  return {
    dir,
    caCertificate: join(dir, 'tls-ca.pem'),
    caKey: join(dir, 'tls-ca-key.pem'),
    serverCertificate: join(dir, 'tls-server.pem'),
    serverKey: join(dir, 'tls-server-key.pem'),
  };
}

const DAY_MS = 86_400_000;
const CA_VALIDITY_DAYS = 3650;
const SERVER_VALIDITY_DAYS = 365;
/** A server certificate with less time left is re-issued at start. */
const RENEW_BEFORE_DAYS = 30;
const SIGNING = ecdsaSigning('P-256');

/** Loads the gateway's TLS material from the data directory, creating or renewing what is missing. */
export async function loadGatewayTls(dataDir: string): Promise<GatewayTls> {
  const paths = gatewayTlsPaths(dataDir);
  mkdirPrivate(paths.dir);
  if (!existsSync(paths.caCertificate) || !existsSync(paths.caKey)) await createCa(paths);
  const caCertificate = readFileSync(paths.caCertificate, 'utf8');
  if (!serverCertificateUsable(paths.serverCertificate, caCertificate)) await issueServerCertificate(paths);
  return {
    caCertificate,
    caCertificatePath: paths.caCertificate,
    serverCertificate: readFileSync(paths.serverCertificate, 'utf8'),
    serverKey: readFileSync(paths.serverKey, 'utf8'),
  };
}

function serverCertificateUsable(file: string, caPem: string): boolean {
  if (!existsSync(file)) return false;
  try {
    const certificate = new x509.X509Certificate(readFileSync(file, 'utf8'));
    const ca = new x509.X509Certificate(caPem);
    return (
      certificate.issuer === ca.subject &&
      certificate.notAfter.getTime() - Date.now() > RENEW_BEFORE_DAYS * DAY_MS
    );
  } catch {
    return false;
  }
}

async function createCa(paths: ReturnType<typeof gatewayTlsPaths>): Promise<void> {
  const keys = await newEcKeyPair('P-256');
  const notBefore = new Date(Date.now() - 60_000);
  const ca = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial(),
      name: 'CN=hie-ledger local ledger gateway TLS CA',
      notBefore,
      notAfter: new Date(notBefore.getTime() + CA_VALIDITY_DAYS * DAY_MS),
      keys,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      ],
    },
    webcrypto,
  );
  writePrivate(paths.caKey, await privateKeyPem(keys.privateKey));
  writePrivate(paths.caCertificate, ca.toString('pem'));
}

async function issueServerCertificate(paths: ReturnType<typeof gatewayTlsPaths>): Promise<void> {
  const ca = new x509.X509Certificate(readFileSync(paths.caCertificate, 'utf8'));
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(readFileSync(paths.caKey, 'utf8')),
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  const keys = await newEcKeyPair('P-256');
  const notBefore = new Date(Date.now() - 60_000);
  const server = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: 'CN=localhost',
      issuer: ca.subject,
      notBefore,
      notAfter: new Date(notBefore.getTime() + SERVER_VALIDITY_DAYS * DAY_MS),
      publicKey: keys.publicKey,
      signingKey: caKey,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'dns', value: 'localhost' },
          { type: 'ip', value: '127.0.0.1' },
          { type: 'ip', value: '::1' },
        ]),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      ],
    },
    webcrypto,
  );
  writePrivate(paths.serverKey, await privateKeyPem(keys.privateKey));
  writePrivate(paths.serverCertificate, server.toString('pem'));
}

/** A positive 16-byte serial number (hex). */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f;
  return bytes.toString('hex');
}

function writePrivate(path: string, data: string): void {
  writeFileSync(`${path}.tmp`, data, { mode: PRIVATE_FILE_MODE });
  renameSync(`${path}.tmp`, path);
}
