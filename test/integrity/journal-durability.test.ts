/**
 * The anchor journal's durability (src/integrity/anchor-journal.ts): a prepared batch is on the disk before it is
 * submitted, and the fsync that puts it there runs off the event loop (the service keeps serving meanwhile).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AnchorJournal } from '../../src/integrity/anchor-journal.js';
import { Anchorer } from '../../src/integrity/anchorer.js';
import { LedgerKeyring } from '../../src/integrity/hashing.js';
import { observation, openFixture, type Fixture } from './helpers.js';

let fixture: Fixture | undefined;
let journal: AnchorJournal | undefined;
afterEach(async () => {
  journal?.close();
  journal = undefined;
  await fixture?.close();
  fixture = undefined;
});

/** A file sync that waits until the test releases it, recording what it was asked to sync. */
function heldSync() {
  const synced: string[] = [];
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  return {
    synced,
    release: () => release(),
    sync: async (file: string) => {
      await held;
      synced.push(file);
    },
  };
}

describe('anchor journal durability', () => {
  it('submits a batch only after its journal entry was synced to the disk (the WAL file)', async () => {
    fixture = await openFixture({ batchSize: 3 });
    const f = fixture;
    for (let i = 0; i < 3; i++) await f.write(observation(`d${i}`, '7.10'));
    const file = path.join(f.dir, 'held-journal.sqlite');
    const disk = heldSync();
    journal = AnchorJournal.open(file, { syncFile: disk.sync });
    const anchorer = new Anchorer(f.store, f.ledger, new LedgerKeyring(Buffer.alloc(32, 7)), journal, {
      batchSize: 3,
    });
    const submitsBefore = f.ledger.submits;

    const draining = anchorer.drainOnce();
    // The batch is journalled (readable in this process), but its fsync has not finished: nothing submitted yet.
    for (let turn = 0; turn < 50 && (await journal.prepared()).length === 0; turn++)
      await new Promise((r) => setImmediate(r));
    expect((await journal.prepared()).map((b) => b.leafCount)).toEqual([3]);
    for (let turn = 0; turn < 50; turn++) await new Promise((r) => setImmediate(r));
    expect(f.ledger.submits).toBe(submitsBefore);
    expect(disk.synced).toEqual([]);

    disk.release();
    expect(await draining).toBe(3);
    expect(disk.synced).toEqual([`${file}-wal`]);
    expect(existsSync(`${file}-wal`)).toBe(true);
    expect(f.ledger.submits).toBe(submitsBefore + 1);
    expect(journal.batchCount()).toEqual({ prepared: 0, committed: 1 });
  });

  it('a failed sync fails the round before anything is submitted; the batch is finished next time', async () => {
    fixture = await openFixture({ batchSize: 2 });
    const f = fixture;
    for (let i = 0; i < 2; i++) await f.write(observation(`e${i}`, '7.10'));
    let failing = true;
    journal = AnchorJournal.open(path.join(f.dir, 'failing-journal.sqlite'), {
      syncFile: async () => {
        if (failing) throw Object.assign(new Error('EIO: i/o error, fsync (injected)'), { code: 'EIO' });
      },
    });
    const anchorer = new Anchorer(f.store, f.ledger, new LedgerKeyring(Buffer.alloc(32, 7)), journal, {
      batchSize: 2,
    });
    const submitsBefore = f.ledger.submits;
    await expect(anchorer.drainOnce()).rejects.toThrow(/EIO/);
    expect(f.ledger.submits).toBe(submitsBefore);
    failing = false;
    expect(await anchorer.drainOnce()).toBe(2);
    expect(f.ledger.submits).toBe(submitsBefore + 1);
    expect(journal.batchCount()).toEqual({ prepared: 0, committed: 1 });
  });
});
