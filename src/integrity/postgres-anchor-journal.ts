/**
 * The anchor batch journal in PostgreSQL (the tables of migration 5, src/fhir/store/postgres/schema.ts), shared by
 * every replica of a PostgreSQL store, with the drain lease that lets exactly one replica drain the outbox at a time.
 *
 * The lease: a session advisory lock held on a connection of its own (`pg_try_advisory_lock`), taken by whichever
 * replica asks first; PostgreSQL frees it when that connection ends (the process stopped, was killed, or lost the
 * database). Each new holder increments `anchor_drainer.fence`: its fencing token. Every batch is journalled
 * with the token of the holder that prepared it, in a transaction on the lease's connection that first checks the
 * token (row-locked), and right before a batch is submitted to the ledger the holder checks the token again on
 * that connection: a drainer that lost the lease (its connection gone, or the token moved on) journals and submits
 * nothing. The new holder finishes the batches still `prepared` first (Anchorer.drainRound), exactly as
 * journalled. What remains is the window between that last check and the ledger receiving the batch: there the
 * ledger's write-once batch key (`batch/<root>`) stops a second submission of the same batch, and a version can be
 * in only one batch (unique index), so nothing is ever anchored twice (docs/store.md, "Several replicas").
 */
import os from 'node:os';
import pg from 'pg';
import { AsyncMutex } from '../fhir/store/async-mutex.js';
import type { VersionKey } from '../fhir/store/resource-store.js';
import {
  DrainLeaseLostError,
  toBatch,
  toMember,
  type BatchJournal,
  type BatchMember,
  type BatchRow,
  type JournalBatch,
  type MemberRow,
} from './anchor-journal.js';

/** Namespace of the drain lease's advisory lock ("HIEA"); the second key is the store's per-schema key. */
const DRAIN_LOCK_CLASS = 0x48494541;

export interface PostgresJournalOptions {
  /** The store's pool (reads, commits). */
  pool: pg.Pool;
  /** The store's schema (migration 5 created the tables there). */
  schema: string;
  /** The store's per-schema advisory lock key (PostgresResourceStore.lockKey). */
  lockKey: number;
  /** Who holds the lease, for operators (`anchor_drainer.holder`); default host:pid. */
  holder?: string;
}

/** The drain lease this process holds: its own connection (holding the advisory lock) and its fencing token. */
interface Lease {
  client: pg.Client;
  fence: number;
  lost?: string;
}

export class PostgresAnchorJournal implements BatchJournal {
  private readonly pool: pg.Pool;
  private readonly S: string;
  private readonly lockKey: number;
  private readonly holder: string;
  private lease?: Lease;
  /** The connection that asks for the lease while another replica holds it: kept between rounds, not reopened. */
  private standby?: Lease;
  /** The lease's connection runs one statement or transaction at a time. */
  private readonly leaseMutex = new AsyncMutex();
  private counts = { prepared: 0, committed: 0 };
  private closed = false;

  constructor(options: PostgresJournalOptions) {
    this.pool = options.pool;
    this.S = `"${options.schema.replace(/"/g, '""')}"`;
    this.lockKey = options.lockKey;
    this.holder = options.holder ?? `${os.hostname()}:${process.pid}`;
  }

  /** The fencing token of the lease this process holds, if any (tests, status). */
  get fence(): number | undefined {
    return this.lease && !this.lease.lost ? this.lease.fence : undefined;
  }

  async acquireDrain(): Promise<boolean> {
    if (this.closed) return false;
    await this.refreshCounts();
    return this.leaseMutex.run(async () => {
      if (this.lease) {
        try {
          await this.checkLease(this.lease);
          return true;
        } catch {
          this.dropLease();
        }
      }
      return this.takeLease();
    });
  }

  async assertDrainer(): Promise<void> {
    await this.leaseMutex.run(async () => {
      if (!this.lease) throw new DrainLeaseLostError('it holds none');
      try {
        await this.checkLease(this.lease);
      } catch (err) {
        this.dropLease();
        throw err;
      }
    });
  }

