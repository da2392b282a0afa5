/**
 * batch: POST [base] with a Bundle of type `batch` (http://hl7.org/fhir/R4/http.html#transaction).
 * Each entry is routed by the same URL grammar (router.ts) to the same registered handlers as a single request,
 * so access, validation and audit apply per entry exactly as they do over plain HTTP. Entries are independent:
 * one failing entry gets its own status and OperationOutcome and the others still run.
 *
 * The entry machinery here (parsing entries, conditional update/delete, turning a FhirResponse into a
 * Bundle.entry.response) is shared with transaction.ts.
 */
import { storageFaultError } from '../store/storage-fault.js';
import { randomUUID } from 'node:crypto';
import { FhirError, fhirError, issue, type OperationOutcome } from '../outcome.js';
import { parseFhirJson, stringifyFhirJson, type FhirResource } from '../fhir-json.js';
import { isKnownResourceType } from '../search/definitions.js';
import { FhirRouter, parseRequestJson } from './router.js';
import { copyQuery, emptyQuery, parseQuery } from '../query.js';
import { FHIR_JSON, FHIR_JSON_UTF8, JSON_PATCH } from '../media-types.js';
import type { FhirContext, FhirRequest, FhirResponse, InteractionHandler } from './types.js';

/** Most entries accepted in one batch or transaction Bundle. */
export const MAX_BUNDLE_ENTRIES = 20_000;

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

export interface BundleEntryRequest {
  method: FhirRequest['method'];
  url: string;
  ifNoneMatch?: string;
  ifModifiedSince?: string;
  ifMatch?: string;
  ifNoneExist?: string;
}

export interface BundleEntry {
  fullUrl?: string;
  resource?: FhirResource;
  request: BundleEntryRequest;
}

const REASONS: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  204: 'No Content',
  304: 'Not Modified',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  410: 'Gone',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
};

export const statusLine = (status: number): string => `${status} ${REASONS[status] ?? ''}`.trim();

/** The Bundle of a POST [base] request (parsed once by the router, or here), checked to be of `type`. */
export function bundleOf(
  request: FhirRequest,
  type: 'batch' | 'transaction',
): { bundle: FhirResource; entries: BundleEntry[] } {
  let bundle = request.resource;
  if (!bundle) {
    if (!request.body) throw fhirError('body-missing', `A ${type} needs a Bundle as its body`);
    bundle = parseRequestJson<FhirResource>(request.body);
  }
  if (bundle === null || typeof bundle !== 'object' || bundle.resourceType !== 'Bundle')
    throw fhirError('body-not-resource', 'The body must be a Bundle', { expression: 'Bundle' });
  if (bundle.type !== type)
    throw fhirError('bundle-invalid', `Bundle.type must be '${type}'`, { expression: 'Bundle.type' });
  const raw = bundle.entry ?? [];
  if (!Array.isArray(raw))
    throw fhirError('bundle-invalid', 'Bundle.entry must be an array', { expression: 'Bundle.entry' });
  if (raw.length > MAX_BUNDLE_ENTRIES)
    throw fhirError('bundle-invalid', `A ${type} may hold at most ${MAX_BUNDLE_ENTRIES} entries`, {
      expression: 'Bundle.entry',
    });
  return { bundle, entries: raw as BundleEntry[] };
}

