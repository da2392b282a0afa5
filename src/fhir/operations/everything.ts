/**
 * Patient $everything (http://hl7.org/fhir/R4/patient-operation-everything.html):
 *
 *   GET|POST [base]/Patient/[id]/$everything?_since=&_type=&_count=&_offset=
 *
 * A searchset Bundle: the Patient, every current resource of its patient compartment (entries `match`, counted in
 * `total`), and on each page the resources they reference that lie outside every compartment (Practitioner,
 * Organization, Location, Medication...; entries `include`, not counted). Pages are linked with `next`/`previous`.
 *
 * Access: every resource passes `context.access.canRead` (the one access check). A Patient the caller may not see
 * is a 404, as a missing one; compartment resources the caller may not see are absent and not counted; types the
 * caller's scopes do not cover are left out with a warning. `start`/`end` (care dates) are not supported: refused
 * (400), or ignored with a warning under `Prefer: handling=lenient`.
 */
import { randomUUID } from 'node:crypto';
import { parseFhirJson, type FhirResource } from '../fhir-json.js';
import { fhirError, issue, type OperationOutcomeIssue } from '../outcome.js';
import { assertId, typeReadability } from '../interactions/common.js';
import type { OperationRegistration } from '../interactions/fhir-registry.js';
import type { FhirContext, FhirRequest, InteractionHandler } from '../interactions/types.js';
import {
  indexedAs,
  isKnownResourceType,
  referenceKey,
  searchDefinitions,
  searchParameter,
} from '../search/definitions.js';
import { LIMITS, type CompiledQuery } from '../search/parse.js';
import type { StoreSearchRequest } from '../store/search-query.js';
import type { StoredVersion } from '../store/resource-store.js';
import { readOperationInput } from './terminology.js';

/** Most non-compartment resources added to one page. */
export const MAX_REFERENCED = 1000;

/** Compartment parameter code -> the (selected) types it links to a patient, e.g. subject -> [Observation, ...]. */
function compartmentQueries(types: Set<string> | undefined): Map<string, string[]> {
  const byParam = new Map<string, string[]>();
  for (const [type, params] of searchDefinitions().patientCompartment) {
    if (types && !types.has(type)) continue;
    for (const param of params) {
      if (!searchParameter(type, param)) continue;
      const list = byParam.get(param);
      if (list) list.push(type);
      else byParam.set(param, [type]);
    }
  }
  return byParam;
}

function nonNegativeInteger(value: string | undefined, name: string, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value))
    throw fhirError('parameter-invalid', `${name} must be a non-negative integer, not '${value}'`, {
      expression: name,
    });
  return Math.min(Number(value), max);
}

/** `_since` as epoch ms: an instant, or a date/dateTime (taken as its start, UTC when no zone is given). */
function parseSince(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ok =
    /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/.test(value) &&
    !Number.isNaN(Date.parse(value.length === 4 ? `${value}-01-01` : value));
  if (!ok)
    throw fhirError(
      'parameter-invalid',
      `_since must be an instant such as 2024-01-01T00:00:00Z, not '${value}'`,
      { expression: '_since' },
    );
  const zoned = value.includes('T') && !/(Z|[+-]\d{2}:\d{2})$/.test(value) ? `${value}Z` : value;
  return Date.parse(value.length === 4 ? `${value}-01-01` : zoned);
}

/** Every literal `Type/id` reference in a resource (relative or to this server's form; contained ones skipped). */
function referencesIn(value: unknown, out: Set<string>): void {
  if (Array.isArray(value)) {
    for (const item of value) referencesIn(item, out);
  } else if (value && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) {
      if (key === 'contained') continue;
      if (key === 'reference' && typeof child === 'string') {
        if (child.startsWith('#') || /^[a-z][a-z0-9+.-]*:/i.test(child)) continue;
        const ref = referenceKey(child);
        if (ref) out.add(ref);
      } else if (typeof child === 'object') referencesIn(child, out);
    }
  }
}

function queryString(pairs: [string, string][]): string {
  return pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
}

