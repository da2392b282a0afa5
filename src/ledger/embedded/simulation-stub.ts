/**
 * A ChaincodeStub (fabric-shim's interface) that simulates one transaction against the embedded chain's
 * committed state, the way a Fabric peer's transaction simulator does:
 * - reads see committed state only (never the transaction's own writes);
 * - every key read is recorded with its version, every range / partial-composite-key query with the keys
 *   and versions it returned, for the MVCC and phantom checks at commit;
 * - writes are buffered in the write set; an empty value is a delete (as in Fabric's rwset builder);
 * - setEvent keeps one event per transaction (the last call wins).
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type {
  ChaincodeStub,
  Iterators,
  SerializedIdentity as ShimSerializedIdentity,
  SplitCompositekey,
  Timestamp,
} from 'fabric-shim-api';
import type { ChainStore } from './chain-store.js';
import { VALIDATION_PARAMETER_PREFIX, validationParameterKey } from './endorsement-policy.js';
import type {
  ChaincodeEvent,
  KVRead,
  RangeQueryInfo,
  ReadWriteSet,
  SerializedIdentity,
  TxTimestamp,
  Version,
} from './types.js';

// The Long class fabric-shim itself uses for Timestamp.seconds (a dependency of fabric-shim, not of the service).
const shimRequire = createRequire(createRequire(import.meta.url).resolve('fabric-shim'));
const Long = shimRequire('long') as { fromNumber(value: number, unsigned?: boolean): Timestamp['seconds'] };

const COMPOSITE_KEY_NAMESPACE = '\x00';
const MIN_UNICODE_RUNE = '\u0000';
const MAX_UNICODE_RUNE = '\u{10ffff}';
const EMPTY_KEY_SUBSTITUTE = '\x01';
/** Rows fetched per page by an iterator (Fabric's internalQueryLimit is 1000 too). */
const PAGE_SIZE = 1000;

export interface SimulationContext {
  channelId: string;
  txId: string;
  creator: SerializedIdentity;
  /** Serialized creator (protobuf msp.SerializedIdentity), as used for the tx id and binding. */
  creatorBytes: Buffer;
  nonce: Buffer;
  timestamp: TxTimestamp;
  /** [function, ...args] as bytes. */
  args: Buffer[];
  transient: Map<string, Uint8Array>;
}

type StateIterator = Iterators.StateQueryIterator;
type HistoryIterator = Iterators.HistoryQueryIterator;

/** Like fabric-shim: a promise of the iterator that can also be consumed with `for await`. */
function asyncIterablePromise<T>(
  promise: Promise<Iterators.CommonIterator<T>>,
): Promise<Iterators.CommonIterator<T>> & AsyncIterable<T> {
  const iterable = promise as Promise<Iterators.CommonIterator<T>> & AsyncIterable<T>;
  iterable[Symbol.asyncIterator] = async function* () {
    const iterator = await promise;
    try {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
    } finally {
      await iterator.close();
    }
  };
  return iterable;
}

function unsupported(what: string): never {
  throw new Error(`${what} is not supported by the embedded ledger`);
}

export class SimulationStub implements ChaincodeStub {
  private readonly reads = new Map<string, Version | null>();
  private readonly rangeQueries: RangeQueryInfo[] = [];
  private readonly writes = new Map<string, Buffer | null>();
  private event: ChaincodeEvent | undefined;

  constructor(
    private readonly store: ChainStore,
    private readonly context: SimulationContext,
  ) {}

