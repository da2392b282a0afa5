/**
 * The import's journal (src/bulk/import/journal.ts) on its own: the reference map's rule that a key's target is
 * chosen once (a second run, or a second file naming the same fullUrl, never assigns another id), and that a
 * journal reopened after a close still answers with it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ImportJournal } from '../../src/bulk/import/journal.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function journalFile(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'hie-import-journal-'));
  dirs.push(dir);
  return path.join(dir, 'journal.sqlite');
}

describe('import journal: the reference map', () => {
  it('binds a key once: a second bind answers the first target, in this run and after a reopen', () => {
    const file = journalFile();
    const journal = ImportJournal.open(file);
    try {
      expect(journal.bind('urn:uuid:1d5c2b47-0f4e-4c0a-9d0e-3b9a7f6c1e21', 'Patient/a1')).toBe('Patient/a1');
      expect(journal.bind('urn:uuid:1d5c2b47-0f4e-4c0a-9d0e-3b9a7f6c1e21', 'Patient/b2')).toBe('Patient/a1');
      expect(journal.bind('Patient/a1', 'Patient/a1')).toBe('Patient/a1');
      expect(journal.lookup('urn:uuid:1d5c2b47-0f4e-4c0a-9d0e-3b9a7f6c1e21')).toBe('Patient/a1');
      expect(journal.lookup('urn:uuid:00000000-0000-4000-8000-000000000000')).toBeUndefined();
    } finally {
      journal.close();
    }
    const reopened = ImportJournal.open(file);
    try {
      expect(reopened.bind('urn:uuid:1d5c2b47-0f4e-4c0a-9d0e-3b9a7f6c1e21', 'Patient/c3')).toBe('Patient/a1');
    } finally {
      reopened.close();
    }
  });
});
