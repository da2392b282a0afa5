/**
 * The integrity path's read side: prove one stored version against the ledger ($verify), and audit a whole
 * store (`hie-ledger verify`, the scheduled audit). docs/integrity.md describes the checks.
 *
 * A version is `anchored` (verified) when the leaf hash recomputed from its stored text and salt, with the
 * inclusion proof built from its batch's journalled leaves, leads to a root that the ledger holds with the same
 * leaf count. Anything else that was anchored is a `mismatch`. Versions still in the outbox are `pending`
 * (their queued hash is still checked locally); versions whose salt was erased are `erased`.
 */
import type { AnchorState, ResourceStore, StoredVersion, VersionKey } from '../fhir/store/resource-store.js';
import { canonicalOfVersion, leafHashOfCanonical, versionReference } from '../mapping/hashing.js';
import { MerkleTree, merkleRoot, verifyProof, type ProofStep } from '../mapping/merkle.js';
import type { AnchorJournal, BatchMember } from './anchor-journal.js';
import { AnchorContractClient, type OnChainBatch } from './anchors.js';
import type { Ledger } from './ledger.js';

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
  /** The leaf hash recomputed now from the stored text and salt. */
  hash?: string;
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

/** The recomputed leaf hash of a stored version, or an error message when its text no longer parses. */
export function recomputeLeafHash(version: StoredVersion, salt: string): { hash?: string; error?: string } {
  try {
    return { hash: leafHashOfCanonical(salt, canonicalOfVersion(version)) };
  } catch (err) {
    return { error: `the stored text no longer parses: ${err instanceof Error ? err.message : String(err)}` };
  }
}

const refOf = (k: VersionKey) => versionReference(k.resourceType, k.id, k.versionId);

export class IntegrityVerifier {
  private readonly contract: AnchorContractClient;
  /** Recently used batch trees ($verify of neighbouring versions builds each tree once). */
  private readonly trees = new Map<string, { tree: MerkleTree; members: BatchMember[] }>();

  constructor(
    private readonly store: ResourceStore,
    ledger: Ledger,
    private readonly journal: AnchorJournal,
  ) {
    this.contract = new AnchorContractClient(ledger);
  }

