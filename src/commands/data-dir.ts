/**
 * Opens what the integrity commands (verify, erase) need over an existing data directory: the SQLite store
 * (`resources.sqlite`), the ledger (the embedded chain in `ledger/` with the organisation's service identity, or a
 * Fabric network with --ledger fabric --fabric-config FILE), and the
 * integrity service (HMAC key, batch journal). The anchoring worker is not started unless asked.
 */
import path from 'node:path';
import { SqliteResourceStore } from '../fhir/store/sqlite/sqlite-store.js';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import { openConfiguredLedger } from '../ledger/open-ledger.js';
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
  /** The ledger the service uses: the data directory's embedded chain (default) or a Fabric network. */
  ledger?: 'embedded' | 'fabric';
  fabricConfig?: string;
  startWorker?: boolean;
}): Promise<OpenedDataDir> {
  const store = new SqliteResourceStore({ file: path.join(options.dataDir, 'resources.sqlite') });
  let ledger: Ledger | undefined;
  try {
    await store.init();
    ledger = await openConfiguredLedger({
      ledger: options.ledger ?? 'embedded',
      fabricConfig: options.fabricConfig,
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
