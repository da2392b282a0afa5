/**
 * A grant belongs to its home MSP on the chain itself, not only in the chaincode's check: each grant key carries a
 * key-level endorsement policy naming the home's peer, so a change endorsed by another organisation alone (its peer
 * may compute any read-write set it likes) is invalidated at commit.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import type { GrantRecord } from 'hie-ledger-chaincode';
import { creatorOf, hex, makeOrg, openChain, tempDir, type TestOrg } from './helpers.js';

let cleanup: () => Promise<void>;
let org1: TestOrg;
let org2: TestOrg;
let chain: EmbeddedChain;
let home: Ledger;

const grant = { grantId: 'grant-owned-0001', patientTag: hex('patient tag'), grantee: 'grantee-bbbb' };

beforeEach(async () => {
  let dir: string;
  ({ dir, cleanup } = await tempDir());
  org1 = await makeOrg(dir, 'Org1MSP');
  org2 = await makeOrg(dir, 'Org2MSP');
  chain = await openChain(dir, [org1, org2]);
  home = chain.connect(org1.service);
  await home.submit('consent:GrantAccess', [JSON.stringify({ ...grant, classes: ['Observation'] })]);
});
afterEach(async () => {
  await chain.close();
  await cleanup();
});

const read = async () => JSON.parse(await home.evaluate('consent:ReadGrant', [grant.grantId])) as GrantRecord;

describe('a grant on the chain belongs to its home MSP', () => {
  it('a revocation or a widening endorsed by another organisation alone is invalidated at commit', async () => {
    for (const [transaction, args] of [
      ['consent:RevokeAccess', [grant.grantId]],
      ['consent:GrantAccess', [JSON.stringify({ ...grant, classes: [] })]],
    ] as const) {
      // The read-write set the home's own change would have, endorsed by Org2's peer only.
      const forged = await chain.endorse({ transaction, args: [...args], creator: creatorOf(org1.service) });
      expect(forged.response.status).toBe(200);
      const status = await chain.commit({ ...forged, creator: creatorOf(org2.service) });
      expect(status.validationCode).toBe('ENDORSEMENT_POLICY_FAILURE');
    }
    expect(await read()).toMatchObject({ status: 'active', classes: ['Observation'], homeMsp: 'Org1MSP' });

    // The home's own endorsement of the same change is valid.
    const genuine = await chain.endorse({
      transaction: 'consent:RevokeAccess',
      args: [grant.grantId],
      creator: creatorOf(org1.service),
    });
    expect((await chain.commit(genuine)).validationCode).toBe('VALID');
    expect((await read()).status).toBe('revoked');
  });

  it('another organisation cannot take the key over by rewriting its policy', async () => {
    const change = await chain.endorse({
      transaction: 'consent:GrantAccess',
      args: [JSON.stringify({ ...grant, classes: ['Condition'] })],
      creator: creatorOf(org1.service),
    });
    // Only the policy write (the reserved companion key), sent with Org2's endorsement.
    const policyOnly = {
      ...change,
      creator: creatorOf(org2.service),
      rwset: { ...change.rwset, writes: change.rwset.writes.filter((w) => w.key.startsWith('\x00')) },
    };
    expect(policyOnly.rwset.writes).toHaveLength(1);
    expect((await chain.commit(policyOnly)).validationCode).toBe('ENDORSEMENT_POLICY_FAILURE');
  });
});
