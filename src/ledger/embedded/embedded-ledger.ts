/**
 * The Ledger port over the embedded chain, bound to one organisation's signing identity. Every submit is
 * endorsed (simulated) and then committed in a block; an invalidated transaction throws LedgerTransactionError
 * with Fabric's validation code.
 */
import {
  isRetryableValidationCode,
  LedgerTransactionError,
  type EventStream,
  type Ledger,
  type SubmitResult,
  type TransactionStatus,
} from '../ledger.js';
import type { EmbeddedChain } from './chain.js';
import type { SerializedIdentity } from './types.js';

/** An organisation's identity on the ledger: MSP id, X.509 certificate and private key (PEM). */
export interface SigningIdentity {
  mspId: string;
  certificate: string;
  privateKey: string;
}

export class EmbeddedLedger implements Ledger {
  readonly kind = 'embedded' as const;
  private readonly creator: SerializedIdentity;

  constructor(
    private readonly chain: EmbeddedChain,
    identity: SigningIdentity,
    /** Called by close(): e.g. closing a chain opened for this ledger alone. */
    private readonly onClose?: () => Promise<void>,
  ) {
    // The proposal is not signed in-process: the chain trusts its own process (the ledger gateway verifies other members' signatures).
    this.creator = { mspid: identity.mspId, idBytes: Buffer.from(identity.certificate, 'utf8') };
  }

  /** The chain this ledger commits to (the ledger gateway serves it to other members). */
  get embeddedChain(): EmbeddedChain {
    return this.chain;
  }

  /** Simulates the transaction; a chaincode error is a LedgerTransactionError, as from a peer. */
  private async endorse(transaction: string, args: string[]) {
    const endorsement = await this.chain.endorse({ transaction, args, creator: this.creator });
    if (endorsement.response.status >= 400) {
      throw new LedgerTransactionError(
        `${transaction} failed: ${endorsement.response.message}`,
        'CHAINCODE_ERROR',
        endorsement.txId,
      );
    }
    return endorsement;
  }

  async submit(transaction: string, args: string[]): Promise<SubmitResult> {
    const endorsement = await this.endorse(transaction, args);
    const status = await this.chain.commit(endorsement);
    if (status.validationCode !== 'VALID') {
      throw new LedgerTransactionError(
        `transaction ${status.txId} (${transaction}) was invalidated in block ${status.blockNumber}: ${status.validationCode}`,
        status.validationCode,
        status.txId,
        isRetryableValidationCode(status.validationCode),
      );
    }
    return {
      transactionId: status.txId,
      blockNumber: status.blockNumber,
      result: endorsement.response.payload.toString('utf8'),
    };
  }

  async evaluate(transaction: string, args: string[]): Promise<string> {
    const endorsement = await this.endorse(transaction, args);
    return endorsement.response.payload.toString('utf8');
  }

  events(startBlock?: number): EventStream {
    return this.chain.events(startBlock);
  }

  async height(): Promise<number> {
    return this.chain.height;
  }

  async transactionStatus(transactionId: string): Promise<TransactionStatus | undefined> {
    const status = this.chain.transactionStatus(transactionId);
    return status && { blockNumber: status.blockNumber, validationCode: status.validationCode };
  }

  async close(): Promise<void> {
    await this.onClose?.();
  }
}
