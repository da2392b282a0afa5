/**
 * The bulk import engine's typed API (docs/import.md): `importSources(sources, options, sink)` in engine.ts loads
 * NDJSON files and Bundle files resource by resource through the same interactions as the REST API (validation,
 * index rows, custodian, consent store, anchoring hook), with a journal on disk that makes a run resumable.
 * The CLI (`hie-ledger import`, src/commands/import.ts) and a job runner (`$import`) both drive it.
 */
import type { FhirContext } from '../../fhir/interactions/types.js';
import type { FhirResource } from '../../fhir/fhir-json.js';
import type { FhirError, OperationOutcome } from '../../fhir/outcome.js';
import type { ValidationOptions, ValidationResult } from '../../fhir/validation/validator.js';
import type { CheckedText } from '../../fhir/validation/validation-pool.js';

/** One file to import: NDJSON (`.ndjson`, `.ndjson.gz`, one resource a line) or a Bundle (`.json`, `.json.gz`). */
export interface ImportSource {
  /** Absolute path of a file (folders are expanded by `discoverSources`). */
  path: string;
}

/** What to do with Consent resources (docs/import.md, "Consents"). */
export type ConsentHandling = 'refuse' | 'inert' | 'map';

/** One resource the import writes to a running service: `PUT Type/id`. */
export interface RemoteWrite {
  type: string;
  id: string;
  resource: FhirResource;
}

/** What the service answered for one write (a `batch` Bundle entry's response). */
export type RemoteWriteResult =
  { status: 'stored' | 'unchanged'; versionId: number } | { status: 'rejected'; error: FhirError };

/**
 * A running service the import writes to through its REST API (`hie-ledger import --url`): every write is the
 * API's own (validation, consent, custodian, anchoring happen there). Throws (not a result) when the service cannot
 * be used at all (unreachable, token refused): the run stops and the journal says where to resume.
 */
export interface RemoteTarget {
  /** Whether `Type/id` is stored (a relative reference the import does not hold resolves against it). */
  exists(type: string, id: string): Promise<boolean>;
  /** The ids of stored `type` resources matching `search` (a conditional reference; at most 2 needed). */
  matches(type: string, search: string): Promise<string[]>;
  /** The writes, as one `batch` Bundle of PUT entries; one result per write, in order. */
  write(writes: readonly RemoteWrite[]): Promise<RemoteWriteResult[]>;
}

export interface ImportOptions {
  /**
   * The FHIR context every resource is written through (store, validator, registry with `update` and
   * `search-type`, access policy of the importing caller, index, compartments and anchor hooks): no back door.
   * Exactly one of `context` and `remote`.
   */
  context?: FhirContext;
  /** A running service instead of a local store: resources are written through its API (no local check pass). */
  remote?: RemoteTarget;
  /** The journal (SQLite file) that holds the reference map, assigned ids, progress and rejections. */
  journalFile: string;
  /** Base URL used in FhirRequests (conditional references to `base/Type?...` resolve against it). */
  baseUrl: string;
  /** Consent resources: refused (default), stored without effect on grants (inert), or mapped to grants. */
  consents?: ConsentHandling;
  /** A transaction Bundle file is all or nothing (its entries roll back together); default: entries independent. */
  atomicBundles?: boolean;
  /** Resources per store transaction (default 2000). */
  batchSize?: number;
  /** `meta.source` for resources that have none (the source system, a URI). */
  source?: string;
  /** Anchors the outbox in Merkle batches after enough versions were stored (the integrity path's Anchorer). */
  anchors?: { drain(): Promise<number> };
  /** Drain anchors after at least this many new versions (default 4096); always at the end. */
  anchorEvery?: number;
  /**
   * Worker threads for the check pass's validation (`--workers`): the main thread parses, prepares and rewrites
   * references while they validate. Absent: validated on the main thread.
   */
  validationPool?: {
    readonly size: number;
    validate(texts: string[], options: ValidationOptions): Promise<(ValidationResult | null)[]>;
    /**
     * Digests and verdicts of the texts and, given `onExtras`, their index entries later (a check pool:
     * check-pool.ts): the check uses it when offered.
     */
    check?(
      texts: string[],
      options: ValidationOptions,
      onExtras?: (extras: unknown[]) => void,
    ): Promise<(CheckedText | null)[]>;
  };
  /**
   * The pool's `check` extras are exactly what `context.indexEntries` gives (check-pool.ts: the same extraction
   * and search parameters): the workers extract each checked resource's index entries, and the write takes them for the same
   * input instead of extracting them on this thread. Only for a context whose definitions do not change during
   * the run (the CLI; not the service's `$import`, whose custom parameters may change meanwhile).
   */
  indexOnWorkers?: boolean;
  /** Stop between batches (Ctrl-C): the run ends with `interrupted: true` and resumes from the journal. */
  signal?: AbortSignal;
  /** Test hook: called after each committed batch (journal updated) with how many batches this run committed. */
  afterBatch?: (batches: number) => void;
  /** Test hook: called after each batch's store commit, before its journal update (a crash there is replayed). */
  afterStoreCommit?: (batches: number) => void;
}

