/**
 * A binding applies where the profile puts it (R4 profiling.html §5.1.0.6 "Binding": a profile binds an element;
 * terminologies.html §4.1.2: the binding is to "the element"): a slice's binding to the items of that slice only,
 * not to the other items of the sliced element; an element's binding not to another element of the same type.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createFhirValidatorSync, type FhirValidator } from '../../src/fhir/validation/index.js';

const CS = 'http://example.org/fhir/CodeSystem/answers';
const VS = 'http://example.org/fhir/ValueSet/yes-answers';
const PARTS = 'http://example.org/fhir/CodeSystem/parts';
const PROFILE = 'http://example.org/fhir/StructureDefinition/answered-observation';

let validator: FhirValidator;

beforeAll(() => {
  validator = createFhirValidatorSync();
  // A complete code system: membership is decided here, without a terminology server.
  validator.registerResource({
    resourceType: 'CodeSystem',
    url: CS,
    status: 'active',
    content: 'complete',
    concept: [{ code: 'yes' }, { code: 'no' }],
  });
  validator.registerResource({
    resourceType: 'ValueSet',
    url: VS,
    status: 'active',
    compose: { include: [{ system: CS, concept: [{ code: 'yes' }] }] },
  });
  validator.registerResource({
    resourceType: 'StructureDefinition',
    url: PROFILE,
    name: 'AnsweredObservation',
    status: 'active',
    kind: 'resource',
    abstract: false,
    type: 'Observation',
    baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Observation',
    derivation: 'constraint',
    differential: {
      element: [
        {
          id: 'Observation.component',
          path: 'Observation.component',
          slicing: { discriminator: [{ type: 'pattern', path: 'code' }], rules: 'open' },
        },
        { id: 'Observation.component:answer', path: 'Observation.component', sliceName: 'answer' },
        {
          id: 'Observation.component:answer.code',
          path: 'Observation.component.code',
          patternCodeableConcept: { coding: [{ system: PARTS, code: 'answer' }] },
        },
        {
          id: 'Observation.component:answer.value[x]',
          path: 'Observation.component.value[x]',
          type: [{ code: 'CodeableConcept' }],
          binding: { strength: 'required', valueSet: VS },
        },
      ],
    },
  });
});

const component = (part: string, answer: string) => ({
  code: { coding: [{ system: PARTS, code: part }] },
  valueCodeableConcept: { coding: [{ system: CS, code: answer }] },
});

const observation = (...components: object[]) => ({
  resourceType: 'Observation',
  meta: { profile: [PROFILE] },
  status: 'final',
  code: { coding: [{ system: CS, code: 'no' }] },
  component: components,
});

const bindingErrors = (resource: object) =>
  validator
    .validate(resource)
    .issues.filter((i) => i.severity === 'error')
    .map((i) => [i.expression?.[0], i.diagnostics]);

describe('a binding applies where the profile puts it', () => {
  it("the slice's required binding holds for the items of the slice", () => {
    expect(bindingErrors(observation(component('answer', 'yes')))).toEqual([]);
    const errors = bindingErrors(observation(component('answer', 'no')));
    expect(errors.some(([, text]) => String(text).includes(`value set '${VS}'`))).toBe(true);
    expect(errors.every(([at]) => String(at).startsWith('Observation.component[0]'))).toBe(true);
  });

  it('not for the other items of the sliced element, nor for another element of the same type', () => {
    // component[1] is not in the slice (another code): its value is not bound; Observation.code is not bound.
    expect(bindingErrors(observation(component('answer', 'yes'), component('other', 'no')))).toEqual([]);
  });
});