/** Checks an entry's shape; throws 400 naming `Bundle.entry[i]`. */
export function checkEntry(entry: unknown, index: number): BundleEntry {
  const where = `Bundle.entry[${index}]`;
  if (entry === null || typeof entry !== 'object')
    throw fhirError('bundle-invalid', `${where} is not an object`, { expression: where });
  const e = entry as BundleEntry;
  if (!e.request || typeof e.request !== 'object')
    throw fhirError('bundle-invalid', `${where}.request is missing`, { expression: `${where}.request` });
  if (typeof e.request.method !== 'string' || !METHODS.has(e.request.method)) {
    throw fhirError('bundle-invalid', `${where}.request.method must be one of ${[...METHODS].join(', ')}`, {
      expression: `${where}.request.method`,
    });
  }
  if (typeof e.request.url !== 'string' || e.request.url.trim() === '')
    throw fhirError('bundle-invalid', `${where}.request.url is missing`, {
      expression: `${where}.request.url`,
    });
  if (
    e.resource !== undefined &&
    (e.resource === null || typeof e.resource !== 'object' || typeof e.resource.resourceType !== 'string')
  ) {
    throw fhirError('bundle-invalid', `${where}.resource is not a FHIR resource`, {
      expression: `${where}.resource`,
    });
  }
  if ((e.request.method === 'POST' || e.request.method === 'PUT') && !e.resource) {
    throw fhirError('bundle-invalid', `${where} (${e.request.method}) needs a resource`, {
      expression: `${where}.resource`,
    });
  }
  return e;
}

/** `Patient/1?x=y` -> path and query (the base URL, if the entry repeats it, is dropped). */
export function splitEntryUrl(
  url: string,
  baseUrl: string,
): { path: string; query: Record<string, string[]>; search: string } {
  let relative = url.trim();
  if (relative.startsWith(`${baseUrl}/`)) relative = relative.slice(baseUrl.length + 1);
  else if (/^[a-z][a-z0-9+.-]*:/i.test(relative))
    throw fhirError('bundle-invalid', `Entry URL '${url}' is not on this server`);
  relative = relative.replace(/^\/+/, '');
  const q = relative.indexOf('?');
  const path = q >= 0 ? relative.slice(0, q) : relative;
  const search = q >= 0 ? relative.slice(q + 1) : '';
  const query = parseQuery(search);
  return { path, query, search };
}

function routerFor(context: FhirContext): FhirRouter {
  if (!context.registry) throw new Error('Bundles need FhirContext.registry');
  return new FhirRouter(context.registry, isKnownResourceType);
}

function handler(
  context: FhirContext,
  request: Pick<FhirRequest, 'interaction' | 'resourceType' | 'operation' | 'id' | 'method'>,
): InteractionHandler {
  const found = context.registry?.handlerFor(request);
  if (!found) throw fhirError('method-not-allowed', `${request.method} is not supported for this entry`);
  return found;
}

/**
 * The ids of the `resourceType` resources a conditional URL's criteria match, at most `limit` (2 by default: enough
 * to tell 0/1/many).
 */
export async function conditionalMatches(
  context: FhirContext,
  resourceType: string,
  query: Record<string, string[]>,
  baseUrl: string,
  limit = 2,
): Promise<string[]> {
  if (Object.keys(query).length === 0)
    throw fhirError('conditional-criteria-missing', 'A conditional request needs search criteria');
  const search = handler(context, { interaction: 'search-type', resourceType, method: 'GET' });
  const response = await search(
    {
      interaction: 'search-type',
      method: 'GET',
      resourceType,
      query: Object.assign(copyQuery(query), { _count: [String(limit)] }),
      baseUrl,
      preferHandling: 'strict',
    },
    context,
  );
  const bundle = (
    typeof response.body === 'string' ? parseFhirJson(response.body) : response.body
  ) as FhirResource;
  return ((bundle?.entry ?? []) as { resource?: FhirResource; search?: { mode?: string } }[])
    .filter((e) => e.resource && (e.search?.mode ?? 'match') === 'match')
    .map((e) => e.resource!.id as string);
}

/** A conditional reference (http://hl7.org/fhir/R4/http.html#trules): `Type?criteria`, relative or on this base. */
function conditionalReferenceOf(
  reference: string,
  baseUrl: string,
): { type: string; search: string } | undefined {
  const relative = reference.startsWith(`${baseUrl}/`) ? reference.slice(baseUrl.length + 1) : reference;
  const m = /^([A-Z][A-Za-z]+)\?(.*)$/.exec(relative);
  return m && isKnownResourceType(m[1]) ? { type: m[1], search: m[2] } : undefined;
}

