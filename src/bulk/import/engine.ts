/**
 * The bulk import engine (docs/import.md): `importSources(sources, options, sink)`.
 *
 * Phases, per run (a run resumes what an earlier run of the same journal left):
 * 1. files: each file's content hash, checked against the journal (a file changed since an earlier run is
 *    refused: `SourceChangedError`);
 * 2. scan: every resource's target `Type/id` (its own id, or a server id assigned once and kept in the journal for
 *    urn:uuid entries and resources without id), the keys it is referenced by (fullUrl, `Type/id`) and its
 *    identifiers, into the journal: references resolve whatever the order of the files and lines;
 * 3. write: resources in source order, in batches of `batchSize`, each batch one store transaction. Each resource
 *    has its references resolved (the import's map, else the store) and is written through the registered `update`
 *    interaction (PUT Type/id: validation, access, index rows, compartments, custodian, consent store, anchor hook:
 *    the API's own path). A resource the store already holds with the same content stores nothing (a re-import, or
 *    a batch written again after a crash). The batch's outcomes and the file's new position go to the journal in
 *    one journal transaction after the store committed;
 * 4. anchors: the outbox drained in Merkle batches every `anchorEvery` new versions and at the end.
 */
import { performance } from 'node:perf_hooks';
import { FhirError, fhirError, type OperationOutcome } from '../../fhir/outcome.js';
import { INERT_CONSENT_TAG } from '../../consent/consent-resource.js';
import { toPlainJson, type FhirResource } from '../../fhir/fhir-json.js';
import type { FhirContext, FhirRequest } from '../../fhir/interactions/types.js';
import type { IndexEntry, ResourceStore, StoredVersion } from '../../fhir/store/resource-store.js';
import { conditionalMatches } from '../../fhir/interactions/batch.js';
import { newResourceId } from '../../fhir/interactions/ids.js';
import { emptyQuery, parseQuery } from '../../fhir/query.js';
import type {
  ResourceValidator,
  ValidationOptions,
  ValidationResult,
} from '../../fhir/validation/validator.js';
import { validationDigest, type CheckedText } from '../../fhir/validation/validation-pool.js';
import { ImportJournal, type JournalFile, type RecordedOutcome } from './journal.js';
import {
  fileHash,
  ndjsonRecords,
  readBundleFile,
  sourceKind,
  type SourceKind,
  type SourceRecord,
} from './sources.js';
import { classifyReference, findReferences, identifierCriteria } from './references.js';
import type {
  ConsentHandling,
  ImportOptions,
  ImportSink,
  ImportSource,
  ImportSummary,
  ImportTimings,
  RemoteTarget,
  RemoteWrite,
  ResourceOutcome,
  SourcePosition,
} from './types.js';

/**
 * The scan reports its progress once per this many resources (and at the end of each file): its consumers (the
 * $import job's X-Progress and saved progress, saved once per 1000; the CLI shows the write phase only) need no
 * more, and a report per resource cost a call per line of a 10-million-line import.
 */
export const SCAN_PROGRESS_EVERY = 1000;

/** A source whose content changed since an earlier run of the same journal: the import refuses to go on. */
export class SourceChangedError extends Error {
  constructor(readonly file: string) {
    super(`${file} changed since the import started (its content hash differs): refused`);
    this.name = 'SourceChangedError';
  }
}

/** The journal was started with other settings (--consents, --atomic-bundles) than this run's. */
export class JournalSettingsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JournalSettingsError';
  }
}

/** Where the source's own "last updated" instant is kept on the stored version (meta.lastUpdated is the store's). */
export const SOURCE_LAST_UPDATED_EXTENSION =
  'https://hie-ledger.dev/fhir/StructureDefinition/source-last-updated';
/** The tag on a Consent imported with `--consents inert`: stored, grants nothing (the consent store's rule). */
export { INERT_CONSENT_TAG };

