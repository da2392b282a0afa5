/**
 * verifyProof with ProvenNodes: proofs of many leaves of one batch share their upper levels, and a node proven
 * once ends later walks early. The answers must be exactly those of the plain check.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  MerkleTree,
  ProvenNodes,
  verifyProof,
  verifyProofFromNodes,
  type ProofStep,
} from '../../src/integrity/merkle.js';
import { proofPositions } from '../../src/exchange/record-evidence.js';

const leaf = (label: string) => createHash('sha256').update(label).digest('hex');

describe('verifyProof with proven nodes', () => {
  it('answers as the plain check for every leaf and every position, the cache warm or cold', () => {
    for (const count of [1, 2, 3, 7, 8, 13]) {
      const leaves = Array.from({ length: count }, (_, i) => leaf(`leaf-${count}-${i}`));
      const tree = new MerkleTree(leaves);
      const proven = new ProvenNodes();
      // Proven in order: each later proof meets nodes the earlier ones proved.
      for (let i = 0; i < count; i++) {
        const position = { leafIndex: i, leafCount: count };
        expect(verifyProof(leaves[i], tree.proof(i), tree.root, position, proven)).toBe(true);
      }
      // Every (leaf, proof of another position) pair fails, with the cache warm.
      for (let i = 0; i < count; i++) {
        for (let j = 0; j < count; j++) {
          const position = { leafIndex: j, leafCount: count };
          const plain = verifyProof(leaves[i], tree.proof(j), tree.root, position);
          expect(verifyProof(leaves[i], tree.proof(j), tree.root, position, proven)).toBe(plain);
          expect(plain).toBe(i === j);
        }
      }
      // A leaf that is not in the batch fails at every position.
      for (let j = 0; j < count; j++) {
        const position = { leafIndex: j, leafCount: count };
        expect(verifyProof(leaf('forged'), tree.proof(j), tree.root, position, proven)).toBe(false);
      }
    }
  });

  it('does not carry nodes from one batch size or root to another', () => {
    const leaves = Array.from({ length: 4 }, (_, i) => leaf(`l${i}`));
    const tree = new MerkleTree(leaves);
    const proven = new ProvenNodes();
    expect(verifyProof(leaves[0], tree.proof(0), tree.root, { leafIndex: 0, leafCount: 4 }, proven)).toBe(
      true,
    );
    const other = new MerkleTree([leaf('x'), leaves[1], leaves[2], leaves[3]]);
    expect(verifyProof(leaves[0], other.proof(0), other.root, { leafIndex: 0, leafCount: 4 }, proven)).toBe(
      false,
    );
    expect(verifyProof(leaf('x'), other.proof(0), other.root, { leafIndex: 0, leafCount: 4 }, proven)).toBe(
      true,
    );
  });

  it('verifyProofFromNodes (the proof as its batch’s nodes by position) answers as verifyProof', () => {
    /** The sibling nodes of position j's proof, keyed as proofPositions numbers them. */
    const siblingsOf = (proof: ProofStep[], leafIndex: number, count: number) =>
      new Map(proofPositions(leafIndex, count).map((p, k) => [p, Buffer.from(proof[k].hash, 'hex')]));
    for (const count of [1, 2, 3, 5, 8, 13]) {
      const leaves = Array.from({ length: count }, (_, i) => leaf(`n-${count}-${i}`));
      const tree = new MerkleTree(leaves);
      const proven = new ProvenNodes();
      const plainProven = new ProvenNodes();
      for (let i = 0; i < count; i++)
        for (let j = 0; j < count; j++) {
          const siblings = siblingsOf(tree.proof(j), j, count);
          const expected = verifyProof(
            leaves[i],
            tree.proof(j),
            tree.root,
            { leafIndex: j, leafCount: count },
            plainProven,
          );
          expect(verifyProofFromNodes(leaves[i], tree.root, j, count, siblings, proven)).toBe(expected);
          expect(expected).toBe(i === j);
        }
      // A missing sibling, or an altered one, fails (with a fresh cache: nothing proven yet).
      for (let j = 0; j < count && count > 1; j++) {
        const missing = siblingsOf(tree.proof(j), j, count);
        missing.delete(proofPositions(j, count)[0]);
        expect(verifyProofFromNodes(leaves[j], tree.root, j, count, missing, new ProvenNodes())).toBe(false);
        const altered = siblingsOf(tree.proof(j), j, count);
        altered.set(proofPositions(j, count)[0], Buffer.from(leaf('other'), 'hex'));
        expect(verifyProofFromNodes(leaves[j], tree.root, j, count, altered, new ProvenNodes())).toBe(false);
      }
    }
  });
});
