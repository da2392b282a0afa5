/**
 * Bulk Data `$export` (HL7 FHIR Bulk Data Access IG v2.0.0): the kick-off (an operation in the registry, at system,
 * Patient type and Group instance level), the jobs that run it (one at a time, in the background, resumed after a
 * restart), and what the status and file routes answer (src/bulk/bulk-routes.ts). docs/bulk.md.
 *
 * A job belongs to the participant that asked: its status, cancel and files answer only to that participant's
 * tokens; for anyone else a job is exactly an unknown one (`bulk-job-not-found`, same text but the id).
 */
import { randomUUID } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fhirError, issue, type OperationOutcomeIssue } from '../fhir/outcome.js';
import { parseFhirJson, type FhirResource } from '../fhir/fhir-json.js';
import { typeReadability } from '../fhir/interactions/common.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import type { FhirContext, FhirRequest, InteractionHandler } from '../fhir/interactions/types.js';
import type { ResourceStore, StoredVersion, StoredVersionBytes } from '../fhir/store/resource-store.js';
import { searchDefinitions } from '../fhir/search/definitions.js';
import type { AccessPolicy } from '../fhir/interactions/access-policy.js';
import {
  patientCompartmentTypes,
  readExportRequest,
  type ExportLevel,
  type ExportRequest,
} from './export-request.js';
import {
  ExportFiles,
  exportSteps,
  fileNameOf,
  listStep,
  readPage,
  workListName,
  type ExportState,
} from './export-job.js';
import { jobNotFound, type BulkJobStore } from './job-store.js';
import { JobQueue } from './job-queue.js';
import type { JobAccess, JobCaller } from './job-access.js';

export const EXPORT_DEFINITION = 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export';
/** The error file of a job's warnings (types left out, parameters ignored). */
export const ERROR_FILE = 'OperationOutcome.ndjson';
/** The file of the integrity evidence (`includeAssociatedData=_integrity`): one Provenance per exported resource. */
export const INTEGRITY_FILE = 'Provenance.integrity.ndjson';
/** Seconds a client is asked to wait between status requests. */
export const RETRY_AFTER_SECONDS = 2;
const DEFAULT_PAGE_SIZE = 1000;
const DEFAULT_SAVE_EVERY = 20_000;

/** What a job keeps of its kick-off (the job table's `request`). */
interface SavedExport {
  request: ExportRequest;
  caller: JobCaller;
}

/** Test seams: a test pauses a job between pages (and restarts the app meanwhile). */
export interface BulkHooks {
  /** After each save of a job's progress. The job waits for it, or for the service to close. */
  afterPage?(jobId: string, state: Readonly<ExportState>): Promise<void> | void;
}

export interface BulkExportOptions {
  jobs: BulkJobStore;
  /** The store jobs read (the same the API reads). */
  store: ResourceStore;
  access: JobAccess;
  /** How long a finished job's files are kept (ms). */
  retentionMs: number;
  /** Resources read per page. */
  pageSize?: number;
  /** Resources exported between two saves of a job's progress (fsyncs); default 20,000. */
  saveEvery?: number;
  hooks?: BulkHooks;
  /**
   * `includeAssociatedData=_integrity`: a Provenance (JSON text) per version, carrying its salt, Merkle proof and
   * ledger transaction, targeting the version's URL under `baseUrl`. Absent: the value is refused at kick-off.
   */
  evidence?: (versions: readonly StoredVersionBytes[], baseUrl: string) => Promise<string[]>;
  log: {
    info(obj: object | string, msg?: string): void;
    error(obj: object | string, msg?: string): void;
  };
}

/** A status answer: in progress (202), complete (200 and the manifest). */
export interface JobStatusAnswer {
  status: 200 | 202;
  headers: Record<string, string>;
  body?: unknown;
}

function queryText(query: Record<string, string[]>): string {
  const pairs: string[] = [];
  for (const [name, values] of Object.entries(query))
    for (const value of values) pairs.push(`${encodeURIComponent(name)}=${encodeURIComponent(value)}`);
  return pairs.length > 0 ? `?${pairs.join('&')}` : '';
}

/** The Patients a Group lists as current members (`member.entity`, not `inactive`). */
function groupMembers(group: StoredVersion): string[] {
  const resource = parseFhirJson<{ member?: { entity?: { reference?: unknown }; inactive?: unknown }[] }>(
    group.json!,
  );
  const members: string[] = [];
  for (const member of resource.member ?? []) {
    if (member.inactive === true) continue;
    const reference = member.entity?.reference;
    if (typeof reference !== 'string') continue;
    const match = /^(?:.*\/)?(Patient\/[A-Za-z0-9\-.]{1,64})$/.exec(reference);
    if (match && !members.includes(match[1])) members.push(match[1]);
  }
  return members;
}

