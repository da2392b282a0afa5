/**
 * The access matrix for conditional interactions, `_has` and chains, over the real app: a caller must get the same
 * answer (status, headers, body, totals) whether records it may not see match its criteria or nothing does. Each
 * check runs the same request twice, once with a value only hidden records hold and once with a value nobody
 * holds, and compares the answers with those two values (and new ids and instants) masked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, privacyConsent, startHarness, type Harness } from './app-harness.js';

const code = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };
const subject = (p: string) => ({ reference: p });
const CALLERS = ['drB', 'labB', 'sysB'] as const;
type CallerName = (typeof CALLERS)[number];
/** The checks that write need a value of their own per caller and check (what they create is then visible). */
const WRITE_CHECKS = [
  'create',
  'batch-create',
  'batch-update',
  'batch-delete',
  'tx-create',
  'tx-update',
  'http-conditional',
];
const hiddenValue = (caller: string, check: string) => `zz-hidden-${caller}-${check}`;
const absentValue = (caller: string, check: string) => `zz-absent-${caller}-${check}`;

interface Answer {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

/** The answer with `values` and whatever differs between two runs by construction (new ids, instants) masked. */
function masked(
  res: { status: number; headers: Record<string, unknown>; text: string },
  values: string[],
): Answer {
  const mask = (text: string): string => {
    let out = text;
    for (const value of values) out = out.split(value).join('VALUE');
    return out
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, 'UUID')
      .replace(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})/g, 'INSTANT')
      .replace(/[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT/g, 'HTTP-DATE');
  };
  const headers: Record<string, unknown> = {};
  for (const name of ['content-type', 'etag', 'location', 'last-modified', 'content-location'])
    if (res.headers[name] !== undefined) headers[name] = mask(String(res.headers[name]));
  return { status: res.status, headers, body: mask(res.text) };
}

