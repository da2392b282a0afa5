/**
 * One `$export` job's work, per exported type (a step): first the step's work list (the versions it exports, found
 * in one metadata pass of the store's search, written to a file in the job's folder), then page by page each
 * listed version's text, appended to one NDJSON file per type. Every page is made durable in two steps: its bytes
 * are appended and fsync'd, then the job's progress (step, position in the list, file lengths, counts) is saved;
 * a job resumed after a restart cuts its files back to the saved lengths and continues at the saved position
 * (a step whose list was not complete lists again), so nothing is lost or written twice.
 *
 * What is exported is decided per resource by the same AccessPolicy as read and search (`canRead`, and the
 * `readScope` the store puts in its query), with the caller of the kick-off decided again for every page: a
 * revoked grant stops disclosing at the next page. Only resources changed at or before the job's
 * transactionTime are exported (a resource changed later is left out: the next export with `_since` gets it).
 */
import {
  closeSync,
  fsync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readSync,
  writeSync,
  writevSync,
} from 'node:fs';
import { join } from 'node:path';
import type { AccessPolicy } from '../fhir/interactions/access-policy.js';
import type {
  ResourceStore,
  StoredVersion,
  StoredVersionBytes,
  VersionKey,
} from '../fhir/store/resource-store.js';
import type { CompiledQuery, Filter, StoreSearchRequest } from '../fhir/store/search-query.js';
import { withJsonBytes } from '../fhir/store/store-support.js';
import { parseQuery } from '../fhir/query.js';
import { parseSearch } from '../fhir/search/parse.js';
import { indexedAs } from '../fhir/search/definitions.js';
import type { ExportRequest } from './export-request.js';

/** One step of a job: a type, and its `_typeFilter`s (none: every resource of the type). */
export interface ExportStep {
  type: string;
  /** Indexes into ExportRequest.typeFilters (OR-ed); empty for the whole type. */
  filters: number[];
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
  /** The step's work list (its versions, `id\tversionId` lines in the job folder) is complete. */
  listed: boolean;
  /** Bytes of the step's work list whose resources are exported. */
  listOffset: number;
  /** Files by name (`Observation.ndjson`). */
  files: Record<string, ExportFile>;
  /** Resources exported so far. */
  exported: number;
  /** Warnings for the manifest's error file (types left out ...). */
  warnings: string[];
}

export function exportSteps(request: ExportRequest): ExportStep[] {
  const steps: ExportStep[] = [];
  for (const type of request.types)
    steps.push({ type, filters: request.typeFilters.flatMap((f, i) => (f.type === type ? [i] : [])) });
  return steps;
}

export function fileNameOf(type: string): string {
  return `${type}.ndjson`;
}

/** The work list of a step, in the job's folder (never served: only listed files are). */
export function workListName(step: number): string {
  return `.work-${step}`;
}

function range(prefix: 'gt', instant: string): Filter {
  const ms = Date.parse(instant);
  return { kind: 'lastUpdated', values: [{ kind: 'range', prefix, low: ms, high: ms, value: ms }] };
}

