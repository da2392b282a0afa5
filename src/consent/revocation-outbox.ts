/**
 * Revocations accepted by this service and not yet confirmed by the ledger: the durable local deny (every consent
 * decision consults it) and the outbox a retrier drains to the ledger.
 *
 * An entry is written (and fsync'd) before the Consent version that revokes is stored, so a revocation takes
 * effect at once, survives restarts and the ledger being away, and ends only when the ledger holds the grant as
 * revoked (or a newer grant of the same key committed by this service replaces it). One small JSON file, rewritten
 * atomically on each change: revocations are rare. Pseudonyms only, no health data.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export interface PendingRevocation {
  /** Pseudonyms, as the consent cache keys grants (another member's participant: `<mspId>|<pseudonym>`). */
  patient: string;
  grantee: string;
  consent: string;
  /** Who revoked (pseudonym) and whether it was recorded in person, for the RevokeAccess transaction. */
  actor: string;
  inPerson: boolean;
  /**
   * Block of the grant record this revokes (-1: not known). A revoked record of the key committed in a later block
   * confirms the revocation; an older one (a revocation before a re-grant) does not.
   */
  grantBlock: number;
}

interface OutboxFile {
  version: 1;
  revocations: PendingRevocation[];
}

export class RevocationOutbox {
  private readonly entries = new Map<string, PendingRevocation>();

  /**
   * Loads the entries kept in `file` (none: in memory only). An unreadable file is an error, never an empty
   * outbox: forgetting a revocation would put a revoked grant back in force.
   */
  constructor(
    private readonly file: string | undefined,
    private readonly keyOf: (entry: PendingRevocation) => string,
  ) {
    if (!file) return;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    let parsed: OutboxFile;
    try {
      parsed = JSON.parse(text) as OutboxFile;
    } catch {
      throw new Error(
        `the pending revocations file ${file} is not valid JSON: restore it from a backup (deleting it would put revoked grants back in force until the ledger has them)`,
      );
    }
    for (const entry of parsed.revocations) this.entries.set(keyOf(entry), entry);
  }

  get size(): number {
    return this.entries.size;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  get(key: string): PendingRevocation | undefined {
    return this.entries.get(key);
  }

  values(): PendingRevocation[] {
    return [...this.entries.values()];
  }

  /** Adds entries and makes them durable before returning (throws when they could not be written). */
  add(entries: PendingRevocation[]): void {
    if (entries.length === 0) return;
    for (const entry of entries) this.entries.set(this.keyOf(entry), entry);
    try {
      this.persist();
    } catch (err) {
      for (const entry of entries) this.entries.delete(this.keyOf(entry));
      throw err;
    }
  }

  /** Removes entries (confirmed on the ledger, or their Consent was not stored). */
  remove(keys: Iterable<string>): void {
    let changed = false;
    for (const key of keys) changed = this.entries.delete(key) || changed;
    if (changed) this.persist();
  }

  private persist(): void {
    if (!this.file) return;
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    const body: OutboxFile = { version: 1, revocations: [...this.entries.values()] };
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(body));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
    // The rename itself must survive a crash: sync the directory entry.
    const dirFd = openSync(dirname(this.file), 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  }
}
