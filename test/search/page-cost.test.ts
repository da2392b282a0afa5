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
import type { SearchPosition, StoreSearchRequest } from '../../src/fhir/store/search-query.js';
import { postgresDialect, runPlan, SearchRun, SQLITE_DIALECT } from '../../src/fhir/store/search-sql.js';
import { SqliteSearch } from '../../src/fhir/store/sqlite/sqlite-search.js';
import { PostgresSearch } from '../../src/fhir/store/postgres/postgres-search.js';
import type { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import type { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { searchStores } from './helpers.js';

/** Below this many index rows a filter drives; tests use a small one so that 40 matches are "many". */
const SMALL_SIDE = 5;

function observation(id: string, code: string, status = 'final'): FhirResource {
  return {
    resourceType: 'Observation',
    id,
    status,
    code: { coding: [{ system: 'http://loinc.org', code }] },
  } as FhirResource;
}

describe.each(searchStores())('one page in the default order on the $name store', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  let store: ResourceStore;
  const put = (id: string, code: string, status?: string) => {
    const resource = observation(id, code, status);
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

  it('the first page reads the store order from an index with a LIMIT, not every match ordered first', async () => {
    const query = parseSearch(
      { code: ['http://loinc.org|A'], _count: ['10'] },
      { resourceType: 'Observation' },
    );
    const sqlite = backend.name === 'sqlite';
    const run = new SearchRun(
      sqlite ? SQLITE_DIALECT : postgresDialect(schema()),
      { query, canRead: () => true },
      SMALL_SIDE,
    );
    if (!sqlite) {
      for (const table of ['search_index', 'resource_current', 'resource_version'])
        await (store as PostgresResourceStore).pool.query(`ANALYZE ${schema()}.${table}`);
    }
    let plan = '';
    await runPlan(run.search(), async (effect) => {
      if (effect.op === 'count') {
        // the filter's matches counted (up to SMALL_SIDE): answer from the store
        if (sqlite)
          return (store as SqliteResourceStore).db
            .prepare(effect.sql)
            .pluck()
            .get(...effect.binds);
        let n = 0;
        const { rows } = await (store as PostgresResourceStore).pool.query<{ count: string }>(
          effect.sql.replace(/\?/g, () => `$${++n}`),
          effect.binds,
        );
        return Number(rows[0]!.count);
      }
      if (effect.op === 'rows') {
        if (sqlite) {
          const rows = (store as SqliteResourceStore).db
            .prepare(`EXPLAIN QUERY PLAN ${effect.sql}`)
            .all(...effect.binds) as { detail: string }[];
          plan = rows.map((r) => r.detail).join('\n');
        } else {
          // PostgreSQL plans by its cost estimates: at 300 rows, ordering the few matches is cheaper than the
          // walk, so the plan is asked with sorting discouraged: the LIMITed walk must be there for the planner.
          let n = 0;
          const client = await (store as PostgresResourceStore).pool.connect();
          try {
            await client.query('BEGIN; SET LOCAL enable_sort = off');
            const { rows } = await client.query<{ 'QUERY PLAN': string }>(
              `EXPLAIN ${effect.sql.replace(/\?/g, () => `$${++n}`)}`,
              effect.binds,
            );
            await client.query('ROLLBACK');
            plan = rows.map((r) => r['QUERY PLAN']).join('\n');
          } finally {
            client.release();
          }
        }
      }
      return [];
    });
    if (sqlite) {
      expect(plan).toMatch(/(SCAN|SEARCH) c USING (COVERING )?INDEX resource_current_type_seq/);
      expect(plan).not.toMatch(/TEMP B-TREE FOR ORDER BY/);
    } else {
      expect(plan).toMatch(/^Limit/);
      expect(plan).toMatch(/Index Scan using resource_current_type_seq on resource_current c/);
      expect(plan).not.toMatch(/Sort/);
    }
  });
});
