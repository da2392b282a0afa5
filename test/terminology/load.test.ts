/**
 * `hie-ledger terminology load` into the data directory's terminology.sqlite: the LoadedCodeSystems contract
 * (code-systems-contract.ts: each owner's format from a small excerpt, read back through the port), and the data
 * directory's lock.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteCodeSystems, terminologyFile } from '../../src/terminology/terminology-store.js';
import { lockDataDir } from '../../src/platform/data-dir-lock.js';
import { writeExcerpts, type ExcerptPaths } from './excerpts.js';
import { describeLoadedCodeSystemsContract, loadInto } from './code-systems-contract.js';

let dir: string;
let dataDir: string;
let files: ExcerptPaths;

const load = (system: string, target: string) => loadInto({ dataDir }, system, target);

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'hie-terms-'));
  dataDir = path.join(dir, 'data');
  mkdirSync(dataDir);
  files = writeExcerpts(path.join(dir, 'releases'));
  for (const system of ['loinc', 'snomed', 'rxnorm', 'icd10cm', 'cvx'] as const) {
    const result = await load(system, files[system]);
    expect(result.err).toBe('');
    expect(result.code).toBe(0);
  }
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describeLoadedCodeSystemsContract('terminology.sqlite', {
  load,
  open: () => Promise.resolve(SqliteCodeSystems.openIfPresent(terminologyFile(dataDir))!),
  files: () => files,
  dir: () => dir,
});

describe('terminology load (SQLite)', () => {
  it('refuses an unknown system, a missing file, and a data directory the service owns', async () => {
    expect((await load('icd9', files.cvx)).code).toBe(2);
    const missing = await load('loinc', path.join(dir, 'nowhere'));
    expect(missing.code).toBe(2);
    const lock = lockDataDir(dataDir, 'serve');
    try {
      await expect(load('cvx', files.cvx)).rejects.toThrow(/serve|pid/);
    } finally {
      lock.release();
    }
  });
});
