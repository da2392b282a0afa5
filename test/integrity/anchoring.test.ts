import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { AnchorContractClient } from '../../src/integrity/anchor-contract-client.js';
import { Anchorer, type AnchorTimer } from '../../src/integrity/anchorer.js';
import { verifyProof } from '../../src/integrity/merkle.js';
import { eventually, observation, openFixture, type Fixture } from './helpers.js';

let fixture: Fixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

async function anchorStates(f: Fixture, refs: { resourceType: string; id: string; versionId: number }[]) {
  return Promise.all(refs.map((r) => f.store.anchorState(r)));
}

describe('anchoring', () => {
  it('queues an anchor with every write and commits them in Merkle batches that verify', async () => {
    fixture = await openFixture({ batchSize: 10 });
    const f = fixture;
    const written = [];
    for (let i = 0; i < 20; i++) written.push(await f.write(observation(`o${i}`, `${i}.50`)));
    written.push(await f.write(observation('o3', '3.75'))); // an update
    written.push(await f.remove('Observation', 'o4')); // a deletion is anchored too
    expect((await f.store.pendingAnchors(100)).length).toBe(22);

    expect(await f.integrity.anchorer.drain()).toBe(22);
    expect(await f.store.pendingAnchors(100)).toEqual([]);
    expect(f.integrity.anchorer.status()).toMatchObject({
      committedBatches: 3,
      preparedBatches: 0,
      anchoredSinceStart: 22,
    });

    const contract = new AnchorContractClient(f.ledger);
    for (const version of written) {
      const result = await f.integrity.verifier.verifyVersion(version);
      expect(result, result.reference).toMatchObject({ status: 'anchored', verified: true });
      const state = await f.store.anchorState(version);
      if (state?.status !== 'anchored') throw new Error('not anchored');
      expect(result.hash).toBe(state.leafHash);
      expect(verifyProof(result.hash!, result.proof!, state.anchor.root, state.anchor)).toBe(true);
      expect(await contract.readBatch(state.anchor.root)).toMatchObject({
        leafCount: state.anchor.leafCount,
        mspId: 'Org1MSP',
      });
      expect(state.anchor.blockNumber).toBeGreaterThanOrEqual(0);
    }
    const sizes = (await anchorStates(f, written)).map((s) =>
      s?.status === 'anchored' ? s.anchor.leafCount : 0,
    );
    expect(sizes.filter((n) => n === 10).length).toBe(20);
    expect(sizes.filter((n) => n === 2).length).toBe(2);
  });

  it('keeps writing while the ledger is down, shows anchors pending, then drains them', async () => {
    fixture = await openFixture({ batchSize: 4, intervalMs: 20, minBackoffMs: 10, maxBackoffMs: 50 });
    const f = fixture;
    f.ledger.down = true;
    f.integrity.anchorer.start();
    const written = [];
    for (let i = 0; i < 9; i++) written.push(await f.write(observation(`d${i}`, '1.0')));
    await eventually(
      () => f.integrity.anchorer.status().consecutiveFailures >= 3,
      'the worker has failed a few times',
    );
    expect(f.integrity.anchorer.status().lastError).toMatch(/unavailable/);
    for (const state of await anchorStates(f, written)) expect(state?.status).toBe('pending');
    expect(await f.integrity.anchorer.pendingCount()).toBe(9);
    expect((await f.integrity.verifier.verifyVersion(written[0])).status).toBe('pending');
    // The store kept working: every write is readable.
    expect((await f.store.read('Observation', 'd8'))?.json).toContain('"d8"');

    f.ledger.down = false;
    await eventually(async () => (await f.store.pendingAnchors(1)).length === 0, 'the outbox is empty');
    await eventually(
      () => f.integrity.anchorer.status().consecutiveFailures === 0,
      'the worker reports recovery',
    );
    expect(await f.integrity.anchorer.pendingCount()).toBe(0);
    for (const version of written) {
      expect((await f.integrity.verifier.verifyVersion(version)).verified).toBe(true);
    }
  });

  it('never anchors twice: a reply lost after the commit is recognised on the ledger', async () => {
    fixture = await openFixture({ batchSize: 100 });
    const f = fixture;
    for (let i = 0; i < 5; i++) await f.write(observation(`l${i}`, '2'));
    const heightBefore = await f.ledger.height();
    f.ledger.loseReplies = 1;
    expect(await f.integrity.anchorer.drainOnce()).toBe(5);
    expect(f.ledger.submits).toBe(1);
    expect(await f.ledger.height()).toBe(heightBefore + 1);
    const state = await f.store.anchorState({ resourceType: 'Observation', id: 'l0', versionId: 1 });
    if (state?.status !== 'anchored') throw new Error('not anchored');
    // The block number was recovered from the chaincode events.
    expect(state.anchor.blockNumber).toBe(heightBefore);
    expect(
      (await f.integrity.verifier.verifyVersion({ ...(await f.store.vread('Observation', 'l3', 1))! }))
        .verified,
    ).toBe(true);
  });

  it('finishes a journalled batch after a restart with exactly the same members', async () => {
    fixture = await openFixture({ batchSize: 3 });
    const f = fixture;
    for (let i = 0; i < 3; i++) await f.write(observation(`r${i}`, '7.10'));
    f.ledger.down = true;
    // height() fails first: nothing is journalled while the ledger cannot be reached at all.
    await expect(f.integrity.anchorer.drainOnce()).rejects.toThrow(/unavailable/);
    expect(await f.integrity.journal.prepared()).toEqual([]);
    f.ledger.down = false;
    const height = f.ledger.height.bind(f.ledger);
    // Ledger reachable for height(), then down for the submission: the batch is journalled, not committed.
    f.ledger.height = async () => {
      const h = await height();
      f.ledger.down = true;
      return h;
    };
    await expect(f.integrity.anchorer.drainOnce()).rejects.toThrow(/unavailable/);
    const [prepared] = await f.integrity.journal.prepared();
    expect(prepared.leafCount).toBe(3);
    f.ledger.height = height;
    f.ledger.down = false;

    // More writes arrive, then the process restarts.
    for (let i = 3; i < 5; i++) await f.write(observation(`r${i}`, '7.10'));
    const integrity = await f.reopenIntegrity();
    expect(await integrity.anchorer.drainOnce()).toBe(3);
    expect((await integrity.journal.batch(prepared.root))?.state).toBe('committed');
    const first = await f.store.anchorState({ resourceType: 'Observation', id: 'r0', versionId: 1 });
    expect(first?.status === 'anchored' && first.anchor.root).toBe(prepared.root);
    expect(await integrity.anchorer.drain()).toBe(2);
    expect(integrity.anchorer.status()).toMatchObject({ committedBatches: 2, preparedBatches: 0 });
  });
});