  private batchTree(root: string): { tree: MerkleTree; members: BatchMember[] } | undefined {
    let entry = this.trees.get(root);
    if (!entry) {
      const members = this.journal.members(root);
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
      const member = this.journal.memberOf(version);
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
    const { hash, error } = recomputeLeafHash(version, state.salt);
    const base = { reference, hash, salt: state.salt, ledgerKey: state.ledgerKey };
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

    const { anchor } = state;
    const located = {
      ...base,
      root: anchor.root,
      transactionId: anchor.transactionId,
      blockNumber: anchor.blockNumber,
      leafIndex: anchor.leafIndex,
      leafCount: anchor.leafCount,
    };
    const batch = this.batchTree(anchor.root);
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
    const proof = batch.tree.proof(anchor.leafIndex);
    const onChain: OnChainBatch | null = await this.contract.readBatch(anchor.root);
    const withProof = { ...located, proof, anchoredBy: onChain?.mspId, anchoredAt: onChain?.timestamp };
    if (!onChain) {
      return {
        ...withProof,
        status: 'mismatch',
        verified: false,
        reason: `the ledger has no batch with root ${anchor.root}`,
      };
    }
    if (onChain.leafCount !== anchor.leafCount) {
      return {
        ...withProof,
        status: 'mismatch',
        verified: false,
        reason: `the ledger's batch has ${onChain.leafCount} leaves, not ${anchor.leafCount}`,
      };
    }
    if (
      hash === undefined ||
      !verifyProof(hash, proof, onChain.root, { leafIndex: anchor.leafIndex, leafCount: onChain.leafCount })
    ) {
      return {
        ...withProof,
        status: 'mismatch',
        verified: false,
        expectedHash: member.leafHash,
        reason: error ?? 'the stored version no longer matches its anchored hash',
      };
    }
    return { ...withProof, status: 'anchored', verified: true };
  }
}

export interface AuditProblem {
  /** `Type/id/_history/vid`, when the problem is one version. */
  reference?: string;
  /** Batch root, when the problem is a batch. */
  root?: string;
  kind: 'altered' | 'missing' | 'unanchored' | 'batch' | 'unverifiable';
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
  /** Every version whose stored text no longer matches its anchor, `Type/id/_history/vid`, sorted. */
  altered: string[];
  /** Every anchored version that is gone from the store. */
  missing: string[];
  unanchored: string[];
  problems: AuditProblem[];
  ok: boolean;
}

export interface AuditProgress {
  phase: 'versions' | 'batches';
  done: number;
  /** Best estimate of the phase's total. */
  total: number;
}

/**
 * Re-checks every stored version and every journalled batch against the ledger:
 * 1. each stored version's hash is recomputed from its text and salt;
 * 2. each committed batch must recompute, from the stored versions, to the root the ledger holds; its members
 *    that no longer match are altered, those no longer stored are missing.
 */
export async function auditStore(
  store: ResourceStore,
  ledger: Ledger,
  journal: AnchorJournal,
  onProgress?: (progress: AuditProgress) => void,
): Promise<AuditReport> {
  const startedAt = new Date().toISOString();
  const contract = new AnchorContractClient(ledger);
  const problems: AuditProblem[] = [];
  const altered = new Set<string>();
  const missing = new Set<string>();
  const unanchored = new Set<string>();
  const recomputed = new Map<string, string | null>(); // anchored: hash (null: unparsable)
  const erasedRefs = new Set<string>();
  const anchoredAt = new Map<string, { root: string; leafIndex: number }>();
  let versions = 0;
  let anchoredCount = 0;
  let pending = 0;
  let erased = 0;

  const counts = journal.batchCount();
  let expectedVersions = 0;
  const batches = [...journal.batches()];
  for (const b of batches) expectedVersions += b.leafCount;

  for await (const { version, anchor } of store.allVersions()) {
    versions++;
    if (onProgress && versions % 256 === 0) {
      onProgress({ phase: 'versions', done: versions, total: Math.max(expectedVersions, versions) });
    }
    const reference = refOf(version);
    if (!anchor) {
      if (journal.memberOf(version)) {
        altered.add(reference);
        problems.push({ reference, kind: 'altered', reason: 'its anchor state was removed from the store' });
      } else {
        unanchored.add(reference);
        problems.push({ reference, kind: 'unanchored', reason: 'never queued for anchoring' });
      }
      continue;
    }
    if (anchor.status === 'erased') {
      erased++;
      erasedRefs.add(reference);
      continue;
    }
    const { hash, error } = recomputeLeafHash(version, anchor.salt);
    if (anchor.status === 'pending') {
      pending++;
      if (hash !== anchor.leafHash) {
        altered.add(reference);
        problems.push({
          reference,
          kind: 'altered',
          reason: error ?? 'differs from the hash queued at write time (pending)',
        });
      }
      continue;
    }
    anchoredCount++;
    recomputed.set(reference, hash ?? null);
    anchoredAt.set(reference, { root: anchor.anchor.root, leafIndex: anchor.anchor.leafIndex });
    if (error) {
      altered.add(reference);
      problems.push({ reference, kind: 'altered', reason: error });
    }
  }
  onProgress?.({ phase: 'versions', done: versions, total: versions });

  const committed = batches.filter((b) => b.state === 'committed');
  const journalled = new Set<string>();
  let done = 0;
  for (const batch of committed) {
    const members = journal.members(batch.root);
    const onChain: OnChainBatch | null = await contract.readBatch(batch.root);
    if (!onChain) {
      problems.push({ root: batch.root, kind: 'batch', reason: 'the ledger has no batch with this root' });
    } else if (onChain.leafCount !== members.length) {
      problems.push({
        root: batch.root,
        kind: 'batch',
        reason: `the ledger's batch has ${onChain.leafCount} leaves, the journal ${members.length}`,
      });
    } else if (merkleRoot(members.map((m) => m.leafHash)) !== onChain.root) {
      problems.push({
        root: batch.root,
        kind: 'batch',
        reason: 'the journal’s leaves of this batch do not recompute to the on-chain root',
      });
    }
    const leaves: string[] = [];
    for (const member of members) {
      const reference = refOf(member);
      journalled.add(reference);
      if (erasedRefs.has(reference)) {
        leaves.push(member.leafHash); // Erased: the journal's hash stands in, so its neighbours still verify.
        continue;
      }
      if (!recomputed.has(reference)) {
        if (!altered.has(reference) && !unanchored.has(reference)) {
          missing.add(reference);
          problems.push({
            reference,
            root: batch.root,
            kind: 'missing',
            reason: 'anchored in this batch but no longer in the store',
          });
        }
        leaves.push(member.leafHash);
        continue;
      }
      const hash = recomputed.get(reference);
      const position = anchoredAt.get(reference);
      if (position && (position.root !== batch.root || position.leafIndex !== member.leafIndex)) {
        problems.push({
          reference,
          root: batch.root,
          kind: 'altered',
          reason: 'the store’s anchor position disagrees with the batch journal',
        });
        altered.add(reference);
      }
      if (hash !== member.leafHash) {
        if (!altered.has(reference)) {
          problems.push({
            reference,
            root: batch.root,
            kind: 'altered',
            reason: 'no longer matches its anchored hash',
          });
        }
        altered.add(reference);
      }
      leaves.push(hash ?? member.leafHash);
    }
    if (onChain && members.length > 0 && merkleRoot(leaves) !== onChain.root) {
      // The stored versions no longer recompute to the root on the ledger; the members named above say why.
      const named = members.some((m) => altered.has(refOf(m)) || missing.has(refOf(m)));
      if (!named)
        problems.push({
          root: batch.root,
          kind: 'batch',
          reason: 'the stored versions do not recompute to the on-chain root',
        });
    }
    done++;
    if (onProgress && done % 16 === 0) onProgress({ phase: 'batches', done, total: committed.length });
  }
  onProgress?.({ phase: 'batches', done, total: committed.length });

  for (const [reference, position] of anchoredAt) {
    if (!journalled.has(reference)) {
      problems.push({
        reference,
        root: position.root,
        kind: 'unverifiable',
        reason: 'anchored in a batch the journal does not know',
      });
    }
  }

  const sorted = (s: Set<string>) => [...s].sort();
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    versions,
    anchored: anchoredCount,
    pending,
    erased,
    batches: counts.committed,
    altered: sorted(altered),
    missing: sorted(missing),
    unanchored: sorted(unanchored),
    problems,
    ok: problems.length === 0,
  };
}

