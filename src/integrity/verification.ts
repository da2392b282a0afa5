/**
 * The integrity path's read side: prove one stored version against the ledger ($verify), and audit a whole
 * store (`hie-ledger verify`, the scheduled audit). docs/integrity.md describes the checks.
 *
 * A version is `anchored` (verified) when the leaf hash recomputed from its stored text and salt, with the
 * inclusion proof built from its batch's journalled leaves, leads to a root that the ledger holds with the same
 * leaf count. Anything else that was anchored is a `mismatch`. Versions still in the outbox are `pending`
 * (their queued hash is still checked locally); versions whose salt was erased are `erased`.
 */
import type {
  AnchorReference,
  AnchorState,
  IndexEntry,
  ResourceStore,
  StoredVersion,
  VersionKey,
} from '../fhir/store/resource-store.js';
import { parseFhirJson, type FhirResource } from '../fhir/fhir-json.js';
import { isBaseIndexRow } from '../fhir/search/definitions.js';
import { leafHashOfVersion, versionReference, type LeafVersion } from './hashing.js';
import {
  MerkleTree,
  ProvenNodes,
  leafTag,
  leafTagAt,
  merkleRoot,
  verifyProof,
  type ProofStep,
} from './merkle.js';
import type { BatchJournal, BatchMember, JournalBatch } from './anchor-journal.js';
import { AnchorContractClient, anchorCreatorMsp, type OnChainBatch } from './anchor-contract-client.js';
import type { Ledger } from '../ledger/ledger.js';

export type VerificationStatus =
  'anchored' | 'pending' | 'mismatch' | 'erased' | 'unanchored' | 'unverifiable';

export interface VersionVerification {
  /** `Type/id/_history/vid` */
  reference: string;
  status: VerificationStatus;
  /** True only when the version is proven against a root on the ledger. */
  verified: boolean;
  /** Why it is not verified (mismatch, unverifiable). */
  reason?: string;
  /** The leaf hash recomputed now from the stored text and salt (and custodian, leaf format 2). */
  hash?: string;
  /** The leaf format of the anchor (1: text; 2: text and custodian). */
  leafVersion?: LeafVersion;
  /** The custodian the leaf hash was recomputed with (leaf format 2). */
  custodian?: string;
  /** The leaf hash anchored (or queued) for this version, when it differs from `hash`. */
  expectedHash?: string;
  salt?: string;
  ledgerKey?: string;
  root?: string;
  transactionId?: string;
  blockNumber?: number;
  leafIndex?: number;
  leafCount?: number;
  proof?: ProofStep[];
  /** MSP id and proposal timestamp of the ledger transaction that anchored the batch. */
  anchoredBy?: string;
  anchoredAt?: string;
}

/**
 * The recomputed leaf hash of a stored version in the given leaf format (2 also covers the stored custodian), or
 * an error message when its text no longer parses.
 */
export function recomputeLeafHash(
  version: Pick<
    StoredVersion,
    'resourceType' | 'id' | 'versionId' | 'lastUpdated' | 'deleted' | 'json' | 'custodian'
  >,
  salt: string,
  leafVersion: LeafVersion = 1,
): { hash?: string; error?: string } {
  try {
    return { hash: leafHashOfVersion(salt, version, leafVersion) };
  } catch (err) {
    return { error: `the stored text no longer parses: ${err instanceof Error ? err.message : String(err)}` };
  }
}

const refOf = (k: VersionKey) => versionReference(k.resourceType, k.id, k.versionId);

/** What every verification of a version with anchor state reports. */
type VerificationBase = Pick<
  VersionVerification,
  'reference' | 'hash' | 'salt' | 'ledgerKey' | 'leafVersion' | 'custodian'
>;

/** An anchored version and where its anchor says it is: batch root, transaction, position. */
type LocatedVersion = VerificationBase &
  Pick<AnchorReference, 'root' | 'transactionId' | 'blockNumber' | 'leafIndex' | 'leafCount'>;

export class IntegrityVerifier {
  private readonly contract: AnchorContractClient;
  /** Recently used batch trees ($verify of neighbouring versions builds each tree once). */
  private readonly trees = new Map<string, { tree: MerkleTree; members: BatchMember[] }>();

  constructor(
    private readonly store: ResourceStore,
    ledger: Ledger,
    private readonly journal: BatchJournal,
  ) {
    this.contract = new AnchorContractClient(ledger);
  }

  private async batchTree(root: string): Promise<{ tree: MerkleTree; members: BatchMember[] } | undefined> {
    let entry = this.trees.get(root);
    if (!entry) {
      const members = await this.journal.members(root);
      if (members.length === 0) return undefined;
      entry = { tree: new MerkleTree(members.map((m) => m.leafHash)), members };
      if (this.trees.size >= 64) this.trees.delete(this.trees.keys().next().value!);
      this.trees.set(root, entry);
    }
    return entry;
  }

  /** Verifies one stored version (its anchor state read from the store). Ledger errors propagate. */
  async verifyVersion(version: StoredVersion): Promise<VersionVerification> {
    const state = await this.store.anchorState(version);
    return this.verifyWithState(version, state);
  }

