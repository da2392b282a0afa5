/** The one place ledger identities get ECDSA keys (src/ledger/identity/ec-keys.ts). */
import { createPrivateKey, sign, verify } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { describe, expect, it } from 'vitest';
import {
  ecdsaSigning,
  isLowS,
  newEcKeyPair,
  privateKeyPem,
  signLowS,
  toLowS,
} from '../../src/ledger/identity/ec-keys.js';

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

describe('ECDSA signatures in low-S form (Fabric refuses s > n/2)', () => {
  const ORDER: Record<'P-256' | 'P-384', bigint> = {
    'P-256': 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    'P-384':
      0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  };
  const formatter = new x509.AsnEcSignatureFormatter();
  /** The signature's twin with s replaced by n - s: also valid ECDSA, and high-S exactly when the original is low. */
  function twin(keyType: 'P-256' | 'P-384', der: Buffer): Buffer {
    const size = keyType === 'P-256' ? 32 : 48;
    const raw = Buffer.from(formatter.toWebSignature({ name: 'ECDSA', namedCurve: keyType } as never, der)!);
    const s = BigInt(`0x${raw.subarray(size).toString('hex')}`);
    const flipped = Buffer.from((ORDER[keyType] - s).toString(16).padStart(size * 2, '0'), 'hex');
    return Buffer.from(
      formatter.toAsnSignature(
        { name: 'ECDSA', namedCurve: keyType } as never,
        Buffer.concat([raw.subarray(0, size), flipped]),
      )!,
    );
  }

  it.each(['P-256', 'P-384'] as const)(
    '%s: a high-S signature becomes its low-S twin, which verifies',
    async (keyType) => {
      const keys = await newEcKeyPair(keyType);
      const privateKey = createPrivateKey(await privateKeyPem(keys.privateKey));
      const data = Buffer.from('POST.L2FwaS92MS9yZWdpc3Rlcg==.e30=.Y2VydA==');
      const signature = sign('sha256', data, privateKey);
      // One of the pair is high-S whatever the random nonce was: test both, deterministically.
      const [low, high] = isLowS(signature, keyType)
        ? [signature, twin(keyType, signature)]
        : [twin(keyType, signature), signature];
      expect(verify('sha256', data, privateKey, high)).toBe(true);
      expect(isLowS(high, keyType)).toBe(false);
      expect(isLowS(low, keyType)).toBe(true);
      expect(toLowS(high, keyType).equals(low)).toBe(true);
      expect(toLowS(low, keyType).equals(low)).toBe(true);
      const signed = signLowS(data, privateKey);
      expect(isLowS(signed, keyType)).toBe(true);
      expect(verify('sha256', data, privateKey, signed)).toBe(true);
    },
  );
});
