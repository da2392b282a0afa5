/** update: PUT [base]/[type]/[id], update-as-create allowed (http://hl7.org/fhir/R4/http.html#update). */
import { badRequest, preconditionFailed } from '../outcome.js';
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
    throw badRequest(`The body has no id; it must be '${id}', as in the URL`, `${resourceType}.id`);
  if (resource.id !== id)
    throw badRequest(
      `The body's id '${String(resource.id)}' is not the URL's id '${id}'`,
      `${resourceType}.id`,
    );
  const issues = validateResource(context, resource, 'update');

  const ifMatch = ifMatchVersion(request);
  const existing = await context.store.read(resourceType, id);
  if (ifMatch !== undefined && (!existing || existing.deleted || existing.versionId !== ifMatch)) {
    throw preconditionFailed(
      `If-Match W/"${ifMatch}" does not match: ${existing && !existing.deleted ? `the current version is ${existing.versionId}` : `${resourceType}/${id} does not exist`}`,
    );
  }
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
  );
};
