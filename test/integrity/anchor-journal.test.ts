/**
 * The SQLite anchor journal's batch statements (src/integrity/anchor-journal.ts): a batch's members go in, and
 * pending keys are checked against committed batches, many versions per statement. What it records and answers must
 * be exactly what a statement per version did: every field of every member in leaf order, and the keys of
 * committed batches left out, in their order, however many keys one call holds.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AnchorJournal, type BatchMember } from '../../src/integrity/anchor-journal.js';

let dir: string;
let journal: AnchorJournal;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'hie-anchor-journal-'));
  journal = AnchorJournal.open(path.join(dir, 'integrity.sqlite'), { syncFile: async () => {} });
});

afterAll(async () => {
  journal.close();
  await rm(dir, { recursive: true, force: true });
});

const hex = (n: number, fill: string) => n.toString(16).padStart(64, fill);

/** Members with distinct keys; ids of every shape the store allows (a number-like id stays text). */
function members(prefix: string, count: number): BatchMember[] {
  return Array.from({ length: count }, (_, leafIndex) => ({
    resourceType: leafIndex % 2 === 0 ? 'Observation' : 'Patient',
    id: leafIndex === 0 ? `01${prefix.charCodeAt(0)}` : `${prefix}-${leafIndex}.é`,
    versionId: (leafIndex % 3) + 1,
    leafIndex,
    leafHash: hex(leafIndex, 'a'),
    ledgerKey: hex(leafIndex, 'b'),
    leafVersion: leafIndex % 2 === 0 ? 2 : 1,
  }));
}

describe('anchor journal (SQLite), many versions per statement', () => {
  it('records every member of a batch, field for field, in leaf order', async () => {
    const batch = members('m', 2500);
    await journal.prepare(hex(1, 'c'), 7, batch);
    const read = await journal.members(hex(1, 'c'));
    expect(read).toEqual(batch);
    expect(typeof read[0]!.id).toBe('string');
    expect((await journal.batch(hex(1, 'c')))?.leafCount).toBe(2500);
  });

  it('leaves out exactly the keys of committed batches, in order, across more keys than one statement takes', async () => {
    const committed = members('c', 2100);
    const prepared = members('p', 10);
    await journal.prepare(hex(2, 'c'), 8, committed);
    await journal.commit(hex(2, 'c'), hex(2, 'd'), 3);
    await journal.prepare(hex(3, 'c'), 8, prepared);
    const strangers = [
      { resourceType: 'Observation', id: 'never-journalled', versionId: 1 },
      // Same id as a committed member, another version: not anchored yet.
      {
        resourceType: committed[5]!.resourceType,
        id: committed[5]!.id,
        versionId: committed[5]!.versionId + 10,
      },
    ];
    // Interleaved, with the committed keys past the first statement's chunk too.
    const keys = [
      ...committed.slice(0, 1500),
      prepared[0]!,
      strangers[0]!,
      ...committed.slice(1500),
      strangers[1]!,
      prepared[1]!,
      committed[7]!,
    ].map(({ resourceType, id, versionId }) => ({ resourceType, id, versionId }));

    expect(await journal.withoutCommitted(keys)).toEqual(
      [prepared[0]!, strangers[0]!, strangers[1]!, prepared[1]!].map(({ resourceType, id, versionId }) => ({
        resourceType,
        id,
        versionId,
      })),
    );
    expect(await journal.withoutCommitted([])).toEqual([]);
  });
});
