/**
 * The CLI's rules for a data directory (docs/configuration.md, "Data directory"): every command but `serve` and
 * `ledger connect` works on an existing one (a mistyped --data-dir must not become a new data directory with a CA
 * of its own); the commands that write its files hold its lock while they run (refused while the service runs).
 *
 * And what the integrity commands (verify, erase) need over an existing data directory: the SQLite store
 * (`resources.sqlite`), the ledger (the embedded chain in `ledger/` with the organisation's service identity, or a
 * Fabric network with --ledger fabric --fabric-config FILE), and the
 * integrity service (HMAC key, batch journal). The anchoring worker is not started unless asked.
 */
import { statSync } from 'node:fs';
import path from 'node:path';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import type { IntegrityOptions, IntegrityService } from '../integrity/integrity-service.js';
import type { Ledger } from '../ledger/ledger.js';
import { ConfigError, type Config } from '../config/config.js';
import { lockDataDir } from '../platform/data-dir-lock.js';

/** Whether `dataDir` is an existing directory. */
export function dataDirExists(dataDir: string): boolean {
  try {
    return statSync(dataDir).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Refuses (ConfigError: exit 2, one line) a data directory that does not exist: only `serve` and `ledger connect`
 * create one.
 */
export function requireDataDir(dataDir: string): void {
  if (!dataDirExists(dataDir))
    throw new ConfigError(
      `no data directory at ${path.resolve(dataDir)} (--data-dir or HIE_DATA_DIR, default ./data; hie-ledger serve creates one)`,
    );
}

/**
 * Runs `work` holding the data directory's lock as `command` (src/platform/data-dir-lock.ts): while another process
 * (the service) owns it, throws DataDirBusyError naming that process's pid, before anything is opened.
 */
export async function withDataDirLock<T>(
  dataDir: string,
  command: string,
  work: () => Promise<T>,
): Promise<T> {
  const lock = lockDataDir(dataDir, command);
  try {
    return await work();
  } finally {
    lock.release();
  }
}

/** The settings of the commands that open a data directory's store, ledger and integrity service. */
export const DATA_DIR_SETTINGS = [
  'dataDir',
  'mspId',
  'ledger',
  'fabricConfig',
  'store',
  'databaseUrl',
] as const;
export type DataDirConfig = Pick<Config, 'dataDir' | 'mspId' | 'ledger' | 'fabricConfig'> &
  Partial<Pick<Config, 'store' | 'databaseUrl'>>;

export interface OpenedDataDir {
  store: ResourceStore;
  ledger: Ledger;
  integrity: IntegrityService;
  close(): Promise<void>;
}

export async function openDataDirIntegrity(
  options: DataDirConfig & { startWorker?: boolean; anchoring?: IntegrityOptions['anchoring'] },
): Promise<OpenedDataDir> {
  // Loaded when used, so that commands which only check a data directory start without the store and ledger code.
  const [{ openConfiguredStore }, { openConfiguredLedger }, { openIntegrity }] = await Promise.all([
    import('../app/open-store.js'),
    import('../app/open-ledger.js'),
    import('../integrity/integrity-service.js'),
  ]);
  const store = openConfiguredStore(options);
  let ledger: Ledger | undefined;
  try {
    await store.init();
    ledger = await openConfiguredLedger(options);
    const integrity = await openIntegrity({
      dataDir: options.dataDir,
      store,
      ledger,
      anchoring: options.anchoring,
    });
    if (options.startWorker) integrity.anchorer.start();
    const opened = ledger;
    return {
      store,
      ledger: opened,
      integrity,
      async close() {
        await integrity.close();
        await opened.close();
        await store.close();
      },
    };
  } catch (err) {
    await ledger?.close();
    await store.close();
    throw err;
  }
}
