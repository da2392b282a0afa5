import { describe, expect, it } from 'vitest';
import {
  consentToGrants,
  grantAllows,
  isPrivacyConsent,
  NETWORK_PARTICIPANT_SYSTEM,
  parseNetworkHandle,
  periodInstant,
  sameGrant,
} from '../../src/consent/consent-resource.js';
import { FhirError } from '../../src/fhir/outcome.js';

const scope = {
  coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }],
};
const actor = (reference: string) => ({ role: { coding: [{ code: 'PRCP' }] }, reference: { reference } });
const networkActor = (value: unknown, extra: object = {}) => ({
  reference: { identifier: { system: NETWORK_PARTICIPANT_SYSTEM, value }, ...extra },
});
const consent = (provision: object, status = 'active') => ({
  resourceType: 'Consent',
  status,
  scope,
  patient: { reference: 'Patient/p1' },
  provision,
});

describe('FHIR Consent -> grants', () => {
  it('recognises patient-privacy Consents only', () => {
    expect(isPrivacyConsent(consent({}))).toBe(true);
    expect(isPrivacyConsent({ resourceType: 'Consent', scope: { coding: [{ code: 'research' }] } })).toBe(
      false,
    );
  });

  it('maps each actor to a grant with classes and period', () => {
    const out = consentToGrants(
      consent({
        type: 'permit',
        actor: [actor('Organization/b'), actor('Practitioner/9')],
        class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }, { code: 'Condition' }],
        period: { start: '2026-01-01', end: '2026-01-31' },
      }),
    );
    expect(out.patient).toBe('Patient/p1');
    expect(out.grants.map((g) => g.grantee)).toEqual(['Organization/b', 'Practitioner/9']);
    expect(out.grants[0].classes).toEqual(['Condition', 'Observation']);
    expect(out.grants[0].period).toEqual({
      start: '2026-01-01T00:00:00.000Z',
      end: '2026-02-01T00:00:00.000Z',
    });
  });

  it('narrows with nested deny provisions (deny wins) for their actors only', () => {
    const out = consentToGrants(
      consent({
        type: 'permit',
        actor: [actor('Organization/b'), actor('Organization/c')],
        provision: [
          { type: 'deny', actor: [actor('Organization/c')], class: [{ code: 'MedicationRequest' }] },
          { type: 'deny', period: { start: '2026-06-01T00:00:00Z', end: '2026-07-01T00:00:00Z' } },
        ],
      }),
    );
    // The rule reads a grant as the ledger records it: with its status.
    const [b, c] = out.grants.map((grant) => ({ ...grant, status: 'active' as const }));
    const may = Date.parse('2026-05-01T00:00:00Z');
    const june = Date.parse('2026-06-15T00:00:00Z');
    expect(grantAllows(b, 'MedicationRequest', may)).toBe(true);
    expect(grantAllows(c, 'MedicationRequest', may)).toBe(false);
    expect(grantAllows(c, 'Observation', may)).toBe(true);
    expect(grantAllows(b, 'Observation', june)).toBe(false);
    expect(grantAllows(b, 'Observation', Date.parse('2026-07-01T00:00:00Z'))).toBe(true);
  });

  it('maps provision.purpose (PurposeOfUse) to the purposes a grant opens; treatment when absent', () => {
    const pou = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
    const [treatment] = consentToGrants(consent({ type: 'permit', actor: [actor('Organization/b')] })).grants;
    expect(treatment.purpose).toEqual(['TREAT']);
    const [research] = consentToGrants(
      consent({
        type: 'permit',
        actor: [actor('Organization/b')],
        purpose: [
          { system: pou, code: 'HRESCH' },
          { system: pou, code: 'TREAT' },
          { system: pou, code: 'HRESCH' },
        ],
      }),
    ).grants;
    expect(research.purpose).toEqual(['HRESCH', 'TREAT']);
    const active = { ...research, status: 'active' as const };
    const at = Date.parse('2026-05-01T00:00:00Z');
    expect(grantAllows(active, 'Observation', at, 'HRESCH')).toBe(true);
    expect(grantAllows(active, 'Observation', at, 'HPAYMT')).toBe(false);
    // A purpose change is a change of the grant (an update re-grants).
    expect(sameGrant(treatment, research)).toBe(false);
  });

  it('grants nothing for inactive statuses and root deny', () => {
    for (const status of ['inactive', 'rejected', 'entered-in-error', 'draft', 'proposed']) {
      expect(
        consentToGrants(consent({ type: 'permit', actor: [actor('Organization/b')] }, status)).grants,
      ).toEqual([]);
    }
    expect(consentToGrants(consent({ type: 'deny', actor: [actor('Organization/b')] })).grants).toEqual([]);
  });

  it('refuses what it cannot enforce with 422', () => {
    const bad = [
      consent({ type: 'permit', actor: [actor('Organization/b')], provision: [{ type: 'permit' }] }),
      consent({
        type: 'permit',
        actor: [actor('Organization/b')],
        provision: [{ type: 'deny', provision: [{ type: 'deny' }] }],
      }),
      consent({
        type: 'permit',
        actor: [actor('Organization/b')],
        data: [{ meaning: 'instance', reference: { reference: 'Observation/1' } }],
      }),
      consent({
        type: 'permit',
        actor: [actor('Organization/b')],
        provision: [{ type: 'deny', securityLabel: [{ code: 'R' }] }],
      }),
      consent({ type: 'permit', actor: [actor('Patient/other')] }),
      consent({ type: 'permit' }),
      consent({
        type: 'permit',
        actor: [actor('Organization/b')],
        class: [{ system: 'http://loinc.org', code: '1234-5' }],
      }),
      consent({ type: 'permit', actor: [actor('Organization/b')], period: { start: '2026-02-30' } }),
      // Purposes: codes of PurposeOfUse only, on the root permit only (a nested deny cannot narrow by purpose).
      consent({ type: 'permit', actor: [actor('Organization/b')], purpose: [{ code: 'TREAT' }] }),
      consent({
        type: 'permit',
        actor: [actor('Organization/b')],
        purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'treat me' }],
      }),
      consent({ type: 'permit', actor: [actor('Organization/b')], purpose: [] }),
      consent({
        type: 'permit',
        actor: [actor('Organization/b')],
        provision: [
          {
            type: 'deny',
            purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HRESCH' }],
          },
        ],
      }),
      {
        ...consent({ type: 'permit', actor: [actor('Organization/b')] }),
        patient: { reference: 'http://elsewhere/Patient/1' },
      },
    ];
    for (const resource of bad) {
      let error: unknown;
      try {
        consentToGrants(resource);
      } catch (err) {
        error = err;
      }
      expect(error, JSON.stringify(resource)).toBeInstanceOf(FhirError);
      expect((error as FhirError).status).toBe(422);
    }
  });

  it("maps a network participant's handle to a grant naming its pseudonym (as given) and its member's MSP", () => {
    const out = consentToGrants(
      consent({
        type: 'permit',
        actor: [
          networkActor('Org2MSP|dr-b_Pseudonym-1'),
          actor('Practitioner/9'),
          networkActor('Org2MSP|dr-b_Pseudonym-1', { type: 'Practitioner' }),
          networkActor('Lab.C-MSP_3|dr-b_Pseudonym-1'),
        ],
        provision: [
          {
            type: 'deny',
            actor: [networkActor('Lab.C-MSP_3|dr-b_Pseudonym-1')],
            class: [{ code: 'Condition' }],
          },
        ],
      }),
    );
    // One grant per participant (the same handle twice is one); a local reference keeps its meaning.
    expect(out.grants.map((g) => [g.grantee, g.granteeMsp])).toEqual([
      ['dr-b_Pseudonym-1', 'Org2MSP'],
      ['Practitioner/9', undefined],
      ['dr-b_Pseudonym-1', 'Lab.C-MSP_3'],
    ]);
    expect('granteeMsp' in out.grants[1]).toBe(false);
    // A deny naming one member's participant narrows that grant only (the same pseudonym elsewhere is another).
    expect(out.grants.map((g) => g.deny)).toEqual([[], [], [{ classes: ['Condition'] }]]);
    expect(parseNetworkHandle('Org2MSP|dr-b_Pseudonym-1')).toEqual({
      mspId: 'Org2MSP',
      pseudonym: 'dr-b_Pseudonym-1',
    });
  });

  it('refuses a malformed network participant with 422 naming the element', () => {
    const path = 'Consent.provision.actor[0].reference';
    const cases: [object, string][] = [
      [networkActor('Org2MSP'), `${path}.identifier.value`],
      [networkActor('|dr-b-pseudonym'), `${path}.identifier.value`],
      [networkActor('Org2MSP|'), `${path}.identifier.value`],
      [networkActor('Org2MSP|short'), `${path}.identifier.value`],
      [networkActor(`Org2MSP|${'p'.repeat(129)}`), `${path}.identifier.value`],
      [networkActor(`${'M'.repeat(129)}|dr-b-pseudonym`), `${path}.identifier.value`],
      [networkActor('Org 2|dr-b-pseudonym'), `${path}.identifier.value`],
      [networkActor('.Org2|dr-b-pseudonym'), `${path}.identifier.value`],
      [networkActor('Org2MSP|dr-b.pseudonym'), `${path}.identifier.value`],
      [networkActor('Org2MSP|dr-b-pseudonym|x'), `${path}.identifier.value`],
      [networkActor('Org2MSP|Practitioner/1'), `${path}.identifier.value`],
      [networkActor(42), `${path}.identifier.value`],
      [networkActor('Org2MSP|dr-b-pseudonym', { type: 'Patient' }), `${path}.type`],
      [
        networkActor('Org2MSP|dr-b-pseudonym', { reference: 'Practitioner/1' }),
        'Consent.provision.actor[0].reference',
      ],
      [
        { reference: { identifier: { system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567893' } } },
        `${path}.reference`,
      ],
    ];
    for (const [bad, expression] of cases) {
      let error: unknown;
      try {
        consentToGrants(consent({ type: 'permit', actor: [bad] }));
      } catch (err) {
        error = err;
      }
      expect(error, JSON.stringify(bad)).toBeInstanceOf(FhirError);
      const fhir = error as FhirError;
      expect(fhir.status).toBe(422);
      expect(fhir.outcome.issue[0]?.expression).toEqual([expression]);
    }
    // In a nested deny too.
    expect(() =>
      consentToGrants(
        consent({
          type: 'permit',
          actor: [actor('Organization/b')],
          provision: [{ type: 'deny', actor: [networkActor('Org2MSP|x')] }],
        }),
      ),
    ).toThrow(FhirError);
  });

  it('turns partial dates into exact instants', () => {
    expect(periodInstant('2026', 'end', 'p')).toBe('2027-01-01T00:00:00.000Z');
    expect(periodInstant('2026-02', 'end', 'p')).toBe('2026-03-01T00:00:00.000Z');
    expect(periodInstant('2026-02-03T04:05:06+01:00', 'start', 'p')).toBe('2026-02-03T03:05:06.000Z');
    expect(() => periodInstant('2026-02-03T04:05:06', 'start', 'p')).toThrow(FhirError);
  });
});
