/**
 * A local exchange network on this machine (`npm run network:local`, docs/exchange.md "A local network in two
 * commands"): the network's ledger node, a `hie-ledger serve --serve-ledger` of its own organisation
 * (`NetworkOpsMSP`), serves its embedded ledger to the members; hospital A, hospital B and lab C connect to it
 * (`ledger connect`, `serve --ledger fabric`). Four separate `hie-ledger serve` processes on loopback ports, SMART
 * authentication, `--network-local on`. Then, with the CLI as an operator runs it (`participant enroll` before
 * each member's service starts, `member register`) and the FHIR API as the participants use it: a patient at home
 * A with records there and at C, an EHR system per member, a clinician at B, a lab user at C, and the patient
 * linked at C and at B. Any member may stop (even the home A): the ledger and the others keep running.
 *
 * Everything lives under one base directory: the data directories, the participants' keys, the logs and
 * `network.json` (what a test or a newcomer needs: ports, URLs, ids, key files; no health data). A second run
 * over the same directory reuses it: the setup steps already done are skipped.
 *
 * One process (the ledger node) is then the whole ledger (one peer, no orderer, one operator): demos and tests
 * only, never production (docs/ledger.md).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, type WriteStream } from 'node:fs';
import { createWriteStream } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { SignJWT } from 'jose';
import { decodeJson } from '../src/fhir/store/json-codec.js';
import {
  BUILTIN_PATIENT,
  builtinHomeRecords,
  demographicsOf,
  labResults,
  patientResource,
  syntheaBundle,
  syntheaFolder,
  syntheaPatient,
  type FhirJson,
} from './local-network-records.js';

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(PROJECT_ROOT, 'src', 'cli.ts');

/**
 * How a member starts: `src/cli.ts` through tsx, or, under the test suite, the suite's compiled build of src/
 * (HIE_TEST_CLI_BUILD, see test/support/cli-build.ts), which starts with half the CPU.
 */
function cliNodeArgs(): string[] {
  const build = process.env.HIE_TEST_CLI_BUILD;
  return build ? [join(build, 'src', 'cli.js')] : ['--import', 'tsx', CLI];
}

/** The file in the base directory that describes the running network. */
export const NETWORK_FILE = 'network.json';

export type MemberKey = 'a' | 'b' | 'c';
export const MEMBER_KEYS: readonly MemberKey[] = ['a', 'b', 'c'];

interface MemberSpec {
  mspId: string;
  organization: string;
  /** The Organization resource (and `--organization`) the member keeps records for. */
  organizationId: string;
}

const MEMBER_SPECS: Record<MemberKey, MemberSpec> = {
  a: { mspId: 'HospitalAMSP', organization: 'Hospital A', organizationId: 'hospital-a' },
  b: { mspId: 'HospitalBMSP', organization: 'Hospital B', organizationId: 'hospital-b' },
  c: { mspId: 'LabCMSP', organization: 'Lab C', organizationId: 'lab-c' },
};

type Role = 'patient' | 'clinician' | 'lab' | 'system';

interface ParticipantSpec {
  clientId: string;
  member: MemberKey;
  role: Role;
  /** The linked resource (the patient's: its Patient at A, given once stored). */
  resource?: string;
  organization: boolean;
}

/** The participants: an EHR system per member, the patient at home A, a clinician at B, a lab user at C. */
const PARTICIPANTS: readonly ParticipantSpec[] = [
  { clientId: 'ehr-a', member: 'a', role: 'system', organization: true },
  { clientId: 'ehr-b', member: 'b', role: 'system', organization: true },
  { clientId: 'lims-c', member: 'c', role: 'system', organization: true },
  { clientId: 'patient-a', member: 'a', role: 'patient', organization: false },
  { clientId: 'dr-b', member: 'b', role: 'clinician', resource: 'Practitioner/dr-b', organization: true },
  { clientId: 'lab-c', member: 'c', role: 'lab', organization: true },
];

