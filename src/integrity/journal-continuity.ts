/**
 * Start-up check of the anchor journal against the ledger (the integrity half of src/ledger/ledger-continuity.ts):
 * the journal's last committed batch must be on the chain, or the service refuses to start.
 */
import type { Ledger } from '../ledger/ledger.js';
import { verifyLedgerHolds, type CommittedClaim } from '../ledger/ledger-continuity.js';
import type { BatchJournal } from './anchor-journal.js';

/**
 * The anchor journal's last committed batch must be on the ledger (throws LedgerMismatchError otherwise). A ledger
 * that cannot be asked now is logged and not waited for: anchors stay pending until it is back.
 */
export async function verifyAnchorJournal(
  ledger: Ledger,
  journal: BatchJournal,
  /** Where the journal is, for the message: its file, or the database. */
  journalFile: string,
  log: { warn(obj: object, msg?: string): void },
): Promise<void> {
  const last = await journal.lastCommitted();
  if (!last?.transactionId) return;
  const claim: CommittedClaim = {
    source: `the anchor journal ${journalFile} (batch ${last.root})`,
    transactionId: last.transactionId,
    blockNumber: last.blockNumber ?? -1,
  };
  if ((await verifyLedgerHolds(ledger, [claim])) === 'unreachable')
    log.warn({}, 'ledger unreachable at start: the anchor journal was not checked against it');
}