/** What travels with a record sent to another member: enough to prove it against the ledger without secrets. */
export interface RecordProof {
  salt: string;
  root: string;
  leafIndex: number;
  leafCount: number;
  proof: ProofStep[];
}

/**
 * The receiver's check of a record from another member: the salted hash of the received text's canonical form
 * must prove into `root`, and the ledger must hold that root with that leaf count. No custodian secret needed.
 */
export async function verifyReceivedRecord(
  version: Pick<StoredVersion, 'resourceType' | 'id' | 'versionId' | 'lastUpdated' | 'deleted' | 'json'>,
  evidence: RecordProof,
  ledger: Ledger,
): Promise<{ verified: boolean; reason?: string; anchoredBy?: string }> {
  const { hash, error } = recomputeLeafHash(version as StoredVersion, evidence.salt);
  if (!hash) return { verified: false, reason: error };
  const position = { leafIndex: evidence.leafIndex, leafCount: evidence.leafCount };
  if (!verifyProof(hash, evidence.proof, evidence.root, position)) {
    return { verified: false, reason: 'the record does not prove into the given root' };
  }
  const onChain = await new AnchorContractClient(ledger).readBatch(evidence.root);
  if (!onChain) return { verified: false, reason: 'the ledger has no batch with this root' };
  if (onChain.leafCount !== evidence.leafCount)
    return { verified: false, reason: 'the leaf count differs from the ledger' };
  return { verified: true, anchoredBy: onChain.mspId };
}