export interface MemberInfo {
  key: MemberKey;
  mspId: string;
  organization: string;
  /** Organization/ID the member keeps records for (its `--organization`). */
  organizationReference: string;
  dataDir: string;
  port: number;
  /** http://127.0.0.1:PORT */
  origin: string;
  fhirBase: string;
  tokenUrl: string;
  readyz: string;
  /** Its connection file to the served ledger (`ledger connect`): its `--fabric-config`. */
  fabricConfig: string;
  log: string;
  /** The `hie-ledger serve` process of this run. */
  pid?: number;
}

export interface ParticipantInfo {
  clientId: string;
  member: MemberKey;
  role: Role;
  pseudonym: string;
  resource?: string;
  organization?: string;
  certificate: string;
  privateKey: string;
  /** The algorithm of its client assertions (its key is P-384). */
  alg: 'ES384';
}

/** The network's ledger node: a `hie-ledger serve --serve-ledger` of its own organisation, no patient's records. */
export interface LedgerNodeInfo {
  /** The served ledger's address, 127.0.0.1:PORT (the members' `ledger connect --gateway`). */
  gateway: string;
  /** Its TLS CA certificate file (the members' `--gateway-tls-ca`). */
  tlsCa: string;
  /** The MSPs it admits (the members' CA certificates; `ledger connect --members-file`). */
  membersFile: string;
  mspId: string;
  dataDir: string;
  /** Its own FHIR service (nobody's records): only its readiness matters. */
  fhirBase: string;
  readyz: string;
  log: string;
  /** The `hie-ledger serve` process of this run. */
  pid?: number;
}

export interface NetworkInfo {
  /** 2: the ledger node is a process of its own (1: hospital A served the ledger; such a directory is not reused). */
  version: 2;
  status: 'starting' | 'ready' | 'stopped';
  dir: string;
  ledger: LedgerNodeInfo;
  members: Partial<Record<MemberKey, MemberInfo>>;
  participants: Record<string, ParticipantInfo>;
  /** The network's patient: the local Patient at each member (A is the home), and where its records came from. */
  patient?: { source: string; local: Partial<Record<MemberKey, string>> };
  /** References of what was stored for the patient (at A: the Synthea bundle's or built-in records; at C: lab results). */
  records: Partial<Record<MemberKey, string[]>>;
  /** The links made at custodians (`$network-link`): the local Patient, the home and when. */
  links: Partial<Record<MemberKey, { patient: string; home: string; linkedAt: string }>>;
}

export interface LocalNetworkOptions {
  /** The base directory (created; reused when it holds a network). */
  dir: string;
  /**
   * A's FHIR port; B and C take the next two, the served ledger the next, the ledger node's FHIR service the one
   * after. 0: the system picks every port.
   */
  basePort: number;
  /** The home's records: a Synthea patient (default when ../shared/data/synthea-bundles exists) or built-in ones. */
  records?: 'synthea' | 'builtin';
  syntheaBundle?: string;
  /** Progress lines (default: none). */
  progress?: (line: string) => void;
}

/** The processes of the network: the three members and the ledger node. */
export type ProcessKey = MemberKey | 'ledger';

export interface LocalNetwork {
  info: NetworkInfo;
  /** Resolves when a process exits (a member: the network keeps running without it; the ledger: nobody can write). */
  exited: Record<ProcessKey, Promise<number | null>>;
  /** Stops the four processes (SIGTERM: C, B, A, then the ledger node) and marks the network stopped. */
  stop(): Promise<void>;
}

/** The ledger node's organisation: it serves the ledger and keeps no patient's records. */
export const LEDGER_NODE_MSP = 'NetworkOpsMSP';

/** Reads `network.json` of a base directory, or undefined. */
export function readNetworkInfo(dir: string): NetworkInfo | undefined {
  const file = join(resolve(dir), NETWORK_FILE);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as NetworkInfo;
}

