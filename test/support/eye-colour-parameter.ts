/**
 * A custom search parameter for tests (a token on a Patient extension, as a network's shared profile might define
 * one): the extension's URL and the SearchParameter resource that indexes it.
 */
import type { FhirResource } from '../../src/fhir/fhir-json.js';

/** The Patient extension the parameter reads (valueCode). */
export const EYE_COLOUR_EXTENSION = 'http://example.org/fhir/StructureDefinition/eye-colour';

/** The active SearchParameter `eye-colour` on Patient, with `extra` fields over it. */
export function eyeColourParameter(extra: Record<string, unknown> = {}): FhirResource {
  return {
    resourceType: 'SearchParameter',
    id: 'eye-colour',
    url: 'http://example.org/fhir/SearchParameter/eye-colour',
    name: 'EyeColour',
    status: 'active',
    description: 'The colour of the eyes.',
    code: 'eye-colour',
    base: ['Patient'],
    type: 'token',
    expression: `Patient.extension.where(url='${EYE_COLOUR_EXTENSION}').value`,
    ...extra,
  };
}
