/**
 * A composite SearchParameter's components (searchparameter.html#SearchParameter.component, search.html#composite):
 * each component has its `expression` (SearchParameter.component.expression 1..1), and its `definition` is the
 * SearchParameter that describes the part: resolved to the specification's own parameters or loaded ones, it must
 * apply to the composite's resource types (errors in `$validate`, warnings on writes); one not known here is not
 * checked (information).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createFhirValidatorSync, type FhirValidator } from '../../src/fhir/validation/index.js';

let validator: FhirValidator;
beforeAll(() => {
  validator = createFhirValidatorSync();
});

const composite = (component: object[]) => ({
  resourceType: 'SearchParameter',
  url: 'http://example.org/fhir/SearchParameter/code-value',
  name: 'CodeValue',
  status: 'active',
  description: 'code and value',
  code: 'code-value',
  base: ['Observation'],
  type: 'composite',
  expression: 'Observation',
  component,
});

const atComponents = (resource: object, crossResourceSeverity?: 'error' | 'warning') =>
  validator
    .validate(resource, { crossResourceSeverity })
    .issues.filter((i) => i.expression?.[0]?.startsWith('SearchParameter.component'))
    .map((i) => [i.severity, i.expression?.[0]]);

describe('composite SearchParameter components', () => {
  it('a component without its expression is an error', () => {
    const noExpression = [{ definition: 'http://hl7.org/fhir/SearchParameter/clinical-code' }];
    expect(atComponents(composite(noExpression))).toEqual([['error', 'SearchParameter.component[0]']]);
  });

  it('resolves definitions to the core SearchParameters: the R4 composite code-value-quantity is accepted', () => {
    const codeValueQuantity = [
      { definition: 'http://hl7.org/fhir/SearchParameter/clinical-code', expression: 'code' },
      {
        definition: 'http://hl7.org/fhir/SearchParameter/Observation-value-quantity',
        expression: 'value.as(Quantity)',
      },
    ];
    expect(atComponents(composite(codeValueQuantity), 'error')).toEqual([]);
  });

  it("a component whose definition does not apply to the composite's base: an error in $validate, a warning on writes", () => {
    const patientPart = [
      { definition: 'http://hl7.org/fhir/SearchParameter/clinical-code', expression: 'code' },
      { definition: 'http://hl7.org/fhir/SearchParameter/individual-birthdate', expression: 'effective' },
    ];
    expect(atComponents(composite(patientPart), 'error')).toEqual([
      ['error', 'SearchParameter.component[1].definition'],
    ]);
    expect(atComponents(composite(patientPart))).toEqual([
      ['warning', 'SearchParameter.component[1].definition'],
    ]);
  });

  it('resolves definitions to loaded SearchParameters too', () => {
    const local = createFhirValidatorSync();
    local.registerResource({
      resourceType: 'SearchParameter',
      url: 'http://example.org/fhir/SearchParameter/patient-eye-colour',
      name: 'EyeColour',
      status: 'active',
      description: 'eye colour',
      code: 'eye-colour',
      base: ['Patient'],
      type: 'token',
      expression: 'Patient.extension.value',
    });
    const parts = [
      { definition: 'http://hl7.org/fhir/SearchParameter/clinical-code', expression: 'code' },
      { definition: 'http://example.org/fhir/SearchParameter/patient-eye-colour', expression: 'value' },
    ];
    const issues = local
      .validate(composite(parts), { crossResourceSeverity: 'error' })
      .issues.filter((i) => i.expression?.[0]?.startsWith('SearchParameter.component'));
    expect(issues.map((i) => [i.severity, i.expression?.[0]])).toEqual([
      ['error', 'SearchParameter.component[1].definition'],
    ]);
  });

  it('a definition not known here is not checked: an information issue, no error', () => {
    const unknownPart = [
      { definition: 'http://hl7.org/fhir/SearchParameter/clinical-code', expression: 'code' },
      { definition: 'http://example.org/fhir/SearchParameter/not-here', expression: 'value' },
    ];
    expect(atComponents(composite(unknownPart), 'error')).toEqual([
      ['information', 'SearchParameter.component[1].definition'],
    ]);
  });
});

describe('SearchParameters by URL resolve to the core ones too (derivedFrom, CapabilityStatement definitions)', () => {
  it("a SearchParameter derived from a core one has the core one's type", () => {
    const derived = {
      resourceType: 'SearchParameter',
      url: 'http://example.org/fhir/SearchParameter/obs-code',
      derivedFrom: 'http://hl7.org/fhir/SearchParameter/clinical-code',
      name: 'ObsCode',
      status: 'active',
      description: 'code',
      code: 'code',
      base: ['Observation'],
      type: 'string',
      expression: 'Observation.code',
    };
    const issues = validator
      .validate(derived, { crossResourceSeverity: 'error' })
      .issues.filter((i) => i.severity === 'error');
    expect(issues.map((i) => i.expression?.[0])).toEqual(['SearchParameter.type']);
  });
});
