/**
 * A composite SearchParameter's components (searchparameter.html): each component has its `expression`
 * (SearchParameter.component.expression 1..1). Whether each `definition` resolves is not checked yet: the core
 * SearchParameters are not in the validator's registry, so a check would refuse composites built on them.
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

const atComponents = (resource: object) =>
  validator
    .validate(resource)
    .issues.filter((i) => i.expression?.[0]?.startsWith('SearchParameter.component'))
    .map((i) => [i.severity, i.expression?.[0]]);

describe('composite SearchParameter components', () => {
  it('a component without its expression is an error', () => {
    const noExpression = [{ definition: 'http://hl7.org/fhir/SearchParameter/clinical-code' }];
    expect(atComponents(composite(noExpression))).toEqual([['error', 'SearchParameter.component[0]']]);
  });
});
