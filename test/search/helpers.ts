/** Shared fixtures for search tests: the stores that search (SQLite, PostgreSQL), loaded with Synthea patients. */
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { searchSqlite } from '../../src/fhir/store/sqlite/sqlite-search.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import { patientCompartments } from '../../src/fhir/search/definitions.js';
import { OpenAccess, type AccessPolicy } from '../../src/fhir/interactions/access-policy.js';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import type { FhirContext, FhirRequest } from '../../src/fhir/interactions/types.js';
import type { ResourceStore, WriteRequest } from '../../src/fhir/store/resource-store.js';

export const SYNTHEA_DIR = join(process.cwd(), '../shared/data/synthea-bundles');

export function syntheaFiles(count: number): string[] {
  return readdirSync(SYNTHEA_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, count)
    .map((f) => join(SYNTHEA_DIR, f));
}

/** An in-memory SQLite store whose `search` runs sqlite-search (if the store does not wire it itself yet). */
export async function openStore(): Promise<SqliteResourceStore> {
  const store = new SqliteResourceStore({ file: ':memory:' });
  await store.init();
  if (!(store as ResourceStore).search) {
    (store as ResourceStore).search = async (request) => searchSqlite(store.db, request);
  }
  return store;
}

/** A PostgreSQL store in a schema of its own, dropped by close(). */
export async function openPostgresStore(): Promise<PostgresResourceStore> {
  const schema = `hie_test_${randomBytes(6).toString('hex')}`;
  const store = new PostgresResourceStore({ connectionString: POSTGRES_URL!, schema, maxConnections: 4 });
  await store.init();
  const close = store.close.bind(store);
  store.close = async () => {
    await store.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await close();
  };
  return store;
}

/** The stores every search test runs on; `skip` says why one cannot run here (asked when a suite is defined). */
export function searchStores(): { name: string; open: () => Promise<ResourceStore>; skip?: string }[] {
  return [
    { name: 'sqlite', open: openStore },
    { name: 'postgres', open: openPostgresStore, skip: postgresSkipReason('PostgreSQL search') },
  ];
}

/** A PUT of `resource` under its own id, with the index rows and compartments the service would store. */
export function indexedPut(resource: FhirResource): WriteRequest {
  return {
    resourceType: resource.resourceType,
    id: resource.id!,
    resource,
    method: 'PUT',
    index: extractIndex(resource),
    patients: patientCompartments(resource),
  };
}

/** Writes a Synthea bundle's resources directly (ids = their urn:uuid, references rewritten to Type/id). */
export async function loadSyntheaDirect(store: ResourceStore, file: string): Promise<FhirResource[]> {
  let text = readFileSync(file, 'utf8');
  const bundle = parseFhirJson<{ entry: { fullUrl: string; resource: FhirResource }[] }>(text);
  const map = new Map<string, string>();
  for (const e of bundle.entry)
    map.set(e.fullUrl, `${e.resource.resourceType}/${e.fullUrl.replace('urn:uuid:', '')}`);
  text = text.replace(/urn:uuid:[0-9a-f-]{36}/g, (m) => map.get(m) ?? m);
  const rewritten = parseFhirJson<{ entry: { resource: FhirResource }[] }>(text);
  const out: FhirResource[] = [];
  for (const [i, e] of rewritten.entry.entries()) {
    const id = bundle.entry[i].fullUrl.replace('urn:uuid:', '');
    const resource = { ...e.resource, id };
    await store.write({
      resourceType: resource.resourceType,
      id,
      resource,
      method: 'PUT',
      index: extractIndex(resource),
      patients: patientCompartments(resource),
    });
    out.push(resource);
  }
  return out;
}

export function context(store: ResourceStore, access: AccessPolicy = new OpenAccess()): FhirContext {
  const log = { info() {}, warn() {}, error() {}, debug() {} };
  return {
    store,
    access,
    validator: { validate: async () => [] } as unknown as FhirContext['validator'],
    log,
    indexEntries: extractIndex,
    patientsOf: patientCompartments,
  };
}

export function request(
  resourceType: string | undefined,
  query: Record<string, string | string[]>,
): FhirRequest {
  const q: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(query)) q[k] = Array.isArray(v) ? v : [v];
  return {
    interaction: resourceType ? 'search-type' : 'search-system',
    method: 'GET',
    resourceType,
    query: q,
    baseUrl: 'http://test/fhir',
  };
}

/** A resource read as loose JSON by assertions (FhirResource types only what every resource has). */
export type LooseResource = FhirResource & Record<string, any>;

export interface SearchBundle {
  resourceType: 'Bundle';
  type: string;
  total?: number;
  link: { relation: string; url: string }[];
  entry?: { fullUrl: string; resource: LooseResource; search: { mode: string } }[];
}