  async verifyWithState(
    version: StoredVersion,
    state: AnchorState | undefined,
  ): Promise<VersionVerification> {
    const reference = refOf(version);
    if (!state) {
      const member = await this.journal.memberOf(version);
      if (member) {
        return {
          reference,
          status: 'mismatch',
          verified: false,
          reason: 'the store has lost this version’s anchor state, but it was anchored',
          root: member.root,
          expectedHash: member.leafHash,
        };
      }
      return {
        reference,
        status: 'unanchored',
        verified: false,
        reason: 'this version was never queued for anchoring',
      };
    }
    if (state.status === 'erased') {
      return {
        reference,
        status: 'erased',
        verified: false,
        reason: 'the salt was erased: the anchor is unlinkable',
      };
    }
    const leafVersion = state.leafVersion ?? 1;
    const { hash, error } = recomputeLeafHash(version, state.salt, leafVersion);
    const base: Pick<
      VersionVerification,
      'reference' | 'hash' | 'salt' | 'ledgerKey' | 'leafVersion' | 'custodian'
    > = { reference, hash, salt: state.salt, ledgerKey: state.ledgerKey, leafVersion };
    if (leafVersion === 2 && version.custodian !== undefined) base.custodian = version.custodian;
    if (state.status === 'pending') {
      if (hash !== state.leafHash) {
        return {
          ...base,
          status: 'mismatch',
          verified: false,
          expectedHash: state.leafHash,
          reason: error ?? 'the stored version differs from the hash queued at write time',
        };
      }
      return { ...base, status: 'pending', verified: false, reason: 'queued; not yet on the ledger' };
    }

    return this.verifyAgainstLedger(base, state.anchor, hash, error);
  }

  /**
   * An anchored version: its position against the batch journal, then its inclusion proof against the root the
   * ledger holds.
   */
  private async verifyAgainstLedger(
    base: VerificationBase,
    anchor: AnchorReference,
    hash: string | undefined,
    error: string | undefined,
  ): Promise<VersionVerification> {
    const { reference } = base;
    const located: LocatedVersion = {
      ...base,
      root: anchor.root,
      transactionId: anchor.transactionId,
      blockNumber: anchor.blockNumber,
      leafIndex: anchor.leafIndex,
      leafCount: anchor.leafCount,
    };
    const batch = await this.batchTree(anchor.root);
    if (!batch) {
      return {
        ...located,
        status: 'unverifiable',
        verified: false,
        reason: `the journal has no membership for batch ${anchor.root}`,
      };
    }
    const member = batch.members[anchor.leafIndex];
    if (!member || refOf(member) !== reference || batch.members.length !== anchor.leafCount) {
      return {
        ...located,
        status: 'mismatch',
        verified: false,
        reason: 'the store’s anchor position disagrees with the batch journal',
      };
    }
    return this.verifyProofOnLedger(
      located,
      batch.tree.proof(anchor.leafIndex),
      member.leafHash,
      hash,
      error,
    );
  }

  /** The version's inclusion proof against the root of its batch as the ledger holds it. */
  private async verifyProofOnLedger(
    located: LocatedVersion,
    proof: ProofStep[],
    expectedHash: string,
    hash: string | undefined,
    error: string | undefined,
  ): Promise<VersionVerification> {
    const onChain: OnChainBatch | null = await this.contract.readBatch(located.root);
    const withProof = { ...located, proof, anchoredBy: onChain?.mspId, anchoredAt: onChain?.timestamp };
    if (!onChain) {
      return {
        ...withProof,
        status: 'mismatch',
        verified: false,
        reason: `the ledger has no batch with root ${located.root}`,
      };
    }
    if (onChain.leafCount !== located.leafCount) {
      return {
        ...withProof,
        status: 'mismatch',
        verified: false,
        reason: `the ledger's batch has ${onChain.leafCount} leaves, not ${located.leafCount}`,
      };
    }
    if (
      hash === undefined ||
      !verifyProof(hash, proof, onChain.root, { leafIndex: located.leafIndex, leafCount: onChain.leafCount })
    ) {
      return {
        ...withProof,
        status: 'mismatch',
        verified: false,
        expectedHash,
        reason: error ?? 'the stored version no longer matches its anchored hash',
      };
    }
    return { ...withProof, status: 'anchored', verified: true };
  }
}

/**
 * How the rows that decide access and search are derived from a version's text: the write path's own functions
 * (src/fhir/search/definitions.ts patientCompartments, src/fhir/search/index-entries.ts extractIndex), so the
 * audit recomputes exactly what a write stores.
 */
export interface DerivedRows {
  patientsOf(resource: FhirResource): string[];
  indexEntries(resource: FhirResource): IndexEntry[];
}

export interface AuditProblem {
  /** `Type/id/_history/vid`, when the problem is one version. */
  reference?: string;
  /** Batch root, when the problem is a batch. */
  root?: string;
  /**
   * `row`: a stored row or column that is not what the anchored text (or, for the custodian, the anchored leaf)
   * says it must be; `row` names it.
   */
  kind: 'altered' | 'missing' | 'unanchored' | 'batch' | 'unverifiable' | 'row';
  /**
   * kind `row`: which one, e.g. `Observation/a/_history/2 patients`, `Observation/a/_history/2 custodian`,
   * `Observation/a/_history/2 search_index#3 (code)`, `Observation/a resource_current`.
   */
  row?: string;
  reason: string;
}

