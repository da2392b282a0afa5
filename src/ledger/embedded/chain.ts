/**
 * The embedded chain: a single-node, in-process ledger that runs the project's chaincode with Fabric's
 * transaction semantics and keeps its blocks, world state and key history in one SQLite file.
 *
 * Flow (as on Fabric): endorse(proposal) simulates the transaction against committed state into a read-write
 * set; commit(endorsement) queues it for ordering; a small block cutter puts every queued transaction of the
 * same event-loop turn (up to maxBlockTransactions) into one block, validates them in order (duplicate tx id,
 * MVCC read versions, phantom re-execution of range queries; earlier valid transactions of the same block
 * count; key-level endorsement policies set by the chaincode, endorsement-policy.ts), applies the writes of valid
 * ones only, and stores the block chained by hash. Invalid transactions
 * stay in the block with their validation code, as on Fabric.
 */
import { createHash, randomBytes } from 'node:crypto';
import { msp } from '@hyperledger/fabric-protos';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { LedgerTransactionError, type EventStream, type Ledger, type LedgerEvent } from '../ledger.js';
import {
  ChainStore,
  ZERO_HASH,
  computeBlockHash,
  computeDataHash,
  type AppliedWrite,
} from './chain-store.js';
import { ChaincodeRuntime } from './chaincode-runtime.js';
import { SimulationStub } from './simulation-stub.js';
import {
  keyOfValidationParameter,
  satisfiesPolicy,
  VALIDATION_PARAMETER_PREFIX,
  validationParameterKey,
} from './endorsement-policy.js';
import type {
  BlockHeader,
  ChaincodeProposal,
  CommitStatus,
  Endorsement,
  RangeQueryInfo,
  SerializedIdentity,
  StoredTransaction,
  TxTimestamp,
  ValidationCode,
  Version,
} from './types.js';
import { EmbeddedLedger, type SigningIdentity } from './embedded-ledger.js';

export const DEFAULT_CHANNEL = 'hie';

/** The chain in the file does not verify: a block was altered, removed or reordered. */
export class ChainIntegrityError extends Error {
  constructor(
    message: string,
    /** The first block found broken. */
    readonly blockNumber: number,
    readonly file: string,
  ) {
    super(`ledger chain integrity check failed at block ${blockNumber} (${file}): ${message}`);
    this.name = 'ChainIntegrityError';
  }
}

/** An organisation of the channel: creators must hold a certificate issued by one of its roots. */
export interface MspDefinition {
  mspId: string;
  rootCertificates: string[];
  /** Revocation check (e.g. EmbeddedCa.isRevoked); revoked creators are refused at endorsement. */
  isRevoked?: (certificatePem: string) => boolean;
}

export interface EmbeddedChainOptions {
  /** The SQLite file (by convention `<dataDir>/ledger/chain.sqlite`). */
  file: string;
  /** Channel name, fixed at creation; default `hie`. */
  channelId?: string;
  /** Largest number of transactions per block; default 500. */
  maxBlockTransactions?: number;
  /**
   * Replay the committed writes at open and compare them with the world state (default true): catches a
   * state row edited behind the chain's back. Costs one JSON parse per valid transaction.
   */
  verifyWorldState?: boolean;
  /**
   * The channel's organisations. When at least one is defined, every proposal's creator must belong to one
   * and hold a valid certificate from its roots (as a peer checks against the channel's MSP configuration).
   */
  msps?: MspDefinition[];
}

interface PendingCommit {
  endorsement: Endorsement;
  resolve(status: CommitStatus): void;
  reject(error: unknown): void;
}

interface OverlayEntry {
  value: Buffer | null;
  version: Version;
}

type EventListener = (events: LedgerEvent[]) => void;

function serializeIdentity(identity: SerializedIdentity): Buffer {
  const serialized = new msp.SerializedIdentity();
  serialized.setMspid(identity.mspid);
  serialized.setIdBytes(identity.idBytes);
  return Buffer.from(serialized.serializeBinary());
}

const keyBytes = (key: string): Buffer => Buffer.from(key, 'utf8');
const compareKeys = (a: string, b: string): number => Buffer.compare(keyBytes(a), keyBytes(b));
const sameVersion = (a: Version | null, b: Version | null): boolean =>
  a === null || b === null ? a === b : a.blockNum === b.blockNum && a.txNum === b.txNum;