function writeNetworkInfo(info: NetworkInfo): void {
  const file = join(info.dir, NETWORK_FILE);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

// ---------------------------------------------------------------------------------------------------------------
// The CLI, run as an operator runs it (same commands, same flags), in this process: each command's printed JSON.

let cliQueue: Promise<unknown> = Promise.resolve();

let program: Promise<typeof import('../src/commands/program.js')> | undefined;
/** The CLI's modules, loaded on first use (`token` needs none of them; the network loads them while A starts). */
function loadProgram(): Promise<typeof import('../src/commands/program.js')> {
  program ??= import('../src/commands/program.js');
  return program;
}

/** Runs `hie-ledger ARGS` and returns what it printed; commands run one at a time (console.log is captured). */
function hieLedger(transcript: string, args: string[]): Promise<string> {
  const run = async () => {
    writeFileSync(transcript, `hie-ledger ${args.map(shellQuote).join(' ')}\n`, { flag: 'a', mode: 0o600 });
    const printed: string[] = [];
    const { log, error } = console;
    console.log = (...parts: unknown[]) => void printed.push(parts.map(String).join(' '));
    // The commands' diagnostics (e.g. the Fabric adapter's "connected") go to the transcript, not the terminal.
    console.error = (...parts: unknown[]) =>
      writeFileSync(transcript, `  ${parts.map(String).join(' ')}\n`, { flag: 'a', mode: 0o600 });
    try {
      const { createProgram } = await loadProgram();
      await createProgram()
        .exitOverride()
        .parseAsync(['node', 'hie-ledger', ...args]);
    } finally {
      console.log = log;
      console.error = error;
    }
    return printed.join('\n');
  };
  const result = cliQueue.then(run, run);
  cliQueue = result.catch(() => undefined);
  return result;
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

// ---------------------------------------------------------------------------------------------------------------
// The member processes.

interface ServiceProcess {
  child: ChildProcess;
  exited: Promise<number | null>;
  /** Resolves with the first match in the process's output (its first 256 KiB); rejects if it exits first. */
  waitFor(pattern: RegExp): Promise<RegExpExecArray>;
}

const KEPT_OUTPUT = 256 * 1024;

/** `hie-ledger serve ARGS` as its own process (in its own process group: a terminal's Ctrl-C reaches only us). */
function startService(args: string[], logFile: string): ServiceProcess {
  const child = spawn(process.execPath, [...cliNodeArgs(), 'serve', ...args], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const log: WriteStream = createWriteStream(logFile, { flags: 'a', mode: 0o600 });
  let output = '';
  const waiting = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    log.write(chunk);
    if (output.length < KEPT_OUTPUT) output += chunk.toString('utf8');
    for (const check of waiting) check();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((done) =>
    child.once('exit', (code, signal) => {
      log.end();
      done(code ?? (signal ? 128 : null));
    }),
  );
  const waitFor = (pattern: RegExp) =>
    new Promise<RegExpExecArray>((resolveMatch, reject) => {
      const check = () => {
        const match = pattern.exec(output);
        if (!match) return;
        waiting.delete(check);
        resolveMatch(match);
      };
      waiting.add(check);
      check();
      void exited.then((code) => {
        waiting.delete(check);
        reject(new Error(`hie-ledger serve exited (${code}) before ${pattern}; see ${logFile}`));
      });
    });
  return { child, exited, waitFor };
}

/**
 * Polls GET /readyz until 200 (readiness, not a fixed sleep); rejects when the process exits first, or after
 * `giveUpMs` (a member that never gets ready: its log says why).
 */
async function untilReady(
  readyz: string,
  service: ServiceProcess,
  log: string,
  giveUpMs = 300_000,
): Promise<void> {
  let exited = false;
  void service.exited.then(() => (exited = true));
  const giveUpAt = Date.now() + giveUpMs;
  for (;;) {
    if (exited) throw new Error(`the service exited before ${readyz} answered 200; see ${log}`);
    if (Date.now() > giveUpAt)
      throw new Error(`${readyz} did not answer 200 in ${giveUpMs / 1000} s; see ${log}`);
    const res = await fetch(readyz).catch(() => undefined);
    await res?.body?.cancel();
    if (res?.status === 200) return;
    await new Promise((wake) => setTimeout(wake, 100));
  }
}

/** SIGTERM, then waits for the exit (SIGKILL after `graceMs`). */
async function stopService(service: ServiceProcess, graceMs = 20_000): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  const timer = setTimeout(() => service.child.kill('SIGKILL'), graceMs);
  await service.exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------------------------
// Participants' access tokens and FHIR calls (SMART Backend Services, docs/access.md).

/** A fresh access token for a participant: a client assertion signed with its key, exchanged at /auth/token. */
export async function accessToken(info: NetworkInfo, clientId: string): Promise<string> {
  const participant = info.participants[clientId];
  if (!participant)
    throw new Error(`no participant ${clientId} (${Object.keys(info.participants).join(', ')})`);
  const member = info.members[participant.member]!;
  const assertion = await new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg: participant.alg })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(member.tokenUrl)
    .setIssuedAt()
    .setExpirationTime('2m')
    .sign(createPrivateKey(readFileSync(participant.privateKey, 'utf8')));
  const res = await fetch(member.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    }),
  });
  const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
  if (res.status !== 200 || !body.access_token)
    throw new Error(
      `token for ${clientId}: ${res.status} ${body.error ?? ''} ${body.error_description ?? ''}`,
    );
  return body.access_token;
}