export class BulkExports {
  private readonly jobQueue = new JobQueue((id) => this.work(id));
  private stopSignal!: () => void;
  private readonly stopping = new Promise<void>((resolve) => (this.stopSignal = resolve));
  private readonly pageSize: number;
  private readonly saveEvery: number;

  constructor(private readonly options: BulkExportOptions) {
    this.pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    this.saveEvery = options.saveEvery ?? DEFAULT_SAVE_EVERY;
  }

  /** Resumes the jobs a previous run left queued or running (oldest first). */
  start(): void {
    this.jobQueue.start(this.options.jobs, 'export', this.options.log);
  }

  /** Resolves once no job is queued or running (tests; the shutdown). */
  async settled(): Promise<void> {
    await this.jobQueue.settled();
  }

  async close(): Promise<void> {
    await this.jobQueue.stop(this.stopSignal);
  }

  operation(): OperationRegistration {
    return {
      name: 'export',
      definition: EXPORT_DEFINITION,
      levels: ['system', 'type', 'instance'],
      resourceTypes: ['Patient', 'Group'],
      documentation:
        'Bulk Data $export (Bulk Data Access IG v2.0.0): [base]/$export, Patient/$export, Group/[id]/$export, ' +
        'with Prefer: respond-async; _outputFormat, _since, _type, _typeFilter, patient (POST), ' +
        'includeAssociatedData=_integrity (salt and Merkle proof of each resource as Provenance); _elements is ' +
        'not supported. Exports exactly what the caller may read (custodian rule, consent grants). docs/bulk.md.',
      handler: this.kickOff,
    };
  }

  // ------------------------------------------------------------------ kick-off

  readonly kickOff: InteractionHandler = async (request, context) => {
    const level = levelOf(request);
    if (!request.preferAsync)
      throw fhirError('respond-async-required', '$export runs asynchronously: send Prefer: respond-async');
    if (!context.store.search)
      throw fhirError('not-implemented', 'This store does not support search, which $export needs');
    const warnings: OperationOutcomeIssue[] = [];
    const parsed = readExportRequest(request, level, warnings);
    if (parsed.integrity && !this.options.evidence)
      throw fhirError(
        'parameter-unsupported',
        'includeAssociatedData _integrity needs the integrity path (anchoring)',
        {
          expression: 'includeAssociatedData',
        },
      );
    const types = exportTypes(context, level, parsed.askedTypes, warnings);
    const patients = await exportPatients(context, request, level, parsed.patients);
    const transactionTime = await this.transactionTime(context.store);
    const exportRequest: ExportRequest = {
      level,
      group: level === 'group' ? request.id : undefined,
      patients,
      types,
      typeFilters: parsed.typeFilters.filter((f) => types.includes(f.type)),
      since: parsed.since,
      integrity: parsed.integrity,
      requestUrl: `${request.baseUrl}/${pathOf(request)}$export${queryText(request.query)}`,
      baseUrl: request.baseUrl,
    };
    const saved: SavedExport = {
      request: exportRequest,
      caller: this.options.access.snapshot(context.access),
    };
    const state: ExportState = {
      transactionTime,
      step: 0,
      listed: false,
      listOffset: 0,
      files: {},
      exported: 0,
      warnings: warnings.map((w) => w.diagnostics ?? ''),
    };
    const id = randomUUID();
    await this.options.jobs.create({
      id,
      kind: 'export',
      owner: context.access.caller.participant,
      request: JSON.stringify(saved),
      state: JSON.stringify(state),
      createdAt: Date.now(),
    });
    this.jobQueue.enqueue(id);
    context.log.info({ job: id, level, types: types.length }, 'export job accepted');
    return {
      status: 202,
      headers: {
        'Content-Location': statusUrl(request.baseUrl, id),
        'Content-Type': 'application/fhir+json; charset=utf-8',
      },
      body: {
        resourceType: 'OperationOutcome',
        issue: [
          issue('information', 'informational', `Export job ${id} accepted; poll its Content-Location`),
        ],
      } as FhirResource,
    };
  };

  /**
   * The instant the export covers: now, or the store's newest version if its clock is ahead (the store keeps
   * lastUpdated strictly increasing), so no acknowledged write is left out.
   */
  private async transactionTime(store: ResourceStore): Promise<string> {
    const now = new Date().toISOString();
    const newest = (await store.history({ count: 1 })).versions[0]?.lastUpdated;
    return newest !== undefined && newest > now ? newest : now;
  }

  // ------------------------------------------------------------------ status, cancel, files

