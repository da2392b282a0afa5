/**
 * Wires the integrity path for one data directory: the custodian HMAC key (secrets/hmac.key), the batch
 * journal (integrity.sqlite), the anchoring worker, the verifier and the audit. src/app/app.ts builds it when a
 * ledger is configured; `hie-ledger verify` and `hie-ledger erase` open it over an existing data directory.
 */
import path from 'node:path';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import { loadOrCreateKeyring, type LedgerKeyring } from './hashing.js';
import { AnchorJournal } from './anchor-journal.js';
import { Anchorer, type AnchoringOptions } from './anchorer.js';
import { patientCompartments } from '../fhir/search/definitions.js';
import { extractIndex } from '../fhir/search/index-entries.js';
import {
  IntegrityVerifier,
  auditStore,
  type AuditProgress,
  type AuditReport,
  type DerivedRows,
} from './verification.js';
import type { Ledger } from '../ledger/ledger.js';

interface Logger {
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
}

export interface IntegrityOptions {
  dataDir: string;
  store: ResourceStore;
  ledger: Ledger;
  anchoring?: Partial<AnchoringOptions>;
  log?: Logger;
  /** The journal's SQLite file; default `dataDir/integrity.sqlite`. */
  journalFile?: string;
  /**
   * How the audit recomputes patient compartments and search index rows from a version's text: by default the
   * functions the write path uses (src/app/app.ts passes the same to every FhirContext).
   */
  derivedRows?: DerivedRows;
}

/** The write path's derivations (src/app/app.ts: patientsOf, indexEntries). */
export const WRITE_PATH_DERIVED_ROWS: DerivedRows = {
  patientsOf: patientCompartments,
  indexEntries: extractIndex,
};

export interface IntegrityService {
  keyring: LedgerKeyring;
  journal: AnchorJournal;
  anchorer: Anchorer;
  verifier: IntegrityVerifier;
  audit(onProgress?: (progress: AuditProgress) => void): Promise<AuditReport>;
  /** Stops the worker (pending anchors stay queued for the next start) and closes the journal. */
  close(): Promise<void>;
}

export function journalPath(dataDir: string): string {
  return path.join(dataDir, 'integrity.sqlite');
}

export async function openIntegrity(options: IntegrityOptions): Promise<IntegrityService> {
  const keyring = await loadOrCreateKeyring(options.dataDir);
  const journal = AnchorJournal.open(options.journalFile ?? journalPath(options.dataDir));
  const anchorer = new Anchorer(
    options.store,
    options.ledger,
    keyring,
    journal,
    options.anchoring,
    options.log,
  );
  const verifier = new IntegrityVerifier(options.store, options.ledger, journal);
  return {
    keyring,
    journal,
    anchorer,
    verifier,
    audit: (onProgress) =>
      auditStore(
        options.store,
        options.ledger,
        journal,
        onProgress,
        options.derivedRows ?? WRITE_PATH_DERIVED_ROWS,
      ),
    async close() {
      await anchorer.stop();
      journal.close();
    },
  };
}
