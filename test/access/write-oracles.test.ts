/**
 * Writes are no oracle (docs/access.md "Writes: exact answers"): every cell of absent / hidden / visible x no
 * If-Match / wrong version / right version, for PUT, PATCH and DELETE, alone and as batch and transaction entries,
 * over the real app with two organisations. Hidden and absent answers are compared byte for byte (status, body,
 * header names and values) with only the id swapped; ids of the same length keep Content-Length equal too.
 * Only this service's organisation (hosp-a) chooses ids: a system of hosp-b cannot squat one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccessControl } from '../../src/access/caller-access-policy.js';
import { patientCompartmentTypes } from '../../src/access/setup.js';
import type { Caller } from '../../src/fhir/interactions/access-policy.js';
import { ERROR_CODE_SYSTEM, FhirError, type ErrorCode } from '../../src/fhir/outcome.js';
import { actor, privacyConsent, startHarness, type Harness } from './app-harness.js';
import { expectErrorCode } from '../support/error-codes.js';

const HIDDEN = 'hid-0001'; // hosp-a's Observation of p1: hosp-b has no grant
const ABSENT = 'abs-0001'; // never used
const REQUEST_ID = 'write-oracle-test';
const code = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };

type Precondition = 'none' | 'wrong' | 'right';
type Method = 'PUT' | 'PATCH' | 'DELETE';
type Mode = 'direct' | 'batch' | 'transaction';

interface Answer {
  status: number;
  /** The body as text, with the target's id replaced by `{id}`, and a batch/transaction's own id and instant. */
  text: string;
  headers: Record<string, unknown>;
}

/** The catalogue code of a refusal, as every issue of it carries it (docs/errors.md). */
const coded = (code: ErrorCode) => ({ coding: [{ system: ERROR_CODE_SYSTEM, code }] });
const notKnown = (id: string) =>
  JSON.stringify({
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'error',
        code: 'not-found',
        diagnostics: `Observation/${id} is not known`,
        details: coded('resource-not-found'),
      },
    ],
  });
const ifMatchNotKnown = (tag: string, id: string) =>
  JSON.stringify({
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'error',
        code: 'conflict',
        diagnostics: `If-Match ${tag} does not match: Observation/${id} is not known`,
        details: coded('version-conflict'),
      },
    ],
  });
const notThere = (id: string) =>
  JSON.stringify({
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'information',
        code: 'informational',
        diagnostics: `Observation/${id} is not there: nothing to delete`,
      },
    ],
  });