  async status(owner: string, id: string): Promise<JobStatusAnswer> {
    const job = await this.options.jobs.owned('export', owner, id);
    const saved = JSON.parse(job.request) as SavedExport;
    const state = JSON.parse(job.state) as ExportState;
    if (job.status === 'failed')
      throw fhirError('bulk-job-failed', `Export job ${id} failed: ${job.error ?? 'internal error'}`);
    if (job.status !== 'completed') {
      const steps = exportSteps(saved.request).length;
      const progress =
        job.status === 'queued' && state.step === 0 && state.exported === 0
          ? 'queued'
          : `${state.exported} resources exported, step ${Math.min(state.step + 1, steps)} of ${steps}`;
      return {
        status: 202,
        headers: { 'X-Progress': progress, 'Retry-After': String(RETRY_AFTER_SECONDS) },
      };
    }
    const fileUrl = (name: string) => `${statusUrl(saved.request.baseUrl, id)}/${name}`;
    const manifest = {
      transactionTime: state.transactionTime,
      request: saved.request.requestUrl,
      requiresAccessToken: true,
      output: Object.entries(state.files)
        .filter(([, file]) => file.count > 0)
        .map(([name, file]) => ({ type: file.type, url: fileUrl(name), count: file.count })),
      error: state.warnings.length > 0 ? [{ type: 'OperationOutcome', url: fileUrl(ERROR_FILE) }] : [],
    };
    const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8' };
    if (job.expiresAt !== undefined) headers.Expires = new Date(job.expiresAt).toUTCString();
    return { status: 200, headers, body: manifest };
  }

  /** DELETE on the status URL: the job stops and its files go; after that it is unknown (404). */
  async cancel(owner: string, id: string): Promise<void> {
    await this.options.jobs.owned('export', owner, id);
    await this.options.jobs.remove('export', id);
    this.options.log.info({ job: id }, 'export job cancelled');
  }

  /** The path of one of a completed job's files, for its owner. */
  async file(owner: string, id: string, name: string): Promise<string> {
    const job = await this.options.jobs.owned('export', owner, id);
    if (job.status !== 'completed') jobNotFound(id);
    const state = JSON.parse(job.state) as ExportState;
    const listed = name === ERROR_FILE ? state.warnings.length > 0 : (state.files[name]?.count ?? 0) > 0;
    const path = join(this.options.jobs.dir, 'export', id, name);
    if (!listed || !existsSync(path)) jobNotFound(`${id}/${name}`);
    return path;
  }

  /** Deletes finished jobs whose retention ended. */
  sweep(now = Date.now()): Promise<number> {
    return this.options.jobs.sweep(now);
  }

  // ------------------------------------------------------------------ the runner