/** Where a resource came from: file and line (NDJSON) or bundle entry index. */
export interface SourcePosition {
  file: string;
  /** 1-based line of an NDJSON file. */
  line?: number;
  /** 0-based index of a Bundle entry. */
  entry?: number;
}

export type ResourceOutcome =
  | {
      status: 'stored' | 'unchanged';
      position: SourcePosition;
      resourceType: string;
      /** `Type/id` as stored. */
      target: string;
      versionId: number;
    }
  | {
      status: 'rejected';
      position: SourcePosition;
      resourceType?: string;
      target?: string;
      /** Why, with the file and line (or entry) in the diagnostics and the catalogue code in details. */
      outcome: OperationOutcome;
    };

export interface ImportProgress {
  phase: 'scan' | 'write' | 'anchor';
  /** Resources processed in this phase (a resumed run counts what earlier runs did). */
  done: number;
  total: number;
}

export interface ImportSink {
  /** Every resource's outcome, in source order (after its batch committed). */
  outcome(outcome: ResourceOutcome): void;
  progress?(progress: ImportProgress): void;
  /** The validation of each resource as its write was given it (the check's verdict or a new one). */
  validated?(result: ValidationResult): void;
}

export interface TypeCounts {
  /** Stored as a new version. */
  stored: number;
  /** Identical to the stored version: nothing stored (a re-import). */
  unchanged: number;
  rejected: number;
}

/** Milliseconds per phase of this run (the benchmark's split). */
export interface ImportTimings {
  parse: number;
  validate: number;
  index: number;
  /** The store's share: the write transactions without validation, index rows and anchor hashing. */
  store: number;
  /** Hashing in the write path plus the Merkle batches sent to the ledger. */
  anchor: number;
  total: number;
  /**
   * CPU time of the whole process over the run, all threads (the validation workers too), ms: on a machine shared
   * with other work, the figure that load does not inflate.
   */
  cpu?: number;
}

export interface ImportSummary {
  /** Counts by resource type over the whole import (earlier runs of the same journal included). */
  byType: Record<string, TypeCounts>;
  /** Consent handling used and how many Consent resources it applied to. */
  consents: { handling: ConsentHandling; seen: number };
  /** The run stopped on `signal`; run again to continue. */
  interrupted: boolean;
  timings: ImportTimings;
  /** Resources processed by this run. */
  processedThisRun: number;
  /** Writes of this run whose validation was answered by the check's verdict for the same input (validated once). */
  validationsReused: number;
  /** Writes of this run whose index entries were the workers' extraction of the same input. */
  indexesReused: number;
  /** Worker threads the check pass validated on (0: the main thread). */
  validationWorkers: number;
}
