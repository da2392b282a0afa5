/**
 * Search parity between the stores (issue 19): the same string searches give the same results on SQLite and on
 * PostgreSQL, whatever the database's own collation. FHIR string search (R4 3.1.1.5.9): case- and accent-insensitive,
 * matching the start of the value by default; `:exact` matches case and accents; `:contains` anywhere. Text that is
 * the same under Unicode canonical equivalence (NFC `ë` and NFD `e` + U+0308) matches alike. Sorting on strings, ids
 * and references is the same byte order everywhere (PostgreSQL: COLLATE "C"), also on a database whose default
 * collation is ICU en-US (which would order `b` before `C` and ignore `-`).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { searchType } from '../../src/fhir/interactions/search.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import { patientCompartments } from '../../src/fhir/search/definitions.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { context, openPostgresStore, openStore, request, type SearchBundle } from './helpers.js';

const url = POSTGRES_URL;
const SKIP = postgresSkipReason('PostgreSQL search parity');
const ICU_DATABASE = 'hie_test_icu_en_us';

/** A database whose default collation is ICU en-US (created once, kept: PostgreSQL 15+ with ICU). */
async function openIcuStore(): Promise<ResourceStore> {
  const admin = new pg.Pool({ connectionString: url!, max: 1 });
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [ICU_DATABASE]);
    if (exists.rowCount === 0) {
      await admin.query(
        `CREATE DATABASE ${ICU_DATABASE} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'`,
      );
    }
  } finally {
    await admin.end();
  }
  const icuUrl = new URL(url!);
  icuUrl.pathname = `/${ICU_DATABASE}`;
  const store = new PostgresResourceStore({ connectionString: icuUrl.toString(), schema: 'hie_parity' });
  await store.pool.query('DROP SCHEMA IF EXISTS hie_parity CASCADE');
  await store.init();
  return store;
}

const STORES: { name: string; open: () => Promise<ResourceStore>; skip?: string }[] = [
  { name: 'sqlite', open: openStore },
  { name: 'postgres', open: openPostgresStore, skip: SKIP },
  { name: 'postgres, ICU en-US default collation', open: openIcuStore, skip: SKIP },
];

// id -> family name; the ids themselves differ in case and punctuation (sorted by _id below).
const FAMILIES: Record<string, string> = {
  'a-1': 'Müller', // NFC ü
  'a.2': 'MULLER',
  A3: 'muller',
  B: 'Mueller',
  b: 'Mu\u0308ller', // NFD: u + combining diaeresis
  '9z': 'Zoë',
  C: 'Zoe\u0308',
  c: 'Ørsted',
  D: 'Ångström',
  d: 'straße',
  E: 'İnce',
  e: 'ZOLA',
};

async function load(store: ResourceStore): Promise<void> {
  for (const [id, family] of Object.entries(FAMILIES)) {
    const resource: FhirResource = { resourceType: 'Patient', id, name: [{ family }] } as FhirResource;
    await store.write({
      resourceType: 'Patient',
      id,
      resource,
      method: 'PUT',
      index: extractIndex(resource),
      patients: patientCompartments(resource),
    });
  }
  for (const [n, subject] of ['c', 'B', 'a-1', 'C', '9z'].entries()) {
    const resource = {
      resourceType: 'Observation',
      id: `o${n}`,
      status: 'final',
      code: { text: 'x' },
      subject: { reference: `Patient/${subject}` },
    } as FhirResource;
    await store.write({
      resourceType: 'Observation',
      id: resource.id!,
      resource,
      method: 'PUT',
      index: extractIndex(resource),
      patients: patientCompartments(resource),
    });
  }
}

