/**
 * What the interactions share: id rules, body parsing, validation at the door, version headers,
 * the Prefer header, and the one path every write takes to the store.
 */
import {
  FhirError,
  fhirError,
  issue,
  operationOutcome,
  outcomeIssue,
  type OperationOutcomeIssue,
} from '../outcome.js';
import { ERROR_CATALOGUE } from '../error-catalogue.js';
import { toPlainJson, type FhirResource } from '../fhir-json.js';
import { canonicalizeText } from '../canonical.js';
import type { StoredVersion, WriteRequest } from '../store/resource-store.js';
import { serialiseVersion } from '../store/store-support.js';
import type { ValidationOptions } from '../validation/validator.js';
import type { FhirContext, FhirRequest, FhirResponse } from './types.js';
import { parseRequestJson } from './router.js';
import { JSON_MEDIA_TYPES } from '../media-types.js';
import { mayDefineSearchParameters, readCustomParameter } from '../search/custom-parameters.js';
import { indexedParametersOf } from '../search/definitions.js';

/** FHIR R4 id: http://hl7.org/fhir/R4/datatypes.html#id */
export const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

export function assertResourceType(context: FhirContext, resourceType: string | undefined): string {
  if (!resourceType || !context.validator.isResourceType(resourceType)) {
    throw fhirError(
      'resource-type-unsupported',
      `Resource type '${resourceType ?? ''}' is not supported by this server`,
    );
  }
  return resourceType;
}

export function assertId(id: string | undefined, expression?: string): string {
  if (id === undefined || !ID_PATTERN.test(id)) {
    throw fhirError('id-invalid', `'${id ?? ''}' is not a valid FHIR id ([A-Za-z0-9-.]{1,64})`, {
      expression: expression,
    });
  }
  return id;
}

/** Parse the request body as one FHIR resource (lossless numbers). 400 with the position for bad JSON. */
export function parseResourceBody(request: FhirRequest): FhirResource {
  if (request.resource) return request.resource;
  if (request.body === undefined || request.body.trim() === '')
    throw fhirError('body-missing', 'The request needs a FHIR resource as its body');
  if (request.contentType && !JSON_MEDIA_TYPES.has(request.contentType)) {
    throw fhirError(
      'media-type-unsupported',
      `Content-Type '${request.contentType}' is not supported here; use application/fhir+json`,
    );
  }
  const parsed = parseRequestJson(request.body);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw fhirError('body-not-resource', 'The body must be a JSON object (a FHIR resource)');
  }
  const resource = parsed as FhirResource;
  if (typeof resource.resourceType !== 'string')
    throw fhirError('body-not-resource', 'The body has no resourceType', { expression: 'resourceType' });
  return resource;
}

export function assertBodyType(resource: FhirResource, resourceType: string): void {
  if (resource.resourceType !== resourceType) {
    throw fhirError(
      'resource-type-mismatch',
      `The body is a ${resource.resourceType} but the URL names ${resourceType}`,
      { expression: 'resourceType' },
    );
  }
}

/**
 * Status of a failed validation. 400 when the resource is not valid FHIR R4 (schema, structure, cardinality,
 * invariants, required bindings: FHIR's "failed basic FHIR validation rules"); 422 when it is valid R4 but breaks a
 * profile or business rule (issues with code `business-rule`, FHIR's "violated applicable FHIR profiles or server
 * business rules"). Patch results that fail validation are always 422: the request itself was well-formed.
 */
export function validationStatus(issues: OperationOutcomeIssue[]): 400 | 422 {
  return ERROR_CATALOGUE[validationErrorCode(issues)].status;
}

/** The refusal of a failed validation: `resource-rule-violated` (422) or `resource-invalid` (400), see above. */
export function validationErrorCode(
  issues: OperationOutcomeIssue[],
): 'resource-invalid' | 'resource-rule-violated' {
  const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
  return errors.length > 0 && errors.every((i) => i.code === 'business-rule')
    ? 'resource-rule-violated'
    : 'resource-invalid';
}

/**
 * Validate before anything is stored; throws 400/422 with the validator's issues (each coded with the refusal's
 * code unless it has one). `failureCode` replaces the code chosen from the issues (a patch result: 422). `levels`:
 * the rule families' levels (default the write levels; `received` for a record verified against its anchor).
 */
