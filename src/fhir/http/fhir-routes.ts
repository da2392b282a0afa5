/**
 * The FHIR REST API over HTTP: one catch-all route under the base that turns an HTTP request into a FhirRequest,
 * lets the router and registry pick the interaction, and sends the FhirResponse back. Bodies are kept as text
 * (parseAs: 'string') so the interactions parse them losslessly; stored resources are sent as stored unless
 * `_pretty`, `_summary` or `_elements` ask for a different shape.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OpenAccess, type AccessPolicy } from '../interactions/access-policy.js';
import { firstInvalidUtf8, parseFhirJson, stringifyFhirJson, type FhirResource } from '../fhir-json.js';
import { isUtf8 } from 'node:buffer';
import { type FhirError, fhirError } from '../outcome.js';
import { applyRepresentation, representationOf } from '../interactions/representation.js';
import type { FhirRegistry } from '../interactions/fhir-registry.js';
import { FhirRouter, classifyBundlePost, type HttpMethod } from '../interactions/router.js';
import type { FhirContext, FhirRequest, FhirResponse } from '../interactions/types.js';
import { emptyQuery, parseQuery } from '../query.js';
import { BODY_MEDIA_TYPES, FHIR_JSON, XML_FORMATS, XML_MEDIA_TYPES } from '../media-types.js';
import type { FhirXml } from '../fhir-xml.js';
import {
  isXmlType,
  negotiateResponseType,
  preferAsyncOf,
  preferHandlingOf,
  preferReturnOf,
  requestMediaType,
} from './negotiation.js';
import type { RouteLogConfig } from './server.js';
import type { XmlOutcomeRequest } from './errors.js';

export interface FhirRoutesOptions {
  /** Mount point of the FHIR base, e.g. `/fhir`. */
  prefix: string;
  registry: FhirRegistry;
  /** The request-independent part of every FhirContext (store, validator, hooks). */
  context: Omit<FhirContext, 'access' | 'log' | 'registry'>;
  /** The caller's access policy; by default the one the auth hook attached, else OpenAccess. */
  accessFor?: (request: FastifyRequest) => AccessPolicy;
  /** Public base URL of the FHIR endpoint (no trailing slash); derived from the request's Host when absent. */
  publicBaseUrl?: string;
  /** FHIR XML in and out (bodies converted to JSON text on arrival, responses to XML last); absent: XML is 415/406. */
  xml?: FhirXml;
}

const METHODS: HttpMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];
const SINGLE_RESOURCE = new Set(['read', 'vread']);

const openAccess = new OpenAccess();

/** 400 naming the offset of the first byte that is not UTF-8 (RFC 8259 §8.1: JSON text is UTF-8). */
function invalidUtf8(bytes: Buffer): FhirError {
  const at = firstInvalidUtf8(bytes);
  return fhirError(
    'body-not-json',
    `The body is not valid UTF-8: byte ${at} (0x${bytes[at]?.toString(16) ?? ''}) starts no UTF-8 character`,
  );
}

/**
 * What the metrics label a FHIR request with (set by the route, read in onResponse): the interaction (an
 * operation as `$name`; `unrouted` for a path the router refused) and the resource type. Both come from what is
 * registered, never from the caller: a bounded set of labels.
 */
export interface FhirRouteLabels {
  fhirInteraction?: string;
  fhirResourceType?: string;
}

/**
 * The FhirContext is built field by field below (not spread: see there). This fails to compile when FhirContext
 * gains a field that list does not set.
 */
type ContextFieldsSet =
  | 'store'
  | 'validator'
  | 'indexEntries'
  | 'patientsOf'
  | 'anchor'
  | 'terminology'
  | 'registry'
  | 'access'
  | 'log'
  | 'searchParameterWritten'
  | 'xml';
const everyContextFieldSet: Exclude<keyof FhirContext, ContextFieldsSet> extends never ? true : never = true;
void everyContextFieldSet;

function defaultAccess(request: FastifyRequest): AccessPolicy {
  return (request as FastifyRequest & { hieAccess?: AccessPolicy }).hieAccess ?? openAccess;
}

/** Query parameters in order, repeated ones kept, in a map without a prototype (fhir/query.ts). */
export { parseQuery };

/**
 * The route template of a path under the FHIR base, for the logs and metrics: ids and version ids become `:id` and
 * `:vid`, unknown types and operations `:type` and `$:operation` (a client may put anything in a path), e.g.
 * `/fhir/Patient/123/_history/2` -> `/fhir/Patient/:id/_history/:vid`. The shapes are those of FhirRouter.
 */
