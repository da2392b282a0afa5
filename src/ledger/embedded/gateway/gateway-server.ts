/**
 * A Fabric Gateway for tests: a gRPC server implementing Fabric's `gateway.Gateway` service (the generated
 * GatewayService definition and messages of @hyperledger/fabric-protos) over TLS, so the real
 * @hyperledger/fabric-gateway client (and through it our FabricLedger adapter) runs unchanged against it.
 *
 * What it does like a peer's Gateway:
 * - decodes each SignedProposal (Proposal, Header, ChannelHeader, SignatureHeader, ChaincodeProposalPayload,
 *   ChaincodeInvocationSpec), checks the channel, the transaction id (SHA-256 of nonce || creator), the creator's
 *   certificate against its MSP's CA certificate, and the ECDSA signature over the proposal bytes;
 * - executes the chaincode on a backend (the embedded chain) and answers Endorse with a prepared transaction
 *   Envelope (Payload > Transaction > ChaincodeActionPayload > ChaincodeEndorsedAction > ProposalResponsePayload >
 *   ChaincodeAction with the TxReadWriteSet, the ChaincodeEvent and the Response), endorsed (signed) by a peer
 *   identity; errors as the Gateway reports them (ABORTED + ErrorDetail on endorsement, UNKNOWN on evaluate);
 * - on Submit checks the envelope's signature by the creator and that its payload is the one it endorsed, then
 *   orders and commits it; a repeated transaction id is not committed again (Fabric: DUPLICATE_TXID);
 * - answers CommitStatus (signed request) once the transaction is in a block, and streams ChaincodeEvents from a
 *   SeekPosition, skipping up to `after_transaction_id`, then live;
 * - answers `qscc GetChainInfo` evaluations with a common.BlockchainInfo, and `GetTransactionByID` /
 *   `GetBlockByTxID` with the transaction's validation code and block number.
 * Not emulated: ordering service, several peers and orgs, endorsement policies, private data.
 *
 * Faults for tests (`faults`): drop every connection, refuse an endorsement, invalidate a transaction at commit,
 * answer slowly, or fail a step after it took effect (e.g. commit, then lose the connection before answering).
 */
import { createHash, createPrivateKey, sign as signBytes, verify, X509Certificate } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { webcrypto } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { common, gateway, ledger, msp, orderer, peer } from '@hyperledger/fabric-protos';

type Protobuf = { serializeBinary(): Uint8Array };

/** A proposal as decoded and verified by the server. */
export interface VerifiedProposal {
  channelId: string;
  chaincodeId: string;
  /** Fully qualified function name, e.g. `anchor:AnchorBatch`. */
  transaction: string;
  args: Uint8Array[];
  creator: { mspid: string; idBytes: Uint8Array };
  creatorBytes: Uint8Array;
  nonce: Uint8Array;
  txId: string;
  timestamp: { seconds: number; nanos: number };
  transient: Map<string, Uint8Array>;
}

export interface BackendResponse {
  status: number;
  message: string;
  payload: Uint8Array;
}

export interface SimulatedTransaction {
  response: BackendResponse;
  /** Serialized rwset.TxReadWriteSet, or undefined to let the server encode `rwset` itself. */
  rwsetBytes?: Uint8Array;
  event?: { name: string; payload: Uint8Array };
  /** Opaque handle the backend needs to commit this simulation. */
  handle: unknown;
}

export interface CommittedStatus {
  blockNumber: number;
  /** Fabric TxValidationCode name, e.g. VALID, MVCC_READ_CONFLICT. */
  validationCode: string;
}

export interface BlockEvents {
  blockNumber: number;
  events: { txId: string; chaincodeId: string; eventName: string; payload: Uint8Array }[];
}

/** What the server needs from a chain: H5's embedded chain in the tests (test/fabric/support/embedded-backend.ts). */
export interface GatewayBackend {
  simulate(proposal: VerifiedProposal): Promise<SimulatedTransaction>;
  evaluate(proposal: VerifiedProposal): Promise<BackendResponse>;
  /** Orders and validates one endorsed transaction into a block. */
  commit(simulated: SimulatedTransaction, proposal: VerifiedProposal): Promise<CommittedStatus>;
  /** Blocks (from `fromBlock` on) that hold chaincode events of valid transactions, in block order. */
  eventsFrom(fromBlock: number): Promise<BlockEvents[]>;
  height(): Promise<number>;
  /** Where a transaction id was committed (its valid occurrence if any); undefined when never. */
  transaction(txId: string): Promise<CommittedStatus | undefined>;
}

