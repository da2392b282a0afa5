/**
 * Ledger / integrity benchmark (`npm run bench:ledger`), on Synthea resources (../shared/data/synthea-bundles).
 *
 * (1) The anchoring stage alone: canonical form + salted hash + ledger key (the write hook), the outbox, the
 *     Merkle batch, the journal, the ledger commit and markAnchored, for batch sizes 1, 100 and 1,000:
 *     anchors/s and resources per ledger transaction.
 * (2) The create path with anchoring off and on (hook in the write transaction + the background worker committing
 *     batches concurrently): the store write with its index rows, and the whole create interaction through the app
 *     (fastify.inject: routing, parsing, schema validation, index extraction, store; no network).
 *
 * Options: --count N (resources per run, default 10000), --ledger embedded|fabric, --fabric-config FILE,
 * --in-flight LIST (batches in flight in (1), default 1,4: 1 is the baseline of the same run).
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
import { openIntegrity } from '../src/integrity/integrity-service.js';
import { pendingAnchorOf } from '../src/integrity/anchorer.js';
import type { Ledger } from '../src/ledger/ledger.js';
import { loadOrCreateKeyring } from '../src/integrity/hashing.js';
import { parseFhirJson, stringifyFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import { buildApp } from '../src/app/app.js';
import { loadConfig } from '../src/config/config.js';

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '10000' },
    ledger: { type: 'string', default: 'embedded' },
    'fabric-config': { type: 'string' },
    'in-flight': { type: 'string', default: '1,4' },
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
  `load average ${os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')} on ${os.cpus().length} CPUs`,
);
console.log(
  `${resources.length} Synthea resources (mean ${Math.round(bytes / resources.length)} bytes), ledger: ${args.ledger}\n`,
);

// Index rows are computed once, outside the timings: both runs of (2) store the same rows.
const indexRows: IndexEntry[][] = resources.map((r) => extractIndex(r));

interface StageRow {
  batchSize: number;
  inFlight: number;
  anchors: number;
  hashPerSec: number;
  commitPerSec: number;
  anchorsPerSec: number;
  /** The same per second of this process's CPU time (steadier on a loaded machine; excludes fsync waits). */
  anchorsPerCpuSec: number;
  perTx: number;
  transactions: number;
}

/** (1) The anchoring stage alone, for one batch size. */
async function anchoringStage(batchSize: number, inFlight: number, n: number): Promise<StageRow> {
  return withDataDir(async (dir) => {
    const store = new SqliteResourceStore({ file: path.join(dir, 'resources.sqlite') });
    await store.init();
    const ledger = await openLedger(dir);
    const integrity = await openIntegrity({
      dataDir: dir,
      store,
      ledger,
      anchoring: { batchSize, maxInFlight: inFlight },
    });
    // Store the versions first without anchors, then time the hook over their exact stored text.
    const stored: StoredVersion[] = [];
    for (let i = 0; i < n; i++) {
      const r = resources[i % resources.length];
      stored.push(
        await store.write({ resourceType: r.resourceType, id: `b${i}`, resource: r, method: 'PUT' }),
      );
    }
    const keyring = await loadOrCreateKeyring(dir);
    const cpuSeconds = (since: NodeJS.CpuUsage) => {
      const used = process.cpuUsage(since);
      return (used.user + used.system) / 1e6;
    };
    const hashCpu = process.cpuUsage();
    const t0 = performance.now();
    let sink = 0;
    for (const v of stored) sink += pendingAnchorOf(keyring, v).leafHash.length;
    const hashMs = performance.now() - t0;
    const hashCpuSec = cpuSeconds(hashCpu);
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
    const commitCpu = process.cpuUsage();
    const t1 = performance.now();
    const anchored = await integrity.anchorer.drain();
    const commitMs = performance.now() - t1;
    const commitCpuSec = cpuSeconds(commitCpu);
    const transactions = integrity.anchorer.status().committedBatches;
    if (anchored !== n) throw new Error(`anchored ${anchored} of ${n}`);
    const check = await integrity.verifier.verifyVersion(queued[n - 1]);
    if (!check.verified) throw new Error(`last version does not verify: ${check.reason}`);
    await integrity.close();
    await ledger.close();
    await store.close();
    const totalMs = hashMs + commitMs;
    return {
      batchSize,
      inFlight,
      anchors: n,
      hashPerSec: (n / hashMs) * 1000,
      commitPerSec: (n / commitMs) * 1000,
      anchorsPerSec: (n / totalMs) * 1000,
      anchorsPerCpuSec: n / (hashCpuSec + commitCpuSec),
      perTx: n / transactions,
      transactions,
    };
  });
}

/** (2) The create path, anchoring off or on. */
async function createPath(
  anchoring: boolean,
  n: number,
): Promise<{ perSec: number; perCpuSec: number; drainMs: number }> {
  return withDataDir(async (dir) => {
    const store = new SqliteResourceStore({ file: path.join(dir, 'resources.sqlite') });
    await store.init();
    const ledger = anchoring ? await openLedger(dir) : undefined;
    const integrity = ledger
      ? await openIntegrity({ dataDir: dir, store, ledger, anchoring: { batchSize: 1000, intervalMs: 200 } })
      : undefined;
    integrity?.anchorer.start();
    const cpu0 = process.cpuUsage();
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
    const cpu = process.cpuUsage(cpu0);
    // Creates per CPU-second, the worker's batches and the final drain included (steady on a loaded machine).
    return { perSec: (n / ms) * 1000, perCpuSec: n / ((cpu.user + cpu.system) / 1e6), drainMs };
  });
}

