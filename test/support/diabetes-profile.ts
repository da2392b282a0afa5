/**
 * The tests' profile with a required binding to a value set on SNOMED CT: `Condition.code` bound (required) to the
 * diabetes value set (73211009 "Diabetes mellitus" and what is below it). Without SNOMED CT loaded the binding
 * cannot be checked ("not loaded, not checked": the `terminology-not-loaded` rule family); with it loaded
 * (test/terminology/excerpts.ts), a code outside the value set is refused. The same resources serve the validator
 * directly (`registerResource`), the app (PUT), and `hie-ledger import` (an IG folder of files).
 */
export const SNOMED = 'http://snomed.info/sct';
/** Diabetes mellitus (disorder): the value set's root concept. */
export const DIABETES_MELLITUS = '73211009';

export const DIABETES_VALUE_SET_URL = 'http://example.org/fhir/ValueSet/diabetes';
export const DIABETES_PROFILE_URL = 'http://example.org/fhir/StructureDefinition/diabetes-condition';

export const DIABETES_VALUE_SET = {
  resourceType: 'ValueSet',
  id: 'diabetes',
  url: DIABETES_VALUE_SET_URL,
  status: 'active',
  compose: {
    include: [{ system: SNOMED, filter: [{ property: 'concept', op: 'is-a', value: DIABETES_MELLITUS }] }],
  },
};

/** A profile binding Condition.code (required) to the diabetes value set. */
export const DIABETES_PROFILE = {
  resourceType: 'StructureDefinition',
  id: 'diabetes-condition',
  url: DIABETES_PROFILE_URL,
  name: 'DiabetesCondition',
  status: 'active',
  kind: 'resource',
  abstract: false,
  type: 'Condition',
  baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Condition',
  derivation: 'constraint',
  differential: {
    element: [
      {
        id: 'Condition.code',
        path: 'Condition.code',
        binding: { strength: 'required', valueSet: DIABETES_VALUE_SET_URL },
      },
    ],
  },
};

/** A Condition of Patient/p1 claiming the profile, coded with this SNOMED CT code (and this id, if given). */
export function diabetesCondition(code: string, id?: string): Record<string, unknown> {
  return {
    resourceType: 'Condition',
    ...(id === undefined ? {} : { id }),
    meta: { profile: [DIABETES_PROFILE_URL] },
    subject: { reference: 'Patient/p1' },
    code: { coding: [{ system: SNOMED, code }] },
  };
}
