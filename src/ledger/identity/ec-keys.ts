/**
 * ECDSA keys of ledger identities, made in one place: the embedded CA (its own key and every enrolment) and the
 * Fabric CA client (the key behind a CSR) take their key pairs, signing algorithm and PEM export from here; and
 * the ECDSA signatures Fabric verifies are made here in low-S form.
 */
import { sign, webcrypto, type KeyObject } from 'node:crypto';
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

/** The order n of each curve's base point (SEC 2). */
const CURVE_ORDER: Record<EcKeyType, bigint> = {
  'P-256': 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  'P-384':
    0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
};
const CURVE_SIZE: Record<EcKeyType, number> = { 'P-256': 32, 'P-384': 48 };
/** Node's (OpenSSL's) names of the curves. */
const CURVE_BY_NODE_NAME: Record<string, EcKeyType> = { prime256v1: 'P-256', secp384r1: 'P-384' };
const signatureFormatter = new x509.AsnEcSignatureFormatter();
type SignatureAlgorithm = Parameters<x509.AsnEcSignatureFormatter['toWebSignature']>[0];

/** The curve of an ECDSA key object (P-256 or P-384), or an error naming what it is. */
export function ecKeyTypeOf(key: KeyObject): EcKeyType {
  const curve = CURVE_BY_NODE_NAME[key.asymmetricKeyDetails?.namedCurve ?? ''];
  if (!curve) throw new Error(`not an ECDSA P-256 or P-384 key (${key.asymmetricKeyType ?? 'unknown'})`);
  return curve;
}

function rAndS(signature: Uint8Array, keyType: EcKeyType): { r: Buffer; s: bigint } {
  const raw = signatureFormatter.toWebSignature(
    { name: 'ECDSA', namedCurve: keyType } as SignatureAlgorithm,
    signature,
  );
  if (!raw) throw new Error('not an ECDSA signature');
  const bytes = Buffer.from(raw);
  const size = CURVE_SIZE[keyType];
  return { r: bytes.subarray(0, size), s: BigInt(`0x${bytes.subarray(size).toString('hex') || '0'}`) };
}

/** True if the DER signature's s is at most n/2, the only form Fabric's BCCSP (peers, orderers, Fabric CA) accepts. */
export function isLowS(signature: Uint8Array, keyType: EcKeyType): boolean {
  return rAndS(signature, keyType).s <= CURVE_ORDER[keyType] >> 1n;
}

/** The other valid DER signature of the same message and key: (r, n - s). */
export function ecdsaTwin(signature: Uint8Array, keyType: EcKeyType): Buffer {
  const { r, s } = rAndS(signature, keyType);
  const size = CURVE_SIZE[keyType];
  const twinS = Buffer.from((CURVE_ORDER[keyType] - s).toString(16).padStart(size * 2, '0'), 'hex');
  const der = signatureFormatter.toAsnSignature(
    { name: 'ECDSA', namedCurve: keyType } as SignatureAlgorithm,
    Buffer.concat([r, twinS]),
  );
  if (!der) throw new Error('not an ECDSA signature');
  return Buffer.from(der);
}

/** The DER signature in low-S form (itself if it already is). */
export function toLowS(signature: Uint8Array, keyType: EcKeyType): Buffer {
  return isLowS(signature, keyType) ? Buffer.from(signature) : ecdsaTwin(signature, keyType);
}

/**
 * A DER ECDSA signature of SHA-256(data) in low-S form. OpenSSL makes high-S signatures half the time, and Fabric
 * refuses them ("Invalid S. Must be smaller than half the order"); Fabric CA hashes with SHA-256 on either curve.
 */
export function signLowS(data: Uint8Array, privateKey: KeyObject): Buffer {
  return toLowS(sign('sha256', data, privateKey), ecKeyTypeOf(privateKey));
}
