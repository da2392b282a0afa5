/**
 * The Ledger port: how the service talks to the chaincode, whichever network runs it.
 * Adapters: embedded/ (default: the same chaincode, in-process, with Fabric's semantics) and fabric/
 * (@hyperledger/fabric-gateway). Nothing outside src/ledger/ knows which one runs; typed services
 * (anchors, consent) are built on this port in src/ledger/*.ts.
 *
 * Transactions are those of the chaincode package (chaincode/README.md). Arguments and results are strings
 * (the chaincode speaks deterministic JSON).
 */

export interface SubmitResult {
  transactionId: string;
  blockNumber: number;
  /** The chaincode function's return value, UTF-8. */
  result: string;
}

export interface LedgerEvent {
  blockNumber: number;
  transactionId: string;
  eventName: string;
  /** UTF-8 JSON payload set by the chaincode (one event per transaction). */
  payload: string;
}

/** Where a chain committed a transaction. */
export interface TransactionStatus {
  blockNumber: number;
  /** Fabric TxValidationCode name: VALID, or why the transaction was invalidated (it then wrote nothing). */
  validationCode: string;
}

export interface EventStream extends AsyncIterable<LedgerEvent> {
  close(): void;
}

/**
 * The validation codes after which the same transaction, endorsed again against the new state, may succeed: the
 * one definition every adapter uses for `LedgerTransactionError.retryable` of an invalidated transaction.
 */
const RETRYABLE_VALIDATION_CODES: ReadonlySet<string> = new Set([
  'MVCC_READ_CONFLICT',
  'PHANTOM_READ_CONFLICT',
]);

export function isRetryableValidationCode(code: string): boolean {
  return RETRYABLE_VALIDATION_CODES.has(code);
}

/** Raised for a transaction the network refused or invalidated (endorsement failure, MVCC conflict...). */
export class LedgerTransactionError extends Error {
  constructor(
    message: string,
    /** Fabric validation code name, e.g. MVCC_READ_CONFLICT, PHANTOM_READ_CONFLICT, ENDORSEMENT_POLICY_FAILURE. */
    readonly code: string,
    readonly transactionId?: string,
    /** True when retrying the same transaction later may succeed (conflicts, unavailable network). */
    readonly retryable = false,
  ) {
    super(message);
    this.name = 'LedgerTransactionError';
  }
}

export interface Ledger {
  readonly kind: 'embedded' | 'fabric';
  /** Endorse, order and wait for commit; throws LedgerTransactionError when invalidated. */
  submit(transaction: string, args: string[]): Promise<SubmitResult>;
  /** Query committed state without writing (no ordering). */
  evaluate(transaction: string, args: string[]): Promise<string>;
  /** Chaincode events from `startBlock` (inclusive) onwards, then live ones as they commit. */
  events(startBlock?: number): EventStream;
  /** Height of the chain (number of committed blocks). */
  height(): Promise<number>;
  /**
   * Where this chain committed `transactionId`; undefined when it holds no transaction with that id (how the
   * service checks at start that its ledger holds what its checkpoints and journal say was committed).
   */
  transactionStatus(transactionId: string): Promise<TransactionStatus | undefined>;
  /**
   * Calls `listener` each time the ledger is reachable again after it was not (a network ledger; the embedded one
   * is never away and has none); returns the unsubscribe function. Retriers waiting out a long backoff resume.
   */
  onReachable?(listener: () => void): () => void;
  close(): Promise<void>;
}
