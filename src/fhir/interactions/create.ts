/** create: POST [base]/[type] with a server-assigned id (http://hl7.org/fhir/R4/http.html#create). */
import { fhirError } from '../outcome.js';
import { parseFhirJson, type FhirResource } from '../fhir-json.js';
import {
  assertBodyType,
  assertResourceType,
  parseResourceBody,
  validateResource,
  versionHeaders,
  versionLocation,
  writeResponse,
  writeVersion,
} from './common.js';
import type { FhirContext, FhirRequest, FhirResponse, InteractionHandler } from './types.js';
import { newResourceId } from './ids.js';
import { parseQuery } from '../query.js';

export const create: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('create', resourceType);
  const body = parseResourceBody(request);
  assertBodyType(body, resourceType);
  // The server assigns the id; one in the body is ignored (R4 http.html#create), as are meta.versionId/lastUpdated.
  // A transaction assigns the ids of its POST entries up front, to rewrite urn:uuid references (transaction.ts).
  const id = request.assignedId ?? newResourceId();
  // A body parsed for this request alone takes the id itself (same member order as a copy: an id it had stays in
  // place, a new one goes last); a copy costs ~1.5 µs a create. A transaction's entry resource is not ours: copied.
  let resource: FhirResource;
  if (request.resource) resource = { ...body, id };
  else {
    resource = body;
    resource.id = id;
  }
  const issues = validateResource(context, resource, 'create');

  if (request.ifNoneExist !== undefined) {
    const existing = await conditionalMatch(request, context, resourceType);
    if (existing) return existing;
  }

  const version = await writeVersion(
    context,
    { resourceType, id, resource, method: 'POST', ifNoneExist: true },
    undefined,
  );
  return writeResponse(
    request,
    version,
    201,
    issues.filter((i) => i.severity !== 'error' && i.severity !== 'fatal'),
  );
};

/**
 * Conditional create (If-None-Exist): no match -> create; one match -> 200 with the match, nothing stored;
 * several -> 412. Runs the registered search, so it sees exactly what a search would (access rules included).
 */
async function conditionalMatch(
  request: FhirRequest,
  context: FhirContext,
  resourceType: string,
): Promise<FhirResponse | undefined> {
  const criteria = request.ifNoneExist!.replace(/^\?/, '').trim();
  if (criteria === '')
    throw fhirError(
      'conditional-criteria-missing',
      'If-None-Exist is empty; it needs search criteria like identifier=sys|123',
    );
  const search = context.registry?.handlerFor({ interaction: 'search-type', resourceType, method: 'GET' });
  if (!search) {
    throw fhirError(
      'conditional-unavailable',
      'Conditional create (If-None-Exist) needs search, which this server does not offer yet',
    );
  }
  const query = parseQuery(criteria);
  query._count = ['2'];
  const result = await search(
    { interaction: 'search-type', method: 'GET', resourceType, query, baseUrl: request.baseUrl },
    context,
  );
  const bundle = (typeof result.body === 'string' ? parseFhirJson(result.body) : result.body) as
    FhirResource | undefined;
  const matches = ((bundle?.entry ?? []) as { resource?: FhirResource; search?: { mode?: string } }[]).filter(
    (entry) => entry.resource && (entry.search?.mode ?? 'match') === 'match',
  );
  if (matches.length === 0) return undefined;
  if (matches.length > 1)
    throw fhirError(
      'conditional-multiple-matches',
      `If-None-Exist '${criteria}' matches more than one ${resourceType}`,
    );
  const match = matches[0].resource!;
  const stored = await context.store.read(resourceType, match.id!);
  if (!stored || stored.deleted) return undefined;
  // The search answers only with what the caller may see; the version read here must be visible too.
  if (!context.access.canRead(stored)) {
    throw fhirError(
      'conditional-unavailable',
      `If-None-Exist '${criteria}' cannot be evaluated for this caller`,
    );
  }
  const headers = versionHeaders(stored);
  headers.Location = versionLocation(request.baseUrl, stored);
  const lastModified = stored.lastUpdated;
  if (request.preferReturn === 'minimal') return { status: 200, headers, lastModified };
  return { status: 200, headers, body: stored.json, lastModified };
}
