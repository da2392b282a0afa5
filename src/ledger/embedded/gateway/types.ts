/**
 * What the Gateway server hands to, and needs from, the chain behind it: a proposal after every check, the
 * simulation, the commit and the events. The embedded chain implements it (embedded-backend.ts).
 */
import type { EventStream } from '../../ledger.js';

/** A proposal as decoded and verified by the server (channel, transaction id, creator certificate, signature). */
export interface VerifiedProposal {
  channelId: string;
  chaincodeId: string;
  /** Fully qualified function name, e.g. `anchor:AnchorBatch`. */
  transaction: string;
  args: Uint8Array[];
  /** The creator as the chaincode sees it (ctx.clientIdentity): MSP id and PEM certificate bytes. */
  creator: { mspid: string; idBytes: Uint8Array };
  creatorBytes: Uint8Array;
  nonce: Uint8Array;
  txId: string;
  timestamp: { seconds: number; nanos: number };
  transient: Map<string, Uint8Array>;
}

export interface BackendResponse {
  status: number;
  message: string;
  payload: Uint8Array;
}

export interface SimulatedTransaction {
  response: BackendResponse;
  /** Serialized rwset.TxReadWriteSet, or undefined to let the server encode an empty one. */
  rwsetBytes?: Uint8Array;
  event?: { name: string; payload: Uint8Array };
  /** Opaque handle the backend needs to commit this simulation. */
  handle: unknown;
}

export interface CommittedStatus {
  blockNumber: number;
  /** Fabric TxValidationCode name, e.g. VALID, MVCC_READ_CONFLICT. */
  validationCode: string;
}

/** A block as the Deliver service's filtered blocks show it: transaction ids, validation codes, event names. */
export interface FilteredBlockView {
  number: number;
  transactions: { txId: string; validationCode: string; isConfig: boolean; eventName?: string }[];
}

/** What the Gateway server needs from a chain. */
export interface GatewayBackend {
  /** The one chaincode the chain runs (events of other chaincode names: none). */
  readonly chaincodeName: string;
  simulate(proposal: VerifiedProposal): Promise<SimulatedTransaction>;
  evaluate(proposal: VerifiedProposal): Promise<BackendResponse>;
  /** Orders and validates one endorsed transaction into a block. */
  commit(simulated: SimulatedTransaction, proposal: VerifiedProposal): Promise<CommittedStatus>;
  /** Chaincode events of valid transactions from `fromBlock` on (replayed), then live ones. */
  events(fromBlock: number): EventStream;
  height(): Promise<number>;
  /** Where a transaction id was committed (its valid occurrence if any); undefined when never. */
  transaction(txId: string): Promise<CommittedStatus | undefined>;
  /** Block `number` (undefined beyond the last one). */
  filteredBlock(number: number): Promise<FilteredBlockView | undefined>;
  /** Calls `listener` after each block is committed, whoever submitted it; returns the unsubscribe function. */
  onBlock(listener: () => void): () => void;
}

/** The Gateway service's calls. */
export type GatewayStep = 'evaluate' | 'endorse' | 'submit' | 'commitStatus' | 'chaincodeEvents';

/**
 * Runs around each call once it is received (before any check): tests count calls and inject faults here by
 * throwing a GatewayRpcError before or after `run`. Production servers have none.
 */
export type GatewayInterceptor = <T>(step: GatewayStep, run: () => Promise<T>) => Promise<T>;
