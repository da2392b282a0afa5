/**
 * The ResourceStore port: everything the FHIR core needs from persistence, and nothing more.
 * Adapters: sqlite/ (embedded default) and, later, postgres/. Every adapter must pass
 * test/store/contract.ts unchanged.
 *
 * Contract (what every adapter guarantees):
 * - Every version of every resource is kept. Version ids are 1, 2, 3 ... per resource, assigned by the store.
 * - A delete is a new version with `deleted: true` and no body; a later write revives the resource with the next version.
 * - One `write` is one atomic transaction: the version row, its search index rows and its pending anchor
 *   are all stored, or none is. `ifMatch` is checked inside that transaction, so of two writers with the same
 *   `ifMatch` exactly one wins and the other gets a 412 FhirError.
 * - `lastUpdated` is assigned by the store at write time, strictly increasing across the whole store
 *   (ties broken by adding microseconds' worth of milliseconds is not allowed: use a monotonic clock per store).
 * - Resource bodies are stored and returned as text exactly as serialised by src/fhir/fhir-json.ts,
 *   so decimals keep their written precision.
 */
import type { FhirResource } from '../fhir-json.js';
import type { ReadScope } from './search-query.js';
import type { StoreSearchRequest, StoreSearchResult } from './search-query.js';

export interface VersionKey {
  resourceType: string;
  id: string;
  versionId: number;
}

export interface StoredVersion extends VersionKey {
  /** ISO 8601 instant with milliseconds, e.g. 2026-11-25T16:03:00.123Z */
  lastUpdated: string;
  deleted: boolean;
  /** The resource as served (meta.versionId and meta.lastUpdated included); undefined when deleted. */
  json?: string;
  /** The organisation (e.g. `Organization/abc`) that wrote this version through this service: its custodian. */
  custodian?: string;
  /** Patient compartments this version belongs to, as `Patient/{id}` references. */
  patients?: string[];
  /** The HTTP method that produced this version (for history bundles' entry.request). */
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE';
}

/**
 * A version as `vreadManyBytes` gives it: its stored text as UTF-8 bytes (`jsonBytes`, absent when deleted) instead
 * of a string, for a caller that copies the text as it is (a `$export` file line): no decode to a string and encode
 * back per version.
 */
export interface StoredVersionBytes extends Omit<StoredVersion, 'json'> {
  jsonBytes?: Uint8Array;
}

/** A search index row extracted at write time (src/fhir/search/ computes them). */
export interface IndexEntry {
  /** Search parameter code, e.g. `subject`, `code`, `_lastUpdated`. */
  param: string;
  type: 'string' | 'token' | 'reference' | 'date' | 'number' | 'quantity' | 'uri' | 'composite' | 'special';
  /** Normalised values; meaning per type is documented in src/fhir/search/index-entries.ts. */
  system?: string;
  value?: string;
  /** Numeric or date ranges as sortable values (dates: epoch ms). */
  low?: number;
  high?: number;
  /** For reference params: the target `Type/id`. */
  reference?: string;
}

/** An anchor waiting to go to the ledger, queued in the same transaction as its version. */
export interface PendingAnchor extends VersionKey {
  /** Per-version random salt (hex); stays in the custodian's store, never on the ledger. */
  salt: string;
  /** SHA-256 leaf hash (hex) of the salted canonical form; see src/integrity/hashing.ts. */
  leafHash: string;
  /** Ledger key: keyed HMAC of type, id and version (hex). */
  ledgerKey: string;
  /**
   * The leaf format `leafHash` was computed in (src/integrity/hashing.ts; docs/integrity.md): 2 also commits to the
   * custodian. Absent: 1, the format of anchors written before leaf formats were recorded.
   */
  leafVersion?: 1 | 2;
}

export interface AnchorReference {
  /** Ledger transaction that committed the batch containing this leaf. */
  transactionId: string;
  blockNumber: number;
  batchId: string;
  /** Position of the leaf in its batch and the batch size, to rebuild the Merkle proof. */
  leafIndex: number;
  leafCount: number;
  root: string;
}

export type AnchorState =
  | (PendingAnchor & { status: 'pending' })
  | (PendingAnchor & { status: 'anchored'; anchor: AnchorReference })
  /** The salt was erased: the on-chain hash is no longer linkable to the data (see docs/erasure.md). */
  | (VersionKey & { status: 'erased' });

