/**
 * `hie-ledger migrate --database-url URL`: brings a PostgreSQL store's schema up to this version of the software and
 * exits, so an operator can migrate before starting (or upgrading) the replicas. `serve --store postgres` applies the
 * same migrations at start; either way they run under the schema's migration lock (an advisory lock), so replicas
 * starting at once never apply one twice. (SQLite applies its migrations whenever its file is opened.)
 * `--restored`: the database was just restored to an earlier point (docs/replicas.md, "Backup and restore"): also
 * starts a new key epoch, so versions written from now on never reuse a ledger key anchored after the backup.
 * Run it before any replica starts on the restored database.
 * `--from-data-dir DIR`: then copies what a single-node deployment kept in DIR's files into the tables the replicas
 * share (migrate-data-dir.ts; docs/replicas.md, "Moving a deployment to replicas"), holding DIR's lock.
 * Exit code 0 when the schema is current (and the copy done), 2 when it could not be migrated (newer than this
 * software, database unreachable), 3 when the copy conflicts with rows already in the database (nothing copied).
 */
import type { Command } from 'commander';
import { addConfigOptions, ConfigError, loadSettings, type Config } from '../config/config.js';
import { PostgresResourceStore } from '../fhir/store/postgres/postgres-store.js';
import { postgresOptions } from '../app/open-store.js';
import { copyDataDir, CopyConflictError } from './migrate-data-dir.js';
import { requireDataDir, withDataDirLock } from './data-dir.js';

export const MIGRATE_SETTINGS = ['databaseUrl', 'bulkDir'] as const;

export interface MigrateCommandOptions extends Pick<Config, 'databaseUrl' | 'bulkDir'> {
  /** The database was restored from a backup: start a new key epoch. */
  restored?: boolean;
  /** A single-node data directory whose files are copied into the shared tables. */
  fromDataDir?: string;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/** Migrates the database's store schema; returns the exit code. */
export async function runMigrate(options: MigrateCommandOptions): Promise<number> {
  const out = options.out ?? process.stdout;
  const err = options.err ?? process.stderr;
  if (!options.databaseUrl) throw new ConfigError('migrate needs --database-url URL (or HIE_DATABASE_URL)');
  const store = new PostgresResourceStore({ ...postgresOptions(options.databaseUrl), maxConnections: 1 });
  try {
    const { from, to } = await store.migrate();
    out.write(
      from === to
        ? `PostgreSQL schema "${store.schema}" is at version ${to}: nothing to apply\n`
        : `PostgreSQL schema "${store.schema}" migrated from version ${from} to ${to}\n`,
    );
    if (options.restored) {
      const epoch = await store.startKeyEpoch();
      out.write(`PostgreSQL schema "${store.schema}": restored, new versions are keyed in epoch ${epoch}\n`);
    }
    if (options.fromDataDir !== undefined) {
      const dataDir = options.fromDataDir;
      requireDataDir(dataDir);
      const counts = await withDataDirLock(dataDir, 'migrate', () =>
        copyDataDir({ pool: store.pool, schema: store.schema, dataDir, bulkDir: options.bulkDir }),
      );
      for (const count of counts)
        out.write(
          `${count.label}: ${count.read} in ${dataDir}, ${count.copied} copied` +
            (count.renumbered ? ` (${count.renumbered} under new numbers)` : '') +
            `, ${count.unchanged} already there\n`,
        );
      out.write(
        'Not copied: resources (hie-ledger import), keys (mount them into every replica), the consent ' +
          'checkpoint (a cache of the ledger, per replica: docs/replicas.md)\n',
      );
    }
    return 0;
  } catch (e) {
    if (e instanceof CopyConflictError) {
      err.write(`hie-ledger migrate: ${e.message}\n`);
      return 3;
    }
    err.write(`hie-ledger migrate: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  } finally {
    await store.close();
  }
}

export function registerMigrateCommand(program: Command): void {
  const command = program
    .command('migrate')
    .description(
      "apply the PostgreSQL store's schema migrations and exit (serve --store postgres applies them too)",
    );
  command.option(
    '--restored',
    'the database was restored from a backup: new versions get ledger keys of a new epoch (docs/replicas.md)',
  );
  command.option(
    '--from-data-dir <dir>',
    "then copy a stopped single-node data directory's participants, pseudonyms, network ids, grant index and bulk jobs into the shared tables (docs/replicas.md)",
  );
  addConfigOptions(command, MIGRATE_SETTINGS).action(async (flags: Record<string, unknown>) => {
    process.exitCode = await runMigrate({
      ...loadSettings(MIGRATE_SETTINGS, flags),
      restored: flags.restored === true,
      fromDataDir: typeof flags.fromDataDir === 'string' ? flags.fromDataDir : undefined,
    });
  });
}
