/**
 * Store benchmark: writes, reads and history pages of the SQLite ResourceStore with real Synthea resources
 * (their search index rows and a salted-hash anchor per version, as the service writes them).
 * Index extraction is done before timing: this measures the store alone.
 *
 *   npx tsx bench/store.ts [bundles=10]      (also PostgreSQL when HIE_TEST_POSTGRES_URL is set)
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { patientCompartments } from '../src/fhir/search/definitions.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import type { StoredVersion, WriteRequest } from '../src/fhir/store/resource-store.js';
import { pendingAnchorOf } from '../src/integrity/anchorer.js';
import { LedgerKeyring } from '../src/integrity/hashing.js';
import { PostgresResourceStore } from '../src/fhir/store/postgres/postgres-store.js';
import type { ResourceStore } from '../src/fhir/store/resource-store.js';
import { SqliteResourceStore } from '../src/fhir/store/sqlite/sqlite-store.js';
import { parseFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';

const bundles = Number(process.argv[2] ?? 10);
const dataDir = join(process.cwd(), '../shared/data/synthea-bundles');

// The service's own anchor hook (salted leaf hash of the canonical form, HMAC ledger key), as every write runs it.
const keyring = new LedgerKeyring(randomBytes(32));
const anchor = (version: StoredVersion) => pendingAnchorOf(keyring, version);

const requests: WriteRequest[] = [];
for (const file of readdirSync(dataDir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .slice(0, bundles)) {
  const bundle = parseFhirJson<{ entry: { fullUrl: string; resource: FhirResource }[] }>(
    readFileSync(join(dataDir, file), 'utf8'),
  );
  for (const entry of bundle.entry) {
    const id = entry.fullUrl.replace('urn:uuid:', '');
    const resource = { ...entry.resource, id };
    requests.push({
      resourceType: resource.resourceType,
      id,
      method: 'POST',
      resource,
      index: extractIndex(resource),
      patients: patientCompartments(resource),
      custodian: 'Organization/bench',
      anchor,
    });
  }
}
const indexRows = requests.reduce((n, r) => n + (r.index?.length ?? 0), 0);

interface Row {
  store: string;
  operation: string;
  count: number;
  seconds: number;
}
const rows: Row[] = [];

async function time(store: string, operation: string, count: number, fn: () => Promise<void>): Promise<void> {
  const start = process.hrtime.bigint();
  await fn();
  rows.push({ store, operation, count, seconds: Number(process.hrtime.bigint() - start) / 1e9 });
}

async function run(label: string, store: ResourceStore): Promise<void> {
  await store.init();
  await time(label, 'create (1 write = 1 transaction)', requests.length, async () => {
    for (const r of requests) await store.write(r);
  });
  await time(label, 'update (PUT, replaces index rows)', requests.length, async () => {
    for (const r of requests) await store.write({ ...r, method: 'PUT' });
  });
  await time(label, 'create, 10 concurrent writers', requests.length, async () => {
    let next = 0;
    const writer = async () => {
      for (let i = next++; i < requests.length; i = next++) {
        await new Promise((resolve) => setImmediate(resolve)); // one request per event-loop turn, as over HTTP
        await store.write({ ...requests[i]!, id: `${requests[i]!.id}-c` });
      }
    };
    await Promise.all(Array.from({ length: 10 }, writer));
  });
  await time(label, 'create, 100 per transaction', requests.length, async () => {
    for (let i = 0; i < requests.length; i += 100) {
      await store.transaction(async (tx) => {
        for (const r of requests.slice(i, i + 100)) await tx.write({ ...r, id: `${r.id}-t` });
      });
    }
  });
  await time(label, 'read', requests.length, async () => {
    for (const r of requests) await store.read(r.resourceType, r.id);
  });
  await time(label, 'vread', requests.length, async () => {
    for (const r of requests) await store.vread(r.resourceType, r.id, 1);
  });
  const pages = 200;
  await time(label, 'history type Observation, page of 50', pages, async () => {
    let cursor: string | undefined;
    for (let i = 0; i < pages; i++) {
      const page = await store.history({ resourceType: 'Observation', count: 50, cursor });
      cursor = page.next;
    }
  });
  let n = 0;
  await time(label, 'allVersions', 4 * requests.length, async () => {
    for await (const _ of store.allVersions()) n++;
  });
  if (n !== 4 * requests.length) throw new Error(`allVersions gave ${n}`);
  await store.close();
}

const dir = mkdtempSync(join(tmpdir(), 'hie-bench-store-'));
try {
  await run('sqlite :memory:', new SqliteResourceStore({ file: ':memory:' }));
  await run('sqlite file, sync NORMAL', new SqliteResourceStore({ file: join(dir, 'normal.sqlite') }));
  await run(
    'sqlite file, sync FULL',
    new SqliteResourceStore({ file: join(dir, 'full.sqlite'), synchronous: 'FULL' }),
  );
  const url = process.env.HIE_TEST_POSTGRES_URL;
  if (url) {
    const schema = `hie_bench_${process.pid}`;
    const store = new PostgresResourceStore({ connectionString: url, schema });
    const close = store.close.bind(store);
    store.close = async () => {
      await store.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await close();
    };
    await run('postgres', store);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log(
  `${requests.length} Synthea resources from ${bundles} bundles, ${(indexRows / requests.length).toFixed(1)} index rows each, one anchor per version`,
);
console.log('| store | operation | count | seconds | per second |');
console.log('|---|---|---:|---:|---:|');
for (const r of rows) {
  console.log(
    `| ${r.store} | ${r.operation} | ${r.count} | ${r.seconds.toFixed(2)} | ${Math.round(r.count / r.seconds)} |`,
  );
}
