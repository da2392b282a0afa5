/**
 * The R4 search page's own examples (http://hl7.org/fhir/R4/search.html) as test cases, on every store that
 * searches: each query is the page's, over a few resources made so that the example has both a match and a near
 * miss. (The TestScripts of conformance/testscripts/http-search.json cover the page section by section over HTTP.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { searchType } from '../../src/fhir/interactions/search.js';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import { searchStores, context, request, type SearchBundle, indexedPut } from './helpers.js';

const UCUM = 'http://unitsofmeasure.org';
const V2 = 'http://terminology.hl7.org/CodeSystem/v2-0203';

const RESOURCES: FhirResource[] = [
  {
    resourceType: 'Patient',
    id: '23',
    name: [{ family: 'Peterson', given: ['Eve'] }],
    gender: 'female',
    identifier: [
      { system: 'http://acme.org/patient', value: '2345' },
      { type: { coding: [{ system: V2, code: 'MR' }] }, system: 'http://h', value: '446053' },
    ],
  },
  {
    resourceType: 'Patient',
    id: '24',
    name: [{ family: 'Smith', given: ['Steve'] }],
    gender: 'male',
    identifier: [{ system: 'http://acme.org/patient', value: '2346' }],
  },
  {
    resourceType: 'Patient',
    id: '25',
    name: [{ family: 'Evers', given: ['Peter'] }],
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">bone metastases</div>' },
  },
  {
    resourceType: 'Observation',
    id: 'o1',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '1234-5' }] },
    subject: { reference: 'Patient/23' },
    effectiveDateTime: '2013-01-14T10:00:00Z',
    valueQuantity: { value: 5.4, unit: 'mg', system: UCUM, code: 'mg' },
  },
  {
    resourceType: 'Observation',
    id: 'o2',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '12907-2' }] },
    subject: { reference: 'Patient/25' },
    effectiveDateTime: '2013-01-15',
    valueQuantity: { value: 151, unit: 'mmol/L', system: UCUM, code: 'mmol/L' },
  },
  {
    resourceType: 'Condition',
    id: 'c1',
    subject: { reference: 'Patient/23' },
    code: { text: 'Headache, tension type' },
  },
  {
    resourceType: 'RiskAssessment',
    id: 'r1',
    status: 'final',
    subject: { reference: 'Patient/23' },
    prediction: [{ probabilityDecimal: 0.9 }],
  },
  {
    resourceType: 'RiskAssessment',
    id: 'r2',
    status: 'final',
    subject: { reference: 'Patient/24' },
    prediction: [{ probabilityDecimal: 0.5 }],
  },
  {
    resourceType: 'List',
    id: '42',
    status: 'current',
    mode: 'working',
    entry: [{ item: { reference: 'Observation/o2' } }],
  },
];

describe.each(searchStores())('the R4 search page examples on the $name store', (backend) => {
  if (backend.skip) {
    it.skip(backend.skip, () => undefined);
    return;
  }
  let store: ResourceStore;
  beforeAll(async () => {
    store = await backend.open();
    for (const resource of RESOURCES) await store.write(indexedPut(resource));
  });
  afterAll(async () => store.close());

  async function ids(url: string): Promise<string[]> {
    const [type, search] = url.split('?') as [string, string];
    const query: Record<string, string[]> = {};
    for (const [k, v] of new URLSearchParams(search)) (query[k] ??= []).push(v);
    const response = await searchType(request(type, query), context(store));
    const bundle = parseFhirJson<SearchBundle>(response.body as string);
    return (bundle.entry ?? [])
      .filter((e) => e.search.mode === 'match')
      .map((e) => `${e.resource.resourceType}/${e.resource.id}`)
      .sort();
  }

  it.each([
    // search.html#string
    ['Patient?given=eve', ['Patient/23']],
    ['Patient?given:contains=eve', ['Patient/23', 'Patient/24']],
    ['Patient?given:exact=Eve', ['Patient/23']],
    // search.html#token
    ['Patient?identifier=http://acme.org/patient|2345', ['Patient/23']],
    ['Patient?gender:not=male', ['Patient/23', 'Patient/25']],
    ['Condition?code:text=headache', ['Condition/c1']],
    [`Patient?identifier:of-type=${encodeURIComponent(`${V2}|MR|446053`)}`, ['Patient/23']],
    // search.html#date
    ['Observation?date=le2013-01-14', ['Observation/o1']],
    ['Observation?date=2013-01-14', ['Observation/o1']],
    // search.html#quantity
    [`Observation?value-quantity=5.4|${UCUM}|mg`, ['Observation/o1']],
    ['Observation?value-quantity=5.4||mg', ['Observation/o1']],
    [`Observation?value-quantity=le5.4|${UCUM}|mg`, ['Observation/o1']],
    // search.html#number
    ['RiskAssessment?probability=gt0.8', ['RiskAssessment/r1']],
    // search.html#reference and #chaining
    ['Observation?subject=Patient/23', ['Observation/o1']],
    ['Observation?subject:Patient=23', ['Observation/o1']],
    ['Observation?patient.name=peter', ['Observation/o1', 'Observation/o2']],
    ['RiskAssessment?subject:Patient.name=peter', ['RiskAssessment/r1']],
    // search.html#has
    ['Patient?_has:Observation:patient:code=1234-5', ['Patient/23']],
    // search.html#combining (composite)
    [
      `Observation?code-value-quantity=${encodeURIComponent(`http://loinc.org|12907-2$ge150|${UCUM}|mmol/L`)}`,
      ['Observation/o2'],
    ],
    // search.html#text and #list
    ['Patient?_text=(bone OR liver) and metastases', ['Patient/25']],
    ['Observation?_list=42', ['Observation/o2']],
  ] as [string, string[]][])('%s', async (url, expected) => {
    expect(await ids(url)).toEqual(expected);
  });
});
