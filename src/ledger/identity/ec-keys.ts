/**
 * ECDSA keys of ledger identities, made in one place: the embedded CA (its own key and every enrolment) and the
 * Fabric CA client (the key behind a CSR) take their key pairs, signing algorithm and PEM export from here.
 */
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

export type EcKeyType = 'P-384' | 'P-256';

/** The digest each curve signs with (Fabric CA verifies SHA-256 digests for either curve). */
const HASH_FOR_CURVE: Record<EcKeyType, 'SHA-384' | 'SHA-256'> = { 'P-384': 'SHA-384', 'P-256': 'SHA-256' };

/** A new extractable ECDSA key pair on `keyType`. */
export async function newEcKeyPair(keyType: EcKeyType): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: keyType }, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
}

/** The signature algorithm of a key on `keyType` (certificates and CSRs it signs). */
export function ecdsaSigning(keyType: EcKeyType): { name: 'ECDSA'; hash: 'SHA-384' | 'SHA-256' } {
  return { name: 'ECDSA', hash: HASH_FOR_CURVE[keyType] };
}

/** The private key as PKCS #8 PEM (`-----BEGIN PRIVATE KEY-----`). */
export async function privateKeyPem(privateKey: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', privateKey), 'PRIVATE KEY');
}
