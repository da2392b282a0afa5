/**
 * A throw-away TLS CA and a server certificate for the test Gateway server, so the adapter connects over real
 * TLS and must use its host alias (the certificate names only `hostAlias`, not 127.0.0.1).
 */
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

const crypto = webcrypto;
x509.cryptoProvider.set(crypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface TestTls {
  caCertificate: string;
  serverCertificate: string;
  serverKey: string;
  /** A client certificate (clientAuth) issued by the same CA, for mutual TLS. */
  clientCertificate: string;
  clientKey: string;
}

function pkcs8Pem(pkcs8: ArrayBuffer): string {
  const base64 = Buffer.from(pkcs8)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n');
  return `-----BEGIN PRIVATE KEY-----\n${base64}\n-----END PRIVATE KEY-----\n`;
}

export async function createTestTls(hostAlias: string): Promise<TestTls> {
  const caKeys = await crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 24 * 3600_000);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=test TLS CA',
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  const serverKeys = await crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const server = await x509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: `CN=${hostAlias}`,
    issuer: ca.subject,
    notBefore,
    notAfter,
    publicKey: serverKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: hostAlias }]),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    ],
  });
  const clientKeys = await crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const client = await x509.X509CertificateGenerator.create({
    serialNumber: '03',
    subject: 'CN=hie-ledger service TLS client',
    issuer: ca.subject,
    notBefore,
    notAfter,
    publicKey: clientKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: SIGN,
    extensions: [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])],
  });
  return {
    caCertificate: ca.toString('pem'),
    serverCertificate: server.toString('pem'),
    serverKey: pkcs8Pem(await crypto.subtle.exportKey('pkcs8', serverKeys.privateKey)),
    clientCertificate: client.toString('pem'),
    clientKey: pkcs8Pem(await crypto.subtle.exportKey('pkcs8', clientKeys.privateKey)),
  };
}