export type FaultStep = 'evaluate' | 'endorse' | 'submit' | 'commitStatus' | 'chaincodeEvents';

export interface Fault {
  step: FaultStep;
  /**
   * unavailable: answer UNAVAILABLE without doing anything; afterEffect: do the step, then answer UNAVAILABLE
   * (e.g. committed, but the answer was lost); reject: refuse the endorsement (ABORTED, chaincode-like message);
   * invalidate: commit the transaction as invalid with `validationCode` (nothing applied); delay: answer after
   * `delayMs`.
   */
  kind: 'unavailable' | 'afterEffect' | 'reject' | 'invalidate' | 'delay';
  validationCode?: string;
  delayMs?: number;
  message?: string;
}

export interface GatewayServerOptions {
  backend: GatewayBackend;
  /** The server's TLS certificate and key (PEM). */
  tls: { serverCertificate: string; serverKey: string };
  channel: string;
  /** Trusted client MSPs: MSP id -> CA certificate (PEM) that must have issued the creator's certificate. */
  msps: Record<string, string>;
  /** The endorsing peer's identity. */
  peerIdentity: { mspId: string; certificate: string; privateKey: string };
  /** Address reported in ErrorDetail, like a peer's. */
  peerAddress?: string;
}

interface PendingTransaction {
  proposal: VerifiedProposal;
  simulated: SimulatedTransaction;
  payloadBytes: Uint8Array;
}

const TX_VALIDATION = peer.TxValidationCode as unknown as Record<string, number>;

export class TestGatewayServer {
  private server: grpc.Server | undefined;
  private port = 0;
  private readonly backend: GatewayBackend;
  private readonly pending = new Map<string, PendingTransaction>();
  private readonly statuses = new Map<string, CommittedStatus>();
  private readonly statusWaiters = new Map<string, (() => void)[]>();
  private readonly blockListeners = new Set<() => void>();
  private readonly peerKey: KeyObject;
  private readonly peerSerialized: Uint8Array;
  private readonly trusted = new Map<string, X509Certificate>();
  /** Faults consumed in order, each by the first call of its step. */
  readonly faults: Fault[] = [];
  /** Calls per step, including failed ones (tests assert on what reached the server). */
  readonly calls: Record<FaultStep, number> = {
    evaluate: 0,
    endorse: 0,
    submit: 0,
    commitStatus: 0,
    chaincodeEvents: 0,
  };
  /** Transaction ids committed (valid or not), in order. */
  readonly committed: string[] = [];

