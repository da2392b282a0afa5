/**
 * `$reindex`: the search index of stored resources rebuilt after custom SearchParameters were added or changed
 * (docs/search.md, "Custom search parameters").
 *
 * - `POST [base]/$reindex` and `POST [base]/[type]/$reindex`, with `Prefer: respond-async`: a job, the Bulk Data
 *   pattern (202 + Content-Location `[base]/bulk/reindex/{job}`; GET it: 202 with X-Progress while it runs, then 200
 *   with what became searchable; DELETE cancels). System level: the base types of every active custom parameter;
 *   type level: that type. The job waits until every replica has read the parameters (`--search-param-refresh`
 *   since their last change), then pages through the current resources of each type by id, rebuilding each one's
 *   rows (`ResourceStore.replaceIndex`, only while its version is still current: a write meanwhile indexed it
 *   itself, and is read again), pausing `--reindex-pause` between pages. Progress is saved per page: a restart
 *   resumes. At the end, each custom parameter whose SearchParameter is still the version the job started with is
 *   marked as indexed (src/fhir/search/custom-parameters.ts) and becomes searchable.
 * - `POST [base]/[type]/[id]/$reindex`: that one resource, at once (200, an OperationOutcome).
 *
 * Admins only (as for writing SearchParameters). The status names types and parameters, never counts of resources.
 */
import { randomUUID } from 'node:crypto';
import { parseFhirJson, type FhirResource } from '../fhir/fhir-json.js';
import { fhirError, issue, operationOutcome } from '../fhir/outcome.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import type { FhirContext, InteractionHandler } from '../fhir/interactions/types.js';
import type { IndexEntry, ResourceStore, StoredVersion } from '../fhir/store/resource-store.js';
import type { SearchPosition } from '../fhir/store/search-query.js';
import { isKnownResourceType } from '../fhir/search/definitions.js';
import { parseSearch } from '../fhir/search/parse.js';
import {
  mayDefineSearchParameters,
  reindexedMark,
  REINDEXED_PARAM,
  type CustomSearchParameters,
} from '../fhir/search/custom-parameters.js';
import { jobNotFound, type BulkJobStore } from './job-store.js';
import { RETRY_AFTER_SECONDS, type JobStatusAnswer } from './bulk-export.js';
import { JobQueue } from './job-queue.js';

const DEFAULT_PAGE_SIZE = 200;

interface SavedReindex {
  types: string[];
  /** The custom parameters (SearchParameter id and version) the job makes searchable when it completes. */
  parameters: { id: string; versionId: number; code: string }[];
  /** The scan starts at this instant (epoch ms): every replica has read the parameters by then. */
  startAt: number;
  requestUrl: string;
}

interface ReindexState {
  transactionTime: string;
  /** The type being scanned (index into `types`), and where its next page starts. */
  typeIndex: number;
  after?: SearchPosition;
  /** Parameters marked searchable at the end. */
  searchable?: string[];
}

export interface ReindexOptions {
  jobs: BulkJobStore;
  /** The store itself (not a decorator): index rows are replaced, nothing is written through the write path. */
  store: ResourceStore;
  parameters: CustomSearchParameters;
  /** The index rows of a resource (extractIndex: base and custom parameters as this process knows them). */
  indexEntries(resource: FhirResource): IndexEntry[];
  retentionMs: number;
  /** `--search-param-refresh` in ms: how long replicas may take to read a changed parameter. */
  settleMs: number;
  /** `--reindex-pause`: pause between pages (ms). */
  pauseMs: number;
  pageSize?: number;
  log: {
    info(obj: object | string, msg?: string): void;
    error(obj: object | string, msg?: string): void;
  };
}

function assertAdmin(context: FhirContext): void {
  if (!mayDefineSearchParameters(context.access.caller.role))
    throw fhirError('access-denied', 'Only administrators run $reindex');
}

export class Reindexing {
  private readonly jobQueue = new JobQueue((id) => this.work(id));
  private readonly progress = new Map<string, string>();
  private wake?: () => void;

  constructor(private readonly options: ReindexOptions) {}

  start(): void {
    this.jobQueue.start(this.options.jobs, 'reindex', this.options.log);
  }

  async settled(): Promise<void> {
    await this.jobQueue.settled();
  }

  async close(): Promise<void> {
    await this.jobQueue.stop(() => this.wake?.());
  }

