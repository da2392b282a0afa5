/**
 * The storage failing under a request (disk full, I/O errors): the one classification, the 503 it answers (with
 * Retry-After) and a log that speaks once per condition. Writers (the store's callers, batch entries, the access
 * audit) and the HTTP error handler (src/fhir/http/errors.ts) share it.
 */
import { FhirError, fhirError } from '../outcome.js';

/** The storage failing under a request: full (no space) or an I/O error of the disk. */
export type StorageFault = 'full' | 'io';

/** How long a client should wait before retrying a request refused because the storage failed (seconds). */
export const STORAGE_RETRY_AFTER_SECONDS = 30;

/**
 * The one classification of storage failures (SQLite's SQLITE_FULL, SQLITE_IOERR_*, the OS's ENOSPC, EDQUOT, EIO),
 * looked for along the error's `cause` chain (a failed transaction wraps the write's error).
 */
export function storageFaultOf(err: unknown): StorageFault | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== 'string') continue;
    if (code === 'SQLITE_FULL' || code === 'ENOSPC' || code === 'EDQUOT') return 'full';
    if (code.startsWith('SQLITE_IOERR') || code === 'EIO') return 'io';
  }
  return undefined;
}

const STORAGE_FAULT_TEXT: Record<StorageFault, string> = {
  full: 'The server has no storage space left; nothing was stored. Retry later',
  io: 'The server cannot write to its storage right now; nothing was stored. Retry later',
};

/** The 503 FhirError (with Retry-After) a storage failure answers, or undefined for any other error. */
export function storageFaultError(err: unknown): FhirError | undefined {
  const fault = storageFaultOf(err);
  if (!fault) return undefined;
  return fhirError('storage-unavailable', STORAGE_FAULT_TEXT[fault], {
    headers: { 'retry-after': String(STORAGE_RETRY_AFTER_SECONDS) },
    cause: err,
  });
}

/**
 * Logs a storage condition once when it starts (with the first error) and once when it clears, instead of once
 * per refused request.
 */
export class StorageFaultLog {
  private current: StorageFault | undefined;
  private refused = 0;

  constructor(
    private readonly log: { error(obj: object, msg: string): void; info(obj: object, msg: string): void },
    private readonly what: string,
  ) {}

  get active(): StorageFault | undefined {
    return this.current;
  }

  fault(kind: StorageFault, err: unknown): void {
    this.refused++;
    if (this.current === kind) return;
    this.current = kind;
    const code = (err as { code?: unknown } | null)?.code;
    this.log.error(
      { fault: kind, code: typeof code === 'string' ? code : undefined },
      kind === 'full'
        ? `${this.what}: the storage is full; refusing with 503 until it has space again`
        : `${this.what}: the storage fails to write (I/O error); refusing with 503 until it writes again`,
    );
  }

  cleared(): void {
    if (this.current === undefined) return;
    this.log.info(
      { fault: this.current, refusedMeanwhile: this.refused },
      `${this.what}: the storage writes again`,
    );
    this.current = undefined;
    this.refused = 0;
  }
}
