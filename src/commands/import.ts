/**
 * `hie-ledger import PATH...`: bulk import of NDJSON files and Bundle files into a data directory while the service
 * is stopped (it takes the data directory's lock), through the import engine (src/bulk/import/engine.ts): every
 * resource validated, indexed, given this service's organisation as custodian and anchored exactly as an API write
 * (docs/import.md). Prints a summary by type; rejections go to an NDJSON error file (one OperationOutcome a line,
 * naming the file and line or bundle entry). Exit code 0 when everything was accepted, 1 when anything was rejected
 * (or the run was interrupted: run the same command again to resume), 2 when the import could not run.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { Option, type Command } from 'commander';
import { addConfigOptions, loadSettings, type Config } from '../config/config.js';
import type { ValidationPool } from '../fhir/validation/validation-pool.js';
import { systemsNotLoaded } from '../fhir/validation/bindings.js';
import type { ValidationResult } from '../fhir/validation/validator.js';
import type { FhirContext } from '../fhir/interactions/types.js';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import type { Ledger } from '../ledger/ledger.js';
import { discoverSources } from '../bulk/import/sources.js';
import type {
  ConsentHandling,
  ImportProgress,
  ImportSummary,
  ResourceOutcome,
} from '../bulk/import/types.js';
import { DATA_DIR_SETTINGS, openDataDirIntegrity, requireDataDir, withDataDirLock } from './data-dir.js';
import { openLoadedCodeSystems, type SqliteCodeSystems } from '../terminology/terminology-store.js';
import { RemoteImportError, RemoteService, type RemoteCredentials } from './import-remote.js';

/** The settings `import` reads: the data directory's, and those of the write path it shares with `serve`. */
export const IMPORT_SETTINGS = [
  ...DATA_DIR_SETTINGS,
  'organization',
  'validation',
  'cacheDir',
  'igPaths',
  'requiredProfiles',
  'validationLevels',
  'anchoring',
  'anchorBatchSize',
  'baseUrl',
] as const;
export type ImportSettings = Pick<Config, (typeof IMPORT_SETTINGS)[number]>;

