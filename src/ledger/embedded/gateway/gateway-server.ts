/**
 * A Fabric Gateway served by one process: a gRPC server implementing Fabric's `gateway.Gateway` service (the
 * generated GatewayService definition and messages of @hyperledger/fabric-protos) over TLS, so the real
 * @hyperledger/fabric-gateway client (and through it our FabricLedger adapter) runs unchanged against the
 * embedded chain. For a local network of several members on one machine and for tests: one process is then
 * the whole network (docs/ledger.md, "Serving the embedded ledger to other members").
 *
 * What it does like a peer's Gateway:
 * - decodes each SignedProposal and checks it (proposal.ts: channel, transaction id, creator certificate
 *   against its MSP's CA, signature); the chaincode sees the proposal's creator as ctx.clientIdentity;
 * - answers Endorse with a prepared transaction endorsed by a peer identity (prepared-transaction.ts); errors as
 *   the Gateway reports them (ABORTED + ErrorDetail on endorsement, UNKNOWN on evaluate);
 * - on Submit checks the envelope's signature by the creator and that its payload is the one it endorsed, then
 *   orders and commits it; a transaction id already on the chain is not committed again (DUPLICATE_TXID);
 * - answers CommitStatus (signed request) once the transaction is in a block, and streams ChaincodeEvents from a
 *   SeekPosition, skipping up to `after_transaction_id`, then live;
 * - answers `qscc GetChainInfo`, `GetTransactionByID` and `GetBlockByTxID` evaluations.
 * Input from the network is hostile: malformed protobufs are INVALID_ARGUMENT, unknown MSPs and bad signatures
 * PERMISSION_DENIED, messages over `maxMessageBytes` RESOURCE_EXHAUSTED (gRPC), unexpected failures INTERNAL
 * without their text. It listens on a loopback address only.
 * - serves Deliver's DeliverFiltered (deliver-service.ts): filtered blocks from a seek position.
 * Not emulated: ordering service, several peers, endorsement policies, private data, full-block Deliver.
 */
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { common, gateway, orderer, peer } from '@hyperledger/fabric-protos';
import { FilteredDeliver } from './deliver-service.js';
import { MemberMsps, type MemberMsp } from './member-msps.js';
import { Endorser, preparedTransactionPayload, toPeerResponse } from './prepared-transaction.js';
import { decodeProposal, decodeSignatureHeader, type DecodedProposal } from './proposal.js';
import { wellFormed, WIRE_SCHEMAS, type WireSchema } from './wire-format.js';
import { decodeOrRefuse, GatewayRpcError, toServiceError, type ErrorReporter } from './rpc-error.js';
import type {
  BackendResponse,
  GatewayBackend,
  GatewayInterceptor,
  GatewayStep,
  SimulatedTransaction,
} from './types.js';

/** Largest message accepted or sent (gRPC refuses larger ones with RESOURCE_EXHAUSTED). */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Endorsed transactions waiting for their Submit; the oldest are forgotten beyond this. */
const MAX_PENDING_TRANSACTIONS = 10_000;
/** Concurrent chaincode event streams; more are refused with RESOURCE_EXHAUSTED. */
const MAX_EVENT_STREAMS = 256;

