/**
 * Key-level (state-based) endorsement: a key written with an owner policy can be changed only by transactions
 * endorsed by a peer of the owner's MSP, whatever the chaincode's own policy says. So one member's peer cannot
 * endorse alone a change to another member's record (Fabric peers enforce it, and so does the embedded chain:
 * docs/ledger.md, "Key-level endorsement").
 */
import { Context } from 'fabric-contract-api';
import { KeyEndorsementPolicy } from 'fabric-shim';

/** Only peers of `mspId` may endorse the next change of `key`. */
export async function ownedBy(ctx: Context, key: string, mspId: string): Promise<void> {
  const policy = new KeyEndorsementPolicy();
  policy.addOrgs('PEER', mspId);
  await ctx.stub.setStateValidationParameter(key, policy.getPolicy());
}