/** The operation's parameters, checked. */
interface EverythingParameters {
  /** `_since` as given (for the page links) and as epoch ms. */
  sinceText: string | undefined;
  since: number | undefined;
  count: number;
  offset: number;
  /** `_type`, when given: the only types returned. */
  types: Set<string> | undefined;
}

/** What every phase of one request shares: the patient, and the caller's access asked once per version or type. */
interface EverythingRun {
  context: FhirContext;
  id: string;
  patientRef: string;
  /** One decision per version and request (a resource found several times is asked, and audited, once). */
  canRead: (version: StoredVersion) => boolean;
  /** Whether the caller's scopes cover a type; the types they do not are collected in `leftOut`. */
  typeReadable: (type: string) => boolean;
  leftOut: string[];
  /** Warnings for the Bundle's OperationOutcome entry, in the order they arise. */
  warnings: OperationOutcomeIssue[];
}

export const everythingHandler: InteractionHandler = async (request: FhirRequest, context: FhirContext) => {
  if (request.resourceType !== 'Patient')
    throw fhirError('request-invalid', '$everything is defined on Patient only');
  context.access.authorize('read', 'Patient');
  const id = assertId(request.id);
  if (!context.store.search)
    throw fhirError('not-implemented', 'This store does not support search, which $everything needs');

  const warnings: OperationOutcomeIssue[] = [];
  const parameters = readEverythingParameters(request, warnings);
  const run = startRun(context, id, warnings);
  const patient = await readPatient(run);
  const ordered = await findMembers(run, patient, parameters);
  const page = await loadPage(run, ordered.slice(parameters.offset, parameters.offset + parameters.count));
  const referenced = await findReferenced(run, page);
  if (run.leftOut.length > 0)
    warnings.push(
      issue(
        'warning',
        'forbidden',
        `Left out, as your access does not cover them: ${run.leftOut.sort().join(', ')}`,
      ),
    );
  const links = pageLinks(request.baseUrl, id, parameters, ordered.length);
  const body = searchsetBundle(request.baseUrl, { total: ordered.length, links, page, referenced, warnings });
  return { status: 200, body, headers: { 'Content-Type': 'application/fhir+json; charset=utf-8' } };
};

/** Phase 0: `_since`, `_count`, `_offset`, `_type`; `start`/`end` are warned about (refused when strict). */
function readEverythingParameters(
  request: FhirRequest,
  warnings: OperationOutcomeIssue[],
): EverythingParameters {
  const input = readOperationInput(request);
  const one = (name: string): string | undefined => input.strings.get(name)?.[0];
  const sinceText = one('_since');
  const since = parseSince(sinceText);
  const count = nonNegativeInteger(one('_count'), '_count', LIMITS.maxCount) ?? LIMITS.defaultCount;
  const offset = nonNegativeInteger(one('_offset'), '_offset', LIMITS.maxOffset) ?? 0;
  let types: Set<string> | undefined;
  const typeValues = input.strings.get('_type');
  if (typeValues) {
    types = new Set();
    for (const type of typeValues
      .flatMap((v) => v.split(','))
      .map((t) => t.trim())
      .filter(Boolean)) {
      if (!isKnownResourceType(type))
        throw fhirError('parameter-invalid', `_type names an unknown resource type '${type}'`, {
          expression: '_type',
        });
      types.add(type);
    }
  }
  for (const name of ['start', 'end']) {
    if (one(name) === undefined) continue;
    // Ignoring a care-date limit would answer with the whole record: refused unless the client says lenient.
    if (request.preferHandling !== 'lenient')
      throw fhirError('parameter-invalid', `$everything parameter '${name}' is not supported`, {
        expression: name,
      });
    warnings.push(
      issue('warning', 'not-supported', `$everything parameter '${name}' is not supported and was ignored`),
    );
  }
  return { sinceText, since, count, offset, types };
}

