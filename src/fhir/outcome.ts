/**
 * The one error type of the FHIR facade. Everything that refuses a request throws a FhirError;
 * the HTTP layer maps it to a status and an OperationOutcome body in one place (src/fhir/http/errors.ts).
 */

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

export class FhirError extends Error {
  readonly status: number;
  readonly outcome: OperationOutcome;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    outcome: OperationOutcome | OperationOutcomeIssue[],
    options: FhirErrorOptions = {},
  ) {
    const oo = Array.isArray(outcome) ? operationOutcome(outcome) : outcome;
    super(oo.issue.map((i) => i.diagnostics ?? i.code).join('; ') || `HTTP ${status}`, {
      cause: options.cause,
    });
    this.name = 'FhirError';
    this.status = status;
    this.outcome = oo;
    this.headers = options.headers ?? {};
  }
}

// The catalogue: one constructor per refusal the facade makes, so status, issue code and wording stay consistent.
const fail =
  (status: number, code: IssueCode) =>
  (diagnostics: string, expression?: string | string[], options?: FhirErrorOptions): FhirError =>
    new FhirError(status, [issue('error', code, diagnostics, expression)], options);

export const badRequest = fail(400, 'invalid');
export const unauthorized = fail(401, 'login');
export const forbidden = fail(403, 'forbidden');
export const notFound = fail(404, 'not-found');
export const methodNotAllowed = fail(405, 'not-supported');
export const notAcceptable = fail(406, 'not-supported');
export const conflict = fail(409, 'conflict');
export const gone = fail(410, 'deleted');
export const preconditionFailed = fail(412, 'conflict');
export const payloadTooLarge = fail(413, 'too-long');
export const unsupportedMediaType = fail(415, 'not-supported');
export const unprocessable = fail(422, 'processing');
export const tooManyRequests = fail(429, 'throttled');
export const notImplemented = fail(501, 'not-supported');
export const serviceUnavailable = fail(503, 'transient');