/** Every `reference` of `value` (its path beside it) that is a conditional reference. */
function collectConditionalReferences(
  value: unknown,
  path: string,
  baseUrl: string,
  out: { holder: Record<string, unknown>; path: string; type: string; search: string }[],
): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++)
      collectConditionalReferences(value[i], `${path}[${i}]`, baseUrl, out);
    return;
  }
  if (!(value.constructor === Object || Object.getPrototypeOf(value) === null)) return; // LosslessNumber
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    const child = record[key];
    if (key === 'reference' && typeof child === 'string') {
      const conditional = conditionalReferenceOf(child, baseUrl);
      if (conditional) out.push({ holder: record, path: `${path}.reference`, ...conditional });
    } else collectConditionalReferences(child, `${path}.${key}`, baseUrl, out);
  }
}

/**
 * Resolves the conditional references of an entry's resource in place (R4 http.html#trules): each is searched as
 * the caller (only what it may see matches, through the registered search handler); exactly one match becomes
 * `Type/id`; several are 412 (`conditional-multiple-matches`), none 400 (`conditional-reference-no-match`), the
 * refusal naming the reference's path. `resolved` caches answers within one Bundle.
 */
export async function resolveConditionalReferences(
  resource: FhirResource,
  context: FhirContext,
  baseUrl: string,
  resolved: Map<string, string> = new Map(),
): Promise<void> {
  const found: { holder: Record<string, unknown>; path: string; type: string; search: string }[] = [];
  collectConditionalReferences(resource, resource.resourceType, baseUrl, found);
  for (const { holder, path, type, search } of found) {
    const text = holder.reference as string;
    let target = resolved.get(text);
    if (target === undefined) {
      const matches = await conditionalMatches(context, type, parseQuery(search), baseUrl);
      if (matches.length > 1)
        throw fhirError(
          'conditional-multiple-matches',
          `The conditional reference '${text}' matches more than one ${type}`,
          { expression: path },
        );
      if (matches.length === 0)
        throw fhirError(
          'conditional-reference-no-match',
          `The conditional reference '${text}' matches no ${type}`,
          {
            expression: path,
          },
        );
      target = `${type}/${matches[0]}`;
      resolved.set(text, target);
    }
    holder.reference = target;
  }
}

/** Body and content type for an entry: PATCH entries carry a Binary (JSON Patch) or Parameters (FHIRPath Patch). */
function entryBody(entry: BundleEntry): Pick<FhirRequest, 'body' | 'contentType' | 'resource'> {
  const resource = entry.resource;
  if (!resource) return {};
  if (entry.request.method === 'PATCH' && resource.resourceType === 'Binary') {
    const text =
      typeof resource.data === 'string' ? Buffer.from(resource.data, 'base64').toString('utf8') : '';
    return {
      body: text,
      contentType: typeof resource.contentType === 'string' ? resource.contentType : JSON_PATCH,
    };
  }
  // Handlers take the parsed resource (FhirRequest.resource); the text is only needed for PATCH bodies.
  if (entry.request.method === 'PATCH')
    return { body: stringifyFhirJson(resource), contentType: FHIR_JSON, resource };
  return { contentType: FHIR_JSON, resource };
}

export interface EntryOptions {
  /** Pre-assigned id for a POST (transaction). */
  assignedId?: string;
  /** For a conditional PUT/DELETE already resolved (transaction): the id it resolved to, or null for no match. */
  resolvedId?: string | null;
  preferReturn?: FhirRequest['preferReturn'];
}

