/**
 * The ledger gateway (src/ledger/embedded/gateway) with faults for tests: drop every connection, refuse an
 * endorsement, invalidate a transaction at commit, answer slowly, or fail a step after it took effect (e.g.
 * commit, then lose the connection before answering). Faults are consumed in order, each by the first call of
 * its step; `calls` counts what reached the server, `committed` the transaction ids ordered (valid or not).
 */
import * as grpc from '@grpc/grpc-js';
import {
  GatewayServer,
  type GatewayServerOptions,
} from '../../../src/ledger/embedded/gateway/gateway-server.js';
import { GatewayRpcError } from '../../../src/ledger/embedded/gateway/rpc-error.js';
import type {
  CommittedStatus,
  GatewayBackend,
  GatewayStep,
  SimulatedTransaction,
  VerifiedProposal,
} from '../../../src/ledger/embedded/gateway/types.js';

export interface Fault {
  step: GatewayStep;
  /**
   * unavailable: answer UNAVAILABLE without doing anything; afterEffect: do the step, then answer UNAVAILABLE;
   * reject: refuse the endorsement (ABORTED, chaincode-like message); invalidate: commit the transaction as
   * invalid with `validationCode` (nothing applied); delay: answer after `delayMs`.
   */
  kind: 'unavailable' | 'afterEffect' | 'reject' | 'invalidate' | 'delay';
  validationCode?: string;
  delayMs?: number;
  message?: string;
}

export class FaultyGateway {
  readonly faults: Fault[] = [];
  readonly calls: Record<GatewayStep, number> = {
    evaluate: 0,
    endorse: 0,
    submit: 0,
    commitStatus: 0,
    chaincodeEvents: 0,
  };
  readonly committed: string[] = [];
  readonly server: GatewayServer;
  /** Transactions "invalidated by the peers": in a block, nothing applied. */
  private readonly invalidated = new Map<string, CommittedStatus>();
  private invalidateNext: Fault | undefined;
  private readonly blockListeners = new Set<() => void>();

  constructor(options: Omit<GatewayServerOptions, 'intercept'>) {
    const inner = options.backend;
    const backend: GatewayBackend = {
      chaincodeName: inner.chaincodeName,
      simulate: (proposal) => inner.simulate(proposal),
      evaluate: (proposal) => inner.evaluate(proposal),
      events: (fromBlock) => inner.events(fromBlock),
      height: () => inner.height(),
      filteredBlock: (number) => inner.filteredBlock(number),
      transaction: async (txId) => this.invalidated.get(txId) ?? inner.transaction(txId),
      onBlock: (listener) => {
        this.blockListeners.add(listener);
        const unsubscribe = inner.onBlock(listener);
        return () => {
          this.blockListeners.delete(listener);
          unsubscribe();
        };
      },
      commit: (simulated, proposal) => this.commit(inner, simulated, proposal),
    };
    this.server = new GatewayServer({
      ...options,
      backend,
      intercept: (step, run) => this.intercept(step, run),
    });
  }

  get address(): string {
    return this.server.address;
  }

  get listening(): boolean {
    return this.server.listening;
  }

  start(): Promise<void> {
    return this.server.start();
  }

  stop(): void {
    this.server.stop();
  }

  close(): Promise<void> {
    return this.server.close();
  }

  /** Drops every open connection and stream; listening again (same port) after `downMs`. */
  async dropConnections(downMs = 0): Promise<void> {
    this.server.stop();
    if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
    await this.server.start();
  }

  private async commit(
    inner: GatewayBackend,
    simulated: SimulatedTransaction,
    proposal: VerifiedProposal,
  ): Promise<CommittedStatus> {
    const fault = this.invalidateNext;
    this.invalidateNext = undefined;
    let status: CommittedStatus;
    if (fault) {
      // Ordered into a block but invalidated by the peers' validation: its writes are never applied.
      status = {
        blockNumber: Math.max(0, (await inner.height()) - 1),
        validationCode: fault.validationCode ?? 'MVCC_READ_CONFLICT',
      };
      this.invalidated.set(proposal.txId, status);
      for (const listener of [...this.blockListeners]) listener();
    } else {
      status = await inner.commit(simulated, proposal);
    }
    this.committed.push(proposal.txId);
    return status;
  }

  private async intercept<T>(step: GatewayStep, run: () => Promise<T>): Promise<T> {
    this.calls[step]++;
    const index = this.faults.findIndex((fault) => fault.step === step);
    const fault = index < 0 ? undefined : this.faults.splice(index, 1)[0];
    if (fault?.kind === 'delay') await new Promise((resolve) => setTimeout(resolve, fault.delayMs ?? 1000));
    if (fault?.kind === 'unavailable')
      throw new GatewayRpcError(grpc.status.UNAVAILABLE, 'injected: peer unavailable');
    if (fault?.kind === 'reject') {
      throw new GatewayRpcError(
        grpc.status.ABORTED,
        'failed to endorse transaction, see attached details for more info',
        [`chaincode response 500, ${fault.message ?? 'injected endorsement refusal'}`],
      );
    }
    if (fault?.kind === 'invalidate') this.invalidateNext = fault;
    const result = await run();
    if (fault?.kind === 'afterEffect')
      throw new GatewayRpcError(grpc.status.UNAVAILABLE, 'injected: answer lost');
    return result;
  }
}
