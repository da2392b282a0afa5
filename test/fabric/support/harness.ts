/**
 * A one-organisation "Fabric network" for tests: the embedded chain behind the ledger gateway (TLS, host
 * alias; with fault injection), an embedded CA issuing the service, peer and other identities, and FabricLedger adapters connected to
 * it through the real @hyperledger/fabric-gateway client.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedChain } from '../../../src/ledger/embedded/index.js';
import { parseFabricConfig, type FabricConfig } from '../../../src/ledger/fabric/config.js';
import {
  openFabricLedger,
  type FabricLedger,
  type LedgerClock,
  type LedgerLogger,
  type RetryPolicy,
} from '../../../src/ledger/fabric/fabric-ledger.js';
import { EmbeddedCa } from '../../../src/ledger/identity/embedded-ca.js';
import { EmbeddedChainBackend } from '../../../src/ledger/embedded/gateway/embedded-backend.js';
import { FaultyGateway } from './faulty-gateway.js';
import { createTestTls, type TestTls } from './tls.js';

export const MSP_ID = 'Hospital1MSP';
export const CHANNEL = 'hie';
export const CHAINCODE = 'hie';
export const HOST_ALIAS = 'peer0.hospital1.hie.example.com';

export interface LogLine {
  level: 'info' | 'warn' | 'error';
  msg: string;
  obj: object;
}

export interface Identity {
  certificate: string;
  privateKey: string;
}

export interface FabricHarness {
  dir: string;
  ca: EmbeddedCa;
  chain: EmbeddedChain;
  server: FaultyGateway;
  /** The gateway's TLS CA, server and client certificates (files in `dir`: tls-ca.pem, tls-client*.pem). */
  tls: TestTls;
  service: Identity;
  logs: LogLine[];
  /** A FabricLedger adapter for `identity` (default: the service identity). */
  connect(options?: {
    identity?: Identity;
    retry?: Partial<RetryPolicy>;
    checkpointPath?: string;
    timeouts?: Partial<FabricConfig['timeouts']>;
    clock?: LedgerClock;
  }): FabricLedger;
  config(identity?: Identity): FabricConfig;
  close(): Promise<void>;
}

/** `mutualTls`: the gateway requires a client certificate issued by its TLS CA (a peer's clientAuthRequired). */
export async function startFabricHarness(options: { mutualTls?: boolean } = {}): Promise<FabricHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'hie-fabric-'));
  const ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: MSP_ID });
  const service = await ca.enroll({
    enrollmentId: 'svc-test',
    attrs: { 'hie.role': 'service', 'hie.id': 'svc-test' },
  });
  const peer = await ca.enroll({ enrollmentId: 'peer0', attrs: {}, nodeOu: 'peer' });
  const chain = await EmbeddedChain.open({
    file: join(dir, 'chain.sqlite'),
    channelId: CHANNEL,
    maxBlockTransactions: 50,
    msps: [{ mspId: MSP_ID, rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
  });
  const tls = await createTestTls(HOST_ALIAS);
  const server = new FaultyGateway({
    backend: new EmbeddedChainBackend(chain, CHAINCODE),
    tls: options.mutualTls ? { ...tls, clientCaCertificate: tls.caCertificate } : tls,
    channel: CHANNEL,
    members: [{ mspId: MSP_ID, caCertificates: [ca.certificate] }],
    peerIdentity: { mspId: MSP_ID, certificate: peer.certificate, privateKey: peer.privateKey },
    peerAddress: `${HOST_ALIAS}:7051`,
  });
  await server.start();
  writeFileSync(join(dir, 'tls-ca.pem'), tls.caCertificate);
  writeFileSync(join(dir, 'tls-client.pem'), tls.clientCertificate);
  writeFileSync(join(dir, 'tls-client-key.pem'), tls.clientKey, { mode: 0o600 });

  const logs: LogLine[] = [];
  const logger: LedgerLogger = {
    info: (obj, msg) => logs.push({ level: 'info', msg: msg ?? '', obj }),
    warn: (obj, msg) => logs.push({ level: 'warn', msg: msg ?? '', obj }),
    error: (obj, msg) => logs.push({ level: 'error', msg: msg ?? '', obj }),
  };
  const ledgers: FabricLedger[] = [];
  let identities = 0;

  const config = (identity: Identity = service): FabricConfig => {
    const name = `identity-${identities++}`;
    writeFileSync(join(dir, `${name}-cert.pem`), identity.certificate);
    writeFileSync(join(dir, `${name}-key.pem`), identity.privateKey, { mode: 0o600 });
    return parseFabricConfig(
      {
        peerEndpoint: server.address,
        hostAlias: HOST_ALIAS,
        tlsRootCertPath: 'tls-ca.pem',
        mspId: MSP_ID,
        channel: CHANNEL,
        chaincode: CHAINCODE,
        identity: { certPath: `${name}-cert.pem`, keyPath: `${name}-key.pem` },
        checkpointPath: 'checkpoints/fabric-events.json',
      },
      'test',
      dir,
    );
  };

  return {
    dir,
    ca,
    chain,
    server,
    tls,
    service,
    logs,
    config,
    connect(options = {}) {
      const base = config(options.identity);
      const ledger = openFabricLedger({
        config: { ...base, timeouts: { ...base.timeouts, ...options.timeouts } },
        checkpointPath: options.checkpointPath,
        logger,
        retry: { initialDelayMs: 20, maxDelayMs: 200, ...options.retry },
        clock: options.clock,
      });
      ledgers.push(ledger);
      return ledger;
    },
    async close() {
      for (const ledger of ledgers) await ledger.close();
      await server.close();
      await chain.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