interface FhirAnswer {
  status: number;
  body: FhirJson;
  location?: string;
}

async function fhir(
  member: MemberInfo,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<FhirAnswer> {
  const res = await fetch(path ? `${member.fhirBase}/${path}` : member.fhirBase, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/fhir+json',
      ...(body === undefined ? {} : { 'content-type': 'application/fhir+json' }),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return {
    status: res.status,
    body: (text ? JSON.parse(text) : {}) as FhirJson,
    location: res.headers.get('location') ?? undefined,
  };
}

/** The answer when its status is one of `ok`; otherwise an error naming the call and the OperationOutcome. */
function expectStatus(answer: FhirAnswer, ok: number[], what: string): FhirAnswer {
  if (ok.includes(answer.status)) return answer;
  const issues = (answer.body.issue ?? []) as { diagnostics?: string }[];
  throw new Error(`${what}: ${answer.status} ${issues.map((i) => i.diagnostics ?? '').join('; ')}`);
}

function parameter(body: FhirJson, name: string): Record<string, unknown> | undefined {
  return ((body.parameter ?? []) as { name: string }[]).find((p) => p.name === name) as
    Record<string, unknown> | undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// The network.

/** Starts the network under `options.dir` (or reuses it), sets it up, and returns once every member is ready. */
export async function startLocalNetwork(options: LocalNetworkOptions): Promise<LocalNetwork> {
  const dir = resolve(options.dir);
  const progress = options.progress ?? (() => undefined);
  const previous = readNetworkInfo(dir);
  if (previous && previous.version !== 2)
    throw new Error(
      `${dir} holds a network of an older layout (hospital A served the ledger): delete it, or give another --dir`,
    );
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const sub of ['logs', 'participants']) mkdirSync(join(dir, sub), { recursive: true, mode: 0o700 });
  const transcript = join(dir, 'logs', 'commands.log');
  const cli = (args: string[]) => hieLedger(transcript, args);
  const port = (offset: number) => (options.basePort === 0 ? 0 : options.basePort + offset);
  const ledgerDir = join(dir, 'ledger');
  const info: NetworkInfo = {
    version: 2,
    status: 'starting',
    dir,
    ledger: {
      gateway: '',
      tlsCa: join(ledgerDir, 'ledger', 'gateway', 'tls-ca.pem'),
      membersFile: join(dir, 'ledger-members.json'),
      mspId: LEDGER_NODE_MSP,
      dataDir: ledgerDir,
      fhirBase: '',
      readyz: '',
      log: join(dir, 'logs', 'ledger.log'),
    },
    members: {},
    participants: previous?.participants ?? {},
    patient: previous?.patient,
    records: previous?.records ?? {},
    links: previous?.links ?? {},
  };
  const processes: Partial<Record<ProcessKey, ServiceProcess>> = {};
  // If this process exits without stop() (an error, process.exit), its services do not outlive it.
  const killAll = () => {
    for (const service of Object.values(processes))
      if (service.child.exitCode === null) service.child.kill('SIGKILL');
  };
  process.on('exit', killAll);
  const stop = async () => {
    // The members first, the ledger they write to last.
    for (const key of ['c', 'b', 'a', 'ledger'] as const)
      if (processes[key]) await stopService(processes[key]);
    process.off('exit', killAll);
    info.status = 'stopped';
    for (const member of Object.values(info.members)) delete member.pid;
    delete info.ledger.pid;
    writeNetworkInfo(info);
  };

  try {
    const memberInfo = (key: MemberKey, fhirBase: string): MemberInfo => {
      const spec = MEMBER_SPECS[key];
      const origin = new URL(fhirBase).origin;
      return {
        key,
        mspId: spec.mspId,
        organization: spec.organization,
        organizationReference: `Organization/${spec.organizationId}`,
        dataDir: join(dir, key),
        port: Number(new URL(fhirBase).port),
        origin,
        fhirBase,
        tokenUrl: `${origin}/auth/token`,
        readyz: `${origin}/readyz`,
        fabricConfig: join(dir, key, 'ledger', 'fabric-connection.json'),
        log: join(dir, 'logs', `${key}.log`),
        pid: processes[key]?.child.pid,
      };
    };
    const memberOffset: Record<MemberKey, number> = { a: 0, b: 1, c: 2 };
    /** Starts a member's service against the served ledger (on `fixedPort` when given) and waits for its URL. */
    const startMember = (key: MemberKey, fixedPort?: number) => {
      processes[key] = startService(
        [
          '--data-dir',
          join(dir, key),
          '--msp-id',
          MEMBER_SPECS[key].mspId,
          '--port',
          String(fixedPort ?? port(memberOffset[key])),
          '--auth',
          'smart',
          '--organization',
          `Organization/${MEMBER_SPECS[key].organizationId}`,
          '--network-local',
          'on',
          '--ledger',
          'fabric',
          '--fabric-config',
          join(dir, key, 'ledger', 'fabric-connection.json'),
        ],
        join(dir, 'logs', `${key}.log`),
      );
    };
    const memberStarted = async (key: MemberKey) => {
      const [, base] = await processes[key]!.waitFor(/"fhirBase":"([^"]+)"/);
      info.members[key] = memberInfo(key, base!);
      progress(`waiting until ${MEMBER_SPECS[key].organization} is ready (${info.members[key].readyz})`);
      await untilReady(info.members[key].readyz, processes[key]!, info.members[key].log);
    };

    // 1. The ledger node: its embedded ledger, served to the members of ledger-members.json; its own organisation,
    // no patient's records (so that any member, the home too, can stop while the others go on).
    progress(`starting the ledger node (${LEDGER_NODE_MSP}: it serves the ledger to the members)`);
    processes.ledger = startService(
      [
        '--data-dir',
        ledgerDir,
        '--msp-id',
        LEDGER_NODE_MSP,
        '--port',
        String(port(4)),
        '--auth',
        'smart',
        '--serve-ledger',
        `127.0.0.1:${port(3)}`,
        '--ledger-members',
        info.ledger.membersFile,
      ],
      info.ledger.log,
    );
    void loadProgram().catch(() => undefined); // meanwhile; a failure shows at the first command
    const [, gateway, tlsCa] = await processes.ledger.waitFor(/"ledgerGateway":"([^"]+)","tlsCa":"([^"]+)"/);
    const [, ledgerBase] = await processes.ledger.waitFor(/"fhirBase":"([^"]+)"/);
    info.ledger.gateway = gateway!;
    info.ledger.tlsCa = tlsCa!;
    info.ledger.fhirBase = ledgerBase!;
    info.ledger.readyz = `${new URL(ledgerBase!).origin}/readyz`;
    info.ledger.pid = processes.ledger.child.pid;

    // 2. A, B and C join it: their own CA and service identity, their CA added to its members file.
    for (const key of MEMBER_KEYS) {
      progress(`connecting ${MEMBER_SPECS[key].organization} to the ledger`);
      await cli([
        'ledger',
        'connect',
        '--data-dir',
        join(dir, key),
        '--msp-id',
        MEMBER_SPECS[key].mspId,
        '--gateway',
        info.ledger.gateway,
        '--gateway-tls-ca',
        info.ledger.tlsCa,
        '--members-file',
        info.ledger.membersFile,
      ]);
    }

    // 3. The participants, enrolled by each member's operator while its service is not running (the CLI refuses a
    // data directory in use). The patient is enrolled with its Patient at A: a Synthea patient's id is known only
    // once stored, so that one is enrolled in setUp, A stopped around it.
    const synthea = usesSynthea(info, options);
    for (const spec of PARTICIPANTS) {
      const resource =
        spec.role === 'patient'
          ? (info.patient?.local.a ?? (synthea ? undefined : BUILTIN_PATIENT_REFERENCE))
          : spec.resource;
      if (spec.role === 'patient' && !resource) continue;
      await enrolParticipant(info, cli, spec, resource, progress);
    }

    progress(`waiting until the ledger node is ready (${info.ledger.readyz})`);
    await untilReady(info.ledger.readyz, processes.ledger, info.ledger.log);
    for (const key of MEMBER_KEYS) {
      progress(`starting ${MEMBER_SPECS[key].organization}`);
      startMember(key);
    }
    for (const key of MEMBER_KEYS) await memberStarted(key);
    writeNetworkInfo(info);

    // 4. Each member's entry in the member directory, written by its own service identity (again on a rerun: the
    // ports may have changed).
    for (const key of MEMBER_KEYS) {
      const member = info.members[key]!;
      progress(`registering ${member.organization} in the member directory`);
      await cli([
        'member',
        'register',
        '--data-dir',
        member.dataDir,
        '--ledger',
        'fabric',
        '--fabric-config',
        member.fabricConfig,
        '--organization-name',
        member.organization,
        '--fhir-base-url',
        member.fhirBase,
      ]);
    }

    /** Runs an operator command on a member's data directory with its service stopped, then starts it again. */
    const whileStopped = async (key: MemberKey, work: () => Promise<void>) => {
      progress(`stopping ${MEMBER_SPECS[key].organization} for an operator command`);
      await stopService(processes[key]!);
      await work();
      progress(`starting ${MEMBER_SPECS[key].organization} again`);
      startMember(key, info.members[key]!.port); // the same port: its directory entry stays right
      await memberStarted(key);
      writeNetworkInfo(info);
    };
    await setUp(info, cli, synthea, options, progress, whileStopped);
    info.status = 'ready';
    writeNetworkInfo(info);
  } catch (error) {
    await stop().catch(() => undefined);
    throw error;
  }
  const exited = Object.fromEntries(
    (['ledger', ...MEMBER_KEYS] as const).map((key) => [key, processes[key]!.exited]),
  ) as Record<ProcessKey, Promise<number | null>>;
  return { info, exited, stop };
}

