/**
 * The import engine's progress reports (src/bulk/import/engine.ts): the scan reports once per SCAN_PROGRESS_EVERY
 * resources and at the end of each file, counting the whole import, so its last report is the number of resources
 * scanned. The target is a remote service (the engine's external edge), here one that stores every write.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importSources, SCAN_PROGRESS_EVERY } from '../../src/bulk/import/engine.js';
import type { ImportProgress, RemoteTarget } from '../../src/bulk/import/types.js';

const storesEverything: RemoteTarget = {
  exists: async () => false,
  matches: async () => [],
  write: async (writes) => writes.map(() => ({ status: 'stored' as const, versionId: 1 })),
};

function patients(prefix: string, count: number): string {
  return Array.from({ length: count }, (_, i) =>
    JSON.stringify({ resourceType: 'Patient', id: `${prefix}-${i}` }),
  )
    .join('\n')
    .concat('\n');
}

describe('import progress', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'hie-import-progress-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('reports the scan once per SCAN_PROGRESS_EVERY resources and at the end of each file, counting every file', async () => {
    const first = join(root, 'first.ndjson');
    const second = join(root, 'second.ndjson');
    const firstCount = 2 * SCAN_PROGRESS_EVERY + 5;
    writeFileSync(first, patients('a', firstCount));
    writeFileSync(second, patients('b', 7));
    const reports: ImportProgress[] = [];
    const summary = await importSources(
      [{ path: first }, { path: second }],
      {
        remote: storesEverything,
        journalFile: join(root, 'journal.sqlite'),
        baseUrl: 'http://localhost/fhir',
      },
      { outcome: () => undefined, progress: (p) => reports.push({ ...p }) },
    );
    expect(summary.byType.Patient?.stored).toBe(firstCount + 7);
    expect(reports.filter((p) => p.phase === 'scan').map((p) => p.done)).toEqual([
      SCAN_PROGRESS_EVERY,
      2 * SCAN_PROGRESS_EVERY,
      firstCount,
      firstCount + 7,
    ]);
    const writes = reports.filter((p) => p.phase === 'write');
    expect(writes.at(-1)).toEqual({ phase: 'write', done: firstCount + 7, total: firstCount + 7 });
  });
});
