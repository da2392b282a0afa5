/**
 * Search paging: what a page costs by cursor (`next` links since issue 15) against the same page by `_offset`.
 * Prints a table: `Observation?code=X&_count=50` over N matching Observations (in-memory SQLite store, the search
 * interaction in process, no HTTP), the first page, page 20 reached through its `next` cursor and page 20 asked
 * with `_offset=950`, each the median of RUNS runs, the later pages as a ratio to the first page (same run, same
 * store, measured in alternation). Also `_sort=-date`.
 * Run: npm run bench:search-paging [N]
 */
import { SqliteResourceStore } from '../src/fhir/store/sqlite/sqlite-store.js';
import { searchSqlite } from '../src/fhir/store/sqlite/sqlite-search.js';
import { searchType } from '../src/fhir/interactions/search.js';
import { OpenAccess } from '../src/fhir/interactions/access-policy.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import { parseFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';
import type { FhirContext, FhirRequest } from '../src/fhir/interactions/types.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 21);
const N = Number(process.argv[2] ?? 20_000);
const PAGE = 20;

async function load(store: SqliteResourceStore): Promise<void> {
  await store.transaction(async (tx) => {
    for (let i = 0; i < N; i++) {
      const resource: FhirResource & Record<string, unknown> = {
        resourceType: 'Observation',
        id: `obs-${i}`,
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '2339-0' }] },
        subject: { reference: `Patient/p-${i % 500}` },
        effectiveDateTime: new Date(Date.UTC(2020, 0, 1) + i * 3_600_000).toISOString(),
      };
      await tx.write({
        resourceType: 'Observation',
        id: resource.id!,
        resource,
        method: 'PUT',
        index: extractIndex(resource),
      });
    }
  });
}

function request(query: Record<string, string>): FhirRequest {
  const q: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(query)) q[k] = [v];
  return {
    interaction: 'search-type',
    method: 'GET',
    resourceType: 'Observation',
    query: q,
    baseUrl: 'http://b',
  };
}

async function timed(
  context: FhirContext,
  query: Record<string, string>,
): Promise<[number, string | undefined]> {
  const start = process.hrtime.bigint();
  const response = await searchType(request(query), context);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const bundle = parseFhirJson<{ link: { relation: string; url: string }[] }>(response.body as string);
  return [ms, bundle.link.find((l) => l.relation === 'next')?.url];
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const store = new SqliteResourceStore({ file: ':memory:' });
  await store.init();
  store.search ??= async (r) => searchSqlite(store.db, r);
  await load(store);
  const context = {
    store,
    access: new OpenAccess(),
    log: { info() {}, warn() {}, error() {}, debug() {} },
  } as unknown as FhirContext;
  console.log(`search paging, ${N} matching Observations, _count=50, median of ${RUNS} (ms)`);
  console.log('| query | first page | page 20 by cursor | page 20 by _offset |');
  console.log('| --- | --- | --- | --- |');
  for (const extra of [{}, { _sort: '-date' }] as Record<string, string>[]) {
    const base: Record<string, string> = { code: 'http://loinc.org|2339-0', _count: '50', ...extra };
    // The cursor of page 20, reached once by following next links.
    let next: string | undefined;
    let query: Record<string, string> = base;
    for (let page = 1; page < PAGE; page++) {
      next = (await timed(context, query))[1];
      query = Object.fromEntries(new URL(next!).searchParams);
    }
    const cursorQuery = query;
    const first: number[] = [];
    const byCursor: number[] = [];
    const byOffset: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      first.push((await timed(context, base))[0]);
      byCursor.push((await timed(context, cursorQuery))[0]);
      byOffset.push((await timed(context, { ...base, _offset: String((PAGE - 1) * 50) }))[0]);
    }
    const f = median(first);
    const ratio = (xs: number[]) => `${median(xs).toFixed(2)} (${(median(xs) / f).toFixed(2)}x)`;
    console.log(`| ${JSON.stringify(extra)} | ${f.toFixed(2)} | ${ratio(byCursor)} | ${ratio(byOffset)} |`);
  }
  await store.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
