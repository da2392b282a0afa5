/**
 * Bundle.signature as a JWS (R4 bundle.html#Bundle.signature, signatures.html, json.html#canonical): with
 * `sigFormat` `application/jose`, `Signature.data` is the base64 of a JWS in the compact serialization (RFC 7515
 * section 7.1) that signs the Bundle in its canonical JSON form. Checked without any network access:
 *
 * - the JWS is well formed (three base64url parts, a JSON header with a supported `alg`);
 * - with its signing certificate in the header (`x5c`, RFC 7515 section 4.1.6) the signature verifies: over the JWS's
 *   own payload when it carries one, else (a detached payload, RFC 7515 appendix F) over the Bundle's canonical form;
 * - a payload it carries is the Bundle's content: the canonical form is the Bundle without `signature`, and for
 *   `canonicalization/json#document` also without the root Bundle's `id` and `meta` (json.html#canonical). Compared
 *   as JSON values, so spacing, property order and decimal spelling do not matter.
 *
 * Without a certificate in the JWS nothing can be verified here (no key is fetched): an information issue says so.
 */
import { X509Certificate, constants, verify, type KeyObject } from 'node:crypto';
import { isJsonObject, type JsonObject } from '../definitions/json.js';
import { MAX_DEPTH, type Run } from './walk-context.js';

const JOSE = 'application/jose';
const PLAIN_JSON = 'http://hl7.org/fhir/canonicalization/json';
const BASE64URL = /^[A-Za-z0-9_-]*$/;
/** JSON levels (objects and arrays) compared at most: each element the walker descends is up to two of them. */
const JSON_DEPTH = 2 * MAX_DEPTH;

/** The JWS algorithms verified here (RFC 7518 section 3.1), as node:crypto's digest and options. */
const ALGORITHMS: Record<string, { digest: string | null; kind: 'rsa' | 'pss' | 'ec' | 'eddsa' }> = {
  RS256: { digest: 'sha256', kind: 'rsa' },
  RS384: { digest: 'sha384', kind: 'rsa' },
  RS512: { digest: 'sha512', kind: 'rsa' },
  PS256: { digest: 'sha256', kind: 'pss' },
  PS384: { digest: 'sha384', kind: 'pss' },
  PS512: { digest: 'sha512', kind: 'pss' },
  ES256: { digest: 'sha256', kind: 'ec' },
  ES384: { digest: 'sha384', kind: 'ec' },
  ES512: { digest: 'sha512', kind: 'ec' },
  EdDSA: { digest: null, kind: 'eddsa' },
};

export function checkBundleSignature(bundle: JsonObject, path: string, run: Run): void {
  const signature = bundle.signature;
  if (!isJsonObject(signature) || signature.sigFormat !== JOSE || typeof signature.data !== 'string') return;
  // The comparisons below recurse: content nested deeper than the walker accepts is refused there, not here.
  if (deeperThan(bundle, JSON_DEPTH)) return;
  const jws = Buffer.from(signature.data, 'base64').toString('utf8');
  const parts = jws.split('.');
  if (parts.length !== 3 || !parts.every((p) => BASE64URL.test(p)) || !parts[0] || !parts[2]) {
    run.add(
      'error',
      'value',
      'The signature is not a JWS in the compact serialization (application/jose: three base64url parts)',
      `${path}.signature.data`,
      'bundle',
    );
    return;
  }
  const [encodedHeader, encodedPayload, encodedSignature] = parts as [string, string, string];
  const header = parseJson(Buffer.from(encodedHeader, 'base64url').toString('utf8'));
  if (!isJsonObject(header) || typeof header.alg !== 'string') {
    run.add(
      'error',
      'value',
      'The JWS header of the signature is not a JSON object with an alg',
      `${path}.signature.data`,
      'bundle',
    );
    return;
  }
  const canonicalization = canonicalizationOf(signature, header);
  const content = canonicalContent(bundle, canonicalization);

  // A payload the JWS carries must be this Bundle's content, whatever the key.
  if (encodedPayload !== '' && content !== undefined) {
    let payload = parseJson(Buffer.from(encodedPayload, 'base64url').toString('utf8'));
    if (deeperThan(payload, JSON_DEPTH)) payload = undefined;
    const difference = firstDifference(payload, content, '$');
    if (difference !== undefined)
      run.add(
        'error',
        'value',
        `The signature cannot be valid: the content it signs (its payload) is not this Bundle's content (${difference})`,
        path,
        'bundle',
      );
  }

  const certificate = firstCertificate(header);
  if (!certificate) {
    run.add(
      'information',
      'informational',
      'The signature carries no signing certificate (x5c), so it is not verified here',
      path,
      'bundle',
    );
    return;
  }
  const algorithm = ALGORITHMS[header.alg];
  if (!algorithm) {
    run.add(
      'information',
      'informational',
      `The signature's algorithm '${header.alg.slice(0, 20)}' is not verified here`,
      path,
      'bundle',
    );
    return;
  }
  let signedPayload = encodedPayload;
  if (signedPayload === '') {
    if (content === undefined) return;
    signedPayload = Buffer.from(canonicalJson(content), 'utf8').toString('base64url');
  }
  if (verifies(certificate, algorithm, `${encodedHeader}.${signedPayload}`, encodedSignature)) return;
  // A detached payload is rebuilt from the parsed Bundle, where a decimal's written precision (1.50) is lost: the
  // canonical bytes the signer used may then differ from ours, so that failure cannot be told from a bad signature.
  const uncertain = encodedPayload === '' && hasNumber(content);
  run.add(
    uncertain ? 'warning' : 'error',
    'value',
    uncertain
      ? 'The signature did not verify against the certificate in it, over the canonical form rebuilt here (which may differ from the signed bytes in the precision of decimals)'
      : 'The signature did not verify against the certificate in it',
    path,
    'bundle',
  );
}