export interface AuditReport {
  startedAt: string;
  finishedAt: string;
  versions: number;
  anchored: number;
  pending: number;
  erased: number;
  batches: number;
  /** Versions anchored in leaf format 1 (before the custodian was anchored): their custodian is not covered. */
  leafFormat1: number;
  /** Every version whose stored text no longer matches its anchor, `Type/id/_history/vid`, sorted. */
  altered: string[];
  /** Every anchored version that is gone from the store. */
  missing: string[];
  unanchored: string[];
  /** Every altered row or column that decides access or search (AuditProblem.row), sorted. */
  rows: string[];
  problems: AuditProblem[];
  ok: boolean;
}

export interface AuditProgress {
  phase: 'versions' | 'batches' | 'rows';
  done: number;
  /** Best estimate of the phase's total. */
  total: number;
}

/** What the audit remembers of a resource while streaming its versions (in store order: newest last). */
interface ResourceSeen {
  versionId: number;
  deleted: boolean;
  /** The patient compartments the newest version must have (what a deletion after it inherits). */
  patients: readonly string[];
}

interface AnchoredSeen {
  root: string;
  leafIndex: number;
  leafVersion: LeafVersion;
  salt: string;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a);
  const right = new Set(b);
  if (left.size !== right.size) return false;
  for (const x of left) if (!right.has(x)) return false;
  return true;
}

/** An index row as the store keeps it (no non-finite numbers, absent = null). */
function indexRowKey(e: IndexEntry): string {
  const finite = (n: number | undefined) => (n !== undefined && Number.isFinite(n) ? n : null);
  return JSON.stringify([
    e.param,
    e.type,
    // Full-text entries (type special): their words live in the store's full-text index only (SQLite keeps no row
    // for them since schema migration 12 and reports one word-less entry a document), so compared by parameter.
    e.type === 'special' ? null : (e.system ?? null),
    e.value ?? null,
    finite(e.low),
    finite(e.high),
    e.reference ?? null,
  ]);
}

function parsedText(version: StoredVersion): FhirResource | undefined {
  if (version.deleted || version.json === undefined) return undefined;
  try {
    return parseFhirJson<FhirResource>(version.json);
  } catch {
    return undefined; // An unparsable text is reported by the hash check.
  }
}

/**
 * The custodian a format-2 leaf was anchored with, when the stored text still matches it but the stored custodian
 * does not: tried among the custodians the store names (a handful of organisations) and none.
 */
function anchoredCustodian(
  version: StoredVersion,
  salt: string,
  candidates: ReadonlySet<string | undefined>,
  matches: (hash: string) => boolean,
): { custodian: string | undefined } | undefined {
  for (const custodian of candidates) {
    if (custodian === version.custodian) continue;
    const { hash } = recomputeLeafHash({ ...version, custodian }, salt, 2);
    if (hash !== undefined && matches(hash)) return { custodian };
  }
  return undefined;
}

/**
 * Re-checks every stored version and every journalled batch against the ledger:
 * 1. each stored version's hash is recomputed from its text and salt (leaf format 2: and its custodian);
 *    its patient compartments are recomputed from its text (a deletion: those of the version before);
 * 2. each committed batch must recompute, from the stored versions, to the root the ledger holds; its members
 *    that no longer match are altered, those no longer stored are missing. A batch anchored with leaf tags names
 *    each altered leaf by the ledger's tag even when the journal of the batch was rewritten too;
 * 3. each resource's current pointer and search index rows must be those its newest version's text gives.
 */
export async function auditStore(
  store: ResourceStore,
  ledger: Ledger,
  journal: BatchJournal,
  onProgress?: (progress: AuditProgress) => void,
  derived?: DerivedRows,
): Promise<AuditReport> {
  const startedAt = new Date().toISOString();
  const input: AuditInput = {
    store,
    contract: new AnchorContractClient(ledger),
    journal,
    onProgress,
    derived,
  };
  const findings = newFindings();
  const batches: JournalBatch[] = [];
  for await (const batch of journal.batches()) batches.push(batch);
  const committedBatches = batches.filter((b) => b.state === 'committed').length;
  const seen = await checkVersions(input, batches, findings);
  diagnosePendingMismatches(seen, findings);
  const journalled = await checkBatches(input, batches, seen, findings);
  reportUnjournalled(seen.anchoredAt, journalled, findings);
  reportAlteredCompartments(seen.alteredCompartments, findings);
  if (derived)
    await auditCurrentRows(store, seen.resources, derived, findings.altered, findings.rowProblem, onProgress);
  return auditReport(startedAt, committedBatches, seen, findings);
}

/** What every phase of the audit reads from. */
interface AuditInput {
  store: ResourceStore;
  contract: AnchorContractClient;
  journal: BatchJournal;
  onProgress?: (progress: AuditProgress) => void;
  derived?: DerivedRows;
}