function startRun(context: FhirContext, id: string, warnings: OperationOutcomeIssue[]): EverythingRun {
  const decisions = new Map<string, boolean>();
  const canRead = (v: StoredVersion): boolean => {
    const key = `${v.resourceType}/${v.id}/${v.versionId}`;
    let allowed = decisions.get(key);
    if (allowed === undefined) decisions.set(key, (allowed = context.access.canRead(v)));
    return allowed;
  };
  // Types outside the caller's scopes are left out (as search leaves out _include of such types), asked once each.
  const leftOut: string[] = [];
  const typeReadable = typeReadability(context, (type) => leftOut.push(type));
  return { context, id, patientRef: `Patient/${id}`, canRead, typeReadable, leftOut, warnings };
}

/** A Patient the caller may not read is a 404, as a missing one. */
async function readPatient(run: EverythingRun): Promise<StoredVersion> {
  const patient = await run.context.store.read('Patient', run.id);
  if (!patient || !run.canRead(patient))
    throw fhirError('resource-not-found', `${run.patientRef} is not known`);
  if (patient.deleted) throw fhirError('resource-deleted', `${run.patientRef} has been deleted`);
  return patient;
}

/**
 * Phase 1, metadata only: the visible current members of the compartment, one indexed reference search per
 * compartment parameter. With count 0 and wantTotal the store visits every candidate through `canRead` without
 * loading bodies; we keep the ones canRead allows (and that the stored compartments confirm). Returned in a stable
 * order for paging: the Patient first, then by type, last update and id.
 */
