/**
 * The one error type of the FHIR facade. Everything that refuses a request throws a FhirError with a code of the
 * error catalogue (src/fhir/error-catalogue.ts: status and FHIR issue code per code); the HTTP layer maps it to a
 * status and an OperationOutcome body in one place (src/fhir/http/errors.ts).
 */
import {
  ERROR_CATALOGUE,
  ERROR_CODE_SYSTEM,
  GENERIC_ERROR_CODE,
  isErrorCode,
  OUTCOME_CATALOGUE,
  OUTCOME_CODE_SYSTEM,
  type ErrorCode,
  type OutcomeCode,
} from './error-catalogue.js';

export {
  ERROR_CODE_SYSTEM,
  OUTCOME_CODE_SYSTEM,
  type ErrorCode,
  type OutcomeCode,
} from './error-catalogue.js';

export type IssueSeverity = 'fatal' | 'error' | 'warning' | 'information';

/** FHIR R4 IssueType codes (http://hl7.org/fhir/R4/valueset-issue-type.html) used by this service. */
export type IssueCode =
  | 'invalid'
  | 'structure'
  | 'required'
  | 'value'
  | 'invariant'
  | 'security'
  | 'login'
  | 'unknown'
  | 'expired'
  | 'forbidden'
  | 'suppressed'
  | 'processing'
  | 'not-supported'
  | 'duplicate'
  | 'multiple-matches'
  | 'not-found'
  | 'deleted'
  | 'too-long'
  | 'code-invalid'
  | 'extension'
  | 'too-costly'
  | 'business-rule'
  | 'conflict'
  | 'transient'
  | 'lock-error'
  | 'no-store'
  | 'exception'
  | 'timeout'
  | 'incomplete'
  | 'throttled'
  | 'informational';

export interface OperationOutcomeIssue {
  /** The validator's rule family of the issue (src/fhir/validation/rule-families.ts). */
  extension?: { url: string; valueCode: string }[];
  severity: IssueSeverity;
  code: IssueCode;
  diagnostics?: string;
  details?: { text?: string; coding?: { system?: string; code?: string; display?: string }[] };
  expression?: string[];
  location?: string[];
}

export interface OperationOutcome {
  resourceType: 'OperationOutcome';
  id?: string;
  issue: OperationOutcomeIssue[];
}

export function operationOutcome(issues: OperationOutcomeIssue[]): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: issues };
}

export function issue(
  severity: IssueSeverity,
  code: IssueCode,
  diagnostics: string,
  expression?: string | string[],
): OperationOutcomeIssue {
  const out: OperationOutcomeIssue = { severity, code, diagnostics };
  if (expression !== undefined) out.expression = Array.isArray(expression) ? expression : [expression];
  return out;
}

export interface FhirErrorOptions {
  /** Extra response headers, e.g. Allow on 405 or WWW-Authenticate on 401. */
  headers?: Record<string, string>;
  cause?: unknown;
}

/** An `information` issue saying what a successful answer did, with its outcome code (error-catalogue.ts). */
export function outcomeIssue(code: OutcomeCode, diagnostics: string): OperationOutcomeIssue {
  return {
    severity: 'information',
    code: OUTCOME_CATALOGUE[code].issue,
    diagnostics,
    details: { coding: [{ system: OUTCOME_CODE_SYSTEM, code }] },
  };
}

/** Does some issue of `outcome` carry this outcome code? */
export function hasOutcomeCode(outcome: OperationOutcome | undefined, code: OutcomeCode): boolean {
  return (outcome?.issue ?? []).some((i) =>
    i.details?.coding?.some((c) => c.system === OUTCOME_CODE_SYSTEM && c.code === code),
  );
}

/** The coding that names a catalogue code in `issue.details.coding`. */
export function errorCoding(code: ErrorCode): { system: string; code: string } {
  return { system: ERROR_CODE_SYSTEM, code };
}

/**
 * The issue with the refusal's catalogue code in its details.coding, unless it already carries a code of ours
 * (a validator's issue keeps its text; a re-thrown entry keeps its code). A new object: issues may be shared.
 */
function withCode(given: OperationOutcomeIssue, code: ErrorCode): OperationOutcomeIssue {
  if (given.details?.coding?.some((c) => c.system === ERROR_CODE_SYSTEM)) return given;
  const details = { ...given.details, coding: [...(given.details?.coding ?? []), errorCoding(code)] };
  return { ...given, details };
}

