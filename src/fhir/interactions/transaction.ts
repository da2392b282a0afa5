/**
 * transaction: POST [base] with a Bundle of type `transaction` (http://hl7.org/fhir/R4/http.html#transaction).
 * All or nothing: every entry runs inside one `store.transaction`, through the same registered handlers as single
 * requests (so access and validation apply per entry); the first refused entry rolls everything back and its
 * OperationOutcome (with its status, and `Bundle.entry[i]` in the expression) is the answer.
 *
 * Order (R4 http.html#trules): resolve ids first (POST ids are assigned up front; conditional creates, updates and
 * deletes, and conditional references `Type?criteria`, are resolved against the state before the transaction), then
 * rewrite every reference to an entry's fullUrl (`urn:uuid:...` or an absolute URL of an entry) to the assigned
 * `Type/id` anywhere in the bundle's resources (extensions included) and in entry URLs' queries, then process
 * DELETE, POST, PUT/PATCH, GET/HEAD.
 */
import { FhirError, fhirError, issue } from '../outcome.js';
import { isKnownResourceType } from '../search/definitions.js';
import {
  batch,
  bundleOf,
  checkEntry,
  conditionalMatches,
  resolveConditionalReferences,
  responseBundle,
  responseEntry,
  runEntry,
  splitEntryUrl,
  type BundleEntry,
  type EntryOptions,
} from './batch.js';
import type { FhirRegistry } from './fhir-registry.js';
import type { FhirContext, FhirRequest, InteractionHandler } from './types.js';
import { newResourceId } from './ids.js';
import { emptyQuery, parseQuery, rewriteQueryValues } from '../query.js';

const ORDER: Record<string, number> = { DELETE: 0, POST: 1, PUT: 2, PATCH: 2, GET: 3, HEAD: 3 };

/** Replaces every string equal to a key of `map` (a reference to another entry) with its `Type/id`. */
function rewriteReferences(value: unknown, map: Map<string, string>): unknown {
  if (typeof value === 'string') return map.get(value) ?? rewriteFragment(value, map);
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = rewriteReferences(value[i], map);
    return value;
  }
  if (!(value.constructor === Object || Object.getPrototypeOf(value) === null)) return value; // LosslessNumber
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) record[key] = rewriteReferences(record[key], map);
  return record;
}

