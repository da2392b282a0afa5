/**
 * Independent evaluator, part 2 (test/search/evaluator.ts): chains, `_has`, `_include`/`_revinclude` and `_sort`
 * over the 100 Synthea patients, against the running service, every page.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SyntheaData,
  codingMatches,
  codingsOf,
  dateRangeOf,
  expectSearch,
  ref,
  stringMatches,
  walk,
  type Json,
} from './evaluator.js';
import { BUILD_TIMEOUT_MS, startLoadedService, type LoadedService } from './synthea-service.js';

const LOINC = 'http://loinc.org';

describe('independent evaluator: chains, _has, includes and sort (100 Synthea patients)', () => {
  let service: LoadedService;
  let data: SyntheaData;
  beforeAll(async () => {
    data = new SyntheaData();
    service = await startLoadedService();
    // The first file to need the loaded store builds it (minutes on a loaded machine); others copy it.
  }, BUILD_TIMEOUT_MS);
  afterAll(async () => service?.stop());
  const check = (path: string, expected: string[]) => expectSearch(service.app, path, expected);

  it('chains: one link, with a further condition', async () => {
    const female = new Set(data.keys('Patient', (p) => p.gender === 'female'));
    await check(
      `Observation?subject:Patient.gender=female&code=${LOINC}|8302-2&_count=100`,
      data.keys(
        'Observation',
        (r) => female.has(ref(r.subject)!) && codingMatches(codingsOf(r.code), `${LOINC}|8302-2`),
      ),
    );
    const family: string = data.of('Patient')[20]!.name[0].family;
    const named = new Set(
      data.keys('Patient', (p) =>
        stringMatches(
          (p.name ?? []).map((n: Json) => n.family),
          family.slice(0, 4),
        ),
      ),
    );
    await check(
      `Encounter?subject:Patient.family=${encodeURIComponent(family.slice(0, 4))}&_count=25`,
      data.keys('Encounter', (r) => named.has(ref(r.subject)!)),
    );
  });

  it('chains: two links (DiagnosticReport -> Encounter -> Organization name)', async () => {
    const orgName: string = data.of('Organization')[2]!.name;
    const orgs = new Set(data.keys('Organization', (o) => stringMatches([o.name], orgName)));
    const encounters = new Set(data.keys('Encounter', (e) => orgs.has(ref(e.serviceProvider)!)));
    await check(
      `DiagnosticReport?encounter.service-provider.name=${encodeURIComponent(orgName)}&_count=50`,
      data.keys('DiagnosticReport', (r) => encounters.has(ref(r.encounter)!)),
    );
  });

  it('_has: reverse chains, nested in a further condition', async () => {
    const code = codingsOf(data.of('Condition')[4]!.code)[0]!;
    const withCondition = new Set(
      data
        .of('Condition')
        .filter((c) => codingMatches(codingsOf(c.code), `${code.system}|${code.code}`))
        .map((c) => ref(c.subject)!),
    );
    await check(
      `Patient?_has:Condition:patient:code=${encodeURIComponent(`${code.system}|${code.code}`)}`,
      data.keys('Patient', (p) => withCondition.has(`Patient/${p.id}`)),
    );
    await check(
      `Patient?_has:Condition:patient:code=${encodeURIComponent(`${code.system}|${code.code}`)}&gender=male`,
      data.keys('Patient', (p) => withCondition.has(`Patient/${p.id}`) && p.gender === 'male'),
    );
    const encountersWithHeight = new Set(
      data
        .of('Observation')
        .filter((o) => codingMatches(codingsOf(o.code), `${LOINC}|8302-2`))
        .map((o) => ref(o.encounter)!),
    );
    await check(
      `Encounter?_has:Observation:encounter:code=${LOINC}|8302-2&_count=200`,
      data.keys('Encounter', (e) => encountersWithHeight.has(`Encounter/${e.id}`)),
    );
  });

  it('_include and _revinclude: each page holds what its own matches reference', async () => {
    const patient = data.of('Patient')[30]!;
    const key = `Patient/${patient.id}`;
    const encounters = data.keys('Encounter', (e) => ref(e.subject) === key);
    const walked = await check(
      `Encounter?subject=${key}&_include=Encounter:participant&_include=Encounter:service-provider&_count=4`,
      encounters,
    );
    expect(walked.pages.length).toBeGreaterThan(1);
    for (const page of walked.pages) {
      const expected = new Set<string>();
      for (const match of page.matches) {
        const e = data.byKey.get(match)!;
        for (const target of [
          ...(e.participant ?? []).map((p: Json) => ref(p.individual)),
          ref(e.serviceProvider),
        ])
          if (target && data.byKey.has(target)) expected.add(target);
      }
      expect([...new Set(page.includes)].sort()).toEqual([...expected].sort());
    }
    const rev = await check(`Patient?_id=${patient.id}&_revinclude=Condition:patient`, [key]);
    expect(rev.pages[0]!.includes.sort()).toEqual(data.keys('Condition', (c) => ref(c.subject) === key));
  });

  it('_sort: ascending and descending dates, across pages', async () => {
    const births = (keys: string[]) => keys.map((k) => data.byKey.get(k)!.birthDate as string);
    for (const [sort, descending] of [
      ['birthdate', false],
      ['-birthdate', true],
    ] as const) {
      const walked = await walk(service.app, `Patient?_sort=${sort}&_count=17`);
      expect([...walked.matches].sort()).toEqual(data.keys('Patient', () => true));
      const served = births(walked.matches);
      const ordered = [...served].sort();
      expect(served).toEqual(descending ? ordered.reverse() : ordered);
    }
    const patient = data.of('Patient')[44]!;
    const walked = await walk(
      service.app,
      `Observation?subject=Patient/${patient.id}&code=${LOINC}|8302-2,${LOINC}|29463-7&_sort=-date&_count=5`,
    );
    const expected = data
      .of('Observation')
      .filter(
        (o) =>
          ref(o.subject) === `Patient/${patient.id}` &&
          ['8302-2', '29463-7'].some((c) => codingMatches(codingsOf(o.code), `${LOINC}|${c}`)),
      );
    expect(walked.matches.length).toBe(expected.length);
    const times = walked.matches.map((k) => dateRangeOf(data.byKey.get(k)!.effectiveDateTime)[1]);
    expect(times).toEqual([...times].sort((a, b) => b - a));
  });
});
