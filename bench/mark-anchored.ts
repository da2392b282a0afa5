/**
 * CPU of SqliteResourceStore.markAnchored per key marked (the anchoring worker's last store step of a batch), for
 * this checkout's build and others given as arguments (built checkouts: `dist/` present), interleaved round by round
 * on fresh store files: BENCH_MARK_KEYS pending anchors (default 6,000) marked in batches of 1,000 (the default
 * anchor batch size); median of BENCH_ROUNDS (default 5). CPU time, not wall time: meaningful on a loaded machine.
 *
 *   npx tsc -p tsconfig.build.json && npx tsx bench/mark-anchored.ts /path/to/built/main
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './support.js';

interface VersionKey {
  resourceType: string;
  id: string;
  versionId: number;
}
interface Store {
  init(): Promise<void>;
  write(request: Record<string, unknown>): Promise<unknown>;
  markAnchored(keys: VersionKey[], anchor: Record<string, unknown>): Promise<void>;
  pendingAnchors(limit: number): Promise<unknown[]>;
  close(): Promise<void>;
}
type StoreClass = new (options: { file: string }) => Store;

const KEYS = Number(process.env.BENCH_MARK_KEYS ?? 6000);
const BATCH = 1000;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);

async function main(): Promise<void> {
  const roots = [ROOT, ...process.argv.slice(2)];
  const classes: StoreClass[] = [];
  for (const root of roots) {
    const url = pathToFileURL(join(root, 'dist', 'src', 'fhir', 'store', 'sqlite', 'sqlite-store.js')).href;
    classes.push(((await import(url)) as { SqliteResourceStore: StoreClass }).SqliteResourceStore);
  }
  const runs: number[][] = roots.map(() => []);
  console.log(`markAnchored: ${KEYS} keys in batches of ${BATCH}, load average ${loadavg()[0]!.toFixed(2)}`);
  for (let round = 0; round < ROUNDS; round++) {
    for (let b = 0; b < roots.length; b++) {
      const dir = mkdtempSync(join(tmpdir(), 'hie-bench-mark-'));
      const store = new classes[b]!({ file: join(dir, 'resources.sqlite') });
      try {
        await store.init();
        const keys: VersionKey[] = [];
        for (let k = 0; k < KEYS; k++) {
          const id = `01930000-0000-7000-8000-${String(k).padStart(12, '0')}`;
          await store.write({
            resourceType: 'Basic',
            id,
            resource: { resourceType: 'Basic', id, code: { text: 'x' } },
            method: 'PUT',
            patients: [],
            index: [],
            anchor: (v: VersionKey) => ({
              ...v,
              salt: 'ab'.repeat(32),
              leafHash: 'cd'.repeat(32),
              ledgerKey: 'ef'.repeat(32),
              leafVersion: 1,
            }),
          });
          keys.push({ resourceType: 'Basic', id, versionId: 1 });
        }
        const start = process.cpuUsage();
        for (let at = 0; at < KEYS; at += BATCH) {
          const part = keys.slice(at, at + BATCH);
          await store.markAnchored(part, {
            transactionId: 'aa'.repeat(32),
            blockNumber: 7,
            batchId: 'bb'.repeat(32),
            root: 'bb'.repeat(32),
            leafCount: part.length,
            leafIndexes: part.map((_, i) => i),
          });
        }
        const used = process.cpuUsage(start);
        if ((await store.pendingAnchors(1)).length > 0) throw new Error(`${roots[b]}: anchors left pending`);
        runs[b]!.push((used.user + used.system) / KEYS);
      } finally {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  roots.forEach((root, b) => {
    const sorted = [...runs[b]!].sort((x, y) => x - y);
    console.log(
      `  ${b === 0 ? 'this' : root}: ${sorted[sorted.length >> 1]!.toFixed(2)} us CPU per key (runs: ${runs[b]!.map((r) => r.toFixed(2)).join(' ')})`,
    );
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
