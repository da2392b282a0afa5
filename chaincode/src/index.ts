/**
 * hie-ledger chaincode. fabric-shim loads `contracts` from this module (package.json "main") when the chaincode
 * starts on a peer or as a chaincode-as-a-service server; the embedded ledger loads the same classes in-process.
 */
import { AnchorContract } from './anchor-contract';
import { ConsentContract } from './consent-contract';
import { MemberContract } from './member-contract';

export { AnchorContract } from './anchor-contract';
export type { AnchorRecord, BatchRecord, KeyModificationRecord } from './anchor-contract';
export { stableStringify, requireServiceCaller, txMeta, ROLE_ATTRIBUTE, SERVICE_ROLE } from './common';
export type { TxMeta } from './common';
export { ConsentContract } from './consent-contract';
export { MemberContract, MEMBER_KEY_PREFIX } from './member-contract';
export type { MemberRecord, MemberStatus } from './member-contract';
export { DEFAULT_PURPOSE, grantAllows } from './grant-rules';
export type { GrantTerms } from './grant-rules';
export type {
  AccessPage,
  AccessRecord,
  CheckResult,
  DenyRule,
  GrantRecord,
  Period,
} from './consent-contract';

export const contracts: (typeof AnchorContract | typeof ConsentContract | typeof MemberContract)[] = [
  AnchorContract,
  ConsentContract,
  MemberContract,
];