  operation(): OperationRegistration {
    return {
      name: 'reindex',
      levels: ['system', 'type', 'instance'],
      methods: ['POST'],
      documentation:
        'Rebuilds the search index of stored resources for custom SearchParameters (admins). System and type ' +
        'level: a job (Prefer: respond-async; status at [base]/bulk/reindex/{job}); a custom parameter is ' +
        'searchable once it has completed. Instance level: that resource, at once. docs/search.md.',
      handler: (request, context) =>
        request.id !== undefined ? this.reindexOne(request, context) : this.kickOff(request, context),
    };
  }

  readonly kickOff: InteractionHandler = async (request, context) => {
    assertAdmin(context);
    if (!request.preferAsync)
      throw fhirError('respond-async-required', '$reindex runs asynchronously: send Prefer: respond-async');
    const { parameters } = this.options;
    await parameters.refresh();
    const definitions = parameters.definitions.filter(
      (d) => request.resourceType === undefined || d.base.includes(request.resourceType),
    );
    if (request.resourceType !== undefined && !isKnownResourceType(request.resourceType))
      throw fhirError(
        'resource-type-unsupported',
        `Resource type '${request.resourceType}' is not supported`,
      );
    const types =
      request.resourceType !== undefined
        ? [request.resourceType]
        : [...new Set(definitions.flatMap((d) => d.base))].sort();
    // The parameters' last change: the scan waits until every replica has read it (see the file comment).
    let changed = 0;
    for (const d of definitions) {
      const version = await this.options.store.read('SearchParameter', d.id);
      if (version) changed = Math.max(changed, Date.parse(version.lastUpdated));
    }
    const id = randomUUID();
    const saved: SavedReindex = {
      types,
      // Searchable at the end: those whose every base type the job scans.
      parameters: definitions
        .filter((d) => d.base.every((b) => types.includes(b)))
        .map((d) => ({ id: d.id, versionId: d.versionId, code: d.code })),
      startAt: changed + this.options.settleMs,
      requestUrl: `${request.baseUrl}${request.resourceType ? `/${request.resourceType}` : ''}/$reindex`,
    };
    const state: ReindexState = { transactionTime: new Date().toISOString(), typeIndex: 0 };
    await this.options.jobs.create({
      id,
      kind: 'reindex',
      owner: context.access.caller.participant,
      request: JSON.stringify(saved),
      state: JSON.stringify(state),
      createdAt: Date.now(),
    });
    this.jobQueue.enqueue(id);
    context.log.info({ job: id, types: types.length }, 'reindex job accepted');
    return {
      status: 202,
      headers: {
        'Content-Location': `${request.baseUrl}/bulk/reindex/${id}`,
        'Content-Type': 'application/fhir+json; charset=utf-8',
      },
      body: operationOutcome([
        issue('information', 'informational', `Reindex job ${id} accepted; poll its Content-Location`),
      ]) as unknown as FhirResource,
    };
  };

  readonly reindexOne: InteractionHandler = async (request, context) => {
    assertAdmin(context);
    const resourceType = request.resourceType!;
    const id = request.id!;
    const current = await this.options.store.read(resourceType, id);
    if (!current || current.deleted || !context.access.canRead(current))
      throw fhirError('resource-not-found', `${resourceType}/${id} is not known`);
    await this.reindexVersion(current);
    return {
      status: 200,
      body: operationOutcome([
        issue('information', 'informational', `${resourceType}/${id} reindexed`),
      ]) as unknown as FhirResource,
    };
  };

  async status(owner: string, id: string): Promise<JobStatusAnswer> {
    const job = await this.options.jobs.owned('reindex', owner, id);
    const saved = JSON.parse(job.request) as SavedReindex;
    const state = JSON.parse(job.state) as ReindexState;
    if (job.status === 'failed')
      throw fhirError('bulk-job-failed', `Reindex job ${id} failed: ${job.error ?? 'internal error'}`);
    if (job.status !== 'completed')
      return {
        status: 202,
        headers: {
          'X-Progress':
            this.progress.get(id) ?? `${job.status}: type ${state.typeIndex + 1} of ${saved.types.length}`,
          'Retry-After': String(RETRY_AFTER_SECONDS),
        },
      };
    const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8' };
    if (job.expiresAt !== undefined) headers.Expires = new Date(job.expiresAt).toUTCString();
    return {
      status: 200,
      headers,
      body: {
        transactionTime: state.transactionTime,
        request: saved.requestUrl,
        types: saved.types,
        searchable: state.searchable ?? [],
      },
    };
  }

