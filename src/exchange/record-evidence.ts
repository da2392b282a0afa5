/**
 * The custodian's side of a pull: every record goes out with its integrity evidence in the same response
 * (docs/exchange.md "Evidence and verification"), never one `$verify` round per record.
 *
 * `collectEvidence` reads each version's anchor state and builds its Merkle proof from the batch journal, each
 * batch's tree once per call. `evidenceBundleText` writes a searchset Bundle: each resource entry is the stored
 * text spliced in verbatim (numbers as written: `1.50`, `1e2`), `fullUrl` the custodian's absolute version URL,
 * followed by a Provenance (`search.mode = include`) naming the custodian and carrying the evidence in the
 * `integrity-evidence` extension. The receiver checks it with src/exchange/record-verifier.ts.
 */
import type { ResourceStore, StoredVersion } from '../fhir/store/resource-store.js';
import type { BatchJournal, BatchMember } from '../integrity/anchor-journal.js';
import type { LeafVersion } from '../integrity/hashing.js';
import { MerkleTree, type ProofStep } from '../integrity/merkle.js';

/** The complex extension on the Provenance that carries a record's evidence. */
export const EVIDENCE_EXTENSION_URL = 'https://hie-ledger.dev/fhir/StructureDefinition/integrity-evidence';
/** The identifier system of a member's MSP id (Provenance.agent.who.identifier). */
export const MSP_IDENTIFIER_SYSTEM = 'https://hie-ledger.dev/fhir/NamingSystem/msp-id';
/** R4 provenance participant type of the agent that holds the record. */
export const PARTICIPANT_TYPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/provenance-participant-type';

/** Caps the receiver enforces, and the custodian therefore never exceeds. */
export const EVIDENCE_LIMITS = {
  /** A proof has one step per tree level: 64 covers any batch size a ledger can record. */
  maxProofSteps: 64,
  /** Leaf indexes and counts are FHIR unsignedInt / positiveInt (32-bit). */
  maxLeafCount: 2_147_483_647,
} as const;

/** Who answers: the custodian as the directory names it. */
export interface CustodianIdentity {
  /** The custodian's MSP id on the channel, e.g. `Org1MSP`. */
  mspId: string;
  /** Display name of the organisation (never a person). */
  organization: string;
  /** The custodian's FHIR base URL, without a trailing `/` (the member directory's `fhirBaseUrl`). */
  fhirBaseUrl: string;
}

/**
 * A record's evidence: `anchored` with everything a receiver needs to prove it against the ledger (the RecordProof
 * fields of src/integrity/verification.ts plus the transaction), or `pending` (queued, not yet on the ledger).
 */
export type RecordEvidence =
  | {
      status: 'anchored';
      salt: string;
      leafVersion: LeafVersion;
      /** The custodian reference the leaf hash commits to (leaf format 2), e.g. `Organization/abc`. */
      custodian?: string;
      root: string;
      leafIndex: number;
      leafCount: number;
      proof: ProofStep[];
      transactionId: string;
      blockNumber: number;
    }
  | { status: 'pending'; reason: string };

export interface EvidenceSources {
  store: Pick<ResourceStore, 'anchorStates'>;
  /** The batch journal (IntegrityService.journal). */
  journal: Pick<BatchJournal, 'members'>;
}

/** A batch as the journal holds it, with its tree. */
interface JournalBatch {
  tree: MerkleTree;
  members: BatchMember[];
}

/**
 * Batch trees recently answered from, per journal: a root fixes its members (it is their hash), so a tree built
 * once serves every later answer from that batch instead of reading and hashing the whole batch per answer.
 * Capped by leaves held; the oldest batch goes first. A root the journal does not hold is not remembered.
 */
const TREE_CACHE_LEAVES = 200_000;
const treeCaches = new WeakMap<object, Map<string, JournalBatch>>();

