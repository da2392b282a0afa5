/**
 * The integrity path's write side (docs/integrity.md).
 *
 * 1. `anchorFor(version)` runs inside the store's write transaction (WriteRequest.anchor): it computes the
 *    version's salted leaf hash and pseudonymous ledger key, and the store queues that PendingAnchor atomically
 *    with the version. A crash after the write loses nothing: the anchor is in the outbox.
 * 2. A background worker drains the outbox in Merkle batches (`batchSize`, or whatever is pending after
 *    `intervalMs`), submits `anchor:AnchorBatch(root, leafCount)`, then marks the versions anchored.
 *
 * The ledger being slow or down never blocks or corrupts writes: the worker retries with backoff and the anchors
 * stay pending (see `status()`). A batch is journalled before it is submitted and finished on restart, and an
 * on-chain batch with the same root counts as committed, so nothing is ever anchored twice.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type {
  PendingAnchor,
  ResourceStore,
  StoredVersion,
  VersionKey,
} from '../fhir/store/resource-store.js';
import { CURRENT_LEAF_VERSION, leafHashOfVersion, newSalt, type LedgerKeyring } from './hashing.js';
import { MerkleTree, leafTagsOf } from './merkle.js';
import type { BatchMember, JournalBatch, BatchJournal } from './anchor-journal.js';
import { AnchorContractClient } from './anchor-contract-client.js';
import type { Ledger } from '../ledger/ledger.js';
import { DoublingBackoff } from '../platform/backoff.js';

export interface AnchoringOptions {
  /** Most leaves per ledger transaction. */
  batchSize: number;
  /** Longest wait before a partial batch goes out. */
  intervalMs: number;
  /** First retry delay after a ledger failure; doubles up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /**
   * Put each leaf's tag on the ledger with the root (`anchor:AnchorBatchTagged`), so the audit can name an altered
   * version of a batch whose journal was rewritten too (default true). False for a Fabric network whose chaincode
   * predates that transaction: batches then go out as `anchor:AnchorBatch` (root and count only).
   */
  leafTags?: boolean;
  /**
   * Most batches in flight at once (default 4). Each batch writes only its own key range on the ledger
   * (`batch/<root>`), so concurrent batches never conflict (no MVCC_READ_CONFLICT) and Fabric orders them into the
   * same blocks: throughput grows with this while one transaction waits for its block.
   */
  maxInFlight?: number;
}

/** The chaincode's limit for AnchorBatchTagged (chaincode/src/anchor-contract.ts); larger batches go untagged. */
const MAX_TAGGED_BATCH_LEAVES = 65_536;

export const DEFAULT_ANCHORING: Required<AnchoringOptions> = {
  batchSize: 1000,
  intervalMs: 1000,
  minBackoffMs: 200,
  maxBackoffMs: 30_000,
  leafTags: true,
  maxInFlight: 4,
};

interface Logger {
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
}

const silent: Logger = { info() {}, warn() {}, error() {} };

