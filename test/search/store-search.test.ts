import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFhirJson } from '../../src/fhir/fhir-json.js';
import { searchType, searchSystem } from '../../src/fhir/interactions/search.js';
import { FhirError, forbidden } from '../../src/fhir/outcome.js';
import type { AccessPolicy, Caller } from '../../src/fhir/interactions/access-policy.js';
import { OnePatient } from '../support/one-patient-access.js';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { OpenAccess } from '../../src/fhir/interactions/access-policy.js';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import {
  searchStores,
  context,
  loadSyntheaDirect,
  request,
  syntheaFiles,
  type LooseResource,
  type SearchBundle,
  indexedPut,
} from './helpers.js';

// The one search suite, on every store that searches (issue 19): the same queries, the same expected results.
describe.each(searchStores())('search on the $name store', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  let store: ResourceStore;
  const loaded: LooseResource[] = [];

  async function run(
    type: string | undefined,
    query: Record<string, string | string[]>,
    ctx = context(store),
  ): Promise<SearchBundle> {
    const response = await (type ? searchType : searchSystem)(request(type, query), ctx);
    expect(response.status).toBe(200);
    return parseFhirJson<SearchBundle>(response.body as string);
  }
  const ids = (b: SearchBundle, mode = 'match') =>
    (b.entry ?? [])
      .filter((e) => e.search.mode === mode)
      .map((e) => `${e.resource.resourceType}/${e.resource.id}`);

  beforeAll(async () => {
    store = await backend.open();
    for (const file of syntheaFiles(3)) loaded.push(...(await loadSyntheaDirect(store, file)));
  });
  afterAll(async () => store.close());

  const patients = () => loaded.filter((r) => r.resourceType === 'Patient');
  const expected = (predicate: (r: LooseResource) => boolean) =>
    loaded
      .filter(predicate)
      .map((r) => `${r.resourceType}/${r.id}`)
      .sort();

  describe('search over the index', () => {
    it('finds observations of a patient by subject and LOINC code', async () => {
      const patient = patients()[0];
      const obs = loaded.find(
        (r) => r.resourceType === 'Observation' && r.subject.reference === `Patient/${patient.id}`,
      )!;
      const coding = obs.code.coding[0];
      const bundle = await run('Observation', {
        subject: `Patient/${patient.id}`,
        code: `${coding.system}|${coding.code}`,
        _count: '1000',
      });
      const want = expected(
        (r) =>
          r.resourceType === 'Observation' &&
          r.subject.reference === `Patient/${patient.id}` &&
          r.code.coding.some(
            (c: { system: string; code: string }) => c.system === coding.system && c.code === coding.code,
          ),
      );
      expect(ids(bundle).sort()).toEqual(want);
      expect(bundle.total).toBe(want.length);
      expect(want.length).toBeGreaterThan(0);
    });

    it('matches the patient param only for Patient subjects, also by bare id', async () => {
      const patient = patients()[1];
      const a = await run('Encounter', { patient: patient.id!, _count: '1000' });
      expect(ids(a).sort()).toEqual(
        expected((r) => r.resourceType === 'Encounter' && r.subject.reference === `Patient/${patient.id}`),
      );
    });

    it('string search: prefix, case and accent insensitive; :exact; :contains', async () => {
      const patient = patients()[0];
      const family: string = patient.name[0].family;
      const prefix = family.slice(0, 3).toUpperCase();
      const byPrefix = await run('Patient', { family: prefix });
      expect(ids(byPrefix)).toContain(`Patient/${patient.id}`);
      const exact = await run('Patient', { 'family:exact': family.toLowerCase() });
      expect(ids(exact)).not.toContain(`Patient/${patient.id}`);
      const exact2 = await run('Patient', { 'family:exact': family });
      expect(ids(exact2)).toContain(`Patient/${patient.id}`);
      const contains = await run('Patient', { 'family:contains': family.slice(1, 4) });
      expect(ids(contains)).toContain(`Patient/${patient.id}`);
    });

    it('dates: prefixes over birthdate and Encounter periods', async () => {
      const patient = patients()[0];
      const birth: string = patient.birthDate;
      expect(ids(await run('Patient', { birthdate: birth }))).toContain(`Patient/${patient.id}`);
      expect(ids(await run('Patient', { birthdate: birth.slice(0, 4) }))).toContain(`Patient/${patient.id}`);
      expect(ids(await run('Patient', { birthdate: `gt${birth}` }))).not.toContain(`Patient/${patient.id}`);
      expect(ids(await run('Patient', { birthdate: `ge${birth}` }))).toContain(`Patient/${patient.id}`);
      expect(ids(await run('Patient', { birthdate: `lt${birth}` }))).not.toContain(`Patient/${patient.id}`);
      const all = await run('Patient', { birthdate: ['ge1900', 'lt2100'] });
      expect(ids(all).sort()).toEqual(expected((r) => r.resourceType === 'Patient'));
    });

    it('quantities: value with prefix, system and code', async () => {
      const obs = loaded.find((r) => r.resourceType === 'Observation' && r.valueQuantity)!;
      const q = obs.valueQuantity;
      const found = await run('Observation', {
        'value-quantity': `ge${q.value}|${q.system}|${q.code}`,
        code: obs.code.coding[0].code,
        _count: '1000',
      });
      expect(ids(found)).toContain(`Observation/${obs.id}`);
      for (const e of found.entry ?? [])
        expect(e.resource.valueQuantity.value).toBeGreaterThanOrEqual(q.value);
      const none = await run('Observation', {
        'value-quantity': `gt${q.value}|${q.system}|${q.code}`,
        _id: obs.id!,
      });
      expect(ids(none)).toEqual([]);
    });

    it('composites: component-code-value-quantity (blood pressure) and code-value-quantity', async () => {
      const systolic = (r: LooseResource) =>
        (r.component ?? []).find((c: any) =>
          c.code.coding.some((x: any) => x.system === 'http://loinc.org' && x.code === '8480-6'),
        )?.valueQuantity?.value as number | undefined;
      const bp = loaded.filter((r) => r.resourceType === 'Observation' && systolic(r) !== undefined);
      expect(bp.length).toBeGreaterThan(0);
      const threshold = [...bp.map((r) => systolic(r)!)].sort((a, b) => a - b)[Math.floor(bp.length / 2)];
      const found = await run('Observation', {
        'component-code-value-quantity': `http://loinc.org|8480-6$gt${threshold}`,
        _count: '1000',
      });
      expect(ids(found).sort()).toEqual(
        expected((r) => r.resourceType === 'Observation' && (systolic(r) ?? -1) > threshold),
      );
      const withUnit = await run('Observation', {
        'component-code-value-quantity': `8480-6$gt${threshold}|http://unitsofmeasure.org|mm[Hg]`,
        _count: '1000',
      });
      expect(ids(withUnit).sort()).toEqual(ids(found).sort());
      const wrongUnit = await run('Observation', {
        'component-code-value-quantity': `8480-6$gt${threshold}|http://unitsofmeasure.org|kg`,
      });
      expect(ids(wrongUnit)).toEqual([]);
      const height = loaded.find(
        (r) => r.resourceType === 'Observation' && r.code.coding[0].code === '8302-2',
      )!;
      const h = await run('Observation', {
        'code-value-quantity': `http://loinc.org|8302-2$${height.valueQuantity.value}`,
        _count: '1000',
      });
      expect(ids(h)).toContain(`Observation/${height.id}`);
      for (const e of h.entry ?? []) expect(e.resource.code.coding[0].code).toBe('8302-2');
    });

    it('aliases: combo-code finds codes and component codes; phonetic answers like name', async () => {
      const hasCode = (r: LooseResource, code: string) =>
        r.code?.coding?.some((c: any) => c.code === code) ||
        (r.component ?? []).some((k: any) => k.code.coding.some((c: any) => c.code === code));
      const combo = await run('Observation', { 'combo-code': '8480-6,8302-2', _count: '1000' });
      expect(ids(combo).sort()).toEqual(
        expected((r) => r.resourceType === 'Observation' && (hasCode(r, '8480-6') || hasCode(r, '8302-2'))),
      );
      const comboText = await run('Observation', { 'combo-code:text': 'systolic', _count: '1000' });
      expect(ids(comboText).length).toBeGreaterThan(0);
      const family: string = patients()[0].name[0].family;
      expect(ids(await run('Patient', { phonetic: family }))).toEqual(
        ids(await run('Patient', { name: family })),
      );
    });

    it('tokens: :not, :missing and :text', async () => {
      const male = await run('Patient', { gender: 'male' });
      const notMale = await run('Patient', { 'gender:not': 'male' });
      expect(ids(male).length + ids(notMale).length).toBe(patients().length);
      const withDeath = await run('Patient', { 'death-date:missing': 'false' });
      expect(ids(withDeath).sort()).toEqual(
        expected((r) => r.resourceType === 'Patient' && r.deceasedDateTime !== undefined),
      );
      const enc = loaded.find((r) => r.resourceType === 'Encounter')!;
      const text: string = enc.type[0].text;
      expect(
        ids(await run('Encounter', { 'type:text': text.slice(0, 6).toLowerCase(), _count: '1000' })),
      ).toContain(`Encounter/${enc.id}`);
    });

    it('chains and reverse chains', async () => {
      const patient = patients()[0];
      const family: string = patient.name[0].family;
      const chained = await run('Encounter', { 'subject:Patient.family': family, _count: '1000' });
      expect(ids(chained).sort()).toEqual(
        expected((r) => r.resourceType === 'Encounter' && r.subject.reference === `Patient/${patient.id}`),
      );
      const obs = loaded.find(
        (r) => r.resourceType === 'Observation' && r.subject.reference === `Patient/${patient.id}`,
      )!;
      const has = await run('Patient', { '_has:Observation:patient:code': obs.code.coding[0].code });
      expect(ids(has)).toContain(`Patient/${patient.id}`);
      const hasNone = await run('Patient', { '_has:Observation:patient:code': 'no-such-code' });
      expect(ids(hasNone)).toEqual([]);
    });

    it('_include and _revinclude (with :iterate)', async () => {
      const patient = patients()[0];
      const enc = loaded.find(
        (r) => r.resourceType === 'Encounter' && r.subject.reference === `Patient/${patient.id}`,
      )!;
      const b = await run('Encounter', {
        _id: enc.id!,
        _include: 'Encounter:subject',
        _revinclude: 'Observation:encounter',
      });
      expect(ids(b)).toEqual([`Encounter/${enc.id}`]);
      const included = ids(b, 'include');
      expect(included).toContain(`Patient/${patient.id}`);
      const obsOfEnc = expected(
        (r) => r.resourceType === 'Observation' && r.encounter?.reference === `Encounter/${enc.id}`,
      );
      for (const o of obsOfEnc) expect(included).toContain(o);
      expect(b.total).toBe(1);
      const iter = await run('Observation', {
        _id: obsOfEnc[0].split('/')[1],
        _include: 'Observation:encounter',
        '_include:iterate': 'Encounter:service-provider',
      });
      const orgRef = enc.serviceProvider.reference as string;
      expect(ids(iter, 'include')).toEqual(expect.arrayContaining([`Encounter/${enc.id}`, orgRef]));
    });

    it('_revinclude:iterate follows reverse references of included resources; _include=* follows all references', async () => {
      const patient = patients()[2];
      const b = await run('Patient', {
        _id: patient.id!,
        _revinclude: 'Encounter:subject',
        '_revinclude:iterate': 'Observation:encounter',
      });
      const included = ids(b, 'include');
      const encounters = expected(
        (r) => r.resourceType === 'Encounter' && r.subject.reference === `Patient/${patient.id}`,
      );
      for (const e of encounters) expect(included).toContain(e);
      const encounterObs = expected(
        (r) => r.resourceType === 'Observation' && encounters.includes(r.encounter?.reference),
      );
      expect(encounterObs.length).toBeGreaterThan(0);
      for (const o of encounterObs) expect(included).toContain(o);
      const enc = loaded.find(
        (r) => r.resourceType === 'Encounter' && r.subject.reference === `Patient/${patient.id}`,
      )!;
      const all = await run('Encounter', { _id: enc.id!, _include: '*' });
      expect(ids(all, 'include')).toEqual(
        expect.arrayContaining([`Patient/${patient.id}`, enc.serviceProvider.reference]),
      );
    });

    it('sorts, pages with next links, and counts totals', async () => {
      const all = await run('Patient', { _sort: 'birthdate' });
      const dates = (all.entry ?? []).map((e) => e.resource.birthDate as string);
      expect(dates).toEqual([...dates].sort());
      const desc = await run('Patient', { _sort: '-birthdate' });
      expect((desc.entry ?? []).map((e) => e.resource.birthDate)).toEqual([...dates].reverse());
      const page1 = await run('Observation', { _count: '10', _total: 'accurate' });
      expect(page1.entry).toHaveLength(10);
      expect(page1.total).toBe(loaded.filter((r) => r.resourceType === 'Observation').length);
      const next = page1.link.find((l) => l.relation === 'next')!.url;
      const nextQuery: Record<string, string[]> = {};
      for (const [k, v] of new URL(next).searchParams) (nextQuery[k] ??= []).push(v);
      const page2 = await run('Observation', nextQuery);
      expect(ids(page2).some((id) => ids(page1).includes(id))).toBe(false);
      const zero = await run('Observation', { _count: '0' });
      expect(zero.total).toBe(page1.total);
      expect(zero.entry).toBeUndefined();
      const count = await run('Observation', { _summary: 'count' });
      expect(count.total).toBe(page1.total);
      expect(count.entry).toBeUndefined();
    });

    it('system search with _type and _lastUpdated', async () => {
      const b = await run(undefined, {
        _type: 'Patient,Organization',
        _lastUpdated: 'gt2000-01-01',
        _count: '1000',
      });
      expect(ids(b).sort()).toEqual(
        expected((r) => r.resourceType === 'Patient' || r.resourceType === 'Organization'),
      );
      const none = await run(undefined, { _type: 'Patient', _lastUpdated: 'lt2000-01-01' });
      expect(ids(none)).toEqual([]);
    });

    it('refuses unknown parameters by default and under strict handling, warns under lenient handling', async () => {
      const refusal = { status: 400, code: 'search-param-unsupported' };
      await expect(searchType(request('Patient', { nonsense: 'x' }), context(store))).rejects.toMatchObject(
        refusal,
      );
      const strict = { ...request('Patient', { nonsense: 'x' }), preferHandling: 'strict' as const };
      await expect(searchType(strict, context(store))).rejects.toMatchObject(refusal);
      const lenient = { ...request('Patient', { nonsense: 'x' }), preferHandling: 'lenient' as const };
      const response = await searchType(lenient, context(store));
      const b = parseFhirJson<SearchBundle>(response.body as string);
      const outcome = b.entry!.find((e) => e.search.mode === 'outcome')!;
      expect(JSON.stringify(outcome.resource)).toContain('nonsense');
    });

    it('system search paging links keep _type: the next page holds the same types', async () => {
      const first = await run(undefined, { _type: 'Patient,Condition', _count: '3' });
      const wanted = expected((r) => r.resourceType === 'Patient' || r.resourceType === 'Condition');
      expect(wanted.length).toBeGreaterThan(6);
      const seen = ids(first);
      let next = first.link.find((l) => l.relation === 'next')?.url;
      expect(next).toContain('_type=Patient,Condition');
      for (let pages = 0; next && pages < 200; pages++) {
        const query = Object.fromEntries(new URL(next).searchParams);
        const page = await run(undefined, query);
        seen.push(...ids(page));
        next = page.link.find((l) => l.relation === 'next')?.url;
      }
      expect(seen.sort()).toEqual(wanted);
    });

    it('system search takes only parameters common to all resources; _type narrows to the types named', async () => {
      const refusal = { status: 400, code: 'search-param-unsupported' };
      await expect(searchSystem(request(undefined, { name: 'x' }), context(store))).rejects.toMatchObject(
        refusal,
      );
      await expect(
        searchSystem(request(undefined, { _type: 'Patient,Observation', name: 'x' }), context(store)),
      ).rejects.toMatchObject(refusal);
      const family = patients()[0].name[0].family as string;
      const named = await run(undefined, { _type: 'Patient,Practitioner', name: family, _count: '1000' });
      expect(ids(named).length).toBeGreaterThan(0);
      expect(ids(named).every((id) => id.startsWith('Patient/') || id.startsWith('Practitioner/'))).toBe(
        true,
      );
      expect(ids(named).length).toBeLessThan(patients().length + 1);
      const common = await run(undefined, { _id: patients()[0].id! });
      expect(ids(common)).toEqual([`Patient/${patients()[0].id}`]);
    });

    it('refuses what it cannot apply (modifiers, functional _list, unknown names) instead of answering unfiltered', async () => {
      const refused: Record<string, string>[] = [
        { 'code:in': 'http://hl7.org/fhir/ValueSet/observation-codes' },
        { 'code:not-in': 'http://hl7.org/fhir/ValueSet/observation-codes' },
        { 'code:below': 'http://loinc.org|8480-6' },
        { 'code:above': 'http://loinc.org|8480-6' },
        { _list: '$current-allergies' },
        { _query: 'x' },
        { _contained: 'true' },
        { 'no-such-parameter': 'x' },
        { _sort: 'no-such-key' },
        { _include: 'Observation:no-such-reference' },
        { _revinclude: '*' },
      ];
      for (const q of refused) {
        const name = Object.keys(q)[0];
        const error = await searchType(request('Observation', q), context(store)).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(error, name).toBeInstanceOf(FhirError);
        expect((error as FhirError).status, name).toBe(400);
        expect((error as FhirError).code, name).toBe('search-param-unsupported');
        expect(JSON.stringify((error as FhirError).outcome), name).toContain(q[name] === '*' ? '*' : name);
      }
    });

    it('under Prefer: handling=lenient leaves out what it cannot apply, with a warning, and self shows what was applied', async () => {
      const patient = patients()[0];
      const query = { subject: `Patient/${patient.id}`, 'code:in': 'http://x/vs', _count: '1000' };
      const response = await searchType(
        { ...request('Observation', query), preferHandling: 'lenient' },
        context(store),
      );
      const b = parseFhirJson<SearchBundle>(response.body as string);
      expect(ids(b).sort()).toEqual(
        expected((r) => r.resourceType === 'Observation' && r.subject.reference === `Patient/${patient.id}`),
      );
      const self = decodeURIComponent(b.link.find((l) => l.relation === 'self')!.url);
      expect(self).toContain(`subject=Patient/${patient.id}`);
      expect(self).not.toContain('code');
      const outcome = b.entry!.find((e) => e.search.mode === 'outcome')!;
      expect(JSON.stringify(outcome.resource)).toContain(':in');
    });

    it('always accepts result parameters that change no match', async () => {
      const b = await run('Patient', {
        _pretty: 'true',
        _summary: 'true',
        _elements: 'gender',
        _format: 'json',
        _count: '2',
        _total: 'accurate',
        _sort: '-birthdate,_id',
        _contained: 'false',
      });
      expect(b.total).toBe(patients().length);
    });

    it('refuses hostile input with 400, never a crash', async () => {
      const hostile: Record<string, string | string[]>[] = [
        { name: 'x'.repeat(10_000) },
        { "name'; DROP TABLE resource_version; --": 'x' },
        { birthdate: "2020'; DELETE FROM search_index; --" },
        { _count: '-1' },
        { 'subject:Patient.organization.partof.partof.partof.name': 'x' },
        Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`p${i}`, 'x'])),
        { _id: "1' OR '1'='1" },
        { 'value-quantity': 'gtabc' },
      ];
      for (const q of hostile) {
        const promise = searchType(
          request(q === hostile[2] || q === hostile[0] ? 'Patient' : 'Observation', q),
          context(store),
        );
        await promise.then(
          (r) => expect(r.status).toBe(200),
          (err) => {
            expect(err).toBeInstanceOf(FhirError);
            expect((err as FhirError).status).toBe(400);
          },
        );
      }
      // SQL-looking values are just values: nothing matched, nothing dropped.
      const b = await run('Patient', { name: "x'; DROP TABLE resource_version; --" });
      expect(ids(b)).toEqual([]);
      expect((await run('Patient', {})).entry!.length).toBe(patients().length);
    });
  });

  describe('compartment search (Patient/[id]/[type], Patient/[id]/*)', () => {
    const compartment = (
      id: string,
      type: string | undefined,
      query: Record<string, string>,
      ctx = context(store),
    ) => {
      const req = { ...request(type, query), compartment: { type: 'Patient', id } };
      return (type ? searchType : searchSystem)(req, ctx).then((r) =>
        parseFhirJson<SearchBundle>(r.body as string),
      );
    };
    const ofPatient = (id: string, type: string) =>
      expected((r) => r.resourceType === type && r.subject?.reference === `Patient/${id}`);

    it("finds exactly the patient's resources of a type, with further parameters, paged", async () => {
      const [p, other] = patients();
      const obs = await compartment(p.id!, 'Observation', { _count: '1000' });
      expect(ids(obs).sort()).toEqual(ofPatient(p.id!, 'Observation'));
      expect(ids(obs).length).toBeGreaterThan(0);
      expect(ids(await compartment(other.id!, 'Encounter', { _count: '1000' })).sort()).toEqual(
        ofPatient(other.id!, 'Encounter'),
      );
      const coding = loaded.find(
        (r) => r.resourceType === 'Observation' && r.subject.reference === `Patient/${p.id}`,
      )!.code.coding[0];
      const coded = await compartment(p.id!, 'Observation', {
        code: `${coding.system}|${coding.code}`,
        _count: '1000',
      });
      expect(ids(coded).sort()).toEqual(
        expected(
          (r) =>
            r.resourceType === 'Observation' &&
            r.subject.reference === `Patient/${p.id}` &&
            r.code.coding.some(
              (c: { system: string; code: string }) => c.system === coding.system && c.code === coding.code,
            ),
        ),
      );
      const page = await compartment(p.id!, 'Observation', { _count: '2' });
      const next = page.link.find((l) => l.relation === 'next')!.url;
      expect(next).toContain(`/Patient/${p.id}/Observation?`);
    });

    it('Patient/[id]/* holds the Patient and its resources of every type, nothing of other patients', async () => {
      const [p, other] = patients();
      const all = await compartment(p.id!, undefined, { _count: '1000' });
      const found = ids(all);
      expect(found).toContain(`Patient/${p.id}`);
      for (const type of ['Observation', 'Encounter', 'Condition'])
        for (const id of ofPatient(p.id!, type)) expect(found).toContain(id);
      for (const entry of all.entry!.filter((e) => e.search.mode === 'match'))
        expect(JSON.stringify(entry.resource)).not.toContain(`Patient/${other.id}`);
      const narrowed = await compartment(p.id!, undefined, { _type: 'Encounter', _count: '1000' });
      expect(ids(narrowed).sort()).toEqual(ofPatient(p.id!, 'Encounter'));
    });

    it('refuses a type outside the compartment (400), and answers only what the caller may see', async () => {
      const [p, other] = patients();
      await expect(compartment(p.id!, 'Organization', {})).rejects.toMatchObject({ status: 400 });
      const onlyOther: AccessPolicy = {
        caller: { participant: 'x', role: 'patient', scopes: [] },
        authorize() {},
        canWrite: () => false,
        canRead: (v: StoredVersion) => !v.patients?.length || v.patients.includes(`Patient/${other.id}`),
      };
      const hidden = await compartment(
        p.id!,
        'Observation',
        { _total: 'accurate' },
        context(store, onlyOther),
      );
      expect(ids(hidden)).toEqual([]);
      expect(hidden.total).toBe(0);
    });
  });

  describe('search honours access', () => {
    it('hides other patients from matches, totals, includes, chains and _has', async () => {
      const [mine, other] = patients();
      const ctx = context(store, new OnePatient(`Patient/${mine.id}`));
      const all = await run('Patient', { _total: 'accurate' }, ctx);
      expect(ids(all)).toEqual([`Patient/${mine.id}`]);
      expect(all.total).toBe(1);
      const obs = await run('Observation', { _total: 'accurate', _count: '5' }, ctx);
      expect(obs.total).toBe(
        loaded.filter((r) => r.resourceType === 'Observation' && r.subject.reference === `Patient/${mine.id}`)
          .length,
      );
      // chain through an invisible patient matches nothing
      const chained = await run('Encounter', { 'subject:Patient.family': other.name[0].family }, ctx);
      expect(ids(chained)).toEqual([]);
      // _has through invisible observations matches nothing
      const otherObs = loaded.find(
        (r) => r.resourceType === 'Observation' && r.subject.reference === `Patient/${other.id}`,
      )!;
      const has = await run('Patient', { '_has:Observation:patient:_id': otherObs.id! }, ctx);
      expect(ids(has)).toEqual([]);
      // revinclude from a visible Organization never brings in other patients' encounters
      const enc = loaded.find(
        (r) => r.resourceType === 'Encounter' && r.subject.reference === `Patient/${other.id}`,
      )!;
      const org = (enc.serviceProvider.reference as string).split('/')[1];
      const rev = await run('Organization', { _id: org, _revinclude: 'Encounter:service-provider' }, ctx);
      for (const e of rev.entry ?? [])
        if (e.resource.resourceType === 'Encounter')
          expect(e.resource.subject.reference).toBe(`Patient/${mine.id}`);
      // include of an invisible patient is left out
      const inc = await run('Encounter', { _id: enc.id!, _include: 'Encounter:subject' }, ctx);
      expect(inc.entry ?? []).toEqual([]);
    });

    it('includes, chains and _has respect the types the caller may read at all', async () => {
      class EncounterOnly implements AccessPolicy {
        readonly caller: Caller = { participant: 's', role: 'system', scopes: ['system/Encounter.rs'] };
        authorize(_interaction: string, resourceType?: string): void {
          if (resourceType && resourceType !== 'Encounter') throw forbidden(`not ${resourceType}`);
        }
        canWrite(): boolean {
          return false;
        }
        canRead(): boolean {
          return true;
        }
      }
      const ctx = context(store, new EncounterOnly());
      const enc = loaded.find((r) => r.resourceType === 'Encounter')!;
      const b = await run(
        'Encounter',
        { _id: enc.id!, _include: 'Encounter:subject', _revinclude: 'Observation:encounter' },
        ctx,
      );
      expect(ids(b)).toEqual([`Encounter/${enc.id}`]);
      expect(ids(b, 'include')).toEqual([]);
      expect(JSON.stringify(b.entry!.find((e) => e.search.mode === 'outcome'))).toContain('not included');
      await expect(
        searchType(request('Encounter', { 'subject:Patient.family': 'x' }), ctx),
      ).rejects.toMatchObject({ status: 403 });
      await expect(
        searchType(request('Encounter', { '_has:Observation:encounter:code': 'x' }), ctx),
      ).rejects.toMatchObject({ status: 403 });
    });
  });

  // Paging continues after the last match served (a sealed cursor), not at an offset: writes between pages
  // neither repeat nor skip a resource that existed at the first page (issue 15).
  describe("references stored as absolute URLs under this server's base (search.html#reference)", () => {
    // request() addresses the server as http://test/fhir: a reference written under it names the same resource as
    // `Type/id`; one under another base names another server's resource.
    let own: ResourceStore;
    beforeAll(async () => {
      own = await backend.open();
      const observation = (id: string, subject: string, code: string) => ({
        resourceType: 'Observation',
        id,
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code }] },
        subject: { reference: subject },
      });
      const resources: (FhirResource & Record<string, unknown>)[] = [
        { resourceType: 'Patient', id: 'abs-p', name: [{ family: 'Absolutely' }] },
        observation('abs-o', 'http://test/fhir/Patient/abs-p', 'abs-1'),
        observation('far-o', 'http://elsewhere/fhir/Patient/abs-p', 'abs-2'),
      ];
      for (const resource of resources) await own.write(indexedPut(resource));
    });
    afterAll(async () => own.close());
    const find = async (type: string, query: Record<string, string>) => {
      const response = await searchType(request(type, query), context(own));
      expect(response.status).toBe(200);
      return parseFhirJson<SearchBundle>(response.body as string);
    };

    it('chains and _has follow them; not those under another base', async () => {
      expect(ids(await find('Observation', { 'subject:Patient.family': 'absolutely' }))).toEqual([
        'Observation/abs-o',
      ]);
      expect(ids(await find('Patient', { '_has:Observation:subject:code': 'abs-1' }))).toEqual([
        'Patient/abs-p',
      ]);
      expect(ids(await find('Patient', { '_has:Observation:subject:code': 'abs-2' }))).toEqual([]);
    });

    it('_include and _revinclude follow them; not those under another base', async () => {
      const included = await find('Observation', { _id: 'abs-o', _include: 'Observation:subject' });
      expect(ids(included, 'include')).toEqual(['Patient/abs-p']);
      const far = await find('Observation', { _id: 'far-o', _include: 'Observation:subject' });
      expect(ids(far, 'include')).toEqual([]);
      const reverse = await find('Patient', { _id: 'abs-p', _revinclude: 'Observation:subject' });
      expect(ids(reverse, 'include')).toEqual(['Observation/abs-o']);
    });
  });

  describe('paging with a cursor', () => {
    let paged: ResourceStore;
    beforeAll(async () => {
      paged = await backend.open();
    });
    afterAll(async () => paged.close());

    async function put(resource: FhirResource & Record<string, unknown>): Promise<void> {
      await paged.write(indexedPut(resource));
    }
    const patient = (id: string, family: string, birthDate: string) => ({
      resourceType: 'Patient',
      id,
      name: [{ family }],
      birthDate,
    });
    async function page(
      type: string,
      query: Record<string, string | string[]>,
      ctx = context(paged),
    ): Promise<SearchBundle> {
      const response = await searchType(request(type, query), ctx);
      return parseFhirJson<SearchBundle>(response.body as string);
    }
    const queryOf = (url: string): Record<string, string[]> => {
      const out: Record<string, string[]> = {};
      for (const [k, v] of new URL(url).searchParams) (out[k] ??= []).push(v);
      return out;
    };
    const nextOf = (b: SearchBundle) => b.link.find((l) => l.relation === 'next')?.url;
    /** Every page after `first`, following `next` links (at most 20). */
    async function rest(type: string, first: SearchBundle, ctx = context(paged)): Promise<SearchBundle[]> {
      const pages: SearchBundle[] = [];
      for (let next = nextOf(first); next && pages.length < 20; next = nextOf(pages[pages.length - 1]!))
        pages.push(await page(type, queryOf(next), ctx));
      return pages;
    }

    it.each([
      ['no _sort', {}],
      ['_sort=_lastUpdated', { _sort: '_lastUpdated' }],
      ['_sort=-_lastUpdated', { _sort: '-_lastUpdated' }],
      ['_sort=birthdate,_id', { _sort: 'birthdate,_id' }],
      ['_sort=-family', { _sort: '-family' }],
    ])('with %s, updates and a create between pages repeat or skip nothing', async (name, sort) => {
      const family = `pg${name.replace(/-/g, 'desc').replace(/[^a-z]/gi, '')}`;
      const idsOf = ['a', 'b', 'c', 'd', 'e'].map((x) => `${family}-${x}`);
      for (const [i, id] of idsOf.entries())
        await put(patient(id, `${family}${'zyxwv'[i]}`, `19${70 + i}-01-01`));
      const first = await page('Patient', { family, _count: '2', ...sort });
      const served = ids(first);
      expect(served).toHaveLength(2);
      // Between pages: a served match and one not yet served are updated (their last write moves, their family
      // and birthdate stay), and a resource is created that sorts first by family (descending) and birthdate.
      const update = async (id: string) => {
        const i = idsOf.indexOf(id);
        await put({ ...patient(id, `${family}${'zyxwv'[i]}`, `19${70 + i}-01-01`), gender: 'other' });
      };
      await update(served[0]!.slice('Patient/'.length));
      await update(idsOf.find((id) => !served.includes(`Patient/${id}`) && id !== idsOf[4])!);
      await put(patient(`${family}-new`, `${family}zz`, '1960-01-01'));
      const pages = await rest('Patient', first);
      for (const p of pages) served.push(...ids(p));
      const existing = served.filter((id) => !id.endsWith('-new'));
      expect(existing.sort()).toEqual(idsOf.map((id) => `Patient/${id}`).sort());
      expect(pages.length).toBeGreaterThan(0);
      for (const p of pages) expect(p.link.find((l) => l.relation === 'previous')).toBeUndefined();
    });

    it.each(['birthdate', '-birthdate'])(
      '_sort=%s pages through resources without the sort value (NULLs) in one order',
      async (sort) => {
        const family = `pgnulls${sort.startsWith('-') ? 'desc' : 'asc'}`;
        for (const [x, birthDate] of [
          ['a', undefined],
          ['b', '1990-01-01'],
          ['c', undefined],
          ['d', '1980-01-01'],
          ['e', undefined],
        ] as const)
          await put({
            resourceType: 'Patient',
            id: `${family}-${x}`,
            name: [{ family }],
            ...(birthDate ? { birthDate } : {}),
          });
        const whole = ids(await page('Patient', { family, _sort: sort, _count: '100' }));
        expect(whole).toHaveLength(5);
        const first = await page('Patient', { family, _sort: sort, _count: '2' });
        const paged = [...ids(first), ...(await rest('Patient', first)).flatMap((p) => ids(p))];
        expect(paged).toEqual(whole);
      },
    );

    it('a served resource deleted between pages moves no later match', async () => {
      const family = 'pgdeleted';
      const idsOf = ['a', 'b', 'c', 'd', 'e'].map((x) => `Patient/${family}-${x}`);
      for (const id of idsOf) await put(patient(id.slice('Patient/'.length), family, '1980-01-01'));
      const first = await page('Patient', { family, _count: '2' });
      expect(ids(first)).toEqual(idsOf.slice(0, 2));
      await paged.write({ resourceType: 'Patient', id: `${family}-a`, method: 'DELETE' });
      const pages = await rest('Patient', first);
      expect(pages.flatMap((p) => ids(p))).toEqual(idsOf.slice(2));
    });

    it('keeps _total and _include on every page', async () => {
      const family = 'pgincluded';
      await put(patient(`${family}-p`, family, '1990-01-01'));
      for (const x of ['a', 'b', 'c', 'd', 'e'])
        await put({
          resourceType: 'Observation',
          id: `${family}-${x}`,
          status: 'final',
          code: { coding: [{ system: 'http://example.org/paging', code: family }] },
          subject: { reference: `Patient/${family}-p` },
        });
      const query = {
        code: `http://example.org/paging|${family}`,
        _count: '2',
        _total: 'accurate',
        _include: 'Observation:subject',
      };
      const first = await page('Observation', query);
      expect(first.total).toBe(5);
      const pages = await rest('Observation', first);
      expect(pages).toHaveLength(2);
      for (const p of [first, ...pages]) {
        expect(p.total).toBe(5);
        expect(ids(p, 'include')).toEqual([`Patient/${family}-p`]);
        expect(queryOf(p.link.find((l) => l.relation === 'self')!.url)._include).toEqual([
          'Observation:subject',
        ]);
      }
      expect([first, ...pages].flatMap((p) => ids(p)).sort()).toEqual(
        ['a', 'b', 'c', 'd', 'e'].map((x) => `Observation/${family}-${x}`),
      );
    });

    it('makes a page smaller rather than cut its _revinclude set at 1,000, and says so', async () => {
      const family = 'pgmanyincludes';
      const perPatient = 340; // three patients' Observations (1,020) pass the 1,000 limit, two (680) do not
      for (const p of ['a', 'b', 'c']) {
        await put(patient(`${family}-${p}`, family, '1990-01-01'));
        // In parallel (independent writes): PostgreSQL's pool takes several at once.
        for (let from = 0; from < perPatient; from += 50)
          await Promise.all(
            Array.from({ length: Math.min(50, perPatient - from) }, (_, i) =>
              put({
                resourceType: 'Observation',
                id: `${family}-${p}-${from + i}`,
                status: 'final',
                code: { text: 'x' },
                subject: { reference: `Patient/${family}-${p}` },
              }),
            ),
          );
      }
      const query = { family, _count: '3', _revinclude: 'Observation:subject', _sort: '_id' };
      const first = await page('Patient', query);
      expect(ids(first)).toEqual([`Patient/${family}-a`, `Patient/${family}-b`]);
      expect(ids(first, 'include')).toHaveLength(2 * perPatient);
      const outcome = first.entry!.find((e) => e.search.mode === 'outcome')!.resource;
      expect(outcome.issue).toEqual([
        expect.objectContaining({ severity: 'information', code: 'informational' }),
      ]);
      const pages = await rest('Patient', first);
      expect(pages).toHaveLength(1);
      expect(ids(pages[0]!)).toEqual([`Patient/${family}-c`]);
      expect(ids(pages[0]!, 'include')).toHaveLength(perPatient);
      expect(pages[0]!.entry!.some((e) => e.search.mode === 'outcome')).toBe(false);
    });

    it("refuses an altered cursor, another caller's, and another search's: 400 page-cursor-invalid", async () => {
      const family = 'pgcursor';
      for (const x of ['a', 'b', 'c']) await put(patient(`${family}-${x}`, family, '1990-01-01'));
      const first = await page('Patient', { family, _count: '1' });
      const next = queryOf(nextOf(first)!);
      const sealed = next._cursor![0]!;
      expect(sealed).toMatch(/^[A-Za-z0-9_-]+$/);
      const invalid = { status: 400, code: 'page-cursor-invalid' };
      const altered = `${sealed.slice(0, 20)}${sealed[20] === 'A' ? 'B' : 'A'}${sealed.slice(21)}`;
      for (const cursor of [altered, 'garbage', `${sealed}x`])
        await expect(
          searchType(request('Patient', { ...next, _cursor: cursor }), context(paged)),
        ).rejects.toMatchObject(invalid);
      const other = new OpenAccess({ participant: 'someone-else', role: 'open', scopes: ['system/*.*'] });
      await expect(searchType(request('Patient', next), context(paged, other))).rejects.toMatchObject(
        invalid,
      );
      await expect(
        searchType(request('Patient', { ...next, family: 'pgother' }), context(paged)),
      ).rejects.toMatchObject(invalid);
      await expect(searchType(request('Practitioner', next), context(paged))).rejects.toMatchObject(invalid);
      // The same caller, the same search: the cursor opens (and a smaller _count is accepted with it).
      const second = await page('Patient', { ...next, _count: '1' });
      expect(ids(second)).toHaveLength(1);
      expect(ids(second)).not.toEqual(ids(first));
    });
  });
});
