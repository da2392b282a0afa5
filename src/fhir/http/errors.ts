/**
 * The one place where refusals become HTTP: FhirError -> its status, headers and OperationOutcome; fastify's own
 * errors (body too large, unsupported media type, bad URL ...) -> the matching 4xx OperationOutcome; an unknown
 * route -> 404. The storage failing (disk full, I/O errors: storageFaultOf) is 503 with Retry-After, logged once
 * per condition, not per request. Anything else is a bug: logged with its stack, answered 500 with no internals.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  errorCodeOf,
  FhirError,
  fhirError,
  issue,
  operationOutcome,
  type OperationOutcome,
} from '../outcome.js';
import { ERROR_CATALOGUE, GENERIC_ERROR_CODE, type ErrorCode } from '../error-catalogue.js';
import { JsonSyntaxError } from '../fhir-json.js';
import { jsonSyntaxError } from '../interactions/router.js';
import { storageFaultError, storageFaultOf, StorageFaultLog } from '../store/storage-fault.js';

const OUTCOME_TYPE = 'application/fhir+json; charset=utf-8';

/**
 * Set by the FHIR routes on a request whose client negotiated XML (Accept or `_format`): its OperationOutcomes are
 * written as XML too. Any failure to do so falls back to JSON (an error answer must not fail).
 */
export interface XmlOutcomeRequest {
  fhirOutcomeXml?: (outcome: OperationOutcome) => { type: string; text: string };
}

function outcomeBody(reply: FastifyReply, outcome: OperationOutcome): { type: string; text: string } {
  const asXml = (reply.request as (FastifyRequest & XmlOutcomeRequest) | undefined)?.fhirOutcomeXml;
  if (asXml)
    try {
      return asXml(outcome);
    } catch {
      // JSON below
    }
  return { type: OUTCOME_TYPE, text: JSON.stringify(outcome) };
}

/** fastify's error codes that are the client's fault, with the catalogue code they become. */
const FASTIFY_ERRORS: Record<string, { code: ErrorCode; diagnostics?: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: {
    code: 'body-too-large',
    diagnostics: 'The request body is larger than this server accepts (see --body-limit)',
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    code: 'media-type-unsupported',
    diagnostics:
      'Unsupported Content-Type; send application/fhir+json (or application/json-patch+json for PATCH)',
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'request-invalid' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'body-missing', diagnostics: 'The request body is empty' },
  FST_ERR_CTP_INVALID_TYPE: { code: 'media-type-unsupported' },
  FST_ERR_BAD_URL: { code: 'request-invalid', diagnostics: 'The URL is not valid' },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'body-not-json' },
};

/** A client error as an answer: the status and headers its catalogue code gives. */
function coded(err: FhirError): ReturnType<typeof outcomeOf> {
  return { status: err.status, outcome: err.outcome, headers: err.headers, bug: false };
}

export function sendOutcome(
  reply: FastifyReply,
  status: number,
  outcome: OperationOutcome,
  headers: Record<string, string> = {},
): FastifyReply {
  const { type, text } = outcomeBody(reply, outcome);
  return reply.code(status).headers(headers).header('content-type', type).send(text);
}

/** Status, headers and OperationOutcome for any error; `bug` when it is not the client's fault. */
export function outcomeOf(err: unknown): {
  status: number;
  outcome: OperationOutcome;
  headers: Record<string, string>;
  bug: boolean;
} {
  if (err instanceof FhirError)
    return {
      status: err.status,
      outcome: err.outcome,
      headers: err.headers,
      bug: err.status >= 500 && err.status !== 503,
    };
  const storage = storageFaultError(err);
  if (storage) return coded(storage);
  if (err instanceof JsonSyntaxError) return coded(jsonSyntaxError(err));
  const fastifyError = err as Partial<FastifyError>;
  const known = fastifyError.code ? FASTIFY_ERRORS[fastifyError.code] : undefined;
  if (known) return coded(fhirError(known.code, known.diagnostics ?? fastifyError.message ?? 'Bad request'));
  const status = fastifyError.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    // Another client error of fastify's: the generic code of its status (the status is the catalogue's).
    const code = GENERIC_ERROR_CODE[status] ?? 'request-invalid';
    return coded(fhirError(code, fastifyError.message ?? `HTTP ${status}`));
  }
  const internal = operationOutcome([
    issue(
      'fatal',
      'exception',
      'Internal server error; the request id in X-Request-Id identifies it in the logs',
    ),
  ]);
  return { status: 500, outcome: new FhirError('internal-error', internal).outcome, headers: {}, bug: true };
}

const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function installErrorHandling(app: FastifyInstance, options: { logValues: boolean }): void {
  const storage = new StorageFaultLog(app.log, 'requests');
  app.setErrorHandler((err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const { status, outcome, headers, bug } = outcomeOf(err);
    const fault = storageFaultOf(err);
    if (fault)
      storage.fault(fault, err); // once per condition, not per request
    else if (bug) request.log.error({ err }, 'unhandled error');
    // A refusal's text quotes ids and field values: logged only when the operator asked for values. Its catalogue
    // code (docs/errors.md) names only the kind of refusal, so it is always logged.
    else if (options.logValues)
      request.log.info(
        { status, error: errorCodeOf(outcome), issue: outcome.issue[0]?.diagnostics },
        'request refused',
      );
    else
      request.log.info(
        { status, error: errorCodeOf(outcome), code: outcome.issue[0]?.code },
        'request refused',
      );
    return sendOutcome(reply, status, outcome, headers);
  });
  // A write that succeeds ends the condition (logged once).
  app.addHook('onResponse', (request, reply, done) => {
    if (storage.active && WRITES.has(request.method) && reply.statusCode < 400) storage.cleared();
    done();
  });
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) =>
    sendOutcome(
      reply,
      ERROR_CATALOGUE['endpoint-not-found'].status,
      fhirError('endpoint-not-found', `Nothing at ${request.method} ${request.url.split('?')[0]}`).outcome,
    ),
  );
}
