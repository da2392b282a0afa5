/**
 * The catalogue of refusals: every error the service answers carries one of these stable codes (in each issue's
 * `details.coding`, system ERROR_CODE_SYSTEM), beside FHIR's own `issue.code`. An entry fixes the HTTP status and
 * the FHIR issue code, so a throw site names only the kind of refusal and its diagnostics. docs/errors.md lists
 * every entry (test/fhir/error-catalogue.test.ts checks both agree). A published code is never renamed, reused for
 * another meaning or removed: clients act on it.
 *
 * Privacy: a code names what the client can do about a refusal, never what the server knows. A resource the caller
 * may not see is refused exactly as an absent one (`resource-not-found`); there is no code for "hidden".
 */
import type { IssueCode } from './outcome.js';

/** The code system of this service's error codes (docs/errors.md). */
export const ERROR_CODE_SYSTEM = 'https://hie-ledger.dev/fhir/CodeSystem/error';

export interface ErrorCatalogueEntry {
  status: number;
  issue: IssueCode;
  /** One line: what the refusal means for the client. */
  meaning: string;
}

export const ERROR_CATALOGUE = {
  // The request as HTTP: its URL, method, media types and body
  'request-invalid': {
    status: 400,
    issue: 'invalid',
    meaning:
      'The request is malformed in a way no more specific code names (e.g. a bad URL or Content-Length)',
  },
  'endpoint-not-found': { status: 404, issue: 'not-found', meaning: 'No FHIR endpoint answers at this path' },
  'resource-type-unsupported': {
    status: 404,
    issue: 'not-found',
    meaning: 'The URL names a resource type this server does not serve',
  },
  'operation-unsupported': {
    status: 404,
    issue: 'not-found',
    meaning: 'The URL names an operation ($name) this server does not offer at that level',
  },
  'method-not-allowed': {
    status: 405,
    issue: 'not-supported',
    meaning: 'The HTTP method (or Bundle entry method) is not allowed here; the Allow header lists what is',
  },
  'format-not-acceptable': {
    status: 406,
    issue: 'not-supported',
    meaning:
      'Accept or _format asks for a format or FHIR version this server does not serve (it serves R4 JSON and XML)',
  },
  'body-too-large': {
    status: 413,
    issue: 'too-long',
    meaning: 'The request body is larger than this server accepts (--body-limit)',
  },
  'media-type-unsupported': {
    status: 415,
    issue: 'not-supported',
    meaning: 'The Content-Type (or its charset or fhirVersion) is not one this interaction takes',
  },
  'body-missing': {
    status: 400,
    issue: 'invalid',
    meaning: 'The interaction needs a body and none was sent',
  },
  'body-not-json': {
    status: 400,
    issue: 'invalid',
    meaning: 'The body is not well-formed JSON text (bad syntax or not UTF-8); diagnostics name where',
  },
  'body-not-xml': {
    status: 400,
    issue: 'invalid',
    meaning:
      'The body is sent as XML but is not well-formed FHIR R4 XML (syntax, namespace, unknown or misordered element, bad value, nesting deeper than 100); diagnostics name where',
  },
  'xml-doctype-refused': {
    status: 400,
    issue: 'security',
    meaning:
      'The XML body has a DOCTYPE: FHIR XML declares no DTD or entities (refused, never expanded or fetched)',
  },
  'body-not-resource': {
    status: 400,
    issue: 'invalid',
    meaning:
      'The body is JSON but not the FHIR resource the interaction needs (not an object, no resourceType)',
  },
  'resource-type-mismatch': {
    status: 400,
    issue: 'invalid',
    meaning: "The body's resourceType is not the type the URL names",
  },
  'resource-id-mismatch': {
    status: 400,
    issue: 'invalid',
    meaning: "The body's id is missing or is not the id the URL (or the conditional match) names",
  },
  'id-invalid': {
    status: 400,
    issue: 'invalid',
    meaning: 'An id is not a valid FHIR id ([A-Za-z0-9-.]{1,64})',
  },

  // Resources and versions
  'resource-not-found': {
    status: 404,
    issue: 'not-found',
    meaning: 'No such resource or version for this caller (absent and not visible are refused alike)',
  },
  'resource-deleted': {
    status: 410,
    issue: 'deleted',
    meaning: 'The resource (or version) is a deletion; its history may still be read',
  },
  'resource-exists': {
    status: 412,
    issue: 'conflict',
    meaning: 'A create with a given id found a resource already stored under that id',
  },
  'version-conflict': {
    status: 412,
    issue: 'conflict',
    meaning: 'If-Match names a version that is not the current one; read the resource again',
  },
  'if-match-invalid': {
    status: 412,
    issue: 'conflict',
    meaning: 'If-Match names no version (expected W/"n")',
  },
  'concurrent-update': {
    status: 409,
    issue: 'conflict',
    meaning: 'The resource changed while the request was processed; read it again and retry',
  },
  'conditional-criteria-missing': {
    status: 400,
    issue: 'invalid',
    meaning: 'A conditional request (If-None-Exist, conditional URL) has no search criteria',
  },
  'conditional-multiple-matches': {
    status: 412,
    issue: 'conflict',
    meaning: "A conditional request's criteria match more than one resource",
  },
  'conditional-unavailable': {
    status: 412,
    issue: 'conflict',
    meaning: 'A conditional request cannot be evaluated here (no search, or not for this caller)',
  },
  'conditional-reference-no-match': {
    status: 400,
    issue: 'not-found',
    meaning:
      'A conditional reference (Type?criteria) in a batch or transaction entry matches no resource the caller may see',
  },

  // Validation and content rules
  'resource-invalid': {
    status: 400,
    issue: 'invalid',
    meaning: 'The resource is not valid FHIR R4; each issue says where and why',
  },
  'resource-rule-violated': {
    status: 422,
    issue: 'business-rule',
    meaning: "The resource is valid R4 but breaks a profile or this server's business rules",
  },
  'patch-invalid': {
    status: 400,
    issue: 'invalid',
    meaning: 'The PATCH body is not a well-formed JSON Patch, FHIRPath Patch or XML Patch',
  },
  'patch-not-applicable': {
    status: 422,
    issue: 'processing',
    meaning: 'The patch is well-formed but cannot be applied to the current resource',
  },
  'patch-result-invalid': {
    status: 422,
    issue: 'processing',
    meaning: 'The patched resource would not be valid; each issue says where and why',
  },
  'consent-not-enforceable': {
    status: 422,
    issue: 'processing',
    meaning: 'The Consent is valid FHIR but states grants this service cannot enforce as written',
  },
  'bundle-invalid': {
    status: 400,
    issue: 'invalid',
    meaning: 'A batch or transaction Bundle (or one of its entries) is malformed; diagnostics name the entry',
  },
  'import-reference-unresolved': {
    status: 422,
    issue: 'not-found',
    meaning:
      'Bulk import: a relative or urn:uuid reference resolves neither in the import nor in the store (rejected alone)',
  },
  'import-reference-rejected': {
    status: 422,
    issue: 'processing',
    meaning:
      'Bulk import: a reference names a resource of the same import that was rejected (named in diagnostics)',
  },
  'import-consent-refused': {
    status: 422,
    issue: 'not-supported',
    meaning: 'Bulk import: Consent resources are refused (--consents refuse, the default)',
  },
  'import-bundle-rolled-back': {
    status: 422,
    issue: 'processing',
    meaning:
      'Bulk import with --atomic-bundles: another entry of the same transaction Bundle was rejected, so this one was not stored',
  },
  'import-remote-refused': {
    status: 422,
    issue: 'processing',
    meaning:
      "Bulk import to a running service (--url): the service refused this resource's write (its own issues follow)",
  },

  // Query and operation parameters
  'parameter-invalid': {
    status: 400,
    issue: 'invalid',
    meaning:
      'A request or operation parameter (not a search parameter) has a value this server does not accept',
  },
  'parameter-missing': { status: 400, issue: 'invalid', meaning: 'An operation lacks a parameter it needs' },
  'parameter-unsupported': {
    status: 400,
    issue: 'not-supported',
    meaning:
      'An operation with a defined parameter subset (e.g. $network-everything) got a parameter outside it',
  },
  'respond-async-required': {
    status: 400,
    issue: 'invalid',
    meaning: 'A Bulk Data request ($export, $import) runs asynchronously: send Prefer: respond-async',
  },
  'bulk-job-not-found': {
    status: 404,
    issue: 'not-found',
    meaning:
      "No such bulk job or file for this client (unknown, another client's, cancelled and expired are answered alike)",
  },
  'bulk-job-failed': {
    status: 500,
    issue: 'exception',
    meaning: 'The bulk job stopped on an error; its OperationOutcome says why; start a new one',
  },
  'page-cursor-invalid': {
    status: 400,
    issue: 'invalid',
    meaning: 'A paging cursor is not valid (any more); start again from the first page',
  },
  'search-param-invalid': {
    status: 400,
    issue: 'invalid',
    meaning: 'A search parameter is malformed or its value is not valid for its type',
  },
  'search-param-unsupported': {
    status: 400,
    issue: 'not-supported',
    meaning:
      'A search parameter, modifier or value this server cannot apply, or at system level one not common to all resources (refused unless Prefer: handling=lenient)',
  },
  'search-parameter-invalid': {
    status: 400,
    issue: 'invalid',
    meaning:
      'An active SearchParameter this server cannot index: its type, base, code (a base parameter already) or expression (a refused function such as resolve() is named)',
  },
  'search-limit-exceeded': {
    status: 400,
    issue: 'invalid',
    meaning: "A search exceeds this server's limits (parameters, values, OR values, chain depth, includes)",
  },
  'search-too-costly': {
    status: 400,
    issue: 'too-costly',
    meaning: 'The search would cost this server too much to answer; narrow it',
  },
  'terminology-not-found': {
    status: 404,
    issue: 'not-found',
    meaning: 'The CodeSystem, ValueSet, ConceptMap or code named is not known to this server',
  },
  'not-implemented': {
    status: 501,
    issue: 'not-supported',
    meaning: 'The interaction is recognised but this server (or its store) does not implement it',
  },

  // Authentication and access
  'authentication-required': {
    status: 401,
    issue: 'login',
    meaning: 'The request has no credentials this server accepts; obtain a token (Bearer)',
  },
  'token-invalid': {
    status: 401,
    issue: 'login',
    meaning: 'The bearer token is malformed, not signed by this server, or its client was revoked',
  },
  'token-expired': { status: 401, issue: 'login', meaning: 'The bearer token has expired; obtain a new one' },
  'scope-insufficient': {
    status: 403,
    issue: 'forbidden',
    meaning: "The token's scopes do not allow this interaction on this type",
  },
  'access-reason-required': {
    status: 403,
    issue: 'forbidden',
    meaning: 'An administrator reads clinical data only with a recorded reason (X-Access-Reason)',
  },
  'access-denied': {
    status: 403,
    issue: 'forbidden',
    meaning: 'The caller may not perform this interaction (its role or the grants do not allow it)',
  },
  'consent-not-custodian': {
    status: 403,
    issue: 'forbidden',
    meaning: "Only the patient's home organisation's service may record this Consent's grants",
  },

  // Patient identity across members (docs/exchange.md, "Linking a patient across members")
  'link-token-invalid': {
    status: 400,
    issue: 'invalid',
    meaning:
      'The link token is not for this member, altered, expired, already used or not signed by an active member; ask the home for a new one',
  },
  'link-demographics-mismatch': {
    status: 422,
    issue: 'business-rule',
    meaning:
      "The home's demographics do not match this Patient above the documented score; nothing was linked",
  },
  'link-conflict': {
    status: 409,
    issue: 'conflict',
    meaning:
      'Another local Patient is linked to that network patient and not marked as the same person (Patient.link)',
  },
  'link-not-found': {
    status: 404,
    issue: 'not-found',
    meaning: 'The Patient is not linked to a network patient',
  },
  'link-not-home': {
    status: 409,
    issue: 'conflict',
    meaning:
      "The operation belongs to the patient's home, and this service is not (or it is, where a custodian's is asked)",
  },
  'network-token-scope': {
    status: 403,
    issue: 'forbidden',
    meaning:
      'A network token opens only the network operations ($network-locate, $network-records, $network-deliver)',
  },
  'network-too-many': {
    status: 400,
    issue: 'too-costly',
    meaning:
      'More records match than one network answer carries (--network-max-records); narrow with _type or _since',
  },
  'member-not-registered': {
    status: 409,
    issue: 'business-rule',
    meaning: 'This service has no exchange service key: register it in the member directory first',
  },
  'network-save-invalid': {
    status: 400,
    issue: 'invalid',
    meaning:
      'The $network-save body is not a Bundle of fetched records each with the Provenance it came with (or one cannot be saved for this Patient); nothing was saved',
  },
  'network-save-unverified': {
    status: 422,
    issue: 'processing',
    meaning:
      'A record to save does not verify against the ledger now (failed, or not yet provable); nothing was saved',
  },

  // Push: documents sent to another member (docs/exchange.md, "Push")
  'network-send-invalid': {
    status: 422,
    issue: 'business-rule',
    meaning:
      'The Composition cannot be sent as a document: its subject is not a Patient of this service you may read, or it is too large',
  },
  'network-send-refused': {
    status: 403,
    issue: 'forbidden',
    meaning:
      "No live grant of the patient (at this service, the patient's home) lets the recipient receive every record of the document; nothing was sent",
  },
  'network-send-not-anchored': {
    status: 409,
    issue: 'conflict',
    meaning: 'A record of the document is not yet anchored on the ledger; retry after Retry-After',
  },
  'network-send-failed': {
    status: 502,
    issue: 'exception',
    meaning:
      'The recipient member could not be reached, refused the token or refused the document (its error code is named); the document was not delivered',
  },
  'network-send-retry': {
    status: 503,
    issue: 'transient',
    meaning:
      "The recipient member cannot take the document yet (its ledger has not seen this service's anchors); retry after Retry-After",
  },
  'network-deliver-invalid': {
    status: 400,
    issue: 'invalid',
    meaning:
      'The delivery is not a Parameters with patient, recipient and a document Bundle (identifier, Composition first, its subject Patient, evidence for every record)',
  },
  'network-deliver-unverified': {
    status: 422,
    issue: 'processing',
    meaning:
      "A record of the document failed verification against the sender's anchors (each is named); nothing was stored",
  },
  'network-deliver-pending': {
    status: 503,
    issue: 'transient',
    meaning:
      "This member's ledger does not hold the sender's anchors of the document yet; nothing was stored, retry after Retry-After",
  },

  // The service's own state
  'precondition-failed': {
    status: 412,
    issue: 'conflict',
    meaning: 'A precondition of the request does not hold (no more specific code names it)',
  },
  'request-unprocessable': {
    status: 422,
    issue: 'processing',
    meaning: 'The request is well-formed but cannot be processed (no more specific code names it)',
  },
  'rate-limited': { status: 429, issue: 'throttled', meaning: 'Too many requests; retry after Retry-After' },
  'internal-error': {
    status: 500,
    issue: 'exception',
    meaning: 'A fault of this server; X-Request-Id identifies it in the logs',
  },
  'storage-unavailable': {
    status: 503,
    issue: 'transient',
    meaning: 'The storage cannot take writes or reads now (disk full, I/O error); retry after Retry-After',
  },
  'ledger-unavailable': {
    status: 503,
    issue: 'transient',
    meaning: 'The ledger cannot be read or written now (or disagrees with this service); retry later',
  },
  'ledger-behind': {
    status: 503,
    issue: 'transient',
    meaning:
      "This member's view of the ledger's grants is behind (or stopped): network requests wait; retry after Retry-After",
  },
  'audit-unavailable': {
    status: 503,
    issue: 'transient',
    meaning: 'The audit trail cannot be stored now, so no request is served; retry after Retry-After',
  },
  'service-unavailable': {
    status: 503,
    issue: 'transient',
    meaning: 'The service cannot answer now (no more specific code names why); retry later',
  },
} as const satisfies Record<string, ErrorCatalogueEntry>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/**
 * The codes of what a successful answer did, in the `information` issues of its OperationOutcome (their
 * `details.coding`, system OUTCOME_CODE_SYSTEM): stable like the error codes, so a client acts on the code, not on
 * the diagnostics' prose (`hie-ledger import --url` counts "unchanged" by it). Never a refusal: their own system,
 * so no error code reader (errorCodeOf) mistakes one for a refusal. docs/errors.md lists them.
 */