export interface ImportCommandOptions extends ImportSettings {
  paths: string[];
  /** The journal file (default: DATA/imports/<hash of the paths>.sqlite). */
  journal?: string;
  /** The NDJSON error file (default: the journal's name with .errors.ndjson). */
  errors?: string;
  consents?: ConsentHandling;
  atomicBundles?: boolean;
  batchSize?: number;
  /** Validation worker threads of the check pass (default: the cores but one; 0: on the main thread). */
  workers?: number;
  /** meta.source for resources without one. */
  source?: string;
  /** Progress bar (default: when stderr is a terminal); plain lines otherwise. */
  progress?: boolean;
  /** Tests: SIGKILL this process after this many committed batches (a crash at a known point). */
  killAfterBatches?: number;
  /** Where that kill happens: after the batch's store commit (before its journal update) or after both. */
  killPoint?: 'store' | 'journal';
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/** Where an import's journal lives by default: one per list of paths, so running the same command resumes it. */
export function defaultJournal(dataDir: string, paths: readonly string[]): string {
  const key = createHash('sha256')
    .update(JSON.stringify(paths.map((p) => path.resolve(p))))
    .digest('hex')
    .slice(0, 16);
  return path.join(dataDir, 'imports', `import-${key}.sqlite`);
}

/** The summary: counts by type, consents, where the errors are. */
export function formatImportSummary(summary: ImportSummary, errorsFile: string, remote = false): string {
  const rows = Object.entries(summary.byType);
  const header = ['type', 'stored', 'unchanged', 'rejected'];
  const lines = rows.map(([type, c]) => [type, String(c.stored), String(c.unchanged), String(c.rejected)]);
  const total = rows.reduce(
    (t, [, c]) => ({
      stored: t.stored + c.stored,
      unchanged: t.unchanged + c.unchanged,
      rejected: t.rejected + c.rejected,
    }),
    { stored: 0, unchanged: 0, rejected: 0 },
  );
  lines.push(['total', String(total.stored), String(total.unchanged), String(total.rejected)]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const format = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [format(header), widths.map((w) => '-'.repeat(w)).join('  '), ...lines.map(format)];
  out.push(
    `Consents: --consents ${summary.consents.handling} (${summary.consents.seen} Consent resources in this run).`,
  );
  const t = summary.timings;
  const seconds = (ms: number) => (ms / 1000).toFixed(1);
  out.push(
    `This run: ${summary.processedThisRun} resources in ${seconds(t.total)} s (parse ${seconds(t.parse)}, ` +
      `validate ${seconds(t.validate)}, index ${seconds(t.index)}, store ${seconds(t.store)}, anchor ${seconds(t.anchor)}); ` +
      `peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB` +
      (t.cpu === undefined ? '.' : `; CPU ${seconds(t.cpu)} s (all threads).`),
  );
  if (!remote)
    out.push(
      `Validated once: ${summary.validationsReused} of this run's writes reused the check's verdict for the same input ` +
        `(the check validated on ${summary.validationWorkers === 0 ? 'the main thread' : `${summary.validationWorkers} worker thread${summary.validationWorkers === 1 ? '' : 's'}`}); ` +
        `${summary.indexesReused} took their index entries from the workers' extraction of the same input.`,
    );
  if (total.rejected > 0) out.push(`REJECTED: ${total.rejected} resources; the causes are in ${errorsFile}`);
  if (summary.interrupted) out.push('INTERRUPTED: run the same command again to continue where it stopped.');
  else if (total.rejected === 0) out.push('OK: every resource was accepted.');
  return out.join('\n') + '\n';
}

/** A progress bar on a terminal, a plain line every few seconds otherwise. */
function progressReporter(err: NodeJS.WritableStream, tty: boolean): (p: ImportProgress) => void {
  if (tty) {
    const bar = new cliProgress.SingleBar(
      {
        stream: err as NodeJS.WriteStream,
        format: '{phase} [{bar}] {value}/{total} resources | {rate}/s | ETA {eta_formatted}',
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    let since = Date.now();
    let from = 0;
    return (p) => {
      if (p.phase !== 'write') return;
      if (!started) {
        bar.start(p.total, p.done, { phase: 'Importing', rate: 0 });
        started = true;
        since = Date.now();
        from = p.done;
      }
      const rate = Math.round(((p.done - from) * 1000) / Math.max(1, Date.now() - since));
      bar.update(p.done, { phase: 'Importing', rate });
      if (p.done >= p.total) bar.stop();
    };
  }
  let last = 0;
  let lastDone = 0;
  return (p) => {
    const now = Date.now();
    if (p.phase !== 'write' || (now - last < 5000 && p.done < p.total)) return;
    const rate = last === 0 ? 0 : Math.round(((p.done - lastDone) * 1000) / (now - last));
    err.write(`import: ${p.done}/${p.total} resources${last === 0 ? '' : ` (${rate}/s)`}\n`);
    last = now;
    lastDone = p.done;
  };
}

/**
 * The write path's modules (the validator, the interactions, the search index, the import engine), loaded when an
 * import runs: they are most of the CLI's start-up time (about 1 s of CPU), which every other command skips.
 */
async function loadWritePath() {
  const [
    app,
    pool,
    registry,
    core,
    search,
    access,
    indexEntries,
    customParameters,
    definitions,
    engine,
    coreDefinitions,
    checkPool,
  ] = await Promise.all([
    import('../app/app.js'),
    import('../fhir/validation/validation-pool.js'),
    import('../fhir/interactions/fhir-registry.js'),
    import('../fhir/interactions/core.js'),
    import('../fhir/interactions/search.js'),
    import('../fhir/interactions/access-policy.js'),
    import('../fhir/search/index-entries.js'),
    import('../fhir/search/custom-parameters.js'),
    import('../fhir/search/definitions.js'),
    import('../bulk/import/engine.js'),
    import('../fhir/definitions/definition-registry.js'),
    import('../bulk/import/check-pool.js'),
  ]);
  return {
    coreDefinitionsCacheFile: coreDefinitions.coreDefinitionsCacheFile,
    openValidator: app.openValidator,
    validatorSpec: app.validatorSpec,
    defaultPoolSize: pool.defaultPoolSize,
    startCheckPool: checkPool.startCheckPool,
    indexWithCustomParameters: checkPool.indexWithCustomParameters,
    FhirRegistry: registry.FhirRegistry,
    registerCoreInteractions: core.registerCoreInteractions,
    registerSearch: search.registerSearch,
    OpenAccess: access.OpenAccess,
    extractIndex: indexEntries.extractIndex,
    CustomSearchParameters: customParameters.CustomSearchParameters,
    patientCompartments: definitions.patientCompartments,
    importSources: engine.importSources,
    JournalSettingsError: engine.JournalSettingsError,
    SourceChangedError: engine.SourceChangedError,
  };
}

/** Writes every rejection of the journal (earlier runs included) to the error file, one OperationOutcome a line. */
async function writeErrorFile(journal: string, file: string): Promise<void> {
  const { journalRejections } = await import('../bulk/import/engine.js');
  mkdirSync(path.dirname(file), { recursive: true });
  const out = createWriteStream(file, { mode: 0o600 });
  for (const { outcome } of journalRejections(journal)) {
    if (!out.write(JSON.stringify(outcome) + '\n'))
      await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
}

/**
 * The required bindings this run could not check because their code system is not loaded here (the validator's
 * "not loaded, not checked" information issue, docs/terminology.md): resources per code system, for the summary.
 */
function notLoadedTally(): { count: (result: ValidationResult) => void; summary: () => string } {
  const bySystem = new Map<string, number>();
  return {
    count(result) {
      const systems = new Set(result.issues.flatMap((issue) => systemsNotLoaded(issue)));
      for (const system of systems) bySystem.set(system, (bySystem.get(system) ?? 0) + 1);
    },
    summary: () =>
      [...bySystem]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(
          ([system, n]) =>
            `Not checked: CodeSystem '${system}' is not loaded on this server: the required bindings to it of ` +
            `${n} resource${n === 1 ? '' : 's'} were not checked (hie-ledger terminology load, docs/terminology.md)\n`,
        )
        .join(''),
  };
}

/**
 * The data directory's consent service (as `serve` opens it: src/access/setup.ts) and the store decorator that
 * drives the ledger's grants from Consent writes (src/consent/consent-store.ts). Its warnings (a Consent the
 * mapping cannot enforce exactly: stored, granting nothing) go to stderr with their issue code only.
 */
async function openConsentLedger(
  dataDir: string,
  ledger: Ledger,
  err: NodeJS.WritableStream,
): Promise<{ wrap: (store: ResourceStore) => ResourceStore; close: () => Promise<void> }> {
  const [{ openDataDirConsent }, { ParticipantDirectory }, { withConsentLedger }] = await Promise.all([
    import('../access/setup.js'),
    import('../access/participants.js'),
    import('../consent/consent-store.js'),
  ]);
  const line = (obj: object | string, msg?: string) =>
    err.write(
      `hie-ledger import: ${msg ?? ''}${typeof obj === 'string' ? obj : ` ${JSON.stringify(obj)}`}\n`,
    );
  const log = { warn: line, error: line };
  const participants = ParticipantDirectory.open(dataDir);
  try {
    const { consent, networkIds } = await openDataDirConsent({ dataDir, ledger, participants, log });
    return {
      wrap: (store) => withConsentLedger(store, { consent, log }),
      async close() {
        await consent.close();
        networkIds.close();
        participants.close();
      },
    };
  } catch (e) {
    participants.close();
    throw e;
  }
}

/** Runs an import into a data directory; returns the exit code. */
export async function runImport(options: ImportCommandOptions): Promise<number> {
  const out = options.out ?? process.stdout;
  const err = options.err ?? process.stderr;
  const dataDir = path.resolve(options.dataDir);
  requireDataDir(dataDir);
  const consents = options.consents ?? 'refuse';
  let sources;
  try {
    sources = discoverSources(options.paths);
  } catch (e) {
    err.write(`hie-ledger import: ${(e as Error).message}\n`);
    return 2;
  }
  const journal = path.resolve(options.journal ?? defaultJournal(dataDir, options.paths));
  const errors = path.resolve(options.errors ?? journal.replace(/\.sqlite$/, '') + '.errors.ndjson');
  mkdirSync(path.dirname(journal), { recursive: true, mode: 0o700 });
  return withDataDirLock(dataDir, 'import', async () => {
    const {
      coreDefinitionsCacheFile,
      openValidator,
      validatorSpec,
      defaultPoolSize,
      startCheckPool,
      indexWithCustomParameters,
      FhirRegistry,
      registerCoreInteractions,
      registerSearch,
      OpenAccess,
      extractIndex,
      CustomSearchParameters,
      patientCompartments,
      importSources,
      JournalSettingsError,
      SourceChangedError,
    } = await loadWritePath();
    const opened = await openDataDirIntegrity({
      dataDir,
      mspId: options.mspId,
      ledger: options.ledger,
      fabricConfig: options.fabricConfig,
      anchoring: { batchSize: options.anchorBatchSize },
    });
    const abort = new AbortController();
    const onSigint = () => {
      err.write('\nhie-ledger import: stopping after the batch in progress (run again to resume)\n');
      abort.abort();
    };
    process.on('SIGINT', onSigint);
    let pool: ValidationPool | undefined;
    let closeCustomParameters = (): void => undefined;
    let codeSystems: SqliteCodeSystems | undefined;
    let closeConsent = async (): Promise<void> => undefined;
    const notLoaded = notLoadedTally();
    try {
      // --consents map: the data directory's consent service maps each Consent as the service does (the store
      // decorator every API write goes through), its grants on the ledger when its batch has committed.
      let store = opened.store;
      if (consents === 'map') {
        const mapped = await openConsentLedger(dataDir, opened.ledger, err);
        closeConsent = mapped.close;
        store = mapped.wrap(opened.store);
      }
      // The same rules as the service's: the code systems loaded into the data directory are checked too.
      codeSystems = openLoadedCodeSystems(dataDir);
      // A worker's validator is built from plain settings, without the loaded code systems: with any loaded, the
      // check runs on this thread.
      const workers = codeSystems ? 0 : (options.workers ?? defaultPoolSize());
      // The workers build their validators while this thread builds its own, once the compact core definitions are
      // cached (DATA/cache). Without the cache, this thread's validator first: it builds them from the packages and
      // writes the cache, which the workers then read (a third of the CPU) while this thread scans the files;
      // started together, each built them from the packages and wrote the same file.
      const spec = validatorSpec({ ...options, dataDir });
      // Check workers: they validate, and extract the index entries of what they validated.
      const startPool = () => (workers > 0 ? startCheckPool(spec, workers) : undefined);
      const cacheDir = spec.kind === 'full' ? spec.options.definitionsCacheDir : undefined;
      if (cacheDir === undefined || existsSync(coreDefinitionsCacheFile(cacheDir))) pool = startPool();
      const validator = await openValidator({ ...options, dataDir }, {}, codeSystems);
      pool ??= startPool();
      const registry = registerSearch(
        registerCoreInteractions(new FhirRegistry(), {
          resourceTypes: validator.resourceTypes ?? [],
          started: new Date(),
        }),
      );
      // The custom search parameters of the store: what is imported is indexed with them too.
      const customParameters = new CustomSearchParameters(store, { warn() {} });
      await customParameters.start(0);
      closeCustomParameters = () => customParameters.close();
      // The workers index with the same parameters (the import's own writes do not change them: no refresh here).
      if (pool) indexWithCustomParameters(pool, customParameters);
      const context: FhirContext = {
        store,
        validator,
        // The importing operator acts for this service's organisation: the custodian of what it imports.
        access: new OpenAccess({
          participant: 'import',
          role: 'system',
          organization: options.organization,
          scopes: ['system/*.*'],
        }),
        log: { info() {}, warn() {}, error() {}, debug() {} },
        registry,
        indexEntries: extractIndex,
        patientsOf: patientCompartments,
        anchor: options.anchoring === false ? undefined : opened.integrity.anchorer.anchorFor,
      };
      const tty = options.progress ?? Boolean((err as NodeJS.WriteStream).isTTY);
      const progress = options.progress === false ? undefined : progressReporter(err, tty);
      const kill = options.killAfterBatches;
      const summary = await importSources(
        sources,
        {
          context,
          journalFile: journal,
          baseUrl: options.baseUrl ?? 'http://localhost/fhir',
          consents,
          atomicBundles: options.atomicBundles,
          batchSize: options.batchSize,
          validationPool: pool,
          // The workers' extractIndex with the parameters above is exactly this context's indexEntries.
          indexOnWorkers: pool !== undefined,
          source: options.source,
          anchors: options.anchoring === false ? undefined : opened.integrity.anchorer,
          anchorEvery: options.anchorBatchSize,
          signal: abort.signal,
          afterStoreCommit: kill !== undefined && options.killPoint === 'store' ? crashAt(kill) : undefined,
          afterBatch: kill !== undefined && options.killPoint !== 'store' ? crashAt(kill) : undefined,
        },
        { outcome: (_o: ResourceOutcome) => undefined, progress, validated: notLoaded.count },
      );
      await writeErrorFile(journal, errors);
      out.write(formatImportSummary(summary, errors));
      out.write(notLoaded.summary());
      const rejected = Object.values(summary.byType).some((c) => c.rejected > 0);
      return rejected || summary.interrupted ? 1 : 0;
    } catch (e) {
      if (e instanceof SourceChangedError || e instanceof JournalSettingsError) {
        err.write(`hie-ledger import: ${e.message}\n`);
        return 2;
      }
      throw e;
    } finally {
      closeCustomParameters();
      process.off('SIGINT', onSigint);
      await pool?.close();
      codeSystems?.close();
      await closeConsent();
      await opened.close();
    }
  });
}

/** Where a remote import's journal lives by default: per service URL and list of paths, in the working folder. */
export function defaultRemoteJournal(url: string, paths: readonly string[]): string {
  const key = createHash('sha256')
    .update(JSON.stringify([url, ...paths.map((p) => path.resolve(p))]))
    .digest('hex')
    .slice(0, 16);
  return path.resolve('.hie-ledger-imports', `import-${key}.sqlite`);
}

export interface RemoteImportOptions extends RemoteCredentials {
  paths: string[];
  /** The service's FHIR base URL. */
  url: string;
  journal?: string;
  errors?: string;
  consents?: ConsentHandling;
  atomicBundles?: boolean;
  /** Resources per `batch` Bundle (default 200). */
  batchSize?: number;
  source?: string;
  progress?: boolean;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/**
 * Runs an import against a running service (`--url`, src/commands/import-remote.ts); returns the exit code: 0 all
 * accepted, 1 anything rejected or interrupted, 2 the import could not run (service unreachable, token refused).
 */
export async function runRemoteImport(options: RemoteImportOptions): Promise<number> {
  const out = options.out ?? process.stdout;
  const err = options.err ?? process.stderr;
  const fail = (message: string) => {
    err.write(`hie-ledger import: ${message}\n`);
    return 2;
  };
  if (options.atomicBundles)
    return fail('--atomic-bundles is not offered with --url (each resource is its own write there)');
  // No token at all is allowed: a dev-open service wants none, and one that does answers 401 (said clearly).
  if ((options.id === undefined) !== (options.key === undefined))
    return fail('--id and --key go together (as hie-ledger token)');
  let sources;
  try {
    sources = discoverSources(options.paths);
  } catch (e) {
    return fail((e as Error).message);
  }
  const journal = path.resolve(options.journal ?? defaultRemoteJournal(options.url, options.paths));
  const errors = path.resolve(options.errors ?? journal.replace(/\.sqlite$/, '') + '.errors.ndjson');
  mkdirSync(path.dirname(journal), { recursive: true, mode: 0o700 });
  // Loaded when an import runs, as the local path's write path is (other commands start lighter).
  const { importSources, JournalSettingsError, SourceChangedError } =
    await import('../bulk/import/engine.js');
  const remote = new RemoteService(options.url, options);
  const abort = new AbortController();
  const onSigint = () => {
    err.write('\nhie-ledger import: stopping after the batch in progress (run again to resume)\n');
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    await remote.connect();
    const tty = options.progress ?? Boolean((err as NodeJS.WriteStream).isTTY);
    const progress = options.progress === false ? undefined : progressReporter(err, tty);
    const summary = await importSources(
      sources,
      {
        remote,
        journalFile: journal,
        baseUrl: options.url.replace(/\/+$/, ''),
        consents: options.consents ?? 'refuse',
        batchSize: options.batchSize ?? 200,
        source: options.source,
        signal: abort.signal,
      },
      { outcome: () => undefined, progress },
    );
    await writeErrorFile(journal, errors);
    out.write(formatImportSummary(summary, errors, true));
    const rejected = Object.values(summary.byType).some((c) => c.rejected > 0);
    return rejected || summary.interrupted ? 1 : 0;
  } catch (e) {
    if (
      e instanceof RemoteImportError ||
      e instanceof SourceChangedError ||
      e instanceof JournalSettingsError
    )
      return fail(e.message);
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Tests: a crash (SIGKILL, as power loss or the OOM killer would) once `batches` batches got there. */
function crashAt(batches: number): (n: number) => void {
  return (n) => {
    if (n >= batches) process.kill(process.pid, 'SIGKILL');
  };
}

function wholeNumber(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`'${text}' is not a whole number`);
  return n;
}

function positiveInteger(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`'${text}' is not a positive whole number`);
  return n;
}

export function registerImportCommand(program: Command): void {
  const command = program
    .command('import')
    .description(
      'bulk import NDJSON (.ndjson, .ndjson.gz) and Bundle files or folders into a data directory (service stopped) ' +
        'or a running service (--url, with a token unless it is dev-open): resource by resource, validated, indexed and anchored as API ' +
        'writes; resumable (docs/import.md)',
    )
    .argument('<paths...>', 'files or folders to import');
  addConfigOptions(command, IMPORT_SETTINGS)
    .option(
      '--journal <file>',
      "the import's journal (default DATA/imports/import-<hash of the paths>.sqlite)",
    )
    .option('--errors <file>', 'the NDJSON error file (default: beside the journal, .errors.ndjson)')
    .addOption(
      new Option('--consents <handling>', 'Consent resources: refuse, inert (stored, no grants) or map')
        .choices(['refuse', 'inert', 'map'])
        .default('refuse'),
    )
    .option('--atomic-bundles', 'a transaction Bundle file is all or nothing (default: entries independent)')
    .option('--batch-size <n>', 'resources per store transaction (default 2000)', positiveInteger)
    .option(
      '--workers <n>',
      'validation worker threads (default: the cores but one; 0: validate on the main thread)',
      wholeNumber,
    )
    .option('--source <uri>', 'meta.source for resources that have none (the source system)')
    .option('--no-progress', 'no progress bar or progress lines')
    .option(
      '--url <fhirBaseUrl>',
      'import into this running service through its API instead of a data directory',
    )
    .option('--token <token>', 'with --url: the access token (hie-ledger token)')
    .option('--id <clientId>', "with --url: the participant's client id, to get (and renew) a token")
    .option('--key <file>', "with --url: the participant's private key (key.pem of participant enroll)")
    .option('--scope <scopes>', "with --url and --id: scopes to ask for (default: the role's scopes)")
    .addOption(new Option('--kill-after-batches <n>').argParser(positiveInteger).hideHelp())
    .addOption(new Option('--kill-point <point>').choices(['store', 'journal']).hideHelp())
    .action(
      async (
        paths: string[],
        opts: {
          journal?: string;
          errors?: string;
          consents: ConsentHandling;
          atomicBundles?: boolean;
          batchSize?: number;
          workers?: number;
          source?: string;
          progress: boolean;
          killAfterBatches?: number;
          killPoint?: 'store' | 'journal';
          url?: string;
          token?: string;
          id?: string;
          key?: string;
          scope?: string;
        } & Record<string, unknown>,
      ) => {
        if (opts.url !== undefined) {
          process.exitCode = await runRemoteImport({
            paths,
            url: opts.url,
            token: opts.token,
            id: opts.id,
            key: opts.key,
            scope: opts.scope,
            journal: opts.journal,
            errors: opts.errors,
            consents: opts.consents,
            atomicBundles: opts.atomicBundles,
            batchSize: opts.batchSize,
            source: opts.source,
            progress: opts.progress === false ? false : undefined,
          });
          return;
        }
        process.exitCode = await runImport({
          ...loadSettings(IMPORT_SETTINGS, opts),
          paths,
          journal: opts.journal,
          errors: opts.errors,
          consents: opts.consents,
          atomicBundles: opts.atomicBundles,
          batchSize: opts.batchSize,
          workers: opts.workers,
          source: opts.source,
          progress: opts.progress === false ? false : undefined,
          killAfterBatches: opts.killAfterBatches,
          killPoint: opts.killPoint,
        });
      },
    );
}
