/**
 * Key-level endorsement policies on the embedded chain (Fabric's state-based endorsement). A key's policy is kept
 * under a reserved companion key in the world state, so it is written, versioned and replayed like any state; at
 * commit a transaction that writes a key (or its policy) is valid only when its endorsements satisfy the policy the
 * key has in committed state, as a Fabric peer's validator checks it.
 *
 * The embedded chain simulates a proposal as the creator's organisation's peer, so a transaction carries exactly one
 * endorsement: that of the creator's MSP (as peer and member). A policy naming another organisation, or needing two,
 * is therefore not satisfied.
 */
import { common, msp } from '@hyperledger/fabric-protos';

/** Chaincode keys cannot start with two NULs (composite keys start with one, then a non-empty object type). */
export const VALIDATION_PARAMETER_PREFIX = '\x00\x00';

/** The reserved state key that holds `key`'s validation parameter (its key-level endorsement policy). */
export function validationParameterKey(key: string): string {
  return `${VALIDATION_PARAMETER_PREFIX}vp\x00${key}`;
}

/** The data key a reserved validation-parameter key belongs to, or undefined for an ordinary key. */
export function keyOfValidationParameter(stateKey: string): string | undefined {
  const prefix = validationParameterKey('');
  return stateKey.startsWith(prefix) ? stateKey.slice(prefix.length) : undefined;
}

/** One endorsement of a transaction: the endorsing peer's MSP. */
export interface Endorser {
  mspId: string;
}

/**
 * True when the endorsers satisfy the serialized SignaturePolicyEnvelope, with Fabric's semantics: `signed_by`
 * consumes one endorsement matching the principal, `n_out_of` needs n of its rules, each endorsement counts once.
 * Principals: ROLE MEMBER and PEER match the endorsing peer's MSP; other roles and classifications never match
 * (the embedded chain has no admin or client endorsements). An unreadable policy is never satisfied.
 */
export function satisfiesPolicy(policyBytes: Uint8Array, endorsers: readonly Endorser[]): boolean {
  let envelope: common.SignaturePolicyEnvelope;
  try {
    envelope = common.SignaturePolicyEnvelope.deserializeBinary(policyBytes);
  } catch {
    return false;
  }
  const rule = envelope.getRule();
  if (!rule) return false;
  const principals = envelope.getIdentitiesList().map(principalMsp);
  const evaluate = (policy: common.SignaturePolicy, used: boolean[]): boolean => {
    if (policy.hasSignedBy()) {
      const mspId = principals[policy.getSignedBy()];
      if (mspId === undefined) return false;
      const index = endorsers.findIndex((endorser, i) => !used[i] && endorser.mspId === mspId);
      if (index < 0) return false;
      used[index] = true;
      return true;
    }
    const nOutOf = policy.getNOutOf();
    if (!nOutOf) return false;
    let satisfied = 0;
    for (const sub of nOutOf.getRulesList()) {
      const attempt = [...used];
      if (evaluate(sub, attempt)) {
        satisfied += 1;
        attempt.forEach((value, i) => (used[i] = value));
      }
    }
    return satisfied >= nOutOf.getN();
  };
  return evaluate(
    rule,
    endorsers.map(() => false),
  );
}

/** The MSP a principal is satisfied by (a peer's or member's role), or undefined when no embedded endorsement can be. */
function principalMsp(principal: msp.MSPPrincipal): string | undefined {
  if (principal.getPrincipalClassification() !== msp.MSPPrincipal.Classification.ROLE) return undefined;
  const role = msp.MSPRole.deserializeBinary(principal.getPrincipal_asU8());
  const type = role.getRole();
  return type === msp.MSPRole.MSPRoleType.MEMBER || type === msp.MSPRole.MSPRoleType.PEER
    ? role.getMspIdentifier()
    : undefined;
}