async function journalBatch(
  journal: EvidenceSources['journal'],
  root: string,
): Promise<JournalBatch | undefined> {
  let cache = treeCaches.get(journal);
  if (!cache) {
    cache = new Map();
    treeCaches.set(journal, cache);
  }
  const known = cache.get(root);
  if (known) {
    // Most recently used last.
    cache.delete(root);
    cache.set(root, known);
    return known;
  }
  const members = await journal.members(root);
  if (members.length === 0) return undefined;
  const batch = { tree: new MerkleTree(members.map((m) => m.leafHash)), members };
  let leaves = members.length;
  for (const held of cache.values()) leaves += held.members.length;
  for (const [oldest, held] of cache) {
    if (leaves <= TREE_CACHE_LEAVES) break;
    cache.delete(oldest);
    leaves -= held.members.length;
  }
  if (members.length <= TREE_CACHE_LEAVES) cache.set(root, batch);
  return batch;
}

/**
 * The evidence of each version, in order. Reads every version's anchor state in one read, each batch's members once, and
 * builds each batch's tree once. A version without provable evidence (anchoring off, salt erased, a journal
 * that lost or disagrees with its batch) is `pending` with the reason: the receiver cannot verify it either way.
 */
export async function collectEvidence(
  versions: readonly StoredVersion[],
  sources: EvidenceSources,
): Promise<RecordEvidence[]> {
  const batches = new Map<string, Promise<JournalBatch | undefined>>();
  const batchOf = (root: string) => {
    if (!batches.has(root)) batches.set(root, journalBatch(sources.journal, root));
    return batches.get(root)!;
  };
  // Every version's anchor state in one read.
  const states = await sources.store.anchorStates(versions);
  const out: RecordEvidence[] = [];
  for (let i = 0; i < versions.length; i++) {
    const version = versions[i];
    const state = states[i];
    if (!state) {
      out.push({ status: 'pending', reason: 'never queued for anchoring' });
      continue;
    }
    if (state.status === 'erased') {
      out.push({ status: 'pending', reason: 'the salt was erased' });
      continue;
    }
    if (state.status === 'pending') {
      out.push({ status: 'pending', reason: 'queued; not yet on the ledger' });
      continue;
    }
    const { anchor } = state;
    const batch = await batchOf(anchor.root);
    const member = batch?.members[anchor.leafIndex];
    if (
      !batch ||
      !member ||
      batch.members.length !== anchor.leafCount ||
      member.resourceType !== version.resourceType ||
      member.id !== version.id ||
      member.versionId !== version.versionId
    ) {
      out.push({ status: 'pending', reason: 'the batch journal does not hold this version’s position' });
      continue;
    }
    const leafVersion = state.leafVersion ?? 1;
    const evidence: RecordEvidence = {
      status: 'anchored',
      salt: state.salt,
      leafVersion,
      root: anchor.root,
      leafIndex: anchor.leafIndex,
      leafCount: anchor.leafCount,
      proof: batch.tree.proof(anchor.leafIndex),
      transactionId: anchor.transactionId,
      blockNumber: anchor.blockNumber,
    };
    if (leafVersion === 2 && version.custodian !== undefined) evidence.custodian = version.custodian;
    out.push(evidence);
  }
  return out;
}

/** The custodian's absolute URL of a version: `base/Type/id/_history/vid`. */
export function versionUrl(fhirBaseUrl: string, resourceType: string, id: string, versionId: number): string {
  return `${fhirBaseUrl}/${resourceType}/${id}/_history/${versionId}`;
}

/** What the receiver adds to the evidence once it has checked it against its ledger. */
export interface EvidenceVerdict {
  status: 'verified' | 'pending';
  reason?: string;
  /** MSP that anchored the root, and when (the ledger's transaction timestamp). */
  anchoredBy?: string;
  anchoredAt?: string;
}

const part = (url: string, type: string, value: string | number): string =>
  `,{"url":"${url}","${type}":${typeof value === 'number' ? String(value) : JSON.stringify(value)}}`;

/** One proof step of the `integrity-evidence` extension, as its JSON text (with the comma before it). */
export function proofPartText(side: ProofStep['side'], hash: string): string {
  return part('proof', 'valueString', `${side}:${hash}`);
}

