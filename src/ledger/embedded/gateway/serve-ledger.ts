/**
 * `hie-ledger serve --serve-ledger PORT`: the embedded ledger served to other members over the Fabric Gateway
 * protocol on loopback, for a local network of several members on one machine (development, demos, CI). One
 * process is then the whole network: its operator can rewrite the chain, and it runs one peer and no orderer.
 * Never for production (that is the Fabric network of network/, docs/fabric.md).
 *
 * Admitted: this organisation (its embedded CA) and the members of `--ledger-members FILE` (members-file.ts),
 * on the gateway (signature and certificate checks) and on the chain (the chaincode's ctx.clientIdentity is the
 * member's). The data directory keeps the gateway's TLS CA and certificate and its peer identity
 * (`ledger/gateway/`).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mkdirPrivate, PRIVATE_FILE_MODE } from '../../../platform/private-files.js';
import { EmbeddedCa } from '../../identity/embedded-ca.js';
import type { Ledger } from '../../ledger.js';
import { EmbeddedLedger } from '../embedded-ledger.js';
import { EmbeddedChainBackend } from './embedded-backend.js';
import { GatewayServer, type GatewayLogger } from './gateway-server.js';
import { MemberMsps, type MemberMsp } from './member-msps.js';
import { loadLedgerMembers } from './members-file.js';
import { gatewayTlsPaths, loadGatewayTls } from './server-tls.js';

/** The chaincode name members configure (the embedded chain runs one chaincode). */
export const SERVED_CHAINCODE = 'hie';

export interface ServeLedgerOptions {
  dataDir: string;
  /** This organisation's MSP id (its embedded CA). */
  mspId: string;
  /** A loopback address (default 127.0.0.1). */
  host?: string;
  /** TCP port (0: a free one). */
  port: number;
  /** `--ledger-members FILE`: the other members' MSP ids and CA certificates. */
  membersFile?: string;
  log: GatewayLogger & { info(obj: object, msg?: string): void };
}

export interface ServedLedger {
  /** 127.0.0.1:PORT */
  address: string;
  /** The TLS CA certificate members trust. */
  tlsCaPath: string;
  /** The MSP ids admitted at start. */
  members: string[];
  close(): Promise<void>;
}

export async function serveEmbeddedLedger(
  ledger: Ledger,
  options: ServeLedgerOptions,
): Promise<ServedLedger> {
  if (!(ledger instanceof EmbeddedLedger)) {
    throw new Error('--serve-ledger serves the embedded ledger only (not --ledger fabric)');
  }
  const chain = ledger.embeddedChain;
  const ca = await EmbeddedCa.open(join(options.dataDir, 'identity', 'ca'), { mspId: options.mspId });
  const own: MemberMsp = { mspId: options.mspId, caCertificates: [ca.certificate] };
  const membersFile = options.membersFile;
  let loadedVersion = membersFile ? fileVersion(membersFile) : '';
  const members: MemberMsp[] = membersFile ? loadMembers(membersFile, options.mspId) : [];
  for (const member of members)
    chain.addMsp({ mspId: member.mspId, rootCertificates: [...member.caCertificates] });
  // A request of an MSP not admitted re-reads the members file if it changed: members join without a restart.
  const admitted: MemberMsps = new MemberMsps([own, ...members], () => {
    if (!membersFile || fileVersion(membersFile) === loadedVersion) return false;
    loadedVersion = fileVersion(membersFile);
    let current: MemberMsp[];
    try {
      current = loadMembers(membersFile, options.mspId);
    } catch (error) {
      options.log.error(
        { err: error },
        'ledger gateway: the members file is invalid; the admitted members stay',
      );
      return false;
    }
    for (const member of current) {
      chain.addMsp({ mspId: member.mspId, rootCertificates: [...member.caCertificates] });
      admitted.admit(member);
    }
    options.log.info({ members: admitted.mspIds }, 'ledger gateway: members file re-read');
    return true;
  });
  const tls = await loadGatewayTls(options.dataDir);
  const peerIdentity = await gatewayPeerIdentity(ca, join(gatewayTlsPaths(options.dataDir).dir, 'peer'));
  const server = new GatewayServer({
    backend: new EmbeddedChainBackend(chain, SERVED_CHAINCODE),
    tls,
    channel: chain.channelId,
    members: admitted,
    peerIdentity: { mspId: options.mspId, ...peerIdentity },
    host: options.host ?? '127.0.0.1',
    port: options.port,
    log: options.log,
  });
  await server.start();
  const memberIds = admitted.mspIds;
  options.log.warn(
    { ledgerGateway: server.address, tlsCa: tls.caCertificatePath, members: memberIds },
    'ledger gateway: this process serves its embedded ledger to other members on loopback: it is then the WHOLE network (one peer, no orderer, its operator can rewrite the chain). For demos and tests only, never production (docs/ledger.md)',
  );
  return {
    address: server.address,
    tlsCaPath: tls.caCertificatePath,
    members: memberIds,
    close: () => server.close(),
  };
}

/** The endorsing peer's identity (OU peer, from this organisation's CA), enrolled once and kept in `dir`. */
async function gatewayPeerIdentity(
  ca: EmbeddedCa,
  dir: string,
): Promise<{ certificate: string; privateKey: string }> {
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  if (existsSync(certPath) && existsSync(keyPath)) {
    return { certificate: readFileSync(certPath, 'utf8'), privateKey: readFileSync(keyPath, 'utf8') };
  }
  mkdirPrivate(dir);
  const enrollment = await ca.enroll({
    enrollmentId: `peer-${randomBytes(6).toString('hex')}`,
    attrs: {},
    nodeOu: 'peer',
  });
  for (const [path, data] of [
    [keyPath, enrollment.privateKey],
    [certPath, enrollment.certificate],
  ] as const) {
    writeFileSync(`${path}.tmp`, data, { mode: PRIVATE_FILE_MODE });
    renameSync(`${path}.tmp`, path);
  }
  return { certificate: enrollment.certificate, privateKey: enrollment.privateKey };
}

function loadMembers(file: string, ownMspId: string): MemberMsp[] {
  // No file yet: no other member so far (`hie-ledger ledger connect --members-file` creates it).
  if (!existsSync(file)) return [];
  const members = loadLedgerMembers(file);
  if (members.some((member) => member.mspId === ownMspId)) {
    throw new Error(`${file} lists ${ownMspId}, this organisation: it is admitted already`);
  }
  return members;
}

/** Size and modification time: what tells a changed file (absent: ''). */
function fileVersion(file: string): string {
  try {
    const stat = statSync(file);
    return `${stat.size}:${stat.mtimeMs}`;
  } catch {
    return '';
  }
}
