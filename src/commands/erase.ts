/**
 * `hie-ledger erase --data-dir DIR Patient/123 [--yes]`: erase a patient's data (docs/erasure.md).
 *
 * Targets: the named resource and, for a Patient, every resource with a version in that patient's compartment.
 * For each: its versions' salts are erased (store.eraseSalts), which makes their on-chain hashes unlinkable to any
 * data; then their content is removed (store.eraseContent, where the store adapter supports it). The chain is not
 * touched. The audit then runs: everything else must still verify (erased versions are counted, not failures).
 * Without --yes it only lists what would be erased.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { versionReference } from '../integrity/hashing.js';
import { addConfigOptions, loadSettings } from '../config/config.js';
import {
  DATA_DIR_SETTINGS,
  openDataDirIntegrity,
  type DataDirConfig,
  type OpenedDataDir,
} from './data-dir.js';
import { lockDataDir } from '../platform/data-dir-lock.js';
import { formatAuditReport } from './verify.js';
import { writeAuditReport } from '../integrity/scheduled-audit.js';

export interface EraseOptions extends DataDirConfig {
  /** `Type/id` */
  target: string;
  /** Only the named resource, not the patient's compartment. */
  only?: boolean;
  /** Really erase (otherwise: a dry run listing the targets). */
  yes?: boolean;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/**
 * Returns the exit code: 0 erased (or dry run) and the audit passes, 1 the audit fails, 2 bad input or error.
 * Throws DataDirBusyError (the CLI: one line naming the owner's pid, exit 1) while the service owns the directory.
 */
export async function runErase(options: EraseOptions): Promise<number> {
  const out = options.out ?? process.stdout;
  const err = options.err ?? process.stderr;
  const match = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(options.target);
  if (!match) {
    err.write(`hie-ledger erase: '${options.target}' is not a reference like Patient/123\n`);
    return 2;
  }
  const [, resourceType, id] = match;
  if (!existsSync(options.dataDir)) {
    err.write(`hie-ledger erase: no data directory at ${path.resolve(options.dataDir)}\n`);
    return 2;
  }
  // While the service runs this throws DataDirBusyError, naming its pid (exit 1): erase writes the store.
  const lock = lockDataDir(path.resolve(options.dataDir), 'erase');
  let opened: OpenedDataDir;
  try {
    opened = await openDataDirIntegrity({ ...options, dataDir: path.resolve(options.dataDir) });
  } catch (e) {
    lock.release();
    throw e;
  }
  try {
    const { store } = opened;
    const reference = `${resourceType}/${id}`;
    const targets = new Map<string, { resourceType: string; id: string; versions: number[] }>();
    for await (const { version } of store.allVersions()) {
      const own = version.resourceType === resourceType && version.id === id;
      const inCompartment =
        !options.only && resourceType === 'Patient' && (version.patients ?? []).includes(reference);
      if (!own && !inCompartment) continue;
      const key = `${version.resourceType}/${version.id}`;
      const entry = targets.get(key) ?? { resourceType: version.resourceType, id: version.id, versions: [] };
      entry.versions.push(version.versionId);
      targets.set(key, entry);
    }
    if (targets.size === 0) {
      err.write(`hie-ledger erase: ${reference} has no stored versions\n`);
      return 2;
    }
    for (const t of targets.values()) {
      out.write(
        `${options.yes ? 'ERASE' : 'would erase'}  ${t.resourceType}/${t.id}  (versions ${t.versions.join(', ')})\n`,
      );
    }
    if (!options.yes) {
      out.write(`Dry run: ${targets.size} resources. Run again with --yes to erase them.\n`);
      return 0;
    }
    let salts = 0;
    let contents = 0;
    for (const t of targets.values()) {
      salts += await store.eraseSalts(t.resourceType, t.id);
      if (store.eraseContent) contents += await store.eraseContent(t.resourceType, t.id);
    }
    out.write(
      `Erased the salts of ${salts} versions of ${targets.size} resources: their ledger anchors are now unlinkable.\n`,
    );
    if (store.eraseContent) out.write(`Removed the content of ${contents} versions.\n`);
    else {
      out.write(
        'WARNING: this store adapter cannot remove content (no eraseContent); the bodies of ' +
          [...targets.values()]
            .flatMap((t) => t.versions.map((v) => versionReference(t.resourceType, t.id, v)))
            .join(', ') +
          ' are still stored.\n',
      );
    }
    const report = await opened.integrity.audit();
    await writeAuditReport(path.resolve(options.dataDir), report);
    out.write(formatAuditReport(report));
    return report.ok ? 0 : 1;
  } catch (e) {
    err.write(`hie-ledger erase: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  } finally {
    await opened.close();
    lock.release();
  }
}

export function registerEraseCommand(program: Command): void {
  const command = program
    .command('erase')
    .description(
      "erase a patient's data: salts (on-chain hashes become unlinkable) and content; the chain stays intact",
    )
    .argument('<reference>', 'what to erase, e.g. Patient/123 (with its compartment)');
  addConfigOptions(command, DATA_DIR_SETTINGS)
    .option('--only', 'only this resource, not the patient compartment')
    .option('--yes', 'really erase (default: list what would be erased)')
    .action(async (target: string, opts: { only?: boolean; yes?: boolean } & Record<string, unknown>) => {
      process.exitCode = await runErase({
        ...loadSettings(DATA_DIR_SETTINGS, opts),
        target,
        only: opts.only,
        yes: opts.yes,
      });
    });
}
