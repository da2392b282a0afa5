/**
 * Bundle.signature as a JWS (R4 bundle.html#Bundle.signature, signatures.html, json.html#canonical; RFC 7515):
 * signatures made here with the `jose` library over certificates made with @peculiar/x509, so the rule is checked
 * against an independent JWS implementation.
 */
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { CompactSign } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { canonicalJson } from '../../src/fhir/validation/signatures.js';
import { errors, validator } from './helpers.js';

interface Signer {
  keys: webcrypto.CryptoKeyPair;
  certificate: string;
  alg: 'RS256' | 'ES256';
}

async function signer(alg: 'RS256' | 'ES256'): Promise<Signer> {
  const algorithm =
    alg === 'RS256'
      ? {
          name: 'RSASSA-PKCS1-v1_5',
          modulusLength: 2048,
          publicExponent: new Uint8Array([1, 0, 1]),
          hash: 'SHA-256',
        }
      : { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=Signing Practitioner',
    notBefore: new Date(Date.UTC(2020, 0, 1)),
    notAfter: new Date(Date.UTC(2099, 0, 1)),
    keys,
    signingAlgorithm: alg === 'RS256' ? algorithm : { name: 'ECDSA', hash: 'SHA-256' },
  });
  return { keys, certificate: Buffer.from(cert.rawData).toString('base64'), alg };
}

const DOCUMENT = 'http://hl7.org/fhir/canonicalization/json#document';
const PLAIN = 'http://hl7.org/fhir/canonicalization/json';

function bundle(): Record<string, unknown> {
  return {
    resourceType: 'Bundle',
    id: 'doc-1',
    meta: { lastUpdated: '2026-01-01T00:00:00Z' },
    identifier: { system: 'urn:ietf:rfc:3986', value: 'urn:uuid:0c3f8a52-7b7c-4d6b-9d7e-6e6a1b0c9e11' },
    type: 'collection',
    entry: [
      {
        fullUrl: 'urn:uuid:5b0c8b1e-1a48-4a62-8f1f-7d7d1f1a0a01',
        resource: {
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'weight' },
          valueQuantity: { value: 72.5, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
        },
      },
    ],
  };
}

/** The Bundle's canonical content for a canonicalization (json.html#canonical). */
function content(b: Record<string, unknown>, canonicalization: string): Record<string, unknown> {
  const { signature: _s, ...rest } = b;
  if (canonicalization !== DOCUMENT) return rest;
  const { id: _id, meta: _meta, ...document } = rest;
  return document;
}

async function sign(
  b: Record<string, unknown>,
  s: Signer,
  options: { canonicalization?: string; detached?: boolean; certificate?: boolean } = {},
): Promise<Record<string, unknown>> {
  const canonicalization = options.canonicalization ?? DOCUMENT;
  const payload = new TextEncoder().encode(canonicalJson(content(b, canonicalization)));
  let jws = await new CompactSign(payload)
    .setProtectedHeader({ alg: s.alg, ...(options.certificate === false ? {} : { x5c: [s.certificate] }) })
    .sign(s.keys.privateKey);
  if (options.detached) {
    const [h, , sig] = jws.split('.');
    jws = `${h}..${sig}`;
  }
  return {
    ...b,
    signature: {
      type: [{ system: 'urn:iso-astm:E1762-95:2013', code: '1.2.840.10065.1.12.1.1' }],
      when: '2026-01-01T00:00:00Z',
      who: { display: 'Signing Practitioner' },
      targetFormat: `application/fhir+json;canonicalization=${canonicalization}`,
      sigFormat: 'application/jose',
      data: Buffer.from(jws).toString('base64'),
    },
  };
}

function withEntryValue(b: Record<string, unknown>, value: number): Record<string, unknown> {
  const copy = structuredClone(b) as { entry: { resource: { valueQuantity: { value: number } } }[] };
  copy.entry[0]!.resource.valueQuantity.value = value;
  return copy as unknown as Record<string, unknown>;
}

function withoutNumbers(b: Record<string, unknown>): Record<string, unknown> {
  const copy = structuredClone(b) as { entry: { resource: Record<string, unknown> }[] };
  delete copy.entry[0]!.resource.valueQuantity;
  copy.entry[0]!.resource.valueString = 'seventy-two and a half kilograms';
  return copy as unknown as Record<string, unknown>;
}

let rsa: Signer;
let ec: Signer;
beforeAll(async () => {
  rsa = await signer('RS256');
  ec = await signer('ES256');
});