export interface WriteRequest {
  resourceType: string;
  id: string;
  /** The resource to store; the store sets `id`, `meta.versionId` and `meta.lastUpdated` on its own copy. Absent for deletes. */
  resource?: FhirResource;
  method: StoredVersion['method'];
  /** Refuse with 412 unless the current version is exactly this one. */
  ifMatch?: number;
  /** Refuse with 409 (for creates with a server id: never happens) or 412 if the resource already exists and is not deleted. */
  ifNoneExist?: boolean;
  /**
   * The writer found `resource` identical to version `ifMatch` (meta.versionId and meta.lastUpdated aside): store
   * nothing and return that version, if it is still the current one (else 412, as for any If-Match). No new
   * version, index rows or anchor; store decorators still see the write (src/consent/consent-store.ts).
   */
  unchanged?: boolean;
  custodian?: string;
  /**
   * Who asks for this write (the caller's pseudonym, role, organisation), for store decorators that act on the
   * ledger on the caller's behalf (src/consent/consent-store.ts). Stores do not keep it.
   */
  actor?: { participant: string; role: string; organization?: string };
  patients?: string[];
  /** Search index rows for this version (replace those of the previous version). */
  index?: IndexEntry[];
  /**
   * Called inside the write transaction with the exact stored text, before commit:
   * returns the anchor to queue with this version (the integrity path), or undefined for none. `keyEpoch`: the
   * store's restore epoch (PostgreSQL: bumped after a restore, so a version number reused after it never reuses
   * a ledger key already anchored; 0 or absent otherwise).
   */
  anchor?: (version: StoredVersion & { json?: string }, keyEpoch?: number) => PendingAnchor | undefined;
}

export interface HistoryQuery {
  resourceType?: string;
  id?: string;
  /** Only versions with lastUpdated >= since. */
  since?: string;
  /** Only versions that were current at this instant (lastUpdated <= at, newest per resource first). */
  at?: string;
  count: number;
  /** Opaque cursor from a previous page. */
  cursor?: string;
  /**
   * The caller's visibility (AccessPolicy.sees): when given, versions it refuses are not counted, paged or
   * returned, as if they did not exist (total, page sizes and cursors count visible versions only).
   */
  visible?: (version: StoredVersion) => boolean;
  /**
   * The caller's read scope of `resourceType` (type and instance level, with `visible`): an adapter may filter
   * with it inside its query so hidden versions cost less; `visible` still decides every version.
   */
  scope?: ReadScope;
}

export interface HistoryPage {
  versions: StoredVersion[];
  /** Total versions matching (visible ones, with HistoryQuery.visible) (for Bundle.total). */
  total: number;
  /** Cursor of the next page, if any. */
  next?: string;
}

// The start-up integrity check of stores that have one (SQLite: src/fhir/store/sqlite/integrity-check.ts).
export type IntegrityCheckMode = 'full' | 'quick';

/** What the readiness check reads: still checking, passed, or failed (with where and what). */
export type StoreIntegrityStatus = 'checking' | 'ok' | { failed: string };

export interface IntegrityCheckResult {
  ok: boolean;
  mode: IntegrityCheckMode;
  /** Checked in a worker thread while the store served (large stores). */
  background: boolean;
  /** How long the check took (for the log; never asserted). */
  ms: number;
  /** SQLite's messages, at most MAX_MESSAGES (sqlite/integrity-check.ts). */
  messages: string[];
  /** The tables and indexes the messages point at, e.g. `table resource_version`, `index search_index_value`. */
  where: string[];
}

export interface ResourceStore {
  /** Create tables / run migrations. Idempotent. */
  init(): Promise<void>;
  close(): Promise<void>;

