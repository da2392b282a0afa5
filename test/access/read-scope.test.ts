/**
 * The search's in-query access filter (AccessPolicy.readScope, applied by sqlite-search.ts through the access_key
 * table) admits exactly the set canRead admits: over a fixed, deterministic set of custodians, patients, shared
 * resources (two patients' compartments), types and grants (whole, some types, nested deny, expired, not yet
 * started, revoked, to an organisation and to a practitioner), for every kind of caller, at three instants, and on
 * both query plans (the caller's rows driving, or a filter's matches driving).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../../src/ledger/embedded/index.js';
import { ConsentService } from '../../src/consent/consent-service.js';
import { consentToGrants } from '../../src/consent/consent-resource.js';
import { AccessControl, type CallerAccessPolicy } from '../../src/access/caller-access-policy.js';
import { patientCompartmentTypes } from '../../src/access/setup.js';
import type { Caller } from '../../src/fhir/interactions/access-policy.js';
import { SqliteSearch } from '../../src/fhir/store/sqlite/sqlite-search.js';
import type { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { parseSearch } from '../../src/fhir/search/parse.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import { patientCompartments } from '../../src/fhir/search/definitions.js';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import { openStore } from '../search/helpers.js';
import { TestPseudonyms } from '../ledger/helpers.js';

const LOINC = 'http://loinc.org';
const consentScope = {
  coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }],
};
const actor = (reference: string) => ({ reference: { reference } });
const types = (...codes: string[]) => codes.map((code) => ({ code }));
function privacyConsent(patient: string, provision: object, status = 'active') {
  return { resourceType: 'Consent', status, scope: consentScope, patient: { reference: patient }, provision };
}

const observation = (code: string, subject?: string, performer?: string): FhirResource => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: LOINC, code }] },
  ...(subject ? { subject: { reference: subject } } : {}),
  ...(performer ? { performer: [{ reference: performer }] } : {}),
});
const condition = (subject: string): FhirResource => ({
  resourceType: 'Condition',
  subject: { reference: subject },
  code: { coding: [{ system: LOINC, code: 'A' }] },
});

const CALLERS: Record<string, { caller: Caller; reason?: string }> = {
  sysA: { caller: { participant: 'c1', role: 'system', organization: 'Organization/hosp-a', scopes: [] } },
  sysB: { caller: { participant: 'c2', role: 'system', organization: 'Organization/hosp-b', scopes: [] } },
  drB: {
    caller: {
      participant: 'c3',
      role: 'clinician',
      organization: 'Organization/hosp-b',
      fhirUser: 'Practitioner/dr-b',
      scopes: [],
    },
  },
  drC: {
    caller: {
      participant: 'c4',
      role: 'clinician',
      organization: 'Organization/hosp-c',
      fhirUser: 'Practitioner/dr-c',
      scopes: [],
    },
  },
  labC: { caller: { participant: 'c5', role: 'lab', organization: 'Organization/hosp-c', scopes: [] } },
  patient1: { caller: { participant: 'c6', role: 'patient', fhirUser: 'Patient/p1', scopes: [] } },
  patient2: { caller: { participant: 'c7', role: 'patient', fhirUser: 'Patient/p2', scopes: [] } },
  patient9: { caller: { participant: 'c8', role: 'patient', fhirUser: 'Patient/p9', scopes: [] } },
  admin: { caller: { participant: 'c9', role: 'admin', scopes: [] } },
  adminA: {
    caller: { participant: 'c10', role: 'admin', organization: 'Organization/hosp-a', scopes: [] },
    reason: 'ticket 1',
  },
  adminAll: { caller: { participant: 'c11', role: 'admin', scopes: [] }, reason: 'ticket 2' },
  open: { caller: { participant: 'anonymous', role: 'open', scopes: [] } },
};

const QUERIES: { types: string[]; query: Record<string, string[]> }[] = [
  { types: ['Observation'], query: {} },
  { types: ['Observation'], query: { code: [`${LOINC}|A`] } },
  { types: ['Observation'], query: { code: [`${LOINC}|B`], _sort: ['-_lastUpdated'] } },
  { types: ['Observation'], query: { _id: ['o-p1-a', 'o-p2-a', 'o-shared-12', 'o-none'] } },
  { types: ['Condition'], query: {} },
  { types: ['Patient'], query: {} },
  { types: ['Practitioner'], query: {} },
  { types: ['Consent'], query: {} },
  { types: ['Observation', 'Condition', 'Patient'], query: {} },
  { types: ['Observation', 'Condition'], query: { _lastUpdated: ['gt2000-01-01'] } },
];

describe('the in-query access filter admits exactly what canRead admits', () => {
  let dir: string;
  let releaseChain: () => Promise<void>;
  let service: ConsentService;
  let store: SqliteResourceStore;
  let control: AccessControl;
  let clock = Date.parse('2026-03-01T12:00:00Z');
  const pseudonyms = new TestPseudonyms();

  const write = async (
    id: string,
    resource: FhirResource,
    custodian?: string,
    method: 'PUT' | 'DELETE' = 'PUT',
  ) => {
    const withId = { ...resource, id };
    await store.write({
      resourceType: resource.resourceType,
      id,
      method,
      resource: method === 'DELETE' ? undefined : withId,
      custodian,
      patients: patientCompartments(withId),
      index: method === 'DELETE' ? undefined : extractIndex(withId),
    });
  };
  const consent = async (id: string, body: Record<string, unknown>) => {
    await store.write({
      resourceType: 'Consent',
      id,
      method: 'PUT',
      resource: { ...body, id } as FhirResource,
      patients: [(body.patient as { reference: string }).reference],
      index: extractIndex({ ...body, id } as FhirResource),
    });
    const prepared = service.prepareConsent(`Consent/${id}`, consentToGrants(body as FhirResource), {
      pseudonym: 'actor-pseudonym-1',
      inPerson: false,
    });
    await prepared.commit();
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hie-scope-'));
    const ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: 'Org1MSP' });
    const { chain, release } = await acquireChain({
      file: join(dir, 'chain.sqlite'),
      msps: [{ mspId: 'Org1MSP', rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
    });
    releaseChain = release;
    service = await ConsentService.open({
      ledger: chain.connect(await serviceIdentity(ca, join(dir, 'svc'))),
      pseudonyms,
      now: () => clock,
    });
    control = new AccessControl({ compartmentTypes: patientCompartmentTypes(), consent: service });
    store = await openStore();

    const A = 'Organization/hosp-a';
    const B = 'Organization/hosp-b';
    for (const p of ['p1', 'p2', 'p3', 'p4', 'p5'])
      await write(p, { resourceType: 'Patient', gender: 'other' }, p === 'p5' ? B : A);
    for (const p of ['p1', 'p2', 'p3', 'p4', 'p5']) {
      await write(`o-${p}-a`, observation('A', `Patient/${p}`), A);
      await write(`o-${p}-b`, observation('B', `Patient/${p}`), p === 'p1' || p === 'p3' ? B : A);
      await write(`c-${p}`, condition(`Patient/${p}`), A);
    }
    // In two compartments: visible under grants only when both patients granted.
    await write('o-shared-12', observation('A', 'Patient/p1', 'Patient/p2'), A);
    await write('o-shared-34', observation('B', 'Patient/p3', 'Patient/p4'), A);
    await write('o-shared-15', observation('A', 'Patient/p1', 'Patient/p5'), B);
    // In no compartment: the custodian rule only; without a custodian, nobody but open and admins with a reason.
    await write('o-none', observation('A'), A);
    await write('o-orphan', observation('A'), undefined);
    await write('o-p1-nocustodian', observation('B', 'Patient/p1'), undefined);
    // Outside the compartment types: everyone's.
    await write('pr-1', { resourceType: 'Practitioner', active: true }, A);
    await write('pr-2', { resourceType: 'Practitioner', active: false }, undefined);
    // A deleted resource and one that moved from p1 to p3: only current versions count.
    await write('o-deleted', observation('A', 'Patient/p1'), A);
    await write('o-deleted', observation('A', 'Patient/p1'), A, 'DELETE');
    await write('o-moved', observation('A', 'Patient/p1'), A);
    await write('o-moved', observation('A', 'Patient/p3'), A);

    // p1: hosp-b, every type.
    await consent('k1', privacyConsent('Patient/p1', { type: 'permit', actor: [actor(B)] }));
    // p2: hosp-b Observations until June; Dr C everything but Condition (nested deny).
    await consent(
      'k2',
      privacyConsent('Patient/p2', {
        type: 'permit',
        actor: [actor(B)],
        class: types('Observation', 'Patient'),
        period: { start: '2026-01-01', end: '2026-06-01' },
      }),
    );
    await consent(
      'k2c',
      privacyConsent('Patient/p2', {
        type: 'permit',
        actor: [actor('Practitioner/dr-c')],
        provision: [{ type: 'deny', class: types('Condition') }],
      }),
    );
    // p3: hosp-b, expired.
    await consent(
      'k3',
      privacyConsent('Patient/p3', {
        type: 'permit',
        actor: [actor(B)],
        period: { start: '2024-01-01', end: '2025-01-01' },
      }),
    );
    // p4: hosp-b, then revoked; Dr C from 2027 on.
    const k4 = privacyConsent('Patient/p4', { type: 'permit', actor: [actor(B)] });
    await consent('k4', k4);
    await consent('k4', { ...k4, status: 'inactive' });
    await consent(
      'k4c',
      privacyConsent('Patient/p4', {
        type: 'permit',
        actor: [actor('Practitioner/dr-c')],
        period: { start: '2027-01-01' },
      }),
    );
    // p5: hosp-c, every type, with Observations denied during 2026.
    await consent(
      'k5',
      privacyConsent('Patient/p5', {
        type: 'permit',
        actor: [actor('Organization/hosp-c')],
        provision: [
          { type: 'deny', class: types('Observation'), period: { start: '2026-01-01', end: '2027-01-01' } },
        ],
      }),
    );
  });
  afterAll(async () => {
    await service?.close();
    await store?.close();
    await releaseChain?.();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const policyOf = (name: string): CallerAccessPolicy =>
    control.policyFor(CALLERS[name]!.caller, { reason: CALLERS[name]!.reason });

  /** Ids found for a caller: by the in-query scope alone, and by canRead over the unfiltered matches. */
  function compare(search: SqliteSearch, name: string) {
    for (const { types: resourceTypes, query } of QUERIES) {
      const compiled = parseSearch(
        { ...query, _count: ['1000'] },
        { resourceType: resourceTypes.length === 1 ? resourceTypes[0] : undefined },
      );
      if (resourceTypes.length > 1) compiled.resourceTypes = resourceTypes;
      const policy = policyOf(name);
      const ids = (versions: { resourceType: string; id: string }[]) =>
        versions.map((v) => `${v.resourceType}/${v.id}`).sort();
      const all = search.search({ query: compiled, canRead: () => true, wantTotal: true });
      const byCanRead = ids(all.versions.filter((v) => policy.sees(v)));
      const byScope = search.search({
        query: compiled,
        canRead: () => true,
        scope: (t) => policy.readScope(t),
        wantTotal: true,
      });
      const label = `${name} ${resourceTypes.join(',')}?${JSON.stringify(query)}`;
      expect(ids(byScope.versions), label).toEqual(byCanRead);
      expect(byScope.total, label).toBe(byCanRead.length);
    }
  }

  const instants = [
    ['2026-03-01T12:00:00Z', 'every grant as given'],
    ['2026-07-01T00:00:00Z', "p2's grant to hosp-b ended"],
    ['2027-02-01T00:00:00Z', "Dr C's grant of p4 started, p5's deny ended"],
  ] as const;
  for (const [instant, what] of instants) {
    for (const [plan, smallSide] of [
      ['caller rows drive', undefined],
      ['filter matches drive when fewer', 3],
    ] as const) {
      it(`${instant} (${what}), ${plan}: every caller, every query`, () => {
        clock = Date.parse(instant);
        const search = new SqliteSearch(store.db, { smallSide });
        for (const name of Object.keys(CALLERS)) compare(search, name);
      });
    }
  }

  it('the fixture exercises every rule: each caller sees something different, nobody sees everything', () => {
    clock = Date.parse(instants[0][0]);
    const search = new SqliteSearch(store.db);
    const compiled = parseSearch({ _count: ['1000'] }, { resourceType: 'Observation' });
    const seen = (name: string) => {
      const policy = policyOf(name);
      return search
        .search({ query: compiled, canRead: () => true, scope: (t) => policy.readScope(t) })
        .versions.map((v) => v.id)
        .sort();
    };
    expect(seen('sysB')).toEqual(
      [
        'o-p1-a',
        'o-p1-b',
        'o-p2-a',
        'o-p2-b',
        'o-p3-b',
        'o-shared-12',
        'o-shared-15',
        'o-p1-nocustodian',
      ].sort(),
    );
    expect(seen('drC')).toEqual(['o-p2-a', 'o-p2-b'].sort());
    expect(seen('patient1')).toEqual(['o-p1-a', 'o-p1-b', 'o-p1-nocustodian'].sort());
    expect(seen('patient9')).toEqual([]);
    expect(seen('admin')).toEqual([]);
  });
});
