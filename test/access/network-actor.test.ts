/**
 * `GET [base]/$network-actor`: the handle `<member>|<pseudonym>` a clinician gives a patient, and what a Consent
 * naming a handle opens here: nothing local (a grant by handle opens network requests only), whatever member it
 * names; a grant by reference still does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, privacyConsent, startHarness, type Harness } from './app-harness.js';
import { bootApp } from '../support/app-harness.js';
import { expectErrorCode } from '../support/error-codes.js';
import { NETWORK_PARTICIPANT_SYSTEM } from '../../src/consent/consent-resource.js';

interface Parameter {
  name: string;
  valueString?: string;
}

function parametersOf(body: unknown): Record<string, string | undefined> {
  const parameter = (body as { parameter: Parameter[] }).parameter;
  return Object.fromEntries(parameter.map((p) => [p.name, p.valueString]));
}

const networkActor = (handle: string) => ({
  role: actor('Organization/x').role,
  reference: { identifier: { system: NETWORK_PARTICIPANT_SYSTEM, value: handle } },
});

describe('$network-actor', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('na-sys-a', 'system', 'Organization/hosp-a');
    tokens.drB = await h.enrol('na-dr-b', 'clinician', 'Practitioner/na-dr-b', 'Organization/hosp-b');
    tokens.patient = await h.enrol('na-patient-1', 'patient', 'Patient/na1');
    tokens.admin = await h.enrol('na-admin', 'admin');
    expect(
      (await h.request(tokens.sysA, 'PUT', '/Patient/na1', { resourceType: 'Patient', id: 'na1' })).status,
    ).toBe(201);
    const observation = {
      resourceType: 'Observation',
      id: 'na-o1',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/na1' },
    };
    expect((await h.request(tokens.sysA, 'PUT', '/Observation/na-o1', observation)).status).toBe(201);
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('answers every participant its member, its pseudonym and the handle; no token: 401', async () => {
    for (const [name, clientId] of [
      ['drB', 'na-dr-b'],
      ['sysA', 'na-sys-a'],
      ['patient', 'na-patient-1'],
      ['admin', 'na-admin'],
    ] as const) {
      const res = await h.request(tokens[name], 'GET', '/$network-actor');
      expect(res.status, res.text).toBe(200);
      expect(res.headers['cache-control']).toBe('no-store');
      const pseudonym = h.participants.get(clientId)!.pseudonym;
      expect(parametersOf(res.body)).toEqual({
        member: 'Org1MSP',
        actor: pseudonym,
        handle: `Org1MSP|${pseudonym}`,
      });
    }
    const anonymous = await h.request(undefined, 'GET', '/$network-actor');
    expect(anonymous.status).toBe(401);
    expectErrorCode(anonymous.text, 'authentication-required');
  });

  it('answers POST (a Parameters body) as GET: it affects no state', async () => {
    const get = await h.request(tokens.drB, 'GET', '/$network-actor');
    const post = await h.request(tokens.drB, 'POST', '/$network-actor', {
      resourceType: 'Parameters',
    });
    expect(post.status, post.text).toBe(200);
    expect(parametersOf(post.body)).toEqual(parametersOf(get.body));
  });

  it('every operation served by GET (affects no state) is served by POST too, as operations.html says', () => {
    const getOnly = h.app.registry
      .operations()
      .filter((op) => (op.methods ?? ['GET', 'POST']).includes('GET'))
      .filter((op) => !(op.methods ?? ['GET', 'POST']).includes('POST'))
      .map((op) => op.name);
    expect(getOnly).toEqual([]);
    // And those whose own definition says it: affectsState false means GET and POST.
    for (const op of h.app.registry.operations())
      if (
        op.definitionResource &&
        (op.definitionResource as { affectsState?: boolean }).affectsState === false
      )
        expect(op.methods ?? ['GET', 'POST'], op.name).toEqual(expect.arrayContaining(['GET', 'POST']));
    expect(h.app.registry.operations().map((op) => op.name)).toEqual(
      expect.arrayContaining(['verify', 'network-actor', 'access-log', 'meta', 'validate', 'everything']),
    );
  });

  it('a Consent naming the handle opens no read here, at this member or another; a reference does', async () => {
    const { handle, actor: pseudonym } = parametersOf(
      (await h.request(tokens.drB, 'GET', '/$network-actor')).body,
    );
    const elsewhere = await h.request(
      tokens.patient,
      'POST',
      '/Consent',
      privacyConsent('Patient/na1', { type: 'permit', actor: [networkActor(`Org2MSP|${pseudonym}`)] }),
    );
    expect(elsewhere.status, elsewhere.text).toBe(201);
    const hidden = await h.request(tokens.drB, 'GET', '/Observation/na-o1');
    expect(hidden.status).toBe(404);
    expectErrorCode(hidden.text, 'resource-not-found');
    const search = await h.request(tokens.drB, 'GET', '/Observation?subject=Patient/na1');
    expect((search.body as { total?: number }).total ?? 0).toBe(0);

    const here = await h.request(
      tokens.patient,
      'POST',
      '/Consent',
      privacyConsent('Patient/na1', { type: 'permit', actor: [networkActor(handle!)] }),
    );
    expect(here.status, here.text).toBe(201);
    expect((await h.request(tokens.drB, 'GET', '/Observation/na-o1')).status).toBe(404);
    // The same clinician granted by reference reads.
    const byReference = await h.request(
      tokens.patient,
      'POST',
      '/Consent',
      privacyConsent('Patient/na1', { type: 'permit', actor: [actor('Practitioner/na-dr-b')] }),
    );
    expect(byReference.status, byReference.text).toBe(201);
    expect((await h.request(tokens.drB, 'GET', '/Observation/na-o1')).status).toBe(200);
  });
});

describe('$network-actor without a participant', () => {
  it('dev-open: refused (no pseudonym to name)', async () => {
    const booted = await bootApp({ logLevel: 'warn', auth: 'dev-open' }, {}, 'hie-network-actor-');
    try {
      const res = await booted.app.fastify.inject({ method: 'GET', url: '/fhir/$network-actor' });
      expectErrorCode({ statusCode: res.statusCode, body: res.body }, 'access-denied');
    } finally {
      await booted.stop();
    }
  });
});
