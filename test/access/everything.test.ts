/**
 * Patient/[id]/$everything over the real app (SQLite store, embedded ledger, SMART auth): what each caller gets is
 * exactly what its access allows, `total` counts only that, paging and `_type`/`_since` work, and another patient's
 * records never appear.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, BASE, privacyConsent, startHarness, type Harness } from './app-harness.js';

// Glucose (not a vital sign, so no vital-signs profile applies): the tests are about access, not profiles.
const code = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };
const subject = (p: string) => ({ reference: p });

/** p1's record (written by hospital A's system), the directory it references, and p2's record. */
const DIRECTORY = [
  { resourceType: 'Organization', id: 'hosp-a', name: 'Hospital A' },
  { resourceType: 'Practitioner', id: 'dr-a', active: true },
  { resourceType: 'Location', id: 'ward-1', name: 'Ward 1' },
];
const P1_RECORD = [
  {
    resourceType: 'Patient',
    id: 'p1',
    gender: 'female',
    generalPractitioner: [{ reference: 'Practitioner/dr-a' }],
    managingOrganization: { reference: 'Organization/hosp-a' },
  },
  {
    resourceType: 'Encounter',
    id: 'enc1',
    status: 'finished',
    class: { code: 'AMB' },
    subject: subject('Patient/p1'),
    location: [{ location: { reference: 'Location/ward-1' } }],
  },
  { resourceType: 'Condition', id: 'cond1', subject: subject('Patient/p1'), code },
  ...[1, 2, 3, 4, 5].map((n) => ({
    resourceType: 'Observation',
    id: `obs${n}`,
    status: 'final',
    code,
    subject: subject('Patient/p1'),
    performer: [{ reference: 'Practitioner/dr-a' }],
    valueQuantity: { value: 70 + n, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
  })),
];
const P2_RECORD = [
  { resourceType: 'Patient', id: 'p2', gender: 'male' },
  {
    resourceType: 'Observation',
    id: 'obs-p2',
    status: 'final',
    code,
    subject: subject('Patient/p2'),
    performer: [{ reference: 'Practitioner/dr-a' }],
  },
  { resourceType: 'Condition', id: 'cond-p2', subject: subject('Patient/p2'), code },
];
const P1_REFS = P1_RECORD.map((r) => `${r.resourceType}/${r.id}`);
const P2_REFS = P2_RECORD.map((r) => `${r.resourceType}/${r.id}`);

interface EverythingPage {
  status: number;
  total?: number;
  matches: string[];
  includes: string[];
  next?: string;
  text: string;
  body: any;
}

describe('Patient/[id]/$everything honours access', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};

  const everything = async (
    caller: string,
    url: string,
    method = 'GET',
    body?: unknown,
  ): Promise<EverythingPage> => {
    const res = await h.request(tokens[caller], method, url, body);
    const entries: any[] = res.body?.entry ?? [];
    const refs = (mode: string) =>
      entries
        .filter((e) => e.search?.mode === mode)
        .map((e) => `${e.resource.resourceType}/${e.resource.id}`);
    return {
      status: res.status,
      total: res.body?.total,
      matches: refs('match'),
      includes: refs('include'),
      next: res.body?.link?.find((l: any) => l.relation === 'next')?.url,
      text: res.text,
      body: res.body,
    };
  };
  /** Follows `next` links to the end; returns every match in page order. */
  const allPages = async (
    caller: string,
    url: string,
  ): Promise<{ matches: string[]; totals: number[]; pages: number }> => {
    const matches: string[] = [];
    const totals: number[] = [];
    let pages = 0;
    let next: string | undefined = url;
    while (next) {
      const page = await everything(caller, next);
      expect(page.status, page.text).toBe(200);
      matches.push(...page.matches);
      totals.push(page.total!);
      pages++;
      expect(pages).toBeLessThan(50);
      next = page.next ? page.next.replace(`${BASE}/fhir`, '') : undefined;
    }
    return { matches, totals, pages };
  };
  /** Without the patient's Consent resources (their visibility is the consent rules' business, not this test's). */
  const clinical = (refs: string[]) => refs.filter((r) => !r.startsWith('Consent/'));
  const grant = async (provision: object): Promise<string> => {
    const res = await h.request(tokens.patient1, 'POST', '/Consent', privacyConsent('Patient/p1', provision));
    expect(res.status, res.text).toBe(201);
    return res.body.id;
  };
  const revoke = async (consentId: string): Promise<void> => {
    const current = await h.request(tokens.patient1, 'GET', `/Consent/${consentId}`);
    expect(current.status, current.text).toBe(200);
    const res = await h.request(tokens.patient1, 'PUT', `/Consent/${consentId}`, {
      ...current.body,
      status: 'inactive',
    });
    expect(res.status, res.text).toBe(200);
  };

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    tokens.drB = await h.enrol('dr-b-client', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    tokens.labB = await h.enrol('lab-b', 'lab', 'Organization/lab-b');
    tokens.patient1 = await h.enrol('patient-1', 'patient', 'Patient/p1');
    tokens.patient2 = await h.enrol('patient-2', 'patient', 'Patient/p2');
    tokens.admin = await h.enrol('admin-1', 'admin');
    for (const resource of [...DIRECTORY, ...P1_RECORD, ...P2_RECORD]) {
      const res = await h.request(tokens.sysA, 'PUT', `/${resource.resourceType}/${resource.id}`, resource);
      expect(res.status, res.text).toBe(201);
    }
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('is listed in the CapabilityStatement on Patient', async () => {
    const res = await h.request(undefined, 'GET', '/metadata');
    expect(res.status).toBe(200);
    const patient = res.body.rest[0].resource.find((r: any) => r.type === 'Patient');
    expect(patient.operation.map((o: any) => o.name)).toContain('everything');
  });

  it('the custodian gets the whole record, the directory it references, and nothing of another patient', async () => {
    const page = await everything('sysA', '/Patient/p1/$everything?_count=100');
    expect(page.status, page.text).toBe(200);
    expect(page.body.type).toBe('searchset');
    expect(page.matches[0]).toBe('Patient/p1');
    expect(clinical(page.matches).sort()).toEqual([...P1_REFS].sort());
    expect(page.total).toBe(page.matches.length);
    expect(page.includes.sort()).toEqual(['Location/ward-1', 'Organization/hosp-a', 'Practitioner/dr-a']);
    for (const ref of P2_REFS) expect(page.matches).not.toContain(ref);
    expect(page.text).not.toContain('Patient/p2');
  });

  it('the patient gets its own record; another patient gets 404', async () => {
    const own = await everything('patient1', '/Patient/p1/$everything?_count=100');
    expect(own.status, own.text).toBe(200);
    expect(clinical(own.matches).sort()).toEqual([...P1_REFS].sort());
    const other = await everything('patient2', '/Patient/p1/$everything');
    expect(other.status).toBe(404);
    expect(other.text).not.toContain('female');
  });

  it('an unknown patient and an invisible one both answer 404; an admin without a reason 403', async () => {
    expect((await everything('sysA', '/Patient/nobody/$everything')).status).toBe(404);
    const hidden = await everything('drB', '/Patient/p1/$everything');
    expect(hidden.status).toBe(404);
    expect(hidden.text).not.toContain('Observation');
    expect((await everything('labB', '/Patient/p1/$everything')).status).toBe(404);
    expect((await everything('admin', '/Patient/p1/$everything')).status).toBe(403);
    // only on a Patient instance
    const onObservation = await everything('sysA', '/Observation/obs1/$everything');
    expect(onObservation.status).toBe(404);
    expect(onObservation.text).not.toContain('"valueQuantity"');
    const typeLevel = await everything('sysA', '/Patient/$everything');
    expect(typeLevel.status).toBe(404);
  });

  it("another organisation's clinician sees the record while granted, and 404 again after revocation", async () => {
    expect((await everything('drB', '/Patient/p1/$everything')).status).toBe(404);
    const consentId = await grant({ type: 'permit', actor: [actor('Organization/hosp-b')] });
    const granted = await everything('drB', '/Patient/p1/$everything?_count=100');
    expect(granted.status, granted.text).toBe(200);
    expect(clinical(granted.matches).sort()).toEqual([...P1_REFS].sort());
    expect(granted.total).toBe(granted.matches.length);
    expect(granted.includes.sort()).toEqual(['Location/ward-1', 'Organization/hosp-a', 'Practitioner/dr-a']);
    for (const ref of P2_REFS) expect(granted.matches).not.toContain(ref);
    // p2 granted nothing: still 404 for the same caller
    expect((await everything('drB', '/Patient/p2/$everything')).status).toBe(404);

    await revoke(consentId);
    const revoked = await everything('drB', '/Patient/p1/$everything');
    expect(revoked.status).toBe(404);
    expect(revoked.text).not.toContain('obs1');
  });

  it('a grant of some types: the others are absent and not counted', async () => {
    const consentId = await grant({
      type: 'permit',
      actor: [actor('Organization/hosp-b')],
      class: [
        { system: 'http://hl7.org/fhir/resource-types', code: 'Patient' },
        { system: 'http://hl7.org/fhir/resource-types', code: 'Observation' },
      ],
    });
    const page = await everything('drB', '/Patient/p1/$everything?_count=100');
    expect(page.status, page.text).toBe(200);
    expect(page.matches.sort()).toEqual([
      'Observation/obs1',
      'Observation/obs2',
      'Observation/obs3',
      'Observation/obs4',
      'Observation/obs5',
      'Patient/p1',
    ]);
    expect(page.total).toBe(6);
    await revoke(consentId);
    expect((await everything('drB', '/Patient/p1/$everything')).status).toBe(404);
  });

  it('_type narrows the record (GET and POST with Parameters)', async () => {
    const observations = await everything('sysA', '/Patient/p1/$everything?_type=Observation');
    expect(observations.status, observations.text).toBe(200);
    expect(observations.matches.sort()).toEqual([
      'Observation/obs1',
      'Observation/obs2',
      'Observation/obs3',
      'Observation/obs4',
      'Observation/obs5',
    ]);
    expect(observations.total).toBe(5);
    expect(observations.includes).toEqual(['Practitioner/dr-a']);

    const posted = await everything('sysA', '/Patient/p1/$everything', 'POST', {
      resourceType: 'Parameters',
      parameter: [{ name: '_type', valueString: 'Patient,Condition' }],
    });
    expect(posted.status, posted.text).toBe(200);
    expect(posted.matches).toEqual(['Patient/p1', 'Condition/cond1']);
    expect(posted.total).toBe(2);

    expect((await everything('sysA', '/Patient/p1/$everything?_type=NoSuchType')).status).toBe(400);
  });

  it('_count pages through the record with next links, each resource once', async () => {
    const full = await everything('sysA', '/Patient/p1/$everything?_count=100');
    const paged = await allPages('sysA', '/Patient/p1/$everything?_count=2');
    expect(paged.pages).toBe(Math.ceil(full.total! / 2));
    expect(paged.matches).toEqual(full.matches);
    expect(new Set(paged.matches).size).toBe(paged.matches.length);
    expect(new Set(paged.totals)).toEqual(new Set([full.total]));

    const typed = await allPages('sysA', '/Patient/p1/$everything?_type=Observation&_count=2');
    expect(typed.pages).toBe(3);
    expect(typed.matches.sort()).toEqual([
      'Observation/obs1',
      'Observation/obs2',
      'Observation/obs3',
      'Observation/obs4',
      'Observation/obs5',
    ]);

    expect((await everything('sysA', '/Patient/p1/$everything?_count=-1')).status).toBe(400);
    expect((await everything('sysA', '/Patient/p1/$everything?_count=abc')).status).toBe(400);
  });

  it('_since keeps what changed at or after the instant', async () => {
    const before = await everything('sysA', '/Patient/p1/$everything?_count=100');
    const updated = await h.request(tokens.sysA, 'PUT', '/Observation/obs3', {
      ...P1_RECORD.find((r) => r.id === 'obs3'),
      status: 'amended',
    });
    expect(updated.status, updated.text).toBe(200);
    const since: string = updated.body.meta.lastUpdated;
    const page = await everything(
      'sysA',
      `/Patient/p1/$everything?_since=${encodeURIComponent(since)}&_count=100`,
    );
    expect(page.status, page.text).toBe(200);
    expect(page.matches).toContain('Observation/obs3');
    const olderThanSince = before.body.entry
      .filter((e: any) => e.search.mode === 'match' && e.resource.meta.lastUpdated < since)
      .map((e: any) => `${e.resource.resourceType}/${e.resource.id}`)
      .filter((ref: string) => ref !== 'Observation/obs3');
    expect(olderThanSince.length).toBeGreaterThan(0);
    for (const ref of olderThanSince) expect(page.matches).not.toContain(ref);
    expect(page.total).toBe(page.matches.length);
    expect((await everything('sysA', '/Patient/p1/$everything?_since=yesterday')).status).toBe(400);
  });

  it("a resource shared with another patient shows only with every patient's grant (fail closed)", async () => {
    const shared = {
      resourceType: 'Observation',
      id: 'obs-shared',
      status: 'final',
      code,
      subject: subject('Patient/p1'),
      performer: [{ reference: 'Patient/p2' }],
    };
    const written = await h.request(tokens.sysA, 'PUT', '/Observation/obs-shared', shared);
    expect(written.status, written.text).toBe(201);
    for (const patient of ['p1', 'p2']) {
      const page = await everything('sysA', `/Patient/${patient}/$everything?_type=Observation&_count=100`);
      expect(page.matches, patient).toContain('Observation/obs-shared');
    }
    const fromP1 = await grant({ type: 'permit', actor: [actor('Organization/hosp-b')] });
    const onlyP1 = await everything('drB', '/Patient/p1/$everything?_type=Observation&_count=100');
    expect(onlyP1.status, onlyP1.text).toBe(200);
    expect(onlyP1.matches.sort()).toEqual([
      'Observation/obs1',
      'Observation/obs2',
      'Observation/obs3',
      'Observation/obs4',
      'Observation/obs5',
    ]);
    expect(onlyP1.total).toBe(5);

    const fromP2 = await h.request(
      tokens.patient2,
      'POST',
      '/Consent',
      privacyConsent('Patient/p2', { type: 'permit', actor: [actor('Organization/hosp-b')] }),
    );
    expect(fromP2.status, fromP2.text).toBe(201);
    const both = await everything('drB', '/Patient/p1/$everything?_type=Observation&_count=100');
    expect(both.matches).toContain('Observation/obs-shared');
    expect(both.total).toBe(6);
    // p2's own records are still not in p1's $everything
    for (const ref of P2_REFS) expect(both.matches).not.toContain(ref);
    await revoke(fromP1);
  });
});
