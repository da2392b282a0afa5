/**
 * Conditional update, patch and delete over plain HTTP: `PUT`, `PATCH`, `DELETE [base]/[type]?criteria`
 * (http://hl7.org/fhir/R4/http.html#cond-update, #patch, #cdelete). The criteria are a search run as the caller
 * (the registered search handler, refusing what it cannot apply), inside one store transaction with the write, so
 * two such requests cannot both see "no match":
 *
 * - update: no match and no id in the body: a create (201); no match with an id: update as create; one match: an
 *   update of it (the body's id, if any, must be its id: else 400); several: 412.
 * - patch: one match: the patch of it; none: 404 (`resource-not-found`, as an unknown id); several: 412.
 * - delete: one match: its delete; none: nothing deleted (200, or 204 with return=minimal); several: 412.
 *
 * Only records the caller may see match: a record it may not see is no match, so a conditional update by such a
 * caller creates a new record beside the hidden one (the price of answering hidden exactly as absent).
 */
import { fhirError, issue, operationOutcome } from '../outcome.js';
import { stringifyFhirJson, type FhirResource } from '../fhir-json.js';
import { emptyQuery } from '../query.js';
import { conditionalMatches } from './batch.js';
import { assertResourceType, parseResourceBody } from './common.js';
import type { FhirContext, FhirRequest, FhirResponse, InteractionHandler } from './types.js';

export type ConditionalKind = 'update' | 'patch' | 'delete';

export interface ConditionalOptions {
  /**
   * `DELETE [type]?criteria` matching several resources (--delete-multiple): an admin deletes them all, at most
   * `max` (more: 412, nothing deleted), in one transaction. Absent, or any other caller: 412.
   */
  deleteMultiple?: { max: number };
}

/** `handler` for `[type]/[id]`, and its conditional form for `[type]?criteria` (a request without an id). */
export function withConditionalForm(
  kind: ConditionalKind,
  handler: InteractionHandler,
  options: ConditionalOptions = {},
): InteractionHandler {
  return async (request, context) => {
    if (request.id !== undefined) return handler(request, context);
    const resourceType = assertResourceType(context, request.resourceType);
    context.access.authorize(kind, resourceType);
    const role = context.access.caller.role;
    const multiple =
      kind === 'delete' && (role === 'admin' || role === 'open') ? options.deleteMultiple : undefined;
    return context.store.transaction(async (store) => {
      const tx: FhirContext = Object.assign({}, context, { store });
      const matches = await conditionalMatches(
        tx,
        resourceType,
        request.query,
        request.baseUrl,
        multiple ? multiple.max + 1 : 2,
      );
      if (matches.length > 1 && multiple && matches.length <= multiple.max)
        return deleteAll(request, tx, handler, resourceType, matches);
      if (matches.length > 1)
        throw fhirError(
          'conditional-multiple-matches',
          multiple
            ? `The criteria match more than ${multiple.max} ${resourceType} resources (--delete-multiple-max): nothing was deleted`
            : `The criteria match more than one ${resourceType}: nothing was changed`,
        );
      const id: string | undefined = matches[0];
      const plain: FhirRequest = Object.assign({}, request, { query: emptyQuery() });
      if (kind === 'delete') {
        if (id === undefined)
          return {
            status: request.preferReturn === 'minimal' ? 204 : 200,
            body:
              request.preferReturn === 'minimal'
                ? undefined
                : (operationOutcome([
                    issue('information', 'informational', `No ${resourceType} matches: nothing to delete`),
                  ]) as unknown as FhirResource),
          };
        return handler(Object.assign(plain, { id }), tx);
      }
      if (kind === 'patch') {
        if (id === undefined)
          throw fhirError('resource-not-found', `No ${resourceType} matches the criteria: nothing to patch`);
        return handler(Object.assign(plain, { id }), tx);
      }
      const resource = parseResourceBody(request);
      const bodyId = typeof resource.id === 'string' ? resource.id : undefined;
      if (id !== undefined && bodyId !== undefined && bodyId !== id)
        throw fhirError(
          'resource-id-mismatch',
          `The body's id '${bodyId}' is not the id of the ${resourceType} the criteria match`,
          { expression: `${resourceType}.id` },
        );
      if (id === undefined && bodyId === undefined) {
        const create = tx.registry?.handlerFor({ interaction: 'create', resourceType, method: 'POST' });
        if (!create) throw fhirError('method-not-allowed', `create is not supported for ${resourceType}`);
        return create(Object.assign(plain, { interaction: 'create', method: 'POST', resource }), tx);
      }
      const targetId = (id ?? bodyId)!;
      const target = Object.assign({}, resource, { id: targetId });
      return handler(
        Object.assign(plain, { id: targetId, resource: target, body: stringifyFhirJson(target) }),
        tx,
      );
    });
  };
}

/** Deletes every match, one after the other inside the caller's transaction: all of them, or none. */
async function deleteAll(
  request: FhirRequest,
  tx: FhirContext,
  handler: InteractionHandler,
  resourceType: string,
  ids: string[],
): Promise<FhirResponse> {
  for (const id of ids)
    await handler(
      Object.assign({}, request, { query: emptyQuery(), id, preferReturn: 'minimal' as const }),
      tx,
    );
  if (request.preferReturn === 'minimal') return { status: 204 };
  return {
    status: 200,
    body: operationOutcome([
      issue('information', 'informational', `${ids.length} ${resourceType} resources deleted`),
    ]) as unknown as FhirResource,
  };
}
