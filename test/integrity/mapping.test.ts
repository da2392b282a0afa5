import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { canonicalize, canonicalizeText } from '../../src/fhir/canonical.js';
import {
  canonicalOfVersion,
  hmacKeyPath,
  leafHashOfCanonical,
  loadOrCreateKeyring,
  newSalt,
} from '../../src/integrity/hashing.js';
import { MerkleTree, leafNode, merkleRoot, proofSides, verifyProof } from '../../src/integrity/merkle.js';
import { JsonSyntaxError, parseFhirJson, stringifyFhirJson } from '../../src/fhir/fhir-json.js';

const sha256 = (...parts: Buffer[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const hexHash = (i: number) => createHash('sha256').update(`leaf ${i}`).digest('hex');

describe('canonical form (RFC 8785 with numbers kept as written)', () => {
  it('sorts members by UTF-16 code units (RFC 8785 section 3.2.3 vector)', () => {
    const input =
      '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One",' +
      '"\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control","\\u00f6":"Latin Small Letter O With Diaeresis"}';
    // (Read the order from the text: Object.keys would list the integer-like "1" first.)
    const keys = [...canonicalizeText(input).matchAll(/"([^"]*)":"[^"]*"/g)].map((m) =>
      JSON.parse(`"${m[1]}"`),
    );
    expect(keys).toEqual(['\r', '1', '\u0080', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33']);
  });

  it('escapes strings and literals as RFC 8785 section 3.2.2 (the string and literals of its example)', () => {
    const input = `{
      "numbers": [1e+30, 4.5, 0.002, 1e-27],
      "string": "\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\"\\/",
      "literals": [null, true, false]
    }`;
    expect(canonicalizeText(input)).toBe(
      '{"literals":[null,true,false],"numbers":[1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });

  it('keeps every number exactly as written (FHIR decimal precision), nested and in arrays', () => {
    const text = '{ "b": [1.50, {"z": 105.00, "a": -0.0}], "a": 1E3, "c": 12345678901234567890, "d": 7 }';
    expect(canonicalizeText(text)).toBe(
      '{"a":1E3,"b":[1.50,{"a":-0.0,"z":105.00}],"c":12345678901234567890,"d":7}',
    );
  });

  it('gives the same text whatever the input order and whitespace', () => {
    const a = canonicalizeText(
      '{"resourceType":"Observation","valueQuantity":{"value":1.50,"unit":"mg"},"id":"x"}',
    );
    const b = canonicalizeText(
      '{\n  "id": "x",\n  "valueQuantity": { "unit": "mg", "value": 1.50 },\n  "resourceType": "Observation"\n}',
    );
    expect(a).toBe(b);
    expect(a).toBe('{"id":"x","resourceType":"Observation","valueQuantity":{"unit":"mg","value":1.50}}');
  });

  it('round-trips through the store serialisation unchanged', () => {
    const text = '{"resourceType":"Observation","valueQuantity":{"value":105.00}}';
    const stored = stringifyFhirJson(parseFhirJson(text));
    expect(canonicalizeText(stored)).toBe(canonicalizeText(text));
  });

  it('drops undefined members like JSON, and refuses non-finite numbers', () => {
    expect(canonicalize({ b: undefined, a: [undefined, 1] })).toBe('{"a":[null,1]}');
    expect(() => canonicalize({ a: Number.NaN })).toThrow(TypeError);
  });
});

describe('one-pass canonicalizeText agrees with canonicalize(parseFhirJson(text))', () => {
  const same = (text: string) => expect(canonicalizeText(text)).toBe(canonicalize(parseFhirJson(text)));

  it('on every resource of 4 Synthea bundles and 150 R4 examples, compact and pretty-printed', () => {
    const texts: string[] = [];
    const synthea = path.join('..', 'shared', 'data', 'synthea-bundles');
    for (const file of readdirSync(synthea).slice(0, 4)) {
      const bundle = parseFhirJson<{ entry: { resource: unknown }[] }>(
        readFileSync(path.join(synthea, file), 'utf8'),
      );
      for (const entry of bundle.entry) texts.push(stringifyFhirJson(entry.resource));
    }
    const examples = path.join('node_modules', 'hl7.fhir.r4.examples');
    // Small ones: the folder also holds whole-spec Bundles of tens of MB.
    const small = readdirSync(examples).filter(
      (f) => f.endsWith('.json') && statSync(path.join(examples, f)).size < 100_000,
    );
    for (const file of small.slice(0, 150)) {
      texts.push(readFileSync(path.join(examples, file), 'utf8'));
    }
    expect(texts.length).toBeGreaterThan(1000);
    for (const text of texts) {
      same(text);
      same(stringifyFhirJson(parseFhirJson(text), 2));
    }
  });

  it('on escapes, surrogates, literals, numbers and empty containers', () => {
    for (const text of [
      '{"a":"\\u00e9\\n\\t\\"","b":"\\ud83d\\ude00 😀","c":"\\ud800 lone","d":"\ud800"}',
      '[1.50, 105.00, -0, -0.0, 1E3, 1e-7, 0, 123456789012345678901234567890, true, false, null, {}, [], ""]',
      '{"\\u0041":1,"B":2,"a":{"z":[{"y":{}}]}}',
      '  "just a string"  ',
      '42',
    ]) {
      same(text);
    }
  });

  it('refuses what is not JSON, and duplicate member names', () => {
    for (const bad of [
      '',
      '{',
      '{"a":1,}',
      '[1,]',
      '{"a" 1}',
      '01',
      '1.',
      '.5',
      '+1',
      'tru',
      '"\\x"',
      '"a\nb"',
      '{"a":1} x',
      '{"a":1,"a":2}',
    ]) {
      expect(() => canonicalizeText(bad), bad).toThrow(JsonSyntaxError);
    }
  });
});

describe('salted leaf hashes and ledger keys', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('hashes salt || canonical UTF-8, and a different salt or one digit changes it', () => {
    const salt = newSalt();
    expect(salt).toMatch(/^[0-9a-f]{64}$/);
    const canonical = canonicalizeText('{"resourceType":"Observation","valueQuantity":{"value":1.50}}');
    const expected = sha256(Buffer.from(salt, 'hex'), Buffer.from(canonical, 'utf8')).toString('hex');
    expect(leafHashOfCanonical(salt, canonical)).toBe(expected);
    expect(leafHashOfCanonical(newSalt(), canonical)).not.toBe(expected);
    const lessPrecise = canonicalizeText('{"resourceType":"Observation","valueQuantity":{"value":1.5}}');
    expect(leafHashOfCanonical(salt, lessPrecise)).not.toBe(expected);
  });

  it('draws every salt fresh: 32 bytes, none repeated across refills of the random pool', () => {
    const salts = Array.from({ length: 1000 }, () => newSalt());
    for (const salt of salts) expect(salt).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(salts).size).toBe(salts.length);
  });

  it('has a fixed canonical tombstone for deletions', () => {
    const c = canonicalOfVersion({
      resourceType: 'Patient',
      id: 'p1',
      versionId: 3,
      lastUpdated: '2026-11-25T16:00:00.000Z',
      deleted: true,
    });
    expect(c).toBe(
      canonicalize({
        resourceType: 'Patient',
        id: 'p1',
        versionId: '3',
        lastUpdated: '2026-11-25T16:00:00.000Z',
        deleted: true,
      }),
    );
  });

  it('creates the custodian HMAC key once, mode 0600, and derives stable keyed ledger keys', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hie-keys-'));
    dirs.push(dir);
    const [a, b] = await Promise.all([loadOrCreateKeyring(dir), loadOrCreateKeyring(dir)]);
    const key = a.ledgerKey('Patient', '123', 1);
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(b.ledgerKey('Patient', '123', 1)).toBe(key);
    expect((await loadOrCreateKeyring(dir)).ledgerKey('Patient', '123', 1)).toBe(key);
    expect(a.ledgerKey('Patient', '123', 2)).not.toBe(key);
    // keyed: another custodian's key gives another ledger key for the same version (no guessable hash of the id)
    const otherDir = await mkdtemp(path.join(os.tmpdir(), 'hie-keys-'));
    dirs.push(otherDir);
    expect((await loadOrCreateKeyring(otherDir)).ledgerKey('Patient', '123', 1)).not.toBe(key);
    expect((await stat(hmacKeyPath(dir))).mode & 0o777).toBe(0o600);
    const secret = Buffer.from((await readFile(hmacKeyPath(dir), 'utf8')).trim(), 'hex');
    const { createHmac } = await import('node:crypto');
    expect(key).toBe(createHmac('sha256', secret).update('Patient/123/_history/1').digest('hex'));
  });
});

describe('Merkle batches', () => {
  it('follows the documented rule for 1, 2 and 3 leaves', () => {
    const [a, b, c] = [hexHash(0), hexHash(1), hexHash(2)];
    const la = sha256(Buffer.from([0]), Buffer.from(a, 'hex'));
    const lb = sha256(Buffer.from([0]), Buffer.from(b, 'hex'));
    const lc = sha256(Buffer.from([0]), Buffer.from(c, 'hex'));
    expect(leafNode(a)).toEqual(la);
    expect(merkleRoot([a])).toBe(la.toString('hex'));
    const ab = sha256(Buffer.from([1]), la, lb);
    expect(merkleRoot([a, b])).toBe(ab.toString('hex'));
    // The odd third node is promoted unchanged.
    expect(merkleRoot([a, b, c])).toBe(sha256(Buffer.from([1]), ab, lc).toString('hex'));
  });

  it.each([1, 2, 3, 5, 8, 13, 100, 1000])('proves every leaf of a batch of %i', (n) => {
    const leaves = Array.from({ length: n }, (_, i) => hexHash(i));
    const tree = new MerkleTree(leaves);
    for (let i = 0; i < n; i++) {
      const proof = tree.proof(i);
      expect(proof.map((s) => s.side)).toEqual(proofSides(i, n));
      expect(verifyProof(leaves[i], proof, tree.root, { leafIndex: i, leafCount: n })).toBe(true);
    }
  });

  it('rejects a tampered leaf, sibling, side, root or position', () => {
    const leaves = Array.from({ length: 7 }, (_, i) => hexHash(i));
    const tree = new MerkleTree(leaves);
    const proof = tree.proof(4);
    const position = { leafIndex: 4, leafCount: 7 };
    expect(verifyProof(leaves[4], proof, tree.root, position)).toBe(true);
    expect(verifyProof(leaves[5], proof, tree.root, position)).toBe(false);
    const flipped = proof.map((s, i) =>
      i === 0 ? { ...s, hash: s.hash.replace(/^./, (c) => (c === '0' ? '1' : '0')) } : s,
    );
    expect(verifyProof(leaves[4], flipped, tree.root, position)).toBe(false);
    const swapped = proof.map((s, i) =>
      i === 0 ? { ...s, side: s.side === 'left' ? ('right' as const) : ('left' as const) } : s,
    );
    expect(verifyProof(leaves[4], swapped, tree.root)).toBe(false);
    expect(verifyProof(leaves[4], proof, merkleRoot(leaves.slice(0, 6)), position)).toBe(false);
    expect(verifyProof(leaves[4], proof, tree.root, { leafIndex: 3, leafCount: 7 })).toBe(false);
    expect(verifyProof(leaves[4], proof.slice(1), tree.root)).toBe(false);
    expect(() => tree.proof(7)).toThrow(RangeError);
  });
});
