/**
 * Opens what the integrity commands (verify, erase) need over an existing data directory: the SQLite store
 * (`resources.sqlite`), the embedded ledger (`ledger/`) with the organisation's service identity, and the
 * integrity service (HMAC key, batch journal). The anchoring worker is not started unless asked.
 */
import path from 'node:path';
import { SqliteResourceStore } from '../fhir/store/sqlite/sqlite-store.js';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import { openEmbeddedLedger } from '../ledger/embedded/index.js';
import { openIntegrity, type IntegrityService } from '../ledger/integrity-service.js';
import type { Ledger } from '../ledger/ledger.js';

export const DEFAULT_MSP_ID = 'Org1MSP';

export interface OpenedDataDir {
  store: ResourceStore;
  ledger: Ledger;
  integrity: IntegrityService;
  close(): Promise<void>;
}

export async function openDataDirIntegrity(options: {
  dataDir: string;
  mspId?: string;
  startWorker?: boolean;
}): Promise<OpenedDataDir> {
  const store = new SqliteResourceStore({ file: path.join(options.dataDir, 'resources.sqlite') });
  let ledger: Ledger | undefined;
  try {
    await store.init();
    ledger = await openEmbeddedLedger({
      dataDir: options.dataDir,
      mspId: options.mspId ?? process.env.HIE_MSP_ID ?? DEFAULT_MSP_ID,
    });
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