describe('writes to absent, hidden and visible ids (two organisations)', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};
  /** Observation of p2 held by hosp-a, granted to hosp-b: visible to hosp-b's callers, not writable by them. */
  let grantedId: string;

  const observation = (id: string | undefined, subject: string, value: string) => ({
    resourceType: 'Observation',
    ...(id ? { id } : {}),
    status: 'final',
    code,
    subject: { reference: subject },
    valueString: value,
  });

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    tokens.sysB = await h.enrol('sys-b', 'system', 'Organization/hosp-b');
    tokens.drB = await h.enrol('dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    tokens.patient2 = await h.enrol('patient-2', 'patient', 'Patient/p2');
    for (const p of ['p1', 'p2'])
      expect(
        (await h.request(tokens.sysA, 'PUT', `/Patient/${p}`, { resourceType: 'Patient', id: p })).status,
      ).toBe(201);
    const hidden = await h.request(
      tokens.sysA,
      'PUT',
      `/Observation/${HIDDEN}`,
      observation(HIDDEN, 'Patient/p1', 'a'),
    );
    expect(hidden.status, hidden.text).toBe(201);
    const granted = await h.request(
      tokens.sysA,
      'POST',
      '/Observation',
      observation(undefined, 'Patient/p2', 'g'),
    );
    expect(granted.status, granted.text).toBe(201);
    grantedId = granted.body.id;
    const consent = await h.request(
      tokens.patient2,
      'POST',
      '/Consent',
      privacyConsent('Patient/p2', { type: 'permit', actor: [actor('Organization/hosp-b')] }),
    );
    expect(consent.status, consent.text).toBe(201);
    expect((await h.request(tokens.drB, 'GET', `/Observation/${grantedId}`)).status).toBe(200);
  });
  afterAll(async () => {
    await h?.stop();
  });

  /** A fresh Observation written by hosp-b (its custodian): visible and writable for hosp-b's callers. */
  async function visibleTarget(): Promise<{ id: string; version: number }> {
    const res = await h.request(
      tokens.drB,
      'POST',
      '/Observation',
      observation(undefined, 'Patient/p1', 'v'),
    );
    expect(res.status, res.text).toBe(201);
    return { id: res.body.id, version: 1 };
  }

  let edits = 0;
  /** Sends one cell's request; answers normalised so that two ids' answers can be compared as text. */
  async function send(
    caller: string,
    method: Method,
    id: string,
    ifMatch: string | undefined,
    mode: Mode,
  ): Promise<Answer> {
    edits++;
    const body =
      method === 'PUT'
        ? observation(id, 'Patient/p1', `edit ${edits}`)
        : method === 'PATCH'
          ? [{ op: 'add', path: '/valueString', value: `edit ${edits}` }]
          : undefined;
    const normalise = (text: string) => text.split(id).join('{id}');
    if (mode === 'direct') {
      const headers: Record<string, string> = { 'x-request-id': REQUEST_ID };
      if (ifMatch) headers['if-match'] = ifMatch;
      if (method === 'PATCH') headers['content-type'] = 'application/json-patch+json';
      const res = await h.request(tokens[caller], method, `/Observation/${id}`, body, headers);
      const { date: _date, ...rest } = res.headers;
      return { status: res.status, text: normalise(res.text), headers: rest };
    }
    const entry: Record<string, unknown> = {
      request: { method, url: `Observation/${id}`, ...(ifMatch ? { ifMatch } : {}) },
    };
    if (method === 'PUT') entry.resource = body;
    if (method === 'PATCH')
      entry.resource = {
        resourceType: 'Binary',
        contentType: 'application/json-patch+json',
        data: Buffer.from(JSON.stringify(body)).toString('base64'),
      };
    const res = await h.request(
      tokens[caller],
      'POST',
      '',
      { resourceType: 'Bundle', type: mode, entry: [entry] },
      { 'x-request-id': REQUEST_ID },
    );
    const { date: _date, 'content-length': _length, ...rest } = res.headers;
    let text = res.text;
    if (res.status === 200) {
      // The response Bundle's own id and instant differ per request; the entry is what is compared.
      expect(res.body.type).toBe(`${mode}-response`);
      text = JSON.stringify(res.body.entry[0]);
    }
    return { status: res.status, text: normalise(text), headers: rest };
  }

  const tag = (version: number) => `W/"${version}"`;

  for (const caller of ['drB', 'sysB']) {
    for (const mode of ['direct', 'batch', 'transaction'] as Mode[]) {
      for (const method of ['PUT', 'PATCH', 'DELETE'] as Method[]) {
        it(`${caller} ${method} (${mode}): hidden answers exactly as absent; visible as the table says`, async () => {
          for (const precondition of ['none', 'wrong', 'right'] as Precondition[]) {
            // The "right" version of a hidden id is its real current version; of an absent id, version 1.
            const ifMatch = precondition === 'none' ? undefined : precondition === 'wrong' ? tag(7) : tag(1);
            const absent = await send(caller, method, ABSENT, ifMatch, mode);
            const hidden = await send(caller, method, HIDDEN, ifMatch, mode);
            const where = `${caller} ${method} ${mode} If-Match ${precondition}`;
            expect(hidden, where).toEqual(absent);

            // The exact answer for both (docs/access.md).
            const expected =
              method === 'DELETE'
                ? precondition === 'none'
                  ? { status: 200, body: notThere('{id}') }
                  : { status: 412, body: ifMatchNotKnown(ifMatch!, '{id}') }
                : { status: 404, body: notKnown('{id}') };
            if (mode === 'direct') {
              expect(absent.status, where).toBe(expected.status);
              expect(absent.text, where).toBe(expected.body);
              for (const header of ['etag', 'last-modified', 'location'])
                expect(absent.headers[header], `${where} ${header}`).toBeUndefined();
            } else if (mode === 'batch') {
              expect(absent.status, where).toBe(200);
              const { response } = JSON.parse(absent.text);
              expect(response.status.slice(0, 3), where).toBe(String(expected.status));
              if (expected.status !== 200)
                expect(JSON.stringify(response.outcome), where).toBe(expected.body);
              expect(response.etag, where).toBeUndefined();
            } else {
              const whole = JSON.parse(absent.text);
              if (expected.status === 200) {
                expect(absent.status, where).toBe(200);
                expect(whole.response.status.slice(0, 3), where).toBe('200');
                expect(whole.response.etag, where).toBeUndefined();
              } else {
                expect(absent.status, where).toBe(expected.status);
                const issue = JSON.parse(expected.body).issue[0];
                expect(whole.issue, where).toEqual([
                  {
                    ...issue,
                    diagnostics: `Bundle.entry[0]: ${issue.diagnostics}`,
                    expression: ['Bundle.entry[0]'],
                  },
                ]);
              }
            }

            // Visible (hosp-b's own record): the interaction as usual.
            const visible = await visibleTarget();
            const visibleTag =
              precondition === 'none' ? undefined : precondition === 'wrong' ? tag(7) : tag(visible.version);
            const answer = await send(caller, method, visible.id, visibleTag, mode);
            // A batch answers 200 with the entry's status; a transaction too, unless the entry failed.
            const status =
              mode === 'direct' || answer.status !== 200
                ? answer.status
                : Number(JSON.parse(answer.text).response.status.slice(0, 3));
            if (precondition === 'wrong') {
              expect(status, `${where} visible`).toBe(412);
              expect(answer.text, `${where} visible`).toContain(
                `If-Match W/\\"7\\" does not match: the current version is 1`,
              );
            } else {
              expect(status, `${where} visible: ${answer.text}`).toBe(200);
            }
          }
          // Nothing was written to the hidden record, nothing created at the absent id.
          const current = await h.request(tokens.sysA, 'GET', `/Observation/${HIDDEN}`);
          expect(current.status).toBe(200);
          expect(current.body.meta.versionId).toBe('1');
          expect((await h.request(tokens.sysA, 'GET', `/Observation/${ABSENT}`)).status).toBe(404);
          expect((await h.request(tokens.sysA, 'GET', `/Observation/${ABSENT}/_history`)).status).toBe(404);
        });
      }
    }

    it(`${caller}: a visible record it may not write is 403 whatever If-Match says (before any precondition)`, async () => {
      for (const method of ['PUT', 'PATCH', 'DELETE'] as Method[])
        for (const ifMatch of [undefined, tag(7), tag(1)]) {
          const res = await send(caller, method, grantedId, ifMatch, 'direct');
          expect(res.status, `${method} ${ifMatch}`).toBe(403);
          expect(res.text).toBe(
            JSON.stringify({
              resourceType: 'OperationOutcome',
              issue: [
                {
                  severity: 'error',
                  code: 'forbidden',
                  diagnostics: 'You may not write Observation/{id}',
                  details: coded('access-denied'),
                },
              ],
            }),
          );
        }
    });
  }

  it('a deletion the caller can see: PUT 404 for a clinician, PATCH 410, DELETE 200 with its ETag or 412 with If-Match', async () => {
    const { id } = await visibleTarget();
    expect((await send('drB', 'DELETE', id, undefined, 'direct')).status).toBe(200);
    for (const ifMatch of [undefined, tag(7), tag(2)]) {
      const put = await send('drB', 'PUT', id, ifMatch, 'direct');
      expect(put.status, `PUT ${ifMatch}`).toBe(404);
      expect(put.text).toBe(notKnown('{id}'));
      const patch = await send('drB', 'PATCH', id, ifMatch, 'direct');
      expect(patch.status, `PATCH ${ifMatch}`).toBe(410);
      const del = await send('drB', 'DELETE', id, ifMatch, 'direct');
      if (ifMatch === undefined) {
        expect(del.status).toBe(200);
        expect(del.headers.etag).toBe('W/"2"');
        expect(del.text).toBe(notThere('{id}'));
      } else {
        expect(del.status).toBe(412);
        expectErrorCode(del.text, 'version-conflict');
      }
    }
    // A system of its custodian may revive it.
    const revived = await send('sysB', 'PUT', id, undefined, 'direct');
    expect(revived.status).toBe(201);
    expect(revived.headers.etag).toBe('W/"3"');
  });

  it('an admin without a recorded reason gets the same 403 for a hidden clinical id as for an unused one', async () => {
    tokens.admin ??= await h.enrol('admin-1', 'admin');
    const hidden = await send('admin', 'PUT', HIDDEN, undefined, 'direct');
    const absent = await send('admin', 'PUT', ABSENT, undefined, 'direct');
    expect(hidden).toEqual(absent);
    expect(absent.status).toBe(403);
    expect((await h.request(tokens.sysA, 'GET', `/Observation/${ABSENT}`)).status).toBe(404);
  });

  it("this service's own system creates with a chosen id; If-Match on an unused id is 412; a hidden id is 404 and stays untouched", async () => {
    const hiddenFromA = (await visibleTarget()).id; // hosp-b's record: hosp-a has no grant to it
    expect((await h.request(tokens.sysA, 'GET', `/Observation/${hiddenFromA}`)).status).toBe(404);
    for (const ifMatch of [undefined, tag(7), tag(1)]) {
      const res = await send('sysA', 'PUT', hiddenFromA, ifMatch, 'direct');
      expect(res.status, `hidden ${ifMatch}`).toBe(404);
      expect(res.text).toBe(notKnown('{id}'));
    }
    expect((await h.request(tokens.drB, 'GET', `/Observation/${hiddenFromA}`)).body.meta.versionId).toBe('1');
    for (const ifMatch of [tag(7), tag(1)]) {
      const res = await send('sysA', 'PUT', 'new-0001', ifMatch, 'direct');
      expect(res.status).toBe(412);
      expect(res.text).toBe(ifMatchNotKnown(ifMatch, '{id}'));
    }
    const created = await send('sysA', 'PUT', 'new-0001', undefined, 'direct');
    expect(created.status).toBe(201);
    expect(created.headers.etag).toBe('W/"1"');
  });

  it('a system of another organisation cannot squat an unused id (Patient or Observation); the owner can still use it', async () => {
    const patient = await h.request(
      tokens.sysB,
      'PUT',
      '/Patient/squat-1',
      { resourceType: 'Patient', id: 'squat-1' },
      { 'x-request-id': REQUEST_ID },
    );
    const neverUsed = await h.request(
      tokens.sysB,
      'PUT',
      '/Patient/squat-2',
      { resourceType: 'Patient', id: 'squat-2' },
      { 'x-request-id': REQUEST_ID },
    );
    expect(patient.status).toBe(404);
    expect(patient.text).toBe(
      JSON.stringify({
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'not-found',
            diagnostics: 'Patient/squat-1 is not known',
            details: coded('resource-not-found'),
          },
        ],
      }),
    );
    expect(neverUsed.text.replace('squat-2', 'squat-1')).toBe(patient.text);
    const observation = await send('sysB', 'PUT', 'squat-3', undefined, 'direct');
    expect(observation.status).toBe(404);
    const inBatch = await send('sysB', 'PUT', 'squat-3', undefined, 'transaction');
    expect(inBatch.status).toBe(404);
    expect((await h.request(tokens.sysA, 'GET', '/Patient/squat-1')).status).toBe(404);
    expect((await h.request(tokens.sysA, 'GET', '/Observation/squat-3')).status).toBe(404);
    const owner = await h.request(tokens.sysA, 'PUT', '/Patient/squat-1', {
      resourceType: 'Patient',
      id: 'squat-1',
    });
    expect(owner.status, owner.text).toBe(201);
    expect(owner.body.meta.versionId).toBe('1');
  });
});