/** The worker's waits; tests pass their own to check delays without waiting. */
export interface AnchorTimer {
  /** Resolves after `ms`, or early once `signal` aborts (the worker was woken). */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

const realTimer: AnchorTimer = {
  sleep: (ms, signal) => delay(ms, undefined, { signal }).catch(() => undefined),
};

export interface AnchoringStatus {
  running: boolean;
  /** Batches prepared but not yet known committed (ledger down or slow). */
  preparedBatches: number;
  committedBatches: number;
  /** Versions anchored by this process since start. */
  anchoredSinceStart: number;
  consecutiveFailures: number;
  lastError?: string;
  lastErrorAt?: string;
  lastBatch?: { root: string; leafCount: number; transactionId: string; blockNumber: number; at: string };
}

/**
 * Computes the PendingAnchor of a stored version (pure; the salt is fresh randomness), in the current leaf format
 * (v2: the canonical text and the custodian).
 */
export function pendingAnchorOf(
  keyring: LedgerKeyring,
  version: Pick<
    StoredVersion,
    'resourceType' | 'id' | 'versionId' | 'lastUpdated' | 'deleted' | 'json' | 'custodian'
  >,
  keyEpoch = 0,
): PendingAnchor {
  const salt = newSalt();
  return {
    resourceType: version.resourceType,
    id: version.id,
    versionId: version.versionId,
    salt,
    leafHash: leafHashOfVersion(salt, version, CURRENT_LEAF_VERSION),
    ledgerKey: keyring.ledgerKey(version.resourceType, version.id, version.versionId, keyEpoch),
    leafVersion: CURRENT_LEAF_VERSION,
  };
}

/** A ledger call the worker stopped waiting for (Anchorer.stop). */
export class AnchoringStopped extends Error {
  constructor() {
    super('anchoring stopped while waiting for the ledger');
    this.name = 'AnchoringStopped';
  }
}

export class Anchorer {
  private readonly options: Required<AnchoringOptions>;
  private readonly contract: AnchorContractClient;
  private readonly log: Logger;
  private running = false;
  private loop?: Promise<void>;
  private wake?: () => void;
  private queuedSinceDrain = 0;
  /** The last round left at least a full batch in the outbox (its read was capped) or finished journalled ones. */
  private fullBatchWaiting = false;
  private draining?: Promise<number>;
  private readonly backoff: DoublingBackoff;
  private stopWatchingLedger?: () => void;
  /** Aborted by stop(): the worker stops waiting for the ledger (ledgerCall). */
  private stopping = new AbortController();
  private readonly stats: Omit<AnchoringStatus, 'running' | 'preparedBatches' | 'committedBatches'> = {
    anchoredSinceStart: 0,
    consecutiveFailures: 0,
  };

  constructor(
    private readonly store: ResourceStore,
    private readonly ledger: Ledger,
    private readonly keyring: LedgerKeyring,
    private readonly journal: BatchJournal,
    options: Partial<AnchoringOptions> = {},
    log: Logger = silent,
    private readonly timer: AnchorTimer = realTimer,
  ) {
    this.options = { ...DEFAULT_ANCHORING, ...options };
    this.backoff = new DoublingBackoff(this.options.minBackoffMs, this.options.maxBackoffMs);
    if (!Number.isInteger(this.options.batchSize) || this.options.batchSize < 1) {
      throw new RangeError('anchor batch size must be a positive integer');
    }
    if (!Number.isInteger(this.options.maxInFlight) || this.options.maxInFlight < 1) {
      throw new RangeError('anchor batches in flight must be a positive integer');
    }
    this.contract = new AnchorContractClient(ledger);
    this.log = log;
  }

  /**
   * The write-path hook: pass as `WriteRequest.anchor` (bound). Runs inside the store transaction, so it must
   * not fail for any storable version; it only hashes.
   */
  readonly anchorFor = (version: StoredVersion & { json?: string }, keyEpoch?: number): PendingAnchor => {
    const anchor = pendingAnchorOf(this.keyring, version, keyEpoch);
    // A full batch is waiting: wake the worker (after the write's transaction has committed).
    if (++this.queuedSinceDrain >= this.options.batchSize && this.wake) setImmediate(this.wake);
    return anchor;
  };

  /** Starts the background worker; the outbox left by a previous run drains first. */
  start(): void {
    if (this.running) return;
    this.running = true;
    // The ledger is back: a backoff grown while it was away must not keep the outbox waiting.
    this.stopWatchingLedger = this.ledger.onReachable?.(() => this.ledgerReachable());
    this.loop = this.run();
  }

  private ledgerReachable(): void {
    if (this.stats.consecutiveFailures === 0) return;
    this.log.info(
      { failures: this.stats.consecutiveFailures },
      'ledger reachable again; retrying anchoring now',
    );
    this.backoff.reset();
    this.wake?.();
  }

