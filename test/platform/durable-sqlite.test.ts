/**
 * The data directory's durable SQLite files (network ids, patient links): created private in a private directory,
 * and opened with WAL, every commit fsynced (synchronous = FULL) and a busy wait for another connection's write.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDurableSqlite } from '../../src/platform/durable-sqlite.js';

const root = mkdtempSync(join(tmpdir(), 'hie-durable-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('openDurableSqlite', () => {
  it('creates the file 0600 in a new directory 0700, with WAL, synchronous FULL and a 5 s busy wait', () => {
    const file = join(root, 'exchange', 'links.sqlite');
    const db = openDurableSqlite(file);
    try {
      expect(statSync(join(root, 'exchange')).mode & 0o777).toBe(0o700);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('synchronous', { simple: true })).toBe(2); // FULL
      expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
    } finally {
      db.close();
    }
  });

  it('without a file, opens a database in memory with the same durability setting', () => {
    const db = openDurableSqlite();
    try {
      expect(db.memory).toBe(true);
      expect(db.pragma('synchronous', { simple: true })).toBe(2);
    } finally {
      db.close();
    }
  });
});
