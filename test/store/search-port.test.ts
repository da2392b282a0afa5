/**
 * The store port types its search (issue 13, typed ports): `ResourceStore.search` takes the compiled search the
 * search module produces and returns the page, so neither callers nor adapters cast. Checked by the typechecker
 * (`npx tsc --noEmit` compiles test/), and at run time through the SQLite adapter.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import type { StoreSearchRequest, StoreSearchResult } from '../../src/fhir/store/search-query.js';
import type { CompiledQuery } from '../../src/fhir/search/parse.js';
import { parseSearch } from '../../src/fhir/search/parse.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';

type PortSearch = NonNullable<ResourceStore['search']>;

describe('ResourceStore.search port', () => {
  it('takes a StoreSearchRequest and answers a StoreSearchResult (no unknown)', () => {
    expectTypeOf<Parameters<PortSearch>[0]>().toEqualTypeOf<StoreSearchRequest>();
    expectTypeOf<Awaited<ReturnType<PortSearch>>>().toEqualTypeOf<StoreSearchResult>();
    expectTypeOf<StoreSearchRequest['query']>().toEqualTypeOf<CompiledQuery>();
  });

  it('the SQLite adapter runs what parseSearch produces, through the port type', async () => {
    const sqlite = new SqliteResourceStore({ file: ':memory:' });
    await sqlite.init();
    try {
      const store: ResourceStore = sqlite;
      const query = parseSearch({ _id: ['none'] }, { resourceType: 'Patient' });
      const result = await store.search!({ query, canRead: () => true, wantTotal: true });
      expect(result.versions).toEqual([]);
      expect(result.total).toBe(0);
    } finally {
      await sqlite.close();
    }
  });
});
