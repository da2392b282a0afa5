/**
 * One grant rule: the chaincode's CheckAccess and the service's consent cache decide with the same function, so a
 * revoked grant allows nothing on either side, whatever its classes and period say.
 */
import { describe, expect, it } from 'vitest';
import { grantAllows as chaincodeGrantAllows, type GrantRecord } from 'hie-ledger-chaincode';
import { grantAllows as serviceGrantAllows } from '../../src/consent/consent-resource.js';

const base: GrantRecord = {
  docType: 'grant',
  patient: 'patient-aaaa',
  grantee: 'grantee-bbbb',
  consent: 'consent-cccc',
  classes: ['Observation'],
  period: { start: '2026-01-01T00:00:00Z', end: '2027-01-01T00:00:00Z' },
  deny: [{ classes: ['Condition'] }],
  status: 'active',
  grantedBy: 'actor-dddd',
  grantedInPerson: false,
  grantedTxId: 'tx-1',
  grantedAt: '2026-01-01T00:00:00Z',
  mspId: 'Org1MSP',
};

describe('the grant rule', () => {
  const within = Date.parse('2026-06-01T00:00:00Z');

  it('a revoked grant allows nothing, through the name the service uses', () => {
    const revoked: GrantRecord = { ...base, status: 'revoked', revokedBy: 'actor-dddd' };
    expect(serviceGrantAllows(base, 'Observation', within)).toBe(true);
    expect(serviceGrantAllows(revoked, 'Observation', within)).toBe(false);
  });

  it('the service and the chaincode decide every case alike', () => {
    const cases: [GrantRecord, string, number][] = [];
    for (const status of ['active', 'revoked'] as const)
      for (const type of ['Observation', 'Condition', 'Encounter'])
        for (const at of [Date.parse('2025-06-01T00:00:00Z'), within, Date.parse('2027-01-01T00:00:00Z')])
          cases.push([{ ...base, status }, type, at]);
    for (const [grant, type, at] of cases)
      expect([grant.status, type, at, serviceGrantAllows(grant, type, at)]).toEqual([
        grant.status,
        type,
        at,
        chaincodeGrantAllows(grant, type, at),
      ]);
  });
});
