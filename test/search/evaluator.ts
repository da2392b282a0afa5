/**
 * The independent evaluator (issue 16, "Tests that prove it"): the expected answer of a search computed straight
 * from the Synthea JSON files with plain TypeScript, written from the R4 search page's rules (search.html), not
 * from this server's code. It is scoped to the parameter kinds the evaluator tests name (each function below is one
 * rule of the page over one FHIR path), not a second search engine.
 *
 * `walk` runs a search against the running service (fastify inject) and follows every `next` link, collecting the
 * matches and includes of every page, so ids and totals are compared across all pages.
 */
import { expect } from 'vitest';
import type { App } from '../../src/app/app.js';
import { bundleResources, syntheaBundleFiles } from './synthea-service.js';

export type Json = Record<string, any>;

/** Every resource of the 100 bundles, as a transaction stores them (ids = urn:uuid, references `Type/id`). */
export class SyntheaData {
  readonly all: Json[];
  readonly byKey = new Map<string, Json>();
  constructor(files = syntheaBundleFiles()) {
    this.all = files.flatMap((file) => bundleResources(file) as Json[]);
    for (const r of this.all) this.byKey.set(`${r.resourceType}/${r.id}`, r);
  }
  of(type: string): Json[] {
    return this.all.filter((r) => r.resourceType === type);
  }
  /** `Type/id` of the resources of `type` for which `predicate` holds, sorted. */
  keys(type: string, predicate: (r: Json) => boolean): string[] {
    return this.of(type)
      .filter(predicate)
      .map((r) => `${type}/${r.id}`)
      .sort();
  }
}

// --- the R4 rules, one per parameter kind -----------------------------------------------------------------------

/** search.html#string: case- and accent-insensitive; default = starts with, :contains = anywhere, :exact = equal. */
export const fold = (s: string): string =>
  s
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase();
export function stringMatches(values: string[], search: string, modifier?: 'exact' | 'contains'): boolean {
  if (modifier === 'exact') return values.includes(search);
  const s = fold(search);
  return values.some((v) => (modifier === 'contains' ? fold(v).includes(s) : fold(v).startsWith(s)));
}

/** The parts of HumanNames a `name` search looks at. */
export function nameParts(names: Json[] | undefined): string[] {
  return (names ?? []).flatMap((n) => [
    ...(n.family ? [n.family] : []),
    ...(n.given ?? []),
    ...(n.prefix ?? []),
    ...(n.suffix ?? []),
    ...(n.text ? [n.text] : []),
  ]);
}

/** search.html#token: `system|code`, `code` (any system), `system|` (any code of the system). */
export function codingMatches(codings: Json[], search: string): boolean {
  const bar = search.indexOf('|');
  if (bar < 0) return codings.some((c) => c.code === search);
  const system = search.slice(0, bar);
  const code = search.slice(bar + 1);
  return codings.some((c) => c.system === system && (code === '' || c.code === code));
}
export const codingsOf = (concept: Json | undefined): Json[] => concept?.coding ?? [];

/** A FHIR date/dateTime/instant as the inclusive epoch-ms range its precision covers (no zone: UTC). */
export function dateRangeOf(text: string): [number, number] {
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(T.*)?)?)?$/.exec(text);
  if (!m) throw new Error(`not a date: ${text}`);
  const [, y, mo, d, time] = m;
  if (time) {
    const zoned = /[Zz]|[+-]\d{2}:\d{2}$/.test(time) ? text : `${text}Z`;
    const withSeconds = /T\d{2}:\d{2}(?=$|[Zz+-])/.test(zoned)
      ? zoned.replace(/T(\d{2}:\d{2})/, 'T$1:00')
      : zoned;
    const low = Date.parse(withSeconds);
    const fraction = /\.(\d+)/.exec(time);
    const seconds = /T\d{2}:\d{2}:\d{2}/.test(time);
    const width = fraction ? 1 : seconds ? 1000 : 60_000;
    return [low, low + width - 1];
  }
  const Y = Number(y);
  if (mo === undefined) return [Date.UTC(Y, 0, 1), Date.UTC(Y + 1, 0, 1) - 1];
  if (d === undefined) return [Date.UTC(Y, Number(mo) - 1, 1), Date.UTC(Y, Number(mo), 1) - 1];
  const low = Date.UTC(Y, Number(mo) - 1, Number(d));
  return [low, low + 86_400_000 - 1];
}