/**
 * The `integrity-evidence` extension, as JSON text: `status` (custodian: anchored | pending; receiver: verified |
 * pending), `reason`, `salt`, `leafVersion`, `custodian`, `root`, `leafIndex`, `leafCount`, `proof` (repeated,
 * leaf to root, `left:<hex>` | `right:<hex>`), `transactionId`, `blockNumber`, and from a receiver `anchoredBy`,
 * `anchoredAt`. Written as text (not an object then JSON.stringify), part after part: it goes out once per record.
 */
export function evidenceExtensionText(
  evidence: RecordEvidence,
  verdict?: EvidenceVerdict,
  /** The proof steps: evidence.proof's (true), none (false), or these parts already written (proofPartText). */
  withProof: boolean | string = true,
): string {
  let text = `{"url":"${EVIDENCE_EXTENSION_URL}","extension":[{"url":"status","valueCode":${JSON.stringify(verdict?.status ?? evidence.status)}}`;
  const reason = verdict ? verdict.reason : evidence.status === 'pending' ? evidence.reason : undefined;
  if (reason !== undefined) text += part('reason', 'valueString', reason);
  if (evidence.status === 'anchored') {
    text += part('salt', 'valueString', evidence.salt);
    text += part('leafVersion', 'valuePositiveInt', evidence.leafVersion);
    if (evidence.custodian !== undefined) text += part('custodian', 'valueString', evidence.custodian);
    text += part('root', 'valueString', evidence.root);
    text += part('leafIndex', 'valueUnsignedInt', evidence.leafIndex);
    text += part('leafCount', 'valuePositiveInt', evidence.leafCount);
    if (typeof withProof === 'string') text += withProof;
    else if (withProof) for (const step of evidence.proof) text += proofPartText(step.side, step.hash);
    text += part('transactionId', 'valueString', evidence.transactionId);
    text += part('blockNumber', 'valueUnsignedInt', evidence.blockNumber);
  }
  if (verdict?.anchoredBy !== undefined) text += part('anchoredBy', 'valueString', verdict.anchoredBy);
  if (verdict?.anchoredAt !== undefined) text += part('anchoredAt', 'valueDateTime', verdict.anchoredAt);
  return text + ']}';
}

/** The Provenance that follows a record, as JSON text: custodian (MSP, organisation), target version, evidence. */
export function evidenceProvenanceText(
  target: { fullUrl: string; lastUpdated: string },
  custodian: Pick<CustodianIdentity, 'mspId' | 'organization'>,
  evidence: RecordEvidence,
  verdict?: EvidenceVerdict,
  /**
   * False in a custodian's answer: the proof steps go once per batch in its proof-nodes entry. A string: the
   * proof's parts already written (proofPartText of each step).
   */
  withProof: boolean | string = true,
): string {
  return (
    `{"resourceType":"Provenance","extension":[${evidenceExtensionText(evidence, verdict, withProof)}],` +
    `"target":[{"reference":${JSON.stringify(target.fullUrl)}}],` +
    // When the target version was recorded by its custodian.
    `"recorded":${JSON.stringify(target.lastUpdated)},` +
    `"agent":[{"type":{"coding":[{"system":"${PARTICIPANT_TYPE_SYSTEM}","code":"custodian","display":"Custodian"}]},` +
    `"who":{"identifier":{"system":"${MSP_IDENTIFIER_SYSTEM}","value":${JSON.stringify(custodian.mspId)}},` +
    `"display":${JSON.stringify(custodian.organization)}}}]}`
  );
}

/** One searchset entry of a record: the stored text spliced in as it is (never re-serialised). */
export function recordEntryText(fullUrl: string, resourceText: string): string {
  return `{"fullUrl":${JSON.stringify(fullUrl)},"resource":${resourceText},"search":{"mode":"match"}}`;
}

/** One searchset entry of an included resource (a Provenance), from its JSON text. */
export function includeEntryText(resourceText: string): string {
  return `{"resource":${resourceText},"search":{"mode":"include"}}`;
}

/** A searchset Bundle of entry texts, `total` the number of matches. */
export function searchsetText(total: number, entryTexts: readonly string[]): string {
  return `{"resourceType":"Bundle","type":"searchset","total":${total},"entry":[${entryTexts.join(',')}]}`;
}

