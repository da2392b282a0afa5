/**
 * Ledger / integrity benchmark (`npm run bench:ledger`), on Synthea resources (../shared/data/synthea-bundles).
 *
 * (1) The anchoring stage alone: canonical form + salted hash + ledger key (the write hook), the outbox, the
 *     Merkle batch, the journal, the ledger commit and markAnchored, for batch sizes 1, 100 and 1,000:
 *     anchors/s and resources per ledger transaction.
 * (2) The create path (store write with search index rows, as the create interaction does) with anchoring off and
 *     on (hook in the write transaction + the background worker committing batches concurrently).
 *
 * Options: --count N (resources per run, default 10000), --ledger embedded|fabric, --fabric-config FILE.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SqliteResourceStore } from '../src/fhir/store/sqlite/sqlite-store.js';
import type { IndexEntry, StoredVersion } from '../src/fhir/store/resource-store.js';
import { openEmbeddedLedger } from '../src/ledger/embedded/index.js';
import { loadFabricConfig, openFabricLedger } from '../src/ledger/fabric/index.js';
import { openIntegrity } from '../src/ledger/integrity-service.js';
import { pendingAnchorOf } from '../src/ledger/anchoring.js';
import type { Ledger } from '../src/ledger/ledger.js';
import { loadOrCreateKeyring } from '../src/mapping/hashing.js';
import { parseFhirJson, type FhirResource } from '../src/mapping/fhir-json.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '10000' },
    ledger: { type: 'string', default: 'embedded' },
    'fabric-config': { type: 'string' },
  },
});
const count = Number(args.count);

function loadResources(n: number): FhirResource[] {
  const dir = path.join(process.cwd(), '../shared/data/synthea-bundles');
  const out: FhirResource[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const bundle = parseFhirJson<{ entry: { resource: FhirResource }[] }>(
      readFileSync(path.join(dir, file), 'utf8'),
    );
    for (const entry of bundle.entry) {
      out.push(entry.resource);
      if (out.length >= n) return out;
    }
  }
  return out;
}

async function openLedger(dataDir: string): Promise<Ledger> {
  if (args.ledger === 'fabric') {
    if (!args['fabric-config']) throw new Error('--ledger fabric needs --fabric-config FILE');
    return openFabricLedger({ config: loadFabricConfig(args['fabric-config']) });
  }
  return openEmbeddedLedger({ dataDir, mspId: 'Org1MSP' });
}

async function withDataDir<T>(work: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hie-bench-ledger-'));
  try {
    return await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const resources = loadResources(count);
const bytes = resources.reduce((n, r) => n + JSON.stringify(r).length, 0);
console.log(
  `${resources.length} Synthea resources (mean ${Math.round(bytes / resources.length)} bytes), ledger: ${args.ledger}\n`,
);

// Index rows are computed once, outside the timings: both runs of (2) store the same rows.
const indexRows: IndexEntry[][] = resources.map((r) => extractIndex(r));

interface StageRow {
  batchSize: number;
  anchors: number;
  hashPerSec: number;
  commitPerSec: number;
  anchorsPerSec: number;
  perTx: number;
  transactions: number;
}

/** (1) The anchoring stage alone, for one batch size. */
async function anchoringStage(batchSize: number, n: number): Promise<StageRow> {
  return withDataDir(async (dir) => {
    const store = new SqliteResourceStore({ file: path.join(dir, 'resources.sqlite') });
    await store.init();
    const ledger = await openLedger(dir);
    const integrity = await openIntegrity({ dataDir: dir, store, ledger, anchoring: { batchSize } });
    // Store the versions first without anchors, then time the hook over their exact stored text.
    const stored: StoredVersion[] = [];
    for (let i = 0; i < n; i++) {
      const r = resources[i % resources.length];
      stored.push(
        await store.write({ resourceType: r.resourceType, id: `b${i}`, resource: r, method: 'PUT' }),
      );
    }
    const keyring = await loadOrCreateKeyring(dir);
    const t0 = performance.now();
    let sink = 0;
    for (const v of stored) sink += pendingAnchorOf(keyring, v).leafHash.length;
    const hashMs = performance.now() - t0;
    if (sink === 0) throw new Error('unreachable');

    // Queue + batch + commit: written again through the hook (the queue is the store's outbox row), then drained.
    const queued: StoredVersion[] = [];
    for (let i = 0; i < n; i++) {
      const r = resources[i % resources.length];
      queued.push(
        await store.write({
          resourceType: r.resourceType,
          id: `q${i}`,
          resource: r,
          method: 'PUT',
          anchor: integrity.anchorer.anchorFor,
        }),
      );
    }
    const heightBefore = await ledger.height();
    const t1 = performance.now();
    const anchored = await integrity.anchorer.drain();
    const commitMs = performance.now() - t1;
    const transactions = integrity.anchorer.status().committedBatches;
    if (anchored !== n) throw new Error(`anchored ${anchored} of ${n}`);
    const check = await integrity.verifier.verifyVersion(queued[n - 1]);
    if (!check.verified) throw new Error(`last version does not verify: ${check.reason}`);
    void heightBefore;
    await integrity.close();
    await ledger.close();
    await store.close();
    const totalMs = hashMs + commitMs;
    return {
      batchSize,
      anchors: n,
      hashPerSec: (n / hashMs) * 1000,
      commitPerSec: (n / commitMs) * 1000,
      anchorsPerSec: (n / totalMs) * 1000,
      perTx: n / transactions,
      transactions,
    };
  });
}

