import type { FhirContext, FhirRequest } from '../fhir/interactions/types.js';
import { fhirError } from '../fhir/outcome.js';

/**
 * The `Patient/{id}` of an instance operation on a Patient, when the caller may read that Patient here: else 404,
 * exactly as for an absent Patient (hidden is indistinguishable from absent).
 */
export async function readablePatient(request: FhirRequest, context: FhirContext): Promise<string> {
  const id = request.id!;
  context.access.authorize('read', 'Patient');
  const current = await context.store.read('Patient', id);
  if (!current || current.deleted || !context.access.canRead(current))
    throw fhirError('resource-not-found', `Patient/${id} is not known`);
  return `Patient/${id}`;
}
