/**
 * The in-memory ResourceStore adapter: the port's twin without a database, for the fast test lane
 * (`npm run test:unit`) and for tests of the FHIR core that need a store but not SQLite. It passes the same
 * contract suite (test/store/contract.ts) as the SQLite and PostgreSQL adapters; nothing survives `close()`.
 *
 * Not implemented: `search` (optional in the port; SQLite's search is its own module, src/fhir/search/).
 *
 * Concurrency: every call runs synchronously, so one `write` never interleaves with other work.
 * `transaction(work)` is async: an AsyncMutex makes other callers wait until it commits or rolls back, and its
 * changes are undone from an undo log if it fails (a nested transaction undoes back to its own mark).
 */
import { fhirError } from '../../outcome.js';
import { AsyncMutex } from '../async-mutex.js';
import type {
  AnchorReference,
  AnchorState,
  HistoryPage,
  HistoryQuery,
  IndexEntry,
  PendingAnchor,
  ResourceStore,
  StoredVersion,
  StoredVersionBytes,
  VersionKey,
  WriteRequest,
} from '../resource-store.js';
import {
  anchorOf,
  CHUNK,
  decodeCursor,
  encodeCursor,
  instantBound,
  planWrite,
  type HistoryCursor,
  withJsonBytes,
} from '../store-support.js';

/** An anchor as kept: its pending form, then its batch reference, or erased (no salt). */
interface AnchorRecord {
  pending: PendingAnchor;
  status: 'pending' | 'anchored' | 'erased';
  anchor?: AnchorReference;
}

/** One resource: the seq of each of its versions (version n at index n - 1) and its current index rows. */
interface ResourceRecord {
  seqs: number[];
  index: IndexEntry[];
}

function copyVersion(version: StoredVersion): StoredVersion {
  const copy = { ...version };
  if (version.patients) copy.patients = [...version.patients];
  return copy;
}

/** The index rows as SQLite keeps them: non-finite ranges are not stored. */
function keptEntry(entry: IndexEntry): IndexEntry {
  const kept: IndexEntry = { param: entry.param, type: entry.type };
  if (entry.system !== undefined) kept.system = entry.system;
  if (entry.value !== undefined) kept.value = entry.value;
  if (entry.low !== undefined && Number.isFinite(entry.low)) kept.low = entry.low;
  if (entry.high !== undefined && Number.isFinite(entry.high)) kept.high = entry.high;
  if (entry.reference !== undefined) kept.reference = entry.reference;
  return kept;
}

function stateOf(record: AnchorRecord): AnchorState {
  const { resourceType, id, versionId } = record.pending;
  if (record.status === 'erased') return { resourceType, id, versionId, status: 'erased' };
  const pending: PendingAnchor = { ...record.pending };
  if (pending.leafVersion !== 2) delete pending.leafVersion;
  if (record.status === 'pending') return { ...pending, status: 'pending' };
  return { ...pending, status: 'anchored', anchor: { ...record.anchor! } };
}

export class MemoryResourceStore implements ResourceStore {
  /** Every version in store order: seq n is versions[n - 1]. Entries are replaced, never changed in place. */
  private readonly versions: StoredVersion[] = [];
  private readonly resources = new Map<string, ResourceRecord>();
  /** Anchors by the seq of their version. */
  private readonly anchors = new Map<number, AnchorRecord>();
  private readonly mutex = new AsyncMutex();
  /** The open transaction(work), if any; its view's calls run at once instead of waiting for the mutex. */
  private activeTx: symbol | undefined;
  /** While a transaction is open: how to undo each change it made, newest last. */
  private undoLog: (() => void)[] = [];
  private closed = false;

