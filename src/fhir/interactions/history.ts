/**
 * history at instance, type and system level (http://hl7.org/fhir/R4/http.html#history): a `history` Bundle,
 * newest first, with `_count`, `_since`, `_at` and `self`/`next` links (the store's cursor, sealed to the caller and
 * the history, in `_cursor`). Versions the caller may not see are left out before anything is counted or paged. Stored bodies are spliced into the Bundle text as stored.
 */
import { CallerCursorSeal, processCursorKey } from './cursor-seal.js';
import { OpenAccess, type AccessPolicy, type CursorSeal } from './access-policy.js';
import { fhirError } from '../outcome.js';
import type { HistoryQuery, StoredVersion } from '../store/resource-store.js';
import { assertId, assertResourceType, httpDate, visibleOr404 } from './common.js';
import type { FhirContext, FhirRequest, FhirResponse, InteractionHandler } from './types.js';

export const DEFAULT_HISTORY_COUNT = 50;
export const MAX_HISTORY_COUNT = 1000;

const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;
const PARTIAL_DATE = /^\d{4}(-\d{2}(-\d{2})?)?$/;

function single(request: FhirRequest, name: string): string | undefined {
  const values = request.query[name];
  if (!values || values.length === 0) return undefined;
  if (values.length > 1)
    throw fhirError('parameter-invalid', `${name} may be given once`, { expression: name });
  return values[0];
}

function countOf(request: FhirRequest): number {
  const text = single(request, '_count');
  if (text === undefined) return DEFAULT_HISTORY_COUNT;
  if (!/^\d+$/.test(text))
    throw fhirError('parameter-invalid', `_count must be a whole number, not '${text}'`, {
      expression: '_count',
    });
  // _count=0 asks only for the total (FHIR search.html#count).
  return Math.min(Number(text), MAX_HISTORY_COUNT);
}

/** `_since`: an instant (R4); a bare date is taken as its first moment, UTC. */
function sinceOf(request: FhirRequest): string | undefined {
  const text = single(request, '_since');
  if (text === undefined) return undefined;
  if (INSTANT.test(text) && !Number.isNaN(Date.parse(text))) return new Date(text).toISOString();
  if (PARTIAL_DATE.test(text)) return new Date(Date.UTC(...dateParts(text))).toISOString();
  throw fhirError('parameter-invalid', `_since must be an instant like 2024-01-31T12:00:00Z, not '${text}'`, {
    expression: '_since',
  });
}

/** `_at`: a date-time, possibly partial; versions current at its end are returned. */
function atOf(request: FhirRequest): string | undefined {
  const text = single(request, '_at');
  if (text === undefined) return undefined;
  if (INSTANT.test(text) && !Number.isNaN(Date.parse(text))) return new Date(text).toISOString();
  if (PARTIAL_DATE.test(text)) {
    const [y, m, d] = dateParts(text);
    const parts = text.split('-').length;
    const end =
      parts === 1 ? Date.UTC(y + 1, 0, 1) : parts === 2 ? Date.UTC(y, m + 1, 1) : Date.UTC(y, m, d + 1);
    return new Date(end - 1).toISOString();
  }
  throw fhirError(
    'parameter-invalid',
    `_at must be a date or date-time like 2024-01-31 or 2024-01-31T12:00:00Z, not '${text}'`,
    { expression: '_at' },
  );
}

function dateParts(text: string): [number, number, number] {
  const [y, m = '1', d = '1'] = text.split('-');
  return [Number(y), Number(m) - 1, Number(d)];
}

const STATUS_OF: Record<StoredVersion['method'], string> = {
  POST: '201 Created',
  PUT: '200 OK',
  PATCH: '200 OK',
  DELETE: '204 No Content',
};

function entryText(baseUrl: string, version: StoredVersion): string {
  const fullUrl = `${baseUrl}/${version.resourceType}/${version.id}`;
  const requestUrl =
    version.method === 'POST' ? version.resourceType : `${version.resourceType}/${version.id}`;
  const response = {
    status: STATUS_OF[version.method],
    etag: `W/"${version.versionId}"`,
    lastModified: version.lastUpdated,
  };
  return (
    `{"fullUrl":${JSON.stringify(fullUrl)}` +
    (version.deleted || version.json === undefined ? '' : `,"resource":${version.json}`) +
    `,"request":${JSON.stringify({ method: version.method, url: requestUrl })}` +
    `,"response":${JSON.stringify(response)}}`
  );
}