describe('anchoring with several batches in flight', () => {
  it('submits up to maxInFlight disjoint batches at once; a lost answer among them is recognised, none doubled', async () => {
    fixture = await openFixture({ batchSize: 4, intervalMs: 20, maxInFlight: 3 });
    const f = fixture;
    const written = [];
    for (let i = 0; i < 12; i++) written.push(await f.write(observation(`c${i}`, '1.0')));
    let release!: () => void;
    f.ledger.gate = new Promise<void>((resolve) => (release = resolve));
    f.integrity.anchorer.start();
    try {
      // 12 pending, 4 per batch: 4 + 4 + 4, all three waiting on the ledger at the same time.
      await eventually(() => f.ledger.inFlight === 3, 'three batches are in flight');
      expect(f.integrity.journal.batchCount()).toEqual({ prepared: 3, committed: 0 });
      f.ledger.loseReplies = 1;
    } finally {
      release();
    }
    await eventually(async () => (await f.store.pendingAnchors(1)).length === 0, 'the outbox is empty');
    expect(f.ledger.mostInFlight).toBe(3);
    // Three transactions, no more: the batch whose answer was lost was found on the ledger, not sent again.
    expect(f.ledger.loseReplies).toBe(0);
    expect(f.ledger.submits).toBe(3);
    expect(f.integrity.journal.batchCount()).toEqual({ prepared: 0, committed: 3 });
    const roots = new Set<string>();
    for (const version of written) {
      const result = await f.integrity.verifier.verifyVersion(version);
      expect(result.verified).toBe(true);
      roots.add((await f.integrity.journal.memberOf(version))!.root);
    }
    expect(roots.size).toBe(3);
  });
});

