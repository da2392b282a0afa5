/**
 * What the SQLite adapter adds to the store contract:
 * - its cache of current versions (src/fhir/store/sqlite/current-cache.ts) never serves a version that is no longer
 *   current: not after its own writes, erasures or rolled-back transactions, nor after another connection (another
 *   process on the same file) commits;
 * - writes inside transaction(work) run without savepoints, and one that fails half-way rolls the transaction back.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { CurrentVersionCache } from '../../src/fhir/store/sqlite/current-cache.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { describeResourceStoreContract } from './contract.js';

const tempDirs: string[] = [];
function tempFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'hie-cache-'));
  tempDirs.push(dir);
  return join(dir, 'resources.sqlite');
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

async function open(file: string, readCacheBytes?: number): Promise<SqliteResourceStore> {
  const store = new SqliteResourceStore({ file, readCacheBytes });
  await store.init();
  return store;
}

const put = (store: SqliteResourceStore, id: string, family: string) =>
  store.write({
    resourceType: 'Patient',
    id,
    method: 'PUT',
    resource: { resourceType: 'Patient', name: [{ family }] },
  });

const familyOf = (version: StoredVersion | undefined) =>
  version?.json === undefined ? undefined : JSON.parse(version.json).name[0].family;

// The uncached read path keeps passing the whole contract too.
describeResourceStoreContract('sqlite file without read cache', () => open(tempFile(), 0));

describe('SqliteResourceStore read cache', () => {
  it('serves the new version after its own update and delete', async () => {
    const store = await open(tempFile());
    await put(store, 'a', 'One');
    expect(familyOf(await store.read('Patient', 'a'))).toBe('One');
    expect(familyOf(await store.read('Patient', 'a'))).toBe('One');
    await put(store, 'a', 'Two');
    expect(familyOf(await store.read('Patient', 'a'))).toBe('Two');
    await store.write({ resourceType: 'Patient', id: 'a', method: 'DELETE' });
    expect((await store.read('Patient', 'a'))?.deleted).toBe(true);
    await store.close();
  });

  it('sees commits of another connection to the same file', async () => {
    const file = tempFile();
    const server = await open(file);
    const otherProcess = await open(file);
    await put(server, 'b', 'Before');
    expect(familyOf(await server.read('Patient', 'b'))).toBe('Before');
    await put(otherProcess, 'b', 'After');
    expect(familyOf(await server.read('Patient', 'b'))).toBe('After');
    // An erasure by another process (hie-ledger erase) is seen at once as well.
    await otherProcess.eraseContent('Patient', 'b');
    const erased = await server.read('Patient', 'b');
    expect(erased?.deleted).toBe(true);
    expect(erased?.json).toBeUndefined();
    await otherProcess.close();
    await server.close();
  });

  it('sees its own erasure', async () => {
    const store = await open(tempFile());
    await put(store, 'c', 'Secret');
    expect(familyOf(await store.read('Patient', 'c'))).toBe('Secret');
    await store.eraseContent('Patient', 'c');
    expect((await store.read('Patient', 'c'))?.json).toBeUndefined();
    await store.close();
  });

  it('keeps nothing a rolled-back transaction wrote or read', async () => {
    const store = await open(tempFile());
    await put(store, 'd', 'Committed');
    await expect(
      store.transaction(async (tx) => {
        await tx.write({
          resourceType: 'Patient',
          id: 'd',
          method: 'PUT',
          resource: { resourceType: 'Patient', name: [{ family: 'RolledBack' }] },
        });
        expect(familyOf(await tx.read('Patient', 'd'))).toBe('RolledBack');
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    expect(familyOf(await store.read('Patient', 'd'))).toBe('Committed');
    await store.close();
  });

  it('shares frozen versions, so no reader can change what the next one gets', async () => {
    const store = await open(tempFile());
    await put(store, 'e', 'Frozen');
    const first = (await store.read('Patient', 'e'))!;
    expect(() => {
      (first as { json?: string }).json = '{}';
    }).toThrow(TypeError);
    expect(familyOf(await store.read('Patient', 'e'))).toBe('Frozen');
    await store.close();
  });
});

describe('CurrentVersionCache', () => {
  const version = (id: string, size: number): StoredVersion => ({
    resourceType: 'Patient',
    id,
    versionId: 1,
    lastUpdated: '2026-01-01T00:00:00.000Z',
    deleted: false,
    method: 'PUT',
    json: 'x'.repeat(size),
  });

  it('stays within its byte budget, evicting the least recently used first', () => {
    const cache = new CurrentVersionCache(10_000);
    cache.set('a', version('a', 2000));
    cache.set('b', version('b', 2000));
    expect(cache.get('a')?.id).toBe('a'); // a is now the most recent
    cache.set('c', version('c', 2000)); // over budget: b goes
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')?.id).toBe('a');
    expect(cache.get('c')?.id).toBe('c');
    cache.set('huge', version('huge', 100_000)); // larger than the whole budget: not kept
    expect(cache.get('huge')).toBeUndefined();
    expect(cache.size).toBe(2);
  });
});

describe('SqliteResourceStore writes inside transaction(work)', () => {
  it('rolls the whole transaction back when a write fails after storing part of its rows', async () => {
    const store = await open(tempFile());
    await put(store, 'kept', 'Before');
    await expect(
      store.transaction(async (tx) => {
        await tx.write({
          resourceType: 'Patient',
          id: 'kept',
          method: 'PUT',
          resource: { resourceType: 'Patient', name: [{ family: 'Changed' }] },
        });
        // An index row SQLite refuses (type is NOT NULL): the version row is in, the index row is not.
        await expect(
          tx.write({
            resourceType: 'Patient',
            id: 'half',
            method: 'PUT',
            resource: { resourceType: 'Patient' },
            index: [{ param: 'x', type: undefined as unknown as 'token', value: 'y' }],
          }),
        ).rejects.toThrow(/NOT NULL/);
        // work carries on as if nothing happened...
        await put(tx as SqliteResourceStore, 'later', 'Later');
      }),
    ).rejects.toThrow(/rolled back/);
    // ...but nothing of the transaction was committed, and the store works on.
    expect(familyOf(await store.read('Patient', 'kept'))).toBe('Before');
    expect(await store.read('Patient', 'half')).toBeUndefined();
    expect(await store.read('Patient', 'later')).toBeUndefined();
    await put(store, 'after', 'After');
    expect(familyOf(await store.read('Patient', 'after'))).toBe('After');
    await store.close();
  });
});
