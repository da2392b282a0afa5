/**
 * `_text`, `_content` (full text), `_list` and token `:of-type` (issue 16), on every store that searches: the same
 * queries give the same resources on SQLite (FTS5) and PostgreSQL (GIN tsvector), and each honours the caller's
 * visibility like any other parameter (hidden is indistinguishable from absent).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { searchType, searchSystem } from '../../src/fhir/interactions/search.js';
import { FhirError } from '../../src/fhir/outcome.js';
import { OnePatient } from '../support/one-patient-access.js';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import { searchStores, context, request, type SearchBundle, indexedPut } from './helpers.js';

const V2 = 'http://terminology.hl7.org/CodeSystem/v2-0203';

function div(text: string): { status: string; div: string } {
  return { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${text}</div>` };
}

const RESOURCES: FhirResource[] = [
  {
    resourceType: 'Patient',
    id: 'p1',
    text: div('Patient with <b>bone</b> metastases, seen in Zürich'),
    name: [{ family: 'Quinn', given: ['Ann'] }],
    identifier: [
      { type: { coding: [{ system: V2, code: 'MR' }] }, system: 'http://h/mr', value: '1234' },
      { type: { coding: [{ system: V2, code: 'SS' }] }, system: 'http://h/ss', value: '999' },
    ],
  },
  {
    resourceType: 'Patient',
    id: 'p2',
    text: div('Liver metastases &amp; O&#39;Brien notes'),
    name: [{ family: 'Osler', given: ['Bone'] }],
    identifier: [{ type: { coding: [{ system: V2, code: 'SS' }] }, system: 'http://h/ss', value: '1234' }],
  },
  {
    resourceType: 'Patient',
    id: 'p3',
    text: div('Healthy, no findings'),
    name: [{ family: 'Metastases-Free' }],
    identifier: [{ system: 'http://h/mr', value: '1234' }],
  },
  {
    resourceType: 'Condition',
    id: 'c1',
    subject: { reference: 'Patient/p1' },
    code: { text: 'Secondary malignant neoplasm of bone' },
    note: [{ text: 'bone marrow involvement, liver clear' }],
  },
  {
    resourceType: 'Condition',
    id: 'c2',
    subject: { reference: 'Patient/p2' },
    code: { text: 'Secondary malignant neoplasm of liver' },
  },
  {
    resourceType: 'List',
    id: 'l-open',
    status: 'current',
    mode: 'working',
    entry: [{ item: { reference: 'Patient/p1' } }, { item: { reference: 'Condition/c2' } }],
  },
  {
    resourceType: 'List',
    id: 'l-p2',
    status: 'current',
    mode: 'working',
    subject: { reference: 'Patient/p2' },
    entry: [{ item: { reference: 'Patient/p1' } }, { item: { reference: 'Patient/p2' } }],
  },
];

describe.each(searchStores())('_text, _content, _list and :of-type on the $name store', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  let store: ResourceStore;

  async function write(resource: FhirResource): Promise<void> {
    await store.write(indexedPut(resource));
  }

  async function ids(
    type: string | undefined,
    query: Record<string, string>,
    ctx = context(store),
  ): Promise<string[]> {
    const response = await (type ? searchType : searchSystem)(request(type, query), ctx);
    expect(response.status).toBe(200);
    const bundle = parseFhirJson<SearchBundle>(response.body as string);
    return (bundle.entry ?? [])
      .filter((e) => e.search.mode === 'match')
      .map((e) => `${e.resource.resourceType}/${e.resource.id}`)
      .sort();
  }

  async function refused(type: string, query: Record<string, string>): Promise<FhirError> {
    const error = await searchType(request(type, query), context(store)).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error, JSON.stringify(query)).toBeInstanceOf(FhirError);
    expect((error as FhirError).status).toBe(400);
    return error as FhirError;
  }

  beforeAll(async () => {
    store = await backend.open();
    for (const resource of RESOURCES) await write(resource);
  });
  afterAll(async () => store.close());

  it('_text searches the narrative only; _content every text of the resource', async () => {
    expect(await ids('Patient', { _text: 'metastases' })).toEqual(['Patient/p1', 'Patient/p2']);
    // "Metastases-Free" is p3's name, not its narrative
    expect(await ids('Patient', { _content: 'metastases' })).toEqual([
      'Patient/p1',
      'Patient/p2',
      'Patient/p3',
    ]);
    expect(await ids('Patient', { _text: 'quinn' })).toEqual([]);
    expect(await ids('Patient', { _content: 'quinn' })).toEqual(['Patient/p1']);
    // case and accents ignored, as string search; character references decoded
    expect(await ids('Patient', { _text: 'ZURICH' })).toEqual(['Patient/p1']);
    expect(await ids('Patient', { _text: "o'brien" })).toEqual(['Patient/p2']);
    expect(await ids('Condition', { _content: 'marrow' })).toEqual(['Condition/c1']);
    // identifiers and numbers are content too
    expect(await ids('Patient', { _content: '999' })).toEqual(['Patient/p1']);
  });

  it('words outside ASCII are found on both stores alike (Cyrillic, CJK); a huge text is cut, not refused', async () => {
    await write({ resourceType: 'Patient', id: 'p-ru', text: div('Пациентка Александровская, 東京') });
    expect(await ids('Patient', { _text: 'АЛЕКСАНДРОВСКАЯ' })).toEqual(['Patient/p-ru']);
    expect(await ids('Patient', { _text: '東京' })).toEqual(['Patient/p-ru']);
    expect(await ids('Patient', { _text: 'александровск' })).toEqual([]);
    // more distinct words than a PostgreSQL tsvector holds: the write succeeds, the first words are indexed
    const many = Array.from({ length: 40_000 }, (_, i) => `w${i.toString(36)}x${'y'.repeat(20)}`).join(' ');
    await write({ resourceType: 'Patient', id: 'huge', text: div(`first ${many}`) });
    expect(await ids('Patient', { _text: 'first' })).toEqual(['Patient/huge']);
    expect(await ids('Patient', { _content: 'first' })).toEqual(['Patient/huge']);
  });

  it('the query syntax of the R4 search page: AND, OR, parentheses and phrases', async () => {
    // search.html: _text=(bone OR liver) and metastases
    expect(await ids('Patient', { _text: '(bone OR liver) and metastases' })).toEqual([
      'Patient/p1',
      'Patient/p2',
    ]);
    expect(await ids('Patient', { _text: 'bone metastases' })).toEqual(['Patient/p1']);
    expect(await ids('Patient', { _content: 'bone AND osler' })).toEqual(['Patient/p2']);
    expect(await ids('Condition', { _content: 'marrow OR "neoplasm of liver"' })).toEqual([
      'Condition/c1',
      'Condition/c2',
    ]);
    // a phrase: the words next to each other, in order
    expect(await ids('Condition', { _content: '"of bone"' })).toEqual(['Condition/c1']);
    expect(await ids('Condition', { _content: '"bone of"' })).toEqual([]);
    // a comma ORs whole queries, like any parameter
    expect(await ids('Patient', { _text: 'zurich,healthy' })).toEqual(['Patient/p1', 'Patient/p3']);
    // a system search takes them (common to all resources)
    expect(await ids(undefined, { _content: 'liver', _type: 'Condition,Patient' })).toEqual([
      'Condition/c1',
      'Condition/c2',
      'Patient/p2',
    ]);
  });

  it('refuses syntax it does not support with 400 naming the parameter', async () => {
    for (const value of ['bone NOT liver', 'meta*', '-bone', '(bone', 'bone)', '"bone', 'AND', '', '!!']) {
      const error = await refused('Patient', { _text: value });
      expect(error.code).toBe('search-param-invalid');
      expect(error.message).toContain('_text');
    }
    expect((await refused('Patient', { '_text:exact': 'bone' })).code).toBe('search-param-unsupported');
  });

  it('the text index follows every write: update, delete, re-create', async () => {
    await write({ resourceType: 'Patient', id: 'p9', text: div('transient aardvark') });
    expect(await ids('Patient', { _text: 'aardvark' })).toEqual(['Patient/p9']);
    await write({ resourceType: 'Patient', id: 'p9', text: div('now a zebra') });
    expect(await ids('Patient', { _text: 'aardvark' })).toEqual([]);
    expect(await ids('Patient', { _text: 'zebra' })).toEqual(['Patient/p9']);
    await store.write({ resourceType: 'Patient', id: 'p9', method: 'DELETE' });
    expect(await ids('Patient', { _text: 'zebra' })).toEqual([]);
    await write({ resourceType: 'Patient', id: 'p9', text: div('zebra again') });
    expect(await ids('Patient', { _text: 'zebra' })).toEqual(['Patient/p9']);
  });

  it('full text honours visibility: hidden resources are not matched nor counted', async () => {
    const ctx = context(store, new OnePatient('Patient/p1'));
    expect(await ids('Patient', { _text: 'metastases' }, ctx)).toEqual(['Patient/p1']);
    expect(await ids('Condition', { _content: 'liver' }, ctx)).toEqual(['Condition/c1']);
    const response = await searchType(
      request('Patient', { _text: 'liver', _total: 'accurate' }),
      context(store, new OnePatient('Patient/p1')),
    );
    expect(parseFhirJson<SearchBundle>(response.body as string).total).toBe(0);
  });

  it('_list: the entries of the List, of the searched type', async () => {
    expect(await ids('Patient', { _list: 'l-open' })).toEqual(['Patient/p1']);
    expect(await ids('Condition', { _list: 'l-open' })).toEqual(['Condition/c2']);
    expect(await ids('Patient', { _list: 'l-open,l-p2' })).toEqual(['Patient/p1', 'Patient/p2']);
    expect(await ids('Patient', { _list: 'l-p2', name: 'osler' })).toEqual(['Patient/p2']);
    expect(await ids(undefined, { _list: 'l-open', _type: 'Patient,Condition' })).toEqual([
      'Condition/c2',
      'Patient/p1',
    ]);
    expect(await ids('Patient', { _list: 'no-such-list' })).toEqual([]);
  });

  it('_list honours visibility: a hidden List matches as an absent one, hidden entries are left out', async () => {
    const p1 = context(store, new OnePatient('Patient/p1'));
    // l-p2 is in p2's compartment: for p1's caller it is absent
    expect(await ids('Patient', { _list: 'l-p2' }, p1)).toEqual(
      await ids('Patient', { _list: 'absent' }, p1),
    );
    expect(await ids('Patient', { _list: 'l-p2' }, p1)).toEqual([]);
    // l-open is visible, its entry Condition/c2 (p2's) is not
    expect(await ids('Condition', { _list: 'l-open' }, p1)).toEqual([]);
    expect(await ids('Patient', { _list: 'l-open' }, p1)).toEqual(['Patient/p1']);
  });

  it('_list refuses functional lists and malformed ids', async () => {
    expect((await refused('Patient', { _list: '$current-allergies' })).code).toBe('search-param-unsupported');
    expect((await refused('Patient', { _list: 'List/../x' })).code).toBe('search-param-invalid');
  });

  it(':of-type matches an Identifier by its type coding and value', async () => {
    expect(await ids('Patient', { 'identifier:of-type': `${V2}|MR|1234` })).toEqual(['Patient/p1']);
    expect(await ids('Patient', { 'identifier:of-type': `${V2}|SS|1234` })).toEqual(['Patient/p2']);
    expect(await ids('Patient', { 'identifier:of-type': `${V2}|SS|999,${V2}|SS|1234` })).toEqual([
      'Patient/p1',
      'Patient/p2',
    ]);
    // the type code and the value must be on the same Identifier
    expect(await ids('Patient', { 'identifier:of-type': `${V2}|MR|999` })).toEqual([]);
    // p3's identifier has no type
    expect(await ids('Patient', { identifier: 'http://h/mr|1234' })).toEqual(['Patient/p1', 'Patient/p3']);
    expect(
      await ids(
        'Patient',
        { 'identifier:of-type': `${V2}|MR|1234` },
        context(store, new OnePatient('Patient/p2')),
      ),
    ).toEqual([]);
    for (const value of [`${V2}|MR`, `${V2}||1234`, `${V2}|MR|`, '1234'])
      expect((await refused('Patient', { 'identifier:of-type': value })).code).toBe('search-param-invalid');
  });
});
