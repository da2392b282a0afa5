/**
 * The endorsement response: the transaction Envelope's payload a client signs and submits (Payload >
 * Transaction > ChaincodeActionPayload > ChaincodeEndorsedAction > ProposalResponsePayload > ChaincodeAction
 * with the TxReadWriteSet, the ChaincodeEvent and the Response), endorsed (signed) by the peer identity.
 */
import { createHash, createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { common, ledger, msp, peer } from '@hyperledger/fabric-protos';
import type { DecodedProposal } from './proposal.js';
import type { BackendResponse, SimulatedTransaction } from './types.js';

/** The endorsing peer: its serialized identity and signing key. */
export class Endorser {
  readonly serialized: Uint8Array;
  private readonly key: KeyObject;

  constructor(identity: { mspId: string; certificate: string; privateKey: string }) {
    const serialized = new msp.SerializedIdentity();
    serialized.setMspid(identity.mspId);
    serialized.setIdBytes(Buffer.from(identity.certificate));
    this.serialized = serialized.serializeBinary();
    this.key = createPrivateKey(identity.privateKey);
  }

  /** Fabric's endorsement signature: over the proposal response payload || the endorser's identity. */
  endorse(responsePayloadBytes: Uint8Array): peer.Endorsement {
    const endorsement = new peer.Endorsement();
    endorsement.setEndorser(this.serialized);
    endorsement.setSignature(
      sign('sha256', Buffer.concat([responsePayloadBytes, this.serialized]), this.key),
    );
    return endorsement;
  }
}

export function toPeerResponse(result: BackendResponse): peer.Response {
  const response = new peer.Response();
  response.setStatus(result.status);
  response.setMessage(result.message);
  response.setPayload(result.payload);
  return response;
}

/** The serialized common.Payload of the prepared transaction (the client signs exactly these bytes). */
export function preparedTransactionPayload(
  decoded: DecodedProposal,
  simulated: SimulatedTransaction,
  endorser: Endorser,
): Uint8Array {
  const { proposal, header, visiblePayloadBytes } = decoded;
  const chaincodeAction = new peer.ChaincodeAction();
  chaincodeAction.setResults(simulated.rwsetBytes ?? new ledger.rwset.TxReadWriteSet().serializeBinary());
  if (simulated.event) {
    const event = new peer.ChaincodeEvent();
    event.setChaincodeId(proposal.chaincodeId);
    event.setTxId(proposal.txId);
    event.setEventName(simulated.event.name);
    event.setPayload(simulated.event.payload);
    chaincodeAction.setEvents(event.serializeBinary());
  }
  chaincodeAction.setResponse(toPeerResponse(simulated.response));
  const chaincodeId = new peer.ChaincodeID();
  chaincodeId.setName(proposal.chaincodeId);
  chaincodeAction.setChaincodeId(chaincodeId);

  // Fabric's proposal hash: SHA-256 over channel header || signature header || payload without transient map.
  const proposalHash = createHash('sha256')
    .update(header.getChannelHeader_asU8())
    .update(header.getSignatureHeader_asU8())
    .update(visiblePayloadBytes)
    .digest();
  const responsePayload = new peer.ProposalResponsePayload();
  responsePayload.setProposalHash(proposalHash);
  responsePayload.setExtension$(chaincodeAction.serializeBinary());
  const responsePayloadBytes = responsePayload.serializeBinary();

  const endorsedAction = new peer.ChaincodeEndorsedAction();
  endorsedAction.setProposalResponsePayload(responsePayloadBytes);
  endorsedAction.setEndorsementsList([endorser.endorse(responsePayloadBytes)]);
  const actionPayload = new peer.ChaincodeActionPayload();
  actionPayload.setChaincodeProposalPayload(visiblePayloadBytes);
  actionPayload.setAction(endorsedAction);
  const action = new peer.TransactionAction();
  action.setHeader(header.getSignatureHeader_asU8());
  action.setPayload(actionPayload.serializeBinary());
  const transaction = new peer.Transaction();
  transaction.setActionsList([action]);
  const payload = new common.Payload();
  payload.setHeader(header);
  payload.setData(transaction.serializeBinary());
  return payload.serializeBinary();
}