/** What every store must answer (FHIR's rules, not any store's output). */
const CASES: { type: string; query: Record<string, string>; ids: string[]; ordered?: boolean }[] = [
  // case- and accent-insensitive prefix; NFC and NFD alike; not `Mueller`
  { type: 'Patient', query: { family: 'muller' }, ids: ['a-1', 'a.2', 'A3', 'b'] },
  { type: 'Patient', query: { family: 'MÜL' }, ids: ['a-1', 'a.2', 'A3', 'b'] },
  { type: 'Patient', query: { family: 'Mu\u0308l' }, ids: ['a-1', 'a.2', 'A3', 'b'] },
  { type: 'Patient', query: { family: 'zoë' }, ids: ['9z', 'C'] },
  { type: 'Patient', query: { family: 'ZOE\u0308' }, ids: ['9z', 'C'] },
  { type: 'Patient', query: { family: 'zo' }, ids: ['9z', 'C', 'e'] },
  { type: 'Patient', query: { family: 'angst' }, ids: ['D'] },
  { type: 'Patient', query: { family: 'strasse' }, ids: [] }, // ß is its own letter, not "ss"
  { type: 'Patient', query: { family: 'STRAß' }, ids: ['d'] },
  // :exact: case and accents count
  { type: 'Patient', query: { 'family:exact': 'Müller' }, ids: ['a-1'] },
  { type: 'Patient', query: { 'family:exact': 'muller' }, ids: ['A3'] },
  { type: 'Patient', query: { 'family:exact': 'Muller' }, ids: [] },
  // :contains anywhere, insensitive
  { type: 'Patient', query: { 'family:contains': 'LLE' }, ids: ['a-1', 'a.2', 'A3', 'B', 'b'] },
  { type: 'Patient', query: { 'family:contains': 'OË' }, ids: ['9z', 'C'] },
  // byte order of ids (`-` < `.` < digits < upper case < lower case), whatever the database collation
  {
    type: 'Patient',
    query: { _sort: '_id', _count: '100' },
    ids: ['9z', 'A3', 'B', 'C', 'D', 'E', 'a-1', 'a.2', 'b', 'c', 'd', 'e'],
    ordered: true,
  },
  {
    type: 'Patient',
    query: { _sort: '-_id', _count: '100' },
    ids: ['e', 'd', 'c', 'b', 'a.2', 'a-1', 'E', 'D', 'C', 'B', 'A3', '9z'],
    ordered: true,
  },
  // references in byte order too
  {
    type: 'Observation',
    query: { _sort: 'subject', _count: '100' },
    ids: ['o4', 'o1', 'o3', 'o2', 'o0'],
    ordered: true,
  },
];

const answers = new Map<string, string[][]>();

describe.each(STORES)('string search parity: $name', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  let store: ResourceStore;
  beforeAll(async () => {
    store = await backend.open();
    await load(store);
  });
  afterAll(async () => store?.close());

  it('answers every case as FHIR string search says', async () => {
    const got: string[][] = [];
    for (const { type, query, ids, ordered } of CASES) {
      const response = await searchType(request(type, query), context(store));
      const bundle = parseFhirJson<SearchBundle>(response.body as string);
      const found = (bundle.entry ?? []).map((e) => e.resource.id!);
      got.push(found);
      const label = `${type}?${JSON.stringify(query)}`;
      if (ordered) expect(found, label).toEqual(ids);
      else expect([...found].sort(), label).toEqual([...ids].sort());
    }
    answers.set(backend.name, got);
  });

  it('sorts strings alike on every store (case and accents do not decide the order)', async () => {
    const response = await searchType(
      request('Patient', { _sort: 'family,_id', _count: '100' }),
      context(store),
    );
    const order = (parseFhirJson<SearchBundle>(response.body as string).entry ?? []).map(
      (e) => e.resource.id!,
    );
    const sqlite = answers.get('sqlite:family');
    if (sqlite) expect(order).toEqual(sqlite[0]);
    else answers.set('sqlite:family', [order]);
    // the Müller family (any case, any accent, NFC or NFD) together, ordered by id among themselves
    const mullers = order.filter((id) => ['a-1', 'a.2', 'A3', 'b'].includes(id));
    const at = order.indexOf(mullers[0]!);
    expect(order.slice(at, at + 4)).toEqual(['A3', 'a-1', 'a.2', 'b']);
  });
});