/** The audit's findings so far, shared by its phases: every problem in the order found, and the named sets. */
interface AuditFindings {
  problems: AuditProblem[];
  altered: Set<string>;
  missing: Set<string>;
  unanchored: Set<string>;
  rows: Set<string>;
  rowProblem: (row: string, reason: string, reference?: string) => void;
}

function newFindings(): AuditFindings {
  const problems: AuditProblem[] = [];
  const rows = new Set<string>();
  const rowProblem = (row: string, reason: string, reference?: string) => {
    rows.add(row);
    problems.push({ kind: 'row', row, reference, reason });
  };
  return { problems, altered: new Set(), missing: new Set(), unanchored: new Set(), rows, rowProblem };
}

/** A pending version whose text no longer gives its queued hash: diagnosed once every custodian is known. */
interface PendingMismatch {
  version: StoredVersion;
  salt: string;
  leafHash: string;
  leafVersion: LeafVersion;
  error?: string;
}

/** What phase 1 learns from streaming every stored version. */
interface VersionsSeen {
  versions: number;
  anchored: number;
  pending: number;
  erased: number;
  leafFormat1: number;
  /** Anchored versions: the hash recomputed now (null: unparsable). */
  recomputed: Map<string, string | null>;
  erasedRefs: Set<string>;
  anchoredAt: Map<string, AnchoredSeen>;
  resources: Map<string, ResourceSeen>;
  /** Every custodian the store names, and none. */
  custodians: Set<string | undefined>;
  /** Versions whose stored compartments differ from their text's (reported unless the text itself is altered). */
  alteredCompartments: string[];
  pendingMismatches: PendingMismatch[];
}

/** Phase 1: every stored version's hash recomputed from its text and salt, and its compartments from its text. */
async function checkVersions(
  input: AuditInput,
  batches: readonly JournalBatch[],
  findings: AuditFindings,
): Promise<VersionsSeen> {
  const { store, onProgress } = input;
  const seen: VersionsSeen = {
    versions: 0,
    anchored: 0,
    pending: 0,
    erased: 0,
    leafFormat1: 0,
    recomputed: new Map(),
    erasedRefs: new Set(),
    anchoredAt: new Map(),
    resources: new Map(),
    custodians: new Set([undefined]),
    alteredCompartments: [],
    pendingMismatches: [],
  };
  let expectedVersions = 0;
  for (const b of batches) expectedVersions += b.leafCount;
  for await (const { version, anchor } of store.allVersions()) {
    seen.versions++;
    if (onProgress && seen.versions % 256 === 0) {
      onProgress({
        phase: 'versions',
        done: seen.versions,
        total: Math.max(expectedVersions, seen.versions),
      });
    }
    if (version.custodian !== undefined) seen.custodians.add(version.custodian);
    recordResource(input, seen, version, anchor?.status === 'erased');
    await checkAnchorState(input, seen, findings, version, anchor);
  }
  onProgress?.({ phase: 'versions', done: seen.versions, total: seen.versions });
  return seen;
}

/** Remembers the resource's newest version and the compartments it must have (checked against the stored ones). */
function recordResource(
  input: AuditInput,
  seen: VersionsSeen,
  version: StoredVersion,
  erasedVersion: boolean,
): void {
  const { derived } = input;
  const resourceKey = `${version.resourceType}/${version.id}`;
  const before = seen.resources.get(resourceKey);
  let patients: readonly string[] = version.patients ?? [];
  if (derived && !erasedVersion) {
    // What the write path stores (interactions/common.ts writeVersion): the compartments of the text, or for a
    // deletion those of the version it deletes.
    const resource = parsedText(version);
    const expected = resource
      ? derived.patientsOf(resource)
      : version.deleted
        ? (before?.patients ?? [])
        : undefined;
    if (expected && !sameSet(expected, version.patients ?? [])) seen.alteredCompartments.push(refOf(version));
    if (expected) patients = expected;
  }
  seen.resources.set(resourceKey, {
    versionId: version.versionId,
    deleted: version.deleted,
    patients,
  });
}

/** One version's anchor state: unanchored, erased, pending (its queued hash) or anchored (recomputed for phase 3). */
async function checkAnchorState(
  input: AuditInput,
  seen: VersionsSeen,
  findings: AuditFindings,
  version: StoredVersion,
  anchor: AnchorState | undefined,
): Promise<void> {
  const { problems, altered } = findings;
  const reference = refOf(version);
  if (!anchor) {
    if (await input.journal.memberOf(version)) {
      altered.add(reference);
      problems.push({ reference, kind: 'altered', reason: 'its anchor state was removed from the store' });
    } else {
      findings.unanchored.add(reference);
      problems.push({ reference, kind: 'unanchored', reason: 'never queued for anchoring' });
    }
    return;
  }
  if (anchor.status === 'erased') {
    seen.erased++;
    seen.erasedRefs.add(reference);
    return;
  }
  const leafVersion = anchor.leafVersion ?? 1;
  if (leafVersion === 1) seen.leafFormat1++;
  const { hash, error } = recomputeLeafHash(version, anchor.salt, leafVersion);
  if (anchor.status === 'pending') {
    seen.pending++;
    if (hash !== anchor.leafHash) {
      seen.pendingMismatches.push({
        version,
        salt: anchor.salt,
        leafHash: anchor.leafHash,
        leafVersion,
        error,
      });
    }
    return;
  }
  seen.anchored++;
  seen.recomputed.set(reference, hash ?? null);
  seen.anchoredAt.set(reference, {
    root: anchor.anchor.root,
    leafIndex: anchor.anchor.leafIndex,
    leafVersion,
    salt: anchor.salt,
  });
  if (error) {
    altered.add(reference);
    problems.push({ reference, kind: 'altered', reason: error });
  }
}

