/**
 * The Gateway server's chain: the embedded chain, which runs the project's chaincode with Fabric's endorse
 * (simulate) and commit (order, MVCC/phantom validation) phases. The read-write set is handed back in Fabric's
 * protobuf form (rwset.TxReadWriteSet with one KV namespace), as a peer puts it in the ChaincodeAction.
 */
import { ledger } from '@hyperledger/fabric-protos';
import { LedgerTransactionError, type EventStream } from '../../ledger.js';
import type { EmbeddedChain } from '../chain.js';
import type { Endorsement, ReadWriteSet } from '../types.js';
import type {
  BackendResponse,
  CommittedStatus,
  FilteredBlockView,
  GatewayBackend,
  SimulatedTransaction,
  VerifiedProposal,
} from './types.js';

export class EmbeddedChainBackend implements GatewayBackend {
  constructor(
    private readonly chain: EmbeddedChain,
    readonly chaincodeName: string,
  ) {}

  async simulate(proposal: VerifiedProposal): Promise<SimulatedTransaction> {
    const endorsement = await this.endorse(proposal);
    const response = toResponse(endorsement);
    if (response.status >= 400) return { response, handle: endorsement };
    return {
      response,
      rwsetBytes: encodeRwset(this.chaincodeName, endorsement.rwset),
      event: endorsement.event && { name: endorsement.event.name, payload: endorsement.event.payload },
      handle: endorsement,
    };
  }

  async evaluate(proposal: VerifiedProposal): Promise<BackendResponse> {
    return toResponse(await this.endorse(proposal));
  }

  async commit(simulated: SimulatedTransaction): Promise<CommittedStatus> {
    const status = await this.chain.commit(simulated.handle as Endorsement);
    return { blockNumber: status.blockNumber, validationCode: status.validationCode };
  }

  events(fromBlock: number): EventStream {
    return this.chain.events(Math.max(0, fromBlock));
  }

  async height(): Promise<number> {
    return this.chain.height;
  }

  async transaction(txId: string): Promise<CommittedStatus | undefined> {
    const status = this.chain.transactionStatus(txId);
    return status && { blockNumber: status.blockNumber, validationCode: status.validationCode };
  }

  async filteredBlock(number: number): Promise<FilteredBlockView | undefined> {
    const block = this.chain.block(number);
    if (!block) return undefined;
    return {
      number,
      transactions: block.transactions.map((tx) => {
        // Block 0 is the genesis (configuration) block; the others hold endorsed transactions (JSON envelopes).
        if (number === 0) return { txId: tx.txId, validationCode: tx.validationCode, isConfig: true };
        const envelope = JSON.parse(tx.envelope.toString('utf8')) as { event?: { name: string } | null };
        return {
          txId: tx.txId,
          validationCode: tx.validationCode,
          isConfig: false,
          eventName: tx.validationCode === 'VALID' ? envelope.event?.name : undefined,
        };
      }),
    };
  }

  onBlock(listener: () => void): () => void {
    return this.chain.onBlock(listener);
  }

  /** Simulates as the proposal's creator: the chaincode sees its MSP and certificate (ctx.clientIdentity). */
  private async endorse(proposal: VerifiedProposal): Promise<Endorsement> {
    try {
      return await this.chain.endorse({
        channelId: proposal.channelId,
        transaction: proposal.transaction,
        args: proposal.args,
        creator: proposal.creator,
        nonce: proposal.nonce,
        timestamp: proposal.timestamp,
        txId: proposal.txId,
        transient: proposal.transient,
      });
    } catch (error) {
      // The chain refuses creators it does not know (e.g. a revoked certificate), and a transaction id already
      // used: a chaincode-level 500 here, as a peer reports it.
      if (error instanceof LedgerTransactionError) {
        return {
          txId: proposal.txId,
          channelId: proposal.channelId,
          transaction: proposal.transaction,
          args: [],
          creator: { mspid: proposal.creator.mspid, idBytes: Buffer.from(proposal.creator.idBytes) },
          nonce: Buffer.from(proposal.nonce),
          timestamp: proposal.timestamp,
          response: { status: 500, message: error.message, payload: Buffer.alloc(0) },
          rwset: { reads: [], rangeQueries: [], writes: [] },
        };
      }
      throw error;
    }
  }
}

function toResponse(endorsement: Endorsement): BackendResponse {
  const { status, message, payload } = endorsement.response;
  return { status, message, payload };
}

function encodeRwset(namespace: string, rwset: ReadWriteSet): Uint8Array {
  const { kvrwset } = ledger.rwset;
  const version = (v: { blockNum: number; txNum: number } | null) => {
    if (!v) return undefined;
    const out = new kvrwset.Version();
    out.setBlockNum(v.blockNum);
    out.setTxNum(v.txNum);
    return out;
  };
  const read = (r: ReadWriteSet['reads'][number]) => {
    const out = new kvrwset.KVRead();
    out.setKey(r.key);
    const v = version(r.version);
    if (v) out.setVersion(v);
    return out;
  };
  const kv = new kvrwset.KVRWSet();
  kv.setReadsList(rwset.reads.map(read));
  kv.setRangeQueriesInfoList(
    rwset.rangeQueries.map((query) => {
      const info = new kvrwset.RangeQueryInfo();
      info.setStartKey(query.startKey);
      info.setEndKey(query.endKey);
      info.setItrExhausted(query.itrExhausted);
      const reads = new kvrwset.QueryReads();
      reads.setKvReadsList(query.reads.map(read));
      info.setRawReads(reads);
      return info;
    }),
  );
  kv.setWritesList(
    rwset.writes.map((w) => {
      const out = new kvrwset.KVWrite();
      out.setKey(w.key);
      out.setIsDelete(w.isDelete);
      out.setValue(w.value);
      return out;
    }),
  );
  const ns = new ledger.rwset.NsReadWriteSet();
  ns.setNamespace(namespace);
  ns.setRwset(kv.serializeBinary());
  const tx = new ledger.rwset.TxReadWriteSet();
  tx.setDataModel(ledger.rwset.TxReadWriteSet.DataModel.KV);
  tx.setNsRwsetList([ns]);
  return tx.serializeBinary();
}