  constructor(private readonly options: GatewayServerOptions) {
    this.backend = options.backend;
    for (const [mspId, pem] of Object.entries(options.msps))
      this.trusted.set(mspId, new X509Certificate(pem));
    this.peerKey = createPrivateKey(options.peerIdentity.privateKey);
    const identity = new msp.SerializedIdentity();
    identity.setMspid(options.peerIdentity.mspId);
    identity.setIdBytes(Buffer.from(options.peerIdentity.certificate));
    this.peerSerialized = identity.serializeBinary();
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Starts listening (on a random port the first time, on the same port after `dropConnections`). */
  async start(): Promise<void> {
    const server = new grpc.Server();
    server.addService(gateway.GatewayService, {
      evaluate: this.unary('evaluate', (request: gateway.EvaluateRequest) => this.evaluate(request)),
      endorse: this.unary('endorse', (request: gateway.EndorseRequest) => this.endorse(request)),
      submit: this.unary('submit', (request: gateway.SubmitRequest) => this.submit(request)),
      commitStatus: this.unary('commitStatus', (request: gateway.SignedCommitStatusRequest) =>
        this.commitStatus(request),
      ),
      chaincodeEvents: (call: grpc.ServerWritableStream<gateway.SignedChaincodeEventsRequest, unknown>) => {
        void this.chaincodeEvents(call);
      },
    });
    const credentials = grpc.ServerCredentials.createSsl(
      null,
      [
        {
          private_key: Buffer.from(this.options.tls.serverKey),
          cert_chain: Buffer.from(this.options.tls.serverCertificate),
        },
      ],
      false,
    );
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${this.port}`, credentials, (error, port) =>
        error ? reject(error) : resolve(port),
      ),
    );
    this.server = server;
  }

  /** Kills every connection and stops listening, like a peer that went away. */
  stop(): void {
    this.server?.forceShutdown();
    this.server = undefined;
  }

  /** Drops every open connection and stream; listening again after `downMs`. */
  async dropConnections(downMs = 0): Promise<void> {
    this.stop();
    if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
    await this.start();
  }

  async close(): Promise<void> {
    this.stop();
  }

  // ---- gRPC plumbing ----

  private unary<Req, Res extends Protobuf>(step: FaultStep, handle: (request: Req) => Promise<Res>) {
    return (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => {
      this.calls[step]++;
      const fault = this.takeFault(step);
      const run = async (): Promise<Res> => {
        if (fault?.kind === 'delay')
          await new Promise((resolve) => setTimeout(resolve, fault.delayMs ?? 1000));
        if (fault?.kind === 'unavailable')
          throw rpcError(grpc.status.UNAVAILABLE, 'injected: peer unavailable');
        if (fault?.kind === 'reject') {
          throw rpcError(
            grpc.status.ABORTED,
            'failed to endorse transaction, see attached details for more info',
            [this.errorDetail(`chaincode response 500, ${fault.message ?? 'injected endorsement refusal'}`)],
          );
        }
        this.activeFault = fault?.kind === 'invalidate' ? fault : undefined;
        const response = await handle(call.request);
        if (fault?.kind === 'afterEffect') throw rpcError(grpc.status.UNAVAILABLE, 'injected: answer lost');
        return response;
      };
      run().then(
        (response) => callback(null, response),
        (error: unknown) => callback(asServiceError(error)),
      );
    };
  }

  private activeFault: Fault | undefined;

  private takeFault(step: FaultStep): Fault | undefined {
    const index = this.faults.findIndex((fault) => fault.step === step);
    return index < 0 ? undefined : this.faults.splice(index, 1)[0];
  }

  private errorDetail(message: string): gateway.ErrorDetail {
    const detail = new gateway.ErrorDetail();
    detail.setAddress(this.options.peerAddress ?? 'peer0.test.hie:7051');
    detail.setMspId(this.options.peerIdentity.mspId);
    detail.setMessage(message);
    return detail;
  }

  // ---- verification ----

  /** Revoked serials per MSP: the CRLs in the channel's MSP configuration (network/scripts/update-crl.sh). */
  private readonly channelCrls = new Map<string, Set<string>>();

  /**
   * Puts an MSP's CRL into the "channel configuration": from now on its revoked certificates are refused, as
   * peers do once a config update carries the CRL (before that, a revocation at the CA changes nothing here).
   */
  async setChannelCrl(mspId: string, crlPem: string): Promise<void> {
    const ca = this.options.msps[mspId];
    if (!ca) throw new Error(`unknown MSP ${mspId}`);
    const crl = new x509.X509Crl(crlPem);
    const caCertificate = new x509.X509Certificate(ca);
    if (!(await crl.verify({ publicKey: caCertificate.publicKey }, webcrypto as never))) {
      throw new Error(`the CRL is not signed by the CA of ${mspId}`);
    }
    this.channelCrls.set(mspId, new Set(crl.entries.map((entry) => normalizeSerial(entry.serialNumber))));
    this.creators.clear();
  }

  /** Verified creators, as a peer caches deserialized MSP identities (chain verification costs milliseconds). */
  private readonly creators = new Map<
    string,
    { mspid: string; idBytes: Uint8Array; publicKey: KeyObject; validTo: number }
  >();

  private verifyCreator(creatorBytes: Uint8Array): {
    mspid: string;
    idBytes: Uint8Array;
    publicKey: KeyObject;
  } {
    const cacheKey = createHash('sha256').update(creatorBytes).digest('hex');
    const cached = this.creators.get(cacheKey);
    if (cached && Date.now() <= cached.validTo) return cached;
    const verified = this.verifyCreatorUncached(creatorBytes);
    if (this.creators.size > 1000) this.creators.clear();
    this.creators.set(cacheKey, verified);
    return verified;
  }

  private verifyCreatorUncached(creatorBytes: Uint8Array) {
    const creator = msp.SerializedIdentity.deserializeBinary(creatorBytes);
    const mspid = creator.getMspid();
    const ca = this.trusted.get(mspid);
    if (!ca) throw rpcError(grpc.status.PERMISSION_DENIED, `access denied: unknown MSP ${mspid}`);
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(Buffer.from(creator.getIdBytes_asU8()));
    } catch {
      throw rpcError(grpc.status.PERMISSION_DENIED, 'access denied: creator is not an X.509 certificate');
    }
    if (!certificate.checkIssued(ca) || !certificate.verify(ca.publicKey)) {
      throw rpcError(grpc.status.PERMISSION_DENIED, `access denied: certificate not issued by ${mspid}`);
    }
    if (this.channelCrls.get(mspid)?.has(normalizeSerial(certificate.serialNumber))) {
      throw rpcError(
        grpc.status.PERMISSION_DENIED,
        `access denied: certificate revoked by ${mspid} (channel CRL)`,
      );
    }
    const now = Date.now();
    if (now < Date.parse(certificate.validFrom) || now > Date.parse(certificate.validTo)) {
      throw rpcError(grpc.status.PERMISSION_DENIED, 'access denied: certificate expired or not yet valid');
    }
    return {
      mspid,
      idBytes: creator.getIdBytes_asU8(),
      publicKey: certificate.publicKey,
      validTo: Date.parse(certificate.validTo),
    };
  }

  private verifySignature(
    publicKey: KeyObject,
    bytes: Uint8Array,
    signature: Uint8Array,
    what: string,
  ): void {
    if (signature.length === 0 || !verify('sha256', bytes, publicKey, signature)) {
      throw rpcError(grpc.status.PERMISSION_DENIED, `access denied: bad signature on the ${what}`);
    }
  }

  private decodeProposal(signed: peer.SignedProposal | undefined, expectedTxId: string): VerifiedProposal {
    if (!signed) throw rpcError(grpc.status.INVALID_ARGUMENT, 'a signed proposal is required');
    const proposalBytes = signed.getProposalBytes_asU8();
    const proposal = peer.Proposal.deserializeBinary(proposalBytes);
    const header = common.Header.deserializeBinary(proposal.getHeader_asU8());
    const channelHeader = common.ChannelHeader.deserializeBinary(header.getChannelHeader_asU8());
    const signatureHeader = common.SignatureHeader.deserializeBinary(header.getSignatureHeader_asU8());
    if (channelHeader.getType() !== common.HeaderType.ENDORSER_TRANSACTION) {
      throw rpcError(grpc.status.INVALID_ARGUMENT, `unexpected header type ${channelHeader.getType()}`);
    }
    const channelId = channelHeader.getChannelId();
    if (channelId !== this.options.channel) {
      throw rpcError(grpc.status.NOT_FOUND, `channel '${channelId}' not found`);
    }
    const creatorBytes = signatureHeader.getCreator_asU8();
    const nonce = signatureHeader.getNonce_asU8();
    const creator = this.verifyCreator(creatorBytes);
    this.verifySignature(creator.publicKey, proposalBytes, signed.getSignature_asU8(), 'proposal');
    const txId = createHash('sha256').update(nonce).update(creatorBytes).digest('hex');
    if (channelHeader.getTxId() !== txId || (expectedTxId && expectedTxId !== txId)) {
      throw rpcError(grpc.status.INVALID_ARGUMENT, 'transaction id does not match nonce and creator');
    }
    const extension = peer.ChaincodeHeaderExtension.deserializeBinary(channelHeader.getExtension_asU8());
    const payload = peer.ChaincodeProposalPayload.deserializeBinary(proposal.getPayload_asU8());
    const spec = peer.ChaincodeInvocationSpec.deserializeBinary(payload.getInput_asU8()).getChaincodeSpec();
    const chaincodeId = spec?.getChaincodeId()?.getName() ?? extension.getChaincodeId()?.getName() ?? '';
    const [fn, ...args] = spec?.getInput()?.getArgsList_asU8() ?? [];
    const timestamp = channelHeader.getTimestamp();
    const transient = new Map<string, Uint8Array>();
    payload
      .getTransientmapMap()
      .forEach((value: Uint8Array | string, key: string) =>
        transient.set(key, typeof value === 'string' ? Buffer.from(value, 'base64') : value),
      );
    return {
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
    };
  }

  // ---- Gateway service ----

  private async evaluate(request: gateway.EvaluateRequest): Promise<gateway.EvaluateResponse> {
    const proposal = this.decodeProposal(request.getProposedTransaction(), request.getTransactionId());
    let result: BackendResponse;
    if (proposal.chaincodeId === 'qscc' && proposal.transaction === 'GetChainInfo') {
      const info = new common.BlockchainInfo();
      info.setHeight(await this.backend.height());
      result = { status: 200, message: '', payload: info.serializeBinary() };
    } else if (
      proposal.chaincodeId === 'qscc' &&
      (proposal.transaction === 'GetTransactionByID' || proposal.transaction === 'GetBlockByTxID')
    ) {
      result = await this.lookUpTransaction(
        proposal.transaction,
        Buffer.from(proposal.args[1] ?? []).toString(),
      );
    } else {
      result = await this.backend.evaluate(proposal);
    }
    if (result.status < 200 || result.status >= 400) {
      const message = `chaincode response ${result.status}, ${result.message}`;
      throw rpcError(grpc.status.UNKNOWN, `evaluate call to endorser returned error: ${message}`, [
        this.errorDetail(message),
      ]);
    }
    const response = new gateway.EvaluateResponse();
    response.setResult(toPeerResponse(result));
    return response;
  }

  /**
   * qscc GetTransactionByID (a peer.ProcessedTransaction with the validation code) and GetBlockByTxID (the
   * common.Block, here its header only), refused for an unknown id with Fabric's message.
   */
  private async lookUpTransaction(fn: string, txId: string): Promise<BackendResponse> {
    const status = await this.backend.transaction(txId);
    if (!status) {
      const what = fn === 'GetBlockByTxID' ? 'block for txID' : 'transaction with id';
      return {
        status: 500,
        message: `Failed to get ${what} ${txId}, error no such transaction ID [${txId}] in index`,
        payload: new Uint8Array(),
      };
    }
    if (fn === 'GetTransactionByID') {
      const processed = new peer.ProcessedTransaction();
      processed.setValidationcode(TX_VALIDATION[status.validationCode] ?? TX_VALIDATION.INVALID_OTHER_REASON);
      return { status: 200, message: '', payload: processed.serializeBinary() };
    }
    const header = new common.BlockHeader();
    header.setNumber(status.blockNumber);
    const block = new common.Block();
    block.setHeader(header);
    return { status: 200, message: '', payload: block.serializeBinary() };
  }

  private async endorse(request: gateway.EndorseRequest): Promise<gateway.EndorseResponse> {
    const signed = request.getProposedTransaction();
    const proposal = this.decodeProposal(signed, request.getTransactionId());
    const simulated = await this.backend.simulate(proposal);
    if (simulated.response.status < 200 || simulated.response.status >= 400) {
      throw rpcError(
        grpc.status.ABORTED,
        'failed to endorse transaction, see attached details for more info',
        [this.errorDetail(`chaincode response ${simulated.response.status}, ${simulated.response.message}`)],
      );
    }
    const proposalBytes = signed!.getProposalBytes_asU8();
    const proposalMessage = peer.Proposal.deserializeBinary(proposalBytes);
    const header = common.Header.deserializeBinary(proposalMessage.getHeader_asU8());

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
    const visiblePayload = peer.ChaincodeProposalPayload.deserializeBinary(proposalMessage.getPayload_asU8());
    visiblePayload.getTransientmapMap().clear();
    const visiblePayloadBytes = visiblePayload.serializeBinary();
    const proposalHash = createHash('sha256')
      .update(header.getChannelHeader_asU8())
      .update(header.getSignatureHeader_asU8())
      .update(visiblePayloadBytes)
      .digest();
    const responsePayload = new peer.ProposalResponsePayload();
    responsePayload.setProposalHash(proposalHash);
    responsePayload.setExtension$(chaincodeAction.serializeBinary());
    const responsePayloadBytes = responsePayload.serializeBinary();

    const endorsement = new peer.Endorsement();
    endorsement.setEndorser(this.peerSerialized);
    endorsement.setSignature(
      signBytes('sha256', Buffer.concat([responsePayloadBytes, this.peerSerialized]), this.peerKey),
    );
    const endorsedAction = new peer.ChaincodeEndorsedAction();
    endorsedAction.setProposalResponsePayload(responsePayloadBytes);
    endorsedAction.setEndorsementsList([endorsement]);
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
    const payloadBytes = payload.serializeBinary();

    this.pending.set(proposal.txId, { proposal, simulated, payloadBytes });
    const envelope = new common.Envelope();
    envelope.setPayload(payloadBytes);
    const response = new gateway.EndorseResponse();
    response.setPreparedTransaction(envelope);
    return response;
  }

  private async submit(request: gateway.SubmitRequest): Promise<gateway.SubmitResponse> {
    const txId = request.getTransactionId();
    const envelope = request.getPreparedTransaction();
    if (!envelope) throw rpcError(grpc.status.INVALID_ARGUMENT, 'a prepared transaction is required');
    const payloadBytes = envelope.getPayload_asU8();
    const payload = common.Payload.deserializeBinary(payloadBytes);
    const signatureHeader = common.SignatureHeader.deserializeBinary(
      payload.getHeader()!.getSignatureHeader_asU8(),
    );
    const creator = this.verifyCreator(signatureHeader.getCreator_asU8());
    this.verifySignature(
      creator.publicKey,
      payloadBytes,
      envelope.getSignature_asU8(),
      'transaction envelope',
    );
    if (this.statuses.has(txId) || this.committed.includes(txId)) {
      // The orderer would order it again and the peers invalidate it as DUPLICATE_TXID: nothing is applied.
      return new gateway.SubmitResponse();
    }
    const pending = this.pending.get(txId);
    if (!pending)
      throw rpcError(grpc.status.FAILED_PRECONDITION, `transaction ${txId} was not endorsed here`);
    if (!Buffer.from(pending.payloadBytes).equals(Buffer.from(payloadBytes))) {
      throw rpcError(grpc.status.INVALID_ARGUMENT, 'the transaction differs from the endorsed one');
    }
    this.pending.delete(txId);
    const fault = this.activeFault;
    this.activeFault = undefined;
    let status: CommittedStatus;
    if (fault?.kind === 'invalidate') {
      // Ordered into a block but invalidated by the peers' validation: its writes are never applied.
      status = {
        blockNumber: Math.max(0, (await this.backend.height()) - 1),
        validationCode: fault.validationCode ?? 'MVCC_READ_CONFLICT',
      };
    } else {
      status = await this.backend.commit(pending.simulated, pending.proposal);
    }
    this.committed.push(txId);
    this.statuses.set(txId, status);
    for (const wake of this.statusWaiters.get(txId) ?? []) wake();
    this.statusWaiters.delete(txId);
    for (const listener of [...this.blockListeners]) listener();
    return new gateway.SubmitResponse();
  }

  private async commitStatus(
    request: gateway.SignedCommitStatusRequest,
  ): Promise<gateway.CommitStatusResponse> {
    const requestBytes = request.getRequest_asU8();
    const statusRequest = gateway.CommitStatusRequest.deserializeBinary(requestBytes);
    const creator = this.verifyCreator(statusRequest.getIdentity_asU8());
    this.verifySignature(
      creator.publicKey,
      requestBytes,
      request.getSignature_asU8(),
      'commit status request',
    );
    const txId = statusRequest.getTransactionId();
    if (!this.statuses.has(txId)) {
      // Like the peer: wait for the transaction's block (the client's deadline bounds the wait).
      await new Promise<void>((resolve) => {
        const waiters = this.statusWaiters.get(txId) ?? [];
        waiters.push(resolve);
        this.statusWaiters.set(txId, waiters);
      });
    }
    const status = this.statuses.get(txId)!;
    const response = new gateway.CommitStatusResponse();
    response.setResult(
      (TX_VALIDATION[status.validationCode] ??
        TX_VALIDATION.INVALID_OTHER_REASON) as peer.TxValidationCodeMap[keyof peer.TxValidationCodeMap],
    );
    response.setBlockNumber(status.blockNumber);
    return response;
  }

  private async chaincodeEvents(
    call: grpc.ServerWritableStream<gateway.SignedChaincodeEventsRequest, unknown>,
  ): Promise<void> {
    this.calls.chaincodeEvents++;
    const fault = this.takeFault('chaincodeEvents');
    let closed = false;
    let wake: (() => void) | undefined;
    const listener = () => wake?.();
    const finish = () => {
      closed = true;
      this.blockListeners.delete(listener);
      wake?.();
    };
    call.on('cancelled', finish);
    call.on('close', finish);
    call.on('error', finish);
    try {
      if (fault?.kind === 'unavailable')
        throw rpcError(grpc.status.UNAVAILABLE, 'injected: peer unavailable');
      const requestBytes = call.request.getRequest_asU8();
      const eventsRequest = gateway.ChaincodeEventsRequest.deserializeBinary(requestBytes);
      const creator = this.verifyCreator(eventsRequest.getIdentity_asU8());
      this.verifySignature(
        creator.publicKey,
        requestBytes,
        call.request.getSignature_asU8(),
        'events request',
      );
      if (eventsRequest.getChannelId() !== this.options.channel) {
        throw rpcError(grpc.status.NOT_FOUND, `channel '${eventsRequest.getChannelId()}' not found`);
      }
      const chaincodeId = eventsRequest.getChaincodeId();
      const start = eventsRequest.getStartPosition();
      let nextBlock: number;
      switch (start?.getTypeCase()) {
        case orderer.SeekPosition.TypeCase.SPECIFIED:
          nextBlock = start.getSpecified()!.getNumber();
          break;
        case orderer.SeekPosition.TypeCase.OLDEST:
          nextBlock = 0;
          break;
        default:
          nextBlock = await this.backend.height();
      }
      let skipThrough = eventsRequest.getAfterTransactionId();
      const skipBlock = nextBlock;
      this.blockListeners.add(listener);
      while (!closed) {
        for (const block of await this.backend.eventsFrom(nextBlock)) {
          if (closed) return;
          let events = block.events.filter((event) => event.chaincodeId === chaincodeId);
          if (skipThrough && block.blockNumber === skipBlock) {
            const index = events.findIndex((event) => event.txId === skipThrough);
            if (index >= 0) events = events.slice(index + 1);
          }
          nextBlock = block.blockNumber + 1;
          if (events.length === 0) continue;
          const response = new gateway.ChaincodeEventsResponse();
          response.setBlockNumber(block.blockNumber);
          response.setEventsList(
            events.map((e) => {
              const event = new peer.ChaincodeEvent();
              event.setChaincodeId(e.chaincodeId);
              event.setTxId(e.txId);
              event.setEventName(e.eventName);
              event.setPayload(e.payload);
              return event;
            }),
          );
          call.write(response);
        }
        skipThrough = '';
        nextBlock = Math.max(nextBlock, await this.backend.height());
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    } catch (error) {
      if (!closed) call.destroy(asServiceError(error));
    } finally {
      finish();
    }
  }
}

function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+/, '');
}

function toPeerResponse(result: BackendResponse): peer.Response {
  const response = new peer.Response();
  response.setStatus(result.status);
  response.setMessage(result.message);
  response.setPayload(result.payload);
  return response;
}

class RpcError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
    readonly errorDetails: gateway.ErrorDetail[] = [],
  ) {
    super(message);
  }
}

function rpcError(code: grpc.status, message: string, details: gateway.ErrorDetail[] = []): RpcError {
  return new RpcError(code, message, details);
}

/** A gRPC error with google.rpc.Status details, as the Fabric Gateway sends them (grpc-status-details-bin). */
function asServiceError(error: unknown): grpc.ServiceError {
  const rpc =
    error instanceof RpcError
      ? error
      : new RpcError(grpc.status.INTERNAL, error instanceof Error ? error.message : String(error));
  const metadata = new grpc.Metadata();
  if (rpc.errorDetails.length > 0) {
    metadata.set('grpc-status-details-bin', encodeRpcStatus(rpc.code, rpc.message, rpc.errorDetails));
  }
  return Object.assign(new Error(rpc.message), { code: rpc.code, details: rpc.message, metadata });
}

/**
 * google.rpc.Status {code = 1, message = 2, details = 3 (google.protobuf.Any {type_url = 1, value = 2})}, encoded
 * by hand: fabric-protos ships google.rpc.Status but not google.protobuf.Any's typings.
 */
function encodeRpcStatus(code: number, message: string, details: gateway.ErrorDetail[]): Buffer {
  const field = (tag: number, bytes: Uint8Array) =>
    Buffer.concat([Buffer.from([tag]), varint(bytes.length), bytes]);
  const parts = [Buffer.from([0x08]), varint(code), field(0x12, Buffer.from(message))];
  for (const detail of details) {
    const any = Buffer.concat([
      field(0x0a, Buffer.from('type.googleapis.com/gateway.ErrorDetail')),
      field(0x12, detail.serializeBinary()),
    ]);
    parts.push(field(0x1a, any));
  }
  return Buffer.concat(parts);
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let v = value >>> 0;
  while (v > 0x7f) {
    bytes.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  bytes.push(v);
  return Buffer.from(bytes);
}
