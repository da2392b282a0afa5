/** update: PUT [base]/[type]/[id], update-as-create allowed (http://hl7.org/fhir/R4/http.html#update). */
import { fhirError } from '../outcome.js';
import {
  assertBodyType,
  assertId,
  assertResourceType,
  ifMatchVersion,
  parseResourceBody,
  validateResource,
  writeResponse,
  writeVersion,
} from './common.js';
import type { InteractionHandler } from './types.js';

export const update: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('update', resourceType);
  const id = assertId(request.id);
  const resource = parseResourceBody(request);
  assertBodyType(resource, resourceType);
  if (resource.id === undefined)
    throw fhirError('resource-id-mismatch', `The body has no id; it must be '${id}', as in the URL`, {
      expression: `${resourceType}.id`,
    });
  if (resource.id !== id)
    throw fhirError(
      'resource-id-mismatch',
      `The body's id '${String(resource.id)}' is not the URL's id '${id}'`,
      { expression: `${resourceType}.id` },
    );
  const issues = validateResource(context, resource, 'update');

  const ifMatch = ifMatchVersion(request);
  const existing = await context.store.read(resourceType, id);
  // writeVersion decides in this order: a target the caller may not see is an unknown id (404, whatever If-Match
  // says); creating a new id is for this service's organisation (404 for others); the role rules (403); If-Match
  // (412); a body identical to the current version stores nothing (200).
  const version = await writeVersion(
    context,
    { resourceType, id, resource, method: 'PUT', ifMatch },
    existing,
  );
  const created = !existing || existing.deleted;
  return writeResponse(
    request,
    version,
    created ? 201 : 200,
    issues.filter((i) => i.severity !== 'error' && i.severity !== 'fatal'),
    !created && version.versionId === existing.versionId,
  );
};
