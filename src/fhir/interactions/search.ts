/**
 * search: GET [base]/[type]?..., POST [base]/[type]/_search, GET [base]?_type=..., POST [base]/_search
 * (http://hl7.org/fhir/R4/search.html) -> a searchset Bundle.
 *
 * Access: the store narrows its query to the caller's read scope (`context.access.readScope`: rows the caller may
 * not see are not visited) and applies `context.access.canRead` to every candidate before it counts (so hidden
 * resources are absent and `total` counts only visible ones), and chains/_has match only through visible resources
 * (src/fhir/store/sqlite/sqlite-search.ts). Included resources are read here and pass `canRead` too.
 */
import { randomUUID } from 'node:crypto';
import { fhirError, issue, type OperationOutcomeIssue } from '../outcome.js';
import { parseFhirJson, stringifyFhirJson, type FhirResource } from '../fhir-json.js';
import {
  parseSearch,
  supportedModifiers,
  takesPrefixes,
  LIMITS,
  type CompiledQuery,
  type Filter,
  type IncludeSpec,
} from '../search/parse.js';
import {
  indexedAs,
  referenceKey,
  searchDefinitions,
  searchParameter,
  searchParametersOf,
  isKnownResourceType,
  STORE_COLUMN_PARAMS,
  type SearchParamDef,
} from '../search/definitions.js';
import type { FhirRegistry, SearchParamDeclaration } from './fhir-registry.js';
import { typeReadability } from './common.js';
import { applyRepresentation, representationOf } from './representation.js';
import type { StoreSearchRequest, StoreSearchResult } from '../store/search-query.js';
import type { StoredVersion } from '../store/resource-store.js';
import type { FhirContext, FhirRequest, FhirResponse, InteractionHandler } from './types.js';
import { appendQuery, copyQuery } from '../query.js';
import { FHIR_JSON_UTF8, FORM } from '../media-types.js';
import { cursorSealOf, MAX_SEALED } from './cursor-seal.js';
import type { CursorSeal } from './access-policy.js';
import type { SearchPosition } from '../store/search-query.js';

/** Most resources added by _include/_revinclude to one page. */
export const MAX_INCLUDED = 1000;
/** How many rounds `:iterate` follows. */
const MAX_ITERATE_DEPTH = 3;

/** Query parameters of the request, merged with a form body (POST _search). */
function searchQuery(request: FhirRequest): Record<string, string[]> {
  const query = copyQuery(request.query);
  if (request.method === 'POST' && request.body) {
    if (request.contentType && request.contentType !== FORM) {
      throw fhirError(
        'media-type-unsupported',
        'POST _search takes an application/x-www-form-urlencoded body',
      );
    }
    appendQuery(query, request.body);
  }
  return query;
}

/** `Prefer: handling=lenient`: what cannot be applied is left out with a warning instead of refused (400). */
function isLenient(request: FhirRequest): boolean {
  return request.preferHandling === 'lenient';
}

function queryString(pairs: [string, string][]): string {
  return pairs
    .map(
      ([k, v]) =>
        `${encodeURIComponent(k).replace(/%3A/g, ':')}=${encodeURIComponent(v).replace(/%7C/g, '|').replace(/%2C/g, ',')}`,
    )
    .join('&');
}

/** The caller's read scope for the store to apply inside its query (AccessPolicy.readScope), if it has one. */
function scopeOf(context: FhirContext): StoreSearchRequest['scope'] {
  const access = context.access;
  return access.readScope ? (resourceType) => access.readScope!(resourceType) : undefined;
}

function pageLink(base: string, query: CompiledQuery, offset: number): string {
  const pairs = query.applied.filter(([k]) => k !== '_count' && k !== '_offset');
  pairs.push(['_count', String(query.count)]);
  if (offset > 0) pairs.push(['_offset', String(offset)]);
  return `${base}?${queryString(pairs)}`;
}