describe('Bundle.signature as a JWS (signatures.html, json.html#canonical)', () => {
  it('accepts a signature whose payload is the Bundle without id, meta and signature (#document)', async () => {
    expect(errors(await sign(bundle(), rsa))).toEqual([]);
    expect(errors(await sign(bundle(), ec))).toEqual([]);
  });

  it('refuses a Bundle changed after signing: the payload is no longer its content', async () => {
    const signed = await sign(bundle(), rsa);
    const changed = withEntryValue(signed, 75);
    expect(errors(changed)).toEqual([
      expect.objectContaining({
        expression: 'Bundle',
        diagnostics: expect.stringContaining('$.entry[0].resource.valueQuantity.value'),
      }),
    ]);
  });

  it('the root id and meta are outside a #document signature, but not outside a plain one', async () => {
    const document = await sign(bundle(), rsa);
    expect(errors({ ...document, id: 'copied-elsewhere', meta: { versionId: '7' } })).toEqual([]);
    const plain = await sign(bundle(), rsa, { canonicalization: PLAIN });
    expect(errors({ ...plain, id: 'copied-elsewhere' }).map((e) => e.expression)).toEqual(['Bundle']);
  });

  it('refuses a signature that does not verify against the certificate it carries', async () => {
    const signed = await sign(bundle(), rsa);
    const other = await sign(bundle(), ec);
    // rsa's header and payload with ec's signature bytes.
    const rsaJws = Buffer.from((signed.signature as { data: string }).data, 'base64')
      .toString()
      .split('.');
    const ecJws = Buffer.from((other.signature as { data: string }).data, 'base64')
      .toString()
      .split('.');
    const forged = `${rsaJws[0]}.${rsaJws[1]}.${ecJws[2]}`;
    const result = errors({
      ...signed,
      signature: { ...(signed.signature as object), data: Buffer.from(forged).toString('base64') },
    });
    expect(result).toEqual([
      expect.objectContaining({
        expression: 'Bundle',
        diagnostics: expect.stringContaining('did not verify'),
      }),
    ]);
  });

  it('verifies a detached payload (RFC 7515 appendix F) over the canonical form of the Bundle', async () => {
    const noNumbers = withoutNumbers(bundle());
    const signed = await sign(noNumbers, rsa, { canonicalization: PLAIN, detached: true });
    expect(errors(signed)).toEqual([]);
    // A string changed: the canonical bytes differ, the signature does not verify.
    const changed = { ...signed, identifier: { system: 'urn:ietf:rfc:3986', value: 'urn:uuid:other' } };
    expect(errors(changed).map((e) => e.expression)).toEqual(['Bundle']);
  });

  it('a detached signature over content with decimals that does not verify is a warning (1.50 reads as 1.5)', async () => {
    const signed = await sign(bundle(), rsa, { canonicalization: PLAIN, detached: true });
    expect(errors(signed)).toEqual([]);
    const issues = validator().validate(withEntryValue(signed, 75)).issues;
    expect(issues.filter((i) => i.severity === 'error')).toEqual([]);
    expect(issues.some((i) => i.severity === 'warning' && /did not verify/.test(i.diagnostics ?? ''))).toBe(
      true,
    );
  });

  it('without a certificate in the JWS: an information issue, no error (no key is fetched)', async () => {
    const signed = await sign(bundle(), rsa, { certificate: false });
    const issues = validator().validate(signed).issues;
    expect(issues.filter((i) => i.severity === 'error')).toEqual([]);
    expect(
      issues.some((i) => i.severity === 'information' && /no signing certificate/.test(i.diagnostics ?? '')),
    ).toBe(true);
  });

  it('refuses data that is not a JWS compact serialization', () => {
    const b = {
      ...bundle(),
      signature: {
        type: [{ system: 'urn:iso-astm:E1762-95:2013', code: '1.2.840.10065.1.12.1.1' }],
        when: '2026-01-01T00:00:00Z',
        who: { display: 'Signing Practitioner' },
        sigFormat: 'application/jose',
        data: Buffer.from('not a jws').toString('base64'),
      },
    };
    expect(errors(b).map((e) => e.expression)).toEqual(['Bundle.signature.data']);
  });

  it('content nested deeper than any accepted Bundle is not compared (refused by nesting, no exception)', async () => {
    const signed = await sign(bundle(), rsa);
    const [h, , sig] = Buffer.from((signed.signature as { data: string }).data, 'base64')
      .toString()
      .split('.');
    // The same 20,000-level extension in the Bundle and in the payload: comparing them would recurse that deep.
    let extension: Record<string, unknown> = { url: 'http://example.org/e', valueString: 'x' };
    let text = JSON.stringify(extension);
    for (let i = 0; i < 20_000; i++) {
      extension = { url: 'http://example.org/e', extension: [extension] };
      text = `{"url":"http://example.org/e","extension":[${text}]}`;
    }
    const withExtension = (e: unknown) => ({
      ...bundle(),
      entry: [
        {
          fullUrl: 'urn:uuid:5b0c8b1e-1a48-4a62-8f1f-7d7d1f1a0a02',
          resource: { resourceType: 'Basic', code: { text: 'deep' }, extension: [e] },
        },
      ],
    });
    const deep = withExtension(extension);
    // The payload's text (the #document content), made without serialising the deep value.
    const placeholder = JSON.stringify(content(withExtension('__deep__'), DOCUMENT));
    const payload = Buffer.from(placeholder.replace('"__deep__"', text)).toString('base64url');
    const data = Buffer.from(`${h}.${payload}.${sig}`).toString('base64');
    const result = errors({ ...deep, signature: { ...(signed.signature as object), data } });
    expect(result.map((e) => e.code)).not.toContain('exception');
  });
});