/** Every current version of the type matching the filters, in store order, visited without bodies. */
function listQuery(type: string, filters: Filter[]): CompiledQuery {
  return {
    resourceTypes: [type],
    filters,
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

/** The filters of a `_typeFilter` search (parsed at kick-off already, so it parses). */
function typeFilterFilters(request: ExportRequest, index: number): Filter[] {
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

/**
 * Phase 1 of a step: the work list, every version the step exports (`id\tversionId` lines): the current versions
 * of the type the caller may see (its read scope inside the store's query, `sees` on each), within the level,
 * changed after `_since` and at or before the transaction time; with `_typeFilter`s, those any of them matches
 * (each once). One pass over the store's metadata rows per search, no bodies; written as it goes (bounded memory).
 * Returns how many versions it listed; with none, no file is written.
 */
export async function listStep(
  store: ResourceStore,
  policy: AccessPolicy,
  request: ExportRequest,
  step: ExportStep,
  transactionTime: string,
  file: string,
): Promise<number> {
  const inLevel = levelScope(request);
  const sees = policy.sees ? (v: StoredVersion) => policy.sees!(v) : (v: StoredVersion) => policy.canRead(v);
  const scope = policy.readScope ? (type: string) => policy.readScope!(type) : undefined;
  const since: Filter[] = request.since ? [range('gt', request.since)] : [];
  // Opened at the first line: a step with nothing to export leaves no file (most types, at system level).
  let fd: number | undefined;
  let listed = 0;
  try {
    let buffered: string[] = [];
    let bufferedLength = 0;
    const flush = () => {
      if (buffered.length === 0) return;
      fd ??= openSync(file, 'w', 0o600);
      const bytes = Buffer.from(buffered.join(''), 'utf8');
      let offset = 0;
      while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
      buffered = [];
      bufferedLength = 0;
    };
    // Several filters of one type: a resource two of them match is listed once (the matches are kept, not all rows).
    const seen = step.filters.length > 1 ? new Set<string>() : undefined;
    const searches =
      step.filters.length === 0
        ? [since]
        : step.filters.map((i) => [...typeFilterFilters(request, i), ...since]);
    for (const filters of searches) {
      const search: StoreSearchRequest = {
        query: listQuery(step.type, filters),
        wantTotal: true,
        scope,
        indexedAs,
        canRead: (v) => {
          if (v.lastUpdated > transactionTime || !inLevel(v) || !sees(v)) return false;
          if (seen) {
            if (seen.has(v.id)) return false;
            seen.add(v.id);
          }
          const line = `${v.id}\t${v.versionId}\n`;
          buffered.push(line);
          bufferedLength += line.length;
          listed++;
          if (bufferedLength > 65_536) flush();
          return false; // nothing to page: the list is what we keep
        },
      };
      await store.search!(search);
    }
    flush(); // made durable with the job's next save (syncFile), before its progress says the list is complete
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return listed;
}

/** A page's versions as read: each stored text as its UTF-8 bytes (`jsonBytes`), copied to the file as it is. */
export type ExportedVersion = StoredVersionBytes & { jsonBytes: Uint8Array };

/**
 * The page's versions in one store call (one round trip on PostgreSQL), their stored texts as bytes: the store's
 * `vreadManyBytes` (SQLite hands over the stored bytes with no decode to a string), else vreadMany's texts encoded.
 */
async function versionBytes(
  store: ResourceStore,
  keys: readonly VersionKey[],
): Promise<(StoredVersionBytes | undefined)[]> {
  if (store.vreadManyBytes) return store.vreadManyBytes(keys);
  return (await store.vreadMany(keys)).map(withJsonBytes);
}

/**
 * Phase 2 of a step, one page: the next `pageSize` entries of the work list from `offset`, each version read with
 * its body and decided again by the caller's policy now (a grant revoked since the list was made withholds it).
 * Returns the versions (with their texts as bytes), the offset after them, and whether the list ends there (the
 * read reached its end: no empty page is read to find it).
 */
export async function readPage(
  store: ResourceStore,
  policy: AccessPolicy,
  type: string,
  file: string,
  offset: number,
  pageSize: number,
): Promise<{ versions: ExportedVersion[]; next: number; done: boolean }> {
  const fd = openSync(file, 'r');
  let chunk: Buffer;
  let atEnd: boolean;
  try {
    // Filled by the read up to `read` bytes; only those are used.
    const buffer = Buffer.allocUnsafe(pageSize * 80);
    const read = readSync(fd, buffer, 0, buffer.length, offset);
    chunk = buffer.subarray(0, read);
    atEnd = read < buffer.length;
  } finally {
    closeSync(fd);
  }
  // At most pageSize complete lines (a line is at most 80 bytes: an id of 64 characters and a version). Ids and
  // version numbers are ASCII, so byte offsets are character offsets.
  const text = chunk.toString('latin1');
  const keys: VersionKey[] = [];
  let end = 0;
  while (keys.length < pageSize) {
    const newline = text.indexOf('\n', end);
    if (newline < 0) break;
    const tab = text.indexOf('\t', end);
    keys.push({
      resourceType: type,
      id: text.slice(end, tab),
      versionId: Number(text.slice(tab + 1, newline)),
    });
    end = newline + 1;
  }
  const versions: ExportedVersion[] = [];
  for (const version of await versionBytes(store, keys))
    if (version && !version.deleted && version.jsonBytes !== undefined && policy.canRead(version))
      versions.push(version as ExportedVersion);
  // A complete list ends with a newline: at its end, every line read was taken.
  return { versions, next: offset + end, done: atEnd && end === chunk.length };
}

const NEWLINE = Buffer.from('\n');

/** fsync on libuv's threads (several run together): resolves to the error, if any, so none goes unhandled. */
function fsyncOf(fd: number): Promise<Error | undefined> {
  return new Promise((resolve) => fsync(fd, (err) => resolve(err ?? undefined)));
}

/**
 * Lines as NDJSON chunks for one gathered write (each line followed by a newline): a stored text's bytes are
 * written from where they are, never copied into one buffer.
 */
function ndjsonChunks(lines: readonly (string | Uint8Array)[]): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (const line of lines) chunks.push(typeof line === 'string' ? Buffer.from(line, 'utf8') : line, NEWLINE);
  return chunks;
}

/** Writes every chunk at the file's end (one writev; what a short write left, in a loop). Returns the bytes. */
function writeChunks(fd: number, chunks: Uint8Array[]): number {
  let total = 0;
  for (const chunk of chunks) total += chunk.length;
  const written = writevSync(fd, chunks);
  if (written < total) {
    const rest = Buffer.concat(chunks).subarray(written);
    let offset = 0;
    while (offset < rest.length) offset += writeSync(fd, rest, offset, rest.length - offset);
  }
  return total;
}

/** The open NDJSON files of a running job: appended, fsync'd, and cut back to the saved lengths on resume. */
export class ExportFiles {
  private readonly fds = new Map<string, number>();
  /** Files appended to since their last fsync. */
  private readonly unsynced = new Set<string>();
  /** fsyncs in flight (started by `settle` or `sync`): each resolves to its error, or undefined. */
  private readonly syncing: Promise<Error | undefined>[] = [];

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

  /**
   * Appends lines to the type's file (or the file `name`): texts, or UTF-8 bytes copied as they are (a stored
   * resource's text); made durable by `sync`.
   */
  append(type: string, lines: readonly (string | Uint8Array)[], name = fileNameOf(type)): void {
    if (lines.length === 0) return;
    const fd = this.fd(name);
    const file = (this.state.files[name] ??= { type, count: 0, bytes: 0 });
    // Written at the saved length (a+ appends; the truncation above made the end the saved length).
    file.bytes += writeChunks(fd, ndjsonChunks(lines));
    file.count += lines.length;
    this.unsynced.add(name);
  }

  /**
   * A file that gets no more lines (its type's step ended): its fsync starts now, on libuv's threads, while the
   * job goes on with the next type; `sync` waits for it.
   */
  settle(name: string): void {
    const fd = this.fds.get(name);
    if (fd === undefined || !this.unsynced.delete(name)) return;
    this.syncing.push(fsyncOf(fd));
  }

  /** Every file appended to is on disk: the fsyncs started by `settle`, and those of the others, run together. */
  async sync(): Promise<void> {
    for (const name of this.unsynced) this.syncing.push(fsyncOf(this.fds.get(name)!));
    this.unsynced.clear();
    const results = await Promise.all(this.syncing.splice(0));
    const failed = results.find((result) => result !== undefined);
    if (failed) throw failed;
  }

  /** fsync of another file of the job (a work list). */
  static syncFile(path: string): void {
    const fd = openSync(path, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** Closes the files, once no fsync of them is in flight (a job that failed or stopped leaves them unsaved). */
  async close(): Promise<void> {
    await Promise.all(this.syncing.splice(0));
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