/** The caller's cursor seal; OpenAccess and other policies without one get a seal of this process. */
function cursorSealOf(access: AccessPolicy): CursorSeal {
  return access.cursors ?? new CallerCursorSeal(processCursorKey(), access.caller);
}

/**
 * The store's cursor inside a sealed `_cursor`, made for this caller and this history (path). Anything else
 * (another caller's cursor, another history's, an altered or made-up one) is the same 400, naming nothing.
 */
function openCursor(seal: CursorSeal, sealed: string, path: string): string {
  const text = seal.open(sealed);
  const newline = text?.indexOf('\n') ?? -1;
  if (text === undefined || text.slice(0, newline) !== path)
    throw fhirError('page-cursor-invalid', 'Invalid history page cursor: start again from the first page', {
      expression: '_cursor',
    });
  return text.slice(newline + 1);
}

function pageUrl(request: FhirRequest, path: string, cursor?: string): string {
  const params = new URLSearchParams();
  for (const [name, values] of Object.entries(request.query)) {
    if (name === '_cursor') continue;
    for (const value of values) params.append(name, value);
  }
  if (cursor !== undefined) params.set('_cursor', cursor);
  const query = params.toString();
  return `${request.baseUrl}/${path}${query ? `?${query}` : ''}`;
}

async function historyBundle(
  request: FhirRequest,
  context: FhirContext,
  query: HistoryQuery,
  path: string,
): Promise<FhirResponse> {
  const access = context.access;
  const seal = cursorSealOf(access);
  const sealed = query.cursor;
  if (sealed !== undefined) query.cursor = openCursor(seal, sealed, path);
  // The store counts and pages only what the caller may see: totals, page sizes and cursors reveal nothing else.
  // (OpenAccess sees everything: nothing to filter.)
  if (!(access instanceof OpenAccess)) {
    query.visible = access.sees ? (version) => access.sees!(version) : (version) => access.canRead(version);
    // One type: its read scope goes into the store's query too (hidden versions are dropped there, cheaper).
    if (query.resourceType !== undefined && access.readScope)
      query.scope = access.readScope(query.resourceType);
  }
  const page = await context.store.history(query);
  // Every version returned was decided visible; canRead records the disclosure (and stays the last word).
  const visible = page.versions.filter((version) => access.canRead(version));
  const links = [{ relation: 'self', url: pageUrl(request, path, sealed) }];
  if (page.next !== undefined)
    links.push({ relation: 'next', url: pageUrl(request, path, seal.seal(`${path}\n${page.next}`)) });
  const body =
    `{"resourceType":"Bundle","type":"history","total":${page.total},"link":${JSON.stringify(links)}` +
    `,"entry":[${visible.map((version) => entryText(request.baseUrl, version)).join(',')}]}`;
  const headers: Record<string, string> = {};
  if (visible[0]) headers['Last-Modified'] = httpDate(visible[0].lastUpdated);
  return { status: 200, body, headers };
}

function baseQuery(request: FhirRequest): HistoryQuery {
  const since = sinceOf(request);
  const at = atOf(request);
  const cursor = single(request, '_cursor');
  return { count: countOf(request), since, at, cursor };
}

export const historyInstance: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('history-instance', resourceType);
  const id = assertId(request.id);
  // A resource the caller may not see (or that never existed) has no history to show: 404.
  visibleOr404(context, await context.store.read(resourceType, id), `${resourceType}/${id}`);
  return historyBundle(
    request,
    context,
    { ...baseQuery(request), resourceType, id },
    `${resourceType}/${id}/_history`,
  );
};

export const historyType: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('history-type', resourceType);
  return historyBundle(request, context, { ...baseQuery(request), resourceType }, `${resourceType}/_history`);
};

export const historySystem: InteractionHandler = async (request, context) => {
  context.access.authorize('history-system');
  return historyBundle(request, context, baseQuery(request), '_history');
};
