/** read: GET [base]/[type]/[id] (http://hl7.org/fhir/R4/http.html#read). */
import { fhirError } from '../outcome.js';
import { assertId, assertResourceType, versionHeaders, visibleOr404 } from './common.js';
import { notModified } from './conditional.js';
import type { InteractionHandler } from './types.js';

export const read: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('read', resourceType);
  const id = assertId(request.id);
  const version = visibleOr404(context, await context.store.read(resourceType, id), `${resourceType}/${id}`);
  if (version.deleted) {
    throw fhirError('resource-deleted', `${resourceType}/${id} was deleted (version ${version.versionId})`, {
      headers: versionHeaders(version),
    });
  }
  return (
    notModified(request, version) ?? { status: 200, headers: versionHeaders(version), body: version.json }
  );
};