const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

console.log('(1) Anchoring stage alone');
const stageRows: StageRow[] = [];
const inFlightCounts = args['in-flight'].split(',').map(Number);
for (const batchSize of [1, 100, 1000]) {
  for (const inFlight of inFlightCounts) {
    // Batch size 1 is one ledger transaction per anchor: a smaller sample keeps the run short.
    const n = batchSize === 1 ? Math.min(1000, count) : count;
    stageRows.push(await anchoringStage(batchSize, inFlight, n));
  }
}
const baselineOf = (row: StageRow) =>
  stageRows.find((r) => r.batchSize === row.batchSize && r.inFlight === inFlightCounts[0])!;
console.table(
  stageRows.map((r) => ({
    'batch size': r.batchSize,
    'in flight': r.inFlight,
    anchors: r.anchors,
    'ledger txs': r.transactions,
    'resources/tx': r.perTx.toFixed(1),
    'hash+key /s': fmt(r.hashPerSec),
    'queue→commit /s': fmt(r.commitPerSec),
    'anchors/s (stage)': fmt(r.anchorsPerSec),
    'anchors/CPU-s': fmt(r.anchorsPerCpuSec),
    [`vs ${inFlightCounts[0]} in flight`]: `${(r.commitPerSec / baselineOf(r).commitPerSec).toFixed(2)}x`,
  })),
);

/** (2b) The full create interaction (routing, parsing, validation, index, store) through the app, no network. */
async function httpCreatePath(
  anchoring: boolean,
  n: number,
): Promise<{ perSec: number; perCpuSec: number; drainMs: number }> {
  return withDataDir(async (dir) => {
    const config = loadConfig(
      {
        dataDir: dir,
        auth: 'dev-open',
        logLevel: 'silent',
        auditCron: 'off',
        anchoring: anchoring ? 'on' : 'off',
      },
      {},
    );
    const app = await buildApp(config, args.ledger === 'fabric' ? { ledger: await openLedger(dir) } : {});
    const bodies = resources.map((r) => {
      const { id: _id, ...rest } = r;
      return stringifyFhirJson(rest);
    });
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const res = await app.fastify.inject({
        method: 'POST',
        url: `/fhir/${resources[i % resources.length].resourceType}`,
        headers: { 'content-type': 'application/fhir+json', prefer: 'return=minimal' },
        payload: bodies[i % bodies.length],
      });
      if (res.statusCode !== 201)
        throw new Error(`create answered ${res.statusCode}: ${res.body.slice(0, 300)}`);
    }
    const ms = performance.now() - t0;
    const t1 = performance.now();
    if (anchoring) {
      await app.integrity!.anchorer.stop();
      await app.integrity!.anchorer.drain();
    }
    const drainMs = performance.now() - t1;
    await app.close();
    const cpu = process.cpuUsage(cpu0);
    // Creates per CPU-second, the worker's batches and the final drain included (steady on a loaded machine).
    return { perSec: (n / ms) * 1000, perCpuSec: n / ((cpu.user + cpu.system) / 1e6), drainMs };
  });
}

const cost = (off: number, on: number) => `${(((off - on) / off) * 100).toFixed(1)}%`;

console.log('\n(2) Create path, anchoring off vs on (worker committing batches of 1,000 concurrently)');
const storeN = count;
await createPath(false, Math.min(2000, storeN)); // warm-up
const storeOff = await createPath(false, storeN);
const storeOn = await createPath(true, storeN);
const httpN = Math.min(count, 3000);
await httpCreatePath(false, Math.min(300, httpN)); // warm-up (schema compilation)
const httpOff = await httpCreatePath(false, httpN);
const httpOn = await httpCreatePath(true, httpN);
console.table([
  {
    path: 'store.write (+index rows)',
    n: storeN,
    'off /s': fmt(storeOff.perSec),
    'on /s': fmt(storeOn.perSec),
    cost: cost(storeOff.perSec, storeOn.perSec),
    'off /CPU-s': fmt(storeOff.perCpuSec),
    'on /CPU-s': fmt(storeOn.perCpuSec),
    'cost (CPU)': cost(storeOff.perCpuSec, storeOn.perCpuSec),
    'drain after (ms)': fmt(storeOn.drainMs),
  },
  {
    path: 'create interaction (app.inject)',
    n: httpN,
    'off /s': fmt(httpOff.perSec),
    'on /s': fmt(httpOn.perSec),
    cost: cost(httpOff.perSec, httpOn.perSec),
    'off /CPU-s': fmt(httpOff.perCpuSec),
    'on /CPU-s': fmt(httpOn.perCpuSec),
    'cost (CPU)': cost(httpOff.perCpuSec, httpOn.perCpuSec),
    'drain after (ms)': fmt(httpOn.drainMs),
  },
]);
console.log('target: anchoring costs under 10% of create throughput');
