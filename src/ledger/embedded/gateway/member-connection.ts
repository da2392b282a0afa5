/**
 * `hie-ledger ledger connect`: a member's connection to a served embedded ledger (serve-ledger.ts), written as
 * the Fabric adapter's `--fabric-config` file (src/ledger/fabric/config.ts), so the member runs with
 * `--ledger fabric` against it. The member's identity is its own: its service identity from its own embedded
 * CA (the same one its embedded ledger would use, `identity/service/`), under its own MSP id; the private key
 * never leaves its data directory. The member's CA certificate is what the serving ledger must admit.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import * as x509 from '@peculiar/x509';
import { mkdirPrivate } from '../../../platform/private-files.js';
import { loadFabricConfig, type FabricConfig } from '../../fabric/config.js';
import { EmbeddedCa } from '../../identity/embedded-ca.js';
import { DEFAULT_CHANNEL } from '../chain.js';
import { serviceIdentity } from '../index.js';
import { isLoopbackHost } from './gateway-server.js';
import type { LedgerMemberEntry } from './members-file.js';
import { SERVED_CHAINCODE } from './serve-ledger.js';

export interface MemberConnectionOptions {
  /** The member's data directory (its embedded CA and service identity). */
  dataDir: string;
  mspId: string;
  /** The served ledger's address, host:port on loopback (its log line `ledgerGateway`). */
  gateway: string;
  /** The served ledger's TLS CA certificate file (its `ledger/gateway/tls-ca.pem`). */
  gatewayTlsCa: string;
  /** Where to write the connection file; default DIR/ledger/fabric-connection.json. */
  out?: string;
}

export interface MemberConnection {
  configPath: string;
  config: FabricConfig;
  /** The entry the serving ledger's members file needs (members-file.ts). */
  member: LedgerMemberEntry;
}

export async function writeMemberConnection(options: MemberConnectionOptions): Promise<MemberConnection> {
  const match = /^(\[[0-9a-fA-F:]+\]|[^\s:/]+):(\d{1,5})$/.exec(options.gateway);
  if (!match || Number(match[2]) === 0 || Number(match[2]) > 65535) {
    throw new Error(`--gateway must be host:port, got ${JSON.stringify(options.gateway)}`);
  }
  if (!isLoopbackHost(match[1]!)) {
    throw new Error(
      `--gateway must be a loopback address (a served embedded ledger is local only), got ${match[1]}`,
    );
  }
  let tlsCa: string;
  try {
    tlsCa = readFileSync(options.gatewayTlsCa, 'utf8');
    new X509Certificate(tlsCa);
  } catch (error) {
    throw new Error(
      `--gateway-tls-ca ${options.gatewayTlsCa}: not a readable PEM certificate (${(error as Error).message})`,
    );
  }
  const identityDir = join(options.dataDir, 'identity');
  mkdirPrivate(identityDir);
  const ca = await EmbeddedCa.open(join(identityDir, 'ca'), { mspId: options.mspId });
  const caOrganisation = new x509.X509Certificate(ca.certificate).subjectName.getField('O')[0];
  if (caOrganisation !== options.mspId) {
    throw new Error(
      `the CA in ${join(identityDir, 'ca')} belongs to ${caOrganisation}, not ${options.mspId}`,
    );
  }
  const service = join(identityDir, 'service');
  await serviceIdentity(ca, service);

  const ledgerDir = join(options.dataDir, 'ledger');
  mkdirPrivate(ledgerDir);
  const tlsCaPath = join(ledgerDir, 'gateway-tls-ca.pem');
  writeAtomically(tlsCaPath, tlsCa);
  const configPath = resolve(options.out ?? join(ledgerDir, 'fabric-connection.json'));
  mkdirPrivate(dirname(configPath));
  const file = {
    peerEndpoint: options.gateway,
    // The gateway's certificate names localhost (and the loopback addresses): TLS checks the name.
    hostAlias: 'localhost',
    tlsRootCertPath: tlsCaPath,
    mspId: options.mspId,
    channel: DEFAULT_CHANNEL,
    chaincode: SERVED_CHAINCODE,
    identity: { certPath: join(service, 'cert.pem'), keyPath: join(service, 'key.pem') },
  };
  writeAtomically(configPath, `${JSON.stringify(file, null, 2)}\n`);
  return {
    configPath,
    config: loadFabricConfig(configPath),
    member: { mspId: options.mspId, caCertificate: ca.certificate },
  };
}

function writeAtomically(path: string, data: string): void {
  writeFileSync(`${path}.tmp`, data, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}