export const OUTCOME_CODE_SYSTEM = 'https://hie-ledger.dev/fhir/CodeSystem/outcome';

export interface OutcomeCatalogueEntry {
  issue: IssueCode;
  /** One line: what the answer did. */
  meaning: string;
}

export const OUTCOME_CATALOGUE = {
  'write-unchanged': {
    issue: 'informational',
    meaning:
      'The write (PUT, PATCH, a Bundle entry) sent the content of the current version: nothing stored, the answer names the current version',
  },
} as const satisfies Record<string, OutcomeCatalogueEntry>;

export type OutcomeCode = keyof typeof OUTCOME_CATALOGUE;

/** The code a refusal with this status gets when nothing more specific is known (fastify's own 4xx, old call sites). */
export const GENERIC_ERROR_CODE: Readonly<Record<number, ErrorCode>> = {
  400: 'request-invalid',
  401: 'authentication-required',
  403: 'access-denied',
  404: 'endpoint-not-found',
  405: 'method-not-allowed',
  406: 'format-not-acceptable',
  409: 'concurrent-update',
  410: 'resource-deleted',
  412: 'precondition-failed',
  413: 'body-too-large',
  415: 'media-type-unsupported',
  422: 'request-unprocessable',
  429: 'rate-limited',
  500: 'internal-error',
  501: 'not-implemented',
  503: 'service-unavailable',
};

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CATALOGUE, value);
}
