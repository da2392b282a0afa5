/**
 * The store contract against PostgreSQL. Needs a server: set HIE_TEST_POSTGRES_URL, e.g.
 * postgres://postgres@127.0.0.1:5432/postgres (each test works in a schema of its own, dropped afterwards).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FhirError } from '../../src/fhir/outcome.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { PG_MIGRATIONS } from '../../src/fhir/store/postgres/schema.js';
import { describeResourceStoreContract } from './contract.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';

const url = POSTGRES_URL;
const skip = postgresSkipReason('PostgreSQL store contract');

async function openStore(
  schema = `hie_test_${randomBytes(6).toString('hex')}`,
): Promise<PostgresResourceStore> {
  const store = new PostgresResourceStore({ connectionString: url!, schema, maxConnections: 6 });
  await store.init();
  const close = store.close.bind(store);
  store.close = async () => {
    await store.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await close();
  };
  return store;
}

describe.skipIf(skip !== undefined)('PostgreSQL store (skipped unless HIE_TEST_POSTGRES_URL is set)', () => {
  describeResourceStoreContract('postgres', () => openStore());

  it('keeps its data across reopen, migrates once, and refuses to delete versions', async () => {
    const schema = `hie_test_${randomBytes(6).toString('hex')}`;
    const first = new PostgresResourceStore({ connectionString: url!, schema });
    await first.init();
    const v1 = await first.write({
      resourceType: 'Patient',
      id: 'a',
      method: 'PUT',
      resource: { resourceType: 'Patient' },
    });
    await first.close();
    const second = await openStore(schema);
    await second.init();
    expect(await second.read('Patient', 'a')).toEqual(v1);
    const versions = await second.pool.query(`SELECT version FROM "${schema}".schema_version`);
    expect(versions.rows).toEqual(PG_MIGRATIONS.map(({ version }) => ({ version })));
    await expect(second.pool.query(`DELETE FROM "${schema}".resource_version`)).rejects.toThrow(
      /never deleted/,
    );
    await second.close();
  });

  it('migration 3 backfills the access keys of current versions (custodian, patients), none of deletions', async () => {
    const store = await openStore();
    const write = (id: string, patients: string[], method: 'PUT' | 'DELETE' = 'PUT') =>
      store.write({
        resourceType: 'Observation',
        id,
        method,
        resource: method === 'PUT' ? { resourceType: 'Observation' } : undefined,
        custodian: 'Organization/h1',
        patients,
      });
    await write('o1', ['Patient/p1', 'Patient/p2']);
    await write('o2', ['Patient/p3']);
    await write('o2', [], 'DELETE');
    const keys = async () =>
      (
        await store.pool.query(
          `SELECT id, key FROM "${store.schema}".access_key ORDER BY id COLLATE "C", key COLLATE "C"`,
        )
      ).rows;
    const written = await keys();
    expect(written).toEqual([
      { id: 'o1', key: 'Patient/p1' },
      { id: 'o1', key: 'Patient/p2' },
      { id: 'o1', key: 'custodian|Organization/h1' },
    ]);
    // As a store of schema version 2: no access_key table; opening it again applies migrations 3 and 4.
    await store.pool.query(`DROP TABLE "${store.schema}".access_key`);
    await store.pool.query(`DELETE FROM "${store.schema}".schema_version WHERE version = 3`);
    // Migrations 4 (full text) and 7 (quantities by unit) came later still; 5 and 6 stay applied (a store missing
    // only some migrations gets exactly those).
    await store.pool.query(`DROP INDEX "${store.schema}".search_index_text`);
    await store.pool.query(`DROP TABLE "${store.schema}".index_rebuild`);
    await store.pool.query(`DROP INDEX "${store.schema}".search_index_quantity_high`);
    await store.pool.query(`DROP INDEX "${store.schema}".resource_current_type_seq`);
    await store.pool.query(`DELETE FROM "${store.schema}".schema_version WHERE version IN (4, 7)`);
    const reopened = new PostgresResourceStore({ pool: store.pool, schema: store.schema });
    await reopened.init();
    expect(await keys()).toEqual(written);
    await store.close();
  });

  it('a transaction is reached only through its view: the outer store, called from inside work, sees committed data only', async () => {
    const store = await openStore();
    try {
      await store.write({
        resourceType: 'Patient',
        id: 'p',
        method: 'PUT',
        resource: { resourceType: 'Patient' },
      });
      await store.transaction(async (view) => {
        await view.write({
          resourceType: 'Patient',
          id: 'p',
          method: 'PUT',
          resource: { resourceType: 'Patient', active: true },
        });
        expect((await view.read('Patient', 'p'))?.versionId).toBe(2);
        // Not joined to the transaction by async context (no AsyncLocalStorage): version 2 is not committed yet.
        expect((await store.read('Patient', 'p'))?.versionId).toBe(1);
      });
      expect((await store.read('Patient', 'p'))?.versionId).toBe(2);
    } finally {
      await store.close();
    }
  });

  it('two store instances (two replicas) updating one resource with the same If-Match: exactly one wins, the other gets 412', async () => {
    const schema = `hie_test_${randomBytes(6).toString('hex')}`;
    const a = await openStore(schema);
    const b = new PostgresResourceStore({ connectionString: url!, schema, maxConnections: 4 });
    await b.init();
    try {
      const id = 'shared';
      await a.write({ resourceType: 'Patient', id, method: 'PUT', resource: { resourceType: 'Patient' } });
      for (let round = 1; round <= 10; round++) {
        const update = (store: PostgresResourceStore, who: string) =>
          store.write({
            resourceType: 'Patient',
            id,
            method: 'PUT',
            ifMatch: round,
            resource: { resourceType: 'Patient', id, name: [{ family: who }] },
          });
        const outcomes = await Promise.allSettled([update(a, 'a'), update(b, 'b')]);
        const won = outcomes.filter((o) => o.status === 'fulfilled');
        const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
        expect(won, `round ${round}`).toHaveLength(1);
        expect(lost[0]!.reason).toBeInstanceOf(FhirError);
        expect((lost[0]!.reason as FhirError).code).toBe('version-conflict');
        expect((lost[0]!.reason as FhirError).status).toBe(412);
      }
      const history = await b.history({ resourceType: 'Patient', id, count: 100 });
      expect(history.versions.map((v) => v.versionId)).toEqual([11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
    } finally {
      await b.close();
      await a.close();
    }
  });
});

describe.skipIf(skip !== undefined)('PostgreSQL store: row-level write concurrency between replicas', () => {
  const patient = (id: string, family = 'x') => ({
    resourceType: 'Patient',
    id,
    method: 'PUT' as const,
    resource: { resourceType: 'Patient', id, name: [{ family }] },
  });

  it('a replica writes one resource while another holds a transaction open on a different one (no global lock); the same resource still waits and gets 412', async () => {
    const a = await openStore();
    // Replica b gives up on any lock after 3 s: a store-wide write lock would fail its write instead of hanging.
    const b = new PostgresResourceStore({
      connectionString: `${url!}${url!.includes('?') ? '&' : '?'}options=-c%20lock_timeout%3D3000`,
      schema: a.schema,
      maxConnections: 4,
    });
    await b.init();
    let release = () => {};
    let held: Promise<unknown> = Promise.resolve();
    try {
      await a.write(patient('held'));
      const released = new Promise<void>((resolve) => (release = resolve));
      let opened!: () => void;
      const isOpen = new Promise<void>((resolve) => (opened = resolve));
      const transaction = a.transaction(async (tx) => {
        const v = await tx.write({ ...patient('held', 'in-tx'), ifMatch: 1 });
        opened();
        await released;
        return v;
      });
      held = transaction.catch(() => undefined);
      await isOpen;
      // Another resource, on the other replica, while the transaction is open: written and readable at once.
      const other = await b.write(patient('other'));
      expect(other.versionId).toBe(1);
      expect((await a.read('Patient', 'other'))?.versionId).toBe(1);
      // The same resource with the If-Match the transaction has consumed: waits for it, then loses with 412.
      const late = b.write({ ...patient('held', 'late'), ifMatch: 1 }).then(
        () => undefined,
        (err: unknown) => err,
      );
      release();
      expect((await transaction).versionId).toBe(2);
      const lost = await late;
      expect(lost).toBeInstanceOf(FhirError);
      expect((lost as FhirError).status).toBe(412);
      // Store order is lastUpdated order across both replicas' writes.
      const history = await b.history({ count: 10 });
      const times = history.versions.map((v) => Date.parse(v.lastUpdated));
      for (let i = 1; i < times.length; i++) expect(times[i]!).toBeLessThan(times[i - 1]!);
    } finally {
      release();
      await held;
      await b.close();
      await a.close();
    }
  });
});