export function validateResource(
  context: FhirContext,
  resource: FhirResource,
  mode: ValidationOptions['mode'],
  failureCode?: 'patch-result-invalid',
  levels?: ValidationOptions['levels'],
): OperationOutcomeIssue[] {
  const result = context.validator.validate(
    toPlainJson(resource),
    levels === undefined ? { mode } : { mode, levels },
  );
  if (!result.valid)
    throw new FhirError(failureCode ?? validationErrorCode(result.issues), bySeverity(result.issues));
  return result.issues;
}

/** `W/"3"`, `"3"` or `3` -> 3; undefined for anything else. */
export function parseETagVersion(value: string): number | undefined {
  const match = /^\s*(?:W\/)?"?(\d+)"?\s*$/.exec(value);
  return match ? Number(match[1]) : undefined;
}

/** The If-Match precondition as a version number; 412 when it names no version at all. */
export function ifMatchVersion(request: FhirRequest): number | undefined {
  if (request.ifMatch === undefined) return undefined;
  const version = parseETagVersion(request.ifMatch);
  if (version === undefined)
    throw fhirError('if-match-invalid', `If-Match '${request.ifMatch}' names no version (expected W/"n")`);
  return version;
}

/**
 * The If-Match precondition against the write's target as the caller knows it: `target` is undefined for an id that
 * does not exist or that the caller may not see (the same answer for both). Evaluated only once the request would
 * otherwise succeed (RFC 9110 §13.2.1): after the access decision.
 */
export function checkIfMatch(
  ifMatch: number | undefined,
  target: StoredVersion | undefined,
  resourceType: string,
  id: string,
): void {
  if (ifMatch === undefined) return;
  if (!target)
    throw fhirError(
      'version-conflict',
      `If-Match W/"${ifMatch}" does not match: ${resourceType}/${id} is not known`,
    );
  if (target.deleted)
    throw fhirError(
      'version-conflict',
      `If-Match W/"${ifMatch}" does not match: ${resourceType}/${id} is deleted`,
    );
  if (target.versionId !== ifMatch)
    throw fhirError(
      'version-conflict',
      `If-Match W/"${ifMatch}" does not match: the current version is ${target.versionId}`,
    );
}

/** "Wed, 25 Nov 2026" per YYYY-MM-DD: parsing and formatting a Date per response cost ~2 µs a read. */
const httpDays = new Map<string, string>();
const STORED_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** An instant as an HTTP date (RFC 9110 IMF-fixdate), e.g. for Last-Modified. */
export function httpDate(instant: string): string {
  // The store's instants are UTC, YYYY-MM-DDTHH:MM:SS.mmmZ: the date part formatted once, the time copied.
  if (!STORED_INSTANT.test(instant)) return new Date(instant).toUTCString();
  const day = instant.slice(0, 10);
  let formatted = httpDays.get(day);
  if (formatted === undefined) {
    formatted = new Date(`${day}T00:00:00Z`).toUTCString().slice(0, 16);
    if (httpDays.size >= 4096) httpDays.clear();
    httpDays.set(day, formatted);
  }
  return `${formatted} ${instant.slice(11, 19)} GMT`;
}

export function versionHeaders(version: StoredVersion): Record<string, string> {
  return { ETag: `W/"${version.versionId}"`, 'Last-Modified': httpDate(version.lastUpdated) };
}

export function versionLocation(baseUrl: string, version: StoredVersion): string {
  return `${baseUrl}/${version.resourceType}/${version.id}/_history/${version.versionId}`;
}

/**
 * Whether the caller's scopes and role allow reading a type at all, asked of the access policy once per type
 * (per request): search leaves out `_include`s and `$everything` members of types it may not read.
 * `onRefused` hears each refused type once, for the response to say what was left out.
 */
export function typeReadability(
  context: FhirContext,
  onRefused: (type: string) => void,
): (type: string) => boolean {
  const answers = new Map<string, boolean>();
  return (type) => {
    let allowed = answers.get(type);
    if (allowed === undefined) {
      try {
        context.access.authorize('read', type);
        allowed = true;
      } catch (err) {
        if (!(err instanceof FhirError)) throw err;
        allowed = false;
        onRefused(type);
      }
      answers.set(type, allowed);
    }
    return allowed;
  };
}

