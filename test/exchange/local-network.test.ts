/**
 * `npm run network:local` (scripts/network-local.ts) as a newcomer runs it: one script process starts the network's
 * ledger node (serving its embedded ledger), then hospital A, hospital B and lab C as separate `hie-ledger serve`
 * processes on loopback ports, enrols the participants (before each member's service starts), registers the members
 * in the member directory, stores the patient's records at A and C, links the patient at C and B, writes
 * network.json, and stops the four on Ctrl-C. The end-to-end pull checks
 * (issue 14, "Tests") start from this network and its network.json.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemberDirectory } from '../../src/exchange/member-directory.js';
import { loadFabricConfig } from '../../src/ledger/fabric/config.js';
import { openFabricLedger } from '../../src/ledger/fabric/fabric-ledger.js';
import {
  accessToken,
  MEMBER_KEYS,
  readNetworkInfo,
  tamperRecord,
  type NetworkInfo,
} from '../../scripts/local-network.js';
import { expectErrorCode } from '../support/error-codes.js';
import { networkConsent } from './network-harness.js';

/** A hook that starts (or stops) the network: four services on a loaded 2-core machine; readiness is polled. */
const NETWORK_START_MS = 420_000;

interface ScriptProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** `npm run network:local -- ARGS`, as its own process (tsx, this checkout). */
function networkLocal(args: string[]): ScriptProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/network-local.ts', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

