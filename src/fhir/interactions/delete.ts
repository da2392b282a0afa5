/** delete: DELETE [base]/[type]/[id], logical (a deleted version) (http://hl7.org/fhir/R4/http.html#delete). */
import { issue, operationOutcome } from '../outcome.js';
import type { FhirResource } from '../fhir-json.js';
import {
  assertId,
  assertResourceType,
  checkIfMatch,
  ifMatchVersion,
  versionHeaders,
  writeVersion,
} from './common.js';
import type { InteractionHandler } from './types.js';

export const deleteResource: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('delete', resourceType);
  const id = assertId(request.id);
  const ifMatch = ifMatchVersion(request);
  const existing = await context.store.read(resourceType, id);
  // What the caller may not see is answered as an id that does not exist, before any precondition.
  const visible = existing && context.access.canRead(existing) ? existing : undefined;
  const outcome = (diagnostics: string) =>
    operationOutcome([issue('information', 'informational', diagnostics)]) as unknown as FhirResource;
  // Deleting what does not exist (or is already deleted) succeeds and stores nothing (R4 http.html#delete).
  if (!visible || visible.deleted) {
    checkIfMatch(ifMatch, visible, resourceType, id);
    return {
      status: request.preferReturn === 'minimal' ? 204 : 200,
      headers: visible ? versionHeaders(visible) : {},
      body:
        request.preferReturn === 'minimal'
          ? undefined
          : outcome(`${resourceType}/${id} is not there: nothing to delete`),
    };
  }
  // The write permission (403) before If-Match (412), in writeVersion.
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
