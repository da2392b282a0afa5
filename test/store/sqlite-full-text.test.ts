/**
 * The SQLite store's full-text documents (schema migration 12, src/fhir/store/sqlite/text-documents.ts): queued per
 * transaction and inserted just before its COMMIT, so FTS5 writes its pending terms once per commit, not once per
 * write; a write rolled back (its savepoint, or the whole transaction) leaves no document and takes none away.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { SqliteSearch } from '../../src/fhir/store/sqlite/sqlite-search.js';
import { parseSearch } from '../../src/fhir/search/parse.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import { FULL_TEXT_PARAMS } from '../../src/fhir/search/full-text.js';
import { FULL_TEXT_FIELDS } from '../../src/fhir/store/sqlite/text-documents.js';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import type { IndexEntry, ResourceStore, WriteRequest } from '../../src/fhir/store/resource-store.js';

const dir = mkdtempSync(join(tmpdir(), 'hie-fts-'));
const stores: SqliteResourceStore[] = [];
afterAll(async () => {
  for (const store of stores) await store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function openStore(name: string): Promise<SqliteResourceStore> {
  const store = new SqliteResourceStore({ file: join(dir, `${name}.sqlite`) });
  await store.init();
  stores.push(store);
  return store;
}

function observation(id: string, words: string): WriteRequest {
  const resource = {
    resourceType: 'Observation',
    id,
    status: 'final',
    code: { text: words },
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${words}</div>` },
  } as FhirResource;
  return { resourceType: 'Observation', id, method: 'PUT', resource, index: extractIndex(resource) };
}

function found(store: SqliteResourceStore, params: Record<string, string[]>): string[] {
  return new SqliteSearch(store.db)
    .search({ query: parseSearch(params, { resourceType: 'Observation' }), canRead: () => true })
    .versions.map((v) => v.id)
    .sort();
}

/**
 * Leaves FTS5 has written to level 0 so far (the structure record's write counter: each flush of its pending terms
 * writes at least one leaf, so a flush per write shows as at least one leaf per write).
 */
function level0Leaves(db: Database.Database): number {
  const record = db.prepare('SELECT block FROM search_text_data WHERE id = 10').pluck().get() as Buffer;
  let at = 4; // the configuration cookie
  if (record.readUInt32BE(at) === 0xff000001) at += 4; // a version 2 structure record
  const varint = (): number => {
    let value = 0;
    for (let i = 0; i < 9; i++) {
      const byte = record[at++]!;
      if (i === 8) return value * 256 + byte;
      value = value * 128 + (byte & 0x7f);
      if (byte < 0x80) return value;
    }
    return value;
  };
  varint(); // levels
  varint(); // segments
  return varint();
}

/** A write whose index rows fail to insert after its full-text entries were taken (a value SQLite cannot bind). */
function failingAfterItsText(request: WriteRequest, words: string): WriteRequest {
  const unbindable = { param: 'status', type: 'token', value: {} } as unknown as IndexEntry;
  return {
    ...request,
    index: [{ param: '_content', type: 'special', system: words }, unbindable],
  };
}

