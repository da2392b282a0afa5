/**
 * `hie-ledger terminology load --system loinc|snomed|rxnorm|icd10cm|cvx PATH`: loads a code system from its
 * owner's distribution files into the terminology store (docs/terminology.md). With the SQLite store that is the
 * data directory's DATA/terminology.sqlite, written while the service is stopped (the command takes the data
 * directory's lock, as the other commands that write a data directory do). With `--store postgres` it is the
 * database, loaded once for every replica: the files are read into a scratch file in the data directory, then
 * copied in one transaction. A load replaces what was loaded for that system before, all or nothing; the service
 * uses it from its next start. `hie-ledger terminology list` prints what is loaded.
 * Exit code 0 loaded, 2 when it could not (no data directory, files not in the owner's format).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { addConfigOptions, ConfigError, loadSettings, type Config } from '../config/config.js';
import { requireDataDir, withDataDirLock } from './data-dir.js';
import {
  isSystemName,
  loadCodeSystem,
  SYSTEMS,
  TerminologyFormatError,
  type SystemName,
} from '../terminology/loaders.js';
import { SqliteCodeSystems, terminologyFile, TerminologyWriter } from '../terminology/terminology-store.js';
import { copySystemToPostgres, listPostgresSystems } from '../terminology/postgres-code-systems.js';
import { PostgresResourceStore } from '../fhir/store/postgres/postgres-store.js';
import { postgresOptions } from '../app/open-store.js';
import type { LoadedSystemInfo } from '../fhir/terminology-port.js';

export const TERMINOLOGY_SETTINGS = ['dataDir', 'store', 'databaseUrl'] as const;

type TerminologySettings = Pick<Config, 'dataDir'> & Partial<Pick<Config, 'store' | 'databaseUrl'>>;

export interface TerminologyLoadOptions extends TerminologySettings {
  system: string;
  path: string;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/** Loads one code system; returns the exit code. Throws DataDirBusyError while the service owns the directory. */
export async function runTerminologyLoad(options: TerminologyLoadOptions): Promise<number> {
  const out = options.out ?? process.stdout;
  const err = options.err ?? process.stderr;
  if (!isSystemName(options.system)) {
    err.write(
      `hie-ledger terminology load: --system takes ${Object.keys(SYSTEMS).join(', ')}, not '${options.system}'\n`,
    );
    return 2;
  }
  const system: SystemName = options.system;
  const dataDir = path.resolve(options.dataDir);
  requireDataDir(dataDir);
  const report = (result: { name: string; url: string; version?: string; count: number; files: string[] }) =>
    out.write(
      `Loaded ${result.name} (${result.url}${result.version ? `, version ${result.version}` : ''}): ` +
        `${result.count} concepts from ${result.files.join(', ')}\n`,
    );
  const refused = (e: unknown): number => {
    if (e instanceof TerminologyFormatError || isNotFound(e)) {
      err.write(`hie-ledger terminology load: ${(e as Error).message}\n`);
      return 2;
    }
    throw e;
  };
  if (options.store === 'postgres') return loadIntoPostgres(options, system, dataDir, report, refused);
  return withDataDirLock(dataDir, 'terminology load', async () => {
    const writer = new TerminologyWriter(terminologyFile(dataDir));
    try {
      report(await loadCodeSystem(system, path.resolve(options.path), writer));
      return 0;
    } catch (e) {
      return refused(e);
    } finally {
      writer.close();
    }
  });
}

/**
 * `--store postgres`: the files read into a scratch SQLite file (in the data directory, removed after), then copied
 * to the database in one transaction (the schema migrated first). The replicas may be running: the data directory
 * is not locked, and the database's copy is replaced all at once.
 */
async function loadIntoPostgres(
  options: TerminologyLoadOptions,
  system: SystemName,
  dataDir: string,
  report: (result: { name: string; url: string; version?: string; count: number; files: string[] }) => void,
  refused: (e: unknown) => number,
): Promise<number> {
  if (!options.databaseUrl)
    throw new ConfigError('--store postgres needs --database-url URL (or HIE_DATABASE_URL)');
  const scratchDir = mkdtempSync(path.join(dataDir, 'terminology-load-'));
  const scratchFile = path.join(scratchDir, 'scratch.sqlite');
  const store = new PostgresResourceStore({ ...postgresOptions(options.databaseUrl), maxConnections: 1 });
  try {
    const writer = new TerminologyWriter(scratchFile);
    let result;
    try {
      result = await loadCodeSystem(system, path.resolve(options.path), writer);
    } catch (e) {
      return refused(e);
    } finally {
      writer.close();
    }
    await store.migrate();
    await copySystemToPostgres(store.pool, store.schema, scratchFile, result.url);
    report(result);
    return 0;
  } finally {
    await store.close();
    rmSync(scratchDir, { recursive: true, force: true });
  }
}

function isNotFound(e: unknown): boolean {
  return e instanceof Error && (e as NodeJS.ErrnoException).code === 'ENOENT';
}

/** Prints the loaded code systems (the database's with `--store postgres`); returns the exit code. */
export async function runTerminologyList(
  options: TerminologySettings & { out?: NodeJS.WritableStream },
): Promise<number> {
  const out = options.out ?? process.stdout;
  const systems = await loadedSystems(options);
  if (systems.length === 0) {
    out.write('No code systems loaded (hie-ledger terminology load --system ... PATH)\n');
    return 0;
  }
  for (const s of systems) out.write(`${s.name}\t${s.url}\t${s.version ?? '-'}\t${s.count} concepts\n`);
  return 0;
}

async function loadedSystems(options: TerminologySettings): Promise<LoadedSystemInfo[]> {
  if (options.store === 'postgres') {
    if (!options.databaseUrl)
      throw new ConfigError('--store postgres needs --database-url URL (or HIE_DATABASE_URL)');
    const store = new PostgresResourceStore({ ...postgresOptions(options.databaseUrl), maxConnections: 1 });
    try {
      await store.migrate();
      return await listPostgresSystems(store.pool, store.schema);
    } finally {
      await store.close();
    }
  }
  const dataDir = path.resolve(options.dataDir);
  requireDataDir(dataDir);
  const loaded = SqliteCodeSystems.openIfPresent(terminologyFile(dataDir));
  if (!loaded) return [];
  try {
    return loaded.systems();
  } finally {
    loaded.close();
  }
}

export function registerTerminologyCommand(program: Command): void {
  const terminology = program
    .command('terminology')
    .description("the code systems loaded from their owners' files (docs/terminology.md)");
  const load = terminology
    .command('load')
    .description(
      "load a code system from its owner's distribution files into the data directory (service stopped); " +
        'replaces what was loaded for it before',
    )
    .argument('<path>', 'the file or the folder of the release (e.g. the unzipped LOINC or RF2 release)')
    .addOption(
      new Option('--system <system>', 'the code system').choices(Object.keys(SYSTEMS)).makeOptionMandatory(),
    );
  addConfigOptions(load, TERMINOLOGY_SETTINGS).action(
    async (target: string, opts: { system: string } & Record<string, unknown>) => {
      process.exitCode = await runTerminologyLoad({
        ...loadSettings(TERMINOLOGY_SETTINGS, opts),
        system: opts.system,
        path: target,
      });
    },
  );
  const list = terminology.command('list').description('list the loaded code systems');
  addConfigOptions(list, TERMINOLOGY_SETTINGS).action(async (opts: Record<string, unknown>) => {
    process.exitCode = await runTerminologyList(loadSettings(TERMINOLOGY_SETTINGS, opts));
  });
}
