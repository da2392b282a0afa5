/**
 * Pending revocations shared by the replicas of one service (PostgreSQL, migration 9: `consent_revocation`).
 *
 * A revocation accepted by one replica is a row committed in the same database transaction as the Consent version
 * that revokes (`record`, on that transaction's store view), and its insert notifies the schema's channel
 * (`pg_notify`, delivered at commit only: a rolled-back Consent notifies nothing). Every replica LISTENs on the
 * channel and adds the row to its local denies, so it refuses the grant from its next decision after the
 * notification, before the ledger's event confirms the revocation. Each replica drops an entry when its own event
 * stream confirms it (and deletes the row). After its listening connection was lost, a replica reloads every row.
 * Pseudonyms only, as in the file outbox (./revocation-outbox.ts).
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { listenOnChannel, type ChannelLog } from '../platform/pg-channel.js';
import type { PendingRevocation } from './revocation-outbox.js';
import type { ResourceStore } from '../fhir/store/resource-store.js';

/** A store view able to run SQL in its open transaction (PostgresResourceStore.query). */
interface SqlView {
  query(text: string, values: unknown[]): Promise<unknown>;
}

/** The durable local denies in the database, and their notifications. */
export interface SharedRevocations {
  /** Adds the entries in the transaction of `store` (a PostgreSQL store or its transaction view). */
  record(store: ResourceStore, entries: readonly PendingRevocation[]): Promise<void>;
  /** Every entry stored now. */
  all(): Promise<PendingRevocation[]>;
  /** Removes entries the ledger now holds. */
  remove(entries: readonly PendingRevocation[]): Promise<void>;
  /**
   * Calls `added` with each entry another replica commits (and `reload` after the listening connection was lost
   * and re-opened: entries may have been missed). Returns the stop function.
   */
  listen(added: (entry: PendingRevocation) => void, reload: () => void): Promise<() => Promise<void>>;
}

/** The row key of an entry: its grant key (no NUL bytes, which PostgreSQL text cannot hold). */
const rowKey = (entry: PendingRevocation) => JSON.stringify([entry.patient, entry.grantee, entry.consent]);

export class PostgresSharedRevocations implements SharedRevocations {
  private readonly S: string;
  /** The schema's notification channel. */
  readonly channel: string;

  constructor(
    private readonly pool: pg.Pool,
    schema: string,
    private readonly log: ChannelLog = { warn: () => {} },
  ) {
    this.S = `"${schema.replace(/"/g, '""')}"`;
    this.channel = `hie_revocation_${createHash('sha256').update(schema).digest('hex').slice(0, 16)}`;
  }

  async record(store: ResourceStore, entries: readonly PendingRevocation[]): Promise<void> {
    if (entries.length === 0) return;
    const view = store as Partial<SqlView>;
    if (typeof view.query !== 'function')
      throw new Error('shared revocations are recorded through a PostgreSQL store only');
    await view.query(
      `WITH e AS (SELECT * FROM unnest($1::text[], $2::text[]) AS e (key, entry)),
         i AS (INSERT INTO ${this.S}.consent_revocation (key, entry) SELECT key, entry FROM e
               ON CONFLICT (key) DO UPDATE SET entry = EXCLUDED.entry)
       SELECT pg_notify($3, key) FROM e`,
      [entries.map(rowKey), entries.map((entry) => JSON.stringify(entry)), this.channel],
    );
  }

  async all(): Promise<PendingRevocation[]> {
    const { rows } = await this.pool.query<{ entry: string }>(
      `SELECT entry FROM ${this.S}.consent_revocation ORDER BY key`,
    );
    return rows.map((row) => JSON.parse(row.entry) as PendingRevocation);
  }

  async remove(entries: readonly PendingRevocation[]): Promise<void> {
    if (entries.length === 0) return;
    await this.pool.query(`DELETE FROM ${this.S}.consent_revocation WHERE key = ANY($1::text[])`, [
      entries.map(rowKey),
    ]);
  }

  async listen(added: (entry: PendingRevocation) => void, reload: () => void): Promise<() => Promise<void>> {
    // Set at stop: an entry whose row is still being read then is not handed on.
    let stopped = false;
    const stop = await listenOnChannel(this.pool, this.channel, {
      payload: async (key) => {
        const { rows } = await this.pool.query<{ entry: string }>(
          `SELECT entry FROM ${this.S}.consent_revocation WHERE key = $1`,
          [key],
        );
        if (rows[0] && !stopped) added(JSON.parse(rows[0].entry) as PendingRevocation);
      },
      reload: async () => reload(),
      log: this.log,
      what: 'shared revocations',
    });
    return async () => {
      stopped = true;
      await stop();
    };
  }
}
