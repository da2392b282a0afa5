/**
 * Replicas as separate processes share one ledger the way they would share a Fabric peer (docs/replicas.md): a
 * ledger host (`hie-ledger serve --serve-ledger`, the embedded ledger served over the Fabric Gateway protocol; an
 * embedded ledger is one process's), the organisation's identity made once with `hie-ledger ledger connect` (copied
 * to every replica's data directory: the mounted secret store), and each replica served with `--ledger fabric` on
 * it. Used by test/store/postgres-replicas.test.ts and bench/replicas.ts; each passes its own way of starting the
 * CLI (the suite's compiled CLI, or the bench's built service) and keeps the processes to stop them.
 */
import { join } from 'node:path';
import { waitForOutput, type CliProcess } from './cli-process.js';

/** Starts `hie-ledger ARGS` as a child process (the caller stops it). */
export type StartCli = (args: string[]) => CliProcess;

/** The ledger host's MSP id, and the organisation's the replicas share. */
export const LEDGER_HOST_MSP = 'LedgerHostMSP';
export const REPLICA_MSP = 'HospitalBMSP';

export interface ServedLedger {
  host: CliProcess;
  /** The Fabric Gateway address and the TLS CA file that signs it. */
  gateway: string;
  tlsCa: string;
  /** Where the host lists its members (`ledger connect` adds the organisation). */
  membersFile: string;
}

/**
 * The ledger host: `serve` with `serveArgs` (port, auth ...) in `root/ledger-host`, serving its ledger; resolved once
 * it prints both its gateway and its FHIR base (log level info or lower: these are info lines).
 */
export async function startLedgerHost(
  start: StartCli,
  root: string,
  serveArgs: readonly string[],
  timeoutMs?: number,
): Promise<ServedLedger> {
  const membersFile = join(root, 'ledger-members.json');
  const host = start([
    ...serveArgs,
    '--data-dir',
    join(root, 'ledger-host'),
    '--msp-id',
    LEDGER_HOST_MSP,
    '--serve-ledger',
    '0',
    '--ledger-members',
    membersFile,
  ]);
  const [, gateway, tlsCa] = await waitForOutput(
    host,
    /"ledgerGateway":"([^"]+)","tlsCa":"([^"]+)"/,
    timeoutMs,
  );
  await waitForOutput(host, /"fhirBase":"([^"]+)"/, timeoutMs);
  return { host, gateway: gateway!, tlsCa: tlsCa!, membersFile };
}

/**
 * `ledger connect` into `dataDir`: the organisation's identity and keys on the served ledger; the Fabric connection
 * profile it wrote (`--fabric-config` of every replica). Throws with the command's output if it fails.
 */
export async function connectToLedger(
  start: StartCli,
  ledger: ServedLedger,
  dataDir: string,
  mspId = REPLICA_MSP,
): Promise<string> {
  const connect = start([
    'ledger',
    'connect',
    '--data-dir',
    dataDir,
    '--msp-id',
    mspId,
    '--gateway',
    ledger.gateway,
    '--gateway-tls-ca',
    ledger.tlsCa,
    '--members-file',
    ledger.membersFile,
  ]);
  const code = await connect.exited;
  if (code !== 0) throw new Error(`ledger connect exited with ${code}:\n${connect.output()}`);
  return (JSON.parse(connect.output()) as { fabricConfig: string }).fabricConfig;
}

/** The `serve` arguments of a replica: on the served ledger (`fabricConfig`) and a PostgreSQL database. */
export function replicaArgs(
  serveArgs: readonly string[],
  dataDir: string,
  fabricConfig: string,
  databaseUrl: string,
  mspId = REPLICA_MSP,
): string[] {
  return [
    ...serveArgs,
    '--data-dir',
    dataDir,
    '--msp-id',
    mspId,
    '--ledger',
    'fabric',
    '--fabric-config',
    fabricConfig,
    '--store',
    'postgres',
    '--database-url',
    databaseUrl,
  ];
}
