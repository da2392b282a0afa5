/**
 * The oracle matrix, as a differential test: two services hold exactly the same records a caller may see; the
 * second also holds another patient's records (and more versions of them) that the caller may not see, written in
 * between. Every read and write path must answer each caller identically in both worlds: same status, same body,
 * same totals and page sequence, same version headers, once the instants, new ids and sealed cursors (which differ
 * between any two runs) are masked. A difference is an oracle: content, existence, count or version.
 * (Timing is measured by `npm run bench:hidden`, audit trails by test/access/audit-access.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, privacyConsent, startHarness, type Harness } from './app-harness.js';

const CALLERS = ['drB', 'labB', 'patient1'] as const;
type CallerName = (typeof CALLERS)[number];
const LOINC = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };
const observation = (id: string, patient: string, value: number, identifier: string) => ({
  resourceType: 'Observation',
  id,
  identifier: [{ system: 'urn:example:obs', value: identifier }],
  status: 'final',
  code: LOINC,
  subject: { reference: patient },
  valueQuantity: { value, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
});

interface World {
  h: Harness;
  tokens: Record<string, string>;
}

async function buildWorld(withHidden: boolean): Promise<World> {
  // No AuditEvent is stored while the test runs: how many there are depends on when the audit windows close,
  // which would differ between the worlds for reasons other than the hidden records.
  const h = await startHarness({ auditFlushMs: 3_600_000 });
  const tokens: Record<string, string> = {};
  tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
  tokens.drB = await h.enrol('dr-b-client', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
  tokens.labB = await h.enrol('lab-b', 'lab', 'Organization/lab-b');
  tokens.patient1 = await h.enrol('patient-1', 'patient', 'Patient/p1');
  const put = async (body: Record<string, unknown>) => {
    const res = await h.request(tokens.sysA, 'PUT', `/${body.resourceType}/${body.id}`, body);
    expect(res.status, res.text).toBeLessThan(300);
  };
  const hidden = async (step: number) => {
    if (!withHidden) return;
    if (step === 0) {
      await put({
        resourceType: 'Patient',
        id: 'p9',
        gender: 'female',
        identifier: [{ system: 'urn:example:mrn', value: 'MRN-9' }],
      });
      await put(observation('o9', 'Patient/p9', 7, 'obs-9'));
    } else if (step === 1) {
      await put(observation('o9', 'Patient/p9', 8, 'obs-9'));
      await put({ resourceType: 'Condition', id: 'c9', subject: { reference: 'Patient/p9' }, code: LOINC });
    } else {
      await put(observation('o9', 'Patient/p9', 9, 'obs-9'));
      await put({
        resourceType: 'Patient',
        id: 'p9',
        gender: 'female',
        active: true,
        identifier: [{ system: 'urn:example:mrn', value: 'MRN-9' }],
      });
    }
  };
  await hidden(0);
  await put({ resourceType: 'Patient', id: 'p1', gender: 'male' });
  await put(observation('o1', 'Patient/p1', 5, 'obs-1'));
  await hidden(1);
  await put({ resourceType: 'Condition', id: 'c1', subject: { reference: 'Patient/p1' }, code: LOINC });
  await put(observation('o1', 'Patient/p1', 6, 'obs-1'));
  const grant = await h.request(
    tokens.patient1,
    'POST',
    '/Consent',
    privacyConsent('Patient/p1', {
      type: 'permit',
      actor: [actor('Organization/hosp-b')],
      class: [
        { system: 'http://hl7.org/fhir/resource-types', code: 'Patient' },
        { system: 'http://hl7.org/fhir/resource-types', code: 'Observation' },
      ],
    }),
  );
  expect(grant.status, grant.text).toBe(201);
  await hidden(2);
  return { h, tokens };
}

/** What differs between any two runs by construction: instants, new ids, sealed cursors and paging tokens. */
function mask(text: string): string {
  return text
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, 'UUID')
    .replace(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})/g, 'INSTANT')
    .replace(/[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT/g, 'HTTP-DATE')
    .replace(/([?&][A-Za-z_:.-]+=)[A-Za-z0-9_~.%-]{20,}/g, '$1TOKEN')
    .replace(/"transaction","valueString":"[0-9a-f]{64}"/g, '"transaction","valueString":"TX"');
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

async function ask(
  world: World,
  caller: CallerName,
  method: string,
  url: string,
  body?: unknown,
  headers?: Record<string, string>,
): Promise<Answer> {
  const res = await world.h.request(world.tokens[caller], method, url, body, headers);
  const shown: Record<string, string> = {};
  for (const name of ['content-type', 'etag', 'location', 'last-modified', 'content-location', 'retry-after'])
    if (res.headers[name] !== undefined) shown[name] = mask(String(res.headers[name]));
  return { status: res.status, headers: shown, body: mask(res.text) };
}

/** A search or history and every page after it (`next` links followed, at most 20 pages). */
async function pages(world: World, caller: CallerName, url: string): Promise<Answer[]> {
  const answers: Answer[] = [];
  let next: string | undefined = url;
  while (next && answers.length < 20) {
    const res = await world.h.request(world.tokens[caller], 'GET', next);
    answers.push({ status: res.status, headers: {}, body: mask(res.text) });
    const link = (res.body?.link ?? []).find((l: { relation: string }) => l.relation === 'next');
    next = link ? String(link.url).replace(/^https?:\/\/[^/]+\/fhir/, '') : undefined;
  }
  return answers;
}

const READS = [
  '/Patient/p9',
  '/Patient/p9/_history/1',
  '/Patient/p9/_history/2',
  '/Patient/p9/_history',
  '/Observation/o9',
  '/Observation/o9/_history/3',
  '/Observation/o9/_history/4',
  '/Observation/o9/_history',
  '/Observation/o9/$verify',
  '/Observation/o9/_history/2/$verify',
  '/Condition/c9',
  '/Patient/p9/$everything',
  '/Patient/p9/$access-log',
  '/Observation?_total=accurate',
  '/Observation?_summary=count',
  '/Observation?_count=0&_total=accurate',
  '/Observation?code=http://loinc.org|2339-0&_total=accurate',
  '/Observation?subject=Patient/p9&_total=accurate',
  '/Observation?identifier=obs-9',
  '/Observation?value-quantity=gt6&_total=accurate',
  '/Observation?subject:Patient.gender=female&_total=accurate',
  '/Observation?subject:Patient.identifier=MRN-9',
  '/Patient?_has:Observation:subject:code=2339-0&_total=accurate',
  '/Patient?_has:Observation:subject:value-quantity=gt6',
  '/Patient?identifier=MRN-9',
  '/Patient?gender=female&_total=accurate',
  '/Patient?_total=accurate',
  '/Observation?_include=Observation:subject&_total=accurate',
  '/Patient?_revinclude=Observation:subject&_total=accurate',
  '/Condition?_total=accurate',
  '/Observation/_history?_count=0',
  '/Patient/_history',
  '/_history?_count=0',
  '/?_type=Observation,Patient&_total=accurate',
  '/Patient/p1/$everything',
];

const PAGED = [
  '/Observation?_count=1',
  '/Patient?_count=1&_sort=-_lastUpdated',
  '/Observation/_history?_count=1',
  '/_history?_count=2',
  '/Patient/_history?_count=1',
];

describe('oracle matrix: hidden records change no answer (differential, two worlds)', () => {
  let without: World;
  let withHidden: World;

  beforeAll(async () => {
    without = await buildWorld(false);
    withHidden = await buildWorld(true);
  });
  afterAll(async () => {
    await without?.h.stop();
    await withHidden?.h.stop();
  });

  for (const caller of CALLERS) {
    describe(caller, () => {
      it('reads, searches, history and operations: the same answers', async () => {
        for (const url of READS) {
          const a = await ask(without, caller, 'GET', url);
          const b = await ask(withHidden, caller, 'GET', url);
          expect(b, `${caller} GET ${url}`).toEqual(a);
          expect(a.status, `${caller} GET ${url}`).toBeLessThan(500);
        }
      });

      it('paging: the same pages, totals and links', async () => {
        for (const url of PAGED) {
          const a = await pages(without, caller, url);
          const b = await pages(withHidden, caller, url);
          expect(b, `${caller} GET ${url}`).toEqual(a);
        }
      });

      it('writes to what the caller cannot see: the same answers, nothing changed', async () => {
        const writes: [string, string, unknown?, Record<string, string>?][] = [
          ['PUT', '/Observation/o9', observation('o9', 'Patient/p9', 1, 'obs-9'), { 'if-match': 'W/"3"' }],
          ['PUT', '/Observation/o9', observation('o9', 'Patient/p9', 1, 'obs-9'), { 'if-match': 'W/"1"' }],
          ['PUT', '/Observation/o9', observation('o9', 'Patient/p9', 1, 'obs-9')],
          ['PUT', '/Patient/p9', { resourceType: 'Patient', id: 'p9' }],
          [
            'PATCH',
            '/Observation/o9',
            [{ op: 'replace', path: '/status', value: 'amended' }],
            { 'content-type': 'application/json-patch+json' },
          ],
          ['DELETE', '/Observation/o9', undefined, { 'if-match': 'W/"3"' }],
          ['DELETE', '/Condition/c9'],
          [
            'POST',
            '/Observation',
            observation('new', 'Patient/p1', 1, 'obs-9'),
            { 'if-none-exist': 'identifier=urn:example:obs|obs-9' },
          ],
          [
            'POST',
            '/',
            {
              resourceType: 'Bundle',
              type: 'batch',
              entry: [
                { request: { method: 'GET', url: 'Observation/o9' } },
                { request: { method: 'GET', url: 'Observation/o9/_history/2' } },
                { request: { method: 'GET', url: 'Observation?identifier=obs-9' } },
                {
                  resource: observation('o9', 'Patient/p9', 2, 'obs-9'),
                  request: { method: 'PUT', url: 'Observation/o9', ifMatch: 'W/"3"' },
                },
                { request: { method: 'DELETE', url: 'Observation/o9', ifMatch: 'W/"3"' } },
              ],
            },
          ],
        ];
        for (const [method, url, body, headers] of writes) {
          const hdrs = { ...(headers ?? {}) };
          let payload = body;
          if (hdrs['content-type'] === 'application/json-patch+json') {
            // The harness sends FHIR JSON; a JSON Patch goes through fastify's inject directly.
            const send = async (world: World): Promise<Answer> => {
              const res = await world.h.app.fastify.inject({
                method: 'PATCH',
                url: `/fhir${url}`,
                headers: { authorization: `Bearer ${world.tokens[caller]}`, ...hdrs },
                payload: JSON.stringify(body),
              });
              return { status: res.statusCode, headers: {}, body: mask(res.body) };
            };
            expect(await send(withHidden), `${caller} PATCH ${url}`).toEqual(await send(without));
            continue;
          }
          if (url === '/Observation' && caller === 'patient1') payload = body; // refused alike (scopes)
          const a = await ask(without, caller, method, url, payload, hdrs);
          const b = await ask(withHidden, caller, method, url, payload, hdrs);
          expect(b, `${caller} ${method} ${url}`).toEqual(a);
          expect(a.status, `${caller} ${method} ${url}`).toBeLessThan(500);
        }
        // Nothing of the hidden records changed.
        const o9 = await withHidden.h.app.store.read('Observation', 'o9');
        expect(o9?.versionId).toBe(3);
        expect(o9?.deleted).toBeFalsy();
        expect((await withHidden.h.app.store.read('Patient', 'p9'))?.versionId).toBe(2);
        expect((await withHidden.h.app.store.read('Condition', 'c9'))?.deleted).toBeFalsy();
      });
    });
  }
});