/** The built-in patient's Patient at A (its id is chosen: PUT). */
const BUILTIN_PATIENT_REFERENCE = 'Patient/a-patient';

/** Whether the home's records are (or are to be) a Synthea patient's. */
function usesSynthea(info: NetworkInfo, options: LocalNetworkOptions): boolean {
  if (info.patient) return info.patient.source !== 'built-in';
  return (options.records ?? (syntheaFolder(PROJECT_ROOT) ? 'synthea' : 'builtin')) === 'synthea';
}

/** `hie-ledger participant enroll` at its member (its service must not be running); once (network.json). */
async function enrolParticipant(
  info: NetworkInfo,
  cli: (args: string[]) => Promise<string>,
  spec: ParticipantSpec,
  resource: string | undefined,
  progress: (line: string) => void,
): Promise<void> {
  if (info.participants[spec.clientId]) return;
  const member = MEMBER_SPECS[spec.member];
  const organizationReference = `Organization/${member.organizationId}`;
  const out = join(info.dir, 'participants', spec.clientId);
  progress(`enrolling ${spec.clientId} (${spec.role}) at ${member.organization}`);
  const printed = JSON.parse(
    await cli([
      'participant',
      'enroll',
      '--data-dir',
      join(info.dir, spec.member),
      '--msp-id',
      member.mspId,
      '--role',
      spec.role,
      '--id',
      spec.clientId,
      ...(resource ? ['--resource', resource] : []),
      ...(spec.organization ? ['--organization', organizationReference] : []),
      '--out',
      out,
    ]),
  ) as { pseudonym: string; certificate: string; privateKey: string };
  info.participants[spec.clientId] = {
    clientId: spec.clientId,
    member: spec.member,
    role: spec.role,
    pseudonym: printed.pseudonym,
    resource,
    organization: spec.organization ? organizationReference : undefined,
    certificate: printed.certificate,
    privateKey: printed.privateKey,
    alg: 'ES384',
  };
  writeNetworkInfo(info);
}

