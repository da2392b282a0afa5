/**
 * Salted hashes and pseudonymous ledger keys of resource versions (the integrity path; docs/integrity.md).
 *
 * - salt: 32 random bytes per version, kept by the custodian only. Without it, the on-chain hash cannot be
 *   linked to (or brute-forced from) the data; erasing it makes the hash unlinkable (docs/erasure.md).
 * - leafHash = SHA-256(salt || UTF-8(canonical form)), hex.
 * - ledger key = HMAC-SHA-256(custodian key, `${type}/${id}/_history/${vid}`), hex: no resource id on the chain.
 */
import { createHash, createHmac, randomBytes, randomFillSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { canonicalizeText } from './canonical.js';

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

/** SHA-256(salt bytes || UTF-8 canonical text), hex. */
export function leafHashOfCanonical(saltHex: string, canonical: string): string {
  return createHash('sha256').update(Buffer.from(saltHex, 'hex')).update(canonical, 'utf8').digest('hex');
}

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

export function versionReference(resourceType: string, id: string, versionId: number): string {
  return `${resourceType}/${id}/_history/${versionId}`;
}

/** The custodian's secret for ledger keys. Holds the key bytes; never logged, never on the ledger. */
export class LedgerKeyring {
  constructor(private readonly key: Buffer) {
    if (key.length < 16) throw new Error('The custodian HMAC key is too short');
  }

  ledgerKey(resourceType: string, id: string, versionId: number): string {
    return createHmac('sha256', this.key)
      .update(versionReference(resourceType, id, versionId), 'utf8')
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