/** A block as verifyChain reads it back: its header and its stored transactions. */
interface ScannedBlock {
  number: number;
  previousHash: Buffer;
  dataHash: Buffer;
  hash: Buffer;
  txCount: number;
  txs: StoredTransaction[];
}
export class EmbeddedChain {
  private readonly runtime = new ChaincodeRuntime();
  private readonly pending: PendingCommit[] = [];
  private readonly pendingTxIds = new Set<string>();
  private readonly listeners = new Set<EventListener>();
  private readonly blockListeners = new Set<() => void>();
  private readonly streamEnders = new Set<() => void>();
  private readonly msps = new Map<string, MspDefinition & { roots: x509.X509Certificate[] }>();
  private readonly verifiedCreators = new Map<string, Promise<string | undefined>>();
  private cutScheduled = false;
  private nextBlockNumber: number;
  private lastHash: Buffer;
  private closed = false;
  /** False while no key has a key-level policy: commits then skip the policy look-ups (one per written key). */
  private keyPolicies: boolean;

  private constructor(
    private readonly store: ChainStore,
    readonly file: string,
    readonly channelId: string,
    private readonly maxBlockTransactions: number,
  ) {
    const last = store.lastBlock();
    this.nextBlockNumber = last ? last.number + 1 : 0;
    this.lastHash = last ? last.hash : ZERO_HASH;
    this.keyPolicies =
      store.range(VALIDATION_PARAMETER_PREFIX, `${VALIDATION_PARAMETER_PREFIX}\u{10ffff}`, 1).length > 0;
  }

  /**
   * Opens (or creates) the chain in `file` and re-checks its hash chain. A broken chain throws
   * ChainIntegrityError naming the first bad block: the service must not start on it.
   */
  static async open(options: EmbeddedChainOptions): Promise<EmbeddedChain> {
    const store = new ChainStore(options.file);
    try {
      const storedChannel = store.getMeta('channel_id');
      const channelId = storedChannel ?? options.channelId ?? DEFAULT_CHANNEL;
      if (
        options.channelId !== undefined &&
        storedChannel !== undefined &&
        options.channelId !== storedChannel
      ) {
        throw new Error(`${options.file} holds channel ${storedChannel}, not ${options.channelId}`);
      }
      const chain = new EmbeddedChain(store, options.file, channelId, options.maxBlockTransactions ?? 500);
      if (storedChannel === undefined) chain.createGenesisBlock();
      else {
        // One read transaction: a consistent snapshot even while another process (e.g. a running service) appends.
        store.db.transaction(() => {
          chain.verifyChain();
          if (options.verifyWorldState !== false) chain.verifyWorldState();
        })();
      }
      for (const definition of options.msps ?? []) chain.addMsp(definition);
      return chain;
    } catch (error) {
      store.close();
      throw error;
    }
  }

  /** Number of blocks (the genesis block is block 0). */
  get height(): number {
    return this.nextBlockNumber;
  }

  /** Adds (or replaces) an organisation of the channel. */
  addMsp(definition: MspDefinition): void {
    this.msps.set(definition.mspId, {
      ...definition,
      roots: definition.rootCertificates.map((pem) => new x509.X509Certificate(pem)),
    });
    this.verifiedCreators.clear();
  }

  /** A Ledger port bound to one signing identity (several organisations may share one chain). */
  connect(identity: SigningIdentity): Ledger {
    return new EmbeddedLedger(this, identity);
  }

