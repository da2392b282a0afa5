/**
 * Anchoring with a PostgreSQL store shared by two replicas (two stores, two integrity services, one schema, one
 * ledger): the batch journal in the database, one drainer at a time (the drain lease), fencing tokens.
 * Needs HIE_TEST_POSTGRES_URL (test/support/postgres.ts).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { openIntegrity, type IntegrityService } from '../../src/integrity/integrity-service.js';
import { AnchorContractClient } from '../../src/integrity/anchor-contract-client.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { openEmbeddedLedger } from '../../src/ledger/embedded/index.js';
import { patientCompartments } from '../../src/fhir/search/definitions.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { CUSTODIAN, FaultyLedger, MSP_ID, observation } from './helpers.js';

const skip = postgresSkipReason('PostgreSQL anchoring');

/** The drain lease's advisory lock namespace (src/integrity/postgres-anchor-journal.ts). */
const DRAIN_LOCK_CLASS = 0x48494541;

interface Replica {
  store: PostgresResourceStore;
  ledger: FaultyLedger;
  integrity: IntegrityService;
  write(resource: FhirResource): Promise<StoredVersion>;
}

interface Cluster {
  schema: string;
  chain: Ledger;
  replica(): Promise<Replica>;
  /** Ends the connection holding the drain lease (as a crashed host or a network cut would). */
  killLeaseConnection(): Promise<number>;
  close(): Promise<void>;
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function openCluster(): Promise<Cluster> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'hie-pg-anchoring-'));
  const schema = `hie_test_${randomBytes(6).toString('hex')}`;
  const chain = await openEmbeddedLedger({ dataDir, mspId: MSP_ID });
  const replicas: Replica[] = [];
  const cluster: Cluster = {
    schema,
    chain,
    async replica() {
      const store = new PostgresResourceStore({ connectionString: POSTGRES_URL!, schema, maxConnections: 4 });
      await store.init();
      const ledger = new FaultyLedger(chain);
      // Every replica reads the same secret store (here: the same data directory's keys).
      const integrity = await openIntegrity({ dataDir, store, ledger, anchoring: { batchSize: 5 } });
      const replica: Replica = {
        store,
        ledger,
        integrity,
        write: (resource) =>
          store.write({
            resourceType: resource.resourceType,
            id: resource.id!,
            resource,
            method: 'PUT',
            patients: patientCompartments(resource),
            index: extractIndex(resource),
            custodian: CUSTODIAN,
            anchor: integrity.anchorer.anchorFor,
          }),
      };
      replicas.push(replica);
      return replica;
    },
    async killLeaseConnection() {
      const store = replicas[0]!.store;
      const { rows } = await store.pool.query<{ killed: boolean }>(
        `SELECT pg_terminate_backend(pid) AS killed FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 2`,
        [DRAIN_LOCK_CLASS, store.lockKey >>> 0],
      );
      return rows.filter((row) => row.killed).length;
    },
    async close() {
      for (const replica of replicas) await replica.integrity.close();
      await replicas[0]?.store.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      for (const replica of replicas) await replica.store.close();
      await chain.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  closers.push(() => cluster.close());
  return cluster;
}

/** Every version is in exactly one batch on the ledger, each batch submitted once, and the audit passes. */
async function expectAnchoredOnce(
  cluster: Cluster,
  replica: Replica,
  written: StoredVersion[],
  submits: number,
) {
  const contract = new AnchorContractClient(cluster.chain);
  const roots = new Map<string, number>();
  for (const version of written) {
    const state = await replica.store.anchorState(version);
    if (state?.status !== 'anchored') throw new Error(`${version.id} is ${state?.status}`);
    roots.set(state.anchor.root, state.anchor.leafCount);
    expect((await replica.integrity.verifier.verifyVersion(version)).verified).toBe(true);
  }
  let leaves = 0;
  for (const [root, leafCount] of roots) {
    expect((await contract.readBatch(root))?.leafCount).toBe(leafCount);
    leaves += leafCount;
  }
  expect(leaves).toBe(written.length);
  // One ledger transaction per batch, none repeated.
  expect(submits).toBe(roots.size);
  const report = await replica.integrity.audit();
  expect(report.problems).toEqual([]);
  expect(report).toMatchObject({ ok: true, versions: written.length, anchored: written.length });
}

describe.skipIf(skip !== undefined)('anchoring on PostgreSQL with two replicas', () => {
  it('one replica drains at a time; the other takes over when the first stops, with the next fencing token', async () => {
    const cluster = await openCluster();
    const a = await cluster.replica();
    const b = await cluster.replica();
    const written: StoredVersion[] = [];
    for (let i = 0; i < 7; i++) written.push(await (i % 2 ? a : b).write(observation(`t${i}`, `${i}.50`)));

    expect(await a.integrity.anchorer.drain()).toBe(7);
    for (let i = 7; i < 10; i++) written.push(await b.write(observation(`t${i}`, '1.0')));
    // A holds the drain lease: B anchors nothing, A everything (B's writes too: the outbox is in the database).
    expect(await b.integrity.anchorer.drain()).toBe(0);
    expect(await a.integrity.anchorer.drain()).toBe(3);
    const fences = await a.store.pool.query(`SELECT fence, holder FROM "${cluster.schema}".anchor_drainer`);
    expect(fences.rows[0].fence).toBe(1);

    for (let i = 10; i < 12; i++) written.push(await a.write(observation(`t${i}`, '2.0')));
    await a.integrity.close(); // A stops: its lease connection ends
    expect(await b.integrity.anchorer.drain()).toBe(2);
    const after = await b.store.pool.query(`SELECT fence FROM "${cluster.schema}".anchor_drainer`);
    expect(after.rows[0].fence).toBe(2);
    expect(b.integrity.anchorer.status()).toMatchObject({ committedBatches: 4, preparedBatches: 0 });
    await expectAnchoredOnce(cluster, b, written, a.ledger.submits + b.ledger.submits);
  });

  it('a drainer that lost its lease after journalling a batch submits nothing; the new drainer finishes that batch first', async () => {
    const cluster = await openCluster();
    const a = await cluster.replica();
    const b = await cluster.replica();
    const written: StoredVersion[] = [];
    for (let i = 0; i < 4; i++) written.push(await a.write(observation(`f${i}`, '3.10')));

    // A journals a batch, then loses its lease (its connection ends) before it submits: the look-up of the root on
    // the ledger, the step before the submission, is where it happens.
    const evaluate = a.ledger.evaluate.bind(a.ledger);
    let killed = 0;
    a.ledger.evaluate = async (transaction, args) => {
      if (transaction === 'anchor:ReadBatch' && killed === 0) killed = await cluster.killLeaseConnection();
      return evaluate(transaction, args);
    };
    await expect(a.integrity.anchorer.drainOnce()).rejects.toThrow(
      /no longer holds the anchoring drain lease/,
    );
    expect(killed).toBe(1);
    expect(a.ledger.submits).toBe(0);
    const [journalled] = await b.integrity.journal.prepared();
    expect(journalled).toMatchObject({ leafCount: 4, state: 'prepared' });

    // More writes; B takes the lease and first finishes A's batch, exactly as journalled.
    for (let i = 4; i < 6; i++) written.push(await b.write(observation(`f${i}`, '3.10')));
    expect(await b.integrity.anchorer.drainOnce()).toBe(4);
    expect(await b.integrity.journal.batch(journalled!.root)).toMatchObject({ state: 'committed' });
    const first = await b.store.anchorState(written[0]!);
    expect(first?.status === 'anchored' && first.anchor.root).toBe(journalled!.root);
    expect(await b.integrity.anchorer.drain()).toBe(2);

    // A, back, finds the lease taken: it anchors nothing more.
    a.ledger.evaluate = evaluate;
    for (let i = 6; i < 8; i++) written.push(await a.write(observation(`f${i}`, '3.10')));
    expect(await a.integrity.anchorer.drain()).toBe(0);
    expect(a.ledger.submits).toBe(0);
    expect(await b.integrity.anchorer.drain()).toBe(2);
    expect(b.ledger.submits).toBe(3);
    await expectAnchoredOnce(cluster, b, written, a.ledger.submits + b.ledger.submits);
  });
});