/**
 * What a search page cursor holds (sealed to the caller, and to the search: its base and applied parameters): where
 * the next page starts, the total the first page gave (if any) and how many matches the earlier pages served.
 */
interface SearchCursor {
  after: SearchPosition;
  total?: number;
  served: number;
}

/** The search a cursor belongs to: its base and applied parameters (their order aside), not the page size. */
function cursorBinding(base: string, query: CompiledQuery): string {
  const pairs = query.applied
    .filter(([k]) => k !== '_count' && k !== '_offset')
    .map(([k, v]) => JSON.stringify([k, v]))
    .sort();
  return `search\n${base}\n${pairs.join('\n')}`;
}

function isSearchCursor(value: unknown): value is SearchCursor {
  const c = value as Partial<SearchCursor> | null;
  const after = c?.after as Partial<SearchPosition> | undefined;
  return (
    typeof c === 'object' &&
    c !== null &&
    Number.isSafeInteger(c.served) &&
    (c.total === undefined || Number.isSafeInteger(c.total)) &&
    typeof after === 'object' &&
    Number.isSafeInteger(after.high) &&
    Number.isSafeInteger(after.seq) &&
    Array.isArray(after.keys) &&
    after.keys.every((k) => k === null || typeof k === 'string' || typeof k === 'number')
  );
}

/**
 * The cursor inside a sealed `_cursor`, made for this caller and this search. Anything else (another caller's
 * cursor, another search's, an altered or made-up one) is the same 400, naming nothing.
 */
function openSearchCursor(seal: CursorSeal, sealed: string, binding: string): SearchCursor {
  const text = seal.open(sealed);
  let cursor: unknown;
  if (text !== undefined && text.startsWith(`${binding}\n\n`)) {
    try {
      cursor = JSON.parse(text.slice(binding.length + 2));
    } catch {
      cursor = undefined;
    }
  }
  if (!isSearchCursor(cursor))
    throw fhirError('page-cursor-invalid', 'Invalid search page cursor: start again from the first page', {
      expression: '_cursor',
    });
  return cursor;
}

function withCursor(link: string, sealed: string): string {
  return `${link}&_cursor=${sealed}`;
}

interface Entry {
  version: StoredVersion;
  mode: 'match' | 'include';
}

async function runStoreSearch(context: FhirContext, request: StoreSearchRequest): Promise<StoreSearchResult> {
  if (!context.store.search) throw fhirError('not-implemented', 'This store does not support search');
  return context.store.search(request);
}

/**
 * The `Type/id` references of a resource through reference parameter `param` ('*' = every reference parameter):
 * relative ones, and absolute ones under this server's base (`serverBase`), which name the same resources.
 */
function referencesOf(resource: FhirResource, param: string, serverBase: string | undefined): string[] {
  const own = serverBase !== undefined ? `${serverBase}/` : undefined;
  const defs =
    param === '*'
      ? [...(searchParametersOf(resource.resourceType)?.values() ?? [])].filter((d) => d.type === 'reference')
      : [searchParameter(resource.resourceType, param)];
  const out: string[] = [];
  for (const def of defs) {
    if (!def?.evaluate) continue;
    for (const value of def.evaluate(resource)) {
      const written = (value as { reference?: unknown } | null)?.reference;
      const reference =
        own !== undefined && typeof written === 'string' && written.startsWith(own)
          ? written.slice(own.length)
          : written;
      if (
        typeof reference !== 'string' ||
        reference.startsWith('#') ||
        /^[a-z][a-z0-9+.-]*:/i.test(reference)
      )
        continue;
      const key = referenceKey(reference);
      if (key) out.push(key);
    }
  }
  return out;
}

/** The types a query reads through (chain targets, _has sources), recursively. */
function typesSearchedThrough(filters: Filter[], out = new Set<string>()): Set<string> {
  for (const filter of filters) {
    if (filter.kind === 'chain') {
      for (const t of filter.targetTypes) out.add(t);
      typesSearchedThrough([filter.inner], out);
    } else if (filter.kind === 'has') {
      out.add(filter.sourceType);
      typesSearchedThrough([filter.inner], out);
    }
  }
  return out;
}