  /**
   * Stops the worker without waiting for the ledger: a round's store and journal work finishes, a ledger call in
   * flight is left behind (a slow or unreachable network held shutdown up to its own timeouts). Nothing is lost:
   * each batch was journalled before it was submitted, so the next start finishes it (recognised on the ledger if
   * the abandoned call committed it), and anchors not yet in a batch stay in the outbox.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.stopWatchingLedger?.();
    this.stopWatchingLedger = undefined;
    this.wake?.();
    this.stopping.abort();
    await this.loop;
    this.loop = undefined;
    this.stopping = new AbortController();
  }

  /** A ledger call the worker stops waiting for once stop() is called (it rejects with AnchoringStopped). */
  private ledgerCall<T>(call: () => Promise<T>): Promise<T> {
    const { signal } = this.stopping;
    if (signal.aborted) return Promise.reject(new AnchoringStopped());
    return new Promise<T>((resolve, reject) => {
      const abandon = () => reject(new AnchoringStopped());
      signal.addEventListener('abort', abandon, { once: true });
      call().then(
        (value) => {
          signal.removeEventListener('abort', abandon);
          resolve(value);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', abandon);
          reject(err);
        },
      );
    });
  }

  status(): AnchoringStatus {
    const counts = this.journal.batchCount();
    return {
      running: this.running,
      preparedBatches: counts.prepared,
      committedBatches: counts.committed,
      ...this.stats,
    };
  }

  /**
   * How many versions wait in the outbox (counted up to `cap`: a backlog larger than that reads as `cap`).
   * With status(), what an operator watches while the ledger is slow or down.
   */
  async pendingCount(cap = 100_000): Promise<number> {
    return (await this.journal.withoutCommitted(await this.store.pendingAnchors(cap))).length;
  }

  /** Anchors everything pending now (round after round, `maxInFlight` batches at a time); returns how many. */
  async drain(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.drainRound();
      total += n;
      if (n === 0) return total;
    }
  }

  /**
   * Anchors at most one batch: first a batch journalled earlier and not yet known committed, else a new one from
   * the outbox. Returns the number of versions marked anchored (0 when nothing was pending). Throws ledger errors.
   * Calls are serialised.
   */
  async drainOnce(): Promise<number> {
    while (this.draining) await this.draining.catch(() => undefined);
    const work = this.anchorOneBatch();
    this.draining = work;
    try {
      return await work;
    } finally {
      this.draining = undefined;
    }
  }

  /**
   * Anchors up to `maxInFlight` batches at once, as the worker does: the batches journalled earlier and not yet
   * known committed, else new ones cut from the outbox backlog (as many full batches as it fills; a partial batch
   * only when not even one fills, so `drain()` sends a tail in its next round), with disjoint members. Every batch is journalled before it is submitted and finished exactly
   * as by drainOnce, so a lost answer is recognised on the ledger and nothing is anchored twice. Returns the number
   * of versions anchored; once every batch of the round has settled, throws the first failure (the failed batches
   * stay journalled and are finished first next time). Serialised with drainOnce.
   */
  async drainRound(): Promise<number> {
    while (this.draining) await this.draining.catch(() => undefined);
    const work = this.anchorRound();
    this.draining = work;
    try {
      return await work;
    } finally {
      this.draining = undefined;
    }
  }