/** The canonicalization the signature names: Signature.targetFormat's parameter, else the JWS header's `canon`. */
function canonicalizationOf(signature: JsonObject, header: JsonObject): string {
  const target = typeof signature.targetFormat === 'string' ? signature.targetFormat : '';
  const param = /;\s*canonicalization=([^;\s]+)/.exec(target);
  if (param) return param[1]!;
  return typeof header.canon === 'string' ? header.canon : PLAIN_JSON;
}

/**
 * The content a JSON canonicalization of json.html#canonical signs, or undefined for one not checked here (`#data`,
 * `#static` and `#narrative` remove narrative or meta at levels this check does not model).
 */
export function canonicalContent(bundle: JsonObject, canonicalization: string): JsonObject | undefined {
  const { signature: _signature, ...content } = bundle;
  if (canonicalization === PLAIN_JSON) return content;
  if (canonicalization === `${PLAIN_JSON}#document`) {
    const { id: _id, meta: _meta, ...document } = content;
    return document;
  }
  return undefined;
}

/** FHIR canonical JSON (json.html#canonical): properties in alphabetical order, no whitespace between tokens. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (!isJsonObject(value)) return value;
  const sorted: JsonObject = {};
  for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key]);
  return sorted;
}

/** Where two JSON values first differ, as a JSON path with what differs; undefined when they are equal. */
export function firstDifference(signed: unknown, actual: unknown, at: string): string | undefined {
  if (Array.isArray(signed) || Array.isArray(actual)) {
    if (!Array.isArray(signed) || !Array.isArray(actual)) return `${at}: not the same kind of value`;
    if (signed.length !== actual.length) return `${at}: ${signed.length} items signed, ${actual.length} here`;
    for (let i = 0; i < signed.length; i++) {
      const d = firstDifference(signed[i], actual[i], `${at}[${i}]`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  if (isJsonObject(signed) || isJsonObject(actual)) {
    if (!isJsonObject(signed) || !isJsonObject(actual)) return `${at}: not the same kind of value`;
    for (const key of Object.keys(signed))
      if (!(key in actual)) return `${at}: property ${key} signed but not here`;
    for (const key of Object.keys(actual)) {
      if (!(key in signed)) return `${at}: property ${key} here but not signed`;
      const d = firstDifference(signed[key], actual[key], `${at}.${key}`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  return signed === actual ? undefined : `${at}: a different value`;
}

function firstCertificate(header: JsonObject): X509Certificate | undefined {
  const chain = header.x5c;
  if (!Array.isArray(chain) || typeof chain[0] !== 'string') return undefined;
  try {
    return new X509Certificate(Buffer.from(chain[0], 'base64'));
  } catch {
    return undefined;
  }
}

function verifies(
  certificate: X509Certificate,
  algorithm: { digest: string | null; kind: 'rsa' | 'pss' | 'ec' | 'eddsa' },
  signingInput: string,
  encodedSignature: string,
): boolean {
  const key: KeyObject = certificate.publicKey;
  try {
    return verify(
      algorithm.digest,
      Buffer.from(signingInput, 'ascii'),
      algorithm.kind === 'pss'
        ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
        : algorithm.kind === 'ec'
          ? { key, dsaEncoding: 'ieee-p1363' }
          : key,
      Buffer.from(encodedSignature, 'base64url'),
    );
  } catch {
    // A key that does not fit the algorithm (an EC key for RS256): the signature does not verify.
    return false;
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** Whether JSON nests deeper than `limit` objects and arrays (iterative, so any depth is safe to ask about). */
function deeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}

function hasNumber(value: unknown): boolean {
  if (typeof value === 'number') return true;
  if (Array.isArray(value)) return value.some(hasNumber);
  return isJsonObject(value) && Object.values(value).some(hasNumber);
}
