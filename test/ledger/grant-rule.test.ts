/**
 * One grant rule: the chaincode's CheckAccess and the service's consent cache decide with the same function, so a
 * revoked grant allows nothing on either side, whatever its classes and period say.
 */
import { describe, expect, it } from 'vitest';
import { grantAllows as chaincodeGrantAllows, type GrantRecord } from 'hie-ledger-chaincode';
import { grantAllows as serviceGrantAllows } from '../../src/consent/consent-resource.js';

const base: GrantRecord = {
  docType: 'grant',
  grantId: 'grant-aaaa',
  patientTag: 'a'.repeat(64),
  grantee: 'grantee-bbbb',
  granteeMsp: 'Org1MSP',
  homeMsp: 'Org1MSP',
  classes: ['Observation'],
  period: { start: '2026-01-01T00:00:00Z', end: '2027-01-01T00:00:00Z' },
  deny: [{ classes: ['Condition'] }],
  purpose: ['TREAT'],
  status: 'active',
  grantedInPerson: false,
  grantedTxId: 'tx-1',
  grantedAt: '2026-01-01T00:00:00Z',
};

describe('the grant rule', () => {
  const within = Date.parse('2026-06-01T00:00:00Z');

  it('a revoked grant allows nothing, through the name the service uses', () => {
    const revoked: GrantRecord = { ...base, status: 'revoked', revokedTxId: 'tx-2' };
    expect(serviceGrantAllows(base, 'Observation', within)).toBe(true);
    expect(serviceGrantAllows(revoked, 'Observation', within)).toBe(false);
  });

  it('the service and the chaincode decide every case alike', () => {
    const cases: [GrantRecord, string, number, string | undefined][] = [];
    for (const status of ['active', 'revoked'] as const)
      for (const type of ['Observation', 'Condition', 'Encounter'])
        for (const at of [Date.parse('2025-06-01T00:00:00Z'), within, Date.parse('2027-01-01T00:00:00Z')])
          for (const purpose of [undefined, 'TREAT', 'HRESCH'])
            cases.push([{ ...base, status }, type, at, purpose]);
    for (const [grant, type, at, purpose] of cases)
      expect([grant.status, type, at, purpose, serviceGrantAllows(grant, type, at, purpose)]).toEqual([
        grant.status,
        type,
        at,
        purpose,
        chaincodeGrantAllows(grant, type, at, purpose),
      ]);
  });

  it('opens only the purposes of use it names; treatment when it names none', () => {
    expect(serviceGrantAllows(base, 'Observation', within)).toBe(true);
    expect(serviceGrantAllows(base, 'Observation', within, 'HRESCH')).toBe(false);
    const research: GrantRecord = { ...base, purpose: ['HRESCH'] };
    expect(serviceGrantAllows(research, 'Observation', within, 'HRESCH')).toBe(true);
    expect(serviceGrantAllows(research, 'Observation', within)).toBe(false);
    const { purpose: _none, ...withoutPurpose } = base;
    expect(serviceGrantAllows(withoutPurpose, 'Observation', within)).toBe(true);
    expect(serviceGrantAllows(withoutPurpose, 'Observation', within, 'HPAYMT')).toBe(false);
  });
});
