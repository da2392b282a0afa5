/**
 * The Merkle rule of anchor batches (binding across the project; docs/integrity.md):
 *
 *   leaf node  = SHA-256(0x00 || leafHash bytes)
 *   inner node = SHA-256(0x01 || left || right)
 *   a level with an odd number of nodes promotes its last node unchanged to the next level
 *   the root of a one-leaf batch is that leaf's node
 *
 * The 0x00/0x01 prefixes keep a leaf from ever being read as an inner node (second-preimage safety).
 * An inclusion proof lists, from the leaf upwards, the sibling of each level where the node has one:
 * `{ side, hash }`, `side` saying whether the sibling is on the left or the right of the running node.
 * Levels where the node is promoted contribute no step.
 */
import * as nodeCrypto from 'node:crypto';
import { createHash } from 'node:crypto';

export interface ProofStep {
  side: 'left' | 'right';
  /** Sibling node, hex. */
  hash: string;
}

const LEAF_PREFIX = Buffer.from([0]);
const NODE_PREFIX = Buffer.from([1]);

/**
 * One-shot SHA-256 (crypto.hash: Node 20.12+, 22): about a third cheaper than createHash for the 33- and 65-byte
 * inputs of nodes, which a receiver hashes for every record. Absent on older Node 20 releases: createHash then.
 */
const oneShotHash = (nodeCrypto as { hash?: typeof nodeCrypto.hash }).hash;
/** Node inputs written in place (hashing is synchronous): prefix byte, then the 32-byte hashes. */
const leafInput = Buffer.alloc(33, 0);
const nodeInput = Buffer.alloc(65, 1);

export function leafNode(leafHashHex: string): Buffer {
  if (oneShotHash && leafHashHex.length === 64 && leafInput.write(leafHashHex, 1, 'hex') === 32)
    return oneShotHash('sha256', leafInput, 'buffer');
  return createHash('sha256').update(LEAF_PREFIX).update(Buffer.from(leafHashHex, 'hex')).digest();
}

function innerNode(left: Buffer, right: Buffer): Buffer {
  if (oneShotHash && left.length === 32 && right.length === 32) {
    left.copy(nodeInput, 1);
    right.copy(nodeInput, 33);
    return oneShotHash('sha256', nodeInput, 'buffer');
  }
  return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
}

export class MerkleTree {
  /** levels[0] are the leaf nodes, the last level is [root]. */
  private readonly levels: Buffer[][];

  constructor(leafHashes: readonly string[]) {
    if (leafHashes.length === 0) throw new RangeError('A Merkle tree needs at least one leaf');
    let level = leafHashes.map(leafNode);
    this.levels = [level];
    while (level.length > 1) {
      const next: Buffer[] = new Array(Math.ceil(level.length / 2));
      for (let i = 0; i + 1 < level.length; i += 2) next[i >> 1] = innerNode(level[i], level[i + 1]);
      if (level.length % 2 === 1) next[next.length - 1] = level[level.length - 1];
      this.levels.push(next);
      level = next;
    }
  }

  get leafCount(): number {
    return this.levels[0].length;
  }

  get root(): string {
    return this.levels[this.levels.length - 1][0].toString('hex');
  }

  proof(leafIndex: number): ProofStep[] {
    if (!Number.isInteger(leafIndex) || leafIndex < 0 || leafIndex >= this.leafCount) {
      throw new RangeError(`Leaf index ${leafIndex} is outside a batch of ${this.leafCount}`);
    }
    const steps: ProofStep[] = [];
    let index = leafIndex;
    for (let depth = 0; depth < this.levels.length - 1; depth++) {
      const level = this.levels[depth];
      const sibling = index ^ 1;
      if (sibling < level.length) {
        steps.push({ side: sibling < index ? 'left' : 'right', hash: level[sibling].toString('hex') });
      }
      index >>= 1;
    }
    return steps;
  }
}

export function merkleRoot(leafHashes: readonly string[]): string {
  return new MerkleTree(leafHashes).root;
}

