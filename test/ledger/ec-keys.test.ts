/** The one place ledger identities get ECDSA keys (src/ledger/identity/ec-keys.ts). */
import { createPrivateKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ecdsaSigning, newEcKeyPair, privateKeyPem } from '../../src/ledger/identity/ec-keys.js';

describe('ECDSA keys of ledger identities', () => {
  it.each([
    ['P-256', 'prime256v1', 'SHA-256'],
    ['P-384', 'secp384r1', 'SHA-384'],
  ] as const)('%s: a PKCS #8 PEM on %s, and its signing digest', async (keyType, curve, hash) => {
    const keys = await newEcKeyPair(keyType);
    const pem = await privateKeyPem(keys.privateKey);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(createPrivateKey(pem).asymmetricKeyDetails?.namedCurve).toBe(curve);
    expect(ecdsaSigning(keyType)).toEqual({ name: 'ECDSA', hash });
  });
});