/** The catalogue code an outcome's issues carry (the first one found), if any. */
export function errorCodeOf(outcome: OperationOutcome): ErrorCode | undefined {
  for (const i of outcome.issue) {
    const coded = i.details?.coding?.find((c) => c.system === ERROR_CODE_SYSTEM)?.code;
    if (isErrorCode(coded)) return coded;
  }
  return undefined;
}

/** The code of an error given by status: the code its issues carry when it has that status, else the generic one. */
function codeForStatus(status: number, issues: OperationOutcomeIssue[]): ErrorCode {
  const carried = errorCodeOf(operationOutcome(issues));
  if (carried && ERROR_CATALOGUE[carried].status === status) return carried;
  return GENERIC_ERROR_CODE[status] ?? (status >= 500 ? 'internal-error' : 'request-invalid');
}

export class FhirError extends Error {
  /** The catalogue code (src/fhir/error-catalogue.ts, docs/errors.md). */
  readonly code: ErrorCode;
  readonly status: number;
  readonly outcome: OperationOutcome;
  readonly headers: Record<string, string>;

  /**
   * `code` is a catalogue code: the status comes from its entry. A number (the older form, kept for callers not
   * yet converted) is taken as the status, with the generic code for it.
   */
  constructor(
    code: ErrorCode | number,
    outcome: OperationOutcome | OperationOutcomeIssue[],
    options: FhirErrorOptions = {},
  ) {
    const status = typeof code === 'number' ? code : ERROR_CATALOGUE[code].status;
    const given = Array.isArray(outcome) ? outcome : outcome.issue;
    const coded: ErrorCode = typeof code === 'number' ? codeForStatus(code, given) : code;
    const issues = given.map((i) => withCode(i, coded));
    const oo: OperationOutcome = Array.isArray(outcome)
      ? operationOutcome(issues)
      : { ...outcome, issue: issues };
    super(oo.issue.map((i) => i.diagnostics ?? i.code).join('; ') || `HTTP ${status}`, {
      cause: options.cause,
    });
    this.name = 'FhirError';
    this.code = coded;
    this.status = status;
    this.outcome = oo;
    this.headers = options.headers ?? {};
  }
}

export interface CodedErrorOptions extends FhirErrorOptions {
  /** The FHIRPath expression(s) of what is refused. */
  expression?: string | string[];
}

/** A refusal of one issue: status and FHIR issue code from the catalogue entry of `code`. */
export function fhirError(code: ErrorCode, diagnostics: string, options: CodedErrorOptions = {}): FhirError {
  const coded = issue('error', ERROR_CATALOGUE[code].issue, diagnostics, options.expression);
  coded.details = { coding: [errorCoding(code)] };
  return new FhirError(code, [coded], options);
}

// The older constructors, one per status: kept so code written against them compiles; each gives the generic code
// of its status. src/ uses fhirError(code, ...) with a specific code.
const fail =
  (code: ErrorCode) =>
  (diagnostics: string, expression?: string | string[], options?: FhirErrorOptions): FhirError =>
    fhirError(code, diagnostics, { ...options, expression });

/** @deprecated use fhirError('<code>', ...) */
export const badRequest = fail('request-invalid');
/** @deprecated use fhirError('<code>', ...) */
export const unauthorized = fail('authentication-required');
/** @deprecated use fhirError('<code>', ...) */
export const forbidden = fail('access-denied');
/** @deprecated use fhirError('<code>', ...) */
export const notFound = fail('resource-not-found');
/** @deprecated use fhirError('<code>', ...) */
export const methodNotAllowed = fail('method-not-allowed');
/** @deprecated use fhirError('<code>', ...) */
export const notAcceptable = fail('format-not-acceptable');
/** @deprecated use fhirError('<code>', ...) */
export const conflict = fail('concurrent-update');
/** @deprecated use fhirError('<code>', ...) */
export const gone = fail('resource-deleted');
/** @deprecated use fhirError('<code>', ...) */
export const preconditionFailed = fail('precondition-failed');
/** @deprecated use fhirError('<code>', ...) */
export const payloadTooLarge = fail('body-too-large');
/** @deprecated use fhirError('<code>', ...) */
export const unsupportedMediaType = fail('media-type-unsupported');
/** @deprecated use fhirError('<code>', ...) */
export const unprocessable = fail('request-unprocessable');
/** @deprecated use fhirError('<code>', ...) */
export const tooManyRequests = fail('rate-limited');
/** @deprecated use fhirError('<code>', ...) */
export const notImplemented = fail('not-implemented');
/** @deprecated use fhirError('<code>', ...) */
export const serviceUnavailable = fail('service-unavailable');