describe('who chooses ids (update-as-create)', () => {
  const caller = (role: Caller['role'], organization?: string): Caller => ({
    participant: `ps-${role}-${organization ?? 'none'}`,
    role,
    organization,
    scopes: ['system/*.cud', 'system/*.rs', 'user/*.cud'],
  });
  const mayCreate = (control: AccessControl, who: Caller, type = 'Patient'): boolean => {
    const policy = control.policyFor(who);
    policy.interaction = 'update';
    try {
      return policy.canWrite(type, undefined, type === 'Patient' ? ['Patient/x'] : [], 'x');
    } catch (err) {
      if (err instanceof FhirError && err.status === 404) return false;
      throw err;
    }
  };

  it("systems of this service's organisation and admins; nobody else; no system at all when no organisation is configured", () => {
    const home = new AccessControl({
      compartmentTypes: patientCompartmentTypes(),
      organization: 'Organization/hosp-a',
    });
    expect(mayCreate(home, caller('system', 'Organization/hosp-a'))).toBe(true);
    expect(mayCreate(home, caller('system', 'Organization/hosp-b'))).toBe(false);
    expect(mayCreate(home, caller('clinician', 'Organization/hosp-a'))).toBe(false);
    expect(mayCreate(home, caller('admin'), 'Organization')).toBe(true);
    expect(mayCreate(home, caller('admin', 'Organization/hosp-b'), 'Organization')).toBe(false);
    const unset = new AccessControl({ compartmentTypes: patientCompartmentTypes() });
    expect(mayCreate(unset, caller('system', 'Organization/hosp-a'))).toBe(false);
    expect(mayCreate(unset, caller('admin'), 'Organization')).toBe(true);
  });
});