export interface GatewayLogger {
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface GatewayServerOptions {
  backend: GatewayBackend;
  /**
   * The server's TLS certificate and key (PEM); with `clientCaCertificate`, mutual TLS like a peer with
   * `clientAuthRequired`: a client without a certificate issued by that CA is refused at the handshake.
   */
  tls: { serverCertificate: string; serverKey: string; clientCaCertificate?: string };
  channel: string;
  /** The channel's organisations: a creator must hold a certificate issued by its MSP's CA. */
  members: MemberMsps | readonly MemberMsp[];
  /** The endorsing peer's identity. */
  peerIdentity: { mspId: string; certificate: string; privateKey: string };
  /** Address reported in ErrorDetail, like a peer's; default the listening address. */
  peerAddress?: string;
  /** A loopback address (default 127.0.0.1); anything else is refused. */
  host?: string;
  /** Default 0: a free port, kept across stop()/start(). */
  port?: number;
  maxMessageBytes?: number;
  intercept?: GatewayInterceptor;
  log?: GatewayLogger;
}

interface PendingTransaction {
  decoded: DecodedProposal;
  simulated: SimulatedTransaction;
  payloadBytes: Uint8Array;
}

const TX_VALIDATION = peer.TxValidationCode as unknown as Record<string, number>;

/** True for 127.0.0.0/8, ::1 and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '[::1]';
}

export class GatewayServer {
  readonly members: MemberMsps;
  private server: grpc.Server | undefined;
  private port: number;
  private readonly host: string;
  private readonly backend: GatewayBackend;
  private readonly endorser: Endorser;
  private readonly reporter: ErrorReporter;
  private readonly pending = new Map<string, PendingTransaction>();
  private readonly blockWaiters = new Set<() => void>();
  private readonly unsubscribe: () => void;
  private eventStreams = 0;

  constructor(private readonly options: GatewayServerOptions) {
    this.host = options.host ?? '127.0.0.1';
    if (!isLoopbackHost(this.host)) {
      throw new Error(
        `the ledger gateway listens on loopback only (one process is the whole network): refusing ${this.host}`,
      );
    }
    this.port = options.port ?? 0;
    this.backend = options.backend;
    this.members = options.members instanceof MemberMsps ? options.members : new MemberMsps(options.members);
    this.endorser = new Endorser(options.peerIdentity);
    const reporter = { mspId: options.peerIdentity.mspId, address: options.peerAddress ?? '' };
    this.reporter = reporter;
    this.unsubscribe = this.backend.onBlock(() => this.wakeBlockWaiters());
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  /** host:port once started. */
  get address(): string {
    return `${this.host.includes(':') && !this.host.startsWith('[') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /** Starts listening (on `port`, or a free port the first time and the same one after stop()). */
  async start(): Promise<void> {
    const maxMessageBytes = this.options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const server = new grpc.Server({
      'grpc.max_receive_message_length': maxMessageBytes,
      'grpc.max_send_message_length': maxMessageBytes,
    });
    const deliver = new FilteredDeliver(this.backend, this.members, this.options.channel);
    server.addService(guardedService(peer.DeliverService, DELIVER_SCHEMAS), {
      deliverFiltered: (call: grpc.ServerDuplexStream<common.Envelope, peer.DeliverResponse>) =>
        deliver.serve(call, () => this.server === server),
    });
    server.addService(guardedService(gateway.GatewayService, REQUEST_SCHEMAS), {
      evaluate: this.unary('evaluate', (request: gateway.EvaluateRequest) => this.evaluate(request)),
      endorse: this.unary('endorse', (request: gateway.EndorseRequest) => this.endorse(request)),
      submit: this.unary('submit', (request: gateway.SubmitRequest) => this.submit(request)),
      commitStatus: this.unary('commitStatus', (request: gateway.SignedCommitStatusRequest, call) =>
        this.commitStatus(request, call),
      ),
      chaincodeEvents: (call: grpc.ServerWritableStream<gateway.SignedChaincodeEventsRequest, unknown>) => {
        void this.chaincodeEvents(call);
      },
    });
    const clientCa = this.options.tls.clientCaCertificate;
    const credentials = grpc.ServerCredentials.createSsl(
      clientCa ? Buffer.from(clientCa) : null,
      [
        {
          private_key: Buffer.from(this.options.tls.serverKey),
          cert_chain: Buffer.from(this.options.tls.serverCertificate),
        },
      ],
      clientCa !== undefined,
    );
    const bindHost = this.host.includes(':') && !this.host.startsWith('[') ? `[${this.host}]` : this.host;
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${bindHost}:${this.port}`, credentials, (error, port) =>
        error ? reject(error) : resolve(port),
      ),
    );
    this.server = server;
    if (!this.options.peerAddress) this.reporter.address = this.address;
  }

  /** Kills every connection and stream and stops listening (start() listens again on the same port). */
  stop(): void {
    this.server?.forceShutdown();
    this.server = undefined;
    this.wakeBlockWaiters();
  }

  async close(): Promise<void> {
    this.stop();
    this.unsubscribe();
  }

  // ---- gRPC plumbing ----

  private unary<Req, Res>(
    step: GatewayStep,
    handle: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
  ) {
    return (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => {
      const run = () => handle(call.request, call);
      const intercept = this.options.intercept;
      (intercept ? intercept(step, run) : run()).then(
        (response) => callback(null, response),
        (error: unknown) => callback(this.serviceError(step, error)),
      );
    };
  }

  private serviceError(step: GatewayStep, error: unknown): grpc.ServiceError {
    if (!(error instanceof GatewayRpcError))
      this.options.log?.error({ err: error, step }, 'ledger gateway: call failed');
    return toServiceError(error, this.reporter);
  }

  private wakeBlockWaiters(): void {
    for (const wake of [...this.blockWaiters]) wake();
  }

  // ---- Gateway service ----

  private async evaluate(request: gateway.EvaluateRequest): Promise<gateway.EvaluateResponse> {
    const { proposal } = decodeProposal(
      request.getProposedTransaction(),
      request.getTransactionId(),
      this.options.channel,
      this.members,
    );
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
      throw new GatewayRpcError(grpc.status.UNKNOWN, `evaluate call to endorser returned error: ${message}`, [
        message,
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
    const shownId = txId.slice(0, 128);
    if (!status) {
      const what = fn === 'GetBlockByTxID' ? 'block for txID' : 'transaction with id';
      return {
        status: 500,
        message: `Failed to get ${what} ${shownId}, error no such transaction ID [${shownId}] in index`,
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
    const decoded = decodeProposal(
      request.getProposedTransaction(),
      request.getTransactionId(),
      this.options.channel,
      this.members,
    );
    const simulated = await this.backend.simulate(decoded.proposal);
    if (simulated.response.status < 200 || simulated.response.status >= 400) {
      throw new GatewayRpcError(
        grpc.status.ABORTED,
        'failed to endorse transaction, see attached details for more info',
        [`chaincode response ${simulated.response.status}, ${simulated.response.message}`],
      );
    }
    const payloadBytes = preparedTransactionPayload(decoded, simulated, this.endorser);
    if (this.pending.size >= MAX_PENDING_TRANSACTIONS) {
      // Endorsed but never submitted: forget the oldest (its Submit is then refused, as after a peer restart).
      const oldest = this.pending.keys().next();
      if (!oldest.done) this.pending.delete(oldest.value);
    }
    this.pending.set(decoded.proposal.txId, { decoded, simulated, payloadBytes });
    const envelope = new common.Envelope();
    envelope.setPayload(payloadBytes);
    const response = new gateway.EndorseResponse();
    response.setPreparedTransaction(envelope);
    return response;
  }

  private async submit(request: gateway.SubmitRequest): Promise<gateway.SubmitResponse> {
    const txId = request.getTransactionId();
    const envelope = request.getPreparedTransaction();
    if (!envelope)
      throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, 'a prepared transaction is required');
    const payloadBytes = envelope.getPayload_asU8();
    const payload = decodeOrRefuse('transaction payload', payloadBytes, WIRE_SCHEMAS.payload, (bytes) =>
      common.Payload.deserializeBinary(bytes),
    );
    const header = payload.getHeader();
    if (!header) throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, 'the transaction has no header');
    const signatureHeader = decodeSignatureHeader(header);
    const creator = this.members.verifyCreator(signatureHeader.getCreator_asU8());
    this.members.verifySignature(
      creator.publicKey,
      payloadBytes,
      envelope.getSignature_asU8(),
      'transaction envelope',
    );
    if (await this.backend.transaction(txId)) {
      // The orderer would order it again and the peers invalidate it as DUPLICATE_TXID: nothing is applied.
      return new gateway.SubmitResponse();
    }
    const pending = this.pending.get(txId);
    if (!pending) {
      throw new GatewayRpcError(
        grpc.status.FAILED_PRECONDITION,
        `transaction ${txId.slice(0, 128)} was not endorsed here`,
      );
    }
    if (!Buffer.from(pending.payloadBytes).equals(Buffer.from(payloadBytes))) {
      throw new GatewayRpcError(
        grpc.status.INVALID_ARGUMENT,
        'the transaction differs from the endorsed one',
      );
    }
    this.pending.delete(txId);
    await this.backend.commit(pending.simulated, pending.decoded.proposal);
    this.wakeBlockWaiters();
    return new gateway.SubmitResponse();
  }

  private async commitStatus(
    request: gateway.SignedCommitStatusRequest,
    call: grpc.ServerUnaryCall<gateway.SignedCommitStatusRequest, unknown>,
  ): Promise<gateway.CommitStatusResponse> {
    const requestBytes = request.getRequest_asU8();
    const statusRequest = decodeOrRefuse(
      'commit status request',
      requestBytes,
      WIRE_SCHEMAS.commitStatusRequest,
      (bytes) => gateway.CommitStatusRequest.deserializeBinary(bytes),
    );
    const creator = this.members.verifyCreator(statusRequest.getIdentity_asU8());
    this.members.verifySignature(
      creator.publicKey,
      requestBytes,
      request.getSignature_asU8(),
      'commit status request',
    );
    const txId = statusRequest.getTransactionId();
    // Like the peer: wait for the transaction's block (the client's deadline bounds the wait).
    let status = await this.backend.transaction(txId);
    while (!status) {
      if (call.cancelled || !this.server) throw new GatewayRpcError(grpc.status.CANCELLED, 'cancelled');
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.blockWaiters.delete(wake);
          call.off('cancelled', wake);
          resolve();
        };
        this.blockWaiters.add(wake);
        call.once('cancelled', wake);
      });
      status = await this.backend.transaction(txId);
    }
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
    let stream: ReturnType<GatewayBackend['events']> | undefined;
    let closed = false;
    const finish = () => {
      closed = true;
      stream?.close();
    };
    call.on('cancelled', finish);
    call.on('close', finish);
    call.on('error', finish);
    this.eventStreams++;
    try {
      const open = async () => {
        if (this.eventStreams > MAX_EVENT_STREAMS)
          throw new GatewayRpcError(grpc.status.RESOURCE_EXHAUSTED, 'too many event streams');
        const requestBytes = call.request.getRequest_asU8();
        const eventsRequest = decodeOrRefuse(
          'events request',
          requestBytes,
          WIRE_SCHEMAS.chaincodeEventsRequest,
          (bytes) => gateway.ChaincodeEventsRequest.deserializeBinary(bytes),
        );
        const creator = this.members.verifyCreator(eventsRequest.getIdentity_asU8());
        this.members.verifySignature(
          creator.publicKey,
          requestBytes,
          call.request.getSignature_asU8(),
          'events request',
        );
        if (eventsRequest.getChannelId() !== this.options.channel) {
          throw new GatewayRpcError(
            grpc.status.NOT_FOUND,
            `channel '${eventsRequest.getChannelId().slice(0, 64)}' not found`,
          );
        }
        return eventsRequest;
      };
      const intercept = this.options.intercept;
      const eventsRequest = await (intercept ? intercept('chaincodeEvents', open) : open());
      const start = eventsRequest.getStartPosition();
      let fromBlock: number;
      switch (start?.getTypeCase()) {
        case orderer.SeekPosition.TypeCase.SPECIFIED:
          fromBlock = start.getSpecified()!.getNumber();
          break;
        case orderer.SeekPosition.TypeCase.OLDEST:
          fromBlock = 0;
          break;
        default:
          fromBlock = await this.backend.height();
      }
      const chaincodeId = eventsRequest.getChaincodeId();
      const skipThrough = eventsRequest.getAfterTransactionId();
      // after_transaction_id: when that transaction is in the start block, its events up to it are skipped.
      let skipping =
        skipThrough !== '' && (await this.backend.transaction(skipThrough))?.blockNumber === fromBlock;
      if (closed) return;
      stream = this.backend.events(fromBlock);
      for await (const event of stream) {
        if (closed) break;
        if (chaincodeId !== this.backend.chaincodeName) continue;
        if (skipping) {
          if (event.blockNumber === fromBlock) {
            if (event.transactionId === skipThrough) skipping = false;
            continue;
          }
          skipping = false;
        }
        const message = new peer.ChaincodeEvent();
        message.setChaincodeId(chaincodeId);
        message.setTxId(event.transactionId);
        message.setEventName(event.eventName);
        message.setPayload(Buffer.from(event.payload, 'utf8'));
        const response = new gateway.ChaincodeEventsResponse();
        response.setBlockNumber(event.blockNumber);
        response.setEventsList([message]);
        call.write(response);
      }
    } catch (error) {
      // emit('error'), not destroy(error): grpc-js then ends the call with that status; a destroyed stream never
      // sends one, and the client would wait on it forever.
      if (!closed) call.emit('error', this.serviceError('chaincodeEvents', error));
    } finally {
      this.eventStreams--;
      finish();
    }
  }
}

