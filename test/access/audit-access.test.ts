/**
 * Who may read AuditEvents, over the real app: each AuditEvent names exactly one patient and has the custodian
 * whose disclosure it records; only that patient and that custodian (and service admins) read it, on every read
 * path (read, vread, history, search, _revinclude, _has, $everything, $access-log), whatever a grant says.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, privacyConsent, startHarness, type Harness } from './app-harness.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';

const code = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };
const subject = (p: string) => ({ reference: p });

interface StoredEvent {
  version: StoredVersion;
  text: string;
}

describe('AuditEvents: readable by their one patient and the custodian whose disclosure they record', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};
  /** Each caller's organisation and patient, to compute what it may see. */
  const who: Record<string, { organization?: string; patient?: string }> = {
    sysA: { organization: 'Organization/hosp-a' },
    sysB: { organization: 'Organization/hosp-b' },
    drB: { organization: 'Organization/hosp-b' },
    drC: { organization: 'Organization/hosp-c' },
    patient1: { patient: 'Patient/p1' },
    patient2: { patient: 'Patient/p2' },
  };
  const mayRead = (caller: string, e: StoredEvent): boolean => {
    const { organization, patient } = who[caller];
    if (patient) return e.version.patients?.length === 1 && e.version.patients[0] === patient;
    return e.version.custodian === organization;
  };

  async function storedEvents(): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    for await (const { version } of h.app.store.allVersions())
      if (version.resourceType === 'AuditEvent' && version.json) out.push({ version, text: version.json });
    return out;
  }

  /** Waits for the audit's flush (off the request path) to have stored events matching every predicate. */
  async function eventsWith(...wanted: ((e: StoredEvent) => boolean)[]): Promise<StoredEvent[]> {
    for (let attempt = 0; ; attempt++) {
      const events = await storedEvents();
      if (wanted.every((w) => events.some(w))) return events;
      if (attempt >= 100)
        throw new Error(
          `the expected AuditEvents were never stored: ${JSON.stringify(events.map((e) => [e.version.patients, e.version.custodian, e.text]))}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  const about =
    (patient: string, custodian: string | undefined, ...fragments: string[]) =>
    (e: StoredEvent) =>
      e.version.patients?.[0] === patient &&
      e.version.custodian === custodian &&
      fragments.every((f) => e.text.includes(f));

  let events: StoredEvent[] = [];

  /** Every AuditEvent in `bundle` records a disclosure of hosp-b's own records (stored with hosp-b as custodian). */
  async function onlyHospB(
    caller: string,
    bundle: { entry?: { resource?: { resourceType: string; id: string } }[] },
  ) {
    for (const { resource } of bundle.entry ?? []) {
      if (resource?.resourceType !== 'AuditEvent') continue;
      const stored = await h.app.store.read('AuditEvent', resource.id);
      expect(stored?.custodian, `${caller} ${JSON.stringify(resource)}`).toBe('Organization/hosp-b');
    }
  }

  let obsB = '';

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    tokens.sysB = await h.enrol('sys-b', 'system', 'Organization/hosp-b');
    tokens.drB = await h.enrol('dr-b-client', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    tokens.drC = await h.enrol('dr-c-client', 'clinician', 'Practitioner/dr-c', 'Organization/hosp-c');
    tokens.patient1 = await h.enrol('patient-1', 'patient', 'Patient/p1');
    tokens.patient2 = await h.enrol('patient-2', 'patient', 'Patient/p2');
    tokens.admin = await h.enrol('admin-1', 'admin');

    const put = async (token: string, ref: string, body: Record<string, unknown>) => {
      const res = await h.request(token, 'PUT', `/${ref}`, { ...body, id: ref.split('/')[1] });
      expect(res.status, `${ref}: ${res.text}`).toBe(201);
    };
    await put(tokens.sysA, 'Patient/p1', { resourceType: 'Patient', gender: 'female' });
    await put(tokens.sysA, 'Patient/p2', { resourceType: 'Patient', gender: 'male' });
    const obs = (p: string) => ({ resourceType: 'Observation', status: 'final', code, subject: subject(p) });
    await put(tokens.sysA, 'Observation/obs1', obs('Patient/p1'));
    await put(tokens.sysA, 'Condition/cond1', {
      resourceType: 'Condition',
      subject: subject('Patient/p1'),
      code,
    });
    await put(tokens.sysA, 'Observation/obs2', obs('Patient/p2'));
    // Hospital B is not this service's organisation: it creates with server-assigned ids (no squatting).
    const created = await h.request(tokens.sysB, 'POST', '/Observation', obs('Patient/p1'));
    expect(created.status, created.text).toBe(201);
    obsB = created.body.id;
    // A record of two patients (subject p1, performer p2): neither patient may read it alone.
    await put(tokens.sysA, 'Observation/obs-shared', {
      ...obs('Patient/p1'),
      performer: [{ reference: 'Patient/p2' }],
    });
    // p1 opens everything to hosp-b and Dr C but Condition (a nested deny): AuditEvent is not denied by the grant.
    const consent = await h.request(
      tokens.patient1,
      'POST',
      '/Consent',
      privacyConsent('Patient/p1', {
        type: 'permit',
        actor: [actor('Organization/hosp-b'), actor('Practitioner/dr-c')],
        provision: [
          { type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Condition' }] },
        ],
      }),
    );
    expect(consent.status, consent.text).toBe(201);

    // Disclosures: hosp-a's Observation to Dr C and to Dr B; hosp-b's own Observation to Dr B; refusals of the
    // denied Condition; patient 1 trying another patient's record.
    expect((await h.request(tokens.drC, 'GET', '/Observation/obs1')).status).toBe(200);
    expect((await h.request(tokens.drC, 'GET', '/Condition/cond1')).status).toBe(404);
    expect((await h.request(tokens.drB, 'GET', '/Observation/obs1')).status).toBe(200);
    expect((await h.request(tokens.drB, 'GET', `/Observation/${obsB}`)).status).toBe(200);
    expect((await h.request(tokens.drB, 'GET', '/Condition/cond1')).status).toBe(404);
    expect((await h.request(tokens.patient1, 'GET', '/Observation/obs2')).status).toBe(404);
    expect((await h.request(tokens.drC, 'GET', '/Observation/obs-shared')).status).toBe(404);

    events = await eventsWith(
      about('Patient/p1', 'Organization/hosp-a', 'Practitioner/dr-c', 'Observation: 1 shown'),
      about('Patient/p1', 'Organization/hosp-a', 'Practitioner/dr-c', 'Condition: 0 shown, 1 withheld'),
      about('Patient/p1', 'Organization/hosp-a', 'Practitioner/dr-b', 'Observation: 1 shown'),
      about('Patient/p1', 'Organization/hosp-b', 'Practitioner/dr-b', 'Observation: 1 shown'),
      about('Patient/p2', 'Organization/hosp-a', '"code":"patient"', 'Observation: 0 shown, 1 withheld'),
      (e) =>
        (e.version.patients ?? []).length === 0 &&
        e.version.custodian === 'Organization/hosp-a' &&
        e.text.includes('Practitioner/dr-c') &&
        e.text.includes('records of several patients'),
    );
  });
  afterAll(async () => {
    await h?.stop();
  });

  // First: what other callers do later (their searches of AuditEvents touch hosp-b's events) is hosp-b's to read.
  it('a grantee under a grant denying Condition reads nothing of what other organisations disclosed', async () => {
    for (const caller of ['sysB', 'drB']) {
      const res = await h.request(tokens[caller], 'GET', '/AuditEvent?_count=1000');
      await onlyHospB(caller, res.body);
      const text = res.text;
      expect(text, caller).not.toContain('Practitioner/dr-c');
      expect(text, caller).not.toContain('Condition');
      expect(text, caller).not.toContain('Patient/p2');
      // Through _has, _revinclude and $everything neither.
      const has = await h.request(
        tokens[caller],
        'GET',
        '/Patient?_has:AuditEvent:patient:agent=Practitioner/dr-c',
      );
      expect(has.status, has.text.slice(0, 300)).toBe(200);
      expect(has.body.entry ?? [], caller).toEqual([]);
      // _revinclude and $everything bring only the events of hosp-b's own records.
      const rev = await h.request(tokens[caller], 'GET', '/Patient?_id=p1&_revinclude=AuditEvent:patient');
      expect(rev.status, rev.text.slice(0, 300)).toBe(200);
      const everything = await h.request(tokens[caller], 'GET', '/Patient/p1/$everything');
      expect(everything.status, everything.text.slice(0, 300)).toBe(200);
      for (const bundle of [rev.body, everything.body]) await onlyHospB(caller, bundle);
      // The ledger's access log (no custodian in its records) is the patient's, not a grantee's.
      expect((await h.request(tokens[caller], 'GET', '/Patient/p1/$access-log')).status).toBe(403);
    }
  });

  it('every AuditEvent names exactly one patient or none, and one whose records were touched has their custodian', () => {
    for (const e of events) {
      const body = JSON.parse(e.text);
      const entities = (body.entity ?? []) as { what?: { reference: string } }[];
      expect(entities.length, e.text).toBeLessThanOrEqual(1);
      expect(e.version.patients ?? [], e.text).toEqual(
        entities.filter((x) => x.what).map((x) => x.what!.reference),
      );
      if (entities.length === 0) expect(e.version.custodian, e.text).toBeUndefined();
    }
  });

  it('search: each caller sees exactly the events of its own patient or of its organisation as custodian', async () => {
    for (const caller of Object.keys(who)) {
      const res = await h.request(tokens[caller], 'GET', '/AuditEvent?_count=1000&_total=accurate');
      expect(res.status, res.text.slice(0, 300)).toBe(200);
      const ids = ((res.body.entry ?? []) as { resource: { id: string } }[]).map((x) => x.resource.id).sort();
      // Events stored after the search started (its own audit) are left out of the comparison.
      const known = new Set(events.map((e) => e.version.id));
      const expected = events.filter((e) => mayRead(caller, e)).map((e) => e.version.id);
      expect(
        ids.filter((id) => known.has(id)),
        caller,
      ).toEqual(expected.sort());
    }
  });

  it('read, vread and history of an event: 200 for its patient and custodian, 404 for everyone else', async () => {
    const drCRead = events.find(
      about('Patient/p1', 'Organization/hosp-a', 'Practitioner/dr-c', 'Observation'),
    )!;
    const id = drCRead.version.id;
    const expected: Record<string, number> = {
      sysA: 200,
      patient1: 200,
      sysB: 404,
      drB: 404,
      drC: 404,
      patient2: 404,
    };
    for (const [caller, status] of Object.entries(expected)) {
      for (const url of [`/AuditEvent/${id}`, `/AuditEvent/${id}/_history/1`, `/AuditEvent/${id}/_history`]) {
        const res = await h.request(tokens[caller], 'GET', url);
        expect(res.status, `${caller} GET ${url}`).toBe(status);
      }
    }
    const history = await h.request(tokens.drB, 'GET', '/AuditEvent/_history?_count=1000');
    expect(history.status).toBe(200);
    await onlyHospB('drB', history.body);
  });

  it('patients never see each other: an event about p2 names the patient who tried by pseudonym only', async () => {
    const res = await h.request(tokens.patient2, 'GET', '/AuditEvent?_count=1000');
    expect(res.status).toBe(200);
    expect((res.body.entry ?? []).length).toBeGreaterThan(0);
    expect(res.text).not.toContain('Patient/p1');
    const mine = await h.request(tokens.patient1, 'GET', '/AuditEvent?_count=1000');
    expect(mine.text).not.toContain('Patient/p2');
    expect(mine.text).toContain('Practitioner/dr-c'); // the patient sees who read their records
    expect((await h.request(tokens.patient1, 'GET', '/Patient/p1/$access-log')).status).toBe(200);
  });

  it("a search's shown records are audited per patient and custodian", async () => {
    const res = await h.request(tokens.drB, 'GET', '/Observation?subject=Patient/p1&_count=100');
    expect(res.status).toBe(200);
    expect(
      ((res.body.entry ?? []) as { resource: { id: string } }[]).map((e) => e.resource.id).sort(),
    ).toEqual(['obs1', obsB].sort());
    const searchBy = (custodian: string) =>
      about(
        'Patient/p1',
        custodian,
        '"code":"search-type"',
        'Practitioner/dr-b',
        'Observation: 1 shown, 0 withheld',
      );
    await eventsWith(searchBy('Organization/hosp-a'), searchBy('Organization/hosp-b'));
  });

  it("a record of several patients is counted in its custodian's event only, named by no patient", async () => {
    // Dr C's refused read of it (a 404 on /Observation, the only one Dr C had): in neither patient's events.
    const eventsOf = async (caller: string): Promise<string[]> =>
      (
        ((await h.request(tokens[caller], 'GET', '/AuditEvent?_count=1000')).body.entry ?? []) as {
          resource: unknown;
        }[]
      ).map((x) => JSON.stringify(x.resource));
    for (const caller of ['patient1', 'patient2']) {
      const events = await eventsOf(caller);
      expect(events.length, caller).toBeGreaterThan(0);
      for (const event of events) {
        expect(event).not.toContain('several patients');
        if (event.includes('Practitioner/dr-c'))
          expect(event, caller).not.toContain('GET /Observation -> 404');
      }
    }
    const custodian = await h.request(tokens.sysA, 'GET', '/AuditEvent?_count=1000');
    expect(custodian.text).toContain('Observation: 0 shown, 1 withheld (records of several patients)');
  });

  it('a refused read of a hidden record and a read of an absent id leave the same trace for the reader', async () => {
    // Dr C's organisation sees no event of either (hosp-a's disclosure, and no patient at all).
    const before = await h.request(tokens.drC, 'GET', '/AuditEvent?_count=1000');
    const ids = (before.body.entry ?? []).length;
    expect((await h.request(tokens.drC, 'GET', '/Condition/never-was')).status).toBe(404);
    await eventsWith(
      (e) => (e.version.patients ?? []).length === 0 && e.text.includes('GET /Condition -> 404'),
    );
    const after = await h.request(tokens.drC, 'GET', '/AuditEvent?_count=1000');
    expect(after.text).not.toContain('/Condition');
    expect((after.body.entry ?? []).length).toBe(ids);
  });
});
