import { describe, expect, it } from 'vitest';
import { grantScopes, parseScope, roleScopes, ScopeSet } from '../../src/access/scopes.js';

describe('SMART scopes', () => {
  it('parses v2 and v1 syntax and refuses malformed scopes', () => {
    expect(parseScope('system/*.rs')).toMatchObject({ context: 'system', resourceType: '*' });
    expect([...parseScope('patient/Observation.cruds')!.permissions]).toEqual(['c', 'r', 'u', 'd', 's']);
    expect([...parseScope('user/Patient.read')!.permissions]).toEqual(['r', 's']);
    expect([...parseScope('user/Patient.write')!.permissions]).toEqual(['c', 'u', 'd']);
    for (const bad of [
      'system/*.sr',
      'system/*.rr',
      'admin/*.rs',
      'system/*',
      'system/Obs-x.rs',
      'openid',
      '',
    ]) {
      expect(parseScope(bad), bad).toBeUndefined();
    }
  });

  it('grants the role set, or the requested subset of it', () => {
    expect(grantScopes('system', undefined)).toEqual(roleScopes('system'));
    expect(grantScopes('clinician', 'user/Observation.rs user/Patient.r system/*.rs launch')).toEqual([
      'user/Observation.rs',
      'user/Patient.r',
    ]);
    expect(grantScopes('lab', 'user/MedicationRequest.c')).toEqual([]);
    expect(grantScopes('lab', 'user/Observation.c')).toEqual(['user/Observation.c']);
    expect(grantScopes('patient', 'patient/Consent.u patient/Observation.d')).toEqual(['patient/Consent.u']);
  });

  it('narrows a request to what the role allows, in the client’s notation, instead of refusing it', () => {
    // SMART v2 and v1 wildcards, as clients send them (issue 15): the intersection, not invalid_scope.
    expect(grantScopes('admin', 'system/*.cruds')).toEqual(['system/*.rs', 'system/*.cud']);
    expect(grantScopes('system', 'system/*.*')).toEqual(['system/*.read', 'system/*.write']);
    expect(grantScopes('system', 'system/*.read')).toEqual(['system/*.read']);
    expect(grantScopes('patient', 'patient/*.cud')).toEqual(['patient/Consent.cud']);
    expect(grantScopes('patient', 'patient/*.write')).toEqual(['patient/Consent.write']);
    expect(grantScopes('lab', 'user/*.cruds')).toEqual([
      'user/*.rs',
      'user/Observation.cud',
      'user/DiagnosticReport.cud',
      'user/Specimen.cud',
    ]);
    // v1 cannot say "cd" or "r" alone: a v1 request keeps v1 only where v1 has a word for the result.
    expect(grantScopes('patient', 'patient/Observation.*')).toEqual(['patient/Observation.read']);
    // Mixed v1/v2 requests are answered in v2.
    expect(grantScopes('clinician', 'user/Patient.read user/Observation.cruds')).toEqual([
      'user/Patient.rs',
      'user/Observation.rs',
      'user/Observation.cud',
    ]);
    // Nothing in common: empty (the token endpoint answers invalid_scope).
    expect(grantScopes('patient', 'system/*.rs user/*.rs')).toEqual([]);
    expect(grantScopes('lab', 'user/Patient.cud')).toEqual([]);
  });

  it('checks interactions against granted scopes', () => {
    const lab = new ScopeSet(roleScopes('lab'));
    expect(lab.allows('Observation', 'c')).toBe(true);
    expect(lab.allows('MedicationRequest', 'c')).toBe(false);
    expect(lab.allows('MedicationRequest', 'r')).toBe(true);
    const patient = new ScopeSet(['patient/Observation.r']);
    expect(patient.allows('Observation', 's')).toBe(false);
    expect(patient.allowsAny('r')).toBe(true);
    expect(patient.allowsAny('c')).toBe(false);
  });
});

describe('audit path shapes', () => {
  it('keep the type and the operation, never ids', async () => {
    const { pathShape } = await import('../../src/access/access-audit.js');
    expect(pathShape('/Observation/0193-abc')).toBe('/Observation');
    expect(pathShape('/Patient/p1/$everything')).toBe('/Patient/$everything');
    expect(pathShape('/Patient/p1/_history/2/$verify')).toBe('/Patient/$verify');
    expect(pathShape('//Patient//p1//$everything/')).toBe('/Patient/$everything');
    expect(pathShape('/$export')).toBe('/$export');
    expect(pathShape('/metadata')).toBe('/metadata');
    expect(pathShape('/')).toBe('/');
    expect(pathShape('')).toBe('/');
  });
});