/**
 * The resources `_include`/`_revinclude` add to these matches, and whether they are all there: false when they
 * would pass MAX_INCLUDED (the first MAX_INCLUDED are returned then).
 */
async function addIncludes(
  context: FhirContext,
  query: CompiledQuery,
  matches: StoredVersion[],
  warnings: OperationOutcomeIssue[],
): Promise<{ included: StoredVersion[]; complete: boolean }> {
  const included: StoredVersion[] = [];
  const complete = await collectIncludes(context, query, matches, warnings, included);
  return { included, complete };
}

/** Fills `included`; false when it reached MAX_INCLUDED with more to add. */
async function collectIncludes(
  context: FhirContext,
  query: CompiledQuery,
  matches: StoredVersion[],
  warnings: OperationOutcomeIssue[],
  included: StoredVersion[],
): Promise<boolean> {
  // Included resources of a type the caller may not read are left out, as `canRead` leaves out single resources.
  const readable = typeReadability(context, (type) =>
    warnings.push(
      issue('warning', 'forbidden', `${type} resources are not included: your access does not cover them`),
    ),
  );
  // Decided without recording (a page made smaller tries again): what is returned is recorded by the caller.
  const access = context.access;
  const visible = access.sees
    ? (v: StoredVersion): boolean => access.sees!(v)
    : (v: StoredVersion): boolean => access.canRead(v);
  const seen = new Set(matches.map((v) => `${v.resourceType}/${v.id}`));
  let frontier = matches;
  const full = (): boolean => included.length >= MAX_INCLUDED;
  for (let round = 0; round <= MAX_ITERATE_DEPTH && frontier.length > 0; round++) {
    const next: StoredVersion[] = [];
    const applies = (spec: IncludeSpec): boolean => (round === 0 ? true : spec.iterate);
    // _include: follow the references of the frontier
    for (const spec of query.include.filter(applies)) {
      for (const version of frontier) {
        if (!version.json || (spec.sourceType !== '*' && spec.sourceType !== version.resourceType)) continue;
        const resource = parseFhirJson<FhirResource>(version.json);
        for (const key of referencesOf(resource, spec.param, query.serverBase)) {
          if (seen.has(key)) continue;
          const [type, id] = key.split('/');
          if (spec.targetType && type !== spec.targetType) continue;
          if (!isKnownResourceType(type) || !readable(type)) continue;
          seen.add(key);
          const target = await context.store.read(type, id);
          if (!target || target.deleted || !visible(target)) continue;
          if (full()) return false;
          included.push(target);
          next.push(target);
        }
      }
    }
    // _revinclude: resources whose `param` references the frontier (found through the index, access-filtered by the store)
    for (const spec of query.revinclude.filter(applies)) {
      if (spec.sourceType === '*' || spec.param === '*') {
        warnings.push(issue('warning', 'not-supported', '_revinclude=* is not supported'));
        continue;
      }
      if (!readable(spec.sourceType)) continue;
      // References to the frontier: relative, or absolute under this server's base.
      const keys = frontier.flatMap((v) =>
        query.serverBase !== undefined
          ? [`${v.resourceType}/${v.id}`, `${query.serverBase}/${v.resourceType}/${v.id}`]
          : [`${v.resourceType}/${v.id}`],
      );
      const revQuery: CompiledQuery = {
        resourceTypes: [spec.sourceType],
        filters: [
          {
            kind: 'param',
            param: spec.param,
            type: 'reference',
            values: [{ kind: 'reference', references: keys }],
          },
        ],
        sort: [],
        count: MAX_INCLUDED - included.length,
        offset: 0,
        total: 'none',
        summaryCount: false,
        include: [],
        revinclude: [],
        warnings: [],
        applied: [],
      };
      const result = await runStoreSearch(context, {
        query: revQuery,
        canRead: visible,
        scope: scopeOf(context),
        indexedAs,
      });
      for (const version of result.versions) {
        const key = `${version.resourceType}/${version.id}`;
        if (seen.has(key)) continue;
        seen.add(key);
        if (full()) return false;
        included.push(version);
        next.push(version);
      }
      if (result.hasMore) return false;
    }
    frontier = next;
  }
  return true;
}