  async init(): Promise<void> {
    this.assertOpen();
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  read(resourceType: string, id: string): Promise<StoredVersion | undefined> {
    return this.guard(() => this.readNow(resourceType, id));
  }

  vread(resourceType: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    return this.guard(() => this.vreadNow(resourceType, id, versionId));
  }

  vreadMany(keys: readonly VersionKey[]): Promise<(StoredVersion | undefined)[]> {
    return this.guard(() => keys.map((k) => this.vreadNow(k.resourceType, k.id, k.versionId)));
  }

  async vreadManyBytes(keys: readonly VersionKey[]): Promise<(StoredVersionBytes | undefined)[]> {
    return (await this.vreadMany(keys)).map(withJsonBytes);
  }

  write(request: WriteRequest): Promise<StoredVersion> {
    return this.guard(() => this.writeNow(request));
  }

  history(query: HistoryQuery): Promise<HistoryPage> {
    return this.guard(() => this.historyNow(query));
  }

  async transaction<T>(work: (store: ResourceStore) => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      this.assertOpen();
      const token = Symbol('transaction');
      this.activeTx = token;
      this.undoLog = [];
      try {
        return await work(this.transactionView(token));
      } catch (error) {
        this.undoTo(0);
        throw error;
      } finally {
        this.activeTx = undefined;
        this.undoLog = [];
      }
    });
  }

  pendingAnchors(limit: number): Promise<PendingAnchor[]> {
    return this.guard(() => this.pendingAnchorsNow(limit));
  }

  markAnchored(
    keys: VersionKey[],
    anchor: Omit<AnchorReference, 'leafIndex'> & { leafIndexes: number[] },
  ): Promise<void> {
    return this.guard(() => this.markAnchoredNow(keys, anchor));
  }

  anchorState(key: VersionKey): Promise<AnchorState | undefined> {
    return this.guard(() => this.anchorStateNow(key));
  }

  anchorStates(keys: readonly VersionKey[]): Promise<(AnchorState | undefined)[]> {
    return this.guard(() => keys.map((key) => this.anchorStateNow(key)));
  }

  allVersions(): AsyncIterable<{ version: StoredVersion; anchor?: AnchorState }> {
    return this.versionsWith((fn) => this.guard(fn));
  }

  eraseSalts(resourceType: string, id: string): Promise<number> {
    return this.guard(() => this.eraseSaltsNow(resourceType, id));
  }

  eraseContent(resourceType: string, id: string): Promise<number> {
    return this.guard(() => this.eraseContentNow(resourceType, id));
  }

  indexEntries(resourceType: string, id: string): Promise<IndexEntry[]> {
    return this.guard(() => this.indexEntriesNow(resourceType, id));
  }

  replaceIndex(key: VersionKey, entries: readonly IndexEntry[]): Promise<boolean> {
    return this.guard(() => this.replaceIndexNow(key, entries));
  }

  // ---------------------------------------------------------------------------------------------------------
  // Synchronous core (runs either directly or inside the open transaction).

  private readNow(resourceType: string, id: string): StoredVersion | undefined {
    const seqs = this.resources.get(`${resourceType}/${id}`)?.seqs;
    return seqs && seqs.length > 0 ? copyVersion(this.versions[seqs[seqs.length - 1]! - 1]!) : undefined;
  }

  private vreadNow(resourceType: string, id: string, versionId: number): StoredVersion | undefined {
    const seq = this.seqOf(resourceType, id, versionId);
    return seq === undefined ? undefined : copyVersion(this.versions[seq - 1]!);
  }

  private anchorStateNow(key: VersionKey): AnchorState | undefined {
    const seq = this.seqOf(key.resourceType, key.id, key.versionId);
    const record = seq === undefined ? undefined : this.anchors.get(seq);
    return record ? stateOf(record) : undefined;
  }

  private indexEntriesNow(resourceType: string, id: string): IndexEntry[] {
    return (this.resources.get(`${resourceType}/${id}`)?.index ?? []).map(keptEntry);
  }

  private replaceIndexNow(key: VersionKey, entries: readonly IndexEntry[]): boolean {
    const record = this.resources.get(`${key.resourceType}/${key.id}`);
    const currentSeq = record?.seqs[record.seqs.length - 1];
    const current = currentSeq === undefined ? undefined : this.versions[currentSeq - 1]!;
    if (!record || !current || current.versionId !== key.versionId || current.deleted) return false;
    const index = record.index;
    record.index = entries.map(keptEntry);
    this.onUndo(() => (record.index = index));
    return true;
  }

  private seqOf(resourceType: string, id: string, versionId: number): number | undefined {
    return this.resources.get(`${resourceType}/${id}`)?.seqs[versionId - 1];
  }

  private writeNow(request: WriteRequest): StoredVersion {
    const { resourceType, id } = request;
    const key = `${resourceType}/${id}`;
    const record = this.resources.get(key);
    const currentSeq = record?.seqs[record.seqs.length - 1];
    const current = currentSeq === undefined ? undefined : this.versions[currentSeq - 1]!;
    const last = this.versions[this.versions.length - 1];
    const plan = planWrite(request, current, last ? last.lastUpdated : null);
    if (plan.kind === 'unchanged') return this.vreadNow(resourceType, id, plan.versionId)!;
    const version = plan.version;
    if (version.patients) version.patients = [...version.patients];
    // Everything that can refuse the write is decided before the first change: a refused write changes nothing.
    const pending = anchorOf(request, version);

    const seq = this.versions.push(version);
    const resource = record ?? { seqs: [], index: [] };
    if (!record) this.resources.set(key, resource);
    resource.seqs.push(seq);
    const previousIndex = resource.index;
    resource.index = version.deleted ? [] : (request.index ?? []).map(keptEntry);
    if (pending) this.anchors.set(seq, { pending: { ...pending }, status: 'pending' });
    this.onUndo(() => {
      this.versions.pop();
      resource.seqs.pop();
      resource.index = previousIndex;
      if (!record) this.resources.delete(key);
      this.anchors.delete(seq);
    });
    return copyVersion(version);
  }

  private historyNow(query: HistoryQuery): HistoryPage {
    if (query.id !== undefined && query.resourceType === undefined) {
      throw new Error('history: an id needs a resourceType');
    }
    const count = Math.floor(query.count);
    if (!(count >= 0)) throw fhirError('parameter-invalid', `Invalid history page size ${query.count}`);

    let cursor: HistoryCursor;
    if (query.cursor !== undefined) {
      cursor = decodeCursor(query.cursor);
    } else {
      // First page: fix the range of seq this history covers, so later pages see the same versions.
      const top = this.versions.length;
      let lo = 1;
      let hi = top;
      // lastUpdated strictly increases with seq, so the bounds are the first / last seq on the right side.
      if (query.since !== undefined) {
        const since = instantBound(query.since, '_since');
        const first = this.versions.findIndex((v) => v.lastUpdated >= since);
        lo = first === -1 ? top + 1 : first + 1;
      }
      if (query.at !== undefined) {
        const at = instantBound(query.at, '_at');
        const after = this.versions.findIndex((v) => v.lastUpdated > at);
        hi = after === -1 ? top : after;
      }
      const total = hi < lo ? 0 : this.historySeqs(query, lo, hi, hi + 1).length;
      cursor = { after: hi + 1, lo, hi, total };
    }

    const { lo, hi, total } = cursor;
    if (count === 0 || cursor.after <= lo || hi < lo) return { versions: [], total };
    const seqs = this.historySeqs(query, lo, hi, cursor.after);
    const page: HistoryPage = {
      versions: seqs.slice(0, count).map((seq) => copyVersion(this.versions[seq - 1]!)),
      total,
    };
    if (seqs.length > count) page.next = encodeCursor({ ...cursor, after: seqs[count - 1]! });
    return page;
  }

  /**
   * The seqs a history lists, newest first, below `after`: without `at`, versions with seq in [lo, hi]; with
   * `at`, per resource its newest version with seq <= hi (the one current at that instant), kept if seq >= lo.
   * Versions the caller may not see (HistoryQuery.visible) are left out, as if they did not exist.
   */
  private historySeqs(query: HistoryQuery, lo: number, hi: number, after: number): number[] {
    const { resourceType, id, visible } = query;
    const upper = Math.min(hi, after - 1);
    let candidates: number[];
    if (query.at === undefined) {
      candidates = [];
      if (id !== undefined) {
        for (const seq of this.resources.get(`${resourceType}/${id}`)?.seqs ?? []) {
          if (seq >= lo && seq <= upper) candidates.push(seq);
        }
      } else {
        for (let seq = lo; seq <= upper; seq++) {
          if (resourceType === undefined || this.versions[seq - 1]!.resourceType === resourceType) {
            candidates.push(seq);
          }
        }
      }
    } else {
      const records =
        id !== undefined
          ? [this.resources.get(`${resourceType}/${id}`)]
          : [...this.resources.entries()]
              .filter(([key]) => resourceType === undefined || key.startsWith(`${resourceType}/`))
              .map(([, record]) => record);
      candidates = [];
      for (const record of records) {
        if (!record) continue;
        let currentAt: number | undefined;
        for (const seq of record.seqs) if (seq <= hi) currentAt = seq;
        if (currentAt !== undefined && currentAt >= lo && currentAt <= upper) candidates.push(currentAt);
      }
    }
    candidates.sort((a, b) => b - a);
    return visible ? candidates.filter((seq) => visible(this.versions[seq - 1]!)) : candidates;
  }

  private pendingAnchorsNow(limit: number): PendingAnchor[] {
    const max = Math.max(0, Math.floor(limit));
    const pending: PendingAnchor[] = [];
    const seqs = [...this.anchors.keys()].sort((a, b) => a - b);
    for (const seq of seqs) {
      if (pending.length >= max) break;
      const record = this.anchors.get(seq)!;
      if (record.status !== 'pending') continue;
      const { status: _status, ...anchor } = stateOf(record) as PendingAnchor & { status: 'pending' };
      pending.push(anchor);
    }
    return pending;
  }

  private markAnchoredNow(
    keys: VersionKey[],
    anchor: Omit<AnchorReference, 'leafIndex'> & { leafIndexes: number[] },
  ): void {
    if (keys.length !== anchor.leafIndexes.length) {
      throw new Error(`markAnchored: ${keys.length} keys but ${anchor.leafIndexes.length} leaf indexes`);
    }
    // All or none: every key is checked before the first is marked.
    const records = keys.map((key) => {
      const seq = this.seqOf(key.resourceType, key.id, key.versionId);
      const record = seq === undefined ? undefined : this.anchors.get(seq);
      if (!record) {
        throw new Error(
          `markAnchored: no anchor queued for ${key.resourceType}/${key.id}/_history/${key.versionId}`,
        );
      }
      return record;
    });
    records.forEach((record, i) => {
      const before = { status: record.status, anchor: record.anchor };
      // An erased anchor stays erased (as in the SQL adapters); its reference is still recorded.
      if (record.status !== 'erased') record.status = 'anchored';
      record.anchor = {
        transactionId: anchor.transactionId,
        blockNumber: anchor.blockNumber,
        batchId: anchor.batchId,
        leafIndex: anchor.leafIndexes[i]!,
        leafCount: anchor.leafCount,
        root: anchor.root,
      };
      this.onUndo(() => {
        record.status = before.status;
        record.anchor = before.anchor;
      });
    });
  }

  private eraseSaltsNow(resourceType: string, id: string): number {
    let erased = 0;
    for (const seq of this.resources.get(`${resourceType}/${id}`)?.seqs ?? []) {
      const record = this.anchors.get(seq);
      if (!record || record.status === 'erased') continue;
      const before = { status: record.status, salt: record.pending.salt };
      record.status = 'erased';
      record.pending.salt = '';
      this.onUndo(() => {
        record.status = before.status;
        record.pending.salt = before.salt;
      });
      erased++;
    }
    return erased;
  }

  /** GDPR erasure of content (docs/erasure.md): every version keeps its place, as a deletion without text. */
  private eraseContentNow(resourceType: string, id: string): number {
    const record = this.resources.get(`${resourceType}/${id}`);
    if (!record) return 0;
    let erased = 0;
    for (const seq of record.seqs) {
      const before = this.versions[seq - 1]!;
      if (before.json === undefined && before.patients === undefined && before.deleted) continue;
      const { json: _json, patients: _patients, ...kept } = before;
      this.versions[seq - 1] = { ...kept, deleted: true };
      this.onUndo(() => (this.versions[seq - 1] = before));
      erased++;
    }
    const index = record.index;
    record.index = [];
    this.onUndo(() => (record.index = index));
    return erased;
  }

  /** allVersions, each chunk read through `run` (the guard, or a transaction view's direct call). */
  private async *versionsWith(
    run: <T>(fn: () => T) => Promise<T>,
  ): AsyncIterable<{ version: StoredVersion; anchor?: AnchorState }> {
    // The upper bound is fixed at the start, so versions written meanwhile are not included.
    const top = await run(() => this.versions.length);
    for (let from = 0; from < top; from += CHUNK) {
      const chunk = await run(() =>
        this.versions.slice(from, Math.min(top, from + CHUNK)).map((version, i) => {
          const record = this.anchors.get(from + i + 1);
          return record
            ? { version: copyVersion(version), anchor: stateOf(record) }
            : { version: copyVersion(version) };
        }),
      );
      yield* chunk;
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Transactions.

  /** Records how to undo a change, while a transaction is open (outside one, each call is atomic on its own). */
  private onUndo(undo: () => void): void {
    if (this.activeTx !== undefined) this.undoLog.push(undo);
  }

  private undoTo(mark: number): void {
    while (this.undoLog.length > mark) this.undoLog.pop()!();
  }

  /** Run `fn` now, or, while another caller's transaction is open, after it ends. */
  private guard<T>(fn: () => T): Promise<T> {
    if (!this.mutex.locked) {
      try {
        this.assertOpen();
        return Promise.resolve(fn());
      } catch (error) {
        return Promise.reject(error);
      }
    }
    return this.mutex.run(() => {
      this.assertOpen();
      return fn();
    });
  }

  private async nestedTransaction<T>(token: symbol, work: (store: ResourceStore) => Promise<T>): Promise<T> {
    const mark = this.undoLog.length;
    try {
      return await work(this.transactionView(token));
    } catch (error) {
      if (this.activeTx === token) this.undoTo(mark);
      throw error;
    }
  }

  /** The store as seen from inside one transaction: its calls run in that transaction, never wait. */
  private transactionView(token: symbol): ResourceStore {
    const now = <T>(fn: () => T): Promise<T> => {
      if (this.activeTx !== token)
        return Promise.reject(new Error('The transaction this store view belongs to has ended'));
      try {
        this.assertOpen();
        return Promise.resolve(fn());
      } catch (error) {
        return Promise.reject(error);
      }
    };
    return {
      init: async () => {},
      close: () => Promise.reject(new Error('close() is not available inside a transaction')),
      read: (type, id) => now(() => this.readNow(type, id)),
      vread: (type, id, versionId) => now(() => this.vreadNow(type, id, versionId)),
      vreadMany: (keys) => now(() => keys.map((k) => this.vreadNow(k.resourceType, k.id, k.versionId))),
      write: (request) => now(() => this.writeNow(request)),
      history: (query) => now(() => this.historyNow(query)),
      transaction: (work) =>
        this.activeTx === token
          ? this.nestedTransaction(token, work)
          : Promise.reject(new Error('The transaction this store view belongs to has ended')),
      pendingAnchors: (limit) => now(() => this.pendingAnchorsNow(limit)),
      markAnchored: (keys, anchor) => now(() => this.markAnchoredNow(keys, anchor)),
      anchorState: (key) => now(() => this.anchorStateNow(key)),
      anchorStates: (keys) => now(() => keys.map((key) => this.anchorStateNow(key))),
      allVersions: () => this.versionsWith(now),
      eraseSalts: (type, id) => now(() => this.eraseSaltsNow(type, id)),
      eraseContent: (type, id) => now(() => this.eraseContentNow(type, id)),
      indexEntries: (type, id) => now(() => this.indexEntriesNow(type, id)),
      replaceIndex: (key, entries) => now(() => this.replaceIndexNow(key, entries)),
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('MemoryResourceStore is closed');
  }
}
