/** vread: GET [base]/[type]/[id]/_history/[vid] (http://hl7.org/fhir/R4/http.html#vread). */
import { fhirError } from '../outcome.js';
import { assertId, assertResourceType, versionHeaders, visibleOr404 } from './common.js';
import { notModified } from './conditional.js';
import type { InteractionHandler } from './types.js';

export const vread: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('vread', resourceType);
  const id = assertId(request.id);
  // Version ids are 1, 2, 3 ... (the store's contract): anything else names no version.
  if (!request.versionId || !/^[1-9]\d{0,15}$/.test(request.versionId)) {
    throw fhirError(
      'resource-not-found',
      `${resourceType}/${id} has no version '${request.versionId ?? ''}'`,
    );
  }
  const what = `${resourceType}/${id}/_history/${request.versionId}`;
  const version = visibleOr404(
    context,
    await context.store.vread(resourceType, id, Number(request.versionId)),
    what,
  );
  if (version.deleted)
    throw fhirError('resource-deleted', `${what} is a deletion`, { headers: versionHeaders(version) });
  return (
    notModified(request, version) ?? { status: 200, headers: versionHeaders(version), body: version.json }
  );
};