/** Runs one entry through the registered handlers. Throws FhirError for a refused entry. */
export async function runEntry(
  entry: BundleEntry,
  context: FhirContext,
  bundleRequest: FhirRequest,
  options: EntryOptions = {},
): Promise<FhirResponse> {
  const { method } = entry.request;
  const { path, query } = splitEntryUrl(entry.request.url, bundleRequest.baseUrl);
  const segments = path.split('/').filter((s) => s !== '');
  const base: Omit<FhirRequest, 'interaction'> = {
    method,
    query,
    baseUrl: bundleRequest.baseUrl,
    ifMatch: entry.request.ifMatch,
    ifNoneMatch: entry.request.ifNoneMatch,
    ifModifiedSince: entry.request.ifModifiedSince,
    ifNoneExist: entry.request.ifNoneExist,
    preferReturn: options.preferReturn ?? bundleRequest.preferReturn,
    // The Bundle's Prefer: handling applies to its search entries (conditional criteria always refuse).
    preferHandling: bundleRequest.preferHandling,
    ...entryBody(entry),
  };

  // Conditional update / delete: `PUT Patient?identifier=x`, `DELETE Patient?identifier=x`.
  if (
    (method === 'PUT' || method === 'DELETE') &&
    segments.length === 1 &&
    !segments[0].startsWith('$') &&
    !segments[0].startsWith('_')
  )
    return runConditionalEntry(entry, context, bundleRequest, options, base, segments[0]);

  const routed = routerFor(context).route(method, path);
  if (routed.interaction === 'batch' || routed.interaction === 'transaction')
    throw fhirError('bundle-invalid', 'A Bundle entry cannot itself be a batch or transaction');
  // Object.assign, not spreads: on Node 20 each property a spread adds to a clone costs ~0.9 µs, per entry.
  const request: FhirRequest = Object.assign({}, base, routed, {
    assignedId: routed.interaction === 'create' ? options.assignedId : undefined,
  });
  return handler(context, request)(request, context);
}

/** A conditional update or delete entry: the criteria's match decides the interaction (update, create, delete). */
async function runConditionalEntry(
  entry: BundleEntry,
  context: FhirContext,
  bundleRequest: FhirRequest,
  options: EntryOptions,
  base: Omit<FhirRequest, 'interaction'>,
  resourceType: string,
): Promise<FhirResponse> {
  const { method } = entry.request;
  const query = base.query;
  if (!isKnownResourceType(resourceType))
    throw fhirError('bundle-invalid', `'${resourceType}' is not a resource type`);
  let id = options.resolvedId;
  if (id === undefined) {
    const matches = await conditionalMatches(context, resourceType, query, bundleRequest.baseUrl);
    if (matches.length > 1)
      throw fhirError(
        'conditional-multiple-matches',
        `The criteria of '${entry.request.url}' match more than one ${resourceType}`,
      );
    id = matches[0] ?? null;
  }
  const plain = { ...base, query: emptyQuery() };
  if (method === 'DELETE') {
    if (id === null) return { status: 204 };
    return handler(context, { interaction: 'delete', resourceType, id, method })(
      { ...plain, interaction: 'delete', resourceType, id },
      context,
    );
  }
  const bodyId = entry.resource?.id as string | undefined;
  if (id !== null && bodyId !== undefined && bodyId !== id)
    throw fhirError(
      'resource-id-mismatch',
      `The resource's id '${bodyId}' is not the id '${id}' the criteria match`,
    );
  if (id === null && bodyId === undefined) {
    // no match, no id: a create
    return handler(context, { interaction: 'create', resourceType, method: 'POST' })(
      { ...plain, method: 'POST', interaction: 'create', resourceType, assignedId: options.assignedId },
      context,
    );
  }
  const targetId = id ?? bodyId!;
  const resource = { ...entry.resource!, id: targetId };
  return handler(context, { interaction: 'update', resourceType, id: targetId, method })(
    {
      ...plain,
      interaction: 'update',
      resourceType,
      id: targetId,
      resource,
      body: stringifyFhirJson(resource),
    },
    context,
  );
}

function headerValue(headers: Record<string, string> | undefined, name: string): string | undefined {
  if (!headers) return undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key ? headers[key] : undefined;
}