describe('stopping the anchoring worker', () => {
  it('does not wait for the ledger: the batches in flight are finished at the next start, none sent twice, and the backlog drains', async () => {
    fixture = await openFixture({ batchSize: 4, intervalMs: 20, maxInFlight: 2 });
    const f = fixture;
    const written = [];
    for (let i = 0; i < 10; i++) written.push(await f.write(observation(`h${i}`, '1.0')));
    let release!: () => void;
    f.ledger.gate = new Promise<void>((resolve) => (release = resolve));
    f.integrity.anchorer.start();
    await eventually(() => f.ledger.inFlight === 2, 'two batches wait on the ledger');
    // The network never answers while the service stops (shutdown waited for it before).
    await f.integrity.anchorer.stop();
    expect(f.integrity.anchorer.status()).toMatchObject({ running: false, consecutiveFailures: 0 });
    expect(f.integrity.journal.batchCount()).toEqual({ prepared: 2, committed: 0 });
    expect(await f.store.pendingAnchors(20)).toHaveLength(10);
    // The abandoned submissions reach the chain after all; the next start finds them there.
    release();
    await eventually(() => f.ledger.inFlight === 0, 'the abandoned submissions are committed');
    const integrity = await f.reopenIntegrity();
    expect(await integrity.anchorer.drain()).toBe(10);
    expect(f.ledger.submits).toBe(3);
    expect(integrity.journal.batchCount()).toEqual({ prepared: 0, committed: 3 });
    for (const version of written)
      expect((await integrity.verifier.verifyVersion(version)).verified).toBe(true);
  });
});

describe('anchoring under sustained writes', () => {
  it('cuts only full batches while one fills: the rest leads the next batch instead of going out alone', async () => {
    fixture = await openFixture({ batchSize: 4, maxInFlight: 3 });
    const f = fixture;
    for (let i = 0; i < 10; i++) await f.write(observation(`s${i}`, '2.0'));
    // Two full batches; the two newest versions wait (they would have been a third, half-empty transaction).
    expect(await f.integrity.anchorer.drainRound()).toBe(8);
    expect((await f.store.pendingAnchors(10)).map((p) => p.id)).toEqual(['s8', 's9']);
    expect(f.ledger.submits).toBe(2);
    for (let i = 10; i < 12; i++) await f.write(observation(`s${i}`, '2.0'));
    // They lead the next full batch.
    expect(await f.integrity.anchorer.drainRound()).toBe(4);
    const first = await f.store.anchorState({ resourceType: 'Observation', id: 's8', versionId: 1 });
    expect(first?.status === 'anchored' && first.anchor.leafIndex).toBe(0);
    // Nothing fills a batch: what is there goes out as a partial batch, so drain() empties the outbox.
    await f.write(observation('s12', '2.0'));
    expect(await f.integrity.anchorer.drain()).toBe(1);
    expect(f.ledger.submits).toBe(4);
  });

  it('the worker waits for the next full batch or the interval instead of sending the rest at once', async () => {
    fixture = await openFixture({ batchSize: 4, intervalMs: 50 });
    const f = fixture;
    const sleeps: { ms: number; release: () => void }[] = [];
    const timer: AnchorTimer = {
      sleep: (ms, signal) =>
        new Promise<void>((resolve) => {
          sleeps.push({ ms, release: resolve });
          signal.addEventListener('abort', () => resolve(), { once: true });
        }),
    };
    const anchorer = new Anchorer(
      f.store,
      f.ledger,
      f.integrity.keyring,
      f.integrity.journal,
      { batchSize: 4, intervalMs: 50 },
      undefined,
      timer,
    );
    for (let i = 0; i < 6; i++) await f.write(observation(`w${i}`, '3.0'));
    anchorer.start();
    try {
      await eventually(() => sleeps.length === 1, 'the worker waits');
      // One full batch went out; the other two wait the interval (or the next full batch).
      expect(sleeps[0].ms).toBe(50);
      expect((await f.store.pendingAnchors(10)).map((p) => p.id)).toEqual(['w4', 'w5']);
      expect(f.ledger.submits).toBe(1);
      sleeps[0].release();
      await eventually(async () => (await f.store.pendingAnchors(1)).length === 0, 'the outbox is empty');
      expect(f.ledger.submits).toBe(2);
    } finally {
      await anchorer.stop();
    }
  });
});