// One piece on purpose: a per-request hot path (bench:rest, bench:import); split it only with a benchmark run.
async function search(
  request: FhirRequest,
  context: FhirContext,
  resourceType: string | undefined,
): Promise<FhirResponse> {
  context.access.authorize(resourceType ? 'search-type' : 'search-system', resourceType);
  const raw = searchQuery(request);
  // A compartment search (`Patient/[id]/[type]`, `Patient/[id]/*`): only the compartment's members match.
  const compartment = request.compartment && compartmentOf(request.compartment, resourceType);
  const query = parseSearch(raw, {
    resourceType,
    lenient: isLenient(request),
    systemTypes: compartment?.types,
    terminology: context.terminology,
    serverBase: request.baseUrl,
  });
  // Searching through another type (chains, _has) needs the right to search that type too (403 otherwise).
  for (const type of typesSearchedThrough(query.filters)) context.access.authorize('search-type', type);
  const warnings: OperationOutcomeIssue[] = query.warnings.map((w) => issue('warning', 'not-supported', w));

  if (query.summaryCount) query.count = 0;
  const member = compartment?.member;
  // Members are found from the reference index (the compartment's parameters), not checked per candidate of the
  // type; the stored compartments still decide (canRead below). Not in `applied`: the base names the compartment.
  if (compartment) query.filters.unshift(compartment.filter);
  const base = member
    ? `${request.baseUrl}/${member}/${resourceType ?? '*'}`
    : resourceType
      ? `${request.baseUrl}/${resourceType}`
      : request.baseUrl;
  // A later page: the position after the previous page's last match (sealed to this caller and this search).
  const seal = cursorSealOf(context.access);
  const binding = cursorBinding(base, query);
  const sealed = raw._cursor?.[raw._cursor.length - 1];
  const cursor = sealed !== undefined ? openSearchCursor(seal, sealed, binding) : undefined;
  // _count=0 asks for no entries: the count is then what the client wants, as with _summary=count. A later page
  // gives the first page's total (counted once, as history does).
  const wantTotal =
    cursor === undefined &&
    (query.summaryCount ||
      (query.count === 0 && query.total !== 'none') ||
      query.total === 'accurate' ||
      query.total === 'estimate');
  // Membership first: canRead counts what it admits for the audit.
  const canRead = member
    ? (v: StoredVersion): boolean => (v.patients?.includes(member) ?? false) && context.access.canRead(v)
    : (v: StoredVersion): boolean => context.access.canRead(v);
  const result = await runStoreSearch(context, {
    query,
    canRead,
    wantTotal,
    scope: scopeOf(context),
    indexedAs,
    after: cursor?.after,
  });
  let matches = result.versions.slice(0, query.count);
  let hasMore = result.hasMore ?? result.versions.length > query.count;
  let positions = result.positions;

  // Includes belong to their page's matches: when they would pass MAX_INCLUDED, the page is made smaller (halved
  // until they fit) and the next page starts after its last match, so no include set is ever cut short.
  let included: StoredVersion[] = [];
  if (query.include.length + query.revinclude.length > 0 && matches.length > 0) {
    let kept = matches.length;
    for (;;) {
      const attempt: OperationOutcomeIssue[] = [];
      const page = await addIncludes(context, query, matches.slice(0, kept), attempt);
      if (page.complete || kept === 1) {
        warnings.push(...attempt);
        // canRead records the disclosure of what is returned (and stays the last word), as for history.
        included = page.included.filter((version) => context.access.canRead(version));
        if (!page.complete)
          warnings.push(
            issue(
              'warning',
              'too-costly',
              `This match has more than ${MAX_INCLUDED} included resources: only the first ${MAX_INCLUDED} are returned`,
            ),
          );
        break;
      }
      kept = Math.ceil(kept / 2);
    }
    if (kept < matches.length) {
      warnings.push(
        issue(
          'information',
          'informational',
          `This page holds ${kept} of the ${matches.length} matches it could hold: with theirs, the included resources would pass ${MAX_INCLUDED}; the next link continues after them`,
        ),
      );
      matches = matches.slice(0, kept);
      positions = positions?.slice(0, kept);
      hasMore = true;
    }
  }
  // total when asked, or when it is known anyway (this page holds the last match; past the end it is unknown)
  const before = cursor ? cursor.served : query.offset;
  const known = !hasMore && (before === 0 || matches.length > 0);
  const total =
    cursor?.total ?? result.total ?? (known && query.total !== 'none' ? before + matches.length : undefined);

  // No audit call here: every match and included version passed `canRead`, which counts it for the audit (per
  // patient and custodian); reporting them again would count them twice.

  const links: { relation: string; url: string }[] = [
    {
      relation: 'self',
      url: cursor ? withCursor(pageLink(base, query, 0), sealed!) : pageLink(base, query, query.offset),
    },
  ];
  if (hasMore && query.count > 0) {
    // The next page continues after this page's last match (not at an offset, which writes between pages shift).
    const after = positions?.[matches.length - 1];
    const next: SearchCursor | undefined = after && {
      after,
      total,
      served: before + matches.length,
    };
    const nextSealed = next && seal.seal(`${binding}\n\n${JSON.stringify(next)}`);
    links.push({
      relation: 'next',
      url:
        nextSealed !== undefined && nextSealed.length <= MAX_SEALED
          ? withCursor(pageLink(base, query, 0), nextSealed)
          : pageLink(base, query, before + matches.length),
    });
  }
  if (!cursor && query.offset > 0 && query.count > 0)
    links.push({ relation: 'previous', url: pageLink(base, query, Math.max(0, query.offset - query.count)) });

  // _summary / _elements shape the matches (http://hl7.org/fhir/R4/search.html#summary); includes stay whole.
  const representation = query.summaryCount ? undefined : representationOf(raw);
  const entries: Entry[] = [
    ...matches.map((version) => ({ version, mode: 'match' as const })),
    ...included.map((version) => ({ version, mode: 'include' as const })),
  ];
  // Assembled as text: stored resources are served exactly as stored (lossless numbers, no re-serialisation).
  const parts: string[] = [];
  for (const { version, mode } of entries) {
    const json =
      mode === 'match' && representation
        ? stringifyFhirJson(applyRepresentation(parseFhirJson<FhirResource>(version.json!), representation))
        : version.json!;
    parts.push(
      `{"fullUrl":${JSON.stringify(`${request.baseUrl}/${version.resourceType}/${version.id}`)},"resource":${json},"search":{"mode":"${mode}"}}`,
    );
  }
  if (warnings.length > 0) {
    const outcome = { resourceType: 'OperationOutcome', id: randomUUID(), issue: warnings };
    parts.push(
      `{"fullUrl":"urn:uuid:${outcome.id}","resource":${JSON.stringify(outcome)},"search":{"mode":"outcome"}}`,
    );
  }
  const head: Record<string, unknown> = {
    resourceType: 'Bundle',
    id: randomUUID(),
    meta: { lastUpdated: new Date().toISOString() },
    type: 'searchset',
  };
  if (total !== undefined) head.total = total;
  head.link = links;
  const headJson = JSON.stringify(head);
  const body = parts.length > 0 ? `${headJson.slice(0, -1)},"entry":[${parts.join(',')}]}` : headJson;
  return { status: 200, body, headers: { 'Content-Type': FHIR_JSON_UTF8 } };
}

