/**
 * Wires the integrity path for one data directory: the custodian HMAC key (secrets/hmac.key), the batch
 * journal (integrity.sqlite; with a PostgreSQL store, in the database, shared by its replicas), the anchoring worker, the verifier and the audit. src/app/app.ts builds it when a
 * ledger is configured; `hie-ledger verify` and `hie-ledger erase` open it over an existing data directory.
 */
import path from 'node:path';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import { loadOrCreateKeyring, type LedgerKeyring } from './hashing.js';
import { AnchorJournal, type BatchJournal } from './anchor-journal.js';
import { PostgresAnchorJournal } from './postgres-anchor-journal.js';
import { PostgresResourceStore } from '../fhir/store/postgres/postgres-store.js';
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
  /** The journal's SQLite file; default `dataDir/integrity.sqlite` (SQLite stores; PostgreSQL keeps it in the database). */
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
  journal: BatchJournal;
  /** Where the journal is, for messages: its file, or the database's schema. */
  journalLocation: string;
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
  const { journal, journalLocation } = openJournal(options);
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
    journalLocation,
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
      await journal.close();
    },
  };
}

/**
 * The batch journal beside the store: in the data directory's SQLite file, or, for a PostgreSQL store, in its
 * database (migration 5), where every replica finds the batches the others journalled and the drain lease.
 */
function openJournal(options: IntegrityOptions): { journal: BatchJournal; journalLocation: string } {
  const { store } = options;
  if (store instanceof PostgresResourceStore && options.journalFile === undefined) {
    return {
      journal: new PostgresAnchorJournal({ pool: store.pool, schema: store.schema, lockKey: store.lockKey }),
      journalLocation: `the PostgreSQL schema ${store.schema}`,
    };
  }
  const file = options.journalFile ?? journalPath(options.dataDir);
  return { journal: AnchorJournal.open(file), journalLocation: file };
}
