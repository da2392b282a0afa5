/**
 * Backup and restore of a PostgreSQL store (docs/replicas.md, "Backup and restore"): after the database is restored
 * to an earlier point and `hie-ledger migrate --restored` has run, a version number written again never gets a
 * ledger key that was anchored after the backup. The backup and the restore are database copies
 * (CREATE DATABASE … TEMPLATE), as a restore from pg_dump or a snapshot leaves the database.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { runMigrate } from '../../src/commands/migrate.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import type { PendingAnchor, WriteRequest } from '../../src/fhir/store/resource-store.js';
import { pendingAnchorOf } from '../../src/integrity/anchorer.js';
import { LedgerKeyring } from '../../src/integrity/hashing.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';

const skip = postgresSkipReason('PostgreSQL backup and restore');

/** The URL of database `name` on the test server. */
function databaseUrl(name: string): string {
  const url = new URL(POSTGRES_URL!);
  url.pathname = `/${name}`;
  return url.toString();
}

/** The ledger key queued with version 2 of Patient/p. */
async function ledgerKeyOf(store: PostgresResourceStore): Promise<string> {
  const state = await store.anchorState({ resourceType: 'Patient', id: 'p', versionId: 2 });
  return (state as PendingAnchor).ledgerKey;
}

/** Drops a database once the connections of the closed stores have left it (their server side ends just after). */
async function dropWhenIdle(admin: pg.Client, name: string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const { rows } = await admin.query<{ n: number }>(
      'SELECT count(*)::integer AS n FROM pg_stat_activity WHERE datname = $1',
      [name],
    );
    if (rows[0]!.n === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await admin.query(`DROP DATABASE IF EXISTS ${name}`);
}

describe.skipIf(skip !== undefined)('PostgreSQL store: backup and restore', () => {
  it('after a restore to an earlier point and migrate --restored, a reused version number gets a new ledger key', async () => {
    const tag = randomBytes(4).toString('hex');
    const live = `hie_restore_live_${tag}`;
    const backup = `hie_restore_backup_${tag}`;
    const restored = `hie_restore_again_${tag}`;
    const admin = new pg.Client({ connectionString: POSTGRES_URL });
    await admin.connect();
    const keyring = new LedgerKeyring(Buffer.alloc(32, 7));
    const anchored = new Map<string, string>();
    const anchor = (version: Parameters<NonNullable<WriteRequest['anchor']>>[0], keyEpoch?: number) => {
      const pending: PendingAnchor = pendingAnchorOf(keyring, version, keyEpoch);
      anchored.set(pending.ledgerKey, `${version.id}/${version.versionId}`);
      return pending;
    };
    const write = (store: PostgresResourceStore, family: string) =>
      store.write({
        resourceType: 'Patient',
        id: 'p',
        method: 'PUT',
        resource: { resourceType: 'Patient', id: 'p', name: [{ family }] },
        anchor,
      });
    try {
      await admin.query(`CREATE DATABASE ${live}`);
      let store = new PostgresResourceStore({ connectionString: databaseUrl(live), maxConnections: 2 });
      await store.init();
      expect((await write(store, 'before-backup')).versionId).toBe(1);
      await store.close();
      await admin.query(`CREATE DATABASE ${backup} TEMPLATE ${live}`);

      // After the backup: version 2, whose anchor reaches the ledger.
      store = new PostgresResourceStore({ connectionString: databaseUrl(live), maxConnections: 2 });
      await store.init();
      const lost = await write(store, 'after-backup');
      const lostKey = await ledgerKeyOf(store);
      await store.close();

      // The database is lost and restored from the backup: version 2 is gone from it, not from the ledger.
      await admin.query(`CREATE DATABASE ${restored} TEMPLATE ${backup}`);
      const out: string[] = [];
      const code = await runMigrate({
        databaseUrl: databaseUrl(restored),
        restored: true,
        out: { write: (text: string) => out.push(text) } as unknown as NodeJS.WritableStream,
      });
      expect(code).toBe(0);
      expect(out.join('')).toMatch(/epoch 1/);
      store = new PostgresResourceStore({ connectionString: databaseUrl(restored), maxConnections: 2 });
      await store.init();
      expect((await store.read('Patient', 'p'))?.versionId).toBe(1);
      const again = await write(store, 'after-restore');
      expect(again.versionId).toBe(lost.versionId);
      const againKey = await ledgerKeyOf(store);
      expect(againKey).not.toBe(lostKey);
      expect(anchored.size).toBe(3);
      // Store order continues: the restored clock never goes back before what it holds.
      expect(Date.parse(again.lastUpdated)).toBeGreaterThan(
        Date.parse((await store.vread('Patient', 'p', 1))!.lastUpdated),
      );
      await store.close();
    } finally {
      for (const name of [restored, backup, live]) await dropWhenIdle(admin, name);
      await admin.end();
    }
  });
});