  private async anchorRound(): Promise<number> {
    // Another replica drains (PostgreSQL: the drain lease, src/integrity/postgres-anchor-journal.ts).
    if (!(await this.journal.acquireDrain())) return 0;
    const slots = this.options.maxInFlight;
    const round: { batch: JournalBatch; members: BatchMember[] }[] = [];
    for (const batch of (await this.journal.prepared()).slice(0, slots)) {
      round.push({ batch, members: await this.journal.members(batch.root) });
    }
    // Journalled batches finished: the outbox may hold full batches, go on at once.
    this.fullBatchWaiting = round.length > 0;
    if (round.length === 0) {
      this.queuedSinceDrain = 0;
      const size = this.options.batchSize;
      const backlog = await this.nextPending(slots * size);
      if (backlog.length === 0) return 0;
      // Full batches only, while there is one: the rest (the newest versions) leads the next batch instead of going
      // out as a small one of its own. Under sustained writes a round otherwise sent a full batch plus a tail, and
      // the next round at once another tail, each with a batch's fixed cost (journal fsyncs, a ledger transaction,
      // a block). The tail waits for the next full batch or `intervalMs`, whichever comes first.
      const cut = backlog.length >= size ? backlog.length - (backlog.length % size) : backlog.length;
      // A capped read may have left more full batches in the outbox.
      this.fullBatchWaiting = backlog.length === slots * size;
      const heightBefore = await this.ledgerCall(() => this.ledger.height());
      for (let start = 0; start < cut; start += size) {
        const members = await this.prepareBatch(
          backlog.slice(start, Math.min(cut, start + size)),
          heightBefore,
        );
        round.push({ batch: (await this.journal.batch(members.root))!, members: members.members });
      }
    }
    const settled = await Promise.allSettled(round.map(({ batch, members }) => this.finish(batch, members)));
    const failed = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.reduce((total, result) => total + (result.status === 'fulfilled' ? result.value : 0), 0);
  }

  /** Journals a new batch of these pending versions (before anything is submitted). */
  private async prepareBatch(
    pending: PendingAnchor[],
    heightBefore: number,
  ): Promise<{ root: string; members: BatchMember[] }> {
    const tree = new MerkleTree(pending.map((p) => p.leafHash));
    const members: BatchMember[] = pending.map((p, leafIndex) => ({
      resourceType: p.resourceType,
      id: p.id,
      versionId: p.versionId,
      leafIndex,
      leafHash: p.leafHash,
      ledgerKey: p.ledgerKey,
      leafVersion: p.leafVersion ?? 1,
    }));
    await this.journal.prepare(tree.root, heightBefore, members);
    return { root: tree.root, members };
  }

  private async anchorOneBatch(): Promise<number> {
    if (!(await this.journal.acquireDrain())) return 0;
    const unfinished = (await this.journal.prepared())[0];
    if (unfinished) return this.finish(unfinished, await this.journal.members(unfinished.root));

    this.queuedSinceDrain = 0;
    const pending = await this.nextPending(this.options.batchSize);
    if (pending.length === 0) return 0;
    const { root, members } = await this.prepareBatch(
      pending,
      await this.ledgerCall(() => this.ledger.height()),
    );
    return this.finish((await this.journal.batch(root))!, members);
  }

  /**
   * The next batch from the outbox, without versions already in a committed batch: a version that vanished from
   * the store after its batch committed keeps its outbox row (the store cannot mark it), and must not be anchored
   * again and again. Such rows are rare (tampering), so the outbox is normally read once.
   */
  private async nextPending(size: number): Promise<PendingAnchor[]> {
    for (let limit = size; ; limit *= 2) {
      const fetched = await this.store.pendingAnchors(limit);
      const fresh = await this.journal.withoutCommitted(fetched);
      if (fresh.length >= size || fetched.length < limit) return fresh.slice(0, size);
    }
  }