/** The types of the Patient compartment (R4 CompartmentDefinition patient), the Patient itself included. */
let patientCompartmentTypes: string[] | undefined;
/** Per type, the parameters whose references to a patient make a resource a member (R4 CompartmentDefinition). */
let patientCompartmentParams: Record<string, string[]> | undefined;

/**
 * A compartment search's member key (`Patient/id`, as stored in `StoredVersion.patients`, from the R4 compartment
 * definition: `patientCompartments`) and, for `*`, the types searched. A type outside the compartment is 400.
 */
function compartmentOf(
  compartment: { type: string; id: string },
  resourceType: string | undefined,
): { member: string; types?: string[]; filter: Extract<Filter, { kind: 'compartment' }> } {
  if (compartment.type !== 'Patient')
    throw fhirError('endpoint-not-found', `The ${compartment.type} compartment is not served here`);
  patientCompartmentTypes ??= [
    ...new Set(['Patient', ...searchDefinitions().patientCompartment.keys()]),
  ].sort();
  if (resourceType && !patientCompartmentTypes.includes(resourceType))
    throw fhirError('request-invalid', `${resourceType} is not a type of the Patient compartment`);
  patientCompartmentParams ??= Object.fromEntries(searchDefinitions().patientCompartment);
  const member = `Patient/${compartment.id}`;
  return {
    member,
    types: resourceType ? undefined : patientCompartmentTypes,
    filter: {
      kind: 'compartment',
      reference: member,
      params: patientCompartmentParams,
      own: { type: 'Patient', id: compartment.id },
    },
  };
}

