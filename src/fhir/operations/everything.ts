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
 * caller's scopes do not cover are left out with a warning. `start`/`end` (care dates) are not supported: ignored
 * with a warning, refused under `Prefer: handling=strict`.
 */
import { randomUUID } from 'node:crypto';
import { parseFhirJson, type FhirResource } from '../../mapping/fhir-json.js';
import { badRequest, gone, issue, notFound, notImplemented, type OperationOutcomeIssue } from '../outcome.js';
import { assertId, typeReadability } from '../interactions/common.js';
import type { OperationRegistration } from '../interactions/registry.js';
import type { FhirContext, FhirRequest, InteractionHandler } from '../interactions/types.js';
import {
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
    throw badRequest(`${name} must be a non-negative integer, not '${value}'`, name);
  return Math.min(Number(value), max);
}

/** `_since` as epoch ms: an instant, or a date/dateTime (taken as its start, UTC when no zone is given). */
function parseSince(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ok =
    /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/.test(value) &&
    !Number.isNaN(Date.parse(value.length === 4 ? `${value}-01-01` : value));
  if (!ok)
    throw badRequest(`_since must be an instant such as 2024-01-01T00:00:00Z, not '${value}'`, '_since');
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

export const everythingHandler: InteractionHandler = async (request: FhirRequest, context: FhirContext) => {
  if (request.resourceType !== 'Patient') throw badRequest('$everything is defined on Patient only');
  context.access.authorize('read', 'Patient');
  const id = assertId(request.id);
  const patientRef = `Patient/${id}`;
  if (!context.store.search)
    throw notImplemented('This store does not support search, which $everything needs');

  const input = readOperationInput(request);
  const one = (name: string): string | undefined => input.strings.get(name)?.[0];
  const since = parseSince(one('_since'));
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
        throw badRequest(`_type names an unknown resource type '${type}'`, '_type');
      types.add(type);
    }
  }
  const warnings: OperationOutcomeIssue[] = [];
  for (const name of ['start', 'end']) {
    if (one(name) === undefined) continue;
    const message = `$everything parameter '${name}' is not supported and was ignored`;
    if (request.preferHandling === 'strict') throw badRequest(message, name);
    warnings.push(issue('warning', 'not-supported', message));
  }

  // One decision per version and request: a resource found through several compartment parameters, and read again
  // for its page, is asked (and recorded by the policy's audit) once.
  const decisions = new Map<string, boolean>();
  const canRead = (v: StoredVersion): boolean => {
    const key = `${v.resourceType}/${v.id}/${v.versionId}`;
    let allowed = decisions.get(key);
    if (allowed === undefined) decisions.set(key, (allowed = context.access.canRead(v)));
    return allowed;
  };

  const patient = await context.store.read('Patient', id);
  if (!patient || !canRead(patient)) throw notFound(`${patientRef} is not known`);
  if (patient.deleted) throw gone(`${patientRef} has been deleted`);

  // Types outside the caller's scopes are left out (as search leaves out _include of such types), asked once each.
  const leftOut: string[] = [];
  const typeReadable = typeReadability(context, (type) => leftOut.push(type));

  // Phase 1, metadata only: the visible current members of the compartment, one indexed reference search per
  // compartment parameter. With count 0 and wantTotal the store visits every candidate through `canRead` without
  // loading bodies; we keep the ones canRead allows (and that the stored compartments confirm).
  const members = new Map<string, StoredVersion>();
  const keep = (v: StoredVersion): boolean =>
    !v.deleted && (since === undefined || Date.parse(v.lastUpdated) >= since);
  if ((!types || types.has('Patient')) && keep(patient)) members.set(patientRef, patient);
  for (const [param, paramTypes] of compartmentQueries(types)) {
    const searchTypes = paramTypes.filter(typeReadable);
    if (searchTypes.length === 0) continue;
    const query: CompiledQuery = {
      resourceTypes: searchTypes,
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
    const storeRequest: StoreSearchRequest = {
      query,
      wantTotal: true,
      canRead: (v) => {
        if (!canRead(v)) return false;
        const key = `${v.resourceType}/${v.id}`;
        if (!members.has(key) && keep(v) && (v.patients ?? []).includes(patientRef)) members.set(key, v);
        return true;
      },
    };
    await context.store.search(storeRequest);
  }

  // Stable order for paging: the Patient first, then by type, last update and id.
  const ordered = [...members.values()].sort((a, b) => {
    const ap = a.resourceType === 'Patient' && a.id === id ? 0 : 1;
    const bp = b.resourceType === 'Patient' && b.id === id ? 0 : 1;
    if (ap !== bp) return ap - bp;
    if (a.resourceType !== b.resourceType) return a.resourceType < b.resourceType ? -1 : 1;
    if (a.lastUpdated !== b.lastUpdated) return a.lastUpdated < b.lastUpdated ? -1 : 1;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  const total = ordered.length;

  // Phase 2: bodies for this page only, read again (it may have changed since phase 1) and checked again.
  const page: StoredVersion[] = [];
  for (const member of ordered.slice(offset, offset + count)) {
    const current =
      member.json !== undefined ? member : await context.store.read(member.resourceType, member.id);
    if (!current || current.deleted || !current.json || !canRead(current)) continue;
    page.push(current);
  }

  // Referenced resources outside every compartment (directory data), for this page.
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
      if (!typeReadable(type)) continue;
      if (referenced.length >= MAX_REFERENCED) {
        warnings.push(
          issue('warning', 'too-costly', `Only ${MAX_REFERENCED} referenced resources are included per page`),
        );
        break;
      }
      const target = await context.store.read(type, refId);
      if (!target || target.deleted || !target.json || !canRead(target)) continue;
      referenced.push(target);
    }
    if (referenced.length >= MAX_REFERENCED) break;
  }

  if (leftOut.length > 0)
    warnings.push(
      issue(
        'warning',
        'forbidden',
        `Left out, as your access does not cover them: ${leftOut.sort().join(', ')}`,
      ),
    );

  const linkParams = (at: number): string => {
    const pairs: [string, string][] = [];
    if (one('_since') !== undefined) pairs.push(['_since', one('_since')!]);
    if (types) pairs.push(['_type', [...types].join(',')]);
    pairs.push(['_count', String(count)]);
    if (at > 0) pairs.push(['_offset', String(at)]);
    return `${request.baseUrl}/Patient/${id}/$everything?${queryString(pairs)}`;
  };
  const links = [{ relation: 'self', url: linkParams(offset) }];
  if (count > 0 && offset + count < total) links.push({ relation: 'next', url: linkParams(offset + count) });
  if (count > 0 && offset > 0)
    links.push({ relation: 'previous', url: linkParams(Math.max(0, offset - count)) });

  // Assembled as text: stored resources are served exactly as stored (lossless numbers).
  const parts: string[] = [];
  const entry = (version: StoredVersion, mode: 'match' | 'include'): string =>
    `{"fullUrl":${JSON.stringify(`${request.baseUrl}/${version.resourceType}/${version.id}`)},"resource":${version.json},"search":{"mode":"${mode}"}}`;
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
  const body = parts.length > 0 ? `${head.slice(0, -1)},"entry":[${parts.join(',')}]}` : head;
  return { status: 200, body, headers: { 'Content-Type': 'application/fhir+json; charset=utf-8' } };
};

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
