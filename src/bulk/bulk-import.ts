/**
 * `$import`, the Bulk Data Import "ping and pull" proposal (smart-on-fhir/bulk-import, `import-pnp.md`, the 2021
 * draft; not part of Bulk Data v2): `POST [base]/$import` with `Prefer: respond-async` and a Parameters body
 * (`inputFormat` application/fhir+ndjson, `inputSource`, `storageDetail`, and one `input` per file with parts
 * `type` and `url`); asynchronous like `$export` (202 + Content-Location, status, DELETE). The job fetches each
 * source (a server-local file under the import root, or an allowed http(s) URL: src/bulk/import-fetch.ts) and
 * runs the import engine (src/bulk/import/engine.ts: the CLI's engine, with the caller's FhirContext, so the same
 * validation, access, custodian, consent and anchoring as the API) over them. Its status ends with the counts by
 * type and an NDJSON error file: one OperationOutcome per rejected resource, naming its input and line.
 * docs/bulk.md.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { toPlainJson, type FhirResource } from '../fhir/fhir-json.js';
import { fhirError, issue } from '../fhir/outcome.js';
import { parseRequestJson } from '../fhir/interactions/router.js';
import type { FhirRegistry, OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import type { FhirContext, InteractionHandler } from '../fhir/interactions/types.js';
import { importSources, journalRejections } from './import/engine.js';
import type { ConsentHandling, ImportOptions, ImportProgress, TypeCounts } from './import/types.js';
import { checkSource, fetchSource, type CheckedSource, type ImportSourcePolicy } from './import-fetch.js';
import { jobNotFound, type BulkJobStore } from './job-store.js';
import type { JobAccess, JobCaller } from './job-access.js';
import { OUTPUT_FORMATS } from './export-request.js';
import { RETRY_AFTER_SECONDS, type JobStatusAnswer } from './bulk-export.js';
import { JobQueue } from './job-queue.js';

export const IMPORT_ERROR_FILE = 'OperationOutcome.ndjson';
const MAX_INPUTS = 1000;
const CONSENT_HANDLINGS: readonly ConsentHandling[] = ['refuse', 'inert', 'map'];

interface ImportInput {
  /** The type the client says the file holds (informative: every line is checked on its own). */
  type?: string;
  url: string;
  source: CheckedSource;
}

interface SavedImport {
  inputs: ImportInput[];
  inputSource?: string;
  /** This service's parameter `consents` (the CLI's --consents): refuse (default), inert or map. */
  consents?: ConsentHandling;
  requestUrl: string;
  baseUrl: string;
  caller: JobCaller;
}

interface ImportState {
  transactionTime: string;
  /** Per input: fetched (URL sources) into the job folder. */
  fetched: boolean[];
  /** Per input: why it could not be read (then it is skipped and reported). */
  sourceErrors: (string | null)[];
  byType?: Record<string, TypeCounts>;
  rejected?: number;
  /** The engine's progress as last saved (throttled), so every replica's status poll reports it. */
  progress?: ImportProgress;
}

/** The engine's progress is saved in the job's record at most once per this many resources (and per phase). */
export const IMPORT_PROGRESS_SAVE_EVERY = 1000;

export interface BulkImportOptions {
  jobs: BulkJobStore;
  access: JobAccess;
  /** The request-independent part of every FhirContext (as the FHIR routes get it). */
  context: Omit<FhirContext, 'access' | 'log' | 'registry'>;
  registry: FhirRegistry;
  sources: ImportSourcePolicy;
  /**
   * Validation worker threads for a job's check pass, started per job and closed at its end; only when they build
   * the same validator as `context.validator` (absent: validated on the service's thread).
   */
  validationPool?: () => NonNullable<ImportOptions['validationPool']> & { close(): Promise<void> };
  retentionMs: number;
  /** Save the progress at most once per this many resources (default IMPORT_PROGRESS_SAVE_EVERY; tests: 1). */
  progressSaveEvery?: number;
  log: {
    info(obj: object | string, msg?: string): void;
    warn(obj: object | string, msg?: string): void;
    error(obj: object | string, msg?: string): void;
    debug(obj: object | string, msg?: string): void;
  };
}