/** The sides a proof for this position must have, bottom up (the shape is fixed by index and count). */
export function proofSides(leafIndex: number, leafCount: number): ProofStep['side'][] {
  const sides: ProofStep['side'][] = [];
  let index = leafIndex;
  let width = leafCount;
  while (width > 1) {
    const sibling = index ^ 1;
    if (sibling < width) sides.push(sibling < index ? 'left' : 'right');
    index >>= 1;
    width = Math.ceil(width / 2);
  }
  return sides;
}

/**
 * Nodes already proven to lead to a root, by position (level, index) in a batch of a given size. Proofs of many
 * leaves of one batch share their upper levels: once a path is proven, a later proof that reaches one of its
 * nodes at the same position is proven too, without hashing the rest of the way (a receiver verifying a whole
 * custodian's answer hashes each inner node about once instead of once per leaf). Only proofs that verified
 * add nodes; a verifier keeps one per run.
 */
export class ProvenNodes {
  private readonly batches = new Map<string, Map<number, Buffer>>();
  /** The batch asked for last (the records of one answer come batch by batch). */
  private last: { root: string; leafCount: number; nodes: Map<number, Buffer> } | undefined;

  /** The nodes of batch (root, leafCount), keyed by level * 2^31 + index. */
  nodesOf(rootHex: string, leafCount: number): Map<number, Buffer> {
    const last = this.last;
    if (last && last.root === rootHex && last.leafCount === leafCount) return last.nodes;
    const key = `${rootHex.toLowerCase()}|${leafCount}`;
    let nodes = this.batches.get(key);
    if (!nodes) {
      nodes = new Map();
      this.batches.set(key, nodes);
    }
    this.last = { root: rootHex, leafCount, nodes };
    return nodes;
  }
}

const POSITION_KEY = 2 ** 31;
const HEX64 = /^[0-9a-f]{64}$/i;

/**
 * Does this proof lead from the leaf hash to the root? With `position`, the proof must also have exactly the
 * shape of that leaf index in a batch of that size (so a proof cannot be replayed for another position); with
 * `proven` too, nodes proven earlier at the same positions end the walk early, and a verified path is remembered.
 */
export function verifyProof(
  leafHashHex: string,
  proof: readonly ProofStep[],
  rootHex: string,
  position?: { leafIndex: number; leafCount: number },
  proven?: ProvenNodes,
): boolean {
  if (!HEX64.test(leafHashHex) || !HEX64.test(rootHex)) return false;
  for (const step of proof) {
    if ((step.side !== 'left' && step.side !== 'right') || !HEX64.test(step.hash)) return false;
  }
  if (!position) return walk(leafNode(leafHashHex), proof).toString('hex') === rootHex.toLowerCase();
  const { leafIndex, leafCount } = position;
  if (
    !Number.isInteger(leafIndex) ||
    !Number.isInteger(leafCount) ||
    leafIndex < 0 ||
    leafIndex >= leafCount
  ) {
    return false;
  }
  if (!hasShape(proof, leafIndex, leafCount)) return false;
  if (!proven) return walk(leafNode(leafHashHex), proof).toString('hex') === rootHex.toLowerCase();

  // hasShape checked that the proof has one step for each level with a sibling, in the order the walk asks.
  let step = 0;
  return walkRemembering(leafHashHex, rootHex, leafIndex, leafCount, proven, () =>
    Buffer.from(proof[step++].hash, 'hex'),
  );
}

/**
 * verifyProof with `position` and `proven` for a proof given as its batch's sibling nodes by position (`level *
 * 2^31 + index`, as ProvenNodes keys them; the receiver has each node of a custodian's answer once, as bytes): the
 * same walk without a ProofStep per level. The caller has checked the hex of the leaf hash and the root, the
 * position, and that every sibling the position needs is in `siblings` (a missing one fails the proof).
 */
export function verifyProofFromNodes(
  leafHashHex: string,
  rootHex: string,
  leafIndex: number,
  leafCount: number,
  siblings: ReadonlyMap<number, Buffer>,
  proven: ProvenNodes,
): boolean {
  return walkRemembering(leafHashHex, rootHex, leafIndex, leafCount, proven, (level, siblingIndex) =>
    siblings.get(level * POSITION_KEY + siblingIndex),
  );
}