/** `urn:uuid:x/_history/1` or `urn:uuid:x#frag` style tails keep their suffix. */
function rewriteFragment(text: string, map: Map<string, string>): string {
  if (!text.startsWith('urn:uuid:') && !text.startsWith('urn:oid:')) return text;
  const m = /^(urn:(?:uuid|oid):[^/#]+)([/#].*)$/.exec(text);
  const target = m ? map.get(m[1]) : undefined;
  return target ? target + m![2] : text;
}

function rewriteUrl(url: string, map: Map<string, string>): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const rewritten = rewriteQueryValues(url.slice(q + 1), (value) => map.get(value) ?? value);
  return rewritten === undefined ? url : `${url.slice(0, q)}?${rewritten}`;
}

interface Planned {
  index: number;
  entry: BundleEntry;
  options: EntryOptions;
  /** A conditional create that matched: answered with the existing resource, nothing written. */
  existing?: { resourceType: string; id: string };
}

function entryError(err: unknown, index: number): unknown {
  if (!(err instanceof FhirError)) return err;
  const where = `Bundle.entry[${index}]`;
  const issues = err.outcome.issue.map((i) => ({
    ...i,
    diagnostics: `${where}: ${i.diagnostics ?? i.code}`,
    expression: i.expression?.map((e) =>
      `${where}.resource.${e.replace(/^[A-Z][A-Za-z]+\.?/, '')}`.replace(/\.$/, ''),
    ) ?? [where],
  }));
  return new FhirError(err.code, issues, { headers: err.headers });
}

/** What phase 1 (resolve ids) hands on: the entries' plans in bundle order, and each fullUrl's `Type/id`. */
interface Resolution {
  planned: Planned[];
  fullUrls: Map<string, string>;
}

/** One entry being planned: its place, its URL's parts, and the bundle-wide maps it adds to. */
interface PlanStep {
  plan: Planned;
  method: string;
  url: string;
  segments: string[];
  query: ReturnType<typeof splitEntryUrl>['query'];
  fullUrls: Map<string, string>;
  seenTargets: Set<string>;
}

export const transaction: InteractionHandler = async (request, context) => {
  context.access.authorize('transaction');
  const { entries: raw } = bundleOf(request, 'transaction');
  const entries = raw.map((e, i) => checkEntry(e, i));
  // References are rewritten in place: the parsed Bundle belongs to this request alone (no copy of large bundles).

  const { responses } = await context.store.transaction(async (store) => {
    const tx: FhirContext = { ...context, store };
    const { planned, fullUrls } = await resolveIds(entries, tx, request);
    rewriteEntryReferences(planned, fullUrls);
    return { responses: await processInOrder(planned, tx, request) };
  });

  return {
    status: 200,
    body: responseBundle('transaction-response', responses),
    headers: { 'Content-Type': 'application/fhir+json; charset=utf-8' },
  };
};

/** Phase 1: assigns POST ids and resolves conditional creates, updates and deletes against the state before. */
async function resolveIds(
  entries: BundleEntry[],
  tx: FhirContext,
  request: FhirRequest,
): Promise<Resolution> {
  const fullUrls = new Map<string, string>();
  const planned: Planned[] = [];
  const seenTargets = new Set<string>();
  const conditionalReferences = new Map<string, string>();
  for (const [index, entry] of entries.entries()) {
    const { method, url } = entry.request;
    const { path, query } = splitEntryUrl(url, request.baseUrl);
    const segments = path.split('/').filter((s) => s !== '');
    const step: PlanStep = {
      plan: { index, entry, options: {} },
      method,
      url,
      segments,
      query,
      fullUrls,
      seenTargets,
    };
    try {
      if (method === 'POST' && segments.length === 1 && isKnownResourceType(segments[0])) {
        await planCreate(step, tx, request.baseUrl);
      } else if (
        (method === 'PUT' || method === 'DELETE') &&
        segments.length === 1 &&
        isKnownResourceType(segments[0]) &&
        Object.keys(query).length > 0
      ) {
        await planConditionalWrite(step, tx, request.baseUrl);
      } else if ((method === 'PUT' || method === 'PATCH' || method === 'DELETE') && segments.length === 2) {
        planTargetedWrite(step);
      }
      // Conditional references resolve against the state before the transaction, like conditional writes.
      if (entry.resource)
        await resolveConditionalReferences(entry.resource, tx, request.baseUrl, conditionalReferences);
    } catch (err) {
      throw entryError(err, index);
    }
    planned.push(step.plan);
  }
  return { planned, fullUrls };
}

/** POST [type]: a new id up front, or the one existing match of If-None-Exist. */
async function planCreate(step: PlanStep, tx: FhirContext, baseUrl: string): Promise<void> {
  const { plan, segments, fullUrls } = step;
  const { entry } = plan;
  const resourceType = segments[0];
  if (entry.resource!.resourceType !== resourceType)
    throw fhirError(
      'resource-type-mismatch',
      `The resource is a ${entry.resource!.resourceType}, the URL says ${resourceType}`,
    );
  let id: string | undefined;
  if (entry.request.ifNoneExist) {
    const criteria = parseQuery(entry.request.ifNoneExist.replace(/^\?/, ''));
    const matches = await conditionalMatches(tx, resourceType, criteria, baseUrl);
    if (matches.length > 1)
      throw fhirError(
        'conditional-multiple-matches',
        `If-None-Exist '${entry.request.ifNoneExist}' matches more than one ${resourceType}`,
      );
    if (matches.length === 1) {
      id = matches[0];
      plan.existing = { resourceType, id };
    }
  }
  id ??= newResourceId();
  plan.options.assignedId = id;
  // Resolved here against the state before the transaction; the create must not re-run it.
  plan.entry = { ...entry, request: { ...entry.request, ifNoneExist: undefined } };
  if (entry.fullUrl) fullUrls.set(entry.fullUrl, `${resourceType}/${id}`);
}

/** PUT/DELETE [type]?criteria: at most one match; a PUT without a match or an id gets a new id. */
async function planConditionalWrite(step: PlanStep, tx: FhirContext, baseUrl: string): Promise<void> {
  const { plan, method, url, segments, query, fullUrls, seenTargets } = step;
  const { entry } = plan;
  const resourceType = segments[0];
  const matches = await conditionalMatches(tx, resourceType, query, baseUrl);
  if (matches.length > 1)
    throw fhirError(
      'conditional-multiple-matches',
      `The criteria of '${url}' match more than one ${resourceType}`,
    );
  plan.options.resolvedId = matches[0] ?? null;
  if (method === 'PUT' && matches.length === 0 && entry.resource?.id === undefined)
    plan.options.assignedId = newResourceId();
  const id = matches[0] ?? (entry.resource?.id as string | undefined) ?? plan.options.assignedId;
  if (entry.fullUrl && id) fullUrls.set(entry.fullUrl, `${resourceType}/${id}`);
  if (id) {
    if (seenTargets.has(`${resourceType}/${id}`))
      throw fhirError('bundle-invalid', `${resourceType}/${id} appears in more than one entry`);
    seenTargets.add(`${resourceType}/${id}`);
  }
}

/** PUT/PATCH/DELETE [type]/[id]: each target at most once in the bundle. */
function planTargetedWrite(step: PlanStep): void {
  const { plan, method, segments, fullUrls, seenTargets } = step;
  const key = `${segments[0]}/${segments[1]}`;
  if (seenTargets.has(key)) throw fhirError('bundle-invalid', `${key} appears in more than one entry`);
  seenTargets.add(key);
  if (plan.entry.fullUrl && method === 'PUT') fullUrls.set(plan.entry.fullUrl, key);
}

/** Phase 2: rewrites references to entries' fullUrls in the resources and in the entry URLs' queries. */
function rewriteEntryReferences(planned: Planned[], fullUrls: Map<string, string>): void {
  if (fullUrls.size === 0) return;
  for (const { entry } of planned) {
    if (entry.resource) rewriteReferences(entry.resource, fullUrls);
    entry.request = { ...entry.request, url: rewriteUrl(entry.request.url, fullUrls) };
  }
}

/** Phase 3: runs the entries in the spec's order; the first failure aborts (and rolls back) everything. */
async function processInOrder(planned: Planned[], tx: FhirContext, request: FhirRequest): Promise<string[]> {
  const responses = new Array<string>(planned.length);
  const ordered = [...planned].sort(
    (a, b) => ORDER[a.entry.request.method] - ORDER[b.entry.request.method] || a.index - b.index,
  );
  for (const plan of ordered) {
    try {
      responses[plan.index] = plan.existing
        ? await answerExisting(plan.existing, tx, request.baseUrl)
        : await runPlanned(plan, tx, request);
    } catch (err) {
      throw entryError(err, plan.index);
    }
  }
  return responses;
}

/** A conditional create that matched answers with the existing resource (read through the read handler). */
async function answerExisting(
  existing: NonNullable<Planned['existing']>,
  tx: FhirContext,
  baseUrl: string,
): Promise<string> {
  const { resourceType, id } = existing;
  const readHandler = tx.registry?.handlerFor({ interaction: 'read', resourceType, id, method: 'GET' });
  if (!readHandler) throw fhirError('method-not-allowed', 'read is not supported');
  const found = await readHandler(
    { interaction: 'read', method: 'GET', resourceType, id, query: emptyQuery(), baseUrl },
    tx,
  );
  const versionId = /W\/"(\d+)"/.exec(found.headers?.ETag ?? '')?.[1];
  const location = `${baseUrl}/${resourceType}/${id}${versionId ? `/_history/${versionId}` : ''}`;
  return responseEntry({ ...found, status: 200, headers: { ...found.headers, Location: location } }, baseUrl);
}

/** Any other entry runs through its registered handler; a refusal becomes the transaction's error. */
async function runPlanned(plan: Planned, tx: FhirContext, request: FhirRequest): Promise<string> {
  const response = await runEntry(plan.entry, tx, request, plan.options);
  if (response.status >= 400) {
    const outcome =
      typeof response.body === 'object' && response.body?.resourceType === 'OperationOutcome'
        ? response.body
        : undefined;
    // The entry's own answer, status and outcome as they are (its issues keep their catalogue code).
    throw new FhirError(
      response.status,
      (outcome as never) ?? [issue('error', 'processing', `The entry failed with status ${response.status}`)],
    );
  }
  return responseEntry(response, request.baseUrl);
}

/** Registers batch and transaction (POST [base]) in the registry. */
export function registerBundles(registry: FhirRegistry): FhirRegistry {
  return registry.registerInteraction('batch', batch).registerInteraction('transaction', transaction);
}