  /** The current version (possibly a deletion), or undefined if the resource never existed. */
  read(resourceType: string, id: string): Promise<StoredVersion | undefined>;
  vread(resourceType: string, id: string, versionId: number): Promise<StoredVersion | undefined>;
  /**
   * vread of many versions in one call (a `$export` page): `result[i]` belongs to `keys[i]`, undefined where there is
   * no such version. The stored texts as they are (no parse).
   */
  vreadMany(keys: readonly VersionKey[]): Promise<(StoredVersion | undefined)[]>;
  /**
   * vreadMany with each stored text as its UTF-8 bytes (exactly the bytes of vreadMany's `json`, however the adapter
   * keeps them on disk): `$export` appends them to its files as they are. Absent: callers encode vreadMany's texts.
   */
  vreadManyBytes?(keys: readonly VersionKey[]): Promise<(StoredVersionBytes | undefined)[]>;
  /**
   * Store a new version. A DELETE of a resource that never existed throws a 404 FhirError (notFound); a DELETE of
   * a resource whose current version is already a deletion stores nothing and returns that deletion (FHIR: deleting
   * a deleted resource succeeds and changes nothing). The HTTP layer decides the status it answers with.
   */
  write(request: WriteRequest): Promise<StoredVersion>;
  history(query: HistoryQuery): Promise<HistoryPage>;

  /**
   * Run several reads and writes as one atomic transaction (FHIR transaction bundles).
   * Writes of other callers wait; an exception rolls everything back. `work` reaches the store only through
   * the store it is given: a call to the outer store from inside `work` waits for the transaction to end.
   */
  transaction<T>(work: (store: ResourceStore) => Promise<T>): Promise<T>;

  /** Current versions (not deleted) matching a compiled search (search-query.ts; produced by src/fhir/search/). */
  search?(request: StoreSearchRequest): Promise<StoreSearchResult>;

  // The integrity outbox (src/integrity/anchorer.ts drains it).
  pendingAnchors(limit: number): Promise<PendingAnchor[]>;
  markAnchored(
    keys: VersionKey[],
    anchor: Omit<AnchorReference, 'leafIndex'> & { leafIndexes: number[] },
  ): Promise<void>;
  anchorState(key: VersionKey): Promise<AnchorState | undefined>;
  /**
   * anchorState of many versions in one read (a custodian's answer needs every record's): `result[i]` belongs to
   * `keys[i]`, undefined where it has none.
   */
  anchorStates(keys: readonly VersionKey[]): Promise<(AnchorState | undefined)[]>;
  /** Every stored version with its anchor state, in store order, for the audit (`hie-ledger verify`). */
  allVersions(): AsyncIterable<{ version: StoredVersion; anchor?: AnchorState }>;
  /**
   * Erase the salts of a resource's versions (GDPR-style erasure; see docs/erasure.md). Returns how many versions
   * were newly erased; their anchor state becomes `erased` and they leave the pending outbox.
   */
  eraseSalts(resourceType: string, id: string): Promise<number>;
  /**
   * Erase a resource's content (GDPR-style erasure, after eraseSalts; docs/erasure.md): the stored text and patient
   * compartments of every version and its search index rows are removed; the version rows stay, as deletions, so
   * history and the integrity audit still account for them. Returns how many versions lost their content.
   * Optional: `hie-ledger erase` reports the bodies as kept when an adapter lacks it.
   */
  eraseContent?(resourceType: string, id: string): Promise<number>;

  /** The search index rows stored for the resource's current version (none when deleted or unknown). */
  indexEntries?(resourceType: string, id: string): Promise<IndexEntry[]>;
  /**
   * Replaces the search index rows of a resource whose current version is still `key.versionId` (and not deleted),
   * without a new version (`$reindex`, src/bulk/reindex.ts: a custom search parameter added after it was written).
   * False, and nothing changed, when the resource moved on meanwhile (its write indexed it). Atomic with writes.
   */
  replaceIndex?(key: VersionKey, entries: readonly IndexEntry[]): Promise<boolean>;

  /**
   * Re-extracts the index rows of current versions when a migration asked for it (table `index_rebuild`: a change
   * of what index rows hold that SQL alone cannot make, such as quantities in UCUM canonical units), with `extract`
   * (the stored text -> its rows, as a write computes them), in batches of one transaction each, resumable after a
   * stop. Resolves with how many resources were re-indexed (0 when nothing was pending). docs/store.md.
   */
  rebuildIndex?(extract: (json: string) => IndexEntry[]): Promise<number>;

  /** The start-up integrity check (readiness reads it): 'checking', 'ok', or failed. Absent: the adapter has none. */
  integrityStatus?(): StoreIntegrityStatus;
  /** The start-up check's result once it has finished (undefined when it is off), for the log. */
  integrityChecked?(): Promise<IntegrityCheckResult | undefined>;
}