  async prepare(root: string, heightBefore: number, members: BatchMember[]): Promise<void> {
    await this.leaseMutex.run(async () => {
      const lease = this.lease;
      if (!lease) throw new DrainLeaseLostError('it holds none');
      const client = lease.client;
      try {
        await client.query('BEGIN');
        await this.checkLease(lease, ' FOR UPDATE');
        await client.query(
          `INSERT INTO ${this.S}.anchor_batch (root, leaf_count, state, height_before, fence, prepared_at)
           VALUES ($1, $2, 'prepared', $3, $4, $5) ON CONFLICT (root) DO NOTHING`,
          [root, members.length, heightBefore, lease.fence, new Date().toISOString()],
        );
        await client.query(
          `INSERT INTO ${this.S}.anchor_batch_member
             (root, leaf_index, resource_type, id, version_id, leaf_hash, ledger_key, leaf_version)
           SELECT $1, * FROM unnest($2::integer[], $3::text[], $4::text[], $5::integer[], $6::text[], $7::text[], $8::integer[])
           ON CONFLICT (root, leaf_index) DO NOTHING`,
          [
            root,
            members.map((m) => m.leafIndex),
            members.map((m) => m.resourceType),
            members.map((m) => m.id),
            members.map((m) => m.versionId),
            members.map((m) => m.leafHash),
            members.map((m) => m.ledgerKey),
            members.map((m) => m.leafVersion),
          ],
        );
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => this.dropLease());
        if (err instanceof DrainLeaseLostError) this.dropLease();
        throw err;
      }
    });
  }

  async commit(root: string, transactionId: string, blockNumber: number): Promise<void> {
    await this.pool.query(
      `UPDATE ${this.S}.anchor_batch SET state = 'committed', transaction_id = $1, block_number = $2, committed_at = $3
       WHERE root = $4`,
      [transactionId, blockNumber, new Date().toISOString(), root],
    );
  }

  async prepared(): Promise<JournalBatch[]> {
    const { rows } = await this.pool.query<BatchRow>(
      `SELECT * FROM ${this.S}.anchor_batch WHERE state = 'prepared' ORDER BY ord`,
    );
    return rows.map(toBatch);
  }

  async batch(root: string): Promise<JournalBatch | undefined> {
    const { rows } = await this.pool.query<BatchRow>(`SELECT * FROM ${this.S}.anchor_batch WHERE root = $1`, [
      root,
    ]);
    return rows[0] && toBatch(rows[0]);
  }

  async *batches(): AsyncIterable<JournalBatch> {
    // Keyset pages in preparation order: bounded memory however long the journal.
    for (let after = 0; ;) {
      const { rows } = await this.pool.query<BatchRow & { ord: number }>(
        `SELECT * FROM ${this.S}.anchor_batch WHERE ord > $1 ORDER BY ord LIMIT 1000`,
        [after],
      );
      for (const row of rows) yield toBatch(row);
      if (rows.length < 1000) return;
      after = Number(rows[rows.length - 1]!.ord);
    }
  }

  batchCount(): { prepared: number; committed: number } {
    return { ...this.counts };
  }

  async lastCommitted(): Promise<JournalBatch | undefined> {
    const { rows } = await this.pool.query<BatchRow>(
      `SELECT * FROM ${this.S}.anchor_batch WHERE state = 'committed' AND transaction_id IS NOT NULL
       ORDER BY block_number DESC, ord DESC LIMIT 1`,
    );
    return rows[0] && toBatch(rows[0]);
  }

  async members(root: string): Promise<BatchMember[]> {
    const { rows } = await this.pool.query<MemberRow>(
      `SELECT * FROM ${this.S}.anchor_batch_member WHERE root = $1 ORDER BY leaf_index`,
      [root],
    );
    return rows.map(toMember);
  }

  async withoutCommitted<K extends VersionKey>(keys: K[]): Promise<K[]> {
    if (keys.length === 0) return keys;
    const { rows } = await this.pool.query<{ ord: number }>(
      `SELECT k.ord FROM unnest($1::text[], $2::text[], $3::integer[]) WITH ORDINALITY AS k (resource_type, id, version_id, ord)
       JOIN ${this.S}.anchor_batch_member m
         ON m.resource_type = k.resource_type AND m.id = k.id AND m.version_id = k.version_id
       JOIN ${this.S}.anchor_batch b ON b.root = m.root AND b.state = 'committed'`,
      [keys.map((k) => k.resourceType), keys.map((k) => k.id), keys.map((k) => k.versionId)],
    );
    if (rows.length === 0) return keys;
    const committed = new Set(rows.map((row) => Number(row.ord) - 1));
    return keys.filter((_, i) => !committed.has(i));
  }

  async memberOf(key: VersionKey): Promise<(BatchMember & { root: string }) | undefined> {
    const { rows } = await this.pool.query<MemberRow & { root: string }>(
      `SELECT * FROM ${this.S}.anchor_batch_member WHERE resource_type = $1 AND id = $2 AND version_id = $3`,
      [key.resourceType, key.id, key.versionId],
    );
    return rows[0] && { ...toMember(rows[0]), root: rows[0].root };
  }

  /** Gives the lease up (its connection ends, so PostgreSQL frees the lock). The pool is the store's. */
  async close(): Promise<void> {
    this.closed = true;
    await this.leaseMutex.run(async () => {
      for (const held of [this.lease, this.standby]) await held?.client.end().catch(() => undefined);
      this.lease = undefined;
      this.standby = undefined;
    });
  }

  // ---------------------------------------------------------------------------------------------------------

  /** Takes the lease if no other process holds it: a connection of its own, the lock, then the next token. */
  private async takeLease(): Promise<boolean> {
    let lease = this.standby;
    this.standby = undefined;
    if (lease?.lost) {
      await lease.client.end().catch(() => undefined);
      lease = undefined;
    }
    if (!lease) {
      const client = new pg.Client(this.pool.options);
      const opened: Lease = { client, fence: 0 };
      // A connection that breaks later (database restart, terminated backend) loses the lease.
      client.on('error', (err: Error) => (opened.lost = err.message));
      try {
        await client.connect();
      } catch (err) {
        await client.end().catch(() => undefined);
        throw err;
      }
      lease = opened;
    }
    const { client } = lease;
    try {
      const { rows } = await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS got', [
        DRAIN_LOCK_CLASS,
        this.lockKey,
      ]);
      if (!rows[0]!.got) {
        this.standby = lease;
        return false;
      }
      const taken = await client.query<{ fence: string | number }>(
        `UPDATE ${this.S}.anchor_drainer SET fence = fence + 1, holder = $1, since = $2 RETURNING fence`,
        [this.holder, new Date().toISOString()],
      );
      lease.fence = Number(taken.rows[0]!.fence);
      this.lease = lease;
      return true;
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Throws DrainLeaseLostError unless the lease's connection answers and the token is still this holder's (a
   * statement on that connection proves its session, and so the advisory lock, is alive).
   */
  private async checkLease(lease: Lease, lock = ''): Promise<void> {
    if (lease.lost) throw new DrainLeaseLostError(lease.lost);
    let fence: number;
    try {
      const { rows } = await lease.client.query<{ fence: string | number }>(
        `SELECT fence FROM ${this.S}.anchor_drainer${lock}`,
      );
      fence = Number(rows[0]!.fence);
    } catch (err) {
      throw new DrainLeaseLostError(err instanceof Error ? err.message : String(err));
    }
    if (fence !== lease.fence) {
      throw new DrainLeaseLostError(`fencing token ${lease.fence}, the journal's is ${fence}`);
    }
  }

  private dropLease(): void {
    const lease = this.lease;
    this.lease = undefined;
    // Ending the connection frees the advisory lock if the session is somehow still alive.
    void lease?.client.end().catch(() => undefined);
  }

  private async refreshCounts(): Promise<void> {
    const { rows } = await this.pool.query<{ state: string; n: string | number }>(
      `SELECT state, count(*) AS n FROM ${this.S}.anchor_batch GROUP BY state`,
    );
    this.counts = {
      prepared: Number(rows.find((r) => r.state === 'prepared')?.n ?? 0),
      committed: Number(rows.find((r) => r.state === 'committed')?.n ?? 0),
    };
  }
}
