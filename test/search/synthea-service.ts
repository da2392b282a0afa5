/**
 * The running service over the 100 Synthea patients of ../shared/data/synthea-bundles, loaded once for all test
 * files that need it: the first builds a SQLite store file (the store's own write path with the service's index
 * extraction, one transaction per bundle, no anchors) in a cache directory keyed by a hash of the code that shapes
 * the file (index extraction, definitions, store schema and writer) and of the bundles; each test file then boots
 * the app over its own copy. A changed extractor or schema gives a new key, so a stale file is never reused.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { buildApp, type App } from '../../src/app/app.js';
import { loadConfig } from '../../src/config/config.js';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { suiteCacheDir } from '../support/cli-build.js';
import { indexedPut } from './helpers.js';
const SYNTHEA_DIR = join(process.cwd(), '../shared/data/synthea-bundles');

/** The files whose content decides what the loaded store holds. */
function keyFiles(): string[] {
  const dirs = ['src/fhir/search', 'src/fhir/store/sqlite', 'src/fhir/store'];
  const out: string[] = [];
  for (const dir of dirs)
    for (const name of readdirSync(dir).sort())
      if (name.endsWith('.ts')) out.push(join(process.cwd(), dir, name));
  return out;
}

export function syntheaBundleFiles(count = 100): string[] {
  return readdirSync(SYNTHEA_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, count)
    .map((f) => join(SYNTHEA_DIR, f));
}

function cacheKey(files: string[]): string {
  const hash = createHash('sha256');
  for (const file of keyFiles()) hash.update(file).update(readFileSync(file));
  for (const file of files) hash.update(file).update(String(statSync(file).size));
  return hash.digest('hex').slice(0, 20);
}

/**
 * A bundle's resources as stored: ids = their urn:uuid, `urn:uuid:` references rewritten to `Type/id` (what a
 * transaction does with them).
 */
export function bundleResources(file: string): FhirResource[] {
  let text = readFileSync(file, 'utf8');
  const bundle = parseFhirJson<{ entry: { fullUrl: string; resource: FhirResource }[] }>(text);
  const map = new Map<string, string>();
  for (const e of bundle.entry)
    map.set(e.fullUrl, `${e.resource.resourceType}/${e.fullUrl.replace('urn:uuid:', '')}`);
  text = text.replace(/urn:uuid:[0-9a-f-]{36}/g, (m) => map.get(m) ?? m);
  const rewritten = parseFhirJson<{ entry: { resource: FhirResource }[] }>(text);
  return rewritten.entry.map((e, i) => ({
    ...e.resource,
    id: bundle.entry[i]!.fullUrl.replace('urn:uuid:', ''),
  }));
}

async function buildStoreFile(files: string[], target: string): Promise<void> {
  const store = new SqliteResourceStore({ file: target });
  await store.init();
  for (const file of files) {
    const resources = bundleResources(file);
    await store.transaction(async (tx) => {
      for (const resource of resources) await tx.write(indexedPut(resource));
    });
  }
  store.db.pragma('wal_checkpoint(TRUNCATE)');
  store.db.exec('ANALYZE');
  await store.close();
}

/** The cached store file of these bundles, built when missing (concurrent builders: the first rename wins). */
export async function loadedStoreFile(files = syntheaBundleFiles()): Promise<string> {
  const dir = join(tmpdir(), `hie-test-synthea-${files.length}-${cacheKey(files)}`);
  const file = join(dir, 'resources.sqlite');
  if (existsSync(file)) return file;
  // One builder at a time (test files run in parallel forks): the others wait for its result.
  const lock = `${dir}.lock`;
  try {
    mkdirSync(lock);
  } catch {
    for (let waited = 0; waited < 600 && !existsSync(file); waited++)
      await new Promise((resolve) => setTimeout(resolve, 500));
    if (existsSync(file)) return file;
  }
  const building = join(tmpdir(), `hie-test-synthea-building-${randomBytes(6).toString('hex')}`);
  mkdirSync(building);
  await buildStoreFile(files, join(building, 'resources.sqlite'));
  for (const extra of ['resources.sqlite-wal', 'resources.sqlite-shm'])
    rmSync(join(building, extra), { force: true });
  try {
    renameSync(building, dir);
  } catch {
    rmSync(building, { recursive: true, force: true }); // another process built it first
  }
  rmSync(lock, { recursive: true, force: true });
  return file;
}

export interface LoadedService {
  app: App;
  stop(): Promise<void>;
}

/** The app (dev-open access) over a copy of the loaded store. */
export async function startLoadedService(files = syntheaBundleFiles()): Promise<LoadedService> {
  const source = await loadedStoreFile(files);
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-synthea-app-'));
  copyFileSync(source, join(dataDir, 'resources.sqlite'));
  const config = loadConfig(
    { dataDir, port: 0, host: '127.0.0.1', auth: 'dev-open', logLevel: 'warn', cacheDir: suiteCacheDir() },
    {},
  );
  const app = await buildApp(config, { logStream: new Writable({ write: (_c, _e, done) => done() }) });
  return {
    app,
    async stop() {
      await app.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Time allowed to a hook that may build the loaded store (measured: 2-4 min at load 20 on 2 cores). */
export const BUILD_TIMEOUT_MS = 900_000;
