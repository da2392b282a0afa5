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
import {
  postgresDialect,
  runPlan,
  SearchRun,
  SQLITE_DIALECT,
  type SearchResult,
} from '../../src/fhir/store/search-sql.js';
import { SqliteSearch } from '../../src/fhir/store/sqlite/sqlite-search.js';
import { PostgresSearch } from '../../src/fhir/store/postgres/postgres-search.js';
import type { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import type { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { searchStores } from './helpers.js';

/** The page's versions read by their seq (one key probe each). */
const PAGE_BY_SEQ =
  /SEARCH v USING (INTEGER PRIMARY KEY \(rowid=\?\)|INDEX resource_version_type_seq \(resource_type=\? AND seq=\?\))/;

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
  } as FhirResource;
}

describe.each(searchStores())('one page in the default order on the $name store', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  let store: ResourceStore;
  const put = (id: string, code: string, status?: string, patient?: string) => {
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
  ): Promise<{ column: string[]; rows: string[]; counts: number; result: SearchResult }> {
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
      sqlite ? SQLITE_DIALECT : postgresDialect(schema()),
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
    const plans = { column: [] as string[], rows: [] as string[], counts: 0 };
    const result = await runPlan(run.search(), async (effect) => {
      if (effect.op === 'count') {
        plans.counts++;
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
    return { ...plans, result };
  }

  it('the first page of an equal value reads its matches in store order from the index with a LIMIT, then only the page', async () => {
    const plans = await firstPagePlans({ code: ['http://loinc.org|A'] });
    // the matches' seqs, in seq order, from the value index (whose entries end in seq): no ordering of every match
    expect(plans.column).toHaveLength(1);
    expect(plans.rows).toHaveLength(1);
    if (backend.name === 'sqlite') {
      expect(plans.column[0]).toMatch(
        /SEARCH si USING INDEX search_index_value \(resource_type=\? AND param=\? AND value=\? AND seq>\?\)/,
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
    expect(later.counts).toBe(0);
    // the matches after the position up to the first page's mark, from the value index in seq order (LIMIT), then
    // those written since the mark (the same index from the mark); the page's versions by their key
    expect(later.column).toHaveLength(1);
    if (backend.name === 'sqlite') {
      expect(later.column[0]).toMatch(
        /SEARCH si USING INDEX search_index_value \(resource_type=\? AND param=\? AND value=\? AND seq>\? AND seq<\?\)/,
      );
      expect(later.column[0]).not.toMatch(/TEMP B-TREE/);
      for (const plan of later.rows) {
        expect(plan).toMatch(PAGE_BY_SEQ);
        expect(plan).not.toMatch(/SCAN (v|c)\b/);
      }
      expect(later.rows[1]).toMatch(
        /SEARCH si USING INDEX search_index_value \(resource_type=\? AND param=\? AND value=\? AND seq>\?\)/,
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
        /SEARCH si USING (COVERING )?INDEX search_index_reference \(resource_type=\? AND param=\? AND reference=\?\)/,
      );
      expect(page).toMatch(PAGE_BY_SEQ);
      expect(page).not.toMatch(/SCAN (v|c)\b/);
    } else {
      expect(page).toMatch(/Index (Only )?Scan using search_index_reference/);
      expect(page).not.toMatch(/Seq Scan on (resource_current|resource_version)/);
    }
  });

  it('the first page of a date range bounded below reads only the matching index entries (no row, no join) for its lowest seqs', async () => {
    const plans = await firstPagePlans({ date: ['ge2020-01-01'] });
    // (the last: before it, the bound of the walk)
    const matches = plans.column[plans.column.length - 1];
    if (backend.name === 'sqlite') {
      // the matches only (a range of the date high index), their seqs from the index alone; the LIMIT keeps the
      // lowest ones (a top-N sort of seqs, not of joined rows)
      expect(matches).toMatch(
        /SEARCH si USING COVERING INDEX search_index_date_high \(resource_type=\? AND param=\? AND high>\?\)/,
      );
      // (after a bounded walk of the first current versions, which finds none here)
      expect(plans.rows[plans.rows.length - 1]).toMatch(PAGE_BY_SEQ);
    } else {
      expect(matches).toMatch(/^Limit/);
      // by its costs: the date index's matches, or the rows in seq order; never every row read and ordered
      expect(matches).not.toMatch(/Seq Scan on search_index/);
    }
  });
});