  /** Simulates a proposal against committed state (Fabric's endorsement): the response, rwset and event. */
  async endorse(proposal: ChaincodeProposal): Promise<Endorsement> {
    this.assertOpen();
    const channelId = proposal.channelId ?? this.channelId;
    if (channelId !== this.channelId) {
      throw new LedgerTransactionError(
        `channel ${channelId} does not exist (this chain is ${this.channelId})`,
        'BAD_CHANNEL_HEADER',
      );
    }
    const creatorProblem = await this.checkCreator(proposal.creator);
    if (creatorProblem)
      throw new LedgerTransactionError(`access denied: ${creatorProblem}`, 'BAD_CREATOR_SIGNATURE');
    const creatorBytes = serializeIdentity(proposal.creator);
    const nonce = proposal.nonce ? Buffer.from(proposal.nonce) : randomBytes(24);
    const txId = proposal.txId ?? createHash('sha256').update(nonce).update(creatorBytes).digest('hex');
    if (this.pendingTxIds.has(txId) || this.store.hasTransaction(txId)) {
      throw new LedgerTransactionError(`duplicate transaction found [${txId}]`, 'DUPLICATE_TXID', txId);
    }
    const timestamp = proposal.timestamp ?? nowTimestamp();
    const args = [proposal.transaction, ...proposal.args].map((arg) =>
      typeof arg === 'string' ? Buffer.from(arg, 'utf8') : Buffer.from(arg),
    );
    const transient = new Map<string, Uint8Array>(
      proposal.transient instanceof Map ? proposal.transient : Object.entries(proposal.transient ?? {}),
    );
    const stub = new SimulationStub(this.store, {
      channelId,
      txId,
      creator: proposal.creator,
      creatorBytes,
      nonce,
      timestamp,
      args,
      transient,
    });
    const response = await this.runtime.invoke(stub);
    const failed = response.status >= 400;
    return {
      txId,
      channelId,
      transaction: proposal.transaction,
      args: args.slice(1),
      creator: { mspid: proposal.creator.mspid, idBytes: Buffer.from(proposal.creator.idBytes) },
      nonce,
      timestamp,
      response,
      // A failed simulation produces no usable read-write set (the peer returns only the error).
      rwset: failed ? { reads: [], rangeQueries: [], writes: [] } : stub.readWriteSet(),
      event: failed ? undefined : stub.chaincodeEvent(),
    };
  }

  /** Orders an endorsed transaction into the next block; resolves with its validation code once stored. */
  commit(endorsement: Endorsement): Promise<CommitStatus> {
    this.assertOpen();
    if (endorsement.response.status >= 400) {
      return Promise.reject(
        new LedgerTransactionError(
          `transaction ${endorsement.txId} was not endorsed: ${endorsement.response.message}`,
          'ENDORSEMENT_FAILURE',
          endorsement.txId,
        ),
      );
    }
    if (endorsement.channelId !== this.channelId) {
      return Promise.reject(
        new LedgerTransactionError(
          `wrong channel ${endorsement.channelId}`,
          'BAD_CHANNEL_HEADER',
          endorsement.txId,
        ),
      );
    }
    return new Promise<CommitStatus>((resolve, reject) => {
      this.pending.push({ endorsement, resolve, reject });
      this.pendingTxIds.add(endorsement.txId);
      if (this.pending.length >= this.maxBlockTransactions) this.cutBlocks();
      else this.scheduleCut();
    });
  }

  /** Commit status of a transaction already in a block. */
  transactionStatus(txId: string): CommitStatus | undefined {
    const found = this.store.findTransaction(txId);
    return found && { txId, blockNumber: found.blockNumber, validationCode: found.validationCode };
  }

  /** A stored block: header and transactions (envelopes as hashed). */
  block(number: number): { header: BlockHeader; transactions: StoredTransaction[] } | undefined {
    return this.store.block(number);
  }

  /** Calls `listener` after each block is stored (e.g. to answer a commit status); returns the unsubscribe. */
  onBlock(listener: () => void): () => void {
    this.blockListeners.add(listener);
    return () => void this.blockListeners.delete(listener);
  }