/** GET [base]/[type]?... and POST [base]/[type]/_search */
export const searchType: InteractionHandler = async (request, context) => {
  if (!request.resourceType || !isKnownResourceType(request.resourceType))
    throw fhirError('request-invalid', `Unknown resource type '${request.resourceType}'`);
  return search(request, context, request.resourceType);
};

/** GET [base]?_type=... and POST [base]/_search */
export const searchSystem: InteractionHandler = async (request, context) =>
  search(request, context, undefined);

/**
 * What this server does with a parameter, for CapabilityStatement...searchParam.documentation (its expression and
 * targets are in the definition): the modifiers and prefixes it applies, and how an alias is answered.
 */
function parameterDocumentation(def: SearchParamDef, terminology: boolean): string {
  if (def.code === '_id') return 'Modifier :not.';
  if (def.code === '_lastUpdated') return 'Prefixes eq ne gt lt ge le sa eb ap.';
  const parts = [
    `Modifiers ${supportedModifiers(def.type, terminology)
      .map((m) => `:${m}`)
      .join(' ')}`,
  ];
  if (takesPrefixes(def.type)) parts.push('prefixes eq ne gt lt ge le sa eb ap');
  if (def.type === 'reference') parts.push('chains up to 3 levels');
  if (def.indexedAs) parts.push(`answered as ${def.indexedAs.join(' | ')}`);
  // A custom parameter (a stored SearchParameter): its own description first, and where it is defined.
  if (def.custom)
    return `${def.custom.description ? `${def.custom.description.trim()} ` : ''}(SearchParameter/${def.custom.id}: ${def.expression ?? ''}) ${parts.join('; ')}.`;
  return `${parts.join('; ')}.`;
}

const FULL_TEXT_DOCUMENTATION =
  'Full text (words are matched as string search compares text: case and accents ignored): words, "phrases", ' +
  'AND (or a space), OR, parentheses; NOT, prefixes and proximity are refused (400).';

/**
 * The parameters of every type that the search answers itself rather than from an indexed definition: full text
 * (`_text` on the narrative, `_content` on everything) and `_list` (the entries of a List the caller may read).
 */
