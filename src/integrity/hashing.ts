/**
 * Salted hashes and pseudonymous ledger keys of resource versions (the integrity path; docs/integrity.md).
 *
 * - salt: 32 random bytes per version, kept by the custodian only. Without it, the on-chain hash cannot be
 *   linked to (or brute-forced from) the data; erasing it makes the hash unlinkable (docs/erasure.md).
 * - leafHash, by leaf format (recorded with each anchor; docs/integrity.md):
 *     v1 = SHA-256(salt || UTF-8(canonical form))                                   (anchors written before v2)
 *     v2 = SHA-256(salt || UTF-8("hie-ledger leaf v2\n" || JSON(custodian|null) || "\n" || canonical form))
 *   v2 also commits to the custodian, which decides who may read the version and cannot be recomputed from the text.
 * - ledger key = HMAC-SHA-256(custodian key, `${type}/${id}/_history/${vid}`), hex: no resource id on the chain.
 */
import { createHash, createHmac, randomBytes, randomFillSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { canonicalUtf8, canonicalizeText } from '../fhir/canonical.js';

export const SALT_BYTES = 32;
export const HMAC_KEY_BYTES = 32;

/** CSPRNG bytes drawn 4 KiB at a time: one call into OpenSSL per 128 salts instead of one per write. */
const saltPool = Buffer.alloc(SALT_BYTES * 128);
let saltPoolOffset = saltPool.length;

export function newSalt(): string {
  if (saltPoolOffset === saltPool.length) {
    randomFillSync(saltPool);
    saltPoolOffset = 0;
  }
  const salt = saltPool.toString('hex', saltPoolOffset, saltPoolOffset + SALT_BYTES);
  saltPoolOffset += SALT_BYTES;
  return salt;
}

/** SHA-256(salt bytes || UTF-8 canonical text), hex. The canonical form as text, or as its UTF-8 bytes. */
export function leafHashOfCanonical(saltHex: string, canonical: string | Uint8Array): string {
  const hash = createHash('sha256').update(Buffer.from(saltHex, 'hex'));
  return (typeof canonical === 'string' ? hash.update(canonical, 'utf8') : hash.update(canonical)).digest(
    'hex',
  );
}

/** The leaf formats: 1 (salt + canonical text), 2 (also the custodian). New anchors use CURRENT_LEAF_VERSION. */
export type LeafVersion = 1 | 2;
export const CURRENT_LEAF_VERSION: LeafVersion = 2;
/** Starts every v2 leaf input: no v1 input (canonical JSON, starting with `{`) can be read as a v2 one. */
const LEAF_V2_PREFIX = 'hie-ledger leaf v2\n';

export function isLeafVersion(value: unknown): value is LeafVersion {
  return value === 1 || value === 2;
}

/**
 * The leaf hash of a version in a given leaf format. v2 = SHA-256(salt || "hie-ledger leaf v2\n" ||
 * JSON.stringify(custodian ?? null) || "\n" || canonical): a JSON string literal ends at its one unescaped quote,
 * so the custodian and the canonical text cannot trade characters.
 */
export function leafHashOf(
  saltHex: string,
  /** The canonical form as text, or as its UTF-8 bytes (canonicalUtf8). */
  canonical: string | Uint8Array,
  leafVersion: LeafVersion,
  custodian: string | undefined,
): string {
  if (leafVersion === 1) return leafHashOfCanonical(saltHex, canonical);
  // Salt, prefix and custodian go in as one update (each update is a call into OpenSSL); same bytes as separate ones.
  const custodianJson = JSON.stringify(custodian ?? null);
  const room = Math.ceil(saltHex.length / 2) + LEAF_V2_PREFIX.length + 3 * custodianJson.length + 1;
  if (leafHead.length < room) leafHead = Buffer.allocUnsafe(Math.max(room, 2 * leafHead.length));
  // As Buffer.from(hex): the bytes of the leading valid hex digits.
  let size = leafHead.write(saltHex, 0, 'hex');
  size += leafHead.write(LEAF_V2_PREFIX, size, 'latin1');
  size += leafHead.write(custodianJson, size, 'utf8');
  leafHead[size++] = 0x0a;
  const hash = createHash('sha256').update(leafHead.subarray(0, size));
  return (typeof canonical === 'string' ? hash.update(canonical, 'utf8') : hash.update(canonical)).digest(
    'hex',
  );
}

/** Scratch for the head of a v2 leaf input (reused: hashing is synchronous). */
let leafHead = Buffer.allocUnsafe(512);

/** The canonical text hashed for a version: the canonical JSON of its body, or a fixed tombstone for a deletion. */
export function canonicalOfVersion(version: {
  resourceType: string;
  id: string;
  versionId: number;
  lastUpdated: string;
  deleted: boolean;
  json?: string;
}): string {
  if (!version.deleted && version.json !== undefined) return canonicalizeText(version.json);
  // A deletion has no body; its anchor commits to what was deleted and when (keys already in JCS order).
  return (
    `{"deleted":true,"id":${JSON.stringify(version.id)},"lastUpdated":${JSON.stringify(version.lastUpdated)},` +
    `"resourceType":${JSON.stringify(version.resourceType)},"versionId":${JSON.stringify(String(version.versionId))}}`
  );
}

/**
 * The leaf hash of a stored version: `leafHashOf(salt, canonicalOfVersion(version), leafVersion, custodian)`, with a
 * body's canonical form hashed as the UTF-8 bytes canonicalUtf8 writes straight into a buffer (the same bytes,
 * about half the CPU of building the canonical string and encoding it: every write and every verification pays it).
 * Throws as canonicalOfVersion for a body that is not JSON.
 */
export function leafHashOfVersion(
  saltHex: string,
  version: Parameters<typeof canonicalOfVersion>[0] & { custodian?: string },
  leafVersion: LeafVersion,
): string {
  const canonical =
    !version.deleted && version.json !== undefined
      ? canonicalUtf8(version.json).bytes
      : canonicalOfVersion(version);
  return leafHashOf(saltHex, canonical, leafVersion, version.custodian);
}

export function versionReference(resourceType: string, id: string, versionId: number): string {
  return `${resourceType}/${id}/_history/${versionId}`;
}

/** The custodian's secret for ledger keys. Holds the key bytes; never logged, never on the ledger. */
export class LedgerKeyring {
  constructor(private readonly key: Buffer) {
    if (key.length < 16) throw new Error('The custodian HMAC key is too short');
  }

  /**
   * `keyEpoch` > 0: the store was restored to an earlier point that many times (docs/replicas.md), so the version
   * number may have been anchored before under the plain key: the epoch makes the key a new one.
   */
  ledgerKey(resourceType: string, id: string, versionId: number, keyEpoch = 0): string {
    const reference = versionReference(resourceType, id, versionId);
    return createHmac('sha256', this.key)
      .update(keyEpoch > 0 ? `${reference}#epoch${keyEpoch}` : reference, 'utf8')
      .digest('hex');
  }
}

export function hmacKeyPath(dataDir: string): string {
  return path.join(dataDir, 'secrets', 'hmac.key');
}

/**
 * The custodian HMAC key of a data directory: `secrets/hmac.key` (hex text, mode 0600), generated at first start.
 * Creation is atomic and exclusive, so two processes starting together end up with the same key.
 */
export async function loadOrCreateKeyring(dataDir: string): Promise<LedgerKeyring> {
  const file = hmacKeyPath(dataDir);
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    await fs.access(file);
  } catch {
    // Write a complete key aside, then link it into place: atomic, and the first of two racing starts wins.
    const draft = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await fs.writeFile(draft, randomBytes(HMAC_KEY_BYTES).toString('hex') + '\n', { mode: 0o600 });
    try {
      await fs.link(draft, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      await fs.unlink(draft);
    }
  }
  const text = (await fs.readFile(file, 'utf8')).trim();
  if (!/^[0-9a-f]{32,}$/i.test(text)) throw new Error(`${file} does not hold a hex HMAC key`);
  return new LedgerKeyring(Buffer.from(text, 'hex'));
}