describe('anchoring retries after a ledger outage', () => {
  it('starts its backoff over and retries at once when the ledger reports it is reachable again', async () => {
    fixture = await openFixture({ batchSize: 100, intervalMs: 50, minBackoffMs: 200, maxBackoffMs: 30_000 });
    const f = fixture;
    // Every wait is the test's: a sleep ends only when released here or when the worker is woken.
    const sleeps: { ms: number; release: () => void }[] = [];
    const timer: AnchorTimer = {
      sleep: (ms, signal) =>
        new Promise<void>((resolve) => {
          sleeps.push({ ms, release: resolve });
          signal.addEventListener('abort', () => resolve(), { once: true });
        }),
    };
    const anchorer = new Anchorer(
      f.store,
      f.ledger,
      f.integrity.keyring,
      f.integrity.journal,
      { batchSize: 100, intervalMs: 50, minBackoffMs: 200, maxBackoffMs: 30_000 },
      undefined,
      timer,
    );
    const written = [];
    for (let i = 0; i < 3; i++) written.push(await f.write(observation(`r${i}`, '1.0')));
    f.ledger.down = true;
    anchorer.start();
    try {
      for (let failures = 1; failures <= 3; failures++) {
        await eventually(() => sleeps.length === failures, `failure ${failures} is waited out`);
        if (failures < 3) sleeps[failures - 1].release();
      }
      expect(sleeps.map((s) => s.ms)).toEqual([200, 400, 800]);
      // The connection is back but the first call still fails (a flapping peer): the next wait is the first
      // delay again, not 1,600 ms.
      f.ledger.reportReachable();
      await eventually(() => sleeps.length === 4, 'the worker retried at once');
      expect(sleeps[3].ms).toBe(200);
      // Back for good: anchored without any wait having elapsed.
      f.ledger.down = false;
      f.ledger.reportReachable();
      await eventually(async () => (await f.store.pendingAnchors(1)).length === 0, 'the outbox is empty');
      expect(anchorer.status().consecutiveFailures).toBe(0);
      for (const version of written) {
        expect((await f.integrity.verifier.verifyVersion(version)).verified).toBe(true);
      }
    } finally {
      await anchorer.stop();
    }
  });
});

describe('anchoring when a pending version vanished from the store', () => {
  it('anchors the rest of its batch, and the audit names the vanished version as missing', async () => {
    fixture = await openFixture({ batchSize: 10 });
    const f = fixture;
    for (let i = 0; i < 3; i++) await f.write(observation(`v${i}`, '4.20'));
    const db = new Database(path.join(f.dir, 'resources.sqlite'));
    db.pragma('foreign_keys = OFF');
    db.exec('DROP TRIGGER IF EXISTS resource_version_keep');
    expect(db.prepare(`DELETE FROM resource_version WHERE id = 'v1'`).run().changes).toBe(1);
    db.close();

    // pendingAnchors still lists v1 (its outbox row survives); the worker must not stall on it.
    expect(await f.integrity.anchorer.drain()).toBe(3);
    expect(await f.integrity.anchorer.pendingCount()).toBe(0);
    expect(
      (await f.integrity.verifier.verifyVersion((await f.store.vread('Observation', 'v2', 1))!)).verified,
    ).toBe(true);
    const report = await f.integrity.audit();
    expect(report.missing).toEqual(['Observation/v1/_history/1']);
    expect(report.altered).toEqual([]);
    expect(report.ok).toBe(false);
  });
});