/** The inputs of a kick-off's Parameters body, checked (400 naming what is wrong). */
function readInputs(
  body: unknown,
  policy: ImportSourcePolicy,
): Omit<SavedImport, 'requestUrl' | 'baseUrl' | 'caller'> {
  const parameters = body as { resourceType?: unknown; parameter?: unknown };
  if (!parameters || parameters.resourceType !== 'Parameters' || !Array.isArray(parameters.parameter))
    throw fhirError('body-not-resource', '$import takes a Parameters body', { expression: 'Parameters' });
  const list = parameters.parameter as {
    name?: unknown;
    valueCode?: unknown;
    valueString?: unknown;
    valueUri?: unknown;
    valueUrl?: unknown;
    part?: unknown;
  }[];
  const value = (p: (typeof list)[number]): string | undefined => {
    for (const v of [p.valueCode, p.valueString, p.valueUri, p.valueUrl]) if (typeof v === 'string') return v;
    return undefined;
  };
  let inputFormat: string | undefined;
  let inputSource: string | undefined;
  let consents: ConsentHandling | undefined;
  const inputs: ImportInput[] = [];
  for (const p of list) {
    switch (p.name) {
      case 'inputFormat':
        inputFormat = value(p);
        break;
      case 'inputSource':
        inputSource = value(p);
        break;
      case 'consents': {
        // This service's own parameter (not in the proposal): what to do with Consent resources (docs/bulk.md).
        const handling = value(p);
        if (!CONSENT_HANDLINGS.includes(handling as ConsentHandling))
          throw fhirError(
            'parameter-invalid',
            `consents '${String(handling)}' is not one of ${CONSENT_HANDLINGS.join(', ')}`,
            { expression: 'consents' },
          );
        consents = handling as ConsentHandling;
        break;
      }
      case 'storageDetail': {
        const parts = Array.isArray(p.part) ? (p.part as (typeof list)[number][]) : [];
        const type = parts.find((q) => q.name === 'type');
        const kind = type ? value(type) : undefined;
        if (kind !== undefined && kind !== 'https' && kind !== 'file')
          throw fhirError(
            'parameter-unsupported',
            `storageDetail type '${kind}' is not supported (https, file)`,
            {
              expression: 'storageDetail',
            },
          );
        break;
      }
      case 'input': {
        const parts = Array.isArray(p.part) ? (p.part as (typeof list)[number][]) : [];
        const urlPart = parts.find((q) => q.name === 'url');
        const url = urlPart ? value(urlPart) : undefined;
        if (url === undefined)
          throw fhirError('parameter-missing', 'every input needs a url part', { expression: 'input.url' });
        const typePart = parts.find((q) => q.name === 'type');
        inputs.push({ type: typePart ? value(typePart) : undefined, url, source: checkSource(url, policy) });
        break;
      }
      default:
        throw fhirError('parameter-unsupported', `$import does not take the parameter '${String(p.name)}'`, {
          expression: String(p.name),
        });
    }
  }
  if (inputFormat === undefined)
    throw fhirError('parameter-missing', '$import needs inputFormat (application/fhir+ndjson)', {
      expression: 'inputFormat',
    });
  if (!OUTPUT_FORMATS.has(inputFormat))
    throw fhirError(
      'parameter-invalid',
      `inputFormat '${inputFormat}' is not served: application/fhir+ndjson`,
      {
        expression: 'inputFormat',
      },
    );
  if (inputs.length === 0)
    throw fhirError('parameter-missing', '$import needs at least one input', { expression: 'input' });
  if (inputs.length > MAX_INPUTS)
    throw fhirError('parameter-invalid', `$import takes at most ${MAX_INPUTS} inputs`, {
      expression: 'input',
    });
  return { inputs, inputSource, consents };
}

