/** delete: DELETE [base]/[type]/[id], logical (a deleted version) (http://hl7.org/fhir/R4/http.html#delete). */
import { issue, operationOutcome, preconditionFailed } from '../outcome.js';
import type { FhirResource } from '../../mapping/fhir-json.js';
import { assertId, assertResourceType, ifMatchVersion, versionHeaders, writeVersion } from './common.js';
import type { InteractionHandler } from './types.js';

export const deleteResource: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('delete', resourceType);
  const id = assertId(request.id);
  const ifMatch = ifMatchVersion(request);
  const existing = await context.store.read(resourceType, id);
  const visible = existing && context.access.canRead(existing) ? existing : undefined;
  if (ifMatch !== undefined && (!visible || visible.deleted || visible.versionId !== ifMatch)) {
    throw preconditionFailed(
      `If-Match W/"${ifMatch}" does not match: ${visible && !visible.deleted ? `the current version is ${visible.versionId}` : `${resourceType}/${id} does not exist`}`,
    );
  }
  const outcome = (diagnostics: string) =>
    operationOutcome([issue('information', 'informational', diagnostics)]) as unknown as FhirResource;
  // Deleting what does not exist (or is already deleted) succeeds and stores nothing (R4 http.html#delete).
  if (!visible || visible.deleted) {
    return {
      status: request.preferReturn === 'minimal' ? 204 : 200,
      headers: visible ? versionHeaders(visible) : {},
      body:
        request.preferReturn === 'minimal'
          ? undefined
          : outcome(`${resourceType}/${id} is not there: nothing to delete`),
    };
  }
  const version = await writeVersion(context, { resourceType, id, method: 'DELETE', ifMatch }, visible);
  return {
    status: request.preferReturn === 'minimal' ? 204 : 200,
    headers: { ETag: `W/"${version.versionId}"` },
    body:
      request.preferReturn === 'minimal'
        ? undefined
        : outcome(`${resourceType}/${id} deleted (version ${version.versionId})`),
    lastModified: version.lastUpdated,
  };
};
