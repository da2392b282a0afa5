/**
 * The Bulk Data status and file endpoints, beside the FHIR routes under the same prefix (so the same
 * authentication hook runs first):
 *
 *   GET    [base]/bulk/export/{job}          202 + X-Progress + Retry-After, or 200 + the manifest (application/json)
 *   DELETE [base]/bulk/export/{job}          202: cancelled, its files deleted; the job is unknown afterwards
 *   GET    [base]/bulk/export/{job}/{file}   the NDJSON file (application/fhir+ndjson), for the job's owner only
 *   GET|DELETE [base]/bulk/import/{job}, GET [base]/bulk/import/{job}/{file}: the same for `$import`
 *
 * A job is its owner's (the token's participant); any other caller gets the answer of an unknown job. Errors are
 * FhirErrors, answered as OperationOutcomes by the app's one error handler.
 */
import { createReadStream, statSync } from 'node:fs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AccessPolicy } from '../fhir/interactions/access-policy.js';
import { issue } from '../fhir/outcome.js';
import type { JobStatusAnswer } from './bulk-export.js';

/** What the routes ask of a kind of job ($export, $import). */
export interface JobEndpoints {
  status(owner: string, id: string): Promise<JobStatusAnswer>;
  cancel(owner: string, id: string): Promise<void>;
  /** The path of one of a completed job's files. */
  file(owner: string, id: string, name: string): Promise<string>;
}

export interface BulkRoutesOptions {
  prefix: string;
  /** By kind, as it appears in the URLs: `export`, `import`. */
  kinds: Record<string, JobEndpoints>;
  /** The request's access policy (the auth hook's), as the FHIR routes get it. */
  accessFor(request: FastifyRequest): AccessPolicy;
}

export function registerBulkRoutes(app: FastifyInstance, options: BulkRoutesOptions): void {
  const { prefix } = options;
  const owner = (request: FastifyRequest): string => options.accessFor(request).caller.participant;
  type JobParams = { job: string };
  type FileParams = { job: string; file: string };

  for (const [kind, jobs] of Object.entries(options.kinds)) {
    app.get<{ Params: JobParams }>(`${prefix}/bulk/${kind}/:job`, async (request, reply) => {
      const answer = await jobs.status(owner(request), request.params.job);
      reply.code(answer.status).headers(answer.headers);
      return answer.body === undefined ? reply.send() : reply.send(JSON.stringify(answer.body));
    });

    app.delete<{ Params: JobParams }>(`${prefix}/bulk/${kind}/:job`, async (request, reply) => {
      await jobs.cancel(owner(request), request.params.job);
      const outcome = {
        resourceType: 'OperationOutcome',
        issue: [issue('information', 'informational', `Job ${request.params.job} cancelled`)],
      };
      return reply
        .code(202)
        .header('content-type', 'application/fhir+json; charset=utf-8')
        .send(JSON.stringify(outcome));
    });

    app.get<{ Params: FileParams }>(`${prefix}/bulk/${kind}/:job/:file`, async (request, reply) => {
      const path = await jobs.file(owner(request), request.params.job, request.params.file);
      return reply
        .code(200)
        .header('content-type', 'application/fhir+ndjson')
        .header('content-length', String(statSync(path).size))
        .header('cache-control', 'no-store')
        .send(createReadStream(path));
    });
  }
}