/** Phase 2: a pending mismatch is a changed custodian when another custodian gives the queued hash, else altered. */
function diagnosePendingMismatches(seen: VersionsSeen, findings: AuditFindings): void {
  for (const { version, salt, leafHash, leafVersion, error } of seen.pendingMismatches) {
    const reference = refOf(version);
    const custodian =
      leafVersion === 2 && error === undefined
        ? anchoredCustodian(version, salt, seen.custodians, (h) => h === leafHash)
        : undefined;
    if (custodian) {
      findings.rowProblem(
        `${reference} custodian`,
        `its custodian differs from the one queued at write time (${custodian.custodian ?? 'none'}) ` +
          '(this changes who may read it)',
        reference,
      );
    } else {
      findings.altered.add(reference);
      findings.problems.push({
        reference,
        kind: 'altered',
        reason: error ?? 'differs from the hash queued at write time (pending)',
      });
    }
  }
}

/** Phase 3: each committed batch against the ledger; returns every version the journal names. */
async function checkBatches(
  input: AuditInput,
  batches: readonly JournalBatch[],
  seen: VersionsSeen,
  findings: AuditFindings,
): Promise<Set<string>> {
  const { onProgress } = input;
  const committed = batches.filter((b) => b.state === 'committed');
  const journalled = new Set<string>();
  let done = 0;
  for (const batch of committed) {
    await checkBatch(input, batch, seen, findings, journalled);
    done++;
    if (onProgress && done % 16 === 0) onProgress({ phase: 'batches', done, total: committed.length });
  }
  onProgress?.({ phase: 'batches', done, total: committed.length });
  return journalled;
}

/** One batch being checked: its journalled members and what the ledger says of it. */
interface BatchCheck {
  root: string;
  /** The journal's leaves, together, give the root on the ledger: they are evidence. */
  journalProven: boolean;
  /** Per-leaf evidence on the ledger (AnchorBatchTagged), when the batch has it. */
  tags: string | undefined;
}

/** The journal's leaves against the on-chain batch, then every member's stored version against its leaf. */
async function checkBatch(
  input: AuditInput,
  batch: JournalBatch,
  seen: VersionsSeen,
  findings: AuditFindings,
  journalled: Set<string>,
): Promise<void> {
  const { problems, altered, missing, rows } = findings;
  const members = await input.journal.members(batch.root);
  const onChain: OnChainBatch | null = await input.contract.readBatch(batch.root);
  // The journal's leaves are evidence only when, together, they give the root on the ledger.
  let journalProven = false;
  if (!onChain) {
    problems.push({ root: batch.root, kind: 'batch', reason: 'the ledger has no batch with this root' });
  } else if (onChain.leafCount !== members.length) {
    problems.push({
      root: batch.root,
      kind: 'batch',
      reason: `the ledger's batch has ${onChain.leafCount} leaves, the journal ${members.length}`,
    });
  } else if (members.length > 0 && merkleRoot(members.map((m) => m.leafHash)) !== onChain.root) {
    problems.push({
      root: batch.root,
      kind: 'batch',
      reason: 'the journal’s leaves of this batch do not recompute to the on-chain root',
    });
  } else {
    journalProven = true;
  }
  // Per-leaf evidence on the ledger (AnchorBatchTagged): names the altered leaf whatever the journal says.
  const tags =
    onChain && typeof onChain.leafTags === 'string' && onChain.leafTags.length === onChain.leafCount * 16
      ? onChain.leafTags
      : undefined;
  const check: BatchCheck = { root: batch.root, journalProven, tags };
  const leaves: string[] = [];
  for (const member of members) {
    journalled.add(refOf(member));
    leaves.push(await checkMember(input, check, member, seen, findings));
  }
  if (onChain && members.length > 0 && merkleRoot(leaves) !== onChain.root) {
    // The stored versions no longer recompute to the root on the ledger; the members named above say why.
    const named = members.some(
      (m) => altered.has(refOf(m)) || missing.has(refOf(m)) || rows.has(`${refOf(m)} custodian`),
    );
    if (!named)
      problems.push({
        root: batch.root,
        kind: 'batch',
        reason: tags
          ? 'the stored versions do not recompute to the on-chain root'
          : 'the stored versions do not recompute to the on-chain root; the batch has no leaf tags on the ' +
            'ledger (anchored before they were), so the altered version cannot be named',
      });
  }
}

