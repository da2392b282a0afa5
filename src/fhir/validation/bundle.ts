/**
 * Bundle rules beyond the bdl-* invariants (which run as FHIRPath from the Bundle definition): fullUrl is absolute,
 * agrees with the resource id, and is unique (bdl-7 for versions); link relations are unique, and paging links only in searchsets and histories; references inside a document or message resolve
 * to exactly one entry.
 */
import { arrayField, field, isJsonObject, type JsonObject } from '../definitions/json.js';
import { parseQuery } from '../query.js';
import { checkBundleSignature } from './signatures.js';
import type { Run, WalkContext } from './walk-context.js';

const ABSOLUTE = /^[a-z][a-z0-9+.-]*:/i;

export function checkBundle(bundle: JsonObject, path: string, run: Run, walker: WalkContext): void {
  const entries = arrayField(bundle, 'entry');
  if (bundle.type === 'searchset') checkSearchset(bundle, entries, path, run);
  if (bundle.type === 'document') {
    checkDocumentReferences(entries, path, run);
    checkCompositionReferences(entries, path, run);
  }
  if (typeof bundle.type === 'string' && RESOLVES_URNS.has(bundle.type))
    checkUrnReferences(entries, path, run, bundle.type === 'transaction' ? 'error' : 'warning');
  checkLinkRelations(arrayField(bundle, 'link'), `${path}.link`, run);
  checkBundleSignature(bundle, path, run);
  if (bundle.type !== 'searchset' && bundle.type !== 'history') checkNoPaging(bundle, path, run);
  const seen = new Map<string, number>();
  entries.forEach((e, i) => {
    if (!e || typeof e !== 'object') return;
    checkLinkRelations(arrayField(e, 'link'), `${path}.entry[${i}].link`, run);
    const fullUrl = field(e, 'fullUrl');
    const where = `${path}.entry[${i}]`;
    if (typeof fullUrl === 'string') {
      if (!ABSOLUTE.test(fullUrl))
        run.add(
          'error',
          'invalid',
          `The fullUrl must be an absolute URL (not '${fullUrl.slice(0, 100)}')`,
          where,
          'bundle',
        );
      const res = field(e, 'resource');
      if (isJsonObject(res) && typeof res.resourceType === 'string') {
        const m = /^[a-z][a-z0-9+.-]*:\/\/.*\/([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/i.exec(fullUrl);
        if (
          m &&
          walker.isResourceType(m[1]) &&
          (m[1] !== res.resourceType || (typeof res.id === 'string' && m[2] !== res.id))
        )
          run.add(
            'error',
            'invalid',
            `The fullUrl '${fullUrl.slice(0, 100)}' does not match the resource ${res.resourceType}/${res.id ?? ''}`,
            where,
            'bundle',
          );
        const key = `${fullUrl}|${field(res.meta, 'versionId') ?? ''}`;
        if (bundle.type !== 'history') {
          const prior = seen.get(key);
          if (prior !== undefined)
            run.add(
              'error',
              'invalid',
              `Duplicate fullUrl '${fullUrl.slice(0, 100)}' (also in entry ${prior})`,
              where,
              'bundle',
            );
          else seen.set(key, i);
        }
      }
    }
  });
}

/**
 * A relation names one link (R4 http.html#paging: the `self`, `first`, `previous`, `next` and `last` links each
 * name one page; bundle.html#Bundle.link uses the IANA link relations), so a relation is not repeated in one list.
 */
function checkLinkRelations(links: unknown[], path: string, run: Run): void {
  if (links.length < 2) return;
  const seen = new Set<string>();
  links.forEach((l, i) => {
    const relation = field(l, 'relation');
    if (typeof relation !== 'string') return;
    if (seen.has(relation))
      run.add(
        'error',
        'invalid',
        `Duplicate link relation '${relation.slice(0, 100)}': a relation names one link`,
        `${path}[${i}].relation`,
        'bundle',
      );
    seen.add(relation);
  });
}

/** The relations that page through a result set (R4 http.html#paging). */
const PAGING = new Set(['first', 'previous', 'prev', 'next', 'last']);

/**
 * Paging links page through the results of a search or a history (R4 http.html#paging, search.html#conformance);
 * other Bundles (documents, messages, transactions, batches, collections) are not pages of anything.
 */
function checkNoPaging(bundle: JsonObject, path: string, run: Run): void {
  arrayField(bundle, 'link').forEach((l, i) => {
    const relation = field(l, 'relation');
    if (typeof relation === 'string' && PAGING.has(relation))
      run.add(
        'error',
        'invalid',
        `The link relation '${relation}' pages through search or history results and is not allowed in a Bundle of type '${String(bundle.type)}'`,
        `${path}.link[${i}].relation`,
        'bundle',
      );
  });
}

/** Searchset entries: `outcome` entries are OperationOutcomes; `match` entries have ids and the searched types. */
function checkSearchset(bundle: JsonObject, entries: unknown[], path: string, run: Run): void {
  const self = field(
    arrayField(bundle, 'link').find((l) => field(l, 'relation') === 'self'),
    'url',
  );
  let types: string[] | undefined;
  if (typeof self === 'string') {
    const q = self.indexOf('?');
    // The one query parser: a malformed escape (`%E0`) is text, never an exception.
    const typeParam = q < 0 ? undefined : parseQuery(self.slice(q + 1))._type?.[0];
    if (typeParam !== undefined) types = typeParam.split(',').filter(Boolean);
    else {
      const m = /(?:^|\/)([A-Z][A-Za-z]+)(?:\?|$)/.exec(self.split('?')[0].split('/').pop() ?? '');
      if (m) types = [m[1]];
    }
  }
  entries.forEach((e, i) => {
    const res = field(e, 'resource');
    if (!res || typeof res !== 'object') return;
    const mode = field(field(e, 'search'), 'mode');
    const where = `${path}.entry[${i}].resource`;
    const resourceType = field(res, 'resourceType');
    if (mode === 'outcome' && resourceType !== 'OperationOutcome')
      run.add('error', 'invalid', `This is not an OperationOutcome (${resourceType})`, where, 'bundle');
    if (mode === 'match') {
      if (typeof field(res, 'id') !== 'string')
        run.add('error', 'invalid', 'Search results must have ids', where, 'bundle');
      if (types && !(typeof resourceType === 'string' && types.includes(resourceType)))
        run.add(
          'error',
          'invalid',
          `This is not a matching resource type for the specified search (${resourceType} expecting [${types.join(', ')}])`,
          where,
          'bundle',
        );
    }
  });
}

/**
 * In a document, references resolve inside the Bundle: a relative reference `Type/id` is resolved against the
 * fullUrl base of the entry that holds it; several entries matching an unversioned reference is an error, and a
 * versioned reference (`/_history/v`) must find that version.
 */
function checkDocumentReferences(entries: unknown[], path: string, run: Run): void {
  const byUrl = new Map<string, unknown[]>();
  for (const e of entries) {
    const fullUrl = field(e, 'fullUrl');
    if (typeof fullUrl === 'string') byUrl.set(fullUrl, [...(byUrl.get(fullUrl) ?? []), e]);
  }
  entries.forEach((e, i) => {
    const resource = field(e, 'resource');
    const fullUrl = field(e, 'fullUrl');
    if (!resource || typeof resource !== 'object' || typeof fullUrl !== 'string') return;
    const base = /^(.*\/)[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.exec(fullUrl)?.[1];
    visitReferences(resource, `${path}.entry[${i}].resource`, 0, (ref, where) => {
      const m = /^([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(\/_history\/([A-Za-z0-9\-.]{1,64}))?$/.exec(ref);
      if (!m || !base) return;
      const matches = byUrl.get(base + m[1]) ?? [];
      if (m[3] !== undefined) {
        if (
          matches.length &&
          !matches.some((x) => field(field(field(x, 'resource'), 'meta'), 'versionId') === m[3])
        )
          run.add(
            'error',
            'invalid',
            `Can't find '${ref}' in the bundle: ${matches.length} entries have the type and id, but not that version`,
            where,
            'bundle',
          );
      } else if (matches.length > 1)
        run.add('error', 'forbidden', `Multiple matches in bundle for reference ${ref}`, where, 'bundle');
    });
  });
}

function visitReferences(
  v: unknown,
  where: string,
  depth: number,
  fn: (ref: string, where: string) => void,
): void {
  if (depth > 40 || !v || typeof v !== 'object') return;
  if (Array.isArray(v)) {
    v.forEach((x, i) => visitReferences(x, `${where}[${i}]`, depth + 1, fn));
    return;
  }
  const reference = field(v, 'reference');
  if (typeof reference === 'string') fn(reference, where);
  for (const k in v) {
    if (k === 'contained' || k.startsWith('_')) continue;
    const x = field(v, k);
    if (x && typeof x === 'object') visitReferences(x, `${where}.${k}`, depth + 1, fn);
  }
}

/**
 * Bundle types whose entries refer to each other by `urn:uuid:`/`urn:oid:` fullUrls (bundle.html#references,
 * http.html#trules): such a reference names an entry of the Bundle, and nothing outside it can resolve it. In a
 * transaction the server must replace it by the entry's new id (http.html#trules), so a missing entry is an error;
 * elsewhere a warning, as the reference validator reports it ("URN reference is not locally contained").
 */
const RESOLVES_URNS = new Set(['transaction', 'document', 'message', 'collection']);

function fullUrls(entries: unknown[]): Set<string> {
  const out = new Set<string>();
  for (const e of entries) {
    const fullUrl = field(e, 'fullUrl');
    if (typeof fullUrl === 'string') out.add(fullUrl);
  }
  return out;
}

/** A `urn:uuid:`/`urn:oid:` reference in an entry must be the fullUrl of an entry of the same Bundle. */
function checkUrnReferences(entries: unknown[], path: string, run: Run, severity: 'error' | 'warning'): void {
  const urls = fullUrls(entries);
  entries.forEach((e, i) => {
    const resource = field(e, 'resource');
    if (!isJsonObject(resource)) return;
    visitReferences(resource, `${path}.entry[${i}].resource`, 0, (ref, where) => {
      if ((ref.startsWith('urn:uuid:') || ref.startsWith('urn:oid:')) && !urls.has(ref))
        run.add(
          severity,
          'not-found',
          `Can't find '${ref.slice(0, 100)}' in the bundle: a ${ref.slice(0, 8)} reference names an entry of the Bundle`,
          where,
          'bundle',
        );
    });
  });
}

/**
 * A document's Composition refers only to resources in the document (documents.html#content; the reference
 * validator checks subject, author, encounter, custodian, attester.party, event.detail and the sections' author,
 * focus and entry): each such reference must resolve to an entry.
 */
function checkCompositionReferences(entries: unknown[], path: string, run: Run): void {
  const composition = field(entries[0], 'resource');
  if (!isJsonObject(composition) || composition.resourceType !== 'Composition') return;
  const compositionUrl = field(entries[0], 'fullUrl');
  const base =
    typeof compositionUrl === 'string'
      ? /^(.*\/)[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.exec(compositionUrl)?.[1]
      : undefined;
  const urls = fullUrls(entries);
  const typeIds = new Set<string>();
  for (const e of entries) {
    const r = field(e, 'resource');
    if (typeof field(r, 'resourceType') === 'string' && typeof field(r, 'id') === 'string')
      typeIds.add(`${field(r, 'resourceType') as string}/${field(r, 'id') as string}`);
  }
  const resolves = (ref: string): boolean => {
    if (ref.startsWith('#')) return true;
    if (urls.has(ref)) return true;
    const relative = /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(ref);
    if (!relative) return false;
    return base ? urls.has(base + ref) : typeIds.has(ref);
  };
  const at = `${path}.entry[0].resource`;
  const check = (ref: unknown, where: string): void => {
    const reference = field(ref, 'reference');
    if (typeof reference === 'string' && !resolves(reference))
      run.add(
        'error',
        'not-found',
        `Can't find '${reference.slice(0, 100)}' in the bundle: a document holds every resource its Composition refers to`,
        where,
        'bundle',
      );
  };
  const each = (list: unknown, where: string): void => {
    if (Array.isArray(list)) list.forEach((r, k) => check(r, `${where}[${k}]`));
  };
  check(composition.subject, `${at}.subject`);
  each(composition.author, `${at}.author`);
  check(composition.encounter, `${at}.encounter`);
  check(composition.custodian, `${at}.custodian`);
  arrayField(composition, 'attester').forEach((a, k) =>
    check(field(a, 'party'), `${at}.attester[${k}].party`),
  );
  arrayField(composition, 'event').forEach((ev, k) => each(field(ev, 'detail'), `${at}.event[${k}].detail`));
  const sections = (list: unknown[], where: string, depth: number): void => {
    if (depth > 20) return;
    list.forEach((sec, k) => {
      const w = `${where}[${k}]`;
      each(field(sec, 'author'), `${w}.author`);
      check(field(sec, 'focus'), `${w}.focus`);
      each(field(sec, 'entry'), `${w}.entry`);
      sections(arrayField(sec, 'section'), `${w}.section`, depth + 1);
    });
  };
  sections(arrayField(composition, 'section'), `${at}.section`, 0);
}
