/**
 * The access matrix over the real app: roles x relation to the data (custodian, granted, not granted, expired,
 * revoked, denied by a nested provision, outside every compartment) x every read path x resource types. Every cell
 * has its expected answer; a resource a caller may not see must be indistinguishable from one that does not exist.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, privacyConsent, startHarness, type Harness } from './app-harness.js';
import { ledgerGrantsOf } from '../consent/ledger-grants.js';

interface Resource {
  ref: string;
  body: Record<string, unknown>;
  /** Which organisation's system writes it (its custodian). */
  writer: 'sysA' | 'sysB';
}

const subject = (p: string) => ({ reference: p });
const code = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };
const RESOURCES: Resource[] = [
  { ref: 'Organization/hosp-a', writer: 'sysA', body: { resourceType: 'Organization', name: 'Hospital A' } },
  { ref: 'Practitioner/dr-a', writer: 'sysA', body: { resourceType: 'Practitioner', active: true } },
  { ref: 'Patient/p1', writer: 'sysA', body: { resourceType: 'Patient', gender: 'female' } },
  {
    ref: 'Observation/obs1',
    writer: 'sysA',
    body: { resourceType: 'Observation', status: 'final', code, subject: subject('Patient/p1') },
  },
  {
    ref: 'Condition/cond1',
    writer: 'sysA',
    body: { resourceType: 'Condition', subject: subject('Patient/p1'), code },
  },
  {
    ref: 'MedicationRequest/mr1',
    writer: 'sysA',
    body: {
      resourceType: 'MedicationRequest',
      status: 'active',
      intent: 'order',
      subject: subject('Patient/p1'),
      medicationCodeableConcept: code,
    },
  },
  { ref: 'Patient/p2', writer: 'sysA', body: { resourceType: 'Patient', gender: 'male' } },
  {
    ref: 'Observation/obs2',
    writer: 'sysA',
    body: { resourceType: 'Observation', status: 'final', code, subject: subject('Patient/p2') },
  },
  { ref: 'Patient/p3', writer: 'sysA', body: { resourceType: 'Patient', gender: 'other' } },
  {
    ref: 'Observation/obs3',
    writer: 'sysA',
    body: { resourceType: 'Observation', status: 'final', code, subject: subject('Patient/p3') },
  },
  {
    ref: 'Observation/obsB',
    writer: 'sysB',
    body: { resourceType: 'Observation', status: 'final', code, subject: subject('Patient/p1') },
  },
];

/** Who sees what: the expected visibility of every resource for every caller. */
const ALL = RESOURCES.map((r) => r.ref);
const NON_COMPARTMENT = ['Organization/hosp-a', 'Practitioner/dr-a'];
const HOSP_A = ALL.filter((r) => r !== 'Observation/obsB');
const EXPECTED: Record<string, { visible: string[]; relation: string }> = {
  sysA: { visible: HOSP_A, relation: 'custodian of everything but obsB' },
  drA: { visible: HOSP_A, relation: 'custodian (own organisation)' },
  // p1 granted hosp-b Patient/Observation/Condition with a nested deny of Condition; p2's grant expired; p3's was revoked.
  sysB: {
    visible: [...NON_COMPARTMENT, 'Patient/p1', 'Observation/obs1', 'Observation/obsB'],
    relation: 'granted (organisation) + custodian of obsB',
  },
  drB: {
    visible: [...NON_COMPARTMENT, 'Patient/p1', 'Observation/obs1', 'Observation/obsB'],
    relation: 'granted via organisation',
  },
  // A grant opens the patient's records held by this service, whichever of its organisations holds them.
  drC: {
    visible: [...NON_COMPARTMENT, 'Patient/p1', 'Observation/obs1', 'Observation/obsB'],
    relation: 'granted individually',
  },
  labB: { visible: NON_COMPARTMENT, relation: 'not granted' },
  patient1: {
    visible: [
      ...NON_COMPARTMENT,
      'Patient/p1',
      'Observation/obs1',
      'Condition/cond1',
      'MedicationRequest/mr1',
      'Observation/obsB',
    ],
    relation: 'own compartment',
  },
  patient2: { visible: [...NON_COMPARTMENT, 'Patient/p2', 'Observation/obs2'], relation: 'own compartment' },
  admin: { visible: NON_COMPARTMENT, relation: 'no recorded reason' },
  adminWithReason: { visible: ALL, relation: 'recorded reason' },
};