export function fhirPathTemplate(
  prefix: string,
  path: string,
  isResourceType: (type: string) => boolean,
  isOperation: (name: string) => boolean,
): string {
  const segments = path
    .slice(prefix.length)
    .split('/')
    .filter((s) => s !== '');
  const type = (s: string) => (isResourceType(s) ? s : ':type');
  const operation = (s: string) => (isOperation(s.slice(1)) ? s : '$:operation');
  const [a, b, c, , e] = segments;
  let tail: string[] | undefined;
  switch (segments.length) {
    case 0:
      tail = [];
      break;
    case 1:
      tail = [
        a === 'metadata' || a === '_history' || a === '_search'
          ? a
          : a.startsWith('$')
            ? operation(a)
            : type(a),
      ];
      break;
    case 2:
      tail = [type(a), b === '_history' || b === '_search' ? b : b.startsWith('$') ? operation(b) : ':id'];
      break;
    case 3:
      if (c === '_history' || c.startsWith('$')) tail = [type(a), ':id', c === '_history' ? c : operation(c)];
      break;
    case 4:
      if (c === '_history') tail = [type(a), ':id', c, ':vid'];
      break;
    case 5:
      if (c === '_history' && e.startsWith('$')) tail = [type(a), ':id', c, ':vid', operation(e)];
      break;
  }
  return tail ? `${prefix}${tail.length ? '/' : ''}${tail.join('/')}` : `${prefix}/:unknown`;
}

/** The body's media type as the interactions see it: an XML body has become FHIR JSON text by then. */
function bodyMediaType(contentType: string | undefined, xml: boolean): string | undefined {
  const type = requestMediaType(contentType, xml);
  return type !== undefined && XML_FORMATS.has(type) ? FHIR_JSON : type;
}

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function send(
  reply: FastifyReply,
  response: FhirResponse,
  mediaType: string,
  query: Record<string, string[]>,
  shape: boolean,
  xml: FhirXml | undefined,
): FastifyReply {
  reply.code(response.status);
  if (response.headers) reply.headers(response.headers);
  if (response.body === undefined) return reply.send();
  const pretty = query._pretty?.[0] === 'true';
  const representation = shape && response.status === 200 ? representationOf(query) : undefined;
  const asXml = xml !== undefined && isXmlType(mediaType);
  let text: string;
  if (typeof response.body === 'string' && !pretty && !representation && !asXml) {
    text = response.body;
  } else {
    let body = typeof response.body === 'string' ? parseFhirJson<FhirResource>(response.body) : response.body;
    if (representation) body = applyRepresentation(body, representation);
    text = asXml ? xml.toXml(body, { pretty }) : stringifyFhirJson(body, pretty ? 2 : 0);
  }
  reply.header('content-type', `${mediaType}; charset=utf-8`);
  // HEAD: GET's headers, its Content-Length included, and no body (RFC 9110 §9.3.2), whoever carries the answer.
  if (reply.request.method === 'HEAD') return reply.header('content-length', Buffer.byteLength(text)).send();
  return reply.send(text);
}

/** The request's XML negotiation, for its error answers; never throws (a bad Accept is judged by the route). */
function xmlOutcomeWriter(request: FastifyRequest, xml: FhirXml): XmlOutcomeRequest['fhirOutcomeXml'] {
  const url = request.url;
  const accept = header(request, 'accept');
  if (!url.includes('_format') && !accept?.includes('xml')) return undefined;
  try {
    const q = url.indexOf('?');
    const format = q < 0 ? undefined : parseQuery(url.slice(q + 1))._format?.[0];
    const type = negotiateResponseType(format, accept, true);
    return isXmlType(type)
      ? (outcome) => ({ type: `${type}; charset=utf-8`, text: xml.toXml(outcome) })
      : undefined;
  } catch {
    return undefined;
  }
}