/** The X-Progress header of a running import. */
function progressText(progress: ImportProgress): string {
  return progress.phase === 'scan'
    ? `scan: ${progress.done} resources`
    : `${progress.phase}: ${progress.done} of ${progress.total} resources`;
}

/** Consent resources an import met, over all its runs (the journal's counts: stored, unchanged or rejected). */
function consentCount(counts: TypeCounts | undefined): number {
  return counts ? counts.stored + counts.unchanged + counts.rejected : 0;
}

export class BulkImports {
  private readonly jobQueue = new JobQueue((id) => this.work(id));
  private readonly abort = new AbortController();
  /** The engine's last progress per running job (not kept: a resumed job reports anew). */
  private readonly progress = new Map<string, ImportProgress>();

  constructor(private readonly options: BulkImportOptions) {}

  start(): void {
    this.jobQueue.start(this.options.jobs, 'import', this.options.log);
  }

  async settled(): Promise<void> {
    await this.jobQueue.settled();
  }

  async close(): Promise<void> {
    await this.jobQueue.stop(() => this.abort.abort());
  }

  operation(): OperationRegistration {
    return {
      name: 'import',
      levels: ['system'],
      methods: ['POST'],
      documentation:
        'Bulk Data $import, the ping-and-pull proposal (smart-on-fhir/bulk-import import-pnp.md, 2021 draft): a ' +
        'Parameters body (inputFormat application/fhir+ndjson, input with type and url: a file under the import ' +
        'root or an http(s) URL of an allowed origin), Prefer: respond-async; each resource validated and written ' +
        "as the caller (the CLI's import engine); the status gives counts by type and an error file. docs/bulk.md.",
      handler: this.kickOff,
    };
  }

  readonly kickOff: InteractionHandler = async (request, context) => {
    if (!request.preferAsync)
      throw fhirError('respond-async-required', '$import runs asynchronously: send Prefer: respond-async');
    if (!request.body) throw fhirError('body-missing', '$import takes a Parameters body');
    const parsed = readInputs(toPlainJson(parseRequestJson(request.body)), this.options.sources);
    // The engine decides every resource as this caller; here only that it may write at all.
    for (const input of parsed.inputs) if (input.type) context.access.authorize('update', input.type);
    const id = randomUUID();
    const saved: SavedImport = {
      ...parsed,
      requestUrl: `${request.baseUrl}/$import`,
      baseUrl: request.baseUrl,
      caller: this.options.access.snapshot(context.access),
    };
    const state: ImportState = {
      transactionTime: new Date().toISOString(),
      fetched: parsed.inputs.map(() => false),
      sourceErrors: parsed.inputs.map(() => null),
    };
    await this.options.jobs.create({
      id,
      kind: 'import',
      owner: context.access.caller.participant,
      request: JSON.stringify(saved),
      state: JSON.stringify(state),
      createdAt: Date.now(),
    });
    this.jobQueue.enqueue(id);
    context.log.info({ job: id, inputs: parsed.inputs.length }, 'import job accepted');
    return {
      status: 202,
      headers: {
        'Content-Location': `${request.baseUrl}/bulk/import/${id}`,
        'Content-Type': 'application/fhir+json; charset=utf-8',
      },
      body: {
        resourceType: 'OperationOutcome',
        issue: [
          issue('information', 'informational', `Import job ${id} accepted; poll its Content-Location`),
        ],
      } as FhirResource,
    };
  };

