/**
 * Key-level (state-based) endorsement: a key written with an owner policy can be changed on a Fabric channel only
 * by transactions endorsed by a peer of the owner's MSP, whatever the chaincode's own policy says. So one member's
 * peer cannot endorse alone a change to another member's record. The embedded ledger (one endorser) accepts the
 * parameter and relies on the chaincode's creator-MSP check, which runs on every endorser.
 */
import { Context } from 'fabric-contract-api';

interface KeyEndorsementPolicyClass {
  new (policy?: Uint8Array): { addOrgs(role: string, ...orgs: string[]): void; getPolicy(): Uint8Array };
}

let policyClass: KeyEndorsementPolicyClass | undefined;

/** Only peers of `mspId` may endorse the next change of `key`. */
export async function ownedBy(ctx: Context, key: string, mspId: string): Promise<void> {
  // Loaded on first use: the shim's protobuf types are needed only by transactions that set a policy.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  policyClass ??= require('fabric-shim/lib/utils/statebased') as KeyEndorsementPolicyClass;
  const policy = new policyClass();
  policy.addOrgs('MEMBER', mspId);
  await ctx.stub.setStateValidationParameter(key, policy.getPolicy());
}
