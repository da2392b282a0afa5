/**
 * verifyReceivedRecord against the anchor's creator: a member must not be able to anchor a fabricated record and
 * present it as another member's. Two organisations share one embedded chain (as members share a channel).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { canonicalOfVersion, leafHashOf, newSalt } from '../../src/integrity/hashing.js';
import { MerkleTree } from '../../src/integrity/merkle.js';
import { AnchorContractClient } from '../../src/integrity/anchor-contract-client.js';
import {
  CachedBatchSource,
  verifyReceivedRecord,
  type RecordProof,
} from '../../src/integrity/verification.js';
import { makeOrg, openChain, tempDir, type TestOrg } from '../ledger/helpers.js';

let cleanup: () => Promise<void>;
let chain: EmbeddedChain;
let org1: TestOrg;
let org2: TestOrg;
let ledger1: Ledger;
let ledger2: Ledger;

const OBSERVATION = {
  resourceType: 'Observation',
  id: 'obs-1',
  versionId: 1,
  lastUpdated: '2026-03-01T10:00:00.000Z',
  deleted: false,
  json:
    '{"resourceType":"Observation","id":"obs-1","meta":{"versionId":"1","lastUpdated":"2026-03-01T10:00:00.000Z"},' +
    '"status":"final","code":{"text":"glucose"},"valueQuantity":{"value":1.50,"unit":"mmol/L"}}',
};

/** Anchors a one-leaf batch holding the version through `ledger`, and returns the evidence a sender would attach. */
async function anchorAs(ledger: Ledger, custodian: string): Promise<RecordProof> {
  const salt = newSalt();
  const leaf = leafHashOf(salt, canonicalOfVersion(OBSERVATION), 2, custodian);
  const tree = new MerkleTree([leaf, leafHashOf(newSalt(), '{}', 2, custodian)]);
  await new AnchorContractClient(ledger).anchorBatch(tree.root, tree.leafCount);
  return {
    salt,
    leafVersion: 2,
    custodian,
    root: tree.root,
    leafIndex: 0,
    leafCount: 2,
    proof: tree.proof(0),
  };
}

beforeEach(async () => {
  let dir: string;
  ({ dir, cleanup } = await tempDir());
  org1 = await makeOrg(dir, 'Org1MSP');
  org2 = await makeOrg(dir, 'Org2MSP');
  chain = await openChain(dir, [org1, org2]);
  ledger1 = chain.connect(org1.service);
  ledger2 = chain.connect(org2.service);
});

afterEach(async () => {
  await chain.close();
  await cleanup();
});

describe('verifyReceivedRecord with an expected custodian MSP', () => {
  it('verifies a record anchored by the custodian’s own MSP', async () => {
    const evidence = await anchorAs(ledger1, 'Org1MSP');
    expect(await verifyReceivedRecord(OBSERVATION, evidence, ledger2, { custodianMsp: 'Org1MSP' })).toEqual({
      verified: true,
      status: 'verified',
      anchoredBy: 'Org1MSP',
      anchoredAt: expect.any(String) as unknown,
    });
  });

  it('fails a record another member anchored and presents as the custodian’s', async () => {
    // Org2 fabricates "Org1's" record (the custodian named inside the leaf is Org1MSP) and anchors it itself.
    const evidence = await anchorAs(ledger2, 'Org1MSP');
    // The proof and the root hold: without the creator check the forgery would pass.
    expect((await verifyReceivedRecord(OBSERVATION, evidence, ledger1)).verified).toBe(true);
    expect(await verifyReceivedRecord(OBSERVATION, evidence, ledger1, { custodianMsp: 'Org1MSP' })).toEqual({
      verified: false,
      status: 'failed',
      reason: 'the root was anchored by Org2MSP, not by the custodian Org1MSP',
      anchoredBy: 'Org2MSP',
    });
  });

  it('is pending while the ledger does not hold the root, and failed when the text was altered', async () => {
    const evidence = await anchorAs(ledger1, 'Org1MSP');
    const leafOnly = leafHashOf(evidence.salt, canonicalOfVersion(OBSERVATION), 2, 'Org1MSP');
    const single = new MerkleTree([leafOnly]);
    expect(
      await verifyReceivedRecord(
        OBSERVATION,
        { ...evidence, root: single.root, leafCount: 1, proof: [] },
        ledger1,
        { custodianMsp: 'Org1MSP' },
      ),
    ).toMatchObject({ verified: false, status: 'pending' });
    const altered = { ...OBSERVATION, json: OBSERVATION.json.replace('1.50', '1.5') };
    expect(await verifyReceivedRecord(altered, evidence, ledger1, { custodianMsp: 'Org1MSP' })).toMatchObject(
      { verified: false, status: 'failed' },
    );
  });

  it('reads each root once per run through a CachedBatchSource', async () => {
    const evidence = await anchorAs(ledger1, 'Org1MSP');
    const batches = new CachedBatchSource(ledger2);
    for (let i = 0; i < 5; i++) {
      expect(
        await verifyReceivedRecord(OBSERVATION, evidence, batches, { custodianMsp: 'Org1MSP' }),
      ).toMatchObject({ status: 'verified', anchoredBy: 'Org1MSP' });
    }
    expect(batches.reads).toBe(1);
  });
});
