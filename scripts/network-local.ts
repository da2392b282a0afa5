/**
 * `npm run network:local [-- --dir DIR --base-port PORT --records synthea|builtin]`: a local exchange network of
 * three members and the ledger node they share (scripts/local-network.ts), running until Ctrl-C. `npm run -s network:local -- token CLIENT_ID`
 * prints a fresh access token for one of its participants (docs/exchange.md "A local network in two commands").
 */
import { writeFileSync } from 'node:fs';
import { isAbsolute, join, relative } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import {
  accessToken,
  MEMBER_KEYS,
  NETWORK_FILE,
  PROJECT_ROOT,
  readNetworkInfo,
  startLocalNetwork,
  tamperRecord,
  type MemberKey,
  type NetworkInfo,
} from './local-network.js';

const DEFAULT_DIR = '.network-local';
const DEFAULT_BASE_PORT = 8180;

function portNumber(text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65532)
    throw new InvalidArgumentError('a port number (0: any free ports)');
  return port;
}

/**
 * env.sh, for a shell: the members' base URLs, the patient's ids, `tok CLIENT_ID` (a fresh access token) and
 * `auth CLIENT_ID` (its Authorization header).
 */
function writeEnvFile(info: NetworkInfo): string {
  const file = join(info.dir, 'env.sh');
  const m = info.members;
  const lines = [
    '# source this file: the local network started by `npm run network:local` (docs/exchange.md)',
    `export A=${m.a!.fhirBase} B=${m.b!.fhirBase} C=${m.c!.fhirBase}`,
    `export PATIENT_A=${info.patient!.local.a} PATIENT_B=${info.patient!.local.b} PATIENT_C=${info.patient!.local.c}`,
    `export LEDGER_NODE=${info.ledger.fhirBase} LEDGER_GATEWAY=${info.ledger.gateway}`,
    `export NETWORK_DIR='${info.dir}'`,
    `tok() { (cd '${PROJECT_ROOT}' && node --import tsx scripts/network-local.ts token "$1" --dir "$NETWORK_DIR"); }`,
    'auth() { echo "Authorization: Bearer $(tok "$1")"; }',
    '',
  ];
  writeFileSync(file, lines.join('\n'), { mode: 0o600 });
  return file;
}

/** A path as the user would type it: relative to the working directory when under it. */
function shownPath(path: string): string {
  const under = relative(process.cwd(), path);
  return under && !under.startsWith('..') && !isAbsolute(under) ? under : path;
}

function summary(info: NetworkInfo, envFile: string): string {
  const shown = shownPath(info.dir);
  const rows = MEMBER_KEYS.map((key) => {
    const m = info.members[key]!;
    const role = key === 'a' ? 'home of the patient' : `patient linked here`;
    return `  ${m.organization.padEnd(11)} ${m.mspId.padEnd(13)} ${m.fhirBase.padEnd(28)} ${role}`;
  });
  const p = info.patient!;
  return [
    '',
    `The network is up (Ctrl-C stops it). Everything is under ${shown}/ (${NETWORK_FILE}, env.sh, logs/, participants/).`,
    ...rows,
    `  ${'Ledger node'.padEnd(11)} ${info.ledger.mspId.padEnd(13)} ${info.ledger.gateway.padEnd(28)} serves the ledger to A, B and C (pid ${info.ledger.pid})`,
    `  ONE process (the ledger node) is the whole ledger, on loopback only: for demos and tests, never production`,
    '  (production is the Fabric network of network/, docs/fabric.md). Any member may stop; the others go on.',
    '',
    'Participants: ehr-a, ehr-b, lims-c (EHR systems), patient-a (the patient, at A), dr-b (clinician, B), lab-c (lab, C).',
    `The patient: ${p.local.a} at A (${p.source}), ${p.local.b} at B, ${p.local.c} at C.`,
    '',
    'Try (docs/exchange.md, "Try it"):',
    `  source ${shownPath(envFile)}`,
    '  curl -s -H "$(auth dr-b)" "$B/\\$network-actor"',
    '  curl -s -H "$(auth patient-a)" "$A/$PATIENT_A/\\$everything"',
    '  curl -s -H "$(auth lab-c)" "$C/Observation?subject=$PATIENT_C"',
    '  curl -s -H "$(auth dr-b)" "$B/$PATIENT_B/\\$network-everything"',
    '',
  ].join('\n');
}

async function run(options: {
  dir: string;
  basePort: number;
  records?: 'synthea' | 'builtin';
  syntheaBundle?: string;
}) {
  const network = await startLocalNetwork({
    dir: options.dir,
    basePort: options.basePort,
    records: options.records,
    syntheaBundle: options.syntheaBundle,
    progress: (line) => console.log(`- ${line}`),
  });
  let stopping = false;
  for (const key of MEMBER_KEYS) {
    void network.exited[key].then((code) => {
      if (!stopping)
        console.log(
          `${network.info.members[key]!.organization} stopped (exit ${code}); the others keep running`,
        );
    });
  }
  void network.exited.ledger.then((code) => {
    if (!stopping)
      console.log(
        `the ledger node stopped (exit ${code}): the members can no longer read or write the ledger; Ctrl-C and run again`,
      );
  });
  const envFile = writeEnvFile(network.info);
  console.log(summary(network.info, envFile));
  const shutdown = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping Lab C, Hospital B, Hospital A, then the ledger node`);
    network.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

const program = new Command('network-local')
  .enablePositionalOptions()
  .description(
    'a local exchange network: hospital A, hospital B and lab C, and the ledger node they share, until Ctrl-C',
  )
  .option('--dir <dir>', 'the base directory (reused when it holds a network)', DEFAULT_DIR)
  .option(
    '--base-port <port>',
    "A's FHIR port; B and C take the next two, the served ledger the next, the ledger node's FHIR service the one after (0: any free ports)",
    portNumber,
    DEFAULT_BASE_PORT,
  )
  .option(
    '--records <kind>',
    "the home's records: synthea (default when ../shared/data/synthea-bundles exists) or builtin",
  )
  .option(
    '--synthea-bundle <file>',
    'the Synthea transaction Bundle to store at A (default: the first of the folder)',
  )
  .action(async (options: { dir: string; basePort: number; records?: string; syntheaBundle?: string }) => {
    if (options.records !== undefined && options.records !== 'synthea' && options.records !== 'builtin')
      throw new InvalidArgumentError('--records must be synthea or builtin');
    await run({ ...options, records: options.records as 'synthea' | 'builtin' | undefined });
  });

program
  .command('token <clientId>')
  .description('print a fresh access token (5 minutes) for a participant of the running network')
  .option('--dir <dir>', 'the base directory', DEFAULT_DIR)
  .action(async (clientId: string, options: { dir: string }) => {
    const info = readNetworkInfo(options.dir);
    if (!info || info.status !== 'ready') throw new Error(`no running network in ${options.dir}`);
    console.log(await accessToken(info, clientId));
  });

program
  .command('tamper <member> <reference>')
  .description(
    'alter a record (Type/id) in member a, b or c\'s store file behind its service\'s back: its first "value" number +1',
  )
  .option('--dir <dir>', 'the base directory', DEFAULT_DIR)
  .action((member: string, reference: string, options: { dir: string }) => {
    if (!(MEMBER_KEYS as readonly string[]).includes(member)) throw new Error('member must be a, b or c');
    const { version, before, after } = tamperRecord(options.dir, member as MemberKey, reference);
    console.log(`${version}: "value" ${before} -> ${after} in ${member.toUpperCase()}'s store file`);
  });

program.parseAsync().catch((error: unknown) => {
  console.error(`network:local: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
