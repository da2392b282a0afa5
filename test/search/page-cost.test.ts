/**
 * A page costs what a page costs (issue 15): in the default order, a search without a total reads its page from an
 * index in the store order (resource_current (resource_type, seq)) with a LIMIT, instead of ordering every match
 * before the first row (search-sql.ts seqOrderCandidates). Checked on the query plan, not a timing; and the pages
 * of that walk, with writes between them, serve every match once (both stores).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import { parseSearch } from '../../src/fhir/search/parse.js';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import { searchDefinitions } from '../../src/fhir/search/definitions.js';
import type { SearchPosition, StoreSearchRequest } from '../../src/fhir/store/search-query.js';
import { postgresDialect, runPlan, SearchRun, type SearchResult } from '../../src/fhir/store/search-sql.js';
import { SqliteSearch, sqliteStoreDialect } from '../../src/fhir/store/sqlite/sqlite-search.js';
import { PostgresSearch } from '../../src/fhir/store/postgres/postgres-search.js';
import type { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import type { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { searchStores } from './helpers.js';

/** The page's versions read by their seq (one key probe each). */
const PAGE_BY_SEQ =
  /SEARCH v USING (INTEGER PRIMARY KEY \(rowid=\?\)|INDEX resource_version_type_seq \(resource_type=\? AND seq=\?\))/;

/**
 * PostgreSQL walking the current versions of the type in seq order up to a bound (a first page's bounded walk); at
 * 300 rows its planner may still read resource_current whole for a join, so the walk is told by its seq bound.
 */
