/**
 * Quantity search (R4 search.html#quantity, #prefix) over the quantity index (index-entries.ts quantityEntries: unit
 * rows, UCUM canonical units, comparators as intervals), on every store that searches; the index rebuild an
 * upgraded store runs (ResourceStore.rebuildIndex); and the query plan: the condition is a range of an index.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { searchType } from '../../src/fhir/interactions/search.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import { parseSearch } from '../../src/fhir/search/parse.js';
import type { IndexEntry, ResourceStore } from '../../src/fhir/store/resource-store.js';
import { postgresDialect, runPlan, SearchRun, type SearchEffect } from '../../src/fhir/store/search-sql.js';
import type { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { sqliteStoreDialect } from '../../src/fhir/store/sqlite/sqlite-search.js';
import type { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { context, request, searchStores, type SearchBundle } from './helpers.js';

const UCUM = 'http://unitsofmeasure.org';
const CODE = { coding: [{ system: 'http://loinc.org', code: '2345-7' }] };

/** id -> valueQuantity */
const QUANTITIES: Record<string, Record<string, unknown>> = {
  a: { value: 100, unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
  b: { value: 1, unit: 'g/L', system: UCUM, code: 'g/L' },
  d: { value: 150, unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
  e: { value: 100, unit: 'mg/dL' },
  f: { value: 50, comparator: '<', unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
  g: { value: 100, unit: 'widgets', system: 'http://example.org/units', code: 'widget' },
  h: { value: 99.7, unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
  i: { value: 37, unit: '°C', system: UCUM, code: 'Cel' },
  j: { value: 98.6, unit: '°F', system: UCUM, code: '[degF]' },
  k: { value: 200, comparator: '>=', unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
};

function observation(id: string): FhirResource {
  return {
    resourceType: 'Observation',
    id,
    status: 'final',
    code: CODE,
    valueQuantity: QUANTITIES[id],
  } as FhirResource;
}

/** What each query must find (ids), per the R4 rules the header of search-sql.ts quantityRowsCondition states. */
const CASES: [string, string[]][] = [
  // eq: the precision range of the searched value [99.5, 100.5) mg/dL; 1 g/L is 100 mg/dL
  [`100|${UCUM}|mg/dL`, ['a', 'b', 'h']],
  // 1 g/L: [0.5, 1.5) g/L = [50, 150) mg/dL
  [`1|${UCUM}|g/L`, ['a', 'b', 'h']],
  [`gt100|${UCUM}|mg/dL`, ['d', 'k']],
  [`ge100|${UCUM}|mg/dL`, ['a', 'b', 'd', 'k']],
  [`lt100|${UCUM}|mg/dL`, ['f', 'h']],
  // `<50` holds values below 40 too; `>=200` holds values above 300
  [`lt40|${UCUM}|mg/dL`, ['f']],
  [`gt300|${UCUM}|mg/dL`, ['k']],
  [`le50|${UCUM}|mg/dL`, ['f']],
  [`gt0.6|${UCUM}|g/L`, ['a', 'b', 'd', 'h', 'k']],
  // sa/eb: wholly after/before the searched value's precision range
  [`sa100|${UCUM}|mg/dL`, ['d', 'k']],
  [`eb100|${UCUM}|mg/dL`, ['f']],
  [`ne100|${UCUM}|mg/dL`, ['d', 'f', 'k']],
  [`ap100|${UCUM}|mg/dL`, ['a', 'b', 'h']],
  // `number||code`: code or unit as written, no conversion
  ['100||mg/dL', ['a', 'e', 'h']],
  ['1||g/L', ['b']],
  ['37||°C', ['i']],
  // no unit: the value as written, whatever its unit
  ['100', ['a', 'e', 'g', 'h']],
  ['gt140', ['d', 'k']],
  // another system: that system and code, as written
  ['100|http://example.org/units|widget', ['g']],
  ['100|http://example.org/units|mg/dL', []],
  // special units: 98.6 [degF] is 37 Cel
  [`37|${UCUM}|Cel`, ['i', 'j']],
  [`gt310|${UCUM}|K`, ['i', 'j']],
  // a UCUM code that does not convert matches that code as written only
  [`100|${UCUM}|[IU]`, []],
  // OR of values
  [`gt140|${UCUM}|mg/dL,1|${UCUM}|g/L`, ['a', 'b', 'd', 'h', 'k']],
];

describe.each(searchStores())('quantity search on the $name store', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  let store: ResourceStore;

  async function ids(query: Record<string, string>): Promise<string[]> {
    const response = await searchType(request('Observation', { ...query, _count: '100' }), context(store));
    expect(response.status).toBe(200);
    const bundle = parseFhirJson<SearchBundle>(response.body as string);
    return (bundle.entry ?? []).map((e) => e.resource.id!).sort();
  }

  beforeAll(async () => {
    store = await backend.open();
    for (const id of Object.keys(QUANTITIES)) {
      const resource = observation(id);
      await store.write({
        resourceType: 'Observation',
        id,
        resource,
        method: 'PUT',
        index: extractIndex(resource),
      });
    }
  });
  afterAll(async () => store.close());

  it.each(CASES)('value-quantity=%s', async (value, want) => {
    // The parameter alone (its rows drive the query) and with a code (probed per candidate): the same matches.
    expect(await ids({ 'value-quantity': value })).toEqual(want);
    expect(await ids({ 'value-quantity': value, code: 'http://loinc.org|2345-7' })).toEqual(want);
  });

  it('combo-value-quantity (an alias of value-quantity and component-value-quantity) converts units too', async () => {
    expect(await ids({ 'combo-value-quantity': `1|${UCUM}|g/L` })).toEqual(['a', 'b', 'h']);
  });

  it('sorts by the value as written (its own row), whatever the unit rows', async () => {
    const response = await searchType(
      request('Observation', { 'value-quantity': `ge100|${UCUM}|mg/dL`, _sort: '-value-quantity' }),
      context(store),
    );
    const bundle = parseFhirJson<SearchBundle>(response.body as string);
    expect((bundle.entry ?? []).map((e) => e.resource.id)).toEqual(['k', 'd', 'a', 'b']);
  });
});

/** The rows an older store held for a quantity (before unit rows): its precision range, code and unit. */
function oldRows(resource: FhirResource): IndexEntry[] {
  return extractIndex(resource)
    .filter((e) => e.type !== 'quantity' || !e.param.includes('|'))
    .map((e) => (e.type === 'quantity' ? { ...e, low: (e.low ?? 0) - 0.5, high: (e.high ?? 0) + 0.5 } : e));
}

describe.each(searchStores())('an upgraded $name store re-indexes its quantities', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  it('rows written before the quantity migration are rebuilt by rebuildIndex, which then has nothing left to do', async () => {
    const store = await backend.open();
    try {
      for (const id of ['a', 'b', 'd']) {
        const resource = observation(id);
        await store.write({
          resourceType: 'Observation',
          id,
          resource,
          method: 'PUT',
          index: oldRows(resource),
        });
      }
      // As the quantity migration finds such a store: a rebuild is queued.
      await queueRebuild(backend.name, store);
      const find = async (value: string) => {
        const response = await searchType(
          request('Observation', { 'value-quantity': value }),
          context(store),
        );
        const bundle = parseFhirJson<SearchBundle>(response.body as string);
        return (bundle.entry ?? []).map((e) => e.resource.id!).sort();
      };
      expect(await find(`1|${UCUM}|g/L`)).toEqual([]);
      const extract = (json: string) => extractIndex(parseFhirJson(json));
      expect(await store.rebuildIndex!(extract)).toBe(3);
      expect(await find(`1|${UCUM}|g/L`)).toEqual(['a', 'b']);
      expect(await store.rebuildIndex!(extract)).toBe(0);
    } finally {
      await store.close();
    }
  });
});

/** Queues a rebuild as the quantity migration does (the store was created at the current schema). */
async function queueRebuild(name: string, store: ResourceStore): Promise<void> {
  const sql =
    "INSERT INTO index_rebuild (name, row_type, after_seq) SELECT 'search-rows-2026-12', NULL, 0 WHERE EXISTS (SELECT 1 FROM resource_current)";
  if (name === 'sqlite') (store as SqliteResourceStore).db.prepare(sql).run();
  else {
    const S = schemaOf(store);
    await (store as PostgresResourceStore).pool.query(
      sql
        .replace('INTO index_rebuild', `INTO ${S}.index_rebuild`)
        .replace('FROM resource_current', `FROM ${S}.resource_current`),
    );
  }
}

const schemaOf = (store: ResourceStore): string => `"${(store as PostgresResourceStore).schema}"`;

describe.each(searchStores())(
  'the quantity index answers the search on the $name store (query plan)',
  (backend) => {
    if (backend.skip) {
      it.skip(backend.skip, () => undefined);
      return;
    }
    let store: ResourceStore;
    beforeAll(async () => {
      store = await backend.open();
      await store.transaction(async (tx) => {
        for (let i = 0; i < 2000; i++) {
          const resource = {
            resourceType: 'Observation',
            id: `q${i}`,
            status: 'final',
            code: CODE,
            valueQuantity: { value: i % 400, unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
          } as FhirResource;
          await tx.write({
            resourceType: 'Observation',
            id: resource.id!,
            resource,
            method: 'PUT',
            index: extractIndex(resource),
          });
        }
      });
    });
    afterAll(async () => store.close());

    /**
     * The plans of the search's statements: `rows` (the candidates) and `count` (how many index rows the filter
     * matches, asked when a caller with a narrow read scope has many rows of its own: its SQL is the filter's
     * index rows alone). PostgreSQL plans the candidates of 2,000 resources by joining everything (cheap at that
     * size), so there the filter's own statement shows what the index does.
     */
    async function plans(value: string): Promise<{ rows: string; count: string }> {
      const query = parseSearch({ 'value-quantity': [value] }, { resourceType: 'Observation' });
      const sqlite = backend.name === 'sqlite';
      const run = new SearchRun(
        sqlite ? sqliteStoreDialect((store as SqliteResourceStore).db) : postgresDialect(schemaOf(store)),
        {
          query,
          canRead: () => true,
          scope: () => ({
            unrestricted: false,
            withoutPatients: false,
            custodian: 'Organization/x',
            patients: [],
          }),
        },
      );
      const out = { rows: '', count: '' };
      const explain = async (sql: string, binds: (string | number)[]): Promise<string> => {
        if (sqlite) {
          const rows = (store as SqliteResourceStore).db
            .prepare(`EXPLAIN QUERY PLAN ${sql}`)
            .all(...binds) as { detail: string }[];
          return rows.map((r) => r.detail).join('\n');
        }
        let n = 0;
        const { rows } = await (store as PostgresResourceStore).pool.query<{ 'QUERY PLAN': string }>(
          `EXPLAIN ${sql.replace(/\?/g, () => `$${++n}`)}`,
          binds,
        );
        return rows.map((r) => r['QUERY PLAN']).join('\n');
      };
      // Counts answered as "many", so the filter's own count is asked too.
      await runPlan(run.search(), async (effect: SearchEffect) => {
        if (effect.op === 'rows') out.rows = await explain(effect.sql, effect.binds);
        if (effect.op === 'count') {
          if (effect.sql.includes("si.type = 'quantity'"))
            out.count = await explain(effect.sql, effect.binds);
          return 1_000_000;
        }
        return [];
      });
      return out;
    }

    it('gt, lt and eq with a UCUM unit read the index entries of the converted unit (gt, eq: a range of them), not every row', async () => {
      if (backend.name === 'postgres') {
        const S = schemaOf(store);
        for (const table of ['search_index', 'resource_current', 'resource_version'])
          await (store as PostgresResourceStore).pool.query(`ANALYZE ${S}.${table}`);
      }
      const gt = await plans(`gt390|${UCUM}|mg/dL`);
      const lt = await plans(`lt0.1|${UCUM}|g/L`);
      const eq = await plans(`100|${UCUM}|mg/dL`);
      if (backend.name === 'sqlite') {
        // schema migration 13: quantities in (key, high, low) only; a bound on high is a seek, a bound on low reads
        // the unit's entries there, from the index alone
        expect(gt.count).toMatch(/COVERING INDEX search_index_range_high \(param_key=\? AND high>\?\)/);
        expect(lt.count).toMatch(/COVERING INDEX search_index_range_high \(param_key=\?\)/);
        expect(eq.count).toMatch(/COVERING INDEX search_index_range_high \(param_key=\? AND high<\?\)/);
        // the candidates (the caller's rows driving here) probe their own rows by key (rows are keyed by seq,
        // schema migration 6), never a scan of the index
        for (const p of [gt.rows, lt.rows, eq.rows]) {
          expect(p).toMatch(/SEARCH si EXISTS USING PRIMARY KEY \(seq=\?\)/);
          expect(p).not.toMatch(/SCAN si/);
        }
      } else {
        expect(gt.count).toMatch(/search_index_quantity_high[\s\S]*Index Cond: \(.*high > /);
        expect(lt.count).toMatch(/search_index_range[\s\S]*Index Cond: \(.*low < /);
        expect(eq.count).toMatch(/search_index_range[\s\S]*Index Cond: \(.*low >= .*low < /);
        for (const p of [gt.count, lt.count, eq.count]) expect(p).not.toMatch(/Seq Scan on search_index/);
      }
    });
  },
);