export function periodRange(period: Json | undefined): [number, number] | undefined {
  if (!period || (!period.start && !period.end)) return undefined;
  return [
    period.start ? dateRangeOf(period.start)[0] : -Infinity,
    period.end ? dateRangeOf(period.end)[1] : Infinity,
  ];
}

/**
 * search.html#prefix over ranges: the target range [tl, th] against the search range [sl, sh].
 * eq: search contains target; ne: not eq; gt: the range above the search value overlaps the target; lt: the range
 * below overlaps; ge/le: gt/lt or eq; sa: target entirely above; eb: target entirely below.
 */
export function prefixMatches(prefix: string, target: [number, number], search: [number, number]): boolean {
  const [tl, th] = target;
  const [sl, sh] = search;
  const eq = tl >= sl && th <= sh;
  switch (prefix) {
    case 'eq':
      return eq;
    case 'ne':
      return !eq;
    case 'gt':
      return th > sh;
    case 'lt':
      return tl < sl;
    case 'ge':
      return th > sh || eq;
    case 'le':
      return tl < sl || eq;
    case 'sa':
      return tl > sh;
    case 'eb':
      return th < sl;
    default:
      throw new Error(prefix);
  }
}

/** `Type/id` of a literal reference. */
export const ref = (reference: Json | undefined): string | undefined => reference?.reference;

// --- the service side ------------------------------------------------------------------------------------------

export interface Walked {
  /** Match `Type/id` of every page, in order served. */
  matches: string[];
  /** Per page: its matches and its includes. */
  pages: { matches: string[]; includes: string[] }[];
  total?: number;
}

/** GET [base]/{path}, then every `next` page; each page must be 200. */
export async function walk(app: App, path: string): Promise<Walked> {
  const out: Walked = { matches: [], pages: [] };
  let url: string | undefined = `/fhir/${path}`;
  for (let page = 0; url; page++) {
    if (page > 1000) throw new Error(`more than 1000 pages: ${path}`);
    const response = await app.fastify.inject({ url });
    expect(response.statusCode, `${url}: ${response.body.slice(0, 300)}`).toBe(200);
    const bundle = JSON.parse(response.body) as Json;
    if (page === 0) out.total = bundle.total;
    const entries = (bundle.entry ?? []) as Json[];
    const key = (e: Json) => `${e.resource.resourceType}/${e.resource.id}`;
    const matches = entries.filter((e) => e.search?.mode === 'match').map(key);
    const includes = entries.filter((e) => e.search?.mode === 'include').map(key);
    out.pages.push({ matches, includes });
    out.matches.push(...matches);
    const next = (bundle.link as Json[]).find((l) => l.relation === 'next')?.url as string | undefined;
    url = next ? next.slice(next.indexOf('/fhir/')) : undefined;
  }
  return out;
}

/**
 * The service's answer equals the expected set: every page's matches together, none twice, and (with
 * `_total=accurate`) the total. `expected` must not be empty, so a test cannot pass on a query that matches nothing
 * by mistake, unless `allowEmpty`.
 */
export async function expectSearch(
  app: App,
  path: string,
  expected: string[],
  { allowEmpty = false }: { allowEmpty?: boolean } = {},
): Promise<Walked> {
  if (!allowEmpty) expect(expected.length, `expected matches of ${path}`).toBeGreaterThan(0);
  const sep = path.includes('?') ? '&' : '?';
  const walked = await walk(app, `${path}${sep}_total=accurate`);
  expect(new Set(walked.matches).size, `${path}: a match served twice`).toBe(walked.matches.length);
  expect([...walked.matches].sort(), path).toEqual([...expected].sort());
  expect(walked.total, `${path}: total`).toBe(expected.length);
  return walked;
}