  /** Chaincode events of valid transactions from `startBlock` (default: the next block), then live ones. */
  events(startBlock?: number): EventStream {
    this.assertOpen();
    const replayEnd = this.nextBlockNumber;
    const from = Math.max(0, startBlock ?? replayEnd);
    const live: LedgerEvent[] = [];
    let replayCursor: { block: number; index: number } | undefined;
    let replayDone = from >= replayEnd;
    let replayBuffer: LedgerEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const listener: EventListener = (events) => {
      for (const event of events) if (event.blockNumber >= from) live.push(event);
      wake?.();
    };
    this.listeners.add(listener);
    const end = (): void => {
      ended = true;
      this.listeners.delete(listener);
      this.streamEnders.delete(end);
      wake?.();
    };
    this.streamEnders.add(end);
    const nextEvent = async (): Promise<IteratorResult<LedgerEvent>> => {
      while (!ended) {
        if (replayBuffer.length > 0) return { value: replayBuffer.shift()!, done: false };
        if (!replayDone) {
          const rows = this.store.eventTransactions(from, replayEnd, 256, replayCursor);
          if (rows.length === 0) replayDone = true;
          else {
            const lastRow = rows[rows.length - 1]!;
            replayCursor = { block: lastRow.blockNumber, index: lastRow.index };
            replayBuffer = rows.map((row) => eventFromEnvelope(row.blockNumber, row.txId, row.envelope));
          }
          continue;
        }
        if (live.length > 0) return { value: live.shift()!, done: false };
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
      return { value: undefined, done: true };
    };
    const stream: EventStream = {
      close: end,
      [Symbol.asyncIterator]: () => ({
        next: nextEvent,
        return: async () => {
          end();
          return { value: undefined, done: true };
        },
      }),
    };
    return stream;
  }

  /** Re-checks every block's data hash and the hash chain; throws ChainIntegrityError at the first break. */
  verifyChain(): void {
    const { height, lastHash } = this.verifyBlocks();
    this.verifyChainRecords(height, lastHash);
  }

  /** Every block in order: numbers without gaps, transactions complete, hashes linked. Returns height and last hash. */
  private verifyBlocks(): { height: number; lastHash: Buffer } {
    let expected = 0;
    let previousHash: Buffer = ZERO_HASH;
    let current: ScannedBlock | undefined;
    const finish = (): void => {
      if (!current) return;
      this.verifyBlock(current, expected, previousHash);
      previousHash = current.hash;
      expected += 1;
    };
    for (const row of this.store.scanChain()) {
      if (!current || current.number !== row.number) {
        finish();
        current = {
          number: row.number,
          previousHash: row.previous_hash,
          dataHash: row.data_hash,
          hash: row.hash,
          txCount: row.tx_count,
          txs: [],
        };
      }
      if (row.idx !== null && row.tx_id !== null && row.envelope !== null && row.validation_code !== null) {
        current.txs.push({
          blockNumber: row.number,
          index: row.idx,
          txId: row.tx_id,
          validationCode: row.validation_code as ValidationCode,
          envelope: row.envelope,
        });
      }
    }
    finish();
    return { height: expected, lastHash: previousHash };
  }

  /** One block: the expected number, all its transactions, and its hashes (data, previous, own). */
  private verifyBlock(block: ScannedBlock, expected: number, previousHash: Buffer): void {
    const fail = (message: string, blockNumber = block.number): never => {
      throw new ChainIntegrityError(message, blockNumber, this.file);
    };
    if (block.number !== expected) fail(`block ${expected} is missing`, expected);
    if (block.txs.length !== block.txCount)
      fail(`holds ${block.txs.length} transactions, its header says ${block.txCount}`);
    block.txs.forEach((tx, index) => {
      if (tx.index !== index) fail(`transaction index ${index} is missing`);
    });
    if (!block.previousHash.equals(previousHash))
      fail('previous-hash does not match the hash of the block before it');
    if (!computeDataHash(block.txs).equals(block.dataHash))
      fail('data hash does not match its transactions (a transaction was altered)');
    const hash = computeBlockHash(block.number, block.previousHash, block.dataHash);
    if (!hash.equals(block.hash)) fail('block hash does not match its header');
  }

  /** What the chain recorded about itself (height, last hash) and the world state's newest block agree with it. */
  private verifyChainRecords(expected: number, previousHash: Buffer): void {
    const recordedHeight = Number(this.store.getMeta('height') ?? '0');
    if (recordedHeight !== expected) {
      throw new ChainIntegrityError(
        `the chain records height ${recordedHeight} but holds ${expected} blocks`,
        expected,
        this.file,
      );
    }
    if (this.store.getMeta('last_hash') !== previousHash.toString('hex')) {
      throw new ChainIntegrityError(
        'the last block is not the one the chain recorded',
        expected - 1,
        this.file,
      );
    }
    const stateBlock = this.store.maxStateBlock();
    if (stateBlock !== null && stateBlock >= expected) {
      throw new ChainIntegrityError(
        `world state refers to block ${stateBlock}, beyond the chain`,
        expected,
        this.file,
      );
    }
  }

  /**
   * Replays the writes of every valid transaction (from the hash-covered envelopes) and compares the result
   * with the world state table: every key, value and version must match. Throws ChainIntegrityError naming
   * the block of the first mismatching key.
   */
  verifyWorldState(): void {
    const digest = (base64: string): string => createHash('sha256').update(base64).digest('base64');
    const expected = new Map<string, { digest: string | null; version: Version }>();
    for (const row of this.store.validEnvelopes()) {
      const envelope = JSON.parse(row.envelope.toString('utf8')) as {
        rwset?: { writes: { key: string; isDelete: boolean; value: string }[] };
      };
      // The genesis (config) transaction has no read-write set.
      for (const write of envelope.rwset?.writes ?? []) {
        expected.set(write.key, {
          digest: write.isDelete ? null : digest(write.value),
          version: { blockNum: row.block, txNum: row.idx },
        });
      }
    }
    const fail = (key: string, message: string, blockNumber: number): never => {
      throw new ChainIntegrityError(
        `world state key ${JSON.stringify(key)} ${message}`,
        blockNumber,
        this.file,
      );
    };
    for (const row of this.store.allState()) {
      const key = row.key.toString('utf8');
      const write = expected.get(key);
      if (!write || write.digest === null) fail(key, 'was not written by any valid transaction', row.block);
      else if (write.version.blockNum !== row.block || write.version.txNum !== row.tx) {
        fail(
          key,
          `has version ${row.block}:${row.tx}, the chain says ${write.version.blockNum}:${write.version.txNum}`,
          write.version.blockNum,
        );
      } else if (write.digest !== digest(row.value.toString('base64'))) {
        fail(key, 'holds a value its last transaction did not write', row.block);
      }
      expected.delete(key);
    }
    for (const [key, write] of expected) {
      if (write.digest !== null) fail(key, 'is missing from the world state', write.version.blockNum);
    }
  }

  /** Stops accepting work, commits what is queued, ends event streams and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.cutBlocks();
    this.closed = true;
    for (const end of [...this.streamEnders]) end();
    this.store.close();
  }

  private assertOpen(): void {
    if (this.closed)
      throw new LedgerTransactionError('the embedded ledger is closed', 'UNAVAILABLE', undefined, true);
  }

  private scheduleCut(): void {
    if (this.cutScheduled) return;
    this.cutScheduled = true;
    setImmediate(() => {
      this.cutScheduled = false;
      this.cutBlocks();
    });
  }

  private cutBlocks(): void {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, this.maxBlockTransactions);
      try {
        const statuses = this.commitBlock(batch.map((item) => item.endorsement));
        batch.forEach((item, index) => item.resolve(statuses[index]!));
      } catch (error) {
        // Nothing of the block was stored (one SQLite transaction): the caller may submit again.
        const reason = error instanceof Error ? error.message : String(error);
        batch.forEach((item) =>
          item.reject(
            new LedgerTransactionError(
              `block ${this.nextBlockNumber} could not be stored in ${this.file}: ${reason}`,
              'UNAVAILABLE',
              item.endorsement.txId,
              true,
            ),
          ),
        );
      } finally {
        for (const item of batch) this.pendingTxIds.delete(item.endorsement.txId);
      }
    }
  }

  /** Validates and stores one block (synchronously, one SQLite transaction). */
  private commitBlock(endorsements: Endorsement[]): CommitStatus[] {
    const number = this.nextBlockNumber;
    const overlay = new Map<string, OverlayEntry>();
    const seen = new Set<string>();
    const transactions: StoredTransaction[] = [];
    const hasEvent: boolean[] = [];
    const writes: AppliedWrite[] = [];
    const statuses: CommitStatus[] = [];
    endorsements.forEach((endorsement, index) => {
      const duplicate = seen.has(endorsement.txId) || this.store.hasTransaction(endorsement.txId);
      seen.add(endorsement.txId);
      const code: ValidationCode = duplicate ? 'DUPLICATE_TXID' : this.validate(endorsement, overlay);
      if (code === 'VALID') {
        const version = { blockNum: number, txNum: index };
        for (const write of endorsement.rwset.writes) {
          overlay.set(write.key, { value: write.isDelete ? null : write.value, version });
          writes.push({ ...write, version, txId: endorsement.txId, timestamp: endorsement.timestamp });
        }
      }
      transactions.push({
        blockNumber: number,
        index,
        txId: endorsement.txId,
        validationCode: code,
        envelope: Buffer.from(this.encodeEnvelope(endorsement), 'utf8'),
      });
      hasEvent.push(code === 'VALID' && endorsement.event !== undefined);
      statuses.push({ txId: endorsement.txId, blockNumber: number, validationCode: code });
    });
    const dataHash = computeDataHash(transactions);
    const header: BlockHeader = {
      number,
      previousHash: this.lastHash,
      dataHash,
      hash: computeBlockHash(number, this.lastHash, dataHash),
    };
    this.store.storeBlock({ header, transactions, hasEvent, writes });
    this.nextBlockNumber = number + 1;
    this.lastHash = header.hash;
    const events: LedgerEvent[] = [];
    endorsements.forEach((endorsement, index) => {
      if (hasEvent[index]) {
        events.push({
          blockNumber: number,
          transactionId: endorsement.txId,
          eventName: endorsement.event!.name,
          payload: endorsement.event!.payload.toString('utf8'),
        });
      }
    });
    if (events.length > 0) for (const listener of this.listeners) listener(events);
    for (const listener of this.blockListeners) listener();
    return statuses;
  }

  /**
   * Key-level endorsement policies, then MVCC and phantom checks, against committed state plus the earlier valid
   * transactions of this block (the order of a Fabric peer's validator: endorsement policy before MVCC).
   */
  private validate(endorsement: Endorsement, overlay: Map<string, OverlayEntry>): ValidationCode {
    const { rwset } = endorsement;
    // The embedded chain endorses as the creator's organisation's peer: one endorsement, the creator's MSP.
    const endorsers = [{ mspId: endorsement.creator.mspid }];
    let setsPolicy = false;
    for (const write of rwset.writes) {
      const policyOf = keyOfValidationParameter(write.key);
      if (policyOf !== undefined) setsPolicy = true;
      if (!this.keyPolicies) continue;
      // Writing a key, or changing its policy, needs the policy the key has now.
      const policyKey = validationParameterKey(policyOf ?? write.key);
      const pending = overlay.get(policyKey);
      const policy = pending ? pending.value : (this.store.getState(policyKey)?.value ?? null);
      if (policy && !satisfiesPolicy(policy, endorsers)) return 'ENDORSEMENT_POLICY_FAILURE';
    }
    for (const read of rwset.reads) {
      const pending = overlay.get(read.key);
      const current = pending
        ? pending.value === null
          ? null
          : pending.version
        : (this.store.getState(read.key)?.version ?? null);
      if (!sameVersion(read.version, current)) return 'MVCC_READ_CONFLICT';
    }
    for (const query of rwset.rangeQueries) {
      if (!this.rangeUnchanged(query, overlay)) return 'PHANTOM_READ_CONFLICT';
    }
    // From this valid transaction on (later ones of the block included), writes are checked against policies.
    if (setsPolicy) this.keyPolicies = true;
    return 'VALID';
  }

  private rangeUnchanged(query: RangeQueryInfo, overlay: Map<string, OverlayEntry>): boolean {
    const lastRead = query.reads[query.reads.length - 1];
    if (!query.itrExhausted && !lastRead) return true;
    // Not exhausted: only the part the chaincode saw, up to and including the last key it read.
    const endKey = query.itrExhausted ? query.endKey : `${lastRead!.key}\u0000`;
    const inRange = (key: string): boolean =>
      compareKeys(key, query.startKey) >= 0 && (endKey === '' || compareKeys(key, endKey) < 0);
    const current = new Map<string, Version>();
    for (const row of this.store.range(query.startKey, endKey, Number.MAX_SAFE_INTEGER))
      current.set(row.key, row.version);
    for (const [key, entry] of overlay) {
      if (!inRange(key)) continue;
      if (entry.value === null) current.delete(key);
      else current.set(key, entry.version);
    }
    if (current.size !== query.reads.length) return false;
    const keys = [...current.keys()].sort(compareKeys);
    return keys.every((key, index) => {
      const read = query.reads[index]!;
      return read.key === key && sameVersion(read.version, current.get(key)!);
    });
  }

  private encodeEnvelope(endorsement: Endorsement): string {
    const base64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
    return this.runtime.stableStringify({
      channelId: endorsement.channelId,
      txId: endorsement.txId,
      transaction: endorsement.transaction,
      args: endorsement.args.map(base64),
      creator: { mspid: endorsement.creator.mspid, idBytes: base64(endorsement.creator.idBytes) },
      nonce: endorsement.nonce.toString('hex'),
      timestamp: endorsement.timestamp,
      response: {
        status: endorsement.response.status,
        message: endorsement.response.message,
        payload: base64(endorsement.response.payload),
      },
      rwset: {
        reads: endorsement.rwset.reads,
        rangeQueries: endorsement.rwset.rangeQueries,
        writes: endorsement.rwset.writes.map((write) => ({
          key: write.key,
          isDelete: write.isDelete,
          value: base64(write.value),
        })),
      },
      event: endorsement.event
        ? { name: endorsement.event.name, payload: base64(endorsement.event.payload) }
        : null,
    });
  }

  private createGenesisBlock(): void {
    const envelope = Buffer.from(
      this.runtime.stableStringify({ type: 'CONFIG', channelId: this.channelId }),
      'utf8',
    );
    const transactions: StoredTransaction[] = [
      {
        blockNumber: 0,
        index: 0,
        txId: createHash('sha256').update(envelope).digest('hex'),
        validationCode: 'VALID',
        envelope,
      },
    ];
    const dataHash = computeDataHash(transactions);
    const header: BlockHeader = {
      number: 0,
      previousHash: ZERO_HASH,
      dataHash,
      hash: computeBlockHash(0, ZERO_HASH, dataHash),
    };
    this.store.db.transaction(() => {
      this.store.setMeta('channel_id', this.channelId);
      this.store.storeBlock({ header, transactions, hasEvent: [false], writes: [] });
    })();
    this.nextBlockNumber = 1;
    this.lastHash = header.hash;
  }

  /** Undefined when the creator may submit; otherwise why not. Results are cached per certificate. */
  private async checkCreator(creator: SerializedIdentity): Promise<string | undefined> {
    if (this.msps.size === 0) return undefined;
    const definition = this.msps.get(creator.mspid);
    if (!definition) return `creator org ${creator.mspid} is not a member of channel ${this.channelId}`;
    const pem = Buffer.from(creator.idBytes).toString('utf8');
    if (definition.isRevoked?.(pem)) return `the creator's certificate has been revoked by ${creator.mspid}`;
    const cacheKey = `${creator.mspid}\n${pem}`;
    let verdict = this.verifiedCreators.get(cacheKey);
    if (!verdict) {
      verdict = verifyCertificate(pem, definition.roots);
      this.verifiedCreators.set(cacheKey, verdict);
    }
    return verdict;
  }
}

async function verifyCertificate(pem: string, roots: x509.X509Certificate[]): Promise<string | undefined> {
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(pem);
  } catch {
    return 'the creator is not an X.509 certificate';
  }
  const now = new Date();
  if (now < certificate.notBefore || now > certificate.notAfter)
    return "the creator's certificate is expired or not yet valid";
  for (const root of roots) {
    if (certificate.issuer !== root.subject) continue;
    if (await certificate.verify({ publicKey: root.publicKey, signatureOnly: true }, webcrypto))
      return undefined;
  }
  return "the creator's certificate was not issued by its organisation's CA";
}

function nowTimestamp(): TxTimestamp {
  const milliseconds = Date.now();
  return { seconds: Math.floor(milliseconds / 1000), nanos: (milliseconds % 1000) * 1_000_000 };
}

function eventFromEnvelope(blockNumber: number, txId: string, envelope: Buffer): LedgerEvent {
  const parsed = JSON.parse(envelope.toString('utf8')) as { event: { name: string; payload: string } };
  return {
    blockNumber,
    transactionId: txId,
    eventName: parsed.event.name,
    payload: Buffer.from(parsed.event.payload, 'base64').toString('utf8'),
  };
}
