/**
 * Token `:in`, `:not-in`, `:below`, `:above` against the terminology port (R4 search.html#token), on SQLite and
 * PostgreSQL alike: value sets of the loaded R4 content and of a big code system loaded from its owner's files
 * (an RF2 excerpt), subsumption in a loaded hierarchy, the caller's visibility applied as for any parameter, a
 * cap with a clear 400, and refusals where the terminology cannot answer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { searchType } from '../../src/fhir/interactions/search.js';
import { FhirError } from '../../src/fhir/outcome.js';
import type { AccessPolicy } from '../../src/fhir/interactions/access-policy.js';
import { OnePatient } from '../support/one-patient-access.js';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import { coreRegistry, DefinitionRegistry } from '../../src/fhir/definitions/definition-registry.js';
import { Terminology } from '../../src/fhir/validation/terminology.js';
import { loadCodeSystem } from '../../src/terminology/loaders.js';
import {
  SqliteCodeSystems,
  terminologyFile,
  TerminologyWriter,
} from '../../src/terminology/terminology-store.js';
import { MAX_MODIFIER_CODES } from '../../src/fhir/search/terminology-modifiers.js';
import { context, request, searchStores, type SearchBundle, indexedPut } from '../search/helpers.js';
import { DIABETES_VALUE_SET, DIABETES_VALUE_SET_URL, SNOMED } from '../support/diabetes-profile.js';
import { SCT, writeExcerpts } from './excerpts.js';

const LOINC = 'http://loinc.org';
const VITALS_VS = 'http://example.org/fhir/ValueSet/vitals';
const HUGE_VS = 'http://example.org/fhir/ValueSet/huge';

let dir: string;
let codeSystems: SqliteCodeSystems;
let terminology: Terminology;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'hie-terms-search-'));
  const files = writeExcerpts(path.join(dir, 'releases'));
  const writer = new TerminologyWriter(terminologyFile(dir));
  try {
    await loadCodeSystem('snomed', files.snomed, writer);
    await loadCodeSystem('loinc', files.loinc, writer);
  } finally {
    writer.close();
  }
  codeSystems = SqliteCodeSystems.openIfPresent(terminologyFile(dir))!;
  const registry = new DefinitionRegistry(coreRegistry());
  const valueSet = (url: string, compose: object) =>
    registry.registerResource({ resourceType: 'ValueSet', url, status: 'active', compose });
  registry.registerResource(structuredClone(DIABETES_VALUE_SET));
  valueSet(VITALS_VS, { include: [{ system: LOINC, concept: [{ code: '8867-4' }, { code: '29463-7' }] }] });
  valueSet(HUGE_VS, {
    include: [
      {
        system: 'http://example.org/codes',
        concept: Array.from({ length: MAX_MODIFIER_CODES + 1 }, (_, i) => ({ code: `c${i}` })),
      },
    ],
  });
  terminology = new Terminology(registry);
  terminology.useLoadedCodeSystems(codeSystems);
});

afterAll(() => {
  codeSystems?.close();
  rmSync(dir, { recursive: true, force: true });
});

const condition = (id: string, patient: string, code?: string): FhirResource => ({
  resourceType: 'Condition',
  id,
  subject: { reference: `Patient/${patient}` },
  ...(code ? { code: { coding: [{ system: SNOMED, code }] } } : {}),
});
const observation = (id: string, code: string): FhirResource => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  subject: { reference: 'Patient/p1' },
  code: { coding: [{ system: LOINC, code }] },
});

const RESOURCES: FhirResource[] = [
  { resourceType: 'Patient', id: 'p1', gender: 'female' },
  { resourceType: 'Patient', id: 'p2', gender: 'male' },
  { resourceType: 'Patient', id: 'p3', gender: 'unknown' },
  condition('c-type2', 'p1', SCT.type2),
  condition('c-type1', 'p2', SCT.type1),
  condition('c-diabetes', 'p1', SCT.diabetes),
  condition('c-disease', 'p1', SCT.disease),
  condition('c-none', 'p1'),
  observation('o-hr', '8867-4'),
  observation('o-wt', '29463-7'),
  observation('o-temp', '8310-5'),
];

describe.each(searchStores())('terminology modifiers on the $name store', (backend) => {
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

  const ctx = (access?: AccessPolicy) => ({ ...context(store, access), terminology });
  async function ids(type: string, query: Record<string, string>, access?: AccessPolicy): Promise<string[]> {
    const response = await searchType(request(type, { ...query, _count: '100' }), ctx(access));
    expect(response.status).toBe(200);
    const bundle = parseFhirJson<SearchBundle>(response.body as string);
    return (bundle.entry ?? []).map((e) => e.resource.id!).sort();
  }
  async function refusal(type: string, query: Record<string, string>): Promise<FhirError> {
    const error = await searchType(request(type, query), ctx()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(FhirError);
    return error as FhirError;
  }

  it(':below and :above follow the loaded is-a hierarchy (system|code)', async () => {
    expect(await ids('Condition', { 'code:below': `${SNOMED}|${SCT.diabetes}` })).toEqual([
      'c-diabetes',
      'c-type1',
      'c-type2',
    ]);
    expect(await ids('Condition', { 'code:below': `${SNOMED}|${SCT.type2}` })).toEqual(['c-type2']);
    expect(await ids('Condition', { 'code:above': `${SNOMED}|${SCT.type2}` })).toEqual([
      'c-diabetes',
      'c-disease',
      'c-type2',
    ]);
  });

  it(':in and :not-in take a value set: one on a loaded big code system, one of listed codes, one of R4', async () => {
    expect(await ids('Condition', { 'code:in': DIABETES_VALUE_SET_URL })).toEqual([
      'c-diabetes',
      'c-type1',
      'c-type2',
    ]);
    // :not-in as :not: every resource with no code in the value set, one without a code too
    expect(await ids('Condition', { 'code:not-in': DIABETES_VALUE_SET_URL })).toEqual([
      'c-disease',
      'c-none',
    ]);
    expect(await ids('Observation', { 'code:in': VITALS_VS })).toEqual(['o-hr', 'o-wt']);
    expect(await ids('Observation', { 'code:not-in': VITALS_VS })).toEqual(['o-temp']);
    // OR of two value sets, AND with another parameter
    expect(
      await ids('Observation', { 'code:in': `${VITALS_VS},${DIABETES_VALUE_SET_URL}`, _id: 'o-hr,o-temp' }),
    ).toEqual(['o-hr']);
    expect(
      await ids('Patient', { 'gender:in': 'http://hl7.org/fhir/ValueSet/administrative-gender' }),
    ).toEqual(['p1', 'p2', 'p3']);
  });

  it('applies the caller’s visibility as for any parameter', async () => {
    const onlyP1 = new OnePatient('Patient/p1');
    expect(await ids('Condition', { 'code:below': `${SNOMED}|${SCT.diabetes}` }, onlyP1)).toEqual([
      'c-diabetes',
      'c-type2',
    ]);
    expect(await ids('Condition', { 'code:in': DIABETES_VALUE_SET_URL }, onlyP1)).toEqual([
      'c-diabetes',
      'c-type2',
    ]);
    expect(
      await ids('Condition', { 'code:not-in': DIABETES_VALUE_SET_URL }, new OnePatient('Patient/p2')),
    ).toEqual([]);
  });

  it('refuses with 400 what it cannot answer: unknown value sets, systems not loaded, too many codes, no system', async () => {
    const unknown = await refusal('Condition', { 'code:in': 'http://example.org/no-such-vs' });
    expect([unknown.status, unknown.code]).toEqual([400, 'search-param-unsupported']);
    expect(JSON.stringify(unknown.outcome)).toContain('code:in');
    const notLoaded = await refusal('Condition', {
      'code:below': 'http://www.nlm.nih.gov/research/umls/rxnorm|7804',
    });
    expect([notLoaded.status, notLoaded.code]).toEqual([400, 'search-param-unsupported']);
    const huge = await refusal('Observation', { 'code:in': HUGE_VS });
    expect([huge.status, huge.code]).toEqual([400, 'search-limit-exceeded']);
    expect(JSON.stringify(huge.outcome)).toContain(String(MAX_MODIFIER_CODES));
    const noSystem = await refusal('Condition', { 'code:below': SCT.diabetes });
    expect([noSystem.status, noSystem.code]).toEqual([400, 'search-param-invalid']);
  });
});
