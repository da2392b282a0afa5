/**
 * A SignedProposal from the network, decoded and checked as a peer does before simulating it: the header type,
 * the channel, the creator (member-msps.ts), the signature over the proposal bytes, and the transaction id
 * (hex SHA-256 of nonce || creator). Every protobuf is decoded defensively: malformed bytes are
 * INVALID_ARGUMENT.
 */
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { common, peer } from '@hyperledger/fabric-protos';
import type { MemberMsps } from './member-msps.js';
import { WIRE_SCHEMAS } from './wire-format.js';
import { decodeOrRefuse, GatewayRpcError } from './rpc-error.js';
import type { VerifiedProposal } from './types.js';

/** The decoded proposal and the parts the endorsement response is built from. */
export interface DecodedProposal {
  proposal: VerifiedProposal;
  header: common.Header;
  /** The proposal's payload without its transient map (what goes on the ledger). */
  visiblePayloadBytes: Uint8Array;
}

/** A header's channel header, checked for well-formedness before it is parsed (INVALID_ARGUMENT otherwise). */
export function decodeChannelHeader(header: common.Header): common.ChannelHeader {
  return decodeOrRefuse(
    'channel header',
    header.getChannelHeader_asU8(),
    WIRE_SCHEMAS.channelHeader,
    (bytes) => common.ChannelHeader.deserializeBinary(bytes),
  );
}

/** A header's signature header (creator and nonce), checked for well-formedness before it is parsed. */
export function decodeSignatureHeader(header: common.Header): common.SignatureHeader {
  return decodeOrRefuse(
    'signature header',
    header.getSignatureHeader_asU8(),
    WIRE_SCHEMAS.signatureHeader,
    (bytes) => common.SignatureHeader.deserializeBinary(bytes),
  );
}

export function decodeProposal(
  signed: peer.SignedProposal | undefined,
  expectedTxId: string,
  channel: string,
  msps: MemberMsps,
): DecodedProposal {
  if (!signed) throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, 'a signed proposal is required');
  const proposalBytes = signed.getProposalBytes_asU8();
  const message = decodeOrRefuse('proposal', proposalBytes, WIRE_SCHEMAS.proposal, (bytes) =>
    peer.Proposal.deserializeBinary(bytes),
  );
  const header = decodeOrRefuse('header', message.getHeader_asU8(), WIRE_SCHEMAS.header, (bytes) =>
    common.Header.deserializeBinary(bytes),
  );
  const channelHeader = decodeChannelHeader(header);
  const signatureHeader = decodeSignatureHeader(header);
  if (channelHeader.getType() !== common.HeaderType.ENDORSER_TRANSACTION) {
    throw new GatewayRpcError(
      grpc.status.INVALID_ARGUMENT,
      `unexpected header type ${channelHeader.getType()}`,
    );
  }
  const channelId = channelHeader.getChannelId();
  if (channelId !== channel) {
    throw new GatewayRpcError(grpc.status.NOT_FOUND, `channel '${channelId.slice(0, 64)}' not found`);
  }
  const creatorBytes = signatureHeader.getCreator_asU8();
  const nonce = signatureHeader.getNonce_asU8();
  const creator = msps.verifyCreator(creatorBytes);
  msps.verifySignature(creator.publicKey, proposalBytes, signed.getSignature_asU8(), 'proposal');
  if (nonce.length === 0)
    throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, 'the proposal has no nonce');
  const txId = createHash('sha256').update(nonce).update(creatorBytes).digest('hex');
  if (channelHeader.getTxId() !== txId || (expectedTxId && expectedTxId !== txId)) {
    throw new GatewayRpcError(
      grpc.status.INVALID_ARGUMENT,
      'transaction id does not match nonce and creator',
    );
  }
  const extension = decodeOrRefuse(
    'chaincode header extension',
    channelHeader.getExtension_asU8(),
    WIRE_SCHEMAS.chaincodeHeaderExtension,
    (bytes) => peer.ChaincodeHeaderExtension.deserializeBinary(bytes),
  );
  const payload = decodeOrRefuse(
    'chaincode proposal payload',
    message.getPayload_asU8(),
    WIRE_SCHEMAS.chaincodeProposalPayload,
    (bytes) => peer.ChaincodeProposalPayload.deserializeBinary(bytes),
  );
  const spec = decodeOrRefuse(
    'chaincode invocation spec',
    payload.getInput_asU8(),
    WIRE_SCHEMAS.chaincodeInvocationSpec,
    (bytes) => peer.ChaincodeInvocationSpec.deserializeBinary(bytes),
  ).getChaincodeSpec();
  const chaincodeId = spec?.getChaincodeId()?.getName() || extension.getChaincodeId()?.getName() || '';
  const [fn, ...args] = spec?.getInput()?.getArgsList_asU8() ?? [];
  const timestamp = channelHeader.getTimestamp();
  const transient = new Map<string, Uint8Array>();
  payload
    .getTransientmapMap()
    .forEach((value: Uint8Array | string, key: string) =>
      transient.set(key, typeof value === 'string' ? Buffer.from(value, 'base64') : value),
    );
  // Fabric puts the payload on the ledger without its transient map (private inputs stay off the chain).
  payload.getTransientmapMap().clear();
  return {
    proposal: {
      channelId,
      chaincodeId,
      transaction: fn ? Buffer.from(fn).toString('utf8') : '',
      args,
      creator: { mspid: creator.mspid, idBytes: creator.idBytes },
      creatorBytes,
      nonce,
      txId,
      timestamp: { seconds: timestamp?.getSeconds() ?? 0, nanos: timestamp?.getNanos() ?? 0 },
      transient,
    },
    header,
    visiblePayloadBytes: payload.serializeBinary(),
  };
}
