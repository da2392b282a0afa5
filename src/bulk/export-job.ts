/**
 * One `$export` job's work: for each exported type (and each of its `_typeFilter`s), the current versions the
 * caller may read, in store order, page by page, appended to one NDJSON file per type. Every page is made durable
 * in two steps: its bytes are appended and fsync'd, then the job's progress (cursor, file lengths, counts) is
 * saved; a job resumed after a restart cuts its files back to the saved lengths and continues after the saved
 * cursor, so nothing is lost or written twice.
 *
 * What is exported is decided per resource by the same AccessPolicy as read and search (`canRead`, and the
 * `readScope` the store puts in its query), with the caller of the kick-off decided again for every page: a
 * revoked grant stops disclosing at the next page. Only resources changed at or before the job's
 * transactionTime are exported (a later change is picked up by the next export with `_since`).
 */
import { closeSync, fsyncSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { AccessPolicy } from '../fhir/interactions/access-policy.js';
import type { ResourceStore, StoredVersion } from '../fhir/store/resource-store.js';
import type { CompiledQuery, Filter, StoreSearchRequest } from '../fhir/store/search-query.js';
import { parseQuery } from '../fhir/query.js';
import { parseSearch } from '../fhir/search/parse.js';
import { indexedAs } from '../fhir/search/definitions.js';
import type { ExportRequest } from './export-request.js';

/** One step of a job: a type, and which of its `_typeFilter`s (none: every resource of the type). */
export interface ExportStep {
  type: string;
  /** Index into ExportRequest.typeFilters, or undefined for the whole type. */
  filter?: number;
}

export interface ExportFile {
  type: string;
  count: number;
  /** Bytes written and fsync'd. */
  bytes: number;
}

/** A job's progress (JSON in the job table). */
export interface ExportState {
  /** The instant the export covers (the kick-off's): changes after it are left to the next export. */
  transactionTime: string;
  /** The step being worked on (index into exportSteps); steps.length when done. */
  step: number;
  /** lastUpdated of the last version exported in this step. */
  cursor?: string;
  /** Ids exported in this step whose lastUpdated is `cursor` (versions may share an instant). */
  atCursor: string[];
  /** Files by name (`Observation.ndjson`). */
  files: Record<string, ExportFile>;
  /** Resources exported so far. */
  exported: number;
  /** Warnings for the manifest's error file (types left out ...). */
  warnings: string[];
}

export function exportSteps(request: ExportRequest): ExportStep[] {
  const steps: ExportStep[] = [];
  for (const type of request.types) {
    const filters = request.typeFilters.map((f, i) => ({ f, i })).filter(({ f }) => f.type === type);
    if (filters.length === 0) steps.push({ type });
    else for (const { i } of filters) steps.push({ type, filter: i });
  }
  return steps;
}

export function fileNameOf(type: string): string {
  return `${type}.ndjson`;
}

function range(prefix: 'gt' | 'ge' | 'le', instant: string): Filter {
  const ms = Date.parse(instant);
  return {
    kind: 'lastUpdated',
    values: [{ kind: 'range', prefix, low: ms, high: ms, value: ms }],
  };
}

function baseQuery(type: string, filters: Filter[], count: number): CompiledQuery {
  return {
    resourceTypes: [type],
    filters,
    sort: [{ param: '_lastUpdated', type: '_lastUpdated', descending: false }],
    count,
    offset: 0,
    total: 'none',
    summaryCount: false,
    include: [],
    revinclude: [],
    warnings: [],
    applied: [],
  };
}

/** The filters of a `_typeFilter` search (parsed at kick-off already, so it parses). */
function typeFilterFilters(request: ExportRequest, index: number | undefined): Filter[] {
  if (index === undefined) return [];
  const filter = request.typeFilters[index];
  return parseSearch(parseQuery(filter.query), { resourceType: filter.type, strict: true }).filters;
}

/** Whether a version belongs to what the export's level covers (a patient's compartment, the Group's members). */
export function levelScope(request: ExportRequest): (version: StoredVersion) => boolean {
  if (request.level === 'system') return () => true;
  if (!request.patients) return (v) => (v.patients?.length ?? 0) > 0;
  const members = new Set(request.patients);
  return (v) => (v.patients ?? []).some((p) => members.has(p));
}

export interface ExportPage {
  versions: StoredVersion[];
  /** The step has more after this page. */
  more: boolean;
}

/**
 * The next page of a step, after the state's cursor: versions the policy admits, within the level, changed after
 * `_since` and at or before the transaction time; with several `_typeFilter`s of one type, a resource an earlier
 * filter matched is left out (exported once).
 */
export async function nextPage(
  store: ResourceStore,
  policy: AccessPolicy,
  request: ExportRequest,
  step: ExportStep,
  state: ExportState,
  pageSize: number,
): Promise<ExportPage> {
  const inLevel = levelScope(request);
  const canRead = (v: StoredVersion): boolean => inLevel(v) && policy.canRead(v);
  const scope = policy.readScope ? (type: string) => policy.readScope!(type) : undefined;
  const filters = [...typeFilterFilters(request, step.filter), range('le', state.transactionTime)];
  if (request.since) filters.push(range('gt', request.since));
  if (state.cursor !== undefined) {
    filters.push(range('ge', state.cursor));
    if (state.atCursor.length > 0) filters.push({ kind: 'id', ids: state.atCursor, negate: true });
  }
  const search: StoreSearchRequest = {
    query: baseQuery(step.type, filters, pageSize),
    canRead,
    scope,
    indexedAs,
  };
  const result = await store.search!(search);
  let versions = result.versions;
  if (step.filter !== undefined && versions.length > 0) {
    // Matched by an earlier _typeFilter of the same type: already exported in that step.
    const earlier = request.typeFilters
      .slice(0, step.filter)
      .flatMap((f, i) => (f.type === step.type ? [i] : []));
    for (const index of earlier) {
      const ids = versions.map((v) => v.id);
      const matched = await store.search!({
        query: baseQuery(step.type, [...typeFilterFilters(request, index), { kind: 'id', ids }], ids.length),
        canRead: () => true,
        indexedAs,
      });
      const drop = new Set(matched.versions.map((v) => v.id));
      // The cursor still advances over dropped ones: keep them for it, marked.
      versions = versions.map((v) => (drop.has(v.id) ? { ...v, json: undefined } : v));
    }
  }
  return { versions, more: result.hasMore === true };
}

/** Advances the state's cursor over a page (exported or skipped versions alike). */
export function advanceCursor(state: ExportState, versions: StoredVersion[]): void {
  for (const version of versions) {
    if (version.lastUpdated !== state.cursor) {
      state.cursor = version.lastUpdated;
      state.atCursor = [];
    }
    state.atCursor.push(version.id);
  }
}

/** The open NDJSON files of a running job: appended, fsync'd, and cut back to the saved lengths on resume. */
export class ExportFiles {
  private readonly fds = new Map<string, number>();

  constructor(
    private readonly dir: string,
    private readonly state: ExportState,
  ) {
    // Bytes past the saved length belong to a page whose progress was never saved: cut them.
    for (const [name, file] of Object.entries(state.files)) ftruncateSync(this.fd(name), file.bytes);
  }

  private fd(name: string): number {
    let fd = this.fds.get(name);
    if (fd === undefined) this.fds.set(name, (fd = openSync(join(this.dir, name), 'a+', 0o600)));
    return fd;
  }

  /** Appends lines to the type's file; returns the bytes written (made durable by `sync`). */
  append(type: string, lines: string[]): void {
    if (lines.length === 0) return;
    const name = fileNameOf(type);
    const text = Buffer.from(`${lines.join('\n')}\n`, 'utf8');
    const fd = this.fd(name);
    const file = (this.state.files[name] ??= { type, count: 0, bytes: 0 });
    // Written at the saved length (a+ appends; the truncation above made the end the saved length).
    let offset = 0;
    while (offset < text.length) offset += writeSync(fd, text, offset, text.length - offset);
    file.bytes += text.length;
    file.count += lines.length;
  }

  sync(): void {
    for (const fd of this.fds.values()) fsyncSync(fd);
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