describe('SQLite full-text documents (schema migration 12)', () => {
  it('are the entries of the full-text parameters (the store may not import the search module)', () => {
    expect(FULL_TEXT_FIELDS).toEqual(FULL_TEXT_PARAMS);
  });

  it('go into FTS5 once per commit: a group-commit batch of 20 writes writes one level-0 leaf, as one write does', async () => {
    const store = await openStore('batch');
    const before = level0Leaves(store.db);
    await store.write(observation('single', 'alone'));
    expect(level0Leaves(store.db) - before).toBe(1);
    const ids = Array.from({ length: 20 }, (_, i) => `o${i}`);
    const batchStart = level0Leaves(store.db);
    await Promise.all(ids.map((id) => store.write(observation(id, `bone marrow ${id}`))));
    // With a document inserted by each write (the triggers of migrations 6 to 11): one flush, one leaf, per write.
    expect(level0Leaves(store.db) - batchStart).toBe(1);
    expect(found(store, { _content: ['marrow'] })).toEqual([...ids].sort());
    expect(found(store, { _text: ['"bone marrow o7"'] })).toEqual(['o7']);
    expect(await store.indexEntries('Observation', 'o7')).toEqual(
      extractIndex(observation('o7', 'bone marrow o7').resource!).map((e) =>
        e.type === 'special' ? { param: e.param, type: e.type } : e,
      ),
    );
  });

  it('go into FTS5 once per transaction(work), whatever it writes (the import writes its batches so)', async () => {
    const store = await openStore('transaction');
    const before = level0Leaves(store.db);
    await store.transaction(async (tx) => {
      for (let i = 0; i < 30; i++) await tx.write(observation(`t${i}`, `liver metastases t${i}`));
      // rewritten in the same transaction: the first version's documents never reach FTS5
      await tx.write(observation('t1', 'replaced words'));
    });
    expect(level0Leaves(store.db) - before).toBe(1);
    expect(found(store, { _content: ['metastases'] })).toHaveLength(29);
    expect(found(store, { _content: ['replaced'] })).toEqual(['t1']);
  });

  it('of a write that fails in a batch are not inserted, and those it took away are put back', async () => {
    const store = await openStore('failing');
    await store.write(observation('kept', 'unchanged'));
    const results = await Promise.allSettled([
      store.write(observation('a', 'alpha')),
      store.write(failingAfterItsText(observation('bad', 'zebra'), 'zebra')),
      store.write(observation('b', 'beta')),
      // an update of a version written earlier in the batch, failing after deleting that version's documents
      store.write(failingAfterItsText(observation('a', 'yak'), 'yak')),
      // and of a committed one
      store.write(failingAfterItsText(observation('kept', 'gnu'), 'gnu')),
    ]);
    expect(results.map((r) => r.status)).toEqual([
      'fulfilled',
      'rejected',
      'fulfilled',
      'rejected',
      'rejected',
    ]);
    expect(found(store, { _content: ['zebra'] })).toEqual([]);
    expect(found(store, { _content: ['yak'] })).toEqual([]);
    expect(found(store, { _content: ['gnu'] })).toEqual([]);
    expect(found(store, { _content: ['alpha'] })).toEqual(['a']);
    expect(found(store, { _text: ['alpha'] })).toEqual(['a']);
    expect(found(store, { _content: ['beta'] })).toEqual(['b']);
    expect(found(store, { _content: ['unchanged'] })).toEqual(['kept']);
  });

  it('of a rolled-back transaction or savepoint are never inserted, not even under the seq a later write reuses', async () => {
    const store = await openStore('rollback');
    await expect(
      store.transaction(async (tx) => {
        await tx.write(observation('gone', 'stale'));
        throw new Error('abandoned');
      }),
    ).rejects.toThrow('abandoned');
    // SQLite gives the rolled-back seq to the next version
    await store.write(observation('fresh', 'fresh'));
    expect(found(store, { _content: ['stale'] })).toEqual([]);
    expect(found(store, { _content: ['fresh'] })).toEqual(['fresh']);

    await store.transaction(async (tx) => {
      await tx.write(observation('outer', 'outer'));
      await expect(
        tx.transaction(async (inner: ResourceStore) => {
          await inner.write(observation('outer', 'inner'));
          await inner.write(observation('nested', 'nested'));
          throw new Error('inner abandoned');
        }),
      ).rejects.toThrow('inner abandoned');
    });
    expect(found(store, { _content: ['nested'] })).toEqual([]);
    expect(found(store, { _content: ['inner'] })).toEqual([]);
    expect(found(store, { _content: ['outer'] })).toEqual(['outer']);
  });

  it('are deleted with their version: update, delete, erasure, replaced index, also inside a transaction', async () => {
    const store = await openStore('deletions');
    for (const id of ['u', 'd', 'e', 'r', 'x']) await store.write(observation(id, `old ${id}`));
    await store.write(observation('u', 'new u'));
    await store.write({ resourceType: 'Observation', id: 'd', method: 'DELETE' });
    await store.eraseContent('Observation', 'e');
    const r = await store.read('Observation', 'r');
    expect(
      await store.replaceIndex({ resourceType: 'Observation', id: 'r', versionId: r!.versionId }, [
        { param: '_content', type: 'special', system: 'reindexed' },
      ]),
    ).toBe(true);
    await store.transaction(async (tx) => {
      await tx.write(observation('x', 'new x'));
      await tx.eraseContent!('Observation', 'x');
    });
    expect(found(store, { _content: ['old'] })).toEqual([]);
    expect(found(store, { _text: ['old'] })).toEqual([]);
    expect(found(store, { _content: ['new'] })).toEqual(['u']);
    expect(found(store, { _content: ['reindexed'] })).toEqual(['r']);
    expect(await store.indexEntries('Observation', 'r')).toEqual([{ param: '_content', type: 'special' }]);
    // no index row carries them
    expect(store.db.prepare("SELECT count(*) FROM search_index WHERE type = 'special'").pluck().get()).toBe(
      0,
    );
  });
});
