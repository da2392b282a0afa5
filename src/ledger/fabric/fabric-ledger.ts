/**
 * The Ledger port on a real Fabric network, through the Fabric Gateway of the organisation's own peer
 * (@hyperledger/fabric-gateway 1.11, Node 20). One long-lived gRPC connection with TLS; every proposal, transaction
 * and request is signed with the organisation's service identity (hie.role=service).
 *
 * Never lost, never applied twice:
 * - endorsement failures that are transient (peer unreachable, timeout) are retried with a fresh proposal: nothing
 *   was written yet;
 * - once endorsed, the *same* signed transaction is re-sent to the orderer and its commit status asked again for
 *   the *same* transaction id: a repeat can only be refused by Fabric as a duplicate, never commit twice;
 * - a transaction invalidated at commit (MVCC_READ_CONFLICT, PHANTOM_READ_CONFLICT) wrote nothing and is endorsed
 *   again against the new state, with backoff; after `retry.attempts` it surfaces as a retryable
 *   LedgerTransactionError, which the anchoring queue keeps pending.
 */
import { createPrivateKey } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  checkpointers,
  connect,
  GatewayError,
  signers,
  StatusCode,
  type ChaincodeEvent,
  type Checkpointer,
  type CloseableAsyncIterable,
  type Contract,
  type Gateway,
  type Network,
  type Status,
} from '@hyperledger/fabric-gateway';
import { common, peer } from '@hyperledger/fabric-protos';
import {
  isRetryableValidationCode,
  LedgerTransactionError,
  type EventStream,
  type Ledger,
  type LedgerEvent,
  type SubmitResult,
  type TransactionStatus,
} from '../ledger.js';
import type { FabricConfig } from './config.js';

export interface LedgerLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface RetryPolicy {
  /** Attempts per step (endorse, submit, commit status) and for re-endorsing after an MVCC/phantom conflict. */
  attempts: number;
  /** First delay; doubles per attempt up to maxDelayMs (with jitter). */
  initialDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, initialDelayMs: 200, maxDelayMs: 5_000 };

/**
 * An event stream that stayed up this long was healthy: when it then breaks, that is a new outage and the
 * reconnect backoff starts again from its first delay. (Opening a stream succeeds even while the peer is away; the
 * failure only shows when reading it, so "opened" alone says nothing.)
 */
export const STABLE_EVENT_STREAM_MS = 10_000;

/** Time as the adapter's waits see it; tests pass their own to check backoff without waiting. */
export interface LedgerClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: LedgerClock = { now: () => Date.now(), sleep };

export interface FabricLedgerOptions {
  config: FabricConfig;
  /** Where `events()` without a start block keeps its position; default config.checkpointPath. */
  checkpointPath?: string;
  logger?: LedgerLogger;
  retry?: Partial<RetryPolicy>;
  clock?: LedgerClock;
}

/** Without a logger (the commands): stderr, so a command's stdout stays its answer (e.g. `member list --json`). */
const consoleLogger: LedgerLogger = {
  info: (obj, msg) => console.error(`[fabric] ${msg ?? ''}`, JSON.stringify(obj)),
  warn: (obj, msg) => console.warn(`[fabric] ${msg ?? ''}`, JSON.stringify(obj)),
  error: (obj, msg) => console.error(`[fabric] ${msg ?? ''}`, JSON.stringify(obj)),
};

/** Fabric TxValidationCode number -> name (StatusCode is the protobuf enum, name -> number). */
const STATUS_NAMES = new Map<number, string>(
  Object.entries(StatusCode as unknown as Record<string, unknown>)
    .filter((entry): entry is [string, number] => typeof entry[1] === 'number')
    .map(([name, code]) => [code, name]),
);

/** gRPC statuses that mean "the network is away or slow", not "the network said no". */
const TRANSIENT_GRPC = new Set<number>([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.CANCELLED,
  grpc.status.INTERNAL,
]);
// Not transient: UNKNOWN (evaluate refused by the chaincode), ABORTED (endorsement refused), FAILED_PRECONDITION
// (access denied by channel policy), as the Fabric Gateway reports them.

/** Opens the adapter. Does not wait for the peer: the service starts, and catches up, while the network is away. */
export function openFabricLedger(options: FabricLedgerOptions): FabricLedger {
  return new FabricLedger(options);
}