  /** DELETE: the job stops after its page in progress (rows rebuilt stay) and is unknown afterwards. */
  async cancel(owner: string, id: string): Promise<void> {
    await this.options.jobs.owned('reindex', owner, id);
    await this.options.jobs.remove('reindex', id);
  }

  async file(owner: string, id: string, name: string): Promise<string> {
    await this.options.jobs.owned('reindex', owner, id);
    return jobNotFound(`${id}/${name}`);
  }

  /** Rebuilds the rows of one version; read again when a write replaced it meanwhile. */
  private async reindexVersion(version: StoredVersion): Promise<void> {
    const { store, indexEntries } = this.options;
    let current: StoredVersion | undefined = version;
    for (let attempt = 0; current && !current.deleted && current.json && attempt < 5; attempt++) {
      const entries = indexEntries(parseFhirJson(current.json) as FhirResource);
      // A SearchParameter keeps the mark an earlier run gave its version.
      if (current.resourceType === 'SearchParameter' && store.indexEntries) {
        const mark = (await store.indexEntries(current.resourceType, current.id)).find(
          (e) => e.param === REINDEXED_PARAM,
        );
        if (mark) entries.push(mark);
      }
      if (await store.replaceIndex!(current, entries)) return;
      current = await store.read(current.resourceType, current.id);
    }
  }

  /** Sleeps `ms`, or less when the service stops. */
  private pause(ms: number): Promise<void> {
    if (ms <= 0 || this.jobQueue.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  private async work(id: string): Promise<void> {
    const { jobs, store, log } = this.options;
    const job = await jobs.get(id);
    if (!job || (job.status !== 'queued' && job.status !== 'running')) return;
    const saved = JSON.parse(job.request) as SavedReindex;
    const state = JSON.parse(job.state) as ReindexState;
    const pageSize = this.options.pageSize ?? DEFAULT_PAGE_SIZE;
    try {
      if (!store.replaceIndex || !store.search) throw new Error('this store cannot rebuild its index');
      if (!(await jobs.saveState(id, 'running', JSON.stringify(state)))) return;
      // Phase 1: every replica has read the parameters.
      while (Date.now() < saved.startAt) {
        if (this.jobQueue.stopped) return;
        this.progress.set(id, 'waiting for every replica to read the search parameters');
        await this.pause(Math.min(saved.startAt - Date.now(), 1000));
      }
      // Phase 2: each type, page by page, in id order.
      while (state.typeIndex < saved.types.length) {
        const type = saved.types[state.typeIndex]!;
        this.progress.set(id, `${type}: type ${state.typeIndex + 1} of ${saved.types.length}`);
        const query = parseSearch({ _sort: ['_id'], _count: [String(pageSize)] }, { resourceType: type });
        const page = await store.search({ query, canRead: () => true, after: state.after });
        for (const version of page.versions) await this.reindexVersion(version);
        if (page.hasMore && page.next) state.after = page.next;
        else {
          state.typeIndex++;
          state.after = undefined;
        }
        if (this.jobQueue.stopped || !(await jobs.saveState(id, 'running', JSON.stringify(state)))) return;
        await this.pause(this.options.pauseMs);
      }
      // Phase 3: the parameters still as they were become searchable.
      state.searchable = await this.markIndexed(saved.parameters);
      await this.options.parameters.refresh();
      await jobs.finish(id, { status: 'completed', state: JSON.stringify(state) }, this.options.retentionMs);
      log.info({ job: id }, 'reindex job completed');
    } catch (err) {
      if (!(await jobs.get(id))) return;
      log.error({ err, job: id }, 'reindex job failed');
      await jobs.finish(
        id,
        {
          status: 'failed',
          state: JSON.stringify(state),
          error: 'internal error while reindexing (see the service log)',
        },
        this.options.retentionMs,
      );
    } finally {
      this.progress.delete(id);
    }
  }

  /** Marks each SearchParameter still at the version the job started with; returns their codes. */
  private async markIndexed(parameters: SavedReindex['parameters']): Promise<string[]> {
    const { store, indexEntries } = this.options;
    const marked: string[] = [];
    for (const p of parameters) {
      const current = await store.read('SearchParameter', p.id);
      if (!current || current.deleted || current.versionId !== p.versionId || !current.json) continue;
      const entries = [
        ...indexEntries(parseFhirJson(current.json) as FhirResource),
        reindexedMark(p.versionId),
      ];
      if (await store.replaceIndex!(current, entries)) marked.push(p.code);
    }
    return marked;
  }
}