/**
 * The walk of verifyProof and verifyProofFromNodes: from the leaf up, level by level (promoted levels included) so
 * each node has its position; a node proven earlier at the same position ends it early, and a verified path is
 * remembered in `proven`. `siblingAt` is asked, bottom up, for the sibling of each level that has one (undefined:
 * the proof fails).
 */
function walkRemembering(
  leafHashHex: string,
  rootHex: string,
  leafIndex: number,
  leafCount: number,
  proven: ProvenNodes,
  siblingAt: (level: number, siblingIndex: number) => Buffer | undefined,
): boolean {
  const known = proven.nodesOf(rootHex, leafCount);
  const pathKeys: number[] = [];
  const pathNodes: Buffer[] = [];
  let node = leafNode(leafHashHex);
  let index = leafIndex;
  let width = leafCount;
  for (let level = 0; width > 1; level++) {
    const key = level * POSITION_KEY + index;
    const seen = known.get(key);
    if (seen) {
      if (!seen.equals(node)) return false;
      remember(known, pathKeys, pathNodes);
      return true;
    }
    pathKeys.push(key);
    pathNodes.push(node);
    if ((index ^ 1) < width) {
      const sibling = siblingAt(level, index ^ 1);
      if (sibling === undefined) return false;
      node = index & 1 ? innerNode(sibling, node) : innerNode(node, sibling);
    }
    index >>= 1;
    width = Math.ceil(width / 2);
  }
  if (node.toString('hex') !== rootHex.toLowerCase()) return false;
  remember(known, pathKeys, pathNodes);
  return true;
}

/** Whether the proof has exactly the sides of this position (proofSides), without building them. */
function hasShape(proof: readonly ProofStep[], leafIndex: number, leafCount: number): boolean {
  let step = 0;
  let index = leafIndex;
  let width = leafCount;
  while (width > 1) {
    const sibling = index ^ 1;
    if (sibling < width) {
      if (step >= proof.length || proof[step].side !== (sibling < index ? 'left' : 'right')) return false;
      step++;
    }
    index >>= 1;
    width = Math.ceil(width / 2);
  }
  return step === proof.length;
}

function remember(known: Map<number, Buffer>, keys: readonly number[], nodes: readonly Buffer[]): void {
  for (let i = 0; i < keys.length; i++) known.set(keys[i], nodes[i]);
}

function walk(leaf: Buffer, proof: readonly ProofStep[]): Buffer {
  let node = leaf;
  for (const step of proof) {
    const sibling = Buffer.from(step.hash, 'hex');
    node = step.side === 'left' ? innerNode(sibling, node) : innerNode(node, sibling);
  }
  return node;
}

/**
 * Hex digits of a leaf's tag: the first 64 bits of its leaf hash. A batch anchored with
 * `anchor:AnchorBatchTagged` puts the tags of its leaves, in leaf order, on the ledger next to the root, so a
 * version whose stored text (and every local copy of its hash) was rewritten is named by its own position even
 * when the custodian's journal of the batch was rewritten too (docs/integrity.md). The root still decides
 * whether the batch verifies; a tag only says which leaf differs.
 */
export const LEAF_TAG_HEX = 16;

export function leafTag(leafHashHex: string): string {
  return leafHashHex.slice(0, LEAF_TAG_HEX).toLowerCase();
}

/** The tags of a batch's leaves, concatenated in leaf order (what goes on the ledger). */
export function leafTagsOf(leafHashes: readonly string[]): string {
  return leafHashes.map(leafTag).join('');
}

/** The tag of leaf `leafIndex` in an on-chain tag list, or undefined when the list has no such leaf. */
export function leafTagAt(leafTags: string, leafIndex: number): string | undefined {
  const start = leafIndex * LEAF_TAG_HEX;
  if (!Number.isInteger(leafIndex) || leafIndex < 0 || start + LEAF_TAG_HEX > leafTags.length)
    return undefined;
  return leafTags.slice(start, start + LEAF_TAG_HEX);
}