const ID = /^[A-Za-z0-9\-.]{1,64}$/;
const TYPED_URL = /^(?:.*\/)?([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/;

interface FileState extends JournalFile {
  kind: SourceKind;
}

/** What reference resolution asks of the store (a local store's context, or a running service's API). */
type StoreLookups = Pick<RemoteTarget, 'exists' | 'matches'>;

/** A resource of the batch this run writes: `pending` until its batch's write answered. */
type LocalStatus = 'pending' | 'stored' | 'rejected';

/** The options the `update` interaction validates a written resource with (common.ts validateResource). */
const WRITE_VALIDATION: ValidationOptions = { mode: 'update' };

/**
 * Verdicts (and index entries) the check keeps in memory for the write, at most this many resources: beyond, the
 * journal keeps the verdict and the write extracts the index entries itself (an import of millions of resources
 * must fit; about 3.5 KB each with their index entries, Synthea's resources). Kept until the run ends: the same
 * target may be written again further on (a Practitioner in every patient's Bundle), with the same digest; the
 * index entries only until a write takes them.
 */
export const VERDICTS_IN_MEMORY = 50_000;

/**
 * A verdict of the check for one target: the digest of exactly what was validated (validationDigest: the options
 * and the plain JSON text, after reference rewriting), the result, and the index entries a worker extracted from
 * the same input (absent: the write extracts them).
 */
interface KeptVerdict {
  digest: Buffer;
  result: ValidationResult;
  index?: IndexEntry[];
  /** A write took it (its entries, if any, are not kept past that). */
  spent?: boolean;
}

/** Resources per message to a validation worker (few messages, little waiting at the end). */
const POOL_CHUNK = 64;

/**
 * Timing wrappers around the context's validator and hooks (the benchmark's split of time). `reuse`: a verdict of
 * this run for exactly this input, if there is one (else the validator runs).
 */
function timedContext(
  context: FhirContext,
  timings: ImportTimings,
  reuse: (resource: unknown, options: ValidationOptions | undefined) => ValidationResult | undefined,
  reuseIndex: (resource: FhirResource) => IndexEntry[] | undefined,
  observe?: (result: ValidationResult) => void,
): FhirContext {
  const validator = Object.create(context.validator) as ResourceValidator;
  validator.validate = (resource, options) => {
    const start = performance.now();
    try {
      const result = reuse(resource, options) ?? context.validator.validate(resource, options);
      observe?.(result);
      return result;
    } finally {
      timings.validate += performance.now() - start;
    }
  };
  const { indexEntries, anchor } = context;
  return Object.assign({}, context, {
    validator,
    indexEntries:
      indexEntries &&
      ((resource: FhirResource) => {
        const start = performance.now();
        try {
          return reuseIndex(resource) ?? indexEntries(resource);
        } finally {
          timings.index += performance.now() - start;
        }
      }),
    anchor:
      anchor &&
      ((version: Parameters<NonNullable<FhirContext['anchor']>>[0]) => {
        const start = performance.now();
        try {
          return anchor(version);
        } finally {
          timings.anchor += performance.now() - start;
        }
      }),
  });
}

/** Where a record was, as the outcomes and the error file name it. */
function positionOf(file: string, record: SourceRecord): SourcePosition {
  return record.line !== undefined ? { file, line: record.line } : { file, entry: record.entry };
}

function where(position: SourcePosition): string {
  return position.line !== undefined
    ? `${position.file}:${position.line}`
    : `${position.file} Bundle.entry[${position.entry ?? 0}]`;
}

/** The refusal as an OperationOutcome whose every issue names the file and line (or bundle entry). */
function rejectionOutcome(error: FhirError, position: SourcePosition): OperationOutcome {
  const at = where(position);
  return {
    resourceType: 'OperationOutcome',
    issue: error.outcome.issue.map((i) => ({ ...i, diagnostics: `${at}: ${i.diagnostics ?? i.code}` })),
  };
}

/**
 * The `Type/id` a record is stored as: its own id (NDJSON lines and collection entries with an id, PUT entries'
 * URL), else a server id chosen once per key (fullUrl, or the file hash and position) and kept in the journal.
 */
function targetOf(
  record: SourceRecord,
  type: string,
  ownId: unknown,
  hash: string,
  keys: Pick<ImportJournal, 'lookup' | 'bind'>,
): string {
  const method = record.method?.toUpperCase();
  if (method === 'PUT' && record.url) {
    const typed = TYPED_URL.exec(record.url.split('?')[0]!);
    if (typed && typed[1] === type) return `${type}/${typed[2]}`;
  }
  if (method !== 'POST' && typeof ownId === 'string' && ID.test(ownId)) return `${type}/${ownId}`;
  const key = record.fullUrl ?? `${hash}:${record.line ?? `#${record.entry}`}`;
  return keys.lookup(key) ?? keys.bind(key, `${type}/${newResourceId()}`);
}

class ImportRun {
  private readonly timings: ImportTimings = {
    parse: 0,
    validate: 0,
    index: 0,
    store: 0,
    anchor: 0,
    total: 0,
  };
  /** The local store's context (timed); undefined when the import writes to a running service (`remote`). */
  private readonly context: FhirContext | undefined;
  private readonly batchSize: number;
  private readonly consents: ConsentHandling;
  private readonly atomic: boolean;
  private consentsSeen = 0;
  /** Validations of the write phase answered by the check phase's verdict (the same input, validated once). */
  private verdictsReused = 0;
  /** Index extractions of the write phase answered by a worker's entries for the same input. */
  private indexesReused = 0;
  /** The check's verdicts waiting for their write (VERDICTS_IN_MEMORY at most; the rest in the journal). */
  private readonly verdicts = new Map<string, KeptVerdict>();
  /**
   * The input the write's validation was last answered for from a verdict with index entries, and those entries:
   * the `update` interaction asks for the index entries of the same object (a plain resource is its own plain
   * JSON) after reading its target, without changing it.
   */
  private answered: { resource: unknown; index: IndexEntry[] } | undefined;
  /** The check's chunks whose index entries the workers are still extracting (they come after the verdicts). */
  private extrasComing: Promise<void>[] = [];
  private processed = 0;
  private newVersionsSinceDrain = 0;
  private batches = 0;
  private total = 0;
  /** Recent answers of the journal's reference map (a key's target never changes once bound). */
  private readonly keyCache = new Map<string, string | undefined>();
  private readonly identifierCache = new Map<string, string[]>();

  constructor(
    private readonly journal: ImportJournal,
    private readonly options: ImportOptions,
    private readonly sink: ImportSink,
  ) {
    if (!options.context === !options.remote)
      throw new Error('an import writes either through a local context or to a remote service');
    this.context =
      options.context &&
      timedContext(
        options.context,
        this.timings,
        (resource, validationOptions) => this.reuseVerdict(resource, validationOptions),
        (resource) => this.reuseIndex(resource),
        sink.validated && ((result) => sink.validated!(result)),
      );
    this.batchSize = Math.max(1, Math.floor(options.batchSize ?? 2000));
    const consents = options.consents ?? 'refuse';
    this.consents = journal.fixConsentHandling(consents);
    if (this.consents !== consents)
      throw new JournalSettingsError(
        `this import was started with --consents ${this.consents}; resume it with the same setting`,
      );
    const atomic = options.atomicBundles ?? false;
    this.atomic = journal.fixAtomicBundles(atomic);
    if (this.atomic !== atomic)
      throw new JournalSettingsError(
        `this import was started ${this.atomic ? 'with' : 'without'} --atomic-bundles; resume it the same way`,
      );
  }

  async run(sources: readonly ImportSource[]): Promise<ImportSummary> {
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    const files = await this.registerFiles(sources);
    const parseStart = performance.now();
    const validateBefore = this.timings.validate;
    const indexBefore = this.timings.index;
    this.journal.clearVerdicts();
    let scannedBefore = 0; // resources of the files before: the scan's progress counts the whole import
    for (const file of files) {
      if (!file.scanned) await this.scan(file, scannedBefore);
      scannedBefore += file.resources;
    }
    // The check validates locally; a running service validates each write itself.
    if (this.context) {
      for (const file of files) if (!file.finished) await this.check(file, this.context);
      // The workers' last index entries (extracted after the verdicts, so the check did not wait for them): every
      // write then finds its resource's entries whatever the timing (counted as index extraction).
      const start = performance.now();
      await Promise.all(this.extrasComing);
      this.extrasComing = [];
      this.timings.index += performance.now() - start;
    }
    // The check's validation and the wait for the workers' index entries are counted as such, not as parsing.
    this.timings.parse +=
      performance.now() -
      parseStart -
      (this.timings.validate - validateBefore) -
      (this.timings.index - indexBefore);
    this.total = files.reduce((sum, f) => sum + f.resources, 0);
    let interrupted = false;
    for (const file of files) {
      if (file.finished) continue;
      if (!(await this.write(file))) {
        interrupted = true;
        break;
      }
    }
    // Every verdict is spent once the last file is written (their pages go back when the journal closes).
    if (!interrupted) this.journal.clearVerdicts();
    this.verdicts.clear();
    await this.drainAnchors(true);
    this.timings.total = performance.now() - started;
    const cpu = process.cpuUsage(cpuBefore);
    this.timings.cpu = (cpu.user + cpu.system) / 1000;
    return {
      byType: this.journal.counts(),
      consents: { handling: this.consents, seen: this.consentsSeen },
      interrupted,
      timings: this.timings,
      processedThisRun: this.processed,
      validationsReused: this.verdictsReused,
      indexesReused: this.indexesReused,
      validationWorkers: this.options.validationPool?.size ?? 0,
    };
  }

  /** Phase 1: hashes, checked against the journal; new files registered in order. */
  private async registerFiles(sources: readonly ImportSource[]): Promise<FileState[]> {
    const files: FileState[] = [];
    for (const [ord, source] of sources.entries()) {
      const kind = sourceKind(source.path);
      if (!kind) throw new Error(`${source.path} is neither NDJSON nor a Bundle file`);
      const hash = await fileHash(source.path);
      const known = this.journal.file(source.path);
      if (known && known.hash !== hash) throw new SourceChangedError(source.path);
      if (!known) this.journal.addFile(source.path, ord, hash, kind);
      files.push({ ...this.journal.file(source.path)!, kind });
    }
    return files;
  }

  /**
   * Phase 2: targets, keys and identifiers of a file's resources into the journal (plain JSON.parse), and the
   * refused Consents' targets (rejected whatever happens). Validation is the check's (phase 2b), once the reference
   * map is complete.
   */
  private async scan(file: FileState, before: number): Promise<void> {
    let count = 0;
    let pending: (() => void)[] = [];
    const flush = () => {
      const work = pending;
      pending = [];
      this.journal.transaction(() => work.forEach((w) => w()));
    };
    const remember = (record: SourceRecord, resource: Record<string, unknown>) => {
      const type = resource.resourceType;
      if (typeof type !== 'string') return;
      count++;
      pending.push(() => {
        const target = targetOf(record, type, resource.id, file.hash, this.journal);
        this.journal.bind(target, target);
        if (record.fullUrl) this.journal.bind(record.fullUrl, target);
        for (const identifier of Array.isArray(resource.identifier) ? resource.identifier : []) {
          const { system, value } = (identifier ?? {}) as { system?: unknown; value?: unknown };
          if (typeof system === 'string' && typeof value === 'string')
            this.journal.addIdentifier(type, system, value, target);
        }
        const position = positionOf(file.path, record);
        this.journal.addPendingTarget(target, position);
        // Known to be rejected: so is every resource that names it, before or after it in the import.
        if (type === 'Consent' && this.consents === 'refuse') this.journal.markRejected(target, position);
      });
      if (pending.length >= 10_000) flush();
    };
    if (file.kind === 'ndjson') {
      for await (const record of ndjsonRecords(file.path, 0, false)) {
        const text = record.text!;
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          count++; // rejected when written
          continue;
        }
        if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed))
          remember(record, parsed as Record<string, unknown>);
        else count++;
        if (count % SCAN_PROGRESS_EVERY === 0) this.progress('scan', before + count, 0);
      }
    } else {
      const bundle = await readBundleFile(file.path, true);
      for (const record of bundle.records) {
        if (record.resource) remember(record, record.resource);
        else count++;
      }
    }
    flush();
    this.journal.transaction(() => this.journal.markScanned(file.path, count));
    file.scanned = true;
    file.resources = count;
    this.progress('scan', before + count, 0); // the file's final count, whatever the throttle skipped
  }

  /**
   * Phase 2b: every resource still to be written, parsed, prepared and with its references rewritten exactly as its
   * write will do it (the reference map is complete after the scan), validated with the write's validator and
   * options. The verdict is kept in the journal with the digest of exactly what was validated: the write's own
   * validation (the `update` interaction's) is answered by it only when it is asked about the same input
   * (`reuseVerdict`), so each resource is validated once. An invalid resource's target is marked rejected: so is
   * every resource that names it, before or after it in the import. A resource whose references do not resolve
   * now is not validated here: its write rejects it for that (or, if the store gained the target meanwhile,
   * validates it).
   */
  private async check(file: FileState, context: FhirContext): Promise<void> {
    let pending: (() => void)[] = [];
    const flush = () => {
      const work = pending;
      pending = [];
      this.journal.transaction(() => work.forEach((w) => w()));
    };
    const pool = this.options.validationPool;
    // The workers extract the index entries too when they extract exactly what the context's indexEntries would.
    const index = Boolean(this.options.indexOnWorkers && context.indexEntries);
    /** Verdicts waiting for the pool: a chunk of prepared resources goes out once it is full. */
    let chunk: { target: string; text: string; position: SourcePosition }[] = [];
    const inFlight = new Set<Promise<void>>();
    const keep = (target: string, verdict: KeptVerdict, position: SourcePosition) => {
      // In memory while there is room (the write takes it without a journal read); else in the journal.
      // (A target checked again, a duplicate of the import, replaces its own: never one in memory, one on disk.)
      if (this.verdicts.size < VERDICTS_IN_MEMORY || this.verdicts.has(target))
        this.verdicts.set(target, verdict);
      else {
        const { digest, result } = verdict;
        pending.push(() =>
          this.journal.setVerdict(
            target,
            digest,
            result.valid && result.issues.length === 0 ? null : JSON.stringify(result),
          ),
        );
      }
      // What a resumed run needs: the rejection stays in the journal.
      if (!verdict.result.valid) pending.push(() => this.journal.markRejected(target, position));
    };
    const checkChunk = async (
      texts: string[],
      onExtras: ((extras: unknown[]) => void) | undefined,
    ): Promise<(CheckedText | null)[]> => {
      if (pool!.check) return pool!.check(texts, WRITE_VALIDATION, onExtras);
      const results = await pool!.validate(texts, WRITE_VALIDATION);
      return results.map((result, i) =>
        result ? { result, digest: validationDigest(texts[i]!, WRITE_VALIDATION) } : null,
      );
    };
    const dispatch = async () => {
      if (chunk.length === 0) return;
      const work = chunk;
      chunk = [];
      const verdicts: (KeptVerdict | undefined)[] = [];
      // The check worker's extras (extractIndex of the same texts: check-worker.ts) come after the chunk's verdicts,
      // when the worker has nothing to validate (during the write, mostly): each joins its verdict. A verdict a write
      // took before its entries came is written with this thread's extraction.
      let onExtras: ((extras: unknown[]) => void) | undefined;
      if (index)
        this.extrasComing.push(
          new Promise<void>((resolve) => {
            onExtras = (extras) => {
              extras.forEach((entries, i) => {
                const verdict = verdicts[i];
                if (verdict?.result.valid && Array.isArray(entries) && !verdict.spent)
                  verdict.index = entries as IndexEntry[];
              });
              resolve();
            };
          }),
        );
      const done = checkChunk(
        work.map((w) => w.text),
        onExtras,
      ).then((results) =>
        results.forEach((checked, i) => {
          // null: the worker's validator threw; no verdict kept, so the write validates it on its own.
          if (!checked) return;
          const verdict: KeptVerdict = { digest: checked.digest, result: checked.result };
          verdicts[i] = verdict;
          keep(work[i]!.target, verdict, work[i]!.position);
        }),
      );
      const tracked = done.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      // Bounded: at most two chunks a worker queued (memory), the main thread preparing the next meanwhile.
      if (inFlight.size >= pool!.size * 2) await this.waitForPool(inFlight);
      if (pending.length >= 2_000) flush();
    };
    const checkOne = async (record: SourceRecord) => {
      const resource = record.resource;
      if (!resource) return;
      const type = resource.resourceType;
      if (type === 'Consent' && this.consents === 'refuse') return; // marked in the scan
      let target: string;
      try {
        target = targetOf(record, type, resource.id, file.hash, this.keys);
        this.prepare(resource, target.slice(type.length + 1), false);
        await this.resolveReferences(resource, this.lookupsOf(context));
      } catch (err) {
        if (err instanceof FhirError) return;
        throw err;
      }
      const plain = toPlainJson(resource);
      const position = positionOf(file.path, record);
      if (pool) {
        chunk.push({ target, text: JSON.stringify(plain), position });
        if (chunk.length >= POOL_CHUNK) await dispatch();
        return;
      }
      const start = performance.now();
      // The plain validator, not the timed one: the write reports its verdict (sink.validated) once, not twice.
      const result = (this.options.context ?? context).validator.validate(plain, WRITE_VALIDATION);
      this.timings.validate += performance.now() - start;
      keep(target, { digest: validationDigest(JSON.stringify(plain), WRITE_VALIDATION), result }, position);
      if (pending.length >= 2_000) flush();
    };
    // Plain JSON.parse: the validator is given plain JSON (toPlainJson) at write time too; the digest tells.
    if (file.kind === 'ndjson') {
      for await (const record of ndjsonRecords(file.path, file.done, 'plain')) await checkOne(record);
    } else {
      const bundle = await readBundleFile(file.path, true);
      for (const record of bundle.records) if (record.entry! >= file.done) await checkOne(record);
    }
    await dispatch();
    while (inFlight.size > 0) await this.waitForPool(inFlight);
    flush();
  }

  /** Waits for one of the pool's chunks in flight; the wait is the check's validation time on this thread. */
  private async waitForPool(inFlight: Set<Promise<void>>): Promise<void> {
    const start = performance.now();
    await Promise.race(inFlight);
    this.timings.validate += performance.now() - start;
  }

  /**
   * The write's validation answered by the check's verdict: only for the same target, options and plain JSON
   * text (its digest), else undefined (the validator runs). The API path never gets here: it is this run's context.
   */
  private reuseVerdict(
    resource: unknown,
    options: ValidationOptions | undefined,
  ): ValidationResult | undefined {
    this.answered = undefined;
    if (resource === null || typeof resource !== 'object') return undefined;
    const { resourceType, id } = resource as { resourceType?: unknown; id?: unknown };
    if (typeof resourceType !== 'string' || typeof id !== 'string') return undefined;
    const target = `${resourceType}/${id}`;
    const inMemory = this.verdicts.get(target);
    if (inMemory) {
      if (!inMemory.digest.equals(validationDigest(JSON.stringify(resource), options))) return undefined;
      this.verdictsReused++;
      if (inMemory.index) this.answered = { resource, index: inMemory.index };
      // The entries are one write's (a duplicate target written again extracts its own): memory back as it goes.
      inMemory.index = undefined;
      inMemory.spent = true;
      return inMemory.result;
    }
    const kept = this.journal.verdict(target);
    if (!kept || !kept.digest.equals(validationDigest(JSON.stringify(resource), options))) return undefined;
    this.verdictsReused++;
    return kept.result === null ? { valid: true, issues: [] } : (JSON.parse(kept.result) as ValidationResult);
  }

  /**
   * The write's index entries answered by a worker's extraction: only for the very object whose validation was
   * just answered by a verdict of the same digest (a plain resource, given to the validator as it is: so the
   * worker extracted from the same JSON), else undefined (extracted here).
   */
  private reuseIndex(resource: FhirResource): IndexEntry[] | undefined {
    const answered = this.answered;
    this.answered = undefined;
    if (!answered || answered.resource !== resource) return undefined;
    this.indexesReused++;
    return answered.index;
  }

  /** Phase 3 for one file, from where an earlier run stopped. False when interrupted (signal). */
  private async write(file: FileState): Promise<boolean> {
    let batch: SourceRecord[] = [];
    const parseTimer = { start: performance.now() };
    if (file.kind === 'ndjson') {
      for await (const record of ndjsonRecords(file.path, file.done)) {
        batch.push(record);
        if (batch.length >= this.batchSize) {
          this.timings.parse += performance.now() - parseTimer.start;
          if (!(await this.commitBatch(file, batch, record.line!, false))) return false;
          batch = [];
          parseTimer.start = performance.now();
        }
      }
      this.timings.parse += performance.now() - parseTimer.start;
      const last = batch.length > 0 ? batch[batch.length - 1]!.line! : file.done;
      return this.commitBatch(file, batch, last, true);
    }
    const bundle = await readBundleFile(file.path);
    this.timings.parse += performance.now() - parseTimer.start;
    const remaining = bundle.records.filter((r) => r.entry! >= file.done);
    const atomic = this.atomic && bundle.type === 'transaction';
    if (atomic) return this.commitBatch(file, remaining, bundle.records.length, true, true);
    for (let i = 0; i < remaining.length; i += this.batchSize) {
      const slice = remaining.slice(i, i + this.batchSize);
      const end = i + this.batchSize >= remaining.length;
      if (!(await this.commitBatch(file, slice, slice[slice.length - 1]!.entry! + 1, end))) return false;
    }
    if (remaining.length === 0) return this.commitBatch(file, [], bundle.records.length, true);
    return true;
  }

  /**
   * One batch: one store transaction, then its outcomes and the file's new position in one journal transaction,
   * then the sink hears them. Returns false when the signal asks to stop (after this batch is recorded).
   */
  private async commitBatch(
    file: FileState,
    records: SourceRecord[],
    done: number,
    finished: boolean,
    atomic = false,
  ): Promise<boolean> {
    const outcomes: ResourceOutcome[] = [];
    if (records.length > 0 && this.options.remote) {
      const storeStart = performance.now();
      outcomes.push(...(await this.writeRemote(file, records, this.options.remote)));
      this.timings.store += performance.now() - storeStart;
    } else if (records.length > 0 && this.context) {
      const context = this.context;
      const storeStart = performance.now();
      const inner = this.timings.validate + this.timings.index + this.timings.anchor;
      try {
        await context.store.transaction(async (store) => {
          const tx = Object.assign({}, context, { store });
          const local = new Map<string, LocalStatus>();
          for (const record of records) {
            const outcome = await this.importOne(file, record, tx, local);
            outcomes.push(outcome);
            if (atomic && outcome.status === 'rejected') throw new AtomicRollback();
          }
        });
      } catch (err) {
        if (!(err instanceof AtomicRollback)) throw err;
        this.rollBack(file, records, outcomes);
      }
      this.timings.store +=
        performance.now() -
        storeStart -
        (this.timings.validate + this.timings.index + this.timings.anchor - inner);
    }
    this.options.afterStoreCommit?.(this.batches + 1);
    const recorded: RecordedOutcome[] = outcomes.map((o) =>
      o.status === 'rejected'
        ? {
            position: o.position,
            resourceType: o.resourceType,
            target: o.target,
            status: o.status,
            outcome: o.outcome,
          }
        : { position: o.position, resourceType: o.resourceType, target: o.target, status: o.status },
    );
    this.journal.transaction(() => {
      this.journal.record(recorded);
      this.journal.advance(file.path, done, finished);
    });
    file.done = done;
    file.finished = finished;
    this.processed += outcomes.length;
    for (const o of outcomes) {
      if (o.status === 'stored') this.newVersionsSinceDrain++;
      this.sink.outcome(o);
    }
    this.batches++;
    this.options.afterBatch?.(this.batches);
    this.progress('write', this.done(), this.total);
    await this.drainAnchors(false);
    return !this.options.signal?.aborted;
  }

  /** --atomic-bundles: the whole Bundle rolled back; the rejected entry keeps its cause, the others name it. */
  private rollBack(file: FileState, records: SourceRecord[], outcomes: ResourceOutcome[]): void {
    const failed = outcomes[outcomes.length - 1]!;
    const failedAt = where(failed.position);
    for (let i = 0; i < records.length; i++) {
      if (i === outcomes.length - 1) continue;
      const record = records[i]!;
      const position = positionOf(file.path, record);
      const error = fhirError(
        'import-bundle-rolled-back',
        `not stored: ${failedAt} of the same transaction Bundle was rejected (--atomic-bundles)`,
      );
      outcomes[i] = {
        status: 'rejected',
        position,
        resourceType: record.resource?.resourceType,
        outcome: rejectionOutcome(error, position),
      };
    }
  }

  /**
   * The reference map through the cache (check and write: a target looked up for its own resource is then at hand
   * for the references to it that follow).
   */
  private readonly keys: Pick<ImportJournal, 'lookup' | 'bind'> = {
    lookup: (key) => this.lookup(key),
    bind: (key, target) => {
      const bound = this.journal.bind(key, target);
      this.keyCache.set(key, bound);
      return bound;
    },
  };

  /** journal.lookup, with the answers of recent resources kept (references repeat: the patient, the encounter). */
  private lookup(key: string): string | undefined {
    if (this.keyCache.has(key)) return this.keyCache.get(key);
    const target = this.journal.lookup(key);
    if (this.keyCache.size >= 50_000) this.keyCache.clear();
    this.keyCache.set(key, target);
    return target;
  }

  private findByIdentifier(type: string, system: string, value: string): string[] {
    const key = `${type}|${system}|${value}`;
    let targets = this.identifierCache.get(key);
    if (!targets) {
      targets = this.journal.findByIdentifier(type, system, value);
      if (this.identifierCache.size >= 50_000) this.identifierCache.clear();
      this.identifierCache.set(key, targets);
    }
    return targets;
  }

  private done(): number {
    let sum = 0;
    for (const c of Object.values(this.journal.counts())) sum += c.stored + c.unchanged + c.rejected;
    return sum;
  }

  private progress(phase: 'scan' | 'write' | 'anchor', done: number, total: number): void {
    this.sink.progress?.({ phase, done, total });
  }

  private async drainAnchors(final: boolean): Promise<void> {
    const anchors = this.options.anchors;
    if (!anchors) return;
    if (!final && this.newVersionsSinceDrain < (this.options.anchorEvery ?? 4096)) return;
    const start = performance.now();
    this.newVersionsSinceDrain = 0;
    await anchors.drain();
    this.timings.anchor += performance.now() - start;
  }

  /** One resource: its references resolved, then written through the `update` interaction. */
  private async importOne(
    file: FileState,
    record: SourceRecord,
    tx: FhirContext,
    local: Map<string, LocalStatus>,
  ): Promise<ResourceOutcome> {
    const position = positionOf(file.path, record);
    if (record.error || !record.resource)
      return {
        status: 'rejected',
        position,
        outcome: rejectionOutcome(record.error ?? fhirError('body-not-resource', 'no resource'), position),
      };
    const resource = record.resource;
    const type = resource.resourceType;
    let target: string | undefined;
    try {
      target = targetOf(record, type, resource.id, file.hash, this.keys);
      const id = target.slice(type.length + 1);
      this.prepare(resource, id);
      await this.resolveReferences(resource, this.lookupsOf(tx), local);
      const outcome = await this.put(tx, type, id, resource, position, target);
      local.set(target, 'stored');
      return outcome;
    } catch (err) {
      if (!(err instanceof FhirError)) throw err;
      if (target) local.set(target, 'rejected');
      return {
        status: 'rejected',
        position,
        resourceType: type,
        target,
        outcome: rejectionOutcome(err, position),
      };
    }
  }

  /** Consents by the chosen handling; the source's system and date kept; the target id set. */
  private prepare(resource: FhirResource, id: string, count = true): void {
    if (resource.resourceType === 'Consent') {
      if (count) this.consentsSeen++;
      if (this.consents === 'refuse')
        throw fhirError(
          'import-consent-refused',
          'Consent resources are not imported with --consents refuse (the default): choose inert or map',
        );
    }
    resource.id = id;
    const meta = (resource.meta ?? {}) as Record<string, unknown>;
    let metaChanged = false;
    if (this.options.source !== undefined && meta.source === undefined) {
      meta.source = this.options.source;
      metaChanged = true;
    }
    if (typeof meta.lastUpdated === 'string') {
      const extensions = Array.isArray(meta.extension) ? (meta.extension as Record<string, unknown>[]) : [];
      if (!extensions.some((e) => e.url === SOURCE_LAST_UPDATED_EXTENSION))
        meta.extension = [
          ...extensions,
          { url: SOURCE_LAST_UPDATED_EXTENSION, valueInstant: meta.lastUpdated },
        ];
      metaChanged = true;
    }
    if (resource.resourceType === 'Consent' && this.consents === 'inert') {
      const tags = Array.isArray(meta.tag) ? (meta.tag as Record<string, unknown>[]) : [];
      if (!tags.some((t) => t.system === INERT_CONSENT_TAG.system && t.code === INERT_CONSENT_TAG.code))
        meta.tag = [...tags, { ...INERT_CONSENT_TAG }];
      metaChanged = true;
    }
    if (metaChanged) resource.meta = meta as FhirResource['meta'];
  }

  /**
   * Every reference rewritten to the `Type/id` it resolves to, or the resource rejected with the cause. `local`
   * (the write): a reference to a rejected resource of the import rejects this one; the check leaves that to the
   * write.
   */
  private async resolveReferences(
    resource: FhirResource,
    store: StoreLookups,
    local?: Map<string, LocalStatus>,
  ): Promise<void> {
    for (const found of findReferences(resource, resource.resourceType)) {
      const kind = classifyReference(found.reference, this.options.baseUrl);
      let target: string | undefined;
      let suffix = '';
      switch (kind.kind) {
        case 'contained':
        case 'other':
          continue;
        case 'absolute':
          target = this.lookup(kind.url);
          if (!target) continue; // another server's resource: stored as given
          break;
        case 'urn':
          target = this.lookup(kind.key);
          suffix = kind.suffix;
          if (!target)
            throw fhirError(
              'import-reference-unresolved',
              `${found.path} '${found.reference}' names no resource of the import`,
              { expression: found.path },
            );
          break;
        case 'relative': {
          suffix = kind.suffix;
          const key = `${kind.type}/${kind.id}`;
          target = this.lookup(key);
          if (!target) {
            if (!(await store.exists(kind.type, kind.id)))
              throw fhirError(
                'import-reference-unresolved',
                `${found.path} '${found.reference}' resolves neither in the import nor in the store`,
                { expression: found.path },
              );
            continue;
          }
          break;
        }
        case 'conditional':
          target = await this.resolveConditional(kind.type, kind.search, found.path, found.reference, store);
          break;
      }
      if (local) this.assertNotRejected(target, found.path, found.reference, local);
      found.holder.reference = target + suffix;
    }
  }

  private async resolveConditional(
    type: string,
    search: string,
    path: string,
    reference: string,
    store: StoreLookups,
  ): Promise<string> {
    const criteria = identifierCriteria(search);
    const inImport = criteria ? this.findByIdentifier(type, criteria.system, criteria.value) : [];
    if (inImport.length > 1)
      throw fhirError(
        'conditional-multiple-matches',
        `${path} '${reference}' matches more than one ${type}`,
        {
          expression: path,
        },
      );
    if (inImport.length === 1) return inImport[0]!;
    const matches = await store.matches(type, search);
    if (matches.length > 1)
      throw fhirError(
        'conditional-multiple-matches',
        `${path} '${reference}' matches more than one ${type}`,
        {
          expression: path,
        },
      );
    if (matches.length === 0)
      throw fhirError(
        'conditional-reference-no-match',
        `${path} '${reference}' matches no ${type} in the import or the store`,
        { expression: path },
      );
    return `${type}/${matches[0]}`;
  }

  /** A reference to a resource of the import that was rejected: this one is rejected too, naming it. */
  private assertNotRejected(
    target: string,
    path: string,
    reference: string,
    local: Map<string, LocalStatus>,
  ): void {
    const status = local.get(target) ?? this.journal.target(target)?.status;
    if (status !== 'rejected') return;
    const state = this.journal.target(target);
    const at = state
      ? where(
          state.line !== null
            ? { file: state.file, line: state.line }
            : { file: state.file, entry: state.entry ?? 0 },
        )
      : 'this batch';
    throw fhirError(
      'import-reference-rejected',
      `${path} '${reference}' names ${target}, which was rejected (${at})`,
      { expression: path },
    );
  }

  /** The store lookups of a local context (read through the context's store, searches as the API's). */
  private lookupsOf(tx: FhirContext): StoreLookups {
    return {
      exists: async (type, id) => {
        const stored = await tx.store.read(type, id);
        return stored !== undefined && !stored.deleted;
      },
      matches: (type, search) => conditionalMatches(tx, type, parseQuery(search), this.options.baseUrl),
    };
  }

  /**
   * One batch to a running service. Each resource is prepared and its references resolved exactly as for a local
   * store (the journal's map, else the service), then written with PUT Type/id in `batch` Bundles. A resource that
   * names another of the same batch is sent in a later round, once that one's outcome is known: if the service
   * rejected it, this one is rejected too, naming it (never stored with a dangling reference).
   */
  private async writeRemote(
    file: FileState,
    records: SourceRecord[],
    remote: RemoteTarget,
  ): Promise<ResourceOutcome[]> {
    const outcomes: (ResourceOutcome | undefined)[] = new Array(records.length);
    const local = new Map<string, LocalStatus>();
    const targets: (string | undefined)[] = records.map((record) => {
      const resource = record.resource;
      if (record.error || !resource) return undefined;
      const target = targetOf(record, resource.resourceType, resource.id, file.hash, this.keys);
      local.set(target, 'pending');
      return target;
    });
    const reject = (i: number, err: FhirError) => {
      const record = records[i]!;
      const position = positionOf(file.path, record);
      const target = targets[i];
      if (target) local.set(target, 'rejected');
      outcomes[i] = {
        status: 'rejected',
        position,
        resourceType: record.resource?.resourceType,
        target,
        outcome: rejectionOutcome(err, position),
      };
    };
    interface Queued {
      index: number;
      write: RemoteWrite;
      /** References to resources of this batch not written yet. */
      waitsFor: { target: string; path: string; reference: string }[];
    }
    let queue: Queued[] = [];
    // Phase 1: prepare and resolve (rejections here never reach the service).
    for (const [index, record] of records.entries()) {
      const target = targets[index];
      if (!target || !record.resource) {
        reject(index, record.error ?? fhirError('body-not-resource', 'no resource'));
        continue;
      }
      const resource = record.resource;
      const type = resource.resourceType;
      try {
        const id = target.slice(type.length + 1);
        this.prepare(resource, id);
        await this.resolveReferences(resource, remote, local);
        const waitsFor = findReferences(resource, type)
          .map((found) => ({ ...found, target: found.reference.replace(/\/_history\/.*$/, '') }))
          .filter((found) => found.target !== target && local.get(found.target) === 'pending');
        queue.push({ index, write: { type, id, resource }, waitsFor });
      } catch (err) {
        if (!(err instanceof FhirError)) throw err;
        reject(index, err);
      }
    }
    // Phase 2: rounds of writes, each resource once the resources it names have their outcome.
    while (queue.length > 0) {
      const ready: Queued[] = [];
      const later: Queued[] = [];
      for (const item of queue) {
        try {
          for (const w of item.waitsFor) this.assertNotRejected(w.target, w.path, w.reference, local);
        } catch (err) {
          if (!(err instanceof FhirError)) throw err;
          reject(item.index, err);
          continue;
        }
        if (item.waitsFor.every((w) => local.get(w.target) !== 'pending')) ready.push(item);
        else later.push(item);
      }
      // A cycle of references within the batch: written together (the service sees them all at once).
      const round = ready.length > 0 ? ready : later.splice(0);
      if (round.length === 0) break;
      const results = await remote.write(round.map((item) => item.write));
      for (const [k, item] of round.entries()) {
        const result = results[k]!;
        const record = records[item.index]!;
        if (result.status === 'rejected') {
          reject(item.index, result.error);
          continue;
        }
        const target = targets[item.index]!;
        local.set(target, 'stored');
        outcomes[item.index] = {
          status: result.status,
          position: positionOf(file.path, record),
          resourceType: item.write.type,
          target,
          versionId: result.versionId,
        };
      }
      queue = later;
    }
    return outcomes.map((o) => o!);
  }

  /** PUT Type/id through the registered update interaction, as an API client's update would run. */
  private async put(
    tx: FhirContext,
    type: string,
    id: string,
    resource: FhirResource,
    position: SourcePosition,
    target: string,
  ): Promise<ResourceOutcome> {
    const handler = tx.registry?.handlerFor({ interaction: 'update', resourceType: type, id, method: 'PUT' });
    if (!handler) throw fhirError('method-not-allowed', `update of ${type} is not served`);
    // The version the interaction itself reads before writing (its target as it was): no second read here.
    let existing: StoredVersion | undefined;
    let seen = false;
    const store = Object.create(tx.store) as ResourceStore;
    store.read = async (readType, readId) => {
      const version = await tx.store.read(readType, readId);
      if (!seen && readType === type && readId === id) {
        seen = true;
        existing = version;
      }
      return version;
    };
    const request: FhirRequest = {
      interaction: 'update',
      method: 'PUT',
      resourceType: type,
      id,
      query: emptyQuery(),
      baseUrl: this.options.baseUrl,
      resource,
      preferReturn: 'minimal',
    };
    const response = await handler(request, { ...tx, store });
    const versionId = Number(/(\d+)/.exec(response.headers?.ETag ?? '')?.[1] ?? 0);
    const unchanged = existing !== undefined && !existing.deleted && existing.versionId === versionId;
    return { status: unchanged ? 'unchanged' : 'stored', position, resourceType: type, target, versionId };
  }
}

class AtomicRollback extends Error {}

/**
 * Imports `sources` (files, in this order) through `options.context`; every resource's outcome goes to `sink` after
 * its batch committed. Resumes what an earlier run of the same journal left. Throws SourceChangedError (a file
 * changed since), JournalSettingsError, or what the store throws (storage faults): the journal then still says where
 * to resume.
 */
export async function importSources(
  sources: readonly ImportSource[],
  options: ImportOptions,
  sink: ImportSink,
): Promise<ImportSummary> {
  const journal = ImportJournal.open(options.journalFile);
  try {
    return await new ImportRun(journal, options, sink).run(sources);
  } finally {
    journal.close();
  }
}

/** The rejections recorded in a journal, in source order: what the error file holds. */
export function* journalRejections(
  journalFile: string,
): IterableIterator<{ position: SourcePosition; outcome: OperationOutcome }> {
  const journal = ImportJournal.open(journalFile);
  try {
    yield* journal.rejections();
  } finally {
    journal.close();
  }
}
