import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createSchemaValidator,
  pointerToExpression,
  type SchemaValidator,
} from '../../src/fhir/validation/schema.js';

let validator: SchemaValidator;
beforeAll(async () => {
  validator = await createSchemaValidator();
});

describe('R4 JSON schema validator', () => {
  it('knows the R4 resource types and nothing else', () => {
    expect(validator.resourceTypes).toHaveLength(146);
    expect(validator.isResourceType('Patient')).toBe(true);
    expect(validator.isResourceType('Resource')).toBe(false);
    expect(validator.isResourceType('Patients')).toBe(false);
  });

  it('accepts every resource of a Synthea patient bundle', () => {
    const dir = '../shared/data/synthea-bundles';
    const file = readdirSync(dir).find((f) => f.endsWith('.json'))!;
    const bundle = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    for (const entry of bundle.entry)
      expect(validator.validate(entry.resource)).toEqual({ valid: true, issues: [] });
    expect(validator.validate(bundle).valid).toBe(true);
  });

  it.each([
    [{ resourceType: 'Patient', foo: 1 }, 'Patient.foo', 'structure'],
    [{ resourceType: 'Patient', name: [{ given: [1] }] }, 'Patient.name[0].given[0]', 'structure'],
    [{ resourceType: 'Patient', birthDate: '2020-13' }, 'Patient.birthDate', 'value'],
    [{ resourceType: 'Patient', gender: 'mail' }, 'Patient.gender', 'code-invalid'],
    [{ resourceType: 'Observation', status: 'final' }, 'Observation.code', 'required'],
    [
      { resourceType: 'Bundle', type: 'batch', entry: [{ resource: { resourceType: 'Foo' } }] },
      'Bundle.entry[0].resource',
      'structure',
    ],
  ])('refuses %j at %s', (resource, expression, code) => {
    const result = validator.validate(resource);
    expect(result.valid).toBe(false);
    expect(result.issues[0]).toMatchObject({ severity: 'error', code, expression: [expression] });
  });

  it('names the FHIR datatype whose format a value breaks', () => {
    const result = validator.validate({ resourceType: 'Patient', birthDate: '2020-13' });
    expect(result.issues[0].diagnostics).toContain('FHIR date');
  });

  it('refuses what is not a resource without throwing', () => {
    for (const bad of [null, 42, 'x', [], {}, { resourceType: 7 }, { resourceType: 'Nope' }]) {
      expect(validator.validate(bad).valid).toBe(false);
    }
  });

  it('turns JSON pointers into FHIRPath locations', () => {
    expect(pointerToExpression('Bundle', '/entry/3/resource/status')).toBe('Bundle.entry[3].resource.status');
    expect(pointerToExpression('Patient', '')).toBe('Patient');
  });
});

describe('corrections to the published schema', () => {
  it('accepts R4 4.0.1 as a FHIR version', () => {
    const capability = {
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: '2026-11-25',
      kind: 'instance',
      fhirVersion: '4.0.1',
      format: ['json'],
    };
    expect(validator.validate(capability).valid).toBe(true);
    expect(validator.validate({ ...capability, fhirVersion: '4.0.9' }).valid).toBe(false);
  });

  it('reads whitespace as XML Schema does: a no-break space is string content', () => {
    expect(validator.validate({ resourceType: 'Patient', name: [{ text: 'Anne\u00a0Marie' }] }).valid).toBe(
      true,
    );
    expect(validator.validate({ resourceType: 'Patient', gender: 'fe male' }).valid).toBe(false);
    expect(validator.validate({ resourceType: 'Patient', implicitRules: 'http://x y' }).valid).toBe(false);
    expect(validator.validate({ resourceType: 'Patient', implicitRules: 'http://x\u00a0y' }).valid).toBe(
      true,
    );
  });
});