/** The schema of each Gateway call's request message (wire-format.ts). */
const REQUEST_SCHEMAS: Record<string, WireSchema> = {
  evaluate: WIRE_SCHEMAS.evaluateRequest,
  endorse: WIRE_SCHEMAS.endorseRequest,
  submit: WIRE_SCHEMAS.submitRequest,
  commitStatus: WIRE_SCHEMAS.signedCommitStatusRequest,
  chaincodeEvents: WIRE_SCHEMAS.signedChaincodeEventsRequest,
};

/** Deliver's requests are signed Envelopes (only DeliverFiltered is served). */
const DELIVER_SCHEMAS: Record<string, WireSchema> = {
  deliver: WIRE_SCHEMAS.envelope,
  deliverFiltered: WIRE_SCHEMAS.envelope,
  deliverWithPrivateData: WIRE_SCHEMAS.envelope,
};

/**
 * The generated service definition with each request checked for well-formedness before google-protobuf
 * parses it (a malformed request is refused by grpc-js, and never occupies the event loop).
 */
function guardedService(
  definition: grpc.ServiceDefinition,
  schemas: Record<string, WireSchema>,
): grpc.ServiceDefinition {
  const guarded: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(definition)) {
    const schema = schemas[name];
    guarded[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        if (!schema || !wellFormed(bytes, schema)) throw new Error('malformed request');
        return method.requestDeserialize(bytes);
      },
    };
  }
  return guarded;
}
