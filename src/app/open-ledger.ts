/**
 * Picks the Ledger adapter the configuration names: the embedded ledger (default) or a Fabric network through
 * the Fabric Gateway (`--ledger fabric --fabric-config FILE`, docs/fabric.md).
 */
import { join } from 'node:path';
import { openEmbeddedLedger } from '../ledger/embedded/index.js';
import { loadFabricConfig } from '../ledger/fabric/config.js';
import { openFabricLedger, type LedgerLogger } from '../ledger/fabric/fabric-ledger.js';
import type { Ledger } from '../ledger/ledger.js';

export type LedgerKind = 'embedded' | 'fabric';

export interface LedgerSelection {
  ledger: LedgerKind;
  /** Required for `fabric`. */
  fabricConfig?: string;
  dataDir: string;
  /** The embedded ledger's organisation (config.mspId). */
  mspId: string;
}

export async function openConfiguredLedger(
  selection: LedgerSelection,
  logger?: LedgerLogger,
): Promise<Ledger> {
  if (selection.ledger === 'fabric') {
    if (!selection.fabricConfig) throw new Error('--ledger fabric needs --fabric-config FILE');
    const config = loadFabricConfig(selection.fabricConfig);
    logger?.info(
      {
        peer: config.peerEndpoint,
        mspId: config.mspId,
        channel: config.channel,
        chaincode: config.chaincode,
      },
      'ledger: Fabric network',
    );
    return openFabricLedger({
      config,
      checkpointPath: config.checkpointPath ?? join(selection.dataDir, 'checkpoints', 'fabric-events.json'),
      logger,
    });
  }
  return openEmbeddedLedger({
    dataDir: selection.dataDir,
    mspId: selection.mspId,
  });
}