export class FabricLedger implements Ledger {
  readonly kind = 'fabric' as const;
  private readonly config: FabricConfig;
  private readonly client: grpc.Client;
  private readonly gateway: Gateway;
  private readonly network: Network;
  private readonly contract: Contract;
  private readonly logger: LedgerLogger;
  private readonly retry: RetryPolicy;
  private readonly checkpointPath?: string;
  private readonly streams = new Set<EventStream>();
  private readonly clock: LedgerClock;
  private readonly reachableListeners = new Set<() => void>();
  private closed = false;

  constructor(options: FabricLedgerOptions) {
    this.config = options.config;
    this.logger = options.logger ?? consoleLogger;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.clock = options.clock ?? realClock;
    this.checkpointPath = options.checkpointPath ?? options.config.checkpointPath;
    const { config } = this;

    const tlsRoot = readFileSync(config.tlsRootCertPath);
    const channelOptions: grpc.ChannelOptions = {
      // Keep the one long-lived connection alive through idle periods and notice a dead peer quickly.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // Reconnect soon after a peer restart (grpc's default first backoff is 1 s, growing to 120 s).
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 10_000,
    };
    if (config.hostAlias) channelOptions['grpc.ssl_target_name_override'] = config.hostAlias;
    // Mutual TLS when the peer requires client certificates (config.clientTls).
    const credentials = config.clientTls
      ? grpc.credentials.createSsl(
          tlsRoot,
          readFileSync(config.clientTls.keyPath),
          readFileSync(config.clientTls.certPath),
        )
      : grpc.credentials.createSsl(tlsRoot);
    this.client = new grpc.Client(config.peerEndpoint, credentials, channelOptions);

    const privateKey = createPrivateKey(readFileSync(config.identity.keyPath));
    if (privateKey.asymmetricKeyType !== 'ec') {
      throw new Error(`the service identity key ${config.identity.keyPath} is not an ECDSA key`);
    }
    const deadline = (ms: number) => () => ({ deadline: Date.now() + ms });
    this.gateway = connect({
      client: this.client,
      identity: { mspId: config.mspId, credentials: readFileSync(config.identity.certPath) },
      signer: signers.newPrivateKeySigner(privateKey),
      evaluateOptions: deadline(config.timeouts.evaluateMs),
      endorseOptions: deadline(config.timeouts.endorseMs),
      submitOptions: deadline(config.timeouts.submitMs),
      commitStatusOptions: deadline(config.timeouts.commitStatusMs),
    });
    this.network = this.gateway.getNetwork(config.channel);
    this.contract = this.network.getContract(config.chaincode);
    // Connect now, without making anyone wait: say in the log whether the peer is there.
    this.client.waitForReady(Date.now() + config.timeouts.endorseMs, (error) => {
      if (this.closed) return;
      const peer = { peer: config.peerEndpoint, hostAlias: config.hostAlias, mspId: config.mspId };
      if (error) {
        this.logger.warn(
          { ...peer, reason: error.message },
          'Fabric peer not reachable yet; the service keeps running and ledger work waits for it',
        );
      } else {
        this.logger.info(
          { ...peer, channel: config.channel, chaincode: config.chaincode },
          'connected to the Fabric peer',
        );
      }
    });
    this.watchConnectivity();
  }

  /** Calls `listener` each time the peer is reachable again after the connection failed (Ledger.onReachable). */
  onReachable(listener: () => void): () => void {
    this.reachableListeners.add(listener);
    return () => this.reachableListeners.delete(listener);
  }

  /**
   * Follows the gRPC channel's state: after a failure it keeps the channel trying to connect (within grpc's own
   * reconnect backoff, 250 ms to 10 s) and tells the onReachable listeners once it is READY again, so waiters
   * (the anchoring queue) resume at once instead of sleeping out a backoff grown while the peer was away.
   */
  private watchConnectivity(): void {
    const channel = this.client.getChannel();
    let lost = false;
    const watch = (state: grpc.connectivityState) => {
      if (this.closed || state === grpc.connectivityState.SHUTDOWN) return;
      if (state === grpc.connectivityState.TRANSIENT_FAILURE) lost = true;
      else if (state === grpc.connectivityState.IDLE && lost) channel.getConnectivityState(true);
      else if (state === grpc.connectivityState.READY && lost) {
        lost = false;
        for (const listener of [...this.reachableListeners]) listener();
      }
      try {
        channel.watchConnectivityState(state, Infinity, () => watch(channel.getConnectivityState(false)));
      } catch {
        // The channel was shut down (close()).
      }
    };
    watch(channel.getConnectivityState(false));
  }