const STORE_WALK_PG =
  /Index Scan using resource_current_type_seq on resource_current c[^\n]*\n\s+Index Cond: \(\(resource_type = [^)]*\) AND \(seq <= /;

/** Below this many index rows a filter drives; tests use a small one so that 40 matches are "many". */
const SMALL_SIDE = 5;

function observation(id: string, code: string, status = 'final', patient?: string): FhirResource {
  // One date a day from 2019-07-01 (by the id's number): `ge2020-01-01` matches the later half.
  const day = Number(id.replace(/\D/g, '') || '0');
  return {
    resourceType: 'Observation',
    id,
    status,
    code: { coding: [{ system: 'http://loinc.org', code }] },
    effectiveDateTime: new Date(Date.UTC(2019, 6, 1) + day * 86_400_000).toISOString().slice(0, 10),
    // Three patients' records (compartment search)
    subject: { reference: `Patient/${patient ?? `p${day % 3}`}` },
    // A quantity of the id's number too (mg): `gt295` matches the last four.
    valueQuantity: { value: day, unit: 'mg', system: 'http://unitsofmeasure.org', code: 'mg' },
  } as FhirResource;
}

describe.each(searchStores())('one page in the default order on the $name store', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  let store: ResourceStore;
  /** The ids in store order (the seq of their current version): a write moves an id to the end. */
  const storeOrder: string[] = [];
  const written = (id: string) => {
    const at = storeOrder.indexOf(id);
    if (at >= 0) storeOrder.splice(at, 1);
    storeOrder.push(id);
  };
  const put = (id: string, code: string, status?: string, patient?: string) => {
    written(id);
    const resource = observation(id, code, status, patient);
    return store.write({
      resourceType: 'Observation',
      id,
      resource,
      method: 'PUT',
      index: extractIndex(resource),
    });
  };
  const schema = () => `"${(store as PostgresResourceStore).schema}"`;

  /** One page of `code=A` (store level, the small SMALL_SIDE): its ids and where the next starts. */
  async function page(after?: SearchPosition): Promise<{ ids: string[]; next?: SearchPosition }> {
    const query = parseSearch(
      { code: ['http://loinc.org|A'], _count: ['7'] },
      { resourceType: 'Observation' },
    );
    const request: StoreSearchRequest = { query, canRead: () => true, after };
    const result =
      backend.name === 'sqlite'
        ? new SqliteSearch((store as SqliteResourceStore).db, { smallSide: SMALL_SIDE }).search(request)
        : await new PostgresSearch(schema(), SMALL_SIDE).search(
            (store as PostgresResourceStore).pool,
            request,
          );
    return { ids: result.versions.map((v) => v.id), next: result.next };
  }

  beforeAll(async () => {
    store = await backend.open();
    await store.transaction(async (tx) => {
      for (let i = 0; i < 300; i++) {
        const resource = observation(
          `o${String(i).padStart(3, '0')}`,
          i % 10 < 4 ? 'B' : i % 10 < 5 ? 'A' : 'C',
        );
        written(resource.id!);
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

  it('pages of a filter with many matches serve each match once, in store order, with writes between pages', async () => {
    const matches = Array.from({ length: 300 }, (_, i) => i)
      .filter((i) => i % 10 === 4)
      .map((i) => `o${String(i).padStart(3, '0')}`);
    const first = await page();
    expect(first.ids).toEqual(matches.slice(0, 7));
    // Between pages: a served match and a match not yet served are updated (both keep their place), a new match
    // is created (not on later pages), a match not yet served is moved to another code (no longer matches).
    await put(matches[0]!, 'A', 'amended');
    await put(matches[20]!, 'A', 'amended');
    await put('new-a', 'A');
    await put(matches[25]!, 'C');
    const served = [...first.ids];
    let next = first.next;
    while (next) {
      const p = await page(next);
      served.push(...p.ids);
      next = p.next;
    }
    expect(served).toEqual(matches.filter((id) => id !== matches[25]));
    // Put back for the other test.
    await put(matches[25]!, 'A');
  });

  /**
   * The plans of the queries a page of `params` runs (counts and matches answered from the store): a first page, or
   * the page after `after`; `compartment`: in that patient's compartment (as the search interaction asks for it).
   */
  async function firstPagePlans(
    params: Record<string, string[]>,
    options: { after?: SearchPosition; compartment?: string } = {},
  ): Promise<{
    column: string[];
    rows: string[];
    counts: { sql: string; plan: string }[];
    ids: string[];
    result: SearchResult;
  }> {
    const query = parseSearch({ _count: ['10'], ...params }, { resourceType: 'Observation' });
    if (options.compartment)
      query.filters.unshift({
        kind: 'compartment',
        reference: `Patient/${options.compartment}`,
        params: Object.fromEntries(searchDefinitions().patientCompartment),
        own: { type: 'Patient', id: options.compartment },
      });
    const sqlite = backend.name === 'sqlite';
    const run = new SearchRun(
      sqlite ? sqliteStoreDialect((store as SqliteResourceStore).db) : postgresDialect(schema()),
      { query, canRead: () => true, after: options.after },
      SMALL_SIDE,
    );
    if (!sqlite) {
      for (const table of ['search_index', 'resource_current', 'resource_version'])
        await (store as PostgresResourceStore).pool.query(`ANALYZE ${schema()}.${table}`);
    }
    const pg = (sql: string) => {
      let n = 0;
      return sql.replace(/\?/g, () => `$${++n}`);
    };
    const answer = async (sql: string, binds: unknown[]): Promise<Record<string, unknown>[]> => {
      if (sqlite)
        return (store as SqliteResourceStore).db.prepare(sql).all(...binds) as Record<string, unknown>[];
      return (await (store as PostgresResourceStore).pool.query(pg(sql), binds)).rows as Record<
        string,
        unknown
      >[];
    };
    const explain = async (sql: string, binds: unknown[]): Promise<string> => {
      if (sqlite) {
        const rows = (store as SqliteResourceStore).db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...binds) as {
          detail: string;
        }[];
        return rows.map((r) => r.detail).join('\n');
      }
      // PostgreSQL plans by its cost estimates: at 300 rows, reading the whole table is cheaper than an index, so the
      // plan is asked with table scans and sorting discouraged: the index must be there for the planner.
      const client = await (store as PostgresResourceStore).pool.connect();
      try {
        await client.query('BEGIN; SET LOCAL enable_sort = off; SET LOCAL enable_seqscan = off');
        const { rows } = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${pg(sql)}`, binds);
        await client.query('ROLLBACK');
        return rows.map((r) => r['QUERY PLAN']).join('\n');
      } finally {
        client.release();
      }
    };
    const plans = {
      column: [] as string[],
      rows: [] as string[],
      counts: [] as { sql: string; plan: string }[],
    };
    const result = await runPlan(run.search(), async (effect) => {
      if (effect.op === 'count') {
        plans.counts.push({ sql: effect.sql, plan: await explain(effect.sql, effect.binds) });
        return Number(Object.values((await answer(effect.sql, effect.binds))[0]!)[0]);
      }
      if (effect.op === 'column') {
        plans.column.push(await explain(effect.sql, effect.binds));
        return (await answer(effect.sql, effect.binds)).map((r) => Object.values(r)[0]);
      }
      if (effect.op === 'rows') {
        plans.rows.push(await explain(effect.sql, effect.binds));
        return answer(effect.sql, effect.binds);
      }
      return effect.op === 'bodies' ? effect.seqs.map(() => '{}') : [];
    });
    return { ...plans, result, ids: result.versions.map((v) => v.id) };
  }

  it('the first page of an equal value reads its matches in store order from the index with a LIMIT, then only the page', async () => {
    const plans = await firstPagePlans({ code: ['http://loinc.org|A'] });
    // the matches' seqs, in seq order, from the value index (whose entries end in seq): no ordering of every match
    expect(plans.column).toHaveLength(1);
    expect(plans.rows).toHaveLength(1);
    if (backend.name === 'sqlite') {
      expect(plans.column[0]).toMatch(
        /SEARCH si USING INDEX search_index_value \(param_key=\? AND value=\? AND seq>\?\)/,
      );
      expect(plans.column[0]).not.toMatch(/TEMP B-TREE/);
      // the page's versions by their key
      expect(plans.rows[0]).toMatch(PAGE_BY_SEQ);
      expect(plans.rows[0]).not.toMatch(/SCAN (v|c)\b/);
    } else {
      expect(plans.column[0]).toMatch(/^Limit/);
      expect(plans.column[0]).toMatch(/Index (Only )?Scan using search_index_value/);
      expect(plans.column[0]).not.toMatch(/Sort/);
      expect(plans.rows[0]).toMatch(/resource_version_pkey/);
    }
  });

  it('a later page of an equal value is a seek from its position in the index (no count, no reading of the matches before it)', async () => {
    const first = await firstPagePlans({ code: ['http://loinc.org|A'] });
    const after = first.result.next!;
    expect(after).toBeDefined();
    const later = await firstPagePlans({ code: ['http://loinc.org|A'] }, { after });
    // the matches after the first ten, in store order (as one page of twenty has them)
    const twenty = await firstPagePlans({ code: ['http://loinc.org|A'], _count: ['20'] });
    expect(later.result.versions.map((v) => v.id)).toEqual(twenty.result.versions.slice(10).map((v) => v.id));
    // the matches are not counted again (many or few, the seek is the same)
    expect(later.counts).toHaveLength(0);
    // the matches after the position up to the first page's mark, from the value index in seq order (LIMIT), then
    // those written since the mark (the same index from the mark); the page's versions by their key
    expect(later.column).toHaveLength(1);
    if (backend.name === 'sqlite') {
      expect(later.column[0]).toMatch(
        /SEARCH si USING INDEX search_index_value \(param_key=\? AND value=\? AND seq>\? AND seq<\?\)/,
      );
      expect(later.column[0]).not.toMatch(/TEMP B-TREE/);
      for (const plan of later.rows) {
        expect(plan).toMatch(PAGE_BY_SEQ);
        expect(plan).not.toMatch(/SCAN (v|c)\b/);
      }
      expect(later.rows[1]).toMatch(
        /SEARCH si USING INDEX search_index_value \(param_key=\? AND value=\? AND seq>\?\)/,
      );
    } else {
      expect(later.column[0]).toMatch(/^Limit/);
      expect(later.column[0]).toMatch(/Index (Only )?Scan using search_index_value/);
      expect(later.column[0]).not.toMatch(/Sort/);
      for (const plan of later.rows) expect(plan).toMatch(/resource_version_pkey/);
    }
  });

  it('a compartment search reads its members from the reference index of the compartment parameters, not every resource of the type', async () => {
    // the patient's Observations in store order (its `subject` references)
    const many = await firstPagePlans({}, { compartment: 'p1' });
    const subject = await firstPagePlans({ subject: ['Patient/p1'] });
    expect(many.result.versions.map((v) => v.id)).toEqual(subject.result.versions.map((v) => v.id));
    expect(many.result.versions).toHaveLength(10);
    // A patient with two Observations among 300: the plan (PostgreSQL's, by its estimates, needs a selective one)
    await put('r1', 'D', 'final', 'rare');
    await put('r2', 'D', 'final', 'rare');
    const plans = await firstPagePlans({}, { compartment: 'rare' });
    expect(plans.result.versions.map((v) => v.id)).toEqual(['r1', 'r2']);
    const page = plans.rows[plans.rows.length - 1]!;
    if (backend.name === 'sqlite') {
      // Observation's compartment parameters (subject, performer): their rows naming Patient/p1
      expect(page).toMatch(
        /SEARCH si USING (COVERING )?INDEX search_index_reference \(param_key=\? AND reference=\?\)/,
      );
      expect(page).toMatch(PAGE_BY_SEQ);
      expect(page).not.toMatch(/SCAN (v|c)\b/);
    } else {
      expect(page).toMatch(/Index (Only )?Scan using search_index_reference/);
      expect(page).not.toMatch(/Seq Scan on (resource_current|resource_version)/);
    }
  });

  // The first 10 ids in store order whose number (their day and quantity, see observation()) passes `test`.
  const idsWhere = (test: (n: number) => boolean) =>
    storeOrder.filter((id) => test(Number(id.replace(/\D/g, '') || '0'))).slice(0, 10);
  /** Probe bound of the tests' SMALL_SIDE (search-sql.ts RANGE_PROBE_FACTOR x smallSide). */
  const PROBE = SMALL_SIDE * 5;

  // A range's plan is chosen by a bounded probe of its index entries (count over a LIMIT), on every range kind and
  // prefix: few (below the probe's bound) drive from the index, many walk the store order first.
  it.each([
    ['date=ge2020-04-20 (high bounded)', { date: ['ge2020-04-20'] }, (n: number) => n >= 294],
    ['date=sa2020-04-20 (low bounded)', { date: ['sa2020-04-20'] }, (n: number) => n > 294],
    ['date=lt2019-07-05', { date: ['lt2019-07-05'] }, (n: number) => n < 4],
    ['date=eb2019-07-05', { date: ['eb2019-07-05'] }, (n: number) => n < 4],
    [
      'value-quantity=gt295|UCUM|mg',
      { 'value-quantity': ['gt295|http://unitsofmeasure.org|mg'] },
      (n: number) => n > 295,
    ],
    ['value-quantity=le2 (no unit)', { 'value-quantity': ['le2'] }, (n: number) => n <= 2],
    [
      'a one-day range of two filters (the fewer drives)',
      { date: ['ge2019-07-10', 'lt2019-07-11'] },
      (n: number) => n === 9,
    ],
  ])(
    'a selective range, %s, drives from its index entries: no walk of the store order',
    async (_name, params, matches) => {
      const plans = await firstPagePlans(params);
      expect(plans.ids).toEqual(idsWhere(matches));
      // the probe: a count of the range's index entries, bounded, read from a range index (no table scan)
      expect(plans.counts.length).toBeGreaterThan(0);
      for (const count of plans.counts) expect(count.sql).toMatch(new RegExp(`LIMIT ${PROBE}\\)`));
      if (backend.name === 'sqlite') {
        for (const count of plans.counts) {
          expect(count.plan).toMatch(/SEARCH si USING COVERING INDEX search_index_range_(low|high)/);
          expect(count.plan).not.toMatch(/SCAN si/);
        }
        // the matches' lowest seqs from the index (a batch, then a larger one when the other filters thin it out),
        // then those versions by their key; the current versions of the type are never walked
        expect(plans.column.length).toBeGreaterThan(0);
        for (const plan of plans.column)
          expect(plan).toMatch(/SEARCH si USING (COVERING )?INDEX search_index_/);
        expect(plans.rows.length).toBeGreaterThan(0);
        for (const plan of plans.rows) {
          expect(plan).toMatch(PAGE_BY_SEQ);
          expect(plan).not.toMatch(/resource_current_type_seq/);
        }
      } else {
        for (const count of plans.counts) expect(count.plan).not.toMatch(/Seq Scan/);
        expect(plans.column.length).toBeGreaterThan(0);
        for (const plan of plans.column) {
          expect(plan).toMatch(/^Limit/);
          expect(plan).not.toMatch(/Seq Scan/);
        }
        expect(plans.rows.length).toBeGreaterThan(0);
        for (const plan of plans.rows) {
          expect(plan).toMatch(/resource_version_pkey/);
          expect(plan).not.toMatch(STORE_WALK_PG);
        }
      }
    },
  );

  // An unselective date or number range (more entries than the probe's bound) walks its entries in seq order from
  // search_index_range_seq ((type, param), seq, low, high), its bounds read from the index itself, and stops
  // at the page: no walk of the store order, no ordering of its matches (SQLite migration 10, PostgreSQL 14).
  it.each([
    ['date=ge2019-08-01', { date: ['ge2019-08-01'] }, (n: number) => n >= 31],
    ['date=le2020-03-01', { date: ['le2020-03-01'] }, (n: number) => n <= 244],
    [
      'date=ge2020-01-01 (matches late in the store order)',
      { date: ['ge2020-01-01'] },
      (n: number) => n >= 184,
    ],
  ])(
    'an unselective date range, %s, walks its index entries in seq order (index-only, up to the page)',
    async (_name, params, matches) => {
      const plans = await firstPagePlans(params);
      expect(plans.ids).toEqual(idsWhere(matches));
      expect(plans.counts).toHaveLength(1);
      expect(plans.counts[0]!.sql).toMatch(new RegExp(`LIMIT ${PROBE}\\)`));
      expect(plans.column.length).toBeGreaterThan(0);
      expect(plans.rows.length).toBeGreaterThan(0);
      if (backend.name === 'sqlite') {
        for (const plan of plans.column) {
          expect(plan).toMatch(
            /SEARCH si USING COVERING INDEX search_index_range_seq \(param_key=\? AND seq>\?\)/,
          );
          expect(plan).not.toMatch(/TEMP B-TREE/);
        }
        for (const plan of plans.rows) {
          expect(plan).toMatch(PAGE_BY_SEQ);
          expect(plan).not.toMatch(/resource_current_type_seq/);
        }
      } else {
        for (const plan of plans.column) {
          expect(plan).toMatch(/^Limit/);
          expect(plan).toMatch(/Index (Only )?Scan using search_index_range_seq/);
          expect(plan).not.toMatch(/Sort/);
        }
        for (const plan of plans.rows) expect(plan).not.toMatch(STORE_WALK_PG);
      }
    },
  );

  it('an unselective quantity range (its unit is not in the seq index) walks the store order first', async () => {
    const plans = await firstPagePlans({ 'value-quantity': ['gt30|http://unitsofmeasure.org|mg'] });
    expect(plans.ids).toEqual(idsWhere((n) => n > 30));
    expect(plans.counts).toHaveLength(1);
    expect(plans.counts[0]!.sql).toMatch(new RegExp(`LIMIT ${PROBE}\\)`));
    // the first rows query walks the current versions of the type in seq order (LIMIT, no sort)
    if (backend.name === 'sqlite') {
      expect(plans.rows[0]).toMatch(
        /SEARCH c USING INDEX resource_current_type_seq \(resource_type=\? AND seq<\?\)/,
      );
      expect(plans.rows[0]).not.toMatch(/TEMP B-TREE/);
    } else {
      expect(plans.rows[0]).toMatch(STORE_WALK_PG);
      expect(plans.rows[0]).not.toMatch(/Sort/);
    }
  });

  // A one-day range is two range filters: the one with fewer entries drives; the other is checked on each of its
  // matches' seqs from search_index_range_seq alone, before they are ordered and cut, not by reading a row per
  // candidate. Selective (the fewer side drives from its range index) and unselective (walked in seq order).
  it.each([
    ['selective', { date: ['ge2019-07-10', 'lt2019-07-12'] }, (n: number) => n === 9 || n === 10],
    ['unselective', { date: ['ge2019-08-01', 'lt2020-03-01'] }, (n: number) => n >= 31 && n < 244],
  ])(
    'a %s one-day-like range of two filters checks the other side from the seq index: no row read per candidate',
    async (_name, params, matches) => {
      const plans = await firstPagePlans(params);
      expect(plans.ids).toEqual(idsWhere(matches));
      expect(plans.column.length).toBeGreaterThan(0);
      expect(plans.rows.length).toBeGreaterThan(0);
      if (backend.name === 'sqlite') {
        for (const plan of plans.column)
          expect(plan).toMatch(
            /SEARCH sr (EXISTS )?USING COVERING INDEX search_index_range_seq \(param_key=\? AND seq=\?/,
          );
        // the page's versions by key, no index row probed per candidate
        for (const plan of plans.rows) {
          expect(plan).toMatch(PAGE_BY_SEQ);
          expect(plan).not.toMatch(/SEARCH si\b/);
        }
      } else {
        for (const plan of plans.column) {
          expect(plan).toMatch(/^Limit/);
          // the other side from the index rows alone (which index PostgreSQL's planner takes for it depends on its
          // estimates at this size: search_index_range_seq or search_index_range), never a version row
          expect(plan).toMatch(/on search_index sr\b/);
          expect(plan).not.toMatch(/resource_(version|current)/);
        }
        for (const plan of plans.rows) expect(plan).not.toMatch(/on search_index si\b/);
      }
    },
  );
});