  async status(owner: string, id: string): Promise<JobStatusAnswer> {
    const job = await this.options.jobs.owned('import', owner, id);
    const saved = JSON.parse(job.request) as SavedImport;
    const state = JSON.parse(job.state) as ImportState;
    if (job.status === 'failed')
      throw fhirError('bulk-job-failed', `Import job ${id} failed: ${job.error ?? 'internal error'}`);
    if (job.status !== 'completed') {
      // This replica's own runner knows the latest; any other replica reads the last saved.
      const progress = this.progress.get(id) ?? state.progress;
      return {
        status: 202,
        headers: {
          'X-Progress': progress ? progressText(progress) : job.status,
          'Retry-After': String(RETRY_AFTER_SECONDS),
        },
      };
    }
    const fileUrl = `${saved.baseUrl}/bulk/import/${id}/${IMPORT_ERROR_FILE}`;
    const byType = state.byType ?? {};
    const errors = (state.rejected ?? 0) + state.sourceErrors.filter((e) => e !== null).length;
    const manifest = {
      transactionTime: state.transactionTime,
      request: saved.requestUrl,
      requiresAccessToken: true,
      output: Object.entries(byType)
        .filter(([, c]) => c.stored + c.unchanged > 0)
        .map(([type, c]) => ({
          type,
          count: c.stored + c.unchanged,
          stored: c.stored,
          unchanged: c.unchanged,
        })),
      error: errors > 0 ? [{ type: 'OperationOutcome', url: fileUrl, count: errors }] : [],
      // Not in the proposal: how Consent resources were handled, as the CLI's summary says it.
      consents: { handling: saved.consents ?? 'refuse', seen: consentCount(byType.Consent) },
    };
    const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8' };
    if (job.expiresAt !== undefined) headers.Expires = new Date(job.expiresAt).toUTCString();
    return { status: 200, headers, body: manifest };
  }

  /** DELETE: the job stops after its batch in progress (what it stored stays) and is unknown afterwards. */
  async cancel(owner: string, id: string): Promise<void> {
    await this.options.jobs.owned('import', owner, id);
    await this.options.jobs.remove('import', id);
  }

  async file(owner: string, id: string, name: string): Promise<string> {
    const job = await this.options.jobs.owned('import', owner, id);
    const path = join(this.options.jobs.dir, 'import', id, name);
    if (job.status !== 'completed' || name !== IMPORT_ERROR_FILE || !existsSync(path))
      jobNotFound(`${id}/${name}`);
    return path;
  }

  /** Fetches what is not fetched yet, then runs the engine (which resumes from its journal) to the end. */
  private async work(id: string): Promise<void> {
    const { jobs, access, log } = this.options;
    const job = await jobs.get(id);
    if (!job || (job.status !== 'queued' && job.status !== 'running')) return;
    const saved = JSON.parse(job.request) as SavedImport;
    const state = JSON.parse(job.state) as ImportState;
    const dir = jobs.filesDir('import', id);
    try {
      if (!(await jobs.saveState(id, 'running', JSON.stringify(state)))) return;
      const paths = await this.fetchAll(id, saved, state, dir);
      if (paths === undefined) return;
      const policy = access.policyFor(saved.caller);
      const context: FhirContext = {
        store: this.options.context.store,
        validator: this.options.context.validator,
        indexEntries: this.options.context.indexEntries,
        patientsOf: this.options.context.patientsOf,
        anchor: this.options.context.anchor,
        searchParameterWritten: this.options.context.searchParameterWritten,
        registry: this.options.registry,
        access: policy,
        log,
      };
      const journalFile = join(dir, 'journal.sqlite');
      const validationPool = this.options.validationPool?.();
      const saver = this.progressSaver(id, state);
      let summary;
      try {
        summary = await importSources(
          paths.map((path) => ({ path })),
          {
            context,
            journalFile,
            baseUrl: saved.baseUrl,
            consents: saved.consents ?? 'refuse',
            signal: this.abort.signal,
            validationPool,
          },
          {
            outcome: () => undefined,
            progress: (p) => {
              this.progress.set(id, p);
              saver.report(p);
            },
          },
        );
      } finally {
        await saver.settled();
        await validationPool?.close();
      }
      if (summary.interrupted || !(await jobs.get(id))) return; // stopping (resumed at the next start) or cancelled
      state.byType = summary.byType;
      state.rejected = this.writeErrorFile(dir, journalFile, saved, state, paths);
      await jobs.finish(id, { status: 'completed', state: JSON.stringify(state) }, this.options.retentionMs);
      log.info({ job: id }, 'import job completed');
    } catch (err) {
      if (!(await jobs.get(id))) return;
      log.error({ err, job: id }, 'import job failed');
      await jobs.finish(
        id,
        {
          status: 'failed',
          state: JSON.stringify(state),
          error: 'internal error while importing (see the service log)',
        },
        this.options.retentionMs,
      );
    } finally {
      this.progress.delete(id);
    }
  }