  async submit(transaction: string, args: string[]): Promise<SubmitResult> {
    this.assertOpen();
    return this.retrying(
      () => this.submitOnce(transaction, args),
      (error) => this.toLedgerError(error, 'submit', transaction),
      {
        // Once a transaction may have reached the orderer, only the caller may decide (by its id) what to do.
        final: (failure) => failure.code === 'COMMIT_STATUS_UNKNOWN',
        beforeRetry: (failure, attempt) =>
          this.logger.warn(
            { transaction, transactionId: failure.transactionId, code: failure.code, attempt },
            `Fabric transaction ${transaction} not committed (${failure.code}); endorsing it again`,
          ),
      },
    );
  }

  /**
   * The one retry loop of this adapter: runs `run` again, after a backoff, while its failure is retryable, attempts
   * remain (`retry.attempts`), the adapter is open and `final` does not say stop; otherwise throws the failure.
   */
  private async retrying<T>(
    run: () => Promise<T>,
    failureOf: (error: unknown) => LedgerTransactionError,
    options: {
      final?: (failure: LedgerTransactionError) => boolean;
      beforeRetry?: (failure: LedgerTransactionError, attempt: number) => void;
    } = {},
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await run();
      } catch (error) {
        const failure = failureOf(error);
        if (!failure.retryable || options.final?.(failure) || attempt >= this.retry.attempts || this.closed)
          throw failure;
        options.beforeRetry?.(failure, attempt);
        await this.clock.sleep(this.backoff(attempt));
      }
    }
  }

  private async submitOnce(transaction: string, args: string[]): Promise<SubmitResult> {
    const proposal = this.contract.newProposal(transaction, { arguments: args });
    const transactionId = proposal.getTransactionId();
    const endorsed = await proposal.endorse();
    // From here on, only the same signed transaction is re-sent: it can commit at most once.
    const submitted = await this.step('submit to the orderer', transaction, transactionId, () =>
      endorsed.submit(),
    );
    const status: Status = await this.step('commit status', transaction, transactionId, () =>
      submitted.getStatus(),
    );
    if (!status.successful) {
      const code = STATUS_NAMES.get(status.code) ?? `VALIDATION_CODE_${status.code}`;
      throw new LedgerTransactionError(
        `Fabric invalidated transaction ${transactionId} (${transaction}) in block ${status.blockNumber}: ${code}`,
        code,
        transactionId,
        isRetryableValidationCode(code),
      );
    }
    return {
      transactionId,
      blockNumber: Number(status.blockNumber),
      result: Buffer.from(submitted.getResult()).toString('utf8'),
    };
  }

  /** Repeats one idempotent step (same transaction id) while the network is unreachable or slow. */
  private async step<T>(
    what: string,
    transaction: string,
    transactionId: string,
    run: () => Promise<T>,
  ): Promise<T> {
    try {
      return await this.retrying(run, (error) => this.toLedgerError(error, what, transaction, transactionId));
    } catch (error) {
      // The transaction may still commit: callers find it by its id (anchors are keyed, never doubled).
      const failure = error as LedgerTransactionError;
      throw new LedgerTransactionError(
        `${failure.message}; transaction ${transactionId} may still commit`,
        failure.code === 'UNAVAILABLE' ? 'COMMIT_STATUS_UNKNOWN' : failure.code,
        transactionId,
        failure.retryable,
      );
    }
  }

  async evaluate(transaction: string, args: string[]): Promise<string> {
    this.assertOpen();
    return this.retrying(
      async () =>
        Buffer.from(await this.contract.evaluate(transaction, { arguments: args })).toString('utf8'),
      (error) => this.toLedgerError(error, 'evaluate', transaction),
    );
  }

  async height(): Promise<number> {
    this.assertOpen();
    const qscc = this.network.getContract('qscc');
    return this.retrying(
      async () =>
        common.BlockchainInfo.deserializeBinary(
          await qscc.evaluateTransaction('GetChainInfo', this.config.channel),
        ).getHeight(),
      (error) => this.toLedgerError(error, 'chain height', 'qscc:GetChainInfo'),
    );
  }

  /** Through qscc (GetTransactionByID for the validation code, GetBlockByTxID for the block). */
  async transactionStatus(transactionId: string): Promise<TransactionStatus | undefined> {
    this.assertOpen();
    const qscc = this.network.getContract('qscc');
    return this.retrying(
      async (): Promise<TransactionStatus | undefined> => {
        try {
          const processed = peer.ProcessedTransaction.deserializeBinary(
            await qscc.evaluateTransaction('GetTransactionByID', this.config.channel, transactionId),
          );
          const block = common.Block.deserializeBinary(
            await qscc.evaluateTransaction('GetBlockByTxID', this.config.channel, transactionId),
          );
          const code = processed.getValidationcode();
          return {
            blockNumber: block.getHeader()?.getNumber() ?? -1,
            validationCode: STATUS_NAMES.get(code) ?? String(code),
          };
        } catch (error) {
          // The peer's ledger has no such transaction: an answer, not a failure (qscc reports it as an error).
          if (isTransactionNotFound(error)) return undefined;
          throw error;
        }
      },
      (error) => this.toLedgerError(error, 'transaction lookup', 'qscc:GetTransactionByID'),
    );
  }

  /**
   * Chaincode events, resuming after the last event handed on whenever the connection drops. Without a start
   * block the position is kept in the checkpoint file (checkpointers.file), so a restarted service resumes where
   * it stopped (the first time: live events from the next block); an event counts as handed on once the consumer
   * asks for the next one.
   */
  events(startBlock?: number): EventStream {
    this.assertOpen();
    const state: { closed: boolean; current?: CloseableAsyncIterable<ChaincodeEvent> } = { closed: false };
    const iterator = this.eventLoop(startBlock, state);
    const stream: EventStream = {
      [Symbol.asyncIterator]: () => iterator,
      close: () => {
        state.closed = true;
        state.current?.close();
        this.streams.delete(stream);
        void iterator.return(undefined);
      },
    };
    this.streams.add(stream);
    return stream;
  }

  private async *eventLoop(
    startBlock: number | undefined,
    state: { closed: boolean; current?: CloseableAsyncIterable<ChaincodeEvent> },
  ): AsyncGenerator<LedgerEvent, void, undefined> {
    let checkpointer: Checkpointer;
    if (startBlock === undefined && this.checkpointPath) {
      mkdirSync(dirname(this.checkpointPath), { recursive: true, mode: 0o700 });
      checkpointer = await checkpointers.file(this.checkpointPath);
    } else {
      checkpointer = checkpointers.inMemory();
    }
    let failures = 0;
    // No start block and nothing checkpointed yet: live events from the next block, as the embedded ledger.
    while (startBlock === undefined && checkpointer.getBlockNumber() === undefined && !state.closed) {
      try {
        startBlock = await this.height();
      } catch {
        failures++;
        await this.clock.sleep(this.backoff(failures));
      }
    }
    while (!state.closed) {
      // When the stream is open; the backoff starts over only after it delivered or stayed up a while.
      let openedAt: number | undefined;
      try {
        const events = await this.network.getChaincodeEvents(this.config.chaincode, {
          checkpoint: checkpointer,
          startBlock: BigInt(startBlock ?? 0),
        });
        state.current = events;
        if (state.closed) {
          events.close();
          return;
        }
        openedAt = this.clock.now();
        for await (const event of events) {
          if (failures > 0) {
            this.logger.info(
              { peer: this.config.peerEndpoint, resumeBlock: checkpointer.getBlockNumber()?.toString() },
              'Fabric chaincode event stream resumed',
            );
            failures = 0;
          }
          yield {
            blockNumber: Number(event.blockNumber),
            transactionId: event.transactionId,
            eventName: event.eventName,
            payload: Buffer.from(event.payload).toString('utf8'),
          };
          // The consumer asked for more: this event is handled, resume after it from now on.
          await checkpointer.checkpointChaincodeEvent(event);
        }
        if (state.closed) return;
        throw new Error('the peer ended the chaincode event stream');
      } catch (error) {
        if (state.closed) return;
        if (openedAt !== undefined && this.clock.now() - openedAt >= STABLE_EVENT_STREAM_MS) failures = 0;
        failures++;
        // One warning per interruption (this one), not a second from toLedgerError.
        const failure = this.toLedgerError(
          error,
          'chaincode events',
          this.config.chaincode,
          undefined,
          false,
        );
        const retryInMs = Math.round(this.backoff(failures));
        this.logger.warn(
          {
            peer: this.config.peerEndpoint,
            code: failure.code,
            resumeBlock: checkpointer.getBlockNumber()?.toString(),
            resumeAfterTransaction: checkpointer.getTransactionId(),
            attempt: failures,
            retryInMs,
          },
          `Fabric chaincode event stream interrupted (${failure.message}); reconnecting`,
        );
        await this.clock.sleep(retryInMs);
      } finally {
        state.current?.close();
        state.current = undefined;
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const stream of [...this.streams]) stream.close();
    this.gateway.close();
    this.client.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('the Fabric ledger is closed');
  }

  private backoff(attempt: number): number {
    const base = Math.min(this.retry.maxDelayMs, this.retry.initialDelayMs * 2 ** (attempt - 1));
    return base / 2 + Math.random() * (base / 2);
  }

  /** Turns any Gateway/gRPC failure into a LedgerTransactionError and logs it with the peers' details. */
  private toLedgerError(
    error: unknown,
    what: string,
    transaction: string,
    transactionId?: string,
    /** False when the caller logs the failure itself. */
    report = true,
  ): LedgerTransactionError {
    if (error instanceof LedgerTransactionError) return error;
    const id = transactionId ?? (error as { transactionId?: unknown }).transactionId;
    const txId = typeof id === 'string' ? id : undefined;
    if (error instanceof GatewayError) {
      const transient = TRANSIENT_GRPC.has(error.code);
      const details = error.details.map((d) => ({ mspId: d.mspId, address: d.address, message: d.message }));
      // The chaincode's or peer's own reason, when the Gateway passed one on (e.g. "caller is not a service").
      const reason = details.map((d) => d.message).find((m) => m) ?? error.cause?.details ?? error.message;
      const grpcName = grpc.status[error.code] ?? String(error.code);
      const entry = {
        peer: this.config.peerEndpoint,
        step: what,
        transaction,
        transactionId: txId,
        grpcStatus: grpcName,
        details,
      };
      if (report && transient)
        this.logger.warn(entry, `Fabric ${what} failed: peer unavailable or slow (${grpcName})`);
      else if (report) this.logger.error(entry, `Fabric ${what} refused: ${reason}`);
      // As the embedded ledger: the chaincode said no (CHAINCODE_ERROR), or the peer refused the proposal.
      const chaincodeRefusal = /chaincode response \d+/.test(reason);
      const code = transient ? 'UNAVAILABLE' : chaincodeRefusal ? 'CHAINCODE_ERROR' : 'ENDORSEMENT_FAILURE';
      const shortReason = reason.replace(/^.*chaincode response \d+, /s, '');
      return new LedgerTransactionError(
        `Fabric ${what} of ${transaction} ${transient ? 'failed' : 'refused'} (${grpcName}): ${shortReason}`,
        code,
        txId,
        transient,
      );
    }
    const message = error instanceof Error ? error.message : String(error);
    if (report)
      this.logger.error(
        { peer: this.config.peerEndpoint, step: what, transaction, transactionId: txId },
        message,
      );
    return new LedgerTransactionError(
      `Fabric ${what} of ${transaction} failed: ${message}`,
      'UNAVAILABLE',
      txId,
      true,
    );
  }
}

/** qscc's refusal for an unknown transaction id ("no such transaction ID [...] in index" in Fabric 2.x). */
function isTransactionNotFound(error: unknown): boolean {
  if (!(error instanceof GatewayError) || TRANSIENT_GRPC.has(error.code)) return false;
  const texts = [error.message, ...error.details.map((detail) => detail.message)];
  return texts.some((text) => /no such transaction id|entry not found in index/i.test(text));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