  /** Runs one job from its saved state to its end (or until the service stops or the job is cancelled). */
  private async work(id: string): Promise<void> {
    const { jobs, store, access, log } = this.options;
    const job = await jobs.get(id);
    if (!job || (job.status !== 'queued' && job.status !== 'running')) return;
    const saved = JSON.parse(job.request) as SavedExport;
    const state = JSON.parse(job.state) as ExportState;
    const steps = exportSteps(saved.request);
    const policy: AccessPolicy = access.policyFor(saved.caller);
    let files: ExportFiles | undefined;
    try {
      files = new ExportFiles(jobs.filesDir('export', id), state);
      if (!(await jobs.saveState(id, 'running', JSON.stringify(state)))) return;
      const dir = jobs.filesDir('export', id);
      let unsaved = 0;
      while (state.step < steps.length) {
        if (this.jobQueue.stopped) return;
        const step = steps[state.step];
        const list = join(dir, workListName(state.step));
        if (!state.listed) {
          const listed = await listStep(store, policy, saved.request, step, state.transactionTime, list);
          // Nothing of this type to export (most types, at system level): no list, no page, no file.
          if (listed === 0) state.step++;
          else state.listed = true;
          state.listOffset = 0;
        }
        if (state.listed) {
          const page = await readPage(store, policy, step.type, list, state.listOffset, this.pageSize);
          files.append(
            step.type,
            page.versions.map((v) => v.jsonBytes),
          );
          if (saved.request.integrity && page.versions.length > 0) {
            if (!this.options.evidence) throw new Error('no integrity evidence source wired');
            const provenances = await this.options.evidence(page.versions, saved.request.baseUrl);
            files.append('Provenance', provenances, INTEGRITY_FILE);
          }
          state.exported += page.versions.length;
          unsaved += page.versions.length;
          const stepDone = page.done || page.next === state.listOffset;
          state.listOffset = page.next;
          if (stepDone) {
            state.step++;
            state.listed = false;
            state.listOffset = 0;
            rmSync(list, { force: true });
            files.settle(fileNameOf(step.type)); // its fsync runs while the next type is listed
          }
        }
        // Progress is saved every saveEvery resources (and at the end): fsync'd files, then the state. What a
        // restart finds unsaved is done again (its bytes cut), so a save per page would only cost fsyncs.
        if (unsaved >= this.saveEvery || state.step === steps.length) {
          await files.sync();
          if (state.listed) ExportFiles.syncFile(join(dir, workListName(state.step)));
          if (!(await jobs.saveState(id, 'running', JSON.stringify(state)))) return; // cancelled
          unsaved = 0;
          if (this.options.hooks?.afterPage)
            await Promise.race([this.options.hooks.afterPage(id, state), this.stopping]);
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      this.writeErrorFile(id, state);
      access.recordDisclosure?.(saved.caller, policy, `/${pathOf(saved.request)}$export`);
      await jobs.finish(id, { status: 'completed', state: JSON.stringify(state) }, this.options.retentionMs);
      log.info({ job: id, exported: state.exported }, 'export job completed');
    } catch (err) {
      if (!(await jobs.get(id))) return; // cancelled while it worked (its files are gone)
      log.error({ err, job: id }, 'export job failed');
      await jobs.finish(
        id,
        {
          status: 'failed',
          state: JSON.stringify(state),
          error: 'internal error while exporting (see the service log)',
        },
        this.options.retentionMs,
      );
    } finally {
      await files?.close();
    }
  }

  private writeErrorFile(id: string, state: ExportState): void {
    if (state.warnings.length === 0) return;
    const lines = state.warnings.map((text) =>
      JSON.stringify({ resourceType: 'OperationOutcome', issue: [issue('warning', 'informational', text)] }),
    );
    writeFileSync(join(this.options.jobs.filesDir('export', id), ERROR_FILE), `${lines.join('\n')}\n`, {
      mode: 0o600,
    });
  }
}

export function statusUrl(baseUrl: string, id: string): string {
  return `${baseUrl}/bulk/export/${id}`;
}

function levelOf(request: FhirRequest): ExportLevel {
  if (!request.resourceType) return 'system';
  if (request.resourceType === 'Patient' && !request.id) return 'patient';
  if (request.resourceType === 'Group' && request.id) return 'group';
  throw fhirError(
    'operation-unsupported',
    "Operation '$export' is served at [base]/$export, Patient/$export and Group/[id]/$export",
  );
}

function pathOf(request: Pick<FhirRequest, 'resourceType' | 'id'> | ExportRequest): string {
  if ('level' in request)
    return request.level === 'system'
      ? ''
      : request.level === 'patient'
        ? 'Patient/'
        : `Group/${request.group}/`;
  if (!request.resourceType) return '';
  return request.id ? `${request.resourceType}/${request.id}/` : `${request.resourceType}/`;
}

/**
 * The types exported: those `_type` asks for (each must be readable under the caller's scopes: 403 otherwise), or
 * every type of the level the caller's scopes allow (the others are left out and named in the error file).
 */
function exportTypes(
  context: FhirContext,
  level: ExportLevel,
  asked: string[] | undefined,
  warnings: OperationOutcomeIssue[],
): string[] {
  if (asked) {
    for (const type of asked) context.access.authorize('read', type);
    return asked;
  }
  const leftOut: string[] = [];
  const readable = typeReadability(context, (type) => leftOut.push(type));
  const candidates = level === 'system' ? searchDefinitions().resourceTypes : patientCompartmentTypes();
  const types = candidates.filter((type) => context.validator.isResourceType(type) && readable(type));
  if (leftOut.length > 0)
    warnings.push(
      issue(
        'warning',
        'forbidden',
        `Left out, as your access does not cover them: ${leftOut.sort().join(', ')}`,
      ),
    );
  return types;
}

/**
 * The patients a Patient or Group level export is limited to: the Group's members (the Group must be readable: 404
 * otherwise, as an absent one), narrowed to the `patient` parameter; each patient named must be readable (404).
 */
async function exportPatients(
  context: FhirContext,
  request: FhirRequest,
  level: ExportLevel,
  named: string[] | undefined,
): Promise<string[] | undefined> {
  const visible = async (type: string, id: string): Promise<StoredVersion> => {
    const version = await context.store.read(type, id);
    if (!version || version.deleted || !version.json || !context.access.canRead(version))
      throw fhirError('resource-not-found', `${type}/${id} is not known`);
    return version;
  };
  let patients: string[] | undefined;
  if (level === 'group') {
    context.access.authorize('read', 'Group');
    patients = groupMembers(await visible('Group', request.id!));
  }
  if (named) {
    for (const patient of named) await visible('Patient', patient.slice('Patient/'.length));
    patients = patients ? patients.filter((p) => named.includes(p)) : named;
  }
  return patients;
}