/** One member of a batch: its stored version against its leaf; returns the leaf hash to rebuild the root with. */
async function checkMember(
  input: AuditInput,
  check: BatchCheck,
  member: BatchMember,
  seen: VersionsSeen,
  findings: AuditFindings,
): Promise<string> {
  const { problems, altered } = findings;
  const { root, tags } = check;
  const reference = refOf(member);
  const tag = tags === undefined ? undefined : leafTagAt(tags, member.leafIndex);
  if (tag !== undefined && leafTag(member.leafHash) !== tag) {
    problems.push({
      reference,
      root,
      kind: 'batch',
      reason: 'the journal’s hash of this leaf differs from its tag on the ledger (the journal was altered)',
    });
  }
  if (seen.erasedRefs.has(reference)) {
    return member.leafHash; // Erased: the journal's hash stands in, so its neighbours still verify.
  }
  if (!seen.recomputed.has(reference)) {
    if (!altered.has(reference) && !findings.unanchored.has(reference)) {
      findings.missing.add(reference);
      problems.push({
        reference,
        root,
        kind: 'missing',
        reason: 'anchored in this batch but no longer in the store',
      });
    }
    return member.leafHash;
  }
  const hash = seen.recomputed.get(reference);
  const position = seen.anchoredAt.get(reference);
  if (position && (position.root !== root || position.leafIndex !== member.leafIndex)) {
    problems.push({
      reference,
      root,
      kind: 'altered',
      reason: 'the store’s anchor position disagrees with the batch journal',
    });
    altered.add(reference);
  }
  const offTag = tag !== undefined && (hash == null || leafTag(hash) !== tag);
  if (hash !== member.leafHash || offTag) {
    await reportLeafMismatch(input, check, member, { hash, offTag, tag, position }, seen, findings);
  }
  return hash ?? member.leafHash;
}

/**
 * A stored version that no longer gives its leaf (by the journal's hash or the ledger's tag): a changed custodian
 * when another custodian gives the anchored hash (leaf format 2), else altered.
 */
async function reportLeafMismatch(
  input: AuditInput,
  check: BatchCheck,
  member: BatchMember,
  leaf: {
    hash: string | null | undefined;
    offTag: boolean;
    tag: string | undefined;
    position: AnchoredSeen | undefined;
  },
  seen: VersionsSeen,
  findings: AuditFindings,
): Promise<void> {
  const { problems, altered } = findings;
  const { root, journalProven } = check;
  const { hash, offTag, tag, position } = leaf;
  const reference = refOf(member);
  // Whether a hash is the anchored one: by the ledger's tag, else by the journal when it is proven.
  const isAnchored = (h: string) =>
    tag !== undefined ? leafTag(h) === tag : journalProven && h === member.leafHash;
  const custodian =
    position?.leafVersion === 2 && hash != null
      ? await custodianOfAnchored(input.store, member, position.salt, seen.custodians, isAnchored)
      : undefined;
  if (custodian) {
    findings.rowProblem(
      `${reference} custodian`,
      `its custodian differs from the one anchored (${custodian.custodian ?? 'none'}) ` +
        '(this changes who may read it)',
      reference,
    );
  } else if (!altered.has(reference)) {
    problems.push({
      reference,
      root,
      kind: 'altered',
      reason: offTag ? 'no longer matches its leaf tag on the ledger' : 'no longer matches its anchored hash',
    });
  }
  if (!custodian) altered.add(reference);
}

/** Phase 4: anchored versions whose batch the journal does not know cannot be verified. */
function reportUnjournalled(
  anchoredAt: ReadonlyMap<string, AnchoredSeen>,
  journalled: ReadonlySet<string>,
  findings: AuditFindings,
): void {
  for (const [reference, position] of anchoredAt) {
    if (!journalled.has(reference)) {
      findings.problems.push({
        reference,
        root: position.root,
        kind: 'unverifiable',
        reason: 'anchored in a batch the journal does not know',
      });
    }
  }
}

/** Phase 5: stored compartments that differ from the text's, unless the text itself is altered. */
function reportAlteredCompartments(alteredCompartments: readonly string[], findings: AuditFindings): void {
  for (const reference of alteredCompartments) {
    // An altered text is named as such: the rows derived from it prove nothing more.
    if (findings.altered.has(reference)) continue;
    findings.rowProblem(
      `${reference} patients`,
      'its patient compartments differ from those recomputed from the anchored text ' +
        '(this changes who may read it)',
      reference,
    );
  }
}

function auditReport(
  startedAt: string,
  batches: number,
  seen: VersionsSeen,
  findings: AuditFindings,
): AuditReport {
  const sorted = (s: Set<string>) => [...s].sort();
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    versions: seen.versions,
    anchored: seen.anchored,
    pending: seen.pending,
    erased: seen.erased,
    batches,
    leafFormat1: seen.leafFormat1,
    altered: sorted(findings.altered),
    missing: sorted(findings.missing),
    unanchored: sorted(findings.unanchored),
    rows: sorted(findings.rows),
    problems: findings.problems,
    ok: findings.problems.length === 0,
  };
}

