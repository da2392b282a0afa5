/**
 * Fabric's Deliver service, DeliverFiltered: filtered blocks (transaction ids, types, validation codes and
 * chaincode event names, no payloads) from a seek position to a stop position, live while the stop is ahead.
 * The request is a signed Envelope (DELIVER_SEEK_INFO header, orderer.SeekInfo data) checked like every other
 * request (creator of an admitted MSP, signature). Refusals are DeliverResponse statuses, as a peer sends them.
 * Deliver (full blocks) and DeliverWithPrivateData are not offered: the embedded chain keeps no protobuf blocks.
 */
import * as grpc from '@grpc/grpc-js';
import { common, orderer, peer } from '@hyperledger/fabric-protos';
import type { MemberMsps } from './member-msps.js';
import { decodeChannelHeader, decodeSignatureHeader } from './proposal.js';
import { decodeOrRefuse, GatewayRpcError } from './rpc-error.js';
import type { FilteredBlockView, GatewayBackend } from './types.js';
import { WIRE_SCHEMAS } from './wire-format.js';

const TX_VALIDATION = peer.TxValidationCode as unknown as Record<string, number>;
type StatusCode = common.StatusMap[keyof common.StatusMap];

interface SeekRange {
  start: number;
  stop: number;
}

export class FilteredDeliver {
  constructor(
    private readonly backend: GatewayBackend,
    private readonly members: MemberMsps,
    private readonly channel: string,
  ) {}

  /** Serves one DeliverFiltered stream: its first Envelope is the request. */
  serve(call: grpc.ServerDuplexStream<common.Envelope, peer.DeliverResponse>, isOpen: () => boolean): void {
    let closed = false;
    let wake: (() => void) | undefined;
    const finish = () => {
      closed = true;
      wake?.();
    };
    call.on('cancelled', finish);
    call.on('error', finish);
    call.once('data', (envelope: common.Envelope) => {
      void this.stream(
        call,
        envelope,
        () => closed || !isOpen(),
        (resolve) => (wake = resolve),
      ).finally(finish);
    });
  }

  private async stream(
    call: grpc.ServerDuplexStream<common.Envelope, peer.DeliverResponse>,
    envelope: common.Envelope,
    closed: () => boolean,
    onWake: (resolve: () => void) => void,
  ): Promise<void> {
    let range: SeekRange;
    try {
      range = await this.seekRange(envelope);
    } catch (error) {
      const status =
        error instanceof GatewayRpcError ? statusOf(error.code) : common.Status.INTERNAL_SERVER_ERROR;
      this.end(call, status);
      return;
    }
    let wakeUp: (() => void) | undefined;
    const unsubscribe = this.backend.onBlock(() => wakeUp?.());
    try {
      for (let number = range.start; number <= range.stop && !closed();) {
        const block = await this.backend.filteredBlock(number);
        if (block) {
          const response = new peer.DeliverResponse();
          response.setFilteredBlock(this.filteredBlock(block));
          call.write(response);
          number++;
          continue;
        }
        await new Promise<void>((resolve) => {
          wakeUp = resolve;
          onWake(resolve);
        });
      }
      if (!closed()) this.end(call, common.Status.SUCCESS);
    } finally {
      unsubscribe();
    }
  }

  /** Checks the signed seek request and resolves its start and stop block numbers. */
  private async seekRange(envelope: common.Envelope): Promise<SeekRange> {
    const payloadBytes = envelope.getPayload_asU8();
    const payload = decodeOrRefuse('seek envelope', payloadBytes, WIRE_SCHEMAS.payload, (bytes) =>
      common.Payload.deserializeBinary(bytes),
    );
    const header = payload.getHeader();
    if (!header) throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, 'the seek envelope has no header');
    const channelHeader = decodeChannelHeader(header);
    const signatureHeader = decodeSignatureHeader(header);
    const creator = this.members.verifyCreator(signatureHeader.getCreator_asU8());
    this.members.verifySignature(
      creator.publicKey,
      payloadBytes,
      envelope.getSignature_asU8(),
      'seek envelope',
    );
    if (channelHeader.getType() !== common.HeaderType.DELIVER_SEEK_INFO) {
      throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, 'not a seek request');
    }
    if (channelHeader.getChannelId() !== this.channel)
      throw new GatewayRpcError(grpc.status.NOT_FOUND, 'no such channel');
    const seekInfo = decodeOrRefuse('seek info', payload.getData_asU8(), WIRE_SCHEMAS.seekInfo, (bytes) =>
      orderer.SeekInfo.deserializeBinary(bytes),
    );
    const height = await this.backend.height();
    const position = (seek: orderer.SeekPosition | undefined, fallback: number): number => {
      switch (seek?.getTypeCase()) {
        case orderer.SeekPosition.TypeCase.OLDEST:
          return 0;
        case orderer.SeekPosition.TypeCase.NEWEST:
          return Math.max(0, height - 1);
        case orderer.SeekPosition.TypeCase.SPECIFIED:
          return seek.getSpecified()!.getNumber();
        case orderer.SeekPosition.TypeCase.NEXT_COMMIT:
          return height;
        default:
          return fallback;
      }
    };
    const start = position(seekInfo.getStart(), Math.max(0, height - 1));
    const stop = position(seekInfo.getStop(), Number.MAX_SAFE_INTEGER);
    if (stop < start) throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, 'the stop is before the start');
    return { start, stop };
  }

  private filteredBlock(block: FilteredBlockView): peer.FilteredBlock {
    const filtered = new peer.FilteredBlock();
    filtered.setChannelId(this.channel);
    filtered.setNumber(block.number);
    filtered.setFilteredTransactionsList(
      block.transactions.map((tx) => {
        const transaction = new peer.FilteredTransaction();
        transaction.setTxid(tx.txId);
        transaction.setType(tx.isConfig ? common.HeaderType.CONFIG : common.HeaderType.ENDORSER_TRANSACTION);
        transaction.setTxValidationCode(
          (TX_VALIDATION[tx.validationCode] ??
            TX_VALIDATION.INVALID_OTHER_REASON) as peer.TxValidationCodeMap[keyof peer.TxValidationCodeMap],
        );
        if (tx.eventName !== undefined) {
          const event = new peer.ChaincodeEvent();
          event.setChaincodeId(this.backend.chaincodeName);
          event.setTxId(tx.txId);
          event.setEventName(tx.eventName);
          const action = new peer.FilteredChaincodeAction();
          action.setChaincodeEvent(event);
          const actions = new peer.FilteredTransactionActions();
          actions.setChaincodeActionsList([action]);
          transaction.setTransactionActions(actions);
        }
        return transaction;
      }),
    );
    return filtered;
  }

  private end(
    call: grpc.ServerDuplexStream<common.Envelope, peer.DeliverResponse>,
    status: StatusCode,
  ): void {
    const response = new peer.DeliverResponse();
    response.setStatus(status);
    call.write(response);
    call.end();
  }
}

function statusOf(code: grpc.status): StatusCode {
  switch (code) {
    case grpc.status.PERMISSION_DENIED:
      return common.Status.FORBIDDEN;
    case grpc.status.NOT_FOUND:
      return common.Status.NOT_FOUND;
    default:
      return common.Status.BAD_REQUEST;
  }
}