  /** The read-write set built so far (writes sorted by key bytes). */
  readWriteSet(): ReadWriteSet {
    const reads: KVRead[] = [...this.reads].map(([key, version]) => ({ key, version }));
    const writes = [...this.writes]
      .sort(([a], [b]) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')))
      .map(([key, value]) => ({ key, isDelete: value === null, value: value ?? Buffer.alloc(0) }));
    return { reads, rangeQueries: this.rangeQueries, writes };
  }

  chaincodeEvent(): ChaincodeEvent | undefined {
    return this.event;
  }

  // --- proposal ----------------------------------------------------------------------------------

  /** Used by fabric-shim's contract router (ChaincodeFromContract). */
  getBufferArgs(): Buffer[] {
    return this.context.args;
  }

  getArgs(): string[] {
    return this.context.args.map((arg) => arg.toString('utf8'));
  }

  getStringArgs(): string[] {
    return this.getArgs();
  }

  getFunctionAndParameters(): { params: string[]; fcn: string } {
    const [fcn = '', ...params] = this.getArgs();
    return { fcn, params };
  }

  getTxID(): string {
    return this.context.txId;
  }

  getChannelID(): string {
    return this.context.channelId;
  }

  getCreator(): ShimSerializedIdentity {
    return { mspid: this.context.creator.mspid, idBytes: this.context.creator.idBytes };
  }

  /** The endorsing peer's MSP; the embedded chain endorses as the creator's organisation. */
  getMspID(): string {
    return this.context.creator.mspid;
  }

  getTransient(): Map<string, Uint8Array> {
    return new Map(this.context.transient);
  }

  getSignedProposal(): never {
    return unsupported('getSignedProposal');
  }

  getTxTimestamp(): Timestamp {
    return {
      seconds: Long.fromNumber(this.context.timestamp.seconds, true),
      nanos: this.context.timestamp.nanos,
    };
  }

  getDateTimestamp(): Date {
    const { seconds, nanos } = this.context.timestamp;
    return new Date(seconds * 1000 + Math.floor(nanos / 1_000_000));
  }

  /** hex SHA-256(nonce || creator || epoch), epoch 0 as 8 little-endian bytes, as fabric-shim computes it. */
  getBinding(): string {
    return createHash('sha256')
      .update(this.context.nonce)
      .update(this.context.creatorBytes)
      .update(Buffer.alloc(8))
      .digest('hex');
  }

  // --- state -------------------------------------------------------------------------------------

  async getState(key: string): Promise<Uint8Array> {
    requireKey(key);
    const entry = this.store.getState(key);
    if (!this.reads.has(key)) this.reads.set(key, entry?.version ?? null);
    return entry ? Buffer.from(entry.value) : Buffer.alloc(0);
  }

  async putState(key: string, value: Uint8Array): Promise<void> {
    requireKey(key);
    if (!(value instanceof Uint8Array))
      throw new Error('putState: value must be bytes (Buffer or Uint8Array)');
    this.writes.set(key, value.length === 0 ? null : Buffer.from(value));
  }

  async deleteState(key: string): Promise<void> {
    requireKey(key);
    this.writes.set(key, null);
  }

  /**
   * Key-level endorsement: the policy (a serialized SignaturePolicyEnvelope, as fabric-shim's
   * KeyEndorsementPolicy makes it) is written, in the same transaction, to the key's reserved companion key
   * (validationParameterKey), so it is versioned, replayed and MVCC-checked like any state; the chain enforces it at
   * commit on later writes of the key (chain.ts, endorsement-policy.ts).
   */
  async setStateValidationParameter(key: string, policy: Uint8Array): Promise<void> {
    requireKey(key);
    if (!(policy instanceof Uint8Array))
      throw new Error('setStateValidationParameter: policy must be bytes (Buffer or Uint8Array)');
    this.writes.set(validationParameterKey(key), policy.length === 0 ? null : Buffer.from(policy));
  }

  async getStateValidationParameter(key: string): Promise<Uint8Array> {
    requireKey(key);
    const reserved = validationParameterKey(key);
    const entry = this.store.getState(reserved);
    if (!this.reads.has(reserved)) this.reads.set(reserved, entry?.version ?? null);
    return entry ? Buffer.from(entry.value) : Buffer.alloc(0);
  }

  getStateByRange(startKey: string, endKey: string): Promise<StateIterator> & AsyncIterable<Iterators.KV> {
    const start = startKey || EMPTY_KEY_SUBSTITUTE;
    const run = async (): Promise<StateIterator> => {
      for (const key of [start, endKey]) {
        if (key && key.charAt(0) === COMPOSITE_KEY_NAMESPACE) {
          throw new Error(
            `first character of the key [${key}] contains a null character which is not allowed`,
          );
        }
      }
      return this.rangeIterator(start, endKey ?? '');
    };
    return asyncIterablePromise(run());
  }

  getStateByPartialCompositeKey(
    objectType: string,
    attributes: string[],
  ): Promise<StateIterator> & AsyncIterable<Iterators.KV> {
    const run = async (): Promise<StateIterator> => {
      const partialKey = this.createCompositeKey(objectType, attributes);
      return this.rangeIterator(partialKey, partialKey + MAX_UNICODE_RUNE);
    };
    return asyncIterablePromise(run());
  }

  getStateByRangeWithPagination(): never {
    return unsupported('getStateByRangeWithPagination');
  }

  getStateByPartialCompositeKeyWithPagination(): never {
    return unsupported('getStateByPartialCompositeKeyWithPagination');
  }

  getQueryResult(): never {
    return unsupported('getQueryResult (rich queries need CouchDB)');
  }

  getQueryResultWithPagination(): never {
    return unsupported('getQueryResultWithPagination (rich queries need CouchDB)');
  }

  getHistoryForKey(key: string): Promise<HistoryIterator> & AsyncIterable<Iterators.KeyModification> {
    const run = async (): Promise<HistoryIterator> => {
      requireKey(key);
      const rows = this.store.history(key);
      let position = 0;
      return {
        next: async () => {
          const row = rows[position++];
          if (!row) return { done: true } as Iterators.NextResult<Iterators.KeyModification>;
          // fabric-shim hands out the protobuf Timestamp's toObject(): plain numbers.
          const modification = {
            txId: row.txId,
            value: Buffer.from(row.value),
            isDelete: row.isDelete,
            timestamp: { seconds: row.timestamp.seconds, nanos: row.timestamp.nanos },
          } as unknown as Iterators.KeyModification;
          return { value: modification, done: false };
        },
        close: async () => {},
      };
    };
    return asyncIterablePromise(run());
  }

  async invokeChaincode(): Promise<never> {
    return unsupported('invokeChaincode');
  }

  setEvent(name: string, payload: Uint8Array): void {
    if (typeof name !== 'string' || name.length === 0)
      throw new Error('Event name must be a non-empty string');
    this.event = { name, payload: Buffer.from(payload ?? Buffer.alloc(0)) };
  }

  createCompositeKey(objectType: string, attributes: string[]): string {
    requireCompositeKeyAttribute(objectType);
    if (!Array.isArray(attributes)) throw new Error('attributes must be an array');
    let compositeKey = COMPOSITE_KEY_NAMESPACE + objectType + MIN_UNICODE_RUNE;
    for (const attribute of attributes) {
      requireCompositeKeyAttribute(attribute);
      compositeKey += attribute + MIN_UNICODE_RUNE;
    }
    return compositeKey;
  }

  splitCompositeKey(compositeKey: string): SplitCompositekey {
    const result: SplitCompositekey = { objectType: null as unknown as string, attributes: [] };
    if (compositeKey && compositeKey.length > 1 && compositeKey.charAt(0) === COMPOSITE_KEY_NAMESPACE) {
      const parts = compositeKey.substring(1).split(MIN_UNICODE_RUNE);
      result.objectType = parts[0]!;
      parts.pop();
      if (parts.length > 1) {
        parts.shift();
        result.attributes = parts;
      }
    }
    return result;
  }

  // --- private data: not offered by the embedded chain (no collections) ----------------------------

  getPrivateData(): never {
    return unsupported('private data');
  }
  getPrivateDataHash(): never {
    return unsupported('private data');
  }
  putPrivateData(): never {
    return unsupported('private data');
  }
  deletePrivateData(): never {
    return unsupported('private data');
  }
  purgePrivateData(): never {
    return unsupported('private data');
  }
  setPrivateDataValidationParameter(): never {
    return unsupported('private data');
  }
  getPrivateDataValidationParameter(): never {
    return unsupported('private data');
  }
  getPrivateDataByRange(): never {
    return unsupported('private data');
  }
  getPrivateDataByPartialCompositeKey(): never {
    return unsupported('private data');
  }
  getPrivateDataQueryResult(): never {
    return unsupported('private data');
  }

  /** Pages through committed state, recording every key returned for the phantom check. */
  private rangeIterator(startKey: string, endKey: string): StateIterator {
    const info: RangeQueryInfo = { startKey, endKey, itrExhausted: false, reads: [] };
    this.rangeQueries.push(info);
    let page = this.store.range(startKey, endKey, PAGE_SIZE);
    let position = 0;
    let closed = false;
    return {
      next: async () => {
        if (closed) return { done: true } as Iterators.NextResult<Iterators.KV>;
        if (position === page.length && page.length === PAGE_SIZE) {
          page = this.store.range(startKey, endKey, PAGE_SIZE, page[page.length - 1]!.key);
          position = 0;
        }
        const row = page[position++];
        if (!row) {
          info.itrExhausted = true;
          return { done: true } as Iterators.NextResult<Iterators.KV>;
        }
        info.reads.push({ key: row.key, version: row.version });
        // fabric-shim's KV carries key and value only.
        return {
          value: { key: row.key, value: Buffer.from(row.value) } as unknown as Iterators.KV,
          done: false,
        };
      },
      close: async () => {
        closed = true;
      },
    };
  }
}

function requireKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new Error('key must not be an empty string');
  if (key.startsWith(VALIDATION_PARAMETER_PREFIX))
    throw new Error('keys starting with \\x00\\x00 are reserved by the embedded ledger');
}

/** The same check as fabric-shim's node stub (which, unlike the Go shim, does not reject U+0000 inside). */
function requireCompositeKeyAttribute(attribute: string): void {
  if (!attribute || typeof attribute !== 'string' || attribute.length === 0) {
    throw new Error('object type or attribute not a non-zero length string');
  }
}