async function custodianOfAnchored(
  store: ResourceStore,
  key: VersionKey,
  salt: string,
  candidates: ReadonlySet<string | undefined>,
  isAnchored: (hash: string) => boolean,
): Promise<{ custodian: string | undefined } | undefined> {
  const version = await store.vread(key.resourceType, key.id, key.versionId);
  return version ? anchoredCustodian(version, salt, candidates, isAnchored) : undefined;
}

/**
 * Each resource's current pointer must name its newest version, and its search index rows must be exactly those
 * the newest version's text gives (none for a deletion). Rows are compared by position (`ord`).
 */
async function auditCurrentRows(
  store: ResourceStore,
  resources: ReadonlyMap<string, ResourceSeen>,
  derived: DerivedRows,
  altered: ReadonlySet<string>,
  rowProblem: (row: string, reason: string, reference?: string) => void,
  onProgress?: (progress: AuditProgress) => void,
): Promise<void> {
  let done = 0;
  for (const [resourceKey, seen] of resources) {
    done++;
    if (onProgress && done % 256 === 0) onProgress({ phase: 'rows', done, total: resources.size });
    const slash = resourceKey.indexOf('/');
    const resourceType = resourceKey.slice(0, slash);
    const id = resourceKey.slice(slash + 1);
    const current = await store.read(resourceType, id);
    if (!current || current.versionId !== seen.versionId || current.deleted !== seen.deleted) {
      rowProblem(
        `${resourceKey} resource_current`,
        `the current version is recorded as ${current ? `${current.versionId}${current.deleted ? ' (deleted)' : ''}` : 'none'}, ` +
          `but the newest stored version is ${seen.versionId}${seen.deleted ? ' (deleted)' : ''}`,
      );
    }
    // The index rows are those of the newest version. An altered text is named as such: the rows derived from it
    // prove nothing more.
    const newest = versionReference(resourceType, id, seen.versionId);
    if (!store.indexEntries || altered.has(newest)) continue;
    const stored = await store.indexEntries(resourceType, id);
    let expected: IndexEntry[] = [];
    if (!seen.deleted) {
      const version = await store.vread(resourceType, id, seen.versionId);
      const resource = version && parsedText(version);
      if (!resource) continue; // An unparsable text is reported by the hash check.
      expected = derived.indexEntries(resource);
    }
    // Rows of custom search parameters are left out on both sides (definitions.ts isBaseIndexRow).
    const base = (row: IndexEntry) => isBaseIndexRow(resourceType, row.param);
    compareIndexRows(newest, stored.filter(base), expected.filter(base), rowProblem);
  }
  onProgress?.({ phase: 'rows', done, total: resources.size });
}

/** The newest version's stored search index rows against those its text gives: each lost, changed or added row. */
function compareIndexRows(
  newest: string,
  stored: readonly IndexEntry[],
  expected: readonly IndexEntry[],
  rowProblem: (row: string, reason: string, reference?: string) => void,
): void {
  // Compared as multisets: a row removed from the middle must not make every later one look different.
  const unmatched = new Map<string, IndexEntry[]>();
  for (const row of stored) {
    const key = indexRowKey(row);
    const same = unmatched.get(key);
    if (same) same.push(row);
    else unmatched.set(key, [row]);
  }
  const lost: { ord: number; row: IndexEntry }[] = [];
  expected.forEach((row, ord) => {
    const same = unmatched.get(indexRowKey(row));
    if (same && same.length > 0) same.pop();
    else lost.push({ ord, row });
  });
  const added = [...unmatched.values()].flat();
  for (const { ord, row } of lost) {
    // A row of the same parameter in its place: that row was changed, not added.
    const changed = added.findIndex((other) => other.param === row.param);
    if (changed >= 0) added.splice(changed, 1);
    rowProblem(
      `${newest} search_index#${ord} (${row.param})`,
      changed >= 0
        ? 'differs from the search index row recomputed from the anchored text'
        : 'missing: the anchored text gives this search index row',
    );
  }
  for (const row of added) {
    rowProblem(
      `${newest} search_index (${row.param})`,
      'not derived from the anchored text (an added search index row)',
    );
  }
}

/** What travels with a record sent to another member: enough to prove it against the ledger without secrets. */
export interface RecordProof {
  salt: string;
  /** The leaf format (absent: 1); format 2 also needs the custodian the sender's `$verify` names. */
  leafVersion?: LeafVersion;
  custodian?: string;
  root: string;
  leafIndex: number;
  leafCount: number;
  proof: ProofStep[];
}

/** What the receiver expects of the record's anchor. */
export interface ReceivedRecordExpectation {
  /**
   * The MSP of the member the record came from (its custodian). When given, the batch must have been anchored by
   * that MSP: a member must not be able to anchor a fabricated record and present it as another's. An anchor
   * whose creator is unknown (a record without `mspId`) fails this check.
   */
  custodianMsp?: string;
}

/**
 * How a received record stands: `verified` (it proves into a root the ledger holds, anchored by the expected
 * custodian), `pending` (the ledger does not hold the root yet: not yet anchored, or not yet seen by this peer), or
 * `failed` (the text does not prove into the root, the leaf count differs, or another MSP anchored it).
 */
export type ReceivedRecordStatus = 'verified' | 'pending' | 'failed';

