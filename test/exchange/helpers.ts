/** Test helpers of the exchange: members with real P-256 service certificates, and an in-memory directory. */
import { createPrivateKey, webcrypto, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { MemberEntry, MemberLookup } from '../../src/exchange/members.js';

x509.cryptoProvider.set(webcrypto);

export interface TestCertificate {
  certificatePem: string;
  privateKeyPem: string;
  privateKey: KeyObject;
}

/** A self-signed ECDSA P-256 certificate, for a service key or an HTTPS server (with `ip` in its names). */
export async function selfSigned(commonName: string, ip?: string): Promise<TestCertificate> {
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${commonName}`,
    notBefore: new Date(Date.UTC(2020, 0, 1)),
    notAfter: new Date(Date.UTC(2099, 0, 1)),
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: ip ? [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: ip }])] : [],
  });
  const privateKeyPem = x509.PemConverter.encode(
    await webcrypto.subtle.exportKey('pkcs8', keys.privateKey),
    'PRIVATE KEY',
  );
  return {
    certificatePem: certificate.toString('pem'),
    privateKeyPem,
    privateKey: createPrivateKey(privateKeyPem),
  };
}

/** The member directory as a map (the ledger-backed one reads the `member` contract). */
export class MapMembers implements MemberLookup {
  readonly entries = new Map<string, MemberEntry>();
  add(entry: MemberEntry): MemberEntry {
    this.entries.set(entry.mspId, entry);
    return entry;
  }
  member(mspId: string): Promise<MemberEntry | undefined> {
    return Promise.resolve(this.entries.get(mspId));
  }
}
