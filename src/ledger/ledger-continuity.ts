/**
 * Start-up check that the ledger holds what this data directory says was committed to it: the consent checkpoint's
 * last applied transaction and the anchor journal's last committed batch must be on the chain, valid, in the same
 * block. A lost or replaced ledger (an empty chain file, another data directory's chain, an old backup, the wrong
 * Fabric channel) fails this check, and the service refuses to start instead of serving grants from a checkpoint
 * the ledger no longer backs (and letting revoked grants come back). Transaction ids are SHA-256 of a random nonce
 * and the creator, so no other chain holds the same one.
 */
import { LedgerTransactionError, type Ledger } from './ledger.js';

/** A transaction that some file of the data directory says is on the ledger. */
export interface CommittedClaim {
  /** Who says so, for the operator: e.g. "the consent checkpoint DATA/checkpoints/consent.json". */
  source: string;
  transactionId: string;
  /** The block it says the transaction is in; -1 when it does not know. */
  blockNumber: number;
}

/** The ledger lacks (or contradicts) a transaction the data directory recorded as committed. */
export class LedgerMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LedgerMismatchError';
  }
}

/**
 * Checks every claim against the ledger. Throws LedgerMismatchError naming what is missing and what the operator
 * can do; returns 'unreachable' when the ledger could not be asked (a Fabric peer away), 'verified' otherwise.
 */
export async function verifyLedgerHolds(
  ledger: Ledger,
  claims: readonly CommittedClaim[],
): Promise<'verified' | 'unreachable'> {
  for (const claim of claims) {
    let status;
    try {
      status = await ledger.transactionStatus(claim.transactionId);
    } catch (err) {
      if (err instanceof LedgerTransactionError && err.retryable) return 'unreachable';
      throw err;
    }
    let problem: string | undefined;
    if (!status) problem = 'is not on the chain';
    else if (status.validationCode !== 'VALID')
      problem = `is on the chain as invalid (${status.validationCode}) in block ${status.blockNumber}`;
    else if (claim.blockNumber >= 0 && status.blockNumber !== claim.blockNumber)
      problem = `is in block ${status.blockNumber} of this chain, not in block ${claim.blockNumber}`;
    if (problem) throw new LedgerMismatchError(mismatchMessage(ledger, claim, problem));
  }
  return 'verified';
}

function mismatchMessage(ledger: Ledger, claim: CommittedClaim, problem: string): string {
  const where = claim.blockNumber >= 0 ? ` (block ${claim.blockNumber})` : '';
  const ledgerName =
    ledger.kind === 'embedded'
      ? 'the embedded ledger (DATA/ledger/chain.sqlite)'
      : 'the Fabric channel this service is configured for';
  const remedy =
    ledger.kind === 'embedded'
      ? 'Restore DATA/ledger/chain.sqlite from the backup taken with this data directory (never an empty or another chain file)'
      : 'Check --fabric-config (peer, channel, chaincode) points at the network this service wrote to, or restore that network';
  return (
    `refusing to start: ${ledgerName} does not hold what ${claim.source} says was committed: ` +
    `transaction ${claim.transactionId}${where} ${problem}. The ledger was lost or replaced; serving on it would ` +
    `bring back revoked grants and drop anchors. ${remedy}, then start again.`
  );
}
