/**
 * `hie-ledger terminology load --system loinc|snomed|rxnorm|icd10cm|cvx PATH`: loads a code system from its
 * owner's distribution files into the data directory's terminology store (DATA/terminology.sqlite, see
 * docs/terminology.md) while the service is stopped (it takes the data directory's lock, as the other commands that
 * write a data directory do). A load replaces what was loaded for that system before, all or nothing; the service
 * uses it from its next start. `hie-ledger terminology list` prints what is loaded.
 * Exit code 0 loaded, 2 when it could not (no data directory, files not in the owner's format).
 */
import path from 'node:path';
import { Option, type Command } from 'commander';
import { addConfigOptions, loadSettings, type Config } from '../config/config.js';
import { requireDataDir, withDataDirLock } from './data-dir.js';
import {
  isSystemName,
  loadCodeSystem,
  SYSTEMS,
  TerminologyFormatError,
  type SystemName,
} from '../terminology/loaders.js';
import { SqliteCodeSystems, terminologyFile, TerminologyWriter } from '../terminology/terminology-store.js';

export const TERMINOLOGY_SETTINGS = ['dataDir'] as const;

export interface TerminologyLoadOptions extends Pick<Config, 'dataDir'> {
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
  return withDataDirLock(dataDir, 'terminology load', async () => {
    const writer = new TerminologyWriter(terminologyFile(dataDir));
    try {
      const result = await loadCodeSystem(system, path.resolve(options.path), writer);
      out.write(
        `Loaded ${result.name} (${result.url}${result.version ? `, version ${result.version}` : ''}): ` +
          `${result.count} concepts from ${result.files.join(', ')}\n`,
      );
      return 0;
    } catch (e) {
      if (e instanceof TerminologyFormatError || isNotFound(e)) {
        err.write(`hie-ledger terminology load: ${(e as Error).message}\n`);
        return 2;
      }
      throw e;
    } finally {
      writer.close();
    }
  });
}

function isNotFound(e: unknown): boolean {
  return e instanceof Error && (e as NodeJS.ErrnoException).code === 'ENOENT';
}

/** Prints the loaded code systems; returns the exit code. */
export function runTerminologyList(
  options: Pick<Config, 'dataDir'> & { out?: NodeJS.WritableStream },
): number {
  const out = options.out ?? process.stdout;
  const dataDir = path.resolve(options.dataDir);
  requireDataDir(dataDir);
  const loaded = SqliteCodeSystems.openIfPresent(terminologyFile(dataDir));
  if (!loaded) {
    out.write('No code systems loaded (hie-ledger terminology load --system ... PATH)\n');
    return 0;
  }
  try {
    for (const s of loaded.systems())
      out.write(`${s.name}\t${s.url}\t${s.version ?? '-'}\t${s.count} concepts\n`);
    return 0;
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
  addConfigOptions(list, TERMINOLOGY_SETTINGS).action((opts: Record<string, unknown>) => {
    process.exitCode = runTerminologyList(loadSettings(TERMINOLOGY_SETTINGS, opts));
  });
}