/** A Bundle.entry (as JSON text) for a handler's response; resources are embedded as served, not re-serialised. */
export function responseEntry(response: FhirResponse, baseUrl: string): string {
  const out: Record<string, unknown> = { status: statusLine(response.status) };
  const location =
    headerValue(response.headers, 'Location') ?? headerValue(response.headers, 'Content-Location');
  if (location)
    out.location = location.startsWith(`${baseUrl}/`) ? location.slice(baseUrl.length + 1) : location;
  const etag = headerValue(response.headers, 'ETag');
  if (etag) out.etag = etag;
  const body =
    typeof response.body === 'string'
      ? response.body
      : response.body
        ? stringifyFhirJson(response.body)
        : undefined;
  let resourceJson: string | undefined;
  let fullUrl: string | undefined;
  if (body !== undefined && body.trim() !== '') {
    // Parsing every stored body again costs more than the rest of the entry: peek at what is needed instead.
    const isOutcome =
      /^\s*\{\s*"resourceType"\s*:\s*"OperationOutcome"/.test(body) ||
      (typeof response.body === 'object' && response.body?.resourceType === 'OperationOutcome');
    if (isOutcome && response.status >= 300) out.outcome = parseFhirJson(body);
    else resourceJson = body;
    const lastUpdated = /"lastUpdated"\s*:\s*"([^"]+)"/.exec(body)?.[1];
    if (lastUpdated && !isOutcome) out.lastModified = lastUpdated;
    const typed =
      typeof out.location === 'string'
        ? /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/|$)/.exec(out.location)
        : null;
    if (resourceJson && typed) fullUrl = `${baseUrl}/${typed[1]}/${typed[2]}`;
  }
  if (!out.lastModified && response.lastModified) out.lastModified = response.lastModified;
  if (!out.lastModified) {
    const lastModified = headerValue(response.headers, 'Last-Modified');
    if (lastModified && !Number.isNaN(Date.parse(lastModified)))
      out.lastModified = new Date(lastModified).toISOString();
  }
  const parts: string[] = [];
  if (fullUrl) parts.push(`"fullUrl":${JSON.stringify(fullUrl)}`);
  if (resourceJson) parts.push(`"resource":${resourceJson}`);
  parts.push(`"response":${stringifyFhirJson(out)}`);
  return `{${parts.join(',')}}`;
}

/** A Bundle.entry for a refused entry. */
export function errorEntry(error: FhirError): string {
  return `{"response":${JSON.stringify({ status: statusLine(error.status), outcome: error.outcome })}}`;
}

export function responseBundle(type: 'batch-response' | 'transaction-response', entries: string[]): string {
  const head = JSON.stringify({
    resourceType: 'Bundle',
    id: randomUUID(),
    meta: { lastUpdated: new Date().toISOString() },
    type,
  });
  return `${head.slice(0, -1)},"entry":[${entries.join(',')}]}`;
}

export function unexpectedOutcome(): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [issue('error', 'exception', 'The entry failed unexpectedly; see the server log')],
  };
}

/** POST [base] with a batch Bundle. */
export const batch: InteractionHandler = async (request, context) => {
  context.access.authorize('batch');
  const { entries } = bundleOf(request, 'batch');
  const out: string[] = [];
  for (let i = 0; i < entries.length; i++) {
    try {
      const entry = checkEntry(entries[i], i);
      // Only this entry fails when one of its conditional references does not resolve to exactly one match.
      if (entry.resource) await resolveConditionalReferences(entry.resource, context, request.baseUrl);
      const response = await runEntry(entry, context, request);
      out.push(responseEntry(response, request.baseUrl));
    } catch (err) {
      // The storage failing (disk full) is a 503 entry, like the same write alone, not an unexpected error.
      const storage = err instanceof FhirError ? undefined : storageFaultError(err);
      if (err instanceof FhirError || storage) out.push(errorEntry(storage ?? (err as FhirError)));
      else {
        context.log.error({ err, entry: i }, 'batch entry failed');
        out.push(`{"response":${JSON.stringify({ status: statusLine(500), outcome: unexpectedOutcome() })}}`);
      }
    }
  }
  return {
    status: 200,
    body: responseBundle('batch-response', out),
    headers: { 'Content-Type': FHIR_JSON_UTF8 },
  };
};