export const WHOLE_RESOURCE_PARAMS: readonly SearchParamDeclaration[] = [
  {
    name: '_content',
    type: 'string',
    definition: 'http://hl7.org/fhir/SearchParameter/Resource-content',
    documentation: `${FULL_TEXT_DOCUMENTATION} Searches every text and number of the resource.`,
  },
  {
    name: '_list',
    // R4 defines no SearchParameter resource for _list (search.html#list): no definition to point to.
    type: 'special',
    documentation:
      'The resources a List (by id) has as entry.item; a List the caller may not read matches nothing. Functional lists ($current-...) are refused (400).',
  },
  {
    name: '_text',
    type: 'string',
    definition: 'http://hl7.org/fhir/SearchParameter/DomainResource-text',
    documentation: `${FULL_TEXT_DOCUMENTATION} Searches the narrative (text.div).`,
  },
];

/**
 * The search parameters of a type, for the CapabilityStatement (exactly those this server can search); each one's
 * documentation names the modifiers the parser applies to it (`terminology`: whether the server has terminology for
 * the token modifiers that need it).
 */
export function searchParamDeclarations(resourceType: string, terminology = false): SearchParamDeclaration[] {
  const defs = searchParametersOf(resourceType);
  if (!defs) return [];
  const out = [...defs.values()]
    .filter((d) => d.evaluate || STORE_COLUMN_PARAMS.has(d.code))
    .map((d) => ({
      name: d.code,
      type: d.type,
      definition: d.url,
      documentation: parameterDocumentation(d, terminology),
    }));
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** The `_include` values this server follows from a type: `Type:param` per reference parameter, and `*`. */
export function includeDeclarations(resourceType: string): string[] {
  const defs = searchParametersOf(resourceType);
  if (!defs) return [];
  const out = [...defs.values()]
    .filter((d) => d.evaluate && d.type === 'reference')
    .map((d) => `${resourceType}:${d.code}`)
    .sort();
  return out.length > 0 ? [...out, '*'] : [];
}

/** The `_revinclude` values that can find resources of a type: `Source:param` for every reference parameter that may target it. */
export function revIncludeDeclarations(resourceType: string): string[] {
  const out: string[] = [];
  for (const [source, defs] of searchDefinitions().byType)
    for (const def of defs.values())
      if (def.evaluate && def.type === 'reference' && def.target.includes(resourceType))
        out.push(`${source}:${def.code}`);
  return out.sort();
}

export { LIMITS };

/**
 * Declares the search parameters of these types again (custom parameters became searchable or were retired): the
 * CapabilityStatement is built anew from the registry.
 */
export function declareSearchParamsOf(registry: FhirRegistry, types: Iterable<string>): void {
  const common = new Set(registry.searchParams('Resource').map((p) => p.name));
  const terminology = searchOptionsOf.get(registry)?.terminology ?? false;
  for (const type of types)
    registry.declareSearchParams(
      type,
      searchParamDeclarations(type, terminology).filter((p) => !common.has(p.name)),
    );
}

export interface SearchOptions {
  /** The server has terminology (FhirContext.terminology): the token modifiers that need it are served and stated. */
  terminology?: boolean;
}

/** What each registry's search was registered with, for declaring the parameters again later. */
const searchOptionsOf = new WeakMap<FhirRegistry, SearchOptions>();

/** Registers type and system search, and declares every searchable parameter (for /metadata). */
export function registerSearch(registry: FhirRegistry, options: SearchOptions = {}): FhirRegistry {
  searchOptionsOf.set(registry, options);
  const terminology = options.terminology ?? false;
  registry.registerInteraction('search-type', searchType).registerInteraction('search-system', searchSystem);
  registry.declareIncludes(includeDeclarations, revIncludeDeclarations);
  const common = new Set(['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source']);
  const anyType = [
    ...searchParamDeclarations('Patient', terminology).filter((p) => common.has(p.name)),
    ...WHOLE_RESOURCE_PARAMS,
  ].sort((a, b) => a.name.localeCompare(b.name));
  registry.declareSearchParams('Resource', anyType);
  for (const type of searchDefinitions().resourceTypes) {
    registry.declareSearchParams(
      type,
      searchParamDeclarations(type, terminology).filter((p) => !common.has(p.name)),
    );
  }
  return registry;
}