describe('access matrix: conditional interactions, _has and chains decide over what the caller may see', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};
  /** Server-assigned ids of hospital B's records, by the name the test gives them. */
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    tokens.sysB = await h.enrol('sys-b', 'system', 'Organization/hosp-b');
    tokens.drB = await h.enrol('dr-b-client', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    tokens.labB = await h.enrol('lab-b', 'lab', 'Organization/lab-b');
    tokens.patient1 = await h.enrol('patient-1', 'patient', 'Patient/p1');
    tokens.patient2 = await h.enrol('patient-2', 'patient', 'Patient/p2');

    const put = async (token: string, ref: string, body: Record<string, unknown>) => {
      // Only this service's organisation (hosp-a) chooses ids: hospital B's records get server-assigned ones.
      if (token === tokens.sysB) {
        const res = await h.request(token, 'POST', `/${ref.split('/')[0]}`, body);
        expect(res.status, `${ref}: ${res.text}`).toBe(201);
        ids[ref.split('/')[1]] = res.body.id;
        return;
      }
      const res = await h.request(token, 'PUT', `/${ref}`, { ...body, id: ref.split('/')[1] });
      expect(res.status, `${ref}: ${res.text}`).toBe(201);
    };
    const identifiers = (values: string[]) => values.map((value) => ({ system: 'urn:test', value }));
    const obs = (p: string, values: string[]) => ({
      resourceType: 'Observation',
      status: 'final',
      code,
      subject: subject(p),
      ...(values.length > 0 ? { identifier: identifiers(values) } : {}),
    });
    // hosp-a's records. p1: granted to hosp-b except Condition; p2: its Observations granted to lab-b (not the
    // Patient); p3: granted to nobody.
    await put(tokens.sysA, 'Patient/p1', { resourceType: 'Patient', gender: 'female' });
    await put(tokens.sysA, 'Patient/p2', { resourceType: 'Patient', gender: 'male' });
    await put(tokens.sysA, 'Patient/p3', {
      resourceType: 'Patient',
      gender: 'other',
      identifier: identifiers(['zz-hidden-patient']),
    });
    await put(tokens.sysA, 'Observation/obs1', obs('Patient/p1', []));
    await put(tokens.sysA, 'Observation/obs2', obs('Patient/p2', []));
    await put(tokens.sysA, 'Condition/cond1', {
      resourceType: 'Condition',
      subject: subject('Patient/p1'),
      code: { coding: [{ system: 'http://loinc.org', code: 'zz-hidden-cond' }] },
    });
    // The hidden record holding every caller's hidden values, and one that shares a value with hosp-b's record.
    const hiddenValues = CALLERS.flatMap((c) => WRITE_CHECKS.map((check) => hiddenValue(c, check)));
    await put(tokens.sysA, 'Observation/obs3', obs('Patient/p3', [...hiddenValues, 'zz-shared']));
    // hosp-b's records of p1: one sharing a value with the hidden obs3, one alone with its value.
    await put(tokens.sysB, 'Observation/obsB1', obs('Patient/p1', ['zz-shared']));
    await put(tokens.sysB, 'Observation/obsB2', obs('Patient/p1', ['zz-b-only']));

    const c1 = await h.request(
      tokens.patient1,
      'POST',
      '/Consent',
      privacyConsent('Patient/p1', {
        type: 'permit',
        actor: [actor('Organization/hosp-b')],
        provision: [
          { type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Condition' }] },
        ],
      }),
    );
    expect(c1.status, c1.text).toBe(201);
    const c2 = await h.request(
      tokens.patient2,
      'POST',
      '/Consent',
      privacyConsent('Patient/p2', {
        type: 'permit',
        actor: [actor('Organization/lab-b')],
        class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }],
      }),
    );
    expect(c2.status, c2.text).toBe(201);
    // What each caller sees of the fixtures (the premise of every check below).
    const sees = async (caller: string, ref: string) =>
      (await h.request(tokens[caller], 'GET', `/${ref}`)).status;
    expect(await sees('drB', 'Patient/p1')).toBe(200);
    expect(await sees('drB', 'Condition/cond1')).toBe(404);
    expect(await sees('drB', 'Observation/obs3')).toBe(404);
    expect(await sees('drB', `Observation/${ids.obsB1}`)).toBe(200);
    expect(await sees('labB', 'Observation/obs2')).toBe(200);
    expect(await sees('labB', 'Patient/p2')).toBe(404);
    expect(await sees('labB', `Observation/${ids.obsB1}`)).toBe(404);
  });
  afterAll(async () => {
    await h?.stop();
  });

  /** Runs `send` with the hidden value and with the absent one; the masked answers must be equal. */
  async function same(
    hidden: string,
    absent: string,
    send: (value: string) => Promise<{ status: number; headers: Record<string, unknown>; text: string }>,
  ): Promise<Answer> {
    const withHidden = masked(await send(hidden), [hidden, absent]);
    const withNothing = masked(await send(absent), [hidden, absent]);
    expect(withHidden, `${hidden} vs ${absent}`).toEqual(withNothing);
    return withHidden;
  }

  const observation = (value: string, patient = 'Patient/p1') => ({
    resourceType: 'Observation',
    status: 'final',
    code,
    subject: subject(patient),
    identifier: [{ system: 'urn:test', value }],
  });

  for (const caller of CALLERS) {
    describe(caller, () => {
      const token = () => tokens[caller as CallerName];

      it('conditional create (If-None-Exist) matching only hidden records creates, as when nothing matches', async () => {
        const answer = await same(hiddenValue(caller, 'create'), absentValue(caller, 'create'), (value) =>
          h.request(token(), 'POST', '/Observation', observation(value), {
            'if-none-exist': `identifier=urn:test|${value}`,
          }),
        );
        expect(answer.status, answer.body).toBe(201);
      });

      it('batch: conditional create, conditional update and conditional delete treat hidden matches as absent', async () => {
        const bundleFor = (check: string) => (value: string) =>
          h.request(token(), 'POST', '', {
            resourceType: 'Bundle',
            type: 'batch',
            entry: [
              check === 'batch-create'
                ? {
                    resource: observation(value),
                    request: {
                      method: 'POST',
                      url: 'Observation',
                      ifNoneExist: `identifier=urn:test|${value}`,
                    },
                  }
                : check === 'batch-update'
                  ? {
                      resource: observation(value),
                      request: { method: 'PUT', url: `Observation?identifier=urn:test|${value}` },
                    }
                  : { request: { method: 'DELETE', url: `Observation?identifier=urn:test|${value}` } },
            ],
          });
        for (const check of ['batch-create', 'batch-update', 'batch-delete']) {
          const answer = await same(hiddenValue(caller, check), absentValue(caller, check), bundleFor(check));
          expect(answer.status, answer.body).toBe(200);
          expect(answer.body).toMatch(check === 'batch-delete' ? /"status":"204/ : /"status":"201/);
        }
        // The hidden record was neither updated nor deleted.
        const obs3 = await h.request(tokens.sysA, 'GET', '/Observation/obs3');
        expect(obs3.status).toBe(200);
        expect(obs3.body.meta.versionId).toBe('1');
      });

      it('transaction: conditional create and conditional update treat hidden matches as absent', async () => {
        const transactionFor = (check: string) => (value: string) =>
          h.request(token(), 'POST', '', {
            resourceType: 'Bundle',
            type: 'transaction',
            entry: [
              check === 'tx-create'
                ? {
                    resource: observation(value),
                    request: {
                      method: 'POST',
                      url: 'Observation',
                      ifNoneExist: `identifier=urn:test|${value}`,
                    },
                  }
                : {
                    resource: observation(value),
                    request: { method: 'PUT', url: `Observation?identifier=urn:test|${value}` },
                  },
            ],
          });
        for (const check of ['tx-create', 'tx-update']) {
          const answer = await same(
            hiddenValue(caller, check),
            absentValue(caller, check),
            transactionFor(check),
          );
          expect(answer.status, answer.body).toBe(200);
          expect(answer.body).toMatch(/"status":"201/);
        }
      });

      it('PATCH, DELETE and PUT [type]?criteria over plain HTTP treat hidden matches as absent', async () => {
        const hidden = hiddenValue(caller, 'http-conditional');
        const absent = absentValue(caller, 'http-conditional');
        const url = (value: string) => `/Observation?identifier=urn:test|${value}`;
        const patched = await same(hidden, absent, (value) =>
          h.request(token(), 'PATCH', url(value), [{ op: 'add', path: '/status', value: 'amended' }], {
            'content-type': 'application/json-patch+json',
          }),
        );
        expect(patched.status, patched.body).toBe(404);
        const deleted = await same(hidden, absent, (value) => h.request(token(), 'DELETE', url(value)));
        expect(deleted.status, deleted.body).toBe(200);
        // Last: it creates a record of the caller's own holding the value (a duplicate beside the hidden one).
        const updated = await same(hidden, absent, (value) =>
          h.request(token(), 'PUT', url(value), observation(value)),
        );
        expect(updated.status, updated.body).toBe(201);
        const obs3 = await h.request(tokens.sysA, 'GET', '/Observation/obs3');
        expect(obs3.body.meta.versionId).toBe('1');
      });

      it('a conditional reference matching only a hidden record answers as one matching nothing', async () => {
        for (const type of ['transaction', 'batch']) {
          const answer = await same('zz-hidden-patient', 'zz-absent-patient', (value) =>
            h.request(token(), 'POST', '', {
              resourceType: 'Bundle',
              type,
              entry: [
                {
                  resource: {
                    ...observation('zz-conditional-reference'),
                    subject: subject(`Patient?identifier=urn:test|${value}`),
                  },
                  request: { method: 'POST', url: 'Observation' },
                },
              ],
            }),
          );
          expect(answer.status, answer.body).toBe(type === 'batch' ? 200 : 400);
          expect(answer.body).toContain('conditional-reference-no-match');
        }
      });

      it('"multiple matches" counts only visible matches (412 never because of a hidden record)', async () => {
        // zz-shared: hosp-b's obsB1 and hosp-a's hidden obs3; zz-b-only: obsB2 alone.
        const visibleToCaller = caller !== 'labB';
        for (const [value, id] of [
          ['zz-shared', 'obsB1'],
          ['zz-b-only', 'obsB2'],
        ]) {
          // lab-b's records of p2 stay hidden from hosp-b (p2 granted only lab-b).
          const patient = visibleToCaller ? 'Patient/p1' : 'Patient/p2';
          const res = await h.request(token(), 'POST', '/Observation', observation(value, patient), {
            'if-none-exist': `identifier=urn:test|${value}`,
          });
          if (visibleToCaller) {
            expect(res.status, res.text).toBe(200);
            expect(res.body.id).toBe(ids[id]);
          } else expect(res.status, res.text).toBe(201);
        }
        if (visibleToCaller) {
          const batch = await h.request(token(), 'POST', '', {
            resourceType: 'Bundle',
            type: 'batch',
            entry: [
              {
                resource: { ...observation('zz-shared'), status: 'amended' },
                request: { method: 'PUT', url: 'Observation?identifier=urn:test|zz-shared' },
              },
            ],
          });
          expect(batch.status).toBe(200);
          expect(batch.body.entry[0].response.status, batch.text).toMatch(/^200/);
          expect(batch.body.entry[0].response.location).toMatch(
            new RegExp(`^Observation/${ids.obsB1}/_history/\\d+$`),
          );
        }
      });

      it('search: _has and chains through hidden records answer as when nothing matches (entries and totals)', async () => {
        const searches: [string, string, (v: string) => string][] = [
          // _has through a Condition the grant denies (its Patient is visible to drB and sysB).
          ['zz-hidden-cond', 'zz-absent-cond', (v) => `/Patient?_has:Condition:subject:code=${v}`],
          // chains through a Patient nobody granted, and through one whose Observations only were granted (lab-b).
          ['zz-hidden-patient', 'zz-absent-patient', (v) => `/Observation?subject:Patient.identifier=${v}`],
          ['other', 'unknown', (v) => `/Observation?subject:Patient.gender=${v}`],
          ['male', 'unknown', (v) => `/Observation?subject:Patient.gender=${v}`],
          ['female', 'unknown', (v) => `/Condition?subject:Patient.gender=${v}`],
          // a chain whose target is visible but the outer record is not
          ['zz-hidden-patient', 'zz-absent-patient', (v) => `/Observation?patient.identifier=${v}`],
        ];
        for (const [hidden, absent, url] of searches) {
          for (const extra of ['&_total=accurate', '&_summary=count', '&_count=0']) {
            const answer = await same(hidden, absent, (v) => h.request(token(), 'GET', `${url(v)}${extra}`));
            expect(answer.status, `${caller} ${url(hidden)}: ${answer.body}`).toBe(200);
          }
        }
        // What the caller may see still counts (the premise: the checks above are not vacuous).
        if (caller !== 'labB') {
          const has = await h.request(
            token(),
            'GET',
            '/Patient?_has:Observation:subject:identifier=zz-b-only',
          );
          expect(has.body.entry?.map((e: { resource: { id: string } }) => e.resource.id)).toEqual(['p1']);
          const chain = await h.request(
            token(),
            'GET',
            '/Observation?subject:Patient.gender=female&_total=accurate',
          );
          expect(chain.body.total).toBeGreaterThan(0);
        } else {
          const ofHiddenPatient = await h.request(token(), 'GET', '/Observation?subject=Patient/p2');
          expect(
            ofHiddenPatient.body.entry?.map((e: { resource: { id: string } }) => e.resource.id),
          ).toContain('obs2');
        }
      });
    });
  }
});