/** The name of the parameter that identifies a batch's proof-nodes entry in a custodian's answer. */
export const PROOF_NODES_PARAMETER = 'integrity-proof-nodes';

/**
 * The positions of a record's proof steps in its batch's tree, bottom up: `level * 2^31 + index` of each sibling
 * node (the key ProvenNodes uses too). Levels with no sibling (an odd node promoted) have no step.
 */
export function proofPositions(leafIndex: number, leafCount: number): number[] {
  const out: number[] = [];
  let index = leafIndex;
  let width = leafCount;
  for (let level = 0; width > 1; level++) {
    const sibling = index ^ 1;
    if (sibling < width) out.push(level * 2 ** 31 + sibling);
    index >>= 1;
    width = Math.ceil(width / 2);
  }
  return out;
}

/**
 * One batch's proof nodes as a `Parameters` entry (`search.mode = include`): `integrity-proof-nodes` (the root),
 * `leafCount`, then each node a record's proof needs, once, as `node` = `<level>/<index>/<hex>`.
 */
function proofNodesEntryText(root: string, leafCount: number, nodes: ReadonlyMap<number, string>): string {
  const parts: string[] = [
    `{"name":"${PROOF_NODES_PARAMETER}","valueString":"${root}"}`,
    `{"name":"leafCount","valuePositiveInt":${leafCount}}`,
  ];
  for (const [position, hash] of nodes) {
    const level = Math.floor(position / 2 ** 31);
    parts.push(`{"name":"node","valueString":"${level}/${position - level * 2 ** 31}/${hash}"}`);
  }
  return includeEntryText(`{"resourceType":"Parameters","parameter":[${parts.join(',')}]}`);
}

/**
 * The custodian's answer: for each version with a body (deletions have none and are left out), its entry
 * followed by its evidence Provenance. `evidence[i]` belongs to `versions[i]` (collectEvidence's order). The proof
 * steps are not repeated in each Provenance: each batch's nodes go once, in one proof-nodes entry per batch after
 * the records (records of one batch share most of their proof; a batch of one record needs none).
 */
export function evidenceBundleText(
  versions: readonly StoredVersion[],
  evidence: readonly RecordEvidence[],
  custodian: CustodianIdentity,
): string {
  if (evidence.length !== versions.length) throw new RangeError('one evidence per version');
  const entries: string[] = [];
  const batches = new Map<string, { leafCount: number; nodes: Map<number, string> }>();
  let total = 0;
  for (let i = 0; i < versions.length; i++) {
    const version = versions[i];
    if (version.deleted || version.json === undefined) continue;
    const fullUrl = versionUrl(custodian.fhirBaseUrl, version.resourceType, version.id, version.versionId);
    const recordEvidence = evidence[i];
    entries.push(recordEntryText(fullUrl, version.json));
    entries.push(
      includeEntryText(
        evidenceProvenanceText(
          { fullUrl, lastUpdated: version.lastUpdated },
          custodian,
          recordEvidence,
          undefined,
          false,
        ),
      ),
    );
    total++;
    if (recordEvidence.status !== 'anchored') continue;
    const key = `${recordEvidence.root}|${recordEvidence.leafCount}`;
    let batch = batches.get(key);
    if (!batch) {
      batch = { leafCount: recordEvidence.leafCount, nodes: new Map() };
      batches.set(key, batch);
    }
    const positions = proofPositions(recordEvidence.leafIndex, recordEvidence.leafCount);
    for (let step = 0; step < positions.length; step++)
      batch.nodes.set(positions[step], recordEvidence.proof[step].hash);
  }
  for (const [key, batch] of batches)
    if (batch.nodes.size > 0)
      entries.push(proofNodesEntryText(key.slice(0, key.indexOf('|')), batch.leafCount, batch.nodes));
  return searchsetText(total, entries);
}

/** collectEvidence then evidenceBundleText: what a custodian's network operation answers. */
export async function recordEvidenceBundle(
  versions: readonly StoredVersion[],
  sources: EvidenceSources,
  custodian: CustodianIdentity,
): Promise<string> {
  return evidenceBundleText(versions, await collectEvidence(versions, sources), custodian);
}
