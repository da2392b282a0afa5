/**
 * The SQLite store's start-up integrity check: a page of a table's b-tree overwritten with garbage (deterministic
 * bytes at a page found through dbstat) is found before the store serves, named by its table, and refuses the
 * start; a large store is checked in the background, readiness reading 'checking' until it is done.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteResourceStore, StoreCorruptError } from '../../src/fhir/store/sqlite/sqlite-store.js';
import {
  CHECK_NICE,
  checkInBackground,
  logIntegrityCheck,
} from '../../src/fhir/store/sqlite/integrity-check.js';

let dir: string;
let file: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'hie-store-check-'));
  file = path.join(dir, 'resources.sqlite');
  const store = new SqliteResourceStore({ file });
  await store.init();
  for (let i = 0; i < 200; i++) {
    await store.write({
      resourceType: 'Patient',
      id: `p${i}`,
      method: 'PUT',
      resource: { resourceType: 'Patient', name: [{ family: `Family${i}`.padEnd(200, 'x') }] },
      index: [{ param: 'family', type: 'string', value: `family${i}` }],
    });
  }
  await store.close(); // checkpoints the WAL into the file
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Overwrites the cell pointers of the second leaf page of this b-tree with 0xFF bytes. */
function corruptLeafOf(name: string): number {
  const db = new Database(file);
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const page = db
    .prepare(
      `SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno LIMIT 1 OFFSET 1`,
    )
    .pluck()
    .get(name) as number;
  db.close();
  expect(page).toBeGreaterThan(1);
  const fd = openSync(file, 'r+');
  try {
    // A table leaf page's header is 8 bytes; its cell pointer array follows. Pointers past the page are corrupt.
    writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, (page - 1) * pageSize + 8);
  } finally {
    closeSync(fd);
  }
  return page;
}

/** The damage is placed in resource_version (its table, or the table with its indexes), and nowhere else. */
function expectOnlyResourceVersion(where: string[]): void {
  expect(where).toContainEqual(expect.stringMatching(/^table resource_version\b/));
  for (const place of where) expect(place).toMatch(/\bresource_version\b/);
}

describe('start-up integrity check', () => {
  it('passes a sound store, in both modes, before init() returns', async () => {
    for (const integrityCheck of ['full', 'quick'] as const) {
      const store = new SqliteResourceStore({ file, integrityCheck });
      await store.init();
      expect(store.integrityStatus()).toBe('ok');
      expect(await store.integrityChecked()).toMatchObject({
        ok: true,
        mode: integrityCheck,
        background: false,
      });
      expect((await store.read('Patient', 'p7'))?.versionId).toBe(1);
      await store.close();
    }
  });

  it('refuses to open a store with a corrupt page of a table, naming the table', async () => {
    corruptLeafOf('resource_version');
    const store = new SqliteResourceStore({ file });
    const error = await store.init().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(StoreCorruptError);
    expect((error as Error).message).toMatch(
      /failed its integrity check \(full, \d+ ms\): corrupt in .*table resource_version/,
    );
    expectOnlyResourceVersion((error as StoreCorruptError).result.where);
    expect(store.integrityStatus()).toEqual({ failed: expect.stringContaining('table resource_version') });
    await store.close();
  });

  it('checks a large store in the background: readiness reads checking, then the failure and where', async () => {
    corruptLeafOf('resource_version');
    // Every store counts as large here: the check runs in a worker thread and init() does not wait for it.
    const store = new SqliteResourceStore({ file, integrityCheckSyncMaxBytes: 0 });
    await store.init();
    expect(store.integrityStatus()).toBe('checking');
    const result = await store.integrityChecked();
    expect(result).toMatchObject({ ok: false, mode: 'full', background: true });
    expectOnlyResourceVersion(result!.where);
    expect(store.integrityStatus()).toEqual({ failed: expect.stringContaining('table resource_version') });
    await store.close();
  });

  it('runs the background check in a process below normal priority, the service left at its own', async () => {
    const before = os.getPriority();
    const background = checkInBackground(file, 'full');
    const { outcome, nice } = await background.check;
    expect(outcome).toEqual({ rows: ['ok'] });
    expect(nice).toBe(Math.max(before, CHECK_NICE));
    expect(os.getPriority()).toBe(before);
    await background.stop();
  });

  it('closing the store stops a background check still running, at once', async () => {
    const store = new SqliteResourceStore({ file, integrityCheckSyncMaxBytes: 0 });
    await store.init();
    expect(store.integrityStatus()).toBe('checking');
    // Closed before the check could answer: no result (it was stopped), never a failure.
    await store.close();
    expect(await store.integrityChecked()).toBeUndefined();
  });

  it('a process that closes the store during the check, with nothing else pending, exits normally', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'test/store/fixtures/close-during-check.ts', file],
      { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const [code] = (await once(child, 'close')) as [number | null];
    // Exit code 13 was Node's "unsettled top-level await": close() waiting on the stopped check's unref'd handle.
    expect({ code, output: output.trim() }).toEqual({ code: 0, output: 'closed undefined' });
  });

  it('passes a sound large store in the background', async () => {
    const store = new SqliteResourceStore({ file, integrityCheckSyncMaxBytes: 0 });
    await store.init();
    expect(await store.integrityChecked()).toMatchObject({ ok: true, background: true });
    expect(store.integrityStatus()).toBe('ok');
    await store.close();
  });
});

describe('the service over a store', () => {
  it('refuses to start on a corrupt store, naming the table', async () => {
    corruptLeafOf('resource_version');
    const { startTestApp } = await import('../http/helpers.js');
    const refused = await startTestApp({}, { dataDir: dir, validation: 'schema', auditCron: 'off' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(StoreCorruptError);
    expect((refused as Error).message).toContain('table resource_version');
  });

  it('logs how long the check took, and a background failure once, with where', async () => {
    const lines: { level: string; msg: string; obj: object }[] = [];
    const log = {
      info: (obj: object, msg: string) => lines.push({ level: 'info', msg, obj }),
      error: (obj: object, msg: string) => lines.push({ level: 'error', msg, obj }),
    };
    const sound = new SqliteResourceStore({ file });
    await sound.init();
    logIntegrityCheck(sound.integrityChecked(), log);
    await sound.integrityChecked();
    await sound.close();
    corruptLeafOf('resource_version');
    const damaged = new SqliteResourceStore({ file, integrityCheckSyncMaxBytes: 0 });
    await damaged.init();
    logIntegrityCheck(damaged.integrityChecked(), log);
    await damaged.integrityChecked();
    await damaged.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.map((l) => l.level)).toEqual(['info', 'error']);
    expect(lines[0]!.msg).toMatch(/^store integrity check passed in \d+ ms$/);
    expect(lines[1]!.msg).toMatch(
      /^store integrity check FAILED after \d+ ms: corrupt in .*table resource_version/,
    );
    expect(lines[1]!.obj).toMatchObject({
      background: true,
      where: expect.arrayContaining([expect.stringMatching(/^table resource_version/)]),
    });
  });
});
