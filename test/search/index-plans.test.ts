/**
 * Every search shape reads search_index through an index (issue 17): the statements a catalogue of searches runs on
 * a SQLite store of Synthea patients, each explained (EXPLAIN QUERY PLAN with its own binds), never scan the table.
 * The store keeps few indexes on search_index (each costs every write an insert, schema.ts migration 13), so a
 * query shape that no index answers would read every row; this is where such a shape shows. The plans, not timings.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSearch } from '../../src/fhir/search/parse.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import { decodeJson } from '../../src/fhir/store/json-codec.js';
import { runPlanSync, SearchRun, type SearchEffect } from '../../src/fhir/store/search-sql.js';
import { SqliteSearch, sqliteStoreDialect } from '../../src/fhir/store/sqlite/sqlite-search.js';
import type { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { loadSyntheaDirect, openStore, syntheaFiles } from './helpers.js';

/** Below this many rows a side is small: small enough that both sides of the plans' choices are taken here. */
const SMALL_SIDE = 20;
const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';

type Json = Record<string, any>;

describe('search shapes on the SQLite store read search_index through its indexes', () => {
  let store: SqliteResourceStore;
  let patient: Json;
  let day: string;

  beforeAll(async () => {
    store = await openStore();
    const resources: Json[] = [];
    for (const file of syntheaFiles(2)) resources.push(...(await loadSyntheaDirect(store, file)));
    // Numbers (none in Synthea): a risk assessment's probability.
    const risk: FhirResource = {
      resourceType: 'RiskAssessment',
      id: 'r1',
      status: 'final',
      subject: { reference: 'Patient/x' },
      prediction: [{ probabilityDecimal: 0.4 }],
    } as FhirResource;
    await store.write({
      resourceType: 'RiskAssessment',
      id: 'r1',
      method: 'PUT',
      resource: risk,
      index: extractIndex(risk),
    });
    patient = resources.find((r) => r.resourceType === 'Patient')!;
    day = String(resources.find((r) => r.resourceType === 'Encounter')!.period.start).slice(0, 10);
    store.db.exec('ANALYZE');
  });
  afterAll(async () => store.close());

  /** The plan of each statement a search of `params` runs on search_index (the search itself answered by the store). */
  function plans(resourceType: string, params: Record<string, string[]>): { sql: string; plan: string }[] {
    const db = store.db;
    const out: { sql: string; plan: string }[] = [];
    const explain = (sql: string, binds: unknown[]) => {
      if (!sql.includes('search_index')) return;
      const rows = db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...binds) as { detail: string }[];
      out.push({ sql, plan: rows.map((r) => r.detail).join('\n') });
    };
    const perform = (effect: SearchEffect): unknown => {
      switch (effect.op) {
        case 'rows':
          explain(effect.sql, effect.binds);
          return db.prepare(effect.sql).all(...effect.binds);
        case 'count':
          explain(effect.sql, effect.binds);
          return db
            .prepare(effect.sql)
            .pluck()
            .get(...effect.binds);
        case 'column':
          explain(effect.sql, effect.binds);
          return db
            .prepare(effect.sql)
            .pluck()
            .all(...effect.binds);
        case 'bodies': {
          const body = db.prepare('SELECT json FROM resource_version WHERE seq = ?').pluck();
          return effect.seqs.map((seq) => decodeJson(body.get(seq) as string | Uint8Array));
        }
      }
    };
    const query = parseSearch({ _count: ['5'], ...params }, { resourceType });
    runPlanSync(
      new SearchRun(sqliteStoreDialect(db), { query, canRead: () => true }, SMALL_SIDE).search(),
      perform,
    );
    return out;
  }

  const shapes = (): [string, string, Record<string, string[]>][] => [
    ['token', 'Observation', { code: [`${LOINC}|8302-2`] }],
    ['token :not', 'Observation', { 'code:not': [`${LOINC}|8302-2`], subject: [`Patient/${patient.id}`] }],
    ['token :text', 'Observation', { 'code:text': ['glucose'] }],
    ['token :missing', 'Observation', { 'code:missing': ['true'] }],
    ['string', 'Patient', { family: [String(patient.name[0].family).slice(0, 3)] }],
    ['string :exact', 'Patient', { 'family:exact': [String(patient.name[0].family)] }],
    ['string :contains', 'Patient', { 'family:contains': ['a'] }],
    ['uri :below', 'Observation', { '_profile:below': ['http://hl7.org/fhir/StructureDefinition/'] }],
    ['reference', 'Observation', { subject: [`Patient/${patient.id}`] }],
    ['reference :missing', 'Encounter', { 'subject:missing': ['true'] }],
    ['date ge', 'Encounter', { date: [`ge${day}`] }],
    ['date lt', 'Encounter', { date: [`lt${day}`] }],
    ['date eq', 'Encounter', { date: [day] }],
    ['date sa', 'Encounter', { date: [`sa${day}`] }],
    ['date ap', 'Encounter', { date: [`ap${day}`] }],
    ['date ne', 'Encounter', { date: [`ne${day}`] }],
    ['a one-day range', 'Encounter', { date: [`ge${day}`, `le${day}`] }],
    [':missing of a date', 'Encounter', { 'date:missing': ['false'] }],
    ['date and reference', 'Observation', { subject: [`Patient/${patient.id}`], date: ['ge2015'] }],
    ['number gt', 'RiskAssessment', { probability: ['gt0.3'] }],
    ['number lt', 'RiskAssessment', { probability: ['lt0.5'] }],
    ['quantity gt', 'Observation', { 'value-quantity': ['gt150'] }],
    ['quantity lt', 'Observation', { 'value-quantity': [`lt10|${UCUM}|kg`] }],
    ['quantity eq', 'Observation', { 'value-quantity': [`5.4|${UCUM}|%`] }],
    ['quantity ap', 'Observation', { 'value-quantity': [`ap70|${UCUM}|kg`] }],
    ['composite, a range second', 'Observation', { 'code-value-quantity': [`${LOINC}|8302-2$gt150`] }],
    ['composite, a unit', 'Observation', { 'code-value-quantity': [`${LOINC}|8302-2$lt1000|${UCUM}|cm`] }],
    ['chain', 'Observation', { 'subject:Patient.birthdate': ['lt2100'] }],
    ['_has', 'Patient', { '_has:Observation:patient:code': [`${LOINC}|8302-2`] }],
    ['sort by date', 'Observation', { subject: [`Patient/${patient.id}`], _sort: ['-date'] }],
    ['sort by quantity', 'Observation', { code: [`${LOINC}|8302-2`], _sort: ['value-quantity'] }],
  ];

  it('no statement of any shape scans search_index, and range shapes read the range indexes', () => {
    const scans: string[] = [];
    let statements = 0;
    for (const [name, type, params] of shapes()) {
      const explained = plans(type, params);
      expect(explained.length, name).toBeGreaterThan(0);
      for (const { sql, plan } of explained) {
        statements++;
        // `WHERE 0`: nothing was ever indexed under the parameter (no key), so nothing is read.
        if (/^SCAN (si|sr)\b(?! USING)/m.test(plan) && !/WHERE 0 /.test(sql))
          scans.push(`${name}: ${sql}\n${plan}`);
      }
      if (/^(date|number|quantity|a one-day)/.test(name))
        expect(
          explained.some(({ plan }) => /search_index_range_(low|high|seq)/.test(plan)),
          name,
        ).toBe(true);
    }
    expect(scans).toEqual([]);
    expect(statements).toBeGreaterThan(shapes().length);
  });

  it('a range search on a parameter nothing was indexed under matches nothing (no INDEXED BY without a key)', () => {
    // No MolecularSequence was ever stored, nor a RiskAssessment date: these parameters have no key (always false).
    const searches: [string, Record<string, string[]>][] = [
      ['MolecularSequence', { 'variant-start': ['gt5'] }],
      ['MolecularSequence', { 'variant-end': ['lt5'], _sort: ['variant-start'] }],
      ['RiskAssessment', { date: ['ge2015'] }],
      ['RiskAssessment', { date: ['ge2015', 'lt2016'] }],
    ];
    for (const [resourceType, params] of searches) {
      const result = new SqliteSearch(store.db).search({
        query: parseSearch(params, { resourceType }),
        canRead: () => true,
      });
      expect(result.versions).toEqual([]);
    }
  });
});
