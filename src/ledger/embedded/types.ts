/**
 * The embedded chain's transaction model, shaped after Fabric's: a proposal is simulated (endorsed) into a
 * read-write set, then ordered into a block and validated (MVCC and phantom checks) at commit.
 */

/** Fabric's msp.SerializedIdentity: the creator of a proposal (MSP id and PEM certificate bytes). */
export interface SerializedIdentity {
  mspid: string;
  idBytes: Uint8Array;
}

/** A state version: the block and the transaction index within it that last wrote the key (Fabric's height). */
export interface Version {
  blockNum: number;
  txNum: number;
}

export interface KVRead {
  key: string;
  /** null: the key did not exist when read. */
  version: Version | null;
}

/** A range or partial-composite-key query, re-executed at commit to detect phantoms. */
export interface RangeQueryInfo {
  startKey: string;
  endKey: string;
  /** False when the chaincode stopped iterating early: only keys up to the last one read are re-checked. */
  itrExhausted: boolean;
  reads: KVRead[];
}

export interface KVWrite {
  key: string;
  isDelete: boolean;
  value: Buffer;
}

export interface ReadWriteSet {
  reads: KVRead[];
  rangeQueries: RangeQueryInfo[];
  /** Sorted by key (as Fabric's rwset builder does). */
  writes: KVWrite[];
}

export interface ChaincodeEvent {
  name: string;
  payload: Buffer;
}

export interface TxTimestamp {
  seconds: number;
  nanos: number;
}

/** What a client (or the test Gateway server) sends to be endorsed. */
export interface ChaincodeProposal {
  /** Defaults to the chain's channel. */
  channelId?: string;
  /** Fully qualified transaction name, e.g. `anchor:AnchorVersion`. */
  transaction: string;
  args: readonly (string | Uint8Array)[];
  creator: SerializedIdentity;
  /** Random bytes chosen by the client; generated when absent. */
  nonce?: Uint8Array;
  /** Set by the client (the proposal's channel header timestamp); the current time when absent. */
  timestamp?: TxTimestamp;
  /** When absent, computed like Fabric: hex SHA-256(nonce || serialized creator). */
  txId?: string;
  transient?: ReadonlyMap<string, Uint8Array> | Readonly<Record<string, Uint8Array>>;
}

export interface ChaincodeResponse {
  /** 200 on success; 500 when the chaincode threw. */
  status: number;
  message: string;
  payload: Buffer;
}

/** An endorsed (simulated) transaction, ready to be ordered. */
export interface Endorsement {
  txId: string;
  channelId: string;
  transaction: string;
  args: Buffer[];
  creator: SerializedIdentity;
  nonce: Buffer;
  timestamp: TxTimestamp;
  response: ChaincodeResponse;
  rwset: ReadWriteSet;
  event?: ChaincodeEvent;
}

/** Fabric TxValidationCode names used by the embedded chain. */
export type ValidationCode =
  'VALID' | 'MVCC_READ_CONFLICT' | 'PHANTOM_READ_CONFLICT' | 'DUPLICATE_TXID' | 'ENDORSEMENT_POLICY_FAILURE';

export interface CommitStatus {
  txId: string;
  blockNumber: number;
  validationCode: ValidationCode;
}

export interface BlockHeader {
  number: number;
  previousHash: Buffer;
  dataHash: Buffer;
  /** SHA-256 over number (uint64 BE) || previousHash || dataHash. */
  hash: Buffer;
}

export interface StoredTransaction {
  blockNumber: number;
  index: number;
  txId: string;
  validationCode: ValidationCode;
  /** Deterministic JSON of the endorsed transaction, as hashed into the block's data hash. */
  envelope: Buffer;
}