/**
 * The setup over HTTP (and the CLI, with a member stopped around it); every step already done (recorded in
 * network.json) is skipped.
 */
async function setUp(
  info: NetworkInfo,
  cli: (args: string[]) => Promise<string>,
  synthea: boolean,
  options: LocalNetworkOptions,
  progress: (line: string) => void,
  whileStopped: (key: MemberKey, work: () => Promise<void>) => Promise<void>,
): Promise<void> {
  const members = info.members as Record<MemberKey, MemberInfo>;
  const tokens = new Map<string, string>();
  const token = async (clientId: string) => {
    if (!tokens.has(clientId)) tokens.set(clientId, await accessToken(info, clientId));
    return tokens.get(clientId)!;
  };
  const put = async (key: MemberKey, clientId: string, resource: FhirJson) => {
    const answer = await fhir(
      members[key],
      await token(clientId),
      'PUT',
      `${resource.resourceType}/${resource.id}`,
      resource,
    );
    expectStatus(
      answer,
      [200, 201],
      `PUT ${resource.resourceType}/${resource.id} at ${members[key].organization}`,
    );
  };

  // The EHR systems, and each member's Organization (written by its system, with the id the member keeps records for).
  for (const spec of PARTICIPANTS.filter((p) => p.role === 'system')) {
    const member = members[spec.member];
    await put(spec.member, spec.clientId, {
      resourceType: 'Organization',
      id: MEMBER_SPECS[spec.member].organizationId,
      active: true,
      name: member.organization,
    });
  }

  // The patient's record at the home: a Synthea patient's transaction Bundle, or a few built-in records.
  if (!info.patient?.local.a) {
    if (synthea) {
      const bundle = syntheaBundle(PROJECT_ROOT, options.syntheaBundle);
      progress(`storing the Synthea patient of ${bundle.file} at Hospital A`);
      const { index } = syntheaPatient(bundle.text);
      const answer = expectStatus(
        await fhir(members.a, await token('ehr-a'), 'POST', '', bundle.text),
        [200],
        'the Synthea transaction at Hospital A',
      );
      const locations = ((answer.body.entry ?? []) as { response?: { location?: string } }[]).map((e) =>
        (e.response?.location ?? '').replace(/\/_history\/.*$/, ''),
      );
      info.patient = { source: `Synthea, ${basename(bundle.file)}`, local: { a: locations[index] } };
      info.records.a = locations.filter((_, i) => i !== index);
    } else {
      progress('storing built-in records at Hospital A');
      await put('a', 'ehr-a', patientResource(BUILTIN_PATIENT_REFERENCE.split('/')[1]!, BUILTIN_PATIENT));
      info.patient = { source: 'built-in', local: { a: BUILTIN_PATIENT_REFERENCE } };
      const records = builtinHomeRecords(BUILTIN_PATIENT_REFERENCE);
      for (const record of records) await put('a', 'ehr-a', record);
      info.records.a = records.map((r) => `${r.resourceType}/${r.id}`);
    }
    writeNetworkInfo(info);
  }
  const patient = info.patient!;
  if (!info.participants['patient-a']) {
    // Its Patient's id came with the transaction's answer: enrolled now, A stopped around it.
    await whileStopped('a', () =>
      enrolParticipant(
        info,
        cli,
        PARTICIPANTS.find((p) => p.clientId === 'patient-a')!,
        patient.local.a,
        progress,
      ),
    );
    tokens.clear();
  }

  // B and C hold the same person under their own ids, with the demographics of A's Patient (read from A: they are
  // not kept in network.json), so the link matches them.
  for (const [key, system] of [
    ['b', 'ehr-b'],
    ['c', 'lims-c'],
  ] as const) {
    if (patient.local[key]) continue;
    const home = expectStatus(
      await fhir(members.a, await token('ehr-a'), 'GET', patient.local.a!),
      [200],
      `GET ${patient.local.a} at Hospital A`,
    );
    await put(key, system, patientResource(`${key}-patient`, demographicsOf(home.body)));
    patient.local[key] = `Patient/${key}-patient`;
    writeNetworkInfo(info);
  }
  await put('b', 'ehr-b', {
    resourceType: 'Practitioner',
    id: 'dr-b',
    active: true,
    name: [{ family: 'Okafor', given: ['Chidi'], prefix: ['Dr.'] }],
  });

  // Lab C's results, written by its lab user (a conditional create on the result's identifier: stored once).
  if (!info.records.c) {
    progress('storing lab results at Lab C');
    const stored: string[] = [];
    for (const result of labResults(patient.local.c!)) {
      const identifier = (result.identifier as { system: string; value: string }[])[0]!;
      const answer = expectStatus(
        await fhir(members.c, await token('lab-c'), 'POST', 'Observation', result, {
          'if-none-exist': `identifier=${identifier.system}|${identifier.value}`,
        }),
        [200, 201],
        'a lab result at Lab C',
      );
      stored.push((answer.location ?? '').replace(/^.*\/fhir\//, '').replace(/\/_history\/.*$/, ''));
    }
    info.records.c = stored;
    writeNetworkInfo(info);
  }

  // The patient links C and B: a link token from the home (asked with the patient's own token), redeemed at the
  // custodian by its EHR system.
  for (const [key, system] of [
    ['c', 'lims-c'],
    ['b', 'ehr-b'],
  ] as const) {
    if (info.links[key]) continue;
    progress(`linking the patient at ${members[key].organization}`);
    const issued = expectStatus(
      await fhir(members.a, await token('patient-a'), 'POST', `${patient.local.a}/$network-link-token`, {
        resourceType: 'Parameters',
        parameter: [{ name: 'custodian', valueString: members[key].mspId }],
      }),
      [200],
      `$network-link-token for ${members[key].mspId}`,
    );
    const linkToken = parameter(issued.body, 'token')?.valueString as string;
    const linked = expectStatus(
      await fhir(members[key], await token(system), 'POST', `${patient.local[key]}/$network-link`, {
        resourceType: 'Parameters',
        parameter: [{ name: 'token', valueString: linkToken }],
      }),
      [200],
      `$network-link at ${members[key].organization}`,
    );
    info.links[key] = {
      patient: (parameter(linked.body, 'patient')?.valueReference as { reference: string }).reference,
      home: parameter(linked.body, 'home')?.valueString as string,
      linkedAt: parameter(linked.body, 'linkedAt')?.valueInstant as string,
    };
    writeNetworkInfo(info);
  }
}

/**
 * Alters a record in a member's store file behind its service's back (the walkthrough's tampered record): in the
 * current version's stored text the first `"value":<number>` gets 1 added, nothing else changes. Its anchor on the
 * ledger no longer matches. The service keeps recently read versions in memory: alter a stopped network's files
 * (or restart the member) to be sure it serves the altered text.
 */
export function tamperRecord(
  dir: string,
  member: MemberKey,
  reference: string,
): { version: string; before: string; after: string } {
  const [type, id] = reference.split('/');
  if (!type || !id) throw new Error(`${reference}: give Type/id`);
  const db = new Database(join(resolve(dir), member, 'resources.sqlite'));
  try {
    const row = db
      .prepare(
        `SELECT v.seq, v.version_id, v.json FROM resource_current c JOIN resource_version v ON v.seq = c.seq
         WHERE c.resource_type = ? AND c.id = ? AND c.deleted = 0`,
      )
      .get(type, id) as { seq: number; version_id: number; json: string | Buffer } | undefined;
    if (!row) throw new Error(`${reference} is not stored at ${member.toUpperCase()}`);
    // Stored deflated since store migration 7 (docs/store.md); the altered text is stored as text, which reads accept.
    const json = decodeJson(row.json);
    const match = /"value":(-?\d+(?:\.\d+)?)/.exec(json);
    if (!match)
      throw new Error(`${reference} has no "value" number to alter (take an Observation with a quantity)`);
    const before = match[1]!;
    const decimals = before.split('.')[1]?.length ?? 0;
    const after = (Number(before) + 1).toFixed(decimals);
    const altered = `${json.slice(0, match.index)}"value":${after}${json.slice(match.index + match[0].length)}`;
    db.prepare('UPDATE resource_version SET json = ? WHERE seq = ?').run(altered, row.seq);
    return { version: `${reference}/_history/${row.version_id}`, before, after };
  } finally {
    db.close();
  }
}