/** Where a receiver reads anchor batches: the ledger's anchor contract, or a cache in front of it. */
export interface BatchSource {
  readBatch(root: string): Promise<OnChainBatch | null>;
  /** Merkle nodes proven so far in this run (see ProvenNodes), shared by the proofs of one batch. */
  readonly proven?: ProvenNodes;
}

/**
 * Batch records read once per root for one verification run (a response of many records from one custodian
 * shares few batches). An absent root is cached too: within one run a root is either on this peer or not.
 */
export class CachedBatchSource implements BatchSource {
  private readonly contract: AnchorContractClient;
  private readonly batches = new Map<string, Promise<OnChainBatch | null>>();
  /** How many roots were read on the ledger (the rest came from the cache). */
  reads = 0;
  readonly proven = new ProvenNodes();

  constructor(ledger: Ledger) {
    this.contract = new AnchorContractClient(ledger);
  }

  readBatch(root: string): Promise<OnChainBatch | null> {
    let batch = this.batches.get(root);
    if (!batch) {
      this.reads++;
      batch = this.contract.readBatch(root);
      // A failed read (ledger unreachable) is not remembered: the next record asks again.
      batch.catch(() => this.batches.delete(root));
      this.batches.set(root, batch);
    }
    return batch;
  }
}

export interface ReceivedRecordVerification {
  verified: boolean;
  status: ReceivedRecordStatus;
  reason?: string;
  /** The MSP that anchored the root (from the ledger), when the ledger holds it. */
  anchoredBy?: string;
  /** The proposal timestamp of the anchoring transaction, when the ledger holds the root. */
  anchoredAt?: string;
}

/**
 * The receiver's check of a record from another member: the salted hash of the received text's canonical form
 * must prove into `root`, the ledger must hold that root with that leaf count and, with
 * `expected.custodianMsp`, the root must have been anchored by that MSP. No custodian secret needed.
 * `batches` is the ledger itself or a BatchSource (e.g. a CachedBatchSource shared by all records of a run).
 */
export async function verifyReceivedRecord(
  version: Pick<StoredVersion, 'resourceType' | 'id' | 'versionId' | 'lastUpdated' | 'deleted' | 'json'>,
  evidence: RecordProof,
  batches: Ledger | BatchSource,
  expected: ReceivedRecordExpectation = {},
): Promise<ReceivedRecordVerification> {
  const { hash, error } = recomputeLeafHash(
    { ...version, custodian: evidence.custodian },
    evidence.salt,
    evidence.leafVersion ?? 1,
  );
  if (!hash) return { verified: false, status: 'failed', reason: error };
  return verifyReceivedLeaf(hash, evidence, batches, expected);
}

/** The rest of a receiver's check, from the recomputed leaf hash: the proof, then the root on the ledger. */
async function verifyReceivedLeaf(
  hash: string,
  evidence: RecordProof,
  batches: Ledger | BatchSource,
  expected: ReceivedRecordExpectation,
): Promise<ReceivedRecordVerification> {
  const source = 'readBatch' in batches ? batches : new AnchorContractClient(batches);
  if (!receivedProofHolds(hash, evidence, 'proven' in source ? source.proven : undefined))
    return { verified: false, status: 'failed', reason: 'the record does not prove into the given root' };
  return receivedAnchorVerdict(await source.readBatch(evidence.root), evidence, expected);
}

/**
 * The first half of a receiver's check, synchronous: does the recomputed leaf hash prove into the evidence's root
 * at its position (with `proven`, nodes proven earlier in the run end the walk early)?
 */
export function receivedProofHolds(hash: string, evidence: RecordProof, proven?: ProvenNodes): boolean {
  const position = { leafIndex: evidence.leafIndex, leafCount: evidence.leafCount };
  return verifyProof(hash, evidence.proof, evidence.root, position, proven);
}

/**
 * The second half, synchronous once the root is read: `onChain` is the ledger's batch with the evidence's root
 * (null: the ledger has none). A proof that did not hold is failed before this (receivedProofHolds).
 */
export function receivedAnchorVerdict(
  onChain: OnChainBatch | null,
  evidence: Pick<RecordProof, 'leafCount'>,
  expected: ReceivedRecordExpectation,
): ReceivedRecordVerification {
  if (!onChain)
    return { verified: false, status: 'pending', reason: 'the ledger has no batch with this root' };
  const anchoredBy = anchorCreatorMsp(onChain);
  if (onChain.leafCount !== evidence.leafCount)
    return {
      verified: false,
      status: 'failed',
      reason: 'the leaf count differs from the ledger',
      anchoredBy,
    };
  if (expected.custodianMsp !== undefined && anchoredBy !== expected.custodianMsp) {
    return {
      verified: false,
      status: 'failed',
      reason:
        anchoredBy === undefined
          ? `the anchor does not name its creator; expected ${expected.custodianMsp}`
          : `the root was anchored by ${anchoredBy}, not by the custodian ${expected.custodianMsp}`,
      anchoredBy,
    };
  }
  return { verified: true, status: 'verified', anchoredBy, anchoredAt: onChain.timestamp };
}