export async function registerFhirRoutes(app: FastifyInstance, options: FhirRoutesOptions): Promise<void> {
  const { registry, prefix } = options;
  const router = new FhirRouter(registry, (type) => options.context.validator.isResourceType(type));
  const accessFor = options.accessFor ?? defaultAccess;
  const shared = options.context;
  // Declared up front so every request object keeps one shape (fastify's advice for per-request properties).
  for (const label of ['fhirInteraction', 'fhirResourceType', 'fhirOutcomeXml'])
    if (!app.hasRequestDecorator(label)) app.decorateRequest(label, undefined);
  const xml = options.xml;

  await app.register(
    async (scope) => {
      // Only these bodies are accepted, all kept as text; anything else is 415 from the error handler. Taken as
      // bytes so that invalid UTF-8 is refused instead of becoming U+FFFD in what is stored.
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser([...BODY_MEDIA_TYPES], { parseAs: 'buffer' }, (_request, body, done) => {
        const bytes = body as Buffer;
        if (isUtf8(bytes)) done(null, bytes.toString('utf8'));
        else done(invalidUtf8(bytes), undefined);
      });
      if (xml) {
        // FHIR XML becomes FHIR JSON text here: the interactions, the validator and the hashes see only JSON.
        scope.addContentTypeParser([...XML_MEDIA_TYPES], { parseAs: 'buffer' }, (_request, body, done) => {
          const bytes = body as Buffer;
          if (!isUtf8(bytes)) return done(invalidUtf8(bytes), undefined);
          try {
            done(null, xml.toJsonText(bytes.toString('utf8')));
          } catch (err) {
            done(err as Error, undefined);
          }
        });
        // Error answers in XML for a client that negotiated it (set before the body is read: parse errors too).
        scope.addHook('onRequest', (request, _reply, done) => {
          (request as FastifyRequest & XmlOutcomeRequest).fhirOutcomeXml = xmlOutcomeWriter(request, xml);
          done();
        });
      } else
        scope.addContentTypeParser([...XML_MEDIA_TYPES], (_request, _payload, done) =>
          done(
            fhirError('media-type-unsupported', 'XML is not supported; send application/fhir+json'),
            undefined,
          ),
        );

      // One piece on purpose: a per-request hot path (bench:rest, bench:import); split it only with a benchmark run.
      const handle = async (request: FastifyRequest, reply: FastifyReply) => {
        const url = request.url;
        const q = url.indexOf('?');
        const path = (q < 0 ? url : url.slice(0, q)).slice(prefix.length);
        const query = q < 0 ? emptyQuery() : parseQuery(url.slice(q + 1));
        const mediaType = negotiateResponseType(
          query._format?.[0],
          header(request, 'accept'),
          xml !== undefined,
        );
        const method = request.method as HttpMethod;
        const labels = request as FastifyRequest & FhirRouteLabels;
        labels.fhirInteraction = 'unrouted';
        const routed = router.route(method === 'HEAD' ? 'GET' : method, path);
        const body = typeof request.body === 'string' ? request.body : undefined;
        const prefer = header(request, 'prefer');
        // Properties listed one by one, not spread from `routed`: V8 clones a spread object through a slow
        // runtime path (measured ~10 µs a request, more than the whole read).
        let fhirRequest: FhirRequest = {
          interaction: routed.interaction,
          resourceType: routed.resourceType,
          id: routed.id,
          versionId: routed.versionId,
          operation: routed.operation,
          compartment: routed.compartment,
          method,
          query,
          body,
          contentType:
            body !== undefined
              ? bodyMediaType(header(request, 'content-type'), xml !== undefined)
              : undefined,
          ifMatch: header(request, 'if-match'),
          ifNoneMatch: header(request, 'if-none-match'),
          ifModifiedSince: header(request, 'if-modified-since'),
          ifNoneExist: header(request, 'if-none-exist'),
          preferReturn: preferReturnOf(prefer),
          preferHandling: preferHandlingOf(prefer),
          preferAsync: preferAsyncOf(prefer),
          baseUrl: options.publicBaseUrl ?? `${request.protocol}://${request.host}${prefix}`,
        };
        if (fhirRequest.interaction === 'batch' || fhirRequest.interaction === 'transaction') {
          fhirRequest = classifyBundlePost(fhirRequest, registry);
        }
        const handler = registry.handlerFor(fhirRequest);
        if (!handler) throw fhirError('not-implemented', `${fhirRequest.interaction} is not implemented`);
        labels.fhirInteraction =
          fhirRequest.interaction === 'operation' ? `$${fhirRequest.operation}` : fhirRequest.interaction;
        labels.fhirResourceType = fhirRequest.resourceType;
        const context: FhirContext = {
          store: shared.store,
          validator: shared.validator,
          indexEntries: shared.indexEntries,
          patientsOf: shared.patientsOf,
          anchor: shared.anchor,
          searchParameterWritten: shared.searchParameterWritten,
          terminology: shared.terminology,
          registry,
          access: accessFor(request),
          log: request.log,
          xml,
        };
        const response = await handler(fhirRequest, context);
        return send(reply, response, mediaType, query, SINGLE_RESOURCE.has(fhirRequest.interaction), xml);
      };

      const config: RouteLogConfig = {
        pathTemplate: (path) =>
          fhirPathTemplate(
            prefix,
            path,
            (type) => shared.validator.isResourceType(type),
            (name) => registry.operation(name) !== undefined,
          ),
      };
      for (const url of ['/', '/*'])
        scope.route({
          method: [...METHODS, 'OPTIONS'],
          url,
          handler: handle,
          exposeHeadRoute: false,
          config,
        });
    },
    { prefix },
  );
}