describe('access matrix (roles x relations x interactions x resource types)', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};
  const headersOf = (caller: string): Record<string, string> =>
    caller === 'adminWithReason' ? { 'x-access-reason': 'audit ticket 42' } : {};
  const tokenOf = (caller: string) => tokens[caller === 'adminWithReason' ? 'admin' : caller];
  const get = (caller: string, url: string) =>
    h.request(tokenOf(caller), 'GET', url, undefined, headersOf(caller));

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    tokens.sysB = await h.enrol('sys-b', 'system', 'Organization/hosp-b');
    tokens.drA = await h.enrol('dr-a-client', 'clinician', 'Practitioner/dr-a', 'Organization/hosp-a');
    tokens.drB = await h.enrol('dr-b-client', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    tokens.drC = await h.enrol('dr-c-client', 'clinician', 'Practitioner/dr-c', 'Organization/hosp-c');
    tokens.labB = await h.enrol('lab-b', 'lab', 'Organization/lab-b');
    tokens.patient1 = await h.enrol('patient-1', 'patient', 'Patient/p1');
    tokens.patient2 = await h.enrol('patient-2', 'patient', 'Patient/p2');
    tokens.patient3 = await h.enrol('patient-3', 'patient', 'Patient/p3');
    tokens.admin = await h.enrol('admin-1', 'admin');

    for (const r of RESOURCES) {
      if (r.writer === 'sysB') {
        // Only this service's own organisation (hosp-a) chooses ids: hosp-b creates with a server id.
        const res = await h.request(tokens[r.writer], 'POST', `/${r.ref.split('/')[0]}`, r.body);
        expect(res.status, `${r.ref}: ${res.text}`).toBe(201);
        const assigned = `${res.body.resourceType}/${res.body.id}`;
        for (const list of [ALL, ...Object.values(EXPECTED).map((e) => e.visible)])
          for (let i = list.indexOf(r.ref); i >= 0; i = list.indexOf(r.ref)) list[i] = assigned;
        r.ref = assigned;
        continue;
      }
      const res = await h.request(tokens[r.writer], 'PUT', `/${r.ref}`, {
        ...r.body,
        id: r.ref.split('/')[1],
      });
      expect(res.status, `${r.ref}: ${res.text}`).toBe(201);
    }
    // p1: hosp-b and Dr C may read Patient, Observation, Condition, but a nested deny takes Condition back.
    const c1 = await h.request(
      tokens.patient1,
      'POST',
      '/Consent',
      privacyConsent('Patient/p1', {
        type: 'permit',
        actor: [actor('Organization/hosp-b'), actor('Practitioner/dr-c')],
        class: [
          { system: 'http://hl7.org/fhir/resource-types', code: 'Patient' },
          { system: 'http://hl7.org/fhir/resource-types', code: 'Observation' },
          { system: 'http://hl7.org/fhir/resource-types', code: 'Condition' },
        ],
        provision: [
          { type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Condition' }] },
        ],
      }),
    );
    expect(c1.status, c1.text).toBe(201);
    // p2: a grant to hosp-b that expired.
    const c2 = await h.request(
      tokens.patient2,
      'POST',
      '/Consent',
      privacyConsent('Patient/p2', {
        type: 'permit',
        actor: [actor('Organization/hosp-b')],
        period: { start: '2020-01-01', end: '2021-01-01' },
      }),
    );
    expect(c2.status, c2.text).toBe(201);
    // p3: a grant to hosp-b, then revoked (status inactive).
    const c3 = await h.request(
      tokens.patient3,
      'POST',
      '/Consent',
      privacyConsent('Patient/p3', { type: 'permit', actor: [actor('Organization/hosp-b')] }),
    );
    expect(c3.status, c3.text).toBe(201);
    expect((await h.request(tokens.sysB, 'GET', '/Observation/obs3')).status).toBe(200); // in force before the revocation
    const revoked = await h.request(tokens.patient3, 'PUT', `/Consent/${c3.body.id}`, {
      ...c3.body,
      status: 'inactive',
    });
    expect(revoked.status, revoked.text).toBe(200);
  });
  afterAll(async () => {
    await h?.stop();
  });

  const callers = Object.keys(EXPECTED);

  for (const caller of callers) {
    describe(`${caller} (${EXPECTED[caller].relation})`, () => {
      it('read, vread and history-instance: 200 when visible, 404 otherwise (never 403)', async () => {
        for (const r of RESOURCES) {
          const visible = EXPECTED[caller].visible.includes(r.ref);
          const adminRefused = caller === 'admin' && !NON_COMPARTMENT.includes(r.ref);
          const expected = adminRefused ? 403 : visible ? 200 : 404;
          for (const url of [`/${r.ref}`, `/${r.ref}/_history/1`, `/${r.ref}/_history`]) {
            const res = await get(caller, url);
            expect(res.status, `${caller} GET ${url}: ${res.text.slice(0, 200)}`).toBe(expected);
            if (expected !== 200) expect(res.text).not.toContain('"status":"final"');
          }
        }
      });

      it('search by type (with total) shows exactly the visible resources', async () => {
        for (const type of [...new Set(RESOURCES.map((r) => r.ref.split('/')[0]))]) {
          const res = await get(caller, `/${type}?_total=accurate&_count=100`);
          if (caller === 'admin' && !['Organization', 'Practitioner'].includes(type)) {
            expect(res.status).toBe(403);
            continue;
          }
          expect(res.status, `${caller} search ${type}: ${res.text.slice(0, 300)}`).toBe(200);
          const ids = (res.body.entry ?? [])
            .map((e: any) => `${e.resource.resourceType}/${e.resource.id}`)
            .sort();
          const expected = EXPECTED[caller].visible.filter((r) => r.startsWith(`${type}/`)).sort();
          expect(ids, `${caller} search ${type}`).toEqual(expected);
          if (res.body.total !== undefined) expect(res.body.total).toBe(expected.length);
          // Searching for a hidden id by _id finds nothing, as for one that does not exist.
          for (const hidden of RESOURCES.filter(
            (r) => r.ref.startsWith(`${type}/`) && !EXPECTED[caller].visible.includes(r.ref),
          )) {
            const one = await get(caller, `/${type}?_id=${hidden.ref.split('/')[1]}&_total=accurate`);
            expect(one.body.entry ?? []).toEqual([]);
            expect(one.body.total ?? 0).toBe(0);
          }
        }
      });

      it('_include, _revinclude and chained search reveal nothing hidden', async () => {
        if (caller === 'admin') return; // refused above for clinical types
        const visible = new Set(EXPECTED[caller].visible);
        const inc = await get(caller, '/Observation?_include=Observation:subject&_count=100');
        expect(inc.status, inc.text.slice(0, 300)).toBe(200);
        for (const e of inc.body.entry ?? [])
          expect(
            visible.has(`${e.resource.resourceType}/${e.resource.id}`),
            `${caller} include ${e.resource.id}`,
          ).toBe(true);
        const rev = await get(
          caller,
          '/Patient?_revinclude=Observation:subject&_revinclude=Condition:subject&_count=100',
        );
        expect(rev.status, rev.text.slice(0, 300)).toBe(200);
        const revIds = (rev.body.entry ?? []).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`);
        for (const ref of revIds) expect(visible.has(ref), `${caller} revinclude ${ref}`).toBe(true);
        for (const ref of visible)
          if (/^(Patient|Observation|Condition)\//.test(ref)) {
            const isRevTarget =
              ref.startsWith('Patient/') ||
              visible.has(
                `Patient/${RESOURCES.find((r) => r.ref === ref)?.body.subject ? (RESOURCES.find((r) => r.ref === ref)!.body.subject as any).reference.split('/')[1] : ''}`,
              );
            if (isRevTarget) expect(revIds, `${caller} revinclude should show ${ref}`).toContain(ref);
          }
        // A chain through a hidden patient matches nothing.
        const chained = await get(caller, '/Observation?subject:Patient.gender=other&_total=accurate');
        const chainedIds = (chained.body.entry ?? []).map((e: any) => `Observation/${e.resource.id}`);
        expect(chainedIds).toEqual(
          visible.has('Patient/p3') && visible.has('Observation/obs3') ? ['Observation/obs3'] : [],
        );
      });

      it('batch GET entries answer 200 or 404 per entry', async () => {
        const bundle = {
          resourceType: 'Bundle',
          type: 'batch',
          entry: RESOURCES.map((r) => ({ request: { method: 'GET', url: r.ref } })),
        };
        const res = await h.request(tokenOf(caller), 'POST', '', bundle, headersOf(caller));
        expect(res.status, res.text.slice(0, 300)).toBe(200);
        RESOURCES.forEach((r, i) => {
          const visible = EXPECTED[caller].visible.includes(r.ref);
          const adminRefused = caller === 'admin' && !NON_COMPARTMENT.includes(r.ref);
          const status = res.body.entry[i].response.status as string;
          expect(status.slice(0, 3), `${caller} batch GET ${r.ref}`).toBe(
            adminRefused ? '403' : visible ? '200' : '404',
          );
        });
      });

      it('history of a type and of the system contains only visible versions', async () => {
        if (caller === 'admin') return;
        const visible = new Set(EXPECTED[caller].visible);
        for (const url of ['/Observation/_history?_count=100', '/_history?_count=200']) {
          const res = await get(caller, url);
          expect(res.status, `${caller} ${url}: ${res.text.slice(0, 200)}`).toBe(200);
          for (const e of res.body.entry ?? []) {
            if (!e.resource) continue;
            const ref = `${e.resource.resourceType}/${e.resource.id}`;
            if (e.resource.resourceType === 'Consent' || e.resource.resourceType === 'AuditEvent') continue;
            expect(visible.has(ref), `${caller} ${url} shows ${ref}`).toBe(true);
          }
        }
      });

      it('history totals and _count=0 count only visible versions; cursors do not open for another caller', async () => {
        if (caller === 'admin') return;
        // Each Observation was written once: one version per visible Observation.
        const visibleObservations = EXPECTED[caller].visible.filter((r) => r.startsWith('Observation/'));
        for (const url of ['/Observation/_history', '/Observation/_history?_count=0']) {
          const res = await get(caller, url);
          expect(res.body.total, `${caller} ${url}`).toBe(visibleObservations.length);
        }
        const first = await get(caller, '/Observation/_history?_count=1');
        const next = (first.body.link as { relation: string; url: string }[]).find(
          (l) => l.relation === 'next',
        );
        if (!next) return;
        const replay = await get(caller === 'sysA' ? 'labB' : 'sysA', next.url.split('/fhir')[1]!);
        expect(replay.status, `${caller}'s cursor replayed`).toBe(400);
      });

      it('search cursors do not open for another caller, nor altered: 400 page-cursor-invalid', async () => {
        if (caller === 'admin') return;
        const first = await get(caller, '/Observation?_count=1');
        const next = (first.body.link as { relation: string; url: string }[]).find(
          (l) => l.relation === 'next',
        );
        if (!next) return;
        const url = next.url.split('/fhir')[1]!;
        expect(url).toContain('_cursor=');
        const replay = await get(caller === 'sysA' ? 'labB' : 'sysA', url);
        expect(replay.status, `${caller}'s search cursor replayed`).toBe(400);
        expect(JSON.stringify(replay.body)).toContain('page-cursor-invalid');
        const altered = await get(
          caller,
          url.replace(/_cursor=(.)/, (_m, c) => `_cursor=${c === 'A' ? 'B' : 'A'}`),
        );
        expect(altered.status, `${caller}'s altered search cursor`).toBe(400);
        expect((await get(caller, url)).status, `${caller}'s own search cursor`).toBe(200);
      });

      it('$verify of a hidden resource is 404', async () => {
        for (const r of RESOURCES) {
          const res = await get(caller, `/${r.ref}/$verify`);
          if (res.status === 501 || res.status === 405) return; // $verify not registered in this build
          const visible = EXPECTED[caller].visible.includes(r.ref);
          if (!visible) expect([403, 404], `${caller} $verify ${r.ref}: ${res.status}`).toContain(res.status);
          else expect(res.status, `${caller} $verify ${r.ref}`).not.toBe(404);
        }
      });
    });
  }

  describe('writes', () => {
    it('a write to a hidden resource answers as one to a missing resource (404); to a visible foreign one 403', async () => {
      const cond = RESOURCES.find((r) => r.ref === 'Condition/cond1')!;
      expect(
        (await h.request(tokens.drB, 'PUT', '/Condition/cond1', { ...cond.body, id: 'cond1' })).status,
      ).toBe(404);
      expect(
        (await h.request(tokens.drB, 'PUT', '/Condition/nope', { ...cond.body, id: 'nope' })).status,
      ).toBe(404);
      const obs = RESOURCES.find((r) => r.ref === 'Observation/obs1')!;
      expect(
        (
          await h.request(tokens.drB, 'PUT', '/Observation/obs1', {
            ...obs.body,
            id: 'obs1',
            status: 'amended',
          })
        ).status,
      ).toBe(403);
      expect((await h.request(tokens.drB, 'DELETE', '/Observation/obs1')).status).toBe(403);
      const hiddenDelete = await h.request(tokens.drB, 'DELETE', '/Condition/cond1');
      const missingDelete = await h.request(tokens.drB, 'DELETE', '/Condition/never-was');
      expect(hiddenDelete.status).toBe(missingDelete.status);
      expect((await h.request(tokens.drA, 'GET', '/Condition/cond1')).status).toBe(200); // still there
    });

    it('role rules: clinicians write their own records, labs only results, patients only their Consent, systems and admins the directory', async () => {
      const obs = { resourceType: 'Observation', status: 'final', code, subject: subject('Patient/p1') };
      const created = await h.request(tokens.drB, 'POST', '/Observation', obs);
      expect(created.status, created.text).toBe(201);
      expect((await h.request(tokens.drB, 'GET', `/Observation/${created.body.id}`)).status).toBe(200);
      expect((await h.request(tokens.drA, 'GET', `/Observation/${created.body.id}`)).status).toBe(404); // hosp-b's record, not granted to hosp-a
      expect((await h.request(tokens.labB, 'POST', '/Observation', obs)).status).toBe(201);
      expect((await h.request(tokens.labB, 'POST', '/MedicationRequest', RESOURCES[5].body)).status).toBe(
        403,
      );
      expect((await h.request(tokens.patient1, 'POST', '/Observation', obs)).status).toBe(403);
      expect(
        (await h.request(tokens.drB, 'POST', '/Organization', { resourceType: 'Organization', name: 'X' }))
          .status,
      ).toBe(403);
      expect(
        (await h.request(tokens.admin, 'POST', '/Organization', { resourceType: 'Organization', name: 'X' }))
          .status,
      ).toBe(201);
      expect(
        (
          await h.request(tokens.drB, 'PUT', '/Organization/made-up', {
            resourceType: 'Organization',
            id: 'made-up',
            name: 'X',
          })
        ).status,
      ).toBe(404);
      expect(
        (
          await h.request(tokens.sysA, 'PUT', '/Organization/made-up', {
            resourceType: 'Organization',
            id: 'made-up',
            name: 'X',
          })
        ).status,
      ).toBe(201);
      // Consents: not the clinician, not another patient, not an admin without a reason.
      const consent = privacyConsent('Patient/p1', { type: 'permit', actor: [actor('Organization/lab-b')] });
      expect((await h.request(tokens.drB, 'POST', '/Consent', consent)).status).toBe(403);
      expect((await h.request(tokens.patient2, 'POST', '/Consent', consent)).status).toBe(403);
      expect((await h.request(tokens.admin, 'POST', '/Consent', consent)).status).toBe(403);
    });

    it('a system of the home organisation records a consent given in person (marked on the ledger)', async () => {
      const consent = privacyConsent('Patient/p2', {
        type: 'permit',
        actor: [actor('Organization/lab-b')],
        class: [{ code: 'Observation' }],
      });
      const res = await h.request(tokens.sysA, 'POST', '/Consent', consent);
      expect(res.status, res.text).toBe(201);
      expect((await h.request(tokens.labB, 'GET', '/Observation/obs2')).status).toBe(200);
      expect((await h.request(tokens.labB, 'GET', '/Patient/p2')).status).toBe(404);
      // Not a system of another organisation; an admin only with a recorded reason.
      expect((await h.request(tokens.sysB, 'POST', '/Consent', consent)).status).toBe(403);
      const byAdmin = await h.request(tokens.admin, 'POST', '/Consent', consent, {
        'x-access-reason': 'paper consent form 2026-117',
      });
      expect(byAdmin.status, byAdmin.text).toBe(201);
      const grants = await ledgerGrantsOf(h.dataDir, h.app.ledger!, 'Patient/p2');
      const inPerson = grants.filter((g: any) => g.status === 'active' && g.grantedInPerson);
      expect(inPerson.length).toBe(1);
      expect(JSON.stringify(grants)).not.toMatch(/Patient\/|Organization\/|lab-b/);
    });
  });

  describe('authentication through the app', () => {
    it('no token, a forged token, or a revoked participant: 401 with WWW-Authenticate', async () => {
      const none = await h.request(undefined, 'GET', '/Patient/p1');
      expect(none.status).toBe(401);
      expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(none.body.resourceType).toBe('OperationOutcome');
      const forged = await h.request(`${tokens.sysA.slice(0, -4)}AAAA`, 'GET', '/Patient/p1');
      expect(forged.status).toBe(401);
      const temp = await h.enrol('temp-sys', 'system', 'Organization/hosp-a');
      expect((await h.request(temp, 'GET', '/Patient/p1')).status).toBe(200);
      await h.participants.revoke('temp-sys');
      await new Promise((resolve) => setTimeout(resolve, 50)); // another connection's write: seen via the file watcher
      expect((await h.request(temp, 'GET', '/Patient/p1')).status).toBe(401);
      expect((await h.request(undefined, 'GET', '/metadata')).status).toBe(200);
    });
  });

  describe('audit', () => {
    it('records accesses as AuditEvents and on the ledger; the patient lists who accessed their data', async () => {
      await h.request(tokens.drB, 'GET', '/Observation/obs1');
      await h.request(tokens.drB, 'GET', '/Condition/cond1');
      let log: any;
      for (let attempt = 0; attempt < 40; attempt++) {
        log = await h.request(tokens.patient1, 'GET', '/Patient/p1/$access-log');
        expect(log.status, log.text).toBe(200);
        if (
          (log.body.parameter ?? []).length > 0 &&
          log.body.parameter.some((p: any) =>
            p.part.some((x: any) => x.valueReference?.reference === 'Practitioner/dr-b'),
          )
        )
          break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const entries = log.body.parameter.map((p: any) =>
        Object.fromEntries(
          p.part.map((x: any) => [
            x.name,
            x.valueCode ?? x.valueString ?? x.valueReference?.reference ?? x.valueInstant,
          ]),
        ),
      );
      const byDrB = entries.filter((e: any) => e.who === 'Practitioner/dr-b');
      expect(byDrB.some((e: any) => e.outcome === 'allowed' && e.resourceType === 'Observation')).toBe(true);
      // The ledger (read by every member) records disclosures only: a refusal would tell that the record exists.
      expect(entries.some((e: any) => e.outcome === 'refused')).toBe(false);
      // Another patient may not see p1's access log; p1's AuditEvents are in p1's compartment.
      expect((await h.request(tokens.patient2, 'GET', '/Patient/p1/$access-log')).status).toBe(404);
      const events = await h.request(tokens.patient1, 'GET', '/AuditEvent?_count=100');
      expect(events.status, events.text.slice(0, 200)).toBe(200);
      expect((events.body.entry ?? []).length).toBeGreaterThan(0);
      for (const e of events.body.entry)
        expect(JSON.stringify(e.resource.entity ?? [])).toContain('Patient/p1');
      // The refusal of the denied Condition is in the patient's AuditEvents.
      const refusalByDrB = (text: string): boolean =>
        (JSON.parse(text).entry ?? []).some((x: any) => {
          const event = JSON.stringify(x.resource);
          return event.includes('Practitioner/dr-b') && event.includes('Condition: 0 shown, 1 withheld');
        });
      await expect
        .poll(
          async () => refusalByDrB((await h.request(tokens.patient1, 'GET', '/AuditEvent?_count=1000')).text),
          {
            timeout: 10_000,
          },
        )
        .toBe(true);
      // AuditEvents are stored versions like any other: anchored.
      const anchor = await h.app.store.anchorState({
        resourceType: 'AuditEvent',
        id: events.body.entry[0].resource.id,
        versionId: 1,
      });
      expect(anchor?.status).toMatch(/pending|anchored/);
      // No names or resource ids on the ledger, nor the patient's pseudonym: every access record, read raw.
      const ledgerText = await h.app.ledger!.evaluate('consent:ListAccess', ['', '1000']);
      expect(ledgerText).toContain('"recordId"');
      expect(ledgerText).not.toContain('Patient/p1');
      expect(ledgerText).not.toContain('dr-b');
      expect(ledgerText).not.toContain(h.participants.existingPseudonymOf('Patient/p1')!);
    });

    it('every caller reads exactly the AuditEvents of its own patient or of its organisation as custodian', async () => {
      const stored: { id: string; patients: string[]; custodian?: string }[] = [];
      for await (const { version } of h.app.store.allVersions())
        if (version.resourceType === 'AuditEvent')
          stored.push({ id: version.id, patients: version.patients ?? [], custodian: version.custodian });
      expect(stored.some((e) => e.patients.length === 1 && e.custodian === 'Organization/hosp-a')).toBe(true);
      const organisationOf: Record<string, string | undefined> = {
        sysA: 'Organization/hosp-a',
        drA: 'Organization/hosp-a',
        sysB: 'Organization/hosp-b',
        drB: 'Organization/hosp-b',
        drC: 'Organization/hosp-c',
        labB: 'Organization/lab-b',
      };
      const patientOf: Record<string, string> = { patient1: 'Patient/p1', patient2: 'Patient/p2' };
      for (const caller of callers) {
        const res = await get(caller, '/AuditEvent?_count=1000');
        if (caller === 'admin') {
          expect(res.status).toBe(403);
          continue;
        }
        expect(res.status, `${caller}: ${res.text.slice(0, 200)}`).toBe(200);
        const known = new Set(stored.map((e) => e.id));
        const ids = ((res.body.entry ?? []) as { resource: { id: string } }[])
          .map((e) => e.resource.id)
          .filter((id) => known.has(id)) // left out: events stored after the snapshot above
          .sort();
        const expected = stored
          .filter((e) =>
            caller === 'adminWithReason'
              ? true
              : patientOf[caller]
                ? e.patients.length === 1 && e.patients[0] === patientOf[caller]
                : e.custodian !== undefined && e.custodian === organisationOf[caller],
          )
          .map((e) => e.id)
          .sort();
        expect(ids, caller).toEqual(expected);
      }
    });
  });
});