/** The stored version a caller may see, or a 404 that does not tell whether it exists. */
export function visibleOr404(
  context: FhirContext,
  version: StoredVersion | undefined,
  what: string,
): StoredVersion {
  if (!version || !context.access.canRead(version))
    throw fhirError('resource-not-found', `${what} is not known`);
  return version;
}

const SEVERITY_ORDER = { fatal: 0, error: 1, warning: 2, information: 3 } as const;

/** Most severe first, so a client reading the first issue reads the reason for a refusal. */
function bySeverity(issues: OperationOutcomeIssue[]): OperationOutcomeIssue[] {
  return [...issues].sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity]);
}

/** The response to a successful write, shaped by `Prefer: return=`. */
export function writeResponse(
  request: FhirRequest,
  version: StoredVersion,
  status: 200 | 201,
  issues: OperationOutcomeIssue[] = [],
  /** Nothing was stored: `version` is the current version, identical to what was sent (a no-op write). */
  unchanged = false,
): FhirResponse {
  const headers = versionHeaders(version);
  if (status === 201 || request.method !== 'DELETE')
    headers.Location = versionLocation(request.baseUrl, version);
  const lastModified = version.lastUpdated;
  switch (request.preferReturn) {
    case 'minimal':
      return { status, headers, lastModified };
    case 'OperationOutcome': {
      // What was stored first, then what validation noticed without refusing (warnings).
      // "Unchanged" carries its outcome code: clients (hie-ledger import --url) act on it, not on the text.
      const what = `${version.resourceType}/${version.id} version ${version.versionId}`;
      const outcome = operationOutcome([
        unchanged
          ? outcomeIssue('write-unchanged', `${what} unchanged: nothing stored`)
          : issue('information', 'informational', `${what} stored`),
        ...bySeverity(issues),
      ]);
      return { status, headers, body: outcome as unknown as FhirResource, lastModified };
    }
    default:
      return { status, headers, body: version.json, lastModified };
  }
}

/**
 * The resource with this id: itself when it has it already (a write's body usually does), else a copy.
 * (Not `{ ...resource, id }`: on Node 20 every property added after a spread costs ~0.9 µs.)
 */
function withIdOf(resource: FhirResource, id: string): FhirResource {
  return resource.id === id ? resource : { ...resource, id };
}

/** Patient compartments of a resource (the hook from src/fhir/search/, or the resource itself if a Patient). */
export function patientsOf(context: FhirContext, resource: FhirResource, id: string): string[] {
  if (context.patientsOf) return context.patientsOf(withIdOf(resource, id));
  return resource.resourceType === 'Patient' ? [`Patient/${id}`] : [];
}

/**
 * Is `resource` the same content as the stored version (meta.versionId and meta.lastUpdated aside)? Compared as
 * canonical JSON (member order aside; strings by value; numbers as written, so `1.50` is not `1.5`).
 */
export function sameContent(stored: StoredVersion, resource: FhirResource): boolean {
  if (stored.json === undefined || stored.deleted) return false;
  // Serialised as the store would with the stored version's meta: equal text is the common case of a re-sent body.
  const text = serialiseVersion(resource, stored.id, stored.versionId, stored.lastUpdated);
  if (text === stored.json) return true;
  // Both texts come from the same serialiser, so the same content differs at most in member order: same length.
  return text.length === stored.json.length && canonicalizeText(text) === canonicalizeText(stored.json);
}

/** Fails to compile when WriteRequest gains a field that `writeVersion` does not pass on. */
type WriteFieldsPassed =
  | 'resourceType'
  | 'id'
  | 'resource'
  | 'method'
  | 'ifMatch'
  | 'ifNoneExist'
  | 'unchanged'
  | 'patients'
  | 'index'
  | 'custodian'
  | 'actor'
  | 'anchor';
const everyWriteFieldPassed: Exclude<keyof WriteRequest, WriteFieldsPassed> extends never ? true : never =
  true;
void everyWriteFieldPassed;

/** The write permission: 404 for a target the caller may not see (canWrite throws it), 403 (audited) otherwise. */
export function assertCanWrite(
  context: FhirContext,
  method: WriteRequest['method'],
  resourceType: string,
  id: string,
  existing: StoredVersion | undefined,
  patients: string[],
): void {
  if (context.access.canWrite(resourceType, existing, patients, id)) return;
  context.access.audit?.({
    interaction: method,
    resourceType,
    id,
    allowed: false,
    patients,
    custodian: existing?.custodian,
  });
  throw fhirError('access-denied', `You may not write ${resourceType}/${id}`);
}

