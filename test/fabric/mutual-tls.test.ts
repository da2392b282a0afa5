/**
 * TLS to the peer on the Fabric path, against the project's Gateway test server over real gRPC TLS: the server
 * name override (`hostAlias`) and mutual TLS (`clientTls`) for a peer that requires client certificates
 * (`peer.tls.clientAuthRequired`). Without the client certificate the handshake is refused; with it the adapter
 * evaluates and submits.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openFabricLedger, type FabricLedger } from '../../src/ledger/fabric/fabric-ledger.js';
import { loadFabricConfig, type FabricConfig } from '../../src/ledger/fabric/config.js';
import { writeFileSync } from 'node:fs';
import { startFabricHarness, type FabricHarness } from './support/harness.js';

const harnesses: FabricHarness[] = [];
const ledgers: FabricLedger[] = [];
afterEach(async () => {
  for (const ledger of ledgers.splice(0)) await ledger.close();
  for (const harness of harnesses.splice(0)) await harness.close();
});

async function start(mutualTls: boolean): Promise<FabricHarness> {
  const harness = await startFabricHarness({ mutualTls });
  harnesses.push(harness);
  return harness;
}

function open(config: FabricConfig): FabricLedger {
  const ledger = openFabricLedger({
    config: { ...config, timeouts: { ...config.timeouts, evaluateMs: 2_000 } },
    retry: { attempts: 1, initialDelayMs: 10, maxDelayMs: 10 },
    logger: { info: () => {}, warn: () => {}, error: () => {} },
  });
  ledgers.push(ledger);
  return ledger;
}

describe('TLS to the peer', () => {
  it('reads clientTls from the --fabric-config file, paths relative to it', async () => {
    const harness = await start(true);
    const base = harness.config();
    const file = join(harness.dir, 'connection.json');
    writeFileSync(
      file,
      JSON.stringify({
        peerEndpoint: base.peerEndpoint,
        hostAlias: base.hostAlias,
        tlsRootCertPath: 'tls-ca.pem',
        clientTls: { certPath: 'tls-client.pem', keyPath: 'tls-client-key.pem' },
        mspId: base.mspId,
        channel: base.channel,
        chaincode: base.chaincode,
        identity: base.identity,
      }),
    );
    const config = loadFabricConfig(file);
    expect(config.clientTls).toEqual({
      certPath: join(harness.dir, 'tls-client.pem'),
      keyPath: join(harness.dir, 'tls-client-key.pem'),
    });
  });

  it('connects with mutual TLS when the peer requires client certificates, and is refused without one', async () => {
    const harness = await start(true);
    const config = harness.config();

    const withoutClientCertificate = open(config);
    await expect(withoutClientCertificate.height()).rejects.toThrow();

    const mutual = open({
      ...config,
      clientTls: {
        certPath: join(harness.dir, 'tls-client.pem'),
        keyPath: join(harness.dir, 'tls-client-key.pem'),
      },
    });
    expect(await mutual.height()).toBeGreaterThanOrEqual(1);
    const committed = await mutual.submit('anchor:AnchorVersion', ['b'.repeat(64), 'a'.repeat(64)]);
    expect(harness.server.committed).toContain(committed.transactionId);
  });

  it('verifies the peer certificate against the TLS root and the server name override', async () => {
    const harness = await start(false);
    const config = harness.config();
    // The certificate names only the host alias: without the override the name check fails.
    const noAlias = open({ ...config, hostAlias: undefined });
    await expect(noAlias.height()).rejects.toThrow();
    // A client certificate offered to a peer that does not ask for one is harmless.
    const ledger = open({
      ...config,
      clientTls: {
        certPath: join(harness.dir, 'tls-client.pem'),
        keyPath: join(harness.dir, 'tls-client-key.pem'),
      },
    });
    expect(await ledger.height()).toBeGreaterThanOrEqual(1);
  });
});
