/**
 * Typed reads and writes of the anchor contract over the Ledger port (chaincode/src/anchor-contract.ts).
 * Results are the chaincode's deterministic JSON; `null` means "not on the ledger".
 */
import type { Ledger, SubmitResult } from '../ledger/ledger.js';

export interface OnChainRecordMeta {
  /**
   * The creator: MSP id of the organisation whose service identity submitted it, set by the chaincode from the
   * transaction's creator (ctx.clientIdentity), never from an argument. Every record the anchor contract has
   * written carries it; a record without it (none known) has an unknown creator: anchorCreatorMsp gives undefined
   * and a check against an expected custodian fails.
   */
  mspId?: string;
  txId: string;
  /** The proposal timestamp, ISO 8601. */
  timestamp: string;
}

export interface OnChainBatch extends OnChainRecordMeta {
  docType: 'batch';
  root: string;
  leafCount: number;
  /** Batches anchored with AnchorBatchTagged: 16 hex digits per leaf, in leaf order (merkle.ts leafTagsOf). */
  leafTags?: string;
}

export interface OnChainAnchor extends OnChainRecordMeta {
  docType: 'anchor';
  key: string;
  leafHash: string;
}

export interface KeyModification {
  txId: string;
  timestamp: string;
  isDelete: boolean;
  value: OnChainAnchor | null;
}

/** The MSP that wrote an anchor or batch record, or undefined when the record does not say (unknown creator). */
export function anchorCreatorMsp(record: OnChainRecordMeta): string | undefined {
  return typeof record.mspId === 'string' && record.mspId.length > 0 ? record.mspId : undefined;
}

export class AnchorContractClient {
  constructor(private readonly ledger: Ledger) {}

  async readBatch(root: string): Promise<OnChainBatch | null> {
    return JSON.parse(await this.ledger.evaluate('anchor:ReadBatch', [root])) as OnChainBatch | null;
  }

  async readAnchor(key: string): Promise<OnChainAnchor | null> {
    return JSON.parse(await this.ledger.evaluate('anchor:ReadAnchor', [key])) as OnChainAnchor | null;
  }

  async keyHistory(key: string): Promise<KeyModification[]> {
    return JSON.parse(await this.ledger.evaluate('anchor:KeyHistory', [key])) as KeyModification[];
  }

  /** Anchors a batch; with `leafTags`, through AnchorBatchTagged (per-leaf evidence on the ledger). */
  async anchorBatch(
    root: string,
    leafCount: number,
    leafTags?: string,
  ): Promise<SubmitResult & { record: OnChainBatch }> {
    const result =
      leafTags === undefined
        ? await this.ledger.submit('anchor:AnchorBatch', [root, String(leafCount)])
        : await this.ledger.submit('anchor:AnchorBatchTagged', [root, String(leafCount), leafTags]);
    return { ...result, record: JSON.parse(result.result) as OnChainBatch };
  }

  async anchorVersion(key: string, leafHash: string): Promise<SubmitResult & { record: OnChainAnchor }> {
    const result = await this.ledger.submit('anchor:AnchorVersion', [key, leafHash]);
    return { ...result, record: JSON.parse(result.result) as OnChainAnchor };
  }

  /**
   * The block that committed a transaction, found through the chaincode events from `fromBlock` on.
   * Used only to recover after a crash between a commit and its acknowledgement; gives up after `timeoutMs`
   * (the event stream stays open for live blocks, so a missing transaction would otherwise wait forever).
   */
  async findBlockOf(transactionId: string, fromBlock: number, timeoutMs = 2000): Promise<number | undefined> {
    const stream = this.ledger.events(Math.max(0, fromBlock));
    const timer = setTimeout(() => stream.close(), timeoutMs);
    try {
      for await (const event of stream) {
        if (event.transactionId === transactionId) return event.blockNumber;
      }
      return undefined;
    } finally {
      clearTimeout(timer);
      stream.close();
    }
  }
}