  private async finish(batch: JournalBatch, members: BatchMember[]): Promise<number> {
    const { root } = batch;
    let committed = await this.findOnChain(batch);
    if (!committed) {
      // Fencing: a drainer that lost the drain lease meanwhile submits nothing; its successor finishes the batch.
      await this.journal.assertDrainer();
      try {
        // Tagged: the ledger also keeps each leaf's tag, so the audit can name an altered leaf (docs/integrity.md).
        const result = await this.ledgerCall(() =>
          this.contract.anchorBatch(
            root,
            members.length,
            this.options.leafTags && members.length <= MAX_TAGGED_BATCH_LEAVES
              ? leafTagsOf(members.map((m) => m.leafHash))
              : undefined,
          ),
        );
        committed = { transactionId: result.transactionId, blockNumber: result.blockNumber };
      } catch (err) {
        if (err instanceof AnchoringStopped) throw err;
        // A reply lost after the commit, or a concurrent worker: the root may be on the ledger after all.
        committed = await this.findOnChain(batch);
        if (!committed) throw err;
      }
    }
    const keys: VersionKey[] = members.map(({ resourceType, id, versionId }) => ({
      resourceType,
      id,
      versionId,
    }));
    const reference = {
      transactionId: committed.transactionId,
      blockNumber: committed.blockNumber,
      batchId: root,
      root,
      leafCount: members.length,
    };
    try {
      await this.store.markAnchored(keys, { ...reference, leafIndexes: members.map((m) => m.leafIndex) });
    } catch (err) {
      // A member whose version vanished from the store (removed behind the service's back) must not stall the
      // outbox forever: mark the others; the audit names the vanished one as missing from its batch.
      const present: BatchMember[] = [];
      for (const member of members) if (await this.store.anchorState(member)) present.push(member);
      if (present.length === members.length) throw err;
      this.log.error(
        {
          root,
          // A count, not the ids (ids can be record numbers); `hie-ledger verify` names them.
          missing: members.length - present.length,
        },
        'anchored versions are no longer in the store (hie-ledger verify names them)',
      );
      await this.store.markAnchored(
        present.map(({ resourceType, id, versionId }) => ({ resourceType, id, versionId })),
        { ...reference, leafIndexes: present.map((m) => m.leafIndex) },
      );
    }
    await this.journal.commit(root, committed.transactionId, committed.blockNumber);
    this.stats.anchoredSinceStart += members.length;
    this.stats.lastBatch = { root, leafCount: members.length, ...committed, at: new Date().toISOString() };
    return members.length;
  }

  private async findOnChain(
    batch: JournalBatch,
  ): Promise<{ transactionId: string; blockNumber: number } | undefined> {
    const onChain = await this.ledgerCall(() => this.contract.readBatch(batch.root));
    if (!onChain) return undefined;
    if (onChain.leafCount !== batch.leafCount) {
      throw new Error(
        `batch ${batch.root} is on the ledger with ${onChain.leafCount} leaves, not ${batch.leafCount}`,
      );
    }
    const blockNumber =
      (await this.ledgerCall(() => this.contract.findBlockOf(onChain.txId, batch.heightBefore))) ?? -1;
    this.log.info(
      { root: batch.root, transactionId: onChain.txId, blockNumber },
      'anchor batch already on the ledger',
    );
    return { transactionId: onChain.txId, blockNumber };
  }

  private async run(): Promise<void> {
    const backoff = this.backoff;
    while (this.running) {
      let delay: number;
      try {
        const n = await this.drainRound();
        if (this.stats.consecutiveFailures > 0)
          this.log.info({ anchored: n }, 'ledger reachable again; anchoring resumed');
        this.stats.consecutiveFailures = 0;
        backoff.reset();
        // A full batch is still waiting: right away. Otherwise let the next batch fill up (anchorFor wakes the
        // worker once it has) or the interval pass.
        delay =
          (n > 0 && this.fullBatchWaiting) || this.queuedSinceDrain >= this.options.batchSize
            ? 0
            : this.options.intervalMs;
      } catch (err) {
        // Stopped while waiting for the ledger: not a failure, the next start finishes the batch.
        if (err instanceof AnchoringStopped || !this.running) break;
        this.stats.consecutiveFailures++;
        this.stats.lastError = err instanceof Error ? err.message : String(err);
        this.stats.lastErrorAt = new Date().toISOString();
        this.log.warn(
          {
            err: this.stats.lastError,
            retryInMs: backoff.currentMs,
            failures: this.stats.consecutiveFailures,
          },
          'anchoring failed; anchors stay pending',
        );
        delay = backoff.next();
      }
      if (delay > 0 && this.running) await this.sleep(delay);
    }
  }

  /** Waits `ms`, or less when woken (a full batch queued, the ledger back, stop()). */
  private async sleep(ms: number): Promise<void> {
    const woken = new AbortController();
    const wake = () => woken.abort();
    this.wake = wake;
    try {
      await this.timer.sleep(ms, woken.signal);
    } finally {
      if (this.wake === wake) this.wake = undefined;
    }
  }
}