  /**
   * Saves the engine's progress in the job's record, throttled: the first report of each phase, then once
   * `progressSaveEvery` more resources were done; one save at a time (the latest report waiting is saved after it).
   */
  private progressSaver(id: string, state: ImportState) {
    const every = this.options.progressSaveEvery ?? IMPORT_PROGRESS_SAVE_EVERY;
    let saved: ImportProgress | undefined;
    let waiting: ImportProgress | undefined;
    let saving: Promise<void> | undefined;
    const save = (progress: ImportProgress): Promise<void> =>
      this.options.jobs
        .saveState(id, 'running', JSON.stringify({ ...state, progress }))
        .then(
          () => undefined,
          (err: unknown) => this.options.log.warn({ err, job: id }, 'saving an import job’s progress failed'),
        )
        .then(() => {
          const next = waiting;
          waiting = undefined;
          saving = next ? save(next) : undefined;
          return saving;
        });
    return {
      report: (progress: ImportProgress): void => {
        const due = !saved || saved.phase !== progress.phase || progress.done - saved.done >= every;
        if (!due) return;
        saved = { ...progress };
        if (saving) waiting = saved;
        else saving = save(saved);
      },
      settled: async (): Promise<void> => {
        while (saving) await saving;
      },
    };
  }

  /** The local path of every readable input (URL sources fetched into the job folder once, durably). */
  private async fetchAll(
    id: string,
    saved: SavedImport,
    state: ImportState,
    dir: string,
  ): Promise<string[] | undefined> {
    const paths: string[] = [];
    for (const [i, input] of saved.inputs.entries()) {
      if (state.sourceErrors[i] !== null) continue;
      if (input.source.kind === 'file') {
        paths.push(input.source.path);
        continue;
      }
      const file = join(dir, `input-${i}.ndjson`);
      if (!state.fetched[i]) {
        if (this.jobQueue.stopped) return undefined;
        try {
          await fetchSource(input.source.url, file, this.options.sources);
          const fd = openSync(file, 'r');
          fsyncSync(fd);
          closeSync(fd);
          state.fetched[i] = true;
        } catch (err) {
          state.sourceErrors[i] = (err as Error).message;
        }
        if (!(await this.options.jobs.saveState(id, 'running', JSON.stringify(state)))) return undefined;
      }
      if (state.fetched[i]) paths.push(file);
    }
    return paths;
  }

  /** The error file: sources that could not be read, then every rejected resource, its input named by its URL. */
  private writeErrorFile(
    dir: string,
    journalFile: string,
    saved: SavedImport,
    state: ImportState,
    paths: string[],
  ): number {
    const lines: string[] = [];
    for (const [i, error] of state.sourceErrors.entries())
      if (error !== null)
        lines.push(
          JSON.stringify({
            resourceType: 'OperationOutcome',
            issue: [issue('error', 'exception', `input ${saved.inputs[i].url} could not be read: ${error}`)],
          }),
        );
    // The engine names the file it read; the client knows its input by the URL it sent.
    const urlOf = new Map<string, string>();
    for (const [i, input] of saved.inputs.entries())
      urlOf.set(input.source.kind === 'file' ? input.source.path : join(dir, `input-${i}.ndjson`), input.url);
    let rejected = 0;
    for (const { outcome } of journalRejections(journalFile)) {
      let text = JSON.stringify(outcome);
      for (const path of paths)
        if (text.includes(path)) text = text.split(path).join(urlOf.get(path) ?? path);
      lines.push(text);
      rejected++;
    }
    if (lines.length > 0)
      writeFileSync(join(dir, IMPORT_ERROR_FILE), `${lines.join('\n')}\n`, { mode: 0o600 });
    return rejected;
  }
}