async function findMembers(
  run: EverythingRun,
  patient: StoredVersion,
  { since, types }: EverythingParameters,
): Promise<StoredVersion[]> {
  const { context, id, patientRef, canRead } = run;
  const members = new Map<string, StoredVersion>();
  const keep = (v: StoredVersion): boolean =>
    !v.deleted && (since === undefined || Date.parse(v.lastUpdated) >= since);
  if ((!types || types.has('Patient')) && keep(patient)) members.set(patientRef, patient);
  for (const [param, paramTypes] of compartmentQueries(types)) {
    const searchTypes = paramTypes.filter(run.typeReadable);
    if (searchTypes.length === 0) continue;
    const storeRequest: StoreSearchRequest = {
      query: compartmentQuery(searchTypes, param, patientRef),
      wantTotal: true,
      indexedAs,
      canRead: (v) => {
        if (!canRead(v)) return false;
        const key = `${v.resourceType}/${v.id}`;
        if (!members.has(key) && keep(v) && (v.patients ?? []).includes(patientRef)) members.set(key, v);
        return true;
      },
    };
    await context.store.search!(storeRequest);
  }

  return [...members.values()].sort((a, b) => {
    const ap = a.resourceType === 'Patient' && a.id === id ? 0 : 1;
    const bp = b.resourceType === 'Patient' && b.id === id ? 0 : 1;
    if (ap !== bp) return ap - bp;
    if (a.resourceType !== b.resourceType) return a.resourceType < b.resourceType ? -1 : 1;
    if (a.lastUpdated !== b.lastUpdated) return a.lastUpdated < b.lastUpdated ? -1 : 1;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
}

/** `param=patientRef` over `types`, counting only (no page, no bodies). */
function compartmentQuery(types: string[], param: string, patientRef: string): CompiledQuery {
  return {
    resourceTypes: types,
    filters: [
      {
        kind: 'param',
        param,
        type: 'reference',
        values: [{ kind: 'reference', references: [patientRef] }],
      },
    ],
    sort: [],
    count: 0,
    offset: 0,
    total: 'accurate',
    summaryCount: false,
    include: [],
    revinclude: [],
    warnings: [],
    applied: [],
  };
}

/** Phase 2: bodies for this page only, read again (it may have changed since phase 1) and checked again. */
async function loadPage(run: EverythingRun, members: StoredVersion[]): Promise<StoredVersion[]> {
  const page: StoredVersion[] = [];
  for (const member of members) {
    const current =
      member.json !== undefined ? member : await run.context.store.read(member.resourceType, member.id);
    if (!current || current.deleted || !current.json || !run.canRead(current)) continue;
    page.push(current);
  }
  return page;
}

/** Phase 3: the resources the page references that lie outside every compartment (directory data). */
async function findReferenced(run: EverythingRun, page: StoredVersion[]): Promise<StoredVersion[]> {
  const compartmentTypes = searchDefinitions().patientCompartment;
  const seen = new Set(page.map((v) => `${v.resourceType}/${v.id}`));
  const referenced: StoredVersion[] = [];
  for (const version of page) {
    const refs = new Set<string>();
    referencesIn(parseFhirJson<FhirResource>(version.json!), refs);
    for (const ref of refs) {
      if (seen.has(ref)) continue;
      seen.add(ref);
      const [type, refId] = ref.split('/');
      if (type === 'Patient' || compartmentTypes.has(type) || !isKnownResourceType(type)) continue;
      if (!run.typeReadable(type)) continue;
      if (referenced.length >= MAX_REFERENCED) {
        run.warnings.push(
          issue('warning', 'too-costly', `Only ${MAX_REFERENCED} referenced resources are included per page`),
        );
        break;
      }
      const target = await run.context.store.read(type, refId);
      if (!target || target.deleted || !target.json || !run.canRead(target)) continue;
      referenced.push(target);
    }
    if (referenced.length >= MAX_REFERENCED) break;
  }
  return referenced;
}

/** self, and next/previous when there are such pages. */
function pageLinks(
  baseUrl: string,
  id: string,
  { sinceText, types, count, offset }: EverythingParameters,
  total: number,
): { relation: string; url: string }[] {
  const linkParams = (at: number): string => {
    const pairs: [string, string][] = [];
    if (sinceText !== undefined) pairs.push(['_since', sinceText]);
    if (types) pairs.push(['_type', [...types].join(',')]);
    pairs.push(['_count', String(count)]);
    if (at > 0) pairs.push(['_offset', String(at)]);
    return `${baseUrl}/Patient/${id}/$everything?${queryString(pairs)}`;
  };
  const links = [{ relation: 'self', url: linkParams(offset) }];
  if (count > 0 && offset + count < total) links.push({ relation: 'next', url: linkParams(offset + count) });
  if (count > 0 && offset > 0)
    links.push({ relation: 'previous', url: linkParams(Math.max(0, offset - count)) });
  return links;
}

/** Phase 4: the searchset, assembled as text: stored resources are served exactly as stored (lossless numbers). */
function searchsetBundle(
  baseUrl: string,
  contents: {
    total: number;
    links: { relation: string; url: string }[];
    page: StoredVersion[];
    referenced: StoredVersion[];
    warnings: OperationOutcomeIssue[];
  },
): string {
  const { total, links, page, referenced, warnings } = contents;
  const parts: string[] = [];
  const entry = (version: StoredVersion, mode: 'match' | 'include'): string =>
    `{"fullUrl":${JSON.stringify(`${baseUrl}/${version.resourceType}/${version.id}`)},"resource":${version.json},"search":{"mode":"${mode}"}}`;
  for (const version of page) parts.push(entry(version, 'match'));
  for (const version of referenced) parts.push(entry(version, 'include'));
  if (warnings.length > 0) {
    const outcome = { resourceType: 'OperationOutcome', id: randomUUID(), issue: warnings };
    parts.push(
      `{"fullUrl":"urn:uuid:${outcome.id}","resource":${JSON.stringify(outcome)},"search":{"mode":"outcome"}}`,
    );
  }
  const head = JSON.stringify({
    resourceType: 'Bundle',
    id: randomUUID(),
    meta: { lastUpdated: new Date().toISOString() },
    type: 'searchset',
    total,
    link: links,
  });
  return parts.length > 0 ? `${head.slice(0, -1)},"entry":[${parts.join(',')}]}` : head;
}

export function everythingOperation(): OperationRegistration {
  return {
    name: 'everything',
    definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything',
    levels: ['instance'],
    resourceTypes: ['Patient'],
    documentation:
      "The Patient's record: the Patient, every current resource of its compartment and the directory resources " +
      'they reference, as a searchset Bundle (parameters _since, _type, _count; paged by next links). Only what ' +
      'the caller may read (consent grants, custodian) is returned or counted; a Patient it may not read is a 404.',
    handler: everythingHandler,
  };
}