/**
 * The one path every write takes to the store, in this order: the write permission (a target the caller may not
 * see is answered as an unknown id: canWrite throws that 404), then the If-Match precondition against the target
 * (`existing`: the current version as read, or undefined), then index rows, compartments, custodian and the anchor
 * hook filled in from the context. A PUT or PATCH whose result is identical to the current version stores
 * nothing and returns that version (same versionId as `existing`); an update-as-create stores only if the id is
 * still unused.
 */
export async function writeVersion(
  context: FhirContext,
  request: Omit<WriteRequest, 'patients' | 'index' | 'custodian' | 'actor' | 'anchor' | 'unchanged'>,
  existing: StoredVersion | undefined,
): Promise<StoredVersion> {
  const withId = request.resource ? withIdOf(request.resource, request.id) : undefined;
  const patients = withId ? patientsOf(context, withId, request.id) : (existing?.patients ?? []);
  assertCanWrite(context, request.method, request.resourceType, request.id, existing, patients);
  if (request.resourceType === 'SearchParameter') checkSearchParameterWrite(context, request, withId);
  if (request.method !== 'POST') checkIfMatch(request.ifMatch, existing, request.resourceType, request.id);
  const unchanged =
    withId !== undefined &&
    existing !== undefined &&
    (request.method === 'PUT' || request.method === 'PATCH') &&
    sameContent(existing, withId);
  // Pinned to the version decided on: a no-op only if it is still current; a PUT of a new id only if still unused.
  const ifMatch = unchanged ? existing.versionId : request.ifMatch;
  const ifNoneExist = request.ifNoneExist ?? (request.method === 'PUT' && !existing ? true : undefined);
  try {
    // Listed property by property, not spread from `request` (see withIdOf).
    const version = await context.store.write({
      resourceType: request.resourceType,
      id: request.id,
      resource: withId,
      method: request.method,
      ifMatch,
      ifNoneExist,
      unchanged: unchanged || undefined,
      patients,
      index: withId && !unchanged && context.indexEntries ? context.indexEntries(withId) : undefined,
      custodian: context.access.caller.organization,
      actor: context.access.caller,
      anchor: context.anchor,
    });
    if (request.resourceType === 'SearchParameter' && !unchanged)
      context.searchParameterWritten?.(version, withId);
    return version;
  } catch (err) {
    // Another write came in between: the store's words may name a version this caller does not see.
    if (err instanceof FhirError && err.status === 412 && request.method !== 'POST') {
      if (request.ifMatch === undefined)
        throw fhirError(
          'concurrent-update',
          `${request.resourceType}/${request.id} changed while this request was processed; read it again and retry`,
        );
      throw fhirError(
        'version-conflict',
        `If-Match W/"${request.ifMatch}" does not match: ${request.resourceType}/${request.id} changed`,
      );
    }
    throw err;
  }
}

/**
 * SearchParameters define what the index holds: only admins write them, and an active one must be indexable
 * (src/fhir/search/custom-parameters.ts): 403 or 400 before anything is stored.
 */
function checkSearchParameterWrite(
  context: FhirContext,
  request: Pick<WriteRequest, 'resourceType' | 'id' | 'method'>,
  resource: FhirResource | undefined,
): void {
  if (!mayDefineSearchParameters(context.access.caller.role)) {
    context.access.audit?.({
      interaction: request.method,
      resourceType: 'SearchParameter',
      id: request.id,
      allowed: false,
    });
    throw fhirError('access-denied', 'Only administrators create, change or delete SearchParameters');
  }
  if (!resource) return;
  const definition = readCustomParameter(resource, request.id, 0);
  if (!definition) return;
  for (const base of definition.base) {
    const other = indexedParametersOf(base)?.get(definition.code)?.custom;
    if (other && other.id !== request.id)
      throw fhirError(
        'search-parameter-invalid',
        `SearchParameter/${other.id} already defines '${definition.code}' for ${base}: retire it first`,
        { expression: 'SearchParameter.code' },
      );
  }
}
