/**
 * Paging cursors sealed to the caller: AES-256-GCM over the store's cursor, with the caller's identity (pseudonym,
 * role, organisation) as associated data. A cursor is opaque (what the store put in it, such as positions and
 * totals, cannot be read) and only the caller it was made for can use it: replayed by anyone else, or altered, it
 * does not open, and the request is answered as for any invalid cursor.
 *
 * The key is derived (HKDF) from the service's access-token key (DATA/secrets/access-token.key), so cursors survive
 * a restart; without a data directory (OpenAccess in tests) a random key of this process is used.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { AccessPolicy, Caller, CursorSeal } from './access-policy.js';

const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Longest sealed cursor opened (a search cursor holds its sort values: a long string sort value makes it long). */
export const MAX_SEALED = 8192;

/** The cursor key for a service secret (a different key than the secret itself signs tokens with). */
export function cursorKeyOf(secret: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'hie-ledger paging cursor v1', 32));
}

let processKey: Buffer | undefined;

/** A key for this process only, for policies without a configured secret. */
export function processCursorKey(): Buffer {
  return (processKey ??= randomBytes(32));
}

/** What a cursor is bound to: everything that decides what the caller may see. */
function bindingOf(caller: Caller): Buffer {
  return Buffer.from(
    JSON.stringify([caller.participant, caller.role, caller.organization ?? null, caller.fhirUser ?? null]),
  );
}

export class CallerCursorSeal implements CursorSeal {
  private readonly binding: Buffer;

  constructor(
    private readonly key: Buffer,
    caller: Caller,
  ) {
    this.binding = bindingOf(caller);
  }

  seal(cursor: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(this.binding);
    const body = Buffer.concat([cipher.update(cursor, 'utf8'), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
  }

  open(sealed: string): string | undefined {
    if (sealed.length > MAX_SEALED || !/^[A-Za-z0-9_-]+$/.test(sealed)) return undefined;
    const bytes = Buffer.from(sealed, 'base64url');
    // Only the text seal() made: trailing bits the decoder would drop make another text for the same bytes.
    if (bytes.length < IV_BYTES + TAG_BYTES || bytes.toString('base64url') !== sealed) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, bytes.subarray(0, IV_BYTES));
      decipher.setAAD(this.binding);
      decipher.setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([
        decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)),
        decipher.final(),
      ]).toString('utf8');
    } catch {
      return undefined;
    }
  }
}

/** The caller's cursor seal; OpenAccess and other policies without one get a seal of this process. */
export function cursorSealOf(access: AccessPolicy): CursorSeal {
  return access.cursors ?? new CallerCursorSeal(processCursorKey(), access.caller);
}
