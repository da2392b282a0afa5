/**
 * The one place where refusals become HTTP: FhirError -> its status, headers and OperationOutcome; fastify's own
 * errors (body too large, unsupported media type, bad URL ...) -> the matching 4xx OperationOutcome; an unknown
 * route -> 404. The storage failing (disk full, I/O errors: storageFaultOf) is 503 with Retry-After, logged once
 * per condition, not per request. Anything else is a bug: logged with its stack, answered 500 with no internals.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { FhirError, issue, operationOutcome, type IssueCode, type OperationOutcome } from '../outcome.js';
import { JsonSyntaxError } from '../fhir-json.js';
import { jsonSyntaxError } from '../interactions/router.js';
import { storageFaultError, storageFaultOf, StorageFaultLog } from '../store/storage-fault.js';

const OUTCOME_TYPE = 'application/fhir+json; charset=utf-8';

/** fastify's error codes that are the client's fault, with the status and issue code they become. */
const FASTIFY_ERRORS: Record<
  string,
  { status: number; code: IssueCode; diagnostics?: (err: FastifyError) => string }
> = {
  FST_ERR_CTP_BODY_TOO_LARGE: {
    status: 413,
    code: 'too-long',
    diagnostics: () => 'The request body is larger than this server accepts (see --body-limit)',
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: 'not-supported',
    diagnostics: () =>
      'Unsupported Content-Type; send application/fhir+json (or application/json-patch+json for PATCH)',
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'invalid' },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    status: 400,
    code: 'invalid',
    diagnostics: () => 'The request body is empty',
  },
  FST_ERR_CTP_INVALID_TYPE: { status: 415, code: 'not-supported' },
  FST_ERR_BAD_URL: { status: 400, code: 'invalid', diagnostics: () => 'The URL is not valid' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'invalid' },
};

export function sendOutcome(
  reply: FastifyReply,
  status: number,
  outcome: OperationOutcome,
  headers: Record<string, string> = {},
): FastifyReply {
  return reply
    .code(status)
    .headers(headers)
    .header('content-type', OUTCOME_TYPE)
    .send(JSON.stringify(outcome));
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
  if (storage) return { status: 503, outcome: storage.outcome, headers: storage.headers, bug: false };
  if (err instanceof JsonSyntaxError) {
    const fhirError = jsonSyntaxError(err);
    return { status: 400, outcome: fhirError.outcome, headers: {}, bug: false };
  }
  const fastifyError = err as Partial<FastifyError>;
  const known = fastifyError.code ? FASTIFY_ERRORS[fastifyError.code] : undefined;
  if (known) {
    const diagnostics =
      known.diagnostics?.(fastifyError as FastifyError) ?? fastifyError.message ?? 'Bad request';
    return {
      status: known.status,
      outcome: operationOutcome([issue('error', known.code, diagnostics)]),
      headers: {},
      bug: false,
    };
  }
  const status = fastifyError.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return {
      status,
      outcome: operationOutcome([issue('error', 'invalid', fastifyError.message ?? `HTTP ${status}`)]),
      headers: {},
      bug: false,
    };
  }
  return {
    status: 500,
    outcome: operationOutcome([
      issue(
        'fatal',
        'exception',
        'Internal server error; the request id in X-Request-Id identifies it in the logs',
      ),
    ]),
    headers: {},
    bug: true,
  };
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
    // A refusal's text quotes ids and field values: logged only when the operator asked for values.
    else if (options.logValues)
      request.log.info({ status, issue: outcome.issue[0]?.diagnostics }, 'request refused');
    else request.log.info({ status, code: outcome.issue[0]?.code }, 'request refused');
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
      404,
      operationOutcome([
        issue('error', 'not-found', `Nothing at ${request.method} ${request.url.split('?')[0]}`),
      ]),
    ),
  );
}
