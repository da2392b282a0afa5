/** Key-level endorsement policies as the embedded chain evaluates them (Fabric's signature-policy semantics). */
import { createRequire } from 'node:module';
import { common, msp } from '@hyperledger/fabric-protos';
import { describe, expect, it } from 'vitest';
import { satisfiesPolicy } from '../../src/ledger/embedded/endorsement-policy.js';

// The class the chaincode sets key-level policies with (chaincode/src/member-contract.ts).
const { KeyEndorsementPolicy } = createRequire(import.meta.url)('fabric-shim') as {
  KeyEndorsementPolicy: new () => { addOrgs(role: string, ...orgs: string[]): void; getPolicy(): Uint8Array };
};

function keyPolicy(role: string, ...orgs: string[]): Uint8Array {
  const policy = new KeyEndorsementPolicy();
  policy.addOrgs(role, ...orgs);
  return policy.getPolicy();
}

/** n out of signed_by principals (indexes into `orgs`, each a PEER role of that MSP). */
function nOutOf(n: number, orgs: string[], signers: number[]): Uint8Array {
  const envelope = new common.SignaturePolicyEnvelope();
  envelope.setIdentitiesList(
    orgs.map((mspId) => {
      const role = new msp.MSPRole();
      role.setMspIdentifier(mspId);
      role.setRole(msp.MSPRole.MSPRoleType.PEER);
      const principal = new msp.MSPPrincipal();
      principal.setPrincipalClassification(msp.MSPPrincipal.Classification.ROLE);
      principal.setPrincipal(role.serializeBinary());
      return principal;
    }),
  );
  const rule = new common.SignaturePolicy.NOutOf();
  rule.setN(n);
  rule.setRulesList(
    signers.map((index) => {
      const signedBy = new common.SignaturePolicy();
      signedBy.setSignedBy(index);
      return signedBy;
    }),
  );
  const top = new common.SignaturePolicy();
  top.setNOutOf(rule);
  envelope.setRule(top);
  return envelope.serializeBinary();
}

describe('satisfiesPolicy', () => {
  it('needs the named organisation’s endorsement (PEER or MEMBER role)', () => {
    expect(satisfiesPolicy(keyPolicy('PEER', 'Org1MSP'), [{ mspId: 'Org1MSP' }])).toBe(true);
    expect(satisfiesPolicy(keyPolicy('MEMBER', 'Org1MSP'), [{ mspId: 'Org1MSP' }])).toBe(true);
    expect(satisfiesPolicy(keyPolicy('PEER', 'Org1MSP'), [{ mspId: 'Org2MSP' }])).toBe(false);
    expect(satisfiesPolicy(keyPolicy('PEER', 'Org1MSP'), [])).toBe(false);
  });

  it('needs every organisation a KeyEndorsementPolicy names, each endorsement counting once', () => {
    const both = keyPolicy('PEER', 'Org1MSP', 'Org2MSP');
    expect(satisfiesPolicy(both, [{ mspId: 'Org1MSP' }])).toBe(false);
    expect(satisfiesPolicy(both, [{ mspId: 'Org1MSP' }, { mspId: 'Org2MSP' }])).toBe(true);
    expect(satisfiesPolicy(nOutOf(2, ['Org1MSP'], [0, 0]), [{ mspId: 'Org1MSP' }])).toBe(false);
    expect(satisfiesPolicy(nOutOf(1, ['Org1MSP', 'Org2MSP'], [0, 1]), [{ mspId: 'Org2MSP' }])).toBe(true);
  });

  it('is never satisfied by an unreadable policy', () => {
    expect(satisfiesPolicy(Buffer.from('not a policy'), [{ mspId: 'Org1MSP' }])).toBe(false);
  });
});
