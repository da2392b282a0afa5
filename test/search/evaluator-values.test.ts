/**
 * Independent evaluator, part 1 (test/search/evaluator.ts): string, token, date, reference and quantity
 * parameters, their modifiers and prefixes, over the 100 Synthea patients, against the running service, every page.
 * (No search parameter of type number has a value in these bundles, nor any Reference.identifier: `number` and
 * `:identifier` are covered by test/search/store-search.test.ts on data that has them.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SyntheaData,
  codingMatches,
  codingsOf,
  dateRangeOf,
  expectSearch,
  fold,
  nameParts,
  periodRange,
  prefixMatches,
  ref,
  stringMatches,
  type Json,
} from './evaluator.js';
import { BUILD_TIMEOUT_MS, startLoadedService, type LoadedService } from './synthea-service.js';

const LOINC = 'http://loinc.org';
const V2 = 'http://terminology.hl7.org/CodeSystem/v2-0203';

describe('independent evaluator: parameter types, modifiers and prefixes (100 Synthea patients)', () => {
  let service: LoadedService;
  let data: SyntheaData;
  beforeAll(async () => {
    data = new SyntheaData();
    service = await startLoadedService();
    // The first file to need the loaded store builds it (minutes on a loaded machine); others copy it.
  }, BUILD_TIMEOUT_MS);
  afterAll(async () => service?.stop());
  const check = (path: string, expected: string[], allowEmpty = false) =>
    expectSearch(service.app, path, expected, { allowEmpty });

  it('string: starts with (case and accents ignored), :exact, :contains; HumanName and Address parts', async () => {
    const patients = data.of('Patient');
    for (const p of [patients[0]!, patients[37]!]) {
      const family: string = p.name[0].family;
      const prefix = family.slice(0, 3);
      await check(
        `Patient?family=${encodeURIComponent(prefix.toUpperCase())}&_count=7`,
        data.keys('Patient', (r) =>
          stringMatches(
            (r.name ?? []).map((n: Json) => n.family),
            prefix,
          ),
        ),
      );
      await check(
        `Patient?family:exact=${encodeURIComponent(family)}`,
        data.keys('Patient', (r) =>
          stringMatches(
            (r.name ?? []).map((n: Json) => n.family),
            family,
            'exact',
          ),
        ),
      );
      await check(
        `Patient?family:exact=${encodeURIComponent(family.toLowerCase())}`,
        data.keys('Patient', (r) =>
          stringMatches(
            (r.name ?? []).map((n: Json) => n.family),
            family.toLowerCase(),
            'exact',
          ),
        ),
        true,
      );
    }
    // accents: a given name with a diacritic, searched without it
    const accented = patients.find((p) => nameParts(p.name).some((n) => fold(n) !== n.toLowerCase()))!;
    const given = nameParts(accented.name).find((n) => fold(n) !== n.toLowerCase())!;
    await check(
      `Patient?name=${encodeURIComponent(fold(given))}`,
      data.keys('Patient', (r) => stringMatches(nameParts(r.name), fold(given))),
    );
    await check(
      `Patient?family:contains=${encodeURIComponent('er')}&_count=13`,
      data.keys('Patient', (r) =>
        stringMatches(
          (r.name ?? []).map((n: Json) => n.family),
          'er',
          'contains',
        ),
      ),
    );
    const city: string = patients[5]!.address[0].city;
    await check(
      `Patient?address-city=${encodeURIComponent(city.slice(0, 4))}`,
      data.keys('Patient', (r) =>
        stringMatches(
          (r.address ?? []).map((a: Json) => a.city),
          city.slice(0, 4),
        ),
      ),
    );
    await check(
      `Patient?address=${encodeURIComponent(city)}`,
      data.keys('Patient', (r) =>
        stringMatches(
          (r.address ?? []).flatMap((a: Json) =>
            [...(a.line ?? []), a.city, a.district, a.state, a.postalCode, a.country, a.text].filter(Boolean),
          ),
          city,
        ),
      ),
    );
  });

  it('token: system|code, code, system|, :not, :text, identifier, :of-type, boolean-like codes', async () => {
    await check(
      `Observation?code=${LOINC}|8302-2&_count=100`,
      data.keys('Observation', (r) => codingMatches(codingsOf(r.code), `${LOINC}|8302-2`)),
    );
    await check(
      `Observation?code=8302-2,29463-7&_count=200`,
      data.keys('Observation', (r) => ['8302-2', '29463-7'].some((c) => codingMatches(codingsOf(r.code), c))),
    );
    await check(
      'Condition?code=http://snomed.info/sct|&_count=100',
      data.keys('Condition', (r) => codingMatches(codingsOf(r.code), 'http://snomed.info/sct|')),
    );
    await check(
      'Patient?gender=female',
      data.keys('Patient', (r) => r.gender === 'female'),
    );
    // :not: resources with no matching value, including those without the element
    await check(
      'Condition?clinical-status:not=active&_count=100',
      data.keys('Condition', (r) => !codingMatches(codingsOf(r.clinicalStatus), 'active')),
    );
    // :text: CodeableConcept.text or a Coding.display, starts with, case ignored
    const display: string = data.of('Condition')[0]!.code.coding[0].display;
    const word = display.split(' ')[0]!;
    await check(
      `Condition?code:text=${encodeURIComponent(word.toLowerCase())}`,
      data.keys('Condition', (r) =>
        stringMatches([r.code?.text, ...codingsOf(r.code).map((c) => c.display)].filter(Boolean), word),
      ),
    );
    const patient = data.of('Patient')[3]!;
    const ssn = patient.identifier.find((i: Json) => i.type?.coding?.[0]?.code === 'SS');
    await check(
      `Patient?identifier=${encodeURIComponent(`${ssn.system}|${ssn.value}`)}`,
      data.keys('Patient', (r) =>
        (r.identifier ?? []).some((i: Json) => i.system === ssn.system && i.value === ssn.value),
      ),
    );
    // :of-type: Identifier.type coding system|code, and the value, on the same Identifier
    await check(
      `Patient?identifier:of-type=${encodeURIComponent(`${V2}|SS|${ssn.value}`)}`,
      data.keys('Patient', (r) =>
        (r.identifier ?? []).some(
          (i: Json) =>
            i.value === ssn.value &&
            (i.type?.coding ?? []).some((c: Json) => c.system === V2 && c.code === 'SS'),
        ),
      ),
    );
    await check(`Patient?identifier:of-type=${encodeURIComponent(`${V2}|MR|${ssn.value}`)}`, [], true);
  });

  it(':missing on token and date parameters; a computed boolean token', async () => {
    await check(
      'Condition?abatement-date:missing=true&_count=100',
      data.keys('Condition', (r) => !r.abatementDateTime && !r.abatementPeriod),
    );
    await check(
      'Condition?abatement-date:missing=false&_count=100',
      data.keys('Condition', (r) => Boolean(r.abatementDateTime || r.abatementPeriod)),
    );
    // R4 `deceased` is `Patient.deceased.exists() and Patient.deceased != false`: a value for every patient
    await check(
      'Patient?deceased=true',
      data.keys('Patient', (r) => r.deceasedDateTime !== undefined || r.deceasedBoolean === true),
    );
    await check('Patient?deceased:missing=true', [], true);
    await check(
      'Encounter?reason-code:missing=false&_count=200',
      data.keys('Encounter', (r) => (r.reasonCode ?? []).some((c: Json) => codingsOf(c).length > 0)),
    );
  });

  it('date: every prefix on birthdate; ranges (AND) on Encounter periods', async () => {
    const birth = (r: Json) => dateRangeOf(r.birthDate);
    for (const [prefix, value] of [
      ['eq', '1975'],
      ['ne', '1975'],
      ['gt', '1980-06'],
      ['lt', '1960-01-01'],
      ['ge', '1990-03-04'],
      ['le', '2000'],
      ['sa', '1985'],
      ['eb', '1950'],
    ] as const) {
      await check(
        `Patient?birthdate=${prefix}${value}&_count=30`,
        data.keys('Patient', (r) => prefixMatches(prefix, birth(r), dateRangeOf(value))),
        prefix === 'eq',
      );
    }
    const range = (r: Json) => periodRange(r.period)!;
    await check(
      'Encounter?date=ge2015-01-01&date=lt2016-01-01&_count=200',
      data.keys(
        'Encounter',
        (r) =>
          prefixMatches('ge', range(r), dateRangeOf('2015-01-01')) &&
          prefixMatches('lt', range(r), dateRangeOf('2016-01-01')),
      ),
    );
    await check(
      'Encounter?date=2016-03&_count=100',
      data.keys('Encounter', (r) => prefixMatches('eq', range(r), dateRangeOf('2016-03'))),
    );
    const effective = (r: Json) => dateRangeOf(r.effectiveDateTime);
    const patient = data.of('Patient')[8]!;
    await check(
      `Observation?subject=Patient/${patient.id}&date=gt2014-06-30&_count=40`,
      data.keys(
        'Observation',
        (r) =>
          ref(r.subject) === `Patient/${patient.id}` &&
          r.effectiveDateTime !== undefined &&
          prefixMatches('gt', effective(r), dateRangeOf('2014-06-30')),
      ),
    );
  });

  it('reference: Type/id, bare id, :Type; over several parameters', async () => {
    const patient = data.of('Patient')[12]!;
    const key = `Patient/${patient.id}`;
    await check(
      `Observation?subject=${key}&_count=50`,
      data.keys('Observation', (r) => ref(r.subject) === key),
    );
    await check(
      `Observation?patient=${patient.id}&_count=50`,
      data.keys('Observation', (r) => ref(r.subject) === key),
    );
    await check(
      `Encounter?subject:Patient=${patient.id}`,
      data.keys('Encounter', (r) => ref(r.subject) === key),
    );
    const observed = new Set(data.of('Observation').map((o) => ref(o.encounter)));
    const encounter = data
      .of('Encounter')
      .find((e) => ref(e.subject) === key && observed.has(`Encounter/${e.id}`))!;
    await check(
      `Observation?encounter=Encounter/${encounter.id}`,
      data.keys('Observation', (r) => ref(r.encounter) === `Encounter/${encounter.id}`),
    );
    const org = ref(encounter.serviceProvider)!;
    await check(
      `Encounter?service-provider=${org}&_count=100`,
      data.keys('Encounter', (r) => ref(r.serviceProvider) === org),
    );
    await check(
      `Claim?patient=${key}&_count=20`,
      data.keys('Claim', (r) => ref(r.patient) === key),
    );
  });

  it('quantity: prefixes with system and code, away from the precision boundary', async () => {
    const heights = data
      .of('Observation')
      .filter((r) => codingMatches(codingsOf(r.code), `${LOINC}|8302-2`) && r.valueQuantity);
    const values = heights.map((r) => Number(r.valueQuantity.value));
    // A threshold no value is within 1 of: precision ranges cannot decide the answer.
    let threshold = 150;
    while (values.some((v) => Math.abs(v - threshold) < 1)) threshold += 0.25;
    expect(threshold).toBeLessThan(200);
    const unit = heights[0]!.valueQuantity;
    for (const prefix of ['gt', 'lt', 'ge', 'le'] as const) {
      await check(
        `Observation?code=${LOINC}|8302-2&value-quantity=${prefix}${threshold}|${encodeURIComponent(unit.system)}|${encodeURIComponent(unit.code)}&_count=100`,
        data.keys(
          'Observation',
          (r) =>
            codingMatches(codingsOf(r.code), `${LOINC}|8302-2`) &&
            r.valueQuantity?.system === unit.system &&
            r.valueQuantity?.code === unit.code &&
            (prefix === 'gt' || prefix === 'ge'
              ? r.valueQuantity.value > threshold
              : r.valueQuantity.value < threshold),
        ),
      );
    }
    // a unit no height is recorded in matches none of them
    await check(`Observation?code=${LOINC}|8302-2&value-quantity=gt${threshold}||kg`, [], true);
  });
});