/** (2) The create path, anchoring off or on. */
async function createPath(anchoring: boolean, n: number): Promise<{ perSec: number; drainMs: number }> {
  return withDataDir(async (dir) => {
    const store = new SqliteResourceStore({ file: path.join(dir, 'resources.sqlite') });
    await store.init();
    const ledger = anchoring ? await openLedger(dir) : undefined;
    const integrity = ledger
      ? await openIntegrity({ dataDir: dir, store, ledger, anchoring: { batchSize: 1000, intervalMs: 200 } })
      : undefined;
    integrity?.anchorer.start();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const r = resources[i % resources.length];
      await store.write({
        resourceType: r.resourceType,
        id: `c${i}`,
        resource: r,
        method: 'POST',
        index: indexRows[i % indexRows.length],
        anchor: integrity?.anchorer.anchorFor,
      });
      // Yield now and then, as a server between requests does, so the worker gets its turns.
      if (i % 50 === 49) await new Promise((resolve) => setImmediate(resolve));
    }
    const ms = performance.now() - t0;
    const t1 = performance.now();
    if (integrity) {
      await integrity.anchorer.stop();
      await integrity.anchorer.drain();
    }
    const drainMs = performance.now() - t1;
    await integrity?.close();
    await ledger?.close();
    await store.close();
    return { perSec: (n / ms) * 1000, drainMs };
  });
}

const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

console.log('(1) Anchoring stage alone');
const stageRows: StageRow[] = [];
for (const batchSize of [1, 100, 1000]) {
  // Batch size 1 is one ledger transaction per anchor: a smaller sample keeps the run short.
  const n = batchSize === 1 ? Math.min(1000, count) : count;
  stageRows.push(await anchoringStage(batchSize, n));
}
console.table(
  stageRows.map((r) => ({
    'batch size': r.batchSize,
    anchors: r.anchors,
    'ledger txs': r.transactions,
    'resources/tx': r.perTx.toFixed(1),
    'hash+key /s': fmt(r.hashPerSec),
    'queue→commit /s': fmt(r.commitPerSec),
    'anchors/s (stage)': fmt(r.anchorsPerSec),
  })),
);

console.log('\n(2) Create path (store write + index rows), anchoring off vs on');
await createPath(false, Math.min(2000, count)); // warm-up
const off = await createPath(false, count);
const on = await createPath(true, count);
console.table([
  { anchoring: 'off', 'creates/s': fmt(off.perSec), 'drain after (ms)': '-' },
  { anchoring: 'on', 'creates/s': fmt(on.perSec), 'drain after (ms)': fmt(on.drainMs) },
]);
console.log(
  `anchoring cost: ${(((off.perSec - on.perSec) / off.perSec) * 100).toFixed(1)}% of create throughput (target < 10%)`,
);