/** Resolves once `pattern` is in the script's output; rejects if it exits first. */
function waitForOutput(script: ScriptProcess, pattern: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!pattern.test(script.output())) return;
      script.child.stdout!.off('data', check);
      resolve();
    };
    script.child.stdout!.on('data', check);
    check();
    void script.exited.then((code) =>
      reject(new Error(`network:local exited (${code}) before ${pattern}:\n${script.output()}`)),
    );
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function fhir(
  info: NetworkInfo,
  clientId: string,
  member: 'a' | 'b' | 'c',
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${info.members[member]!.fhirBase}/${path}`, {
    method,
    headers: {
      authorization: `Bearer ${await accessToken(info, clientId)}`,
      ...(body ? { 'content-type': 'application/fhir+json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

interface SearchsetEntry {
  fullUrl?: string;
  search: { mode: string };
  resource: {
    resourceType: string;
    issue?: { diagnostics: string }[];
    extension?: { url: string; extension: { url: string; valueCode?: string }[] }[];
  };
}

interface NetworkAnswer {
  /** The records' fullUrls without their version, sorted. */
  records: string[];
  /** Their Provenance statuses. */
  statuses: string[];
  /** The outcome's issues. */
  issues: { diagnostics: string }[];
}

/** What A and C hold for the patient (in its compartments): fullUrls without their version, sorted. */
function expectedRecords(info: NetworkInfo): string[] {
  const { a, c } = info.members;
  const local = info.patient!.local;
  return [
    `${a!.fhirBase}/${local.a}`,
    ...info.records.a!.map((r) => `${a!.fhirBase}/${r}`),
    `${c!.fhirBase}/${local.c}`,
    ...info.records.c!.map((r) => `${c!.fhirBase}/${r}`),
  ].sort();
}

/** The clinician at B asks for what the network holds about the patient: `Patient/{id}/$network-everything`. */
async function fetchAtB(info: NetworkInfo): Promise<NetworkAnswer> {
  const answer = await fhir(info, 'dr-b', 'b', 'GET', `${info.patient!.local.b}/$network-everything`);
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  const entries = (answer.body.entry ?? []) as SearchsetEntry[];
  return {
    records: entries
      .filter((e) => e.search.mode === 'match')
      .map((e) => e.fullUrl!.replace(/\/_history\/[^/]+$/, ''))
      .sort(),
    statuses: entries
      .filter((e) => e.resource.resourceType === 'Provenance')
      .map((e) => e.resource.extension![0]!.extension.find((part) => part.url === 'status')!.valueCode!),
    issues: entries.find((e) => e.search.mode === 'outcome')?.resource.issue ?? [],
  };
}

/** Asks again (every 500 ms, at most 20 times) until `settled`; the last answer. Readiness, not a deadline. */
async function fetchUntil(
  info: NetworkInfo,
  settled: (answer: NetworkAnswer) => boolean,
): Promise<NetworkAnswer> {
  let answer = await fetchAtB(info);
  for (let attempt = 0; attempt < 20 && !settled(answer); attempt++) {
    await new Promise((wake) => setTimeout(wake, 500));
    answer = await fetchAtB(info);
  }
  return answer;
}

/** The patient, at home A, grants B's clinician (its handle from B's `$network-actor`) for treatment. */
async function grant(info: NetworkInfo): Promise<Record<string, unknown> & { id: string }> {
  const actor = await fhir(info, 'dr-b', 'b', 'GET', '$network-actor');
  expect(actor.status).toBe(200);
  const handle = (actor.body.parameter as { name: string; valueString?: string }[]).find(
    (p) => p.name === 'handle',
  )!.valueString!;
  expect(handle).toBe(`HospitalBMSP|${info.participants['dr-b']!.pseudonym}`);
  const created = await fhir(
    info,
    'patient-a',
    'a',
    'POST',
    'Consent',
    networkConsent(info.patient!.local.a!, handle, {}, ['TREAT']),
  );
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return created.body as Record<string, unknown> & { id: string };
}

/** The patient withdraws the grant (the Consent made inactive). */
async function revoke(info: NetworkInfo, consent: Record<string, unknown> & { id: string }): Promise<void> {
  const updated = await fhir(info, 'patient-a', 'a', 'PUT', `Consent/${consent.id}`, {
    ...consent,
    status: 'inactive',
  });
  expect(updated.status, JSON.stringify(updated.body)).toBe(200);
}

/** The member directory as B reads it: through the served ledger, with B's connection. */
async function directoryEntries(info: NetworkInfo, checkpointDir: string): Promise<string[][]> {
  const ledger = openFabricLedger({
    config: loadFabricConfig(info.members.b!.fabricConfig),
    checkpointPath: join(checkpointDir, 'reader-checkpoint.json'),
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
  });
  try {
    return (await new MemberDirectory(ledger).list()).map((e) => [e.mspId, e.fhirBaseUrl, e.status]);
  } finally {
    await ledger.close();
  }
}

describe('npm run network:local: three members and the ledger node as separate processes on loopback', () => {
  let root: string;
  let dir: string;
  const started: { script: ScriptProcess; memberPids: number[] }[] = [];

  /** Runs the script over `dir` until the network is up; its network.json. */
  async function start(): Promise<{ script: ScriptProcess; info: NetworkInfo; memberPids: number[] }> {
    const script = networkLocal(['--dir', dir, '--base-port', '0', '--records', 'builtin']);
    const run = { script, memberPids: [] as number[] };
    started.push(run);
    await waitForOutput(script, /The network is up/);
    const info = readNetworkInfo(dir)!;
    run.memberPids = [...MEMBER_KEYS.map((key) => info.members[key]!.pid!), info.ledger.pid!];
    return { script, info, memberPids: run.memberPids };
  }

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'hie-network-local-'));
    dir = join(root, 'network');
  });

  afterAll(async () => {
    for (const { script, memberPids } of started) {
      if (script.child.exitCode === null) {
        script.child.kill('SIGINT');
        await script.exited;
      }
      // Only if the script could not stop them: the member processes it started, by their ids.
      for (const pid of memberPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (root) rmSync(root, { recursive: true, force: true });
  }, NETWORK_START_MS);

  describe('the first run', () => {
    let script: ScriptProcess;
    let info: NetworkInfo;
    let memberPids: number[];

    beforeAll(async () => {
      ({ script, info, memberPids } = await start());
    }, NETWORK_START_MS);

    it('runs the ledger node, A, B and C as four processes of their own, each ready, and says that one process is the ledger', async () => {
      expect(info.status).toBe('ready');
      expect(new Set([...memberPids, script.child.pid]).size).toBe(5);
      expect(info.ledger).toMatchObject({ mspId: 'NetworkOpsMSP', dataDir: join(dir, 'ledger') });
      expect((await fetch(info.ledger.readyz)).status).toBe(200);
      // Its FHIR port is nobody's: not a member's.
      expect(MEMBER_KEYS.map((key) => info.members[key]!.fhirBase)).not.toContain(info.ledger.fhirBase);
      for (const key of MEMBER_KEYS) {
        const member = info.members[key]!;
        expect(member.fhirBase).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/fhir$/);
        expect((await fetch(member.readyz)).status, key).toBe(200);
      }
      expect(info.ledger.gateway).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(script.output()).toMatch(
        /ONE process \(the ledger node\) is the whole ledger, on loopback only: for demos and tests, never production/,
      );
    });

    it('has the three members in the directory on the ledger, each with its FHIR base URL', async () => {
      expect(await directoryEntries(info, root)).toEqual([
        ['HospitalAMSP', info.members.a!.fhirBase, 'active'],
        ['HospitalBMSP', info.members.b!.fhirBase, 'active'],
        ['LabCMSP', info.members.c!.fhirBase, 'active'],
      ]);
    });

    it('links the patient at C and at B to its home A', async () => {
      const local = info.patient!.local;
      expect(info.links).toEqual({
        c: { patient: local.c, home: 'HospitalAMSP', linkedAt: expect.any(String) },
        b: { patient: local.b, home: 'HospitalAMSP', linkedAt: expect.any(String) },
      });
      // C and B hold the Patient as custodians of A's network patient: only the home issues link tokens for it.
      for (const [member, system] of [
        ['c', 'lims-c'],
        ['b', 'ehr-b'],
      ] as const) {
        const asked = await fhir(info, system, member, 'POST', `${local[member]}/$network-link-token`, {
          resourceType: 'Parameters',
          parameter: [{ name: 'custodian', valueString: 'HospitalAMSP' }],
        });
        expect(asked.status, member).toBe(409);
        expectErrorCode(asked.body, 'link-not-home');
      }
    });

    it('writes in network.json what a participant needs: its key gets it a token, and it sees its records', async () => {
      expect(Object.keys(info.participants).sort()).toEqual([
        'dr-b',
        'ehr-a',
        'ehr-b',
        'lab-c',
        'lims-c',
        'patient-a',
      ]);
      expect(info.participants['patient-a']).toMatchObject({
        member: 'a',
        role: 'patient',
        resource: info.patient!.local.a,
      });
      expect(info.participants['dr-b']).toMatchObject({
        member: 'b',
        role: 'clinician',
        resource: 'Practitioner/dr-b',
      });
      const own = await fhir(info, 'patient-a', 'a', 'GET', `${info.patient!.local.a}/$everything`);
      expect(own.status).toBe(200);
      const types = ((own.body.entry ?? []) as { resource: { resourceType: string; id: string } }[]).map(
        (e) => `${e.resource.resourceType}/${e.resource.id}`,
      );
      expect(types).toEqual(expect.arrayContaining([info.patient!.local.a, ...info.records.a!]));
      const results = await fhir(info, 'lab-c', 'c', 'GET', `Observation?subject=${info.patient!.local.c}`);
      expect(results.body.total).toBe(2);
      expect(info.records.c).toHaveLength(2);
    });

    it("without a grant, B's $network-everything gets nothing from A or C", async () => {
      const { records } = await fetchAtB(info);
      expect(records).toEqual([]);
    });

    it("granted to B's clinician (treatment), B's $network-everything returns what A and C hold, all verified; revoked, nothing from the next request", async () => {
      const consent = await grant(info);
      const everything = expectedRecords(info);
      // Polled until A's and C's latest writes are anchored and seen by B's peer (pending, then verified).
      const fetched = await fetchUntil(
        info,
        (answer) =>
          answer.records.length === everything.length && answer.statuses.every((s) => s === 'verified'),
      );
      expect(fetched.records).toEqual(everything);
      expect(fetched.statuses).toEqual(everything.map(() => 'verified'));
      expect(fetched.issues).toEqual([]);

      await revoke(info, consent);
      const after = await fetchAtB(info);
      expect(after.records).toEqual([]);
      expect(after.statuses).toEqual([]);
    });

    it('stops the processes on Ctrl-C and exits 0; network.json says stopped', async () => {
      script.child.kill('SIGINT');
      expect(await script.exited, script.output()).toBe(0);
      expect(memberPids.filter(alive)).toEqual([]);
      expect(readNetworkInfo(dir)!.status).toBe('stopped');
    });
  });

  describe("a second run over the same directory, after a record was altered in A's store file", () => {
    let first: NetworkInfo;
    let script: ScriptProcess;
    let info: NetworkInfo;
    let altered: ReturnType<typeof tamperRecord>;

    beforeAll(async () => {
      first = readNetworkInfo(dir)!;
      // While the network is stopped: the service serves the altered text from its first read.
      altered = tamperRecord(dir, 'a', 'Observation/a-body-weight');
      ({ script, info } = await start());
    }, NETWORK_START_MS);

    it('reuses the network: the same patient, participants, records and links; the directory has the new ports', async () => {
      expect(info.patient).toEqual(first.patient);
      expect(info.participants).toEqual(first.participants);
      expect(info.records).toEqual(first.records);
      expect(info.links).toEqual(first.links);
      expect(script.output()).not.toMatch(/enrolling|storing|linking/);
      expect(await directoryEntries(info, root)).toEqual([
        ['HospitalAMSP', info.members.a!.fhirBase, 'active'],
        ['HospitalBMSP', info.members.b!.fhirBase, 'active'],
        ['LabCMSP', info.members.c!.fhirBase, 'active'],
      ]);
    });

    it("serves the altered record as it now is: A's $verify finds that it no longer matches its anchor", async () => {
      expect(altered).toEqual({
        version: 'Observation/a-body-weight/_history/1',
        before: '72.5',
        after: '73.5',
      });
      const read = await fhir(info, 'ehr-a', 'a', 'GET', 'Observation/a-body-weight');
      expect((read.body.valueQuantity as { value: number }).value).toBe(73.5);
      const verified = await fhir(info, 'ehr-a', 'a', 'GET', 'Observation/a-body-weight/$verify');
      expect(verified.body.parameter).toEqual(
        expect.arrayContaining([
          { name: 'status', valueCode: 'mismatch' },
          { name: 'verified', valueBoolean: false },
        ]),
      );
    });

    it("env.sh gives a shell the base URLs, the patient's ids and `auth CLIENT_ID` (a fresh token)", async () => {
      const shell = spawn(
        'bash',
        ['-c', `source '${join(dir, 'env.sh')}' && echo "$B $PATIENT_B" && auth dr-b`],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let output = '';
      shell.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      shell.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      expect(await new Promise((resolve) => shell.once('exit', resolve)), output).toBe(0);
      const [urls, header] = output.trim().split('\n');
      expect(urls).toBe(`${info.members.b!.fhirBase} ${info.patient!.local.b}`);
      const read = await fetch(`${info.members.b!.fhirBase}/${info.patient!.local.b}`, {
        headers: { authorization: header!.replace(/^Authorization: /, '') },
      });
      expect(read.status).toBe(200);
    });

    it("granted again, B's fetch leaves the altered record out and names it and A in an outcome; the rest verified", async () => {
      await grant(info);
      const altered = `${info.members.a!.fhirBase}/Observation/a-body-weight`;
      const kept = expectedRecords(info).filter((url) => url !== altered);
      const fetched = await fetchUntil(
        info,
        (answer) => answer.records.length === kept.length && answer.statuses.every((s) => s === 'verified'),
      );
      expect(fetched.records).toEqual(kept);
      expect(fetched.statuses).toEqual(kept.map(() => 'verified'));
      expect(fetched.issues).toHaveLength(1);
      expect(fetched.issues[0]!.diagnostics).toContain(`${altered}/_history/1`);
      expect(fetched.issues[0]!.diagnostics).toContain('HospitalAMSP');
    });

    it("A (the home) stopped: the ledger, B and C keep running; B answers with C's records and an outcome naming A", async () => {
      process.kill(info.members.a!.pid!, 'SIGTERM');
      await waitForOutput(script, /Hospital A stopped \(exit \d+\); the others keep running/);
      expect(alive(info.ledger.pid!)).toBe(true);
      // Ready includes reading the ledger's height: B and C still reach it.
      for (const key of ['b', 'c'] as const)
        expect((await fetch(info.members[key]!.readyz)).status, key).toBe(200);
      expect((await directoryEntries(info, root)).map(([msp]) => msp)).toEqual([
        'HospitalAMSP',
        'HospitalBMSP',
        'LabCMSP',
      ]);
      // B still finds the custodians (the home's last locate answer for this clinician, patient and purpose) and C
      // still checks the grant on its own ledger.
      const custodianC = expectedRecords(info).filter((url) =>
        url.startsWith(`${info.members.c!.fhirBase}/`),
      );
      const fetched = await fetchAtB(info);
      expect(fetched.records).toEqual(custodianC);
      expect(fetched.statuses).toEqual(custodianC.map(() => 'verified'));
      expect(fetched.issues.map((issue) => issue.diagnostics).join('\n')).toContain('HospitalAMSP');
    });

    it('stops again on SIGTERM', async () => {
      script.child.kill('SIGTERM');
      expect(await script.exited, script.output()).toBe(0);
      expect(readNetworkInfo(dir)!.status).toBe('stopped');
    });
  });
});
