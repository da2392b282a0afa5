/**
 * Opens what the integrity commands (verify, erase) need over an existing data directory: the SQLite store
 * (`resources.sqlite`), the ledger (the embedded chain in `ledger/` with the organisation's service identity, or a
 * Fabric network with --ledger fabric --fabric-config FILE), and the
 * integrity service (HMAC key, batch journal). The anchoring worker is not started unless asked.
 */
import path from 'node:path';
import { SqliteResourceStore } from '../fhir/store/sqlite/sqlite-store.js';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import { openConfiguredLedger } from '../app/open-ledger.js';
import { openIntegrity, type IntegrityService } from '../integrity/integrity-service.js';
import type { Ledger } from '../ledger/ledger.js';
import type { Config } from '../config/config.js';

/** The settings of the commands that open a data directory's store, ledger and integrity service. */
export const DATA_DIR_SETTINGS = ['dataDir', 'mspId', 'ledger', 'fabricConfig'] as const;
export type DataDirConfig = Pick<Config, (typeof DATA_DIR_SETTINGS)[number]>;

export interface OpenedDataDir {
  store: ResourceStore;
  ledger: Ledger;
  integrity: IntegrityService;
  close(): Promise<void>;
}

export async function openDataDirIntegrity(
  options: DataDirConfig & { startWorker?: boolean },
): Promise<OpenedDataDir> {
  const store = new SqliteResourceStore({ file: path.join(options.dataDir, 'resources.sqlite') });
  let ledger: Ledger | undefined;
  try {
    await store.init();
    ledger = await openConfiguredLedger(options);
    const integrity = await openIntegrity({ dataDir: options.dataDir, store, ledger });
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
