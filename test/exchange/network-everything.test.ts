/**
 * The initiating gateway's phases (src/exchange/network-everything.ts) without the whole app: the network search
 * subset, the home's locate answer read as hostile input, and whole runs against members played by real HTTP
 * servers on loopback (their token endpoint, `$network-locate` and `$network-records`), with a custodian's
 * records anchored on a real embedded chain. The client's timeouts are set so each test ends on B's decision
 * (a server that never answers, a refused connection), never on a race.
 */
import { mkdir } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import type { FhirRequest } from '../../src/fhir/interactions/types.js';
import { FhirError } from '../../src/fhir/outcome.js';
import { patientCompartments } from '../../src/fhir/search/definitions.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { openIntegrity, type IntegrityService } from '../../src/integrity/integrity-service.js';
import { CachedBatchSource, type BatchSource } from '../../src/integrity/verification.js';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { MemberHttpClient } from '../../src/exchange/member-http.js';
import type { MemberEntry } from '../../src/exchange/members.js';
import {
  NETWORK_OUTCOME_SYSTEM,
  NetworkEverything,
  parseLocateAnswer,
  parseNetworkQuery,
  recordsRequestText,
  type NetworkAsker,
  type NetworkEverythingOptions,
  type NetworkQuery,
} from '../../src/exchange/network-everything.js';
import { NetworkTokenClient } from '../../src/exchange/network-token-client.js';
import type { PatientLinks } from '../../src/exchange/patient-links.js';
import { evidenceBundleText, recordEvidenceBundle } from '../../src/exchange/record-evidence.js';
import { makeOrg, openChain, tempDir, type TestOrg } from '../ledger/helpers.js';
import { MapMembers, selfSigned } from './helpers.js';

function request(query: Record<string, string[]>, body?: unknown): FhirRequest {
  return {
    interaction: 'operation',
    method: body === undefined ? 'GET' : 'POST',
    resourceType: 'Patient',
    id: 'p1',
    operation: 'network-everything',
    query,
    body: body === undefined ? undefined : JSON.stringify(body),
    contentType: body === undefined ? undefined : 'application/fhir+json',
    baseUrl: 'http://b.example/fhir',
  };
}

function refusal(run: () => unknown): FhirError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(FhirError);
    return err as FhirError;
  }
  throw new Error('not refused');
}

describe('the network search subset', () => {
  it('reads every parameter of the subset from the query or from a Parameters body', () => {
    const fromQuery = parseNetworkQuery(
      request({
        _type: ['Observation,Condition'],
        _since: ['2024-01-01T00:00:00Z'],
        date: ['ge2020-01-01', 'lt2025'],
        code: ['http://loinc.org|2339-0'],
        category: ['laboratory'],
        _count: ['50'],
        purpose: ['ETREAT'],
        _format: ['json'],
      }),
    );
    expect(fromQuery).toEqual({
      types: ['Observation', 'Condition'],
      since: '2024-01-01T00:00:00Z',
      dates: ['ge2020-01-01', 'lt2025'],
      codes: ['http://loinc.org|2339-0'],
      categories: ['laboratory'],
      count: 50,
      purpose: 'ETREAT',
    });
    const fromBody = parseNetworkQuery(
      request(
        {},
        {
          resourceType: 'Parameters',
          parameter: [
            { name: '_type', valueString: 'Observation' },
            { name: '_since', valueInstant: '2024-01-01T00:00:00.000+01:00' },
            { name: '_count', valueInteger: 7 },
          ],
        },
      ),
    );
    expect(fromBody).toEqual({
      types: ['Observation'],
      since: '2024-01-01T00:00:00.000+01:00',
      dates: [],
      codes: [],
      categories: [],
      count: 7,
      purpose: 'TREAT',
    });
  });

  it('refuses a parameter outside the subset with 400 parameter-unsupported naming it', () => {
    for (const name of ['_include', 'patient', '_summary', '_elements', 'start', '_offset']) {
      const err = refusal(() => parseNetworkQuery(request({ [name]: ['x'] })));
      expect(err.status).toBe(400);
      expect(err.code).toBe('parameter-unsupported');
      expect(err.outcome.issue[0].diagnostics).toContain(`'${name}'`);
      expect(err.outcome.issue[0].expression).toEqual([name]);
    }
    const inBody = refusal(() =>
      parseNetworkQuery(
        request({}, { resourceType: 'Parameters', parameter: [{ name: 'subject', valueString: 'x' }] }),
      ),
    );
    expect(inBody.code).toBe('parameter-unsupported');
  });

  it('refuses malformed values with 400 parameter-invalid naming the parameter', () => {
    const cases: [string, string][] = [
      ['_type', 'Nonsense'],
      ['_since', '2024-01-01'],
      ['_since', 'yesterday'],
      ['date', 'after2020'],
      ['date', 'ge2020-13-01'],
      ['code', '|'],
      ['code', 'a|b|c'],
      ['_count', '-1'],
      ['_count', '1000001'],
      ['purpose', 'treat'],
    ];
    for (const [name, value] of cases) {
      const err = refusal(() => parseNetworkQuery(request({ [name]: [value] })));
      expect([name, value, err.status, err.code]).toEqual([name, value, 400, 'parameter-invalid']);
      expect(err.outcome.issue[0].expression).toEqual([name]);
    }
    expect(refusal(() => parseNetworkQuery(request({ purpose: ['TREAT', 'ETREAT'] }))).code).toBe(
      'parameter-invalid',
    );
  });

  it('asks each custodian with the same subset', () => {
    const query: NetworkQuery = {
      types: ['Observation'],
      since: '2024-01-01T00:00:00Z',
      dates: ['ge2020'],
      codes: ['http://loinc.org|1'],
      categories: [],
      count: 3,
      purpose: 'TREAT',
    };
    expect(JSON.parse(recordsRequestText('npid-1', query))).toEqual({
      resourceType: 'Parameters',
      parameter: [
        { name: 'patient', valueString: 'npid-1' },
        { name: '_type', valueString: 'Observation' },
        { name: '_since', valueInstant: '2024-01-01T00:00:00Z' },
        { name: 'date', valueString: 'ge2020' },
        { name: 'code', valueString: 'http://loinc.org|1' },
        { name: '_count', valueInteger: 3 },
      ],
    });
  });
});

describe("the home's locate answer", () => {
  it('keeps grant ids and custodian MSP ids of the expected shapes only, once each', () => {
    const text = JSON.stringify({
      resourceType: 'Parameters',
      parameter: [
        { name: 'grant', valueString: 'g-1' },
        { name: 'grant', valueString: 'g-1' },
        { name: 'grant', valueString: 'has space' },
        { name: 'grant', valueInteger: 3 },
        {
          name: 'custodian',
          part: [
            { name: 'member', valueString: 'OrgAMSP' },
            { name: 'endpoint', valueUrl: 'http://169.254.169.254/latest' },
          ],
        },
        { name: 'custodian', part: [{ name: 'member', valueString: '../etc' }] },
        { name: 'custodian', part: 'x' },
        'nonsense',
      ],
    });
    expect(parseLocateAnswer(text)).toEqual({ grants: ['g-1'], custodians: [{ member: 'OrgAMSP' }] });
    expect(parseLocateAnswer('{"resourceType":"Parameters"}')).toEqual({ grants: [], custodians: [] });
    expect(parseLocateAnswer('{"resourceType":"Bundle"}')).toBeUndefined();
    expect(parseLocateAnswer('not json')).toBeUndefined();
  });
});

// Whole runs against members on loopback

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

interface FakeMember {
  entry: MemberEntry;
  /** The client assertions the member was sent, decoded. */
  assertions: Record<string, unknown>[];
  /** The bodies of its network operations, by operation. */
  calls: { operation: string; body: string; authorization?: string }[];
  on: Record<string, Handler>;
}

const servers: Server[] = [];
const clients: MemberHttpClient[] = [];
const HOME = 'OrgAMSP';
const LAB = 'OrgCMSP';
const SELF = 'OrgBMSP';
const asker: NetworkAsker = { member: SELF, actor: 'dr-b-pseudonym', role: 'clinician', purposes: ['TREAT'] };
const query: NetworkQuery = { dates: [], codes: [], categories: [], purpose: 'TREAT' };

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    ),
  );
});

async function fakeMember(mspId: string, organization: string): Promise<FakeMember> {
  const member: FakeMember = {
    entry: { mspId, organization, fhirBaseUrl: '', serviceCertificate: '', status: 'active' },
    assertions: [],
    calls: [],
    on: {},
  };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      if (req.url === '/auth/token') {
        const assertion = new URLSearchParams(body).get('client_assertion') ?? '';
        member.assertions.push(decodeJwt(assertion) as Record<string, unknown>);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            access_token: `hnt1.${member.assertions.length}`,
            token_type: 'Bearer',
            expires_in: 300,
          }),
        );
        return;
      }
      const operation = /^\/fhir\/\$([a-z-]+)$/.exec(req.url ?? '')?.[1] ?? '';
      member.calls.push({ operation, body, authorization: req.headers.authorization });
      const handler = member.on[operation];
      if (handler) return handler(req, body, res);
      res.writeHead(404);
      res.end();
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  member.entry.fhirBaseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  return member;
}

function answer(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/fhir+json' });
  res.end(body);
}

function locateText(grants: string[], custodians: string[]): string {
  return JSON.stringify({
    resourceType: 'Parameters',
    parameter: [
      ...grants.map((g) => ({ name: 'grant', valueString: g })),
      ...custodians.map((c) => ({
        name: 'custodian',
        part: [{ name: 'member', valueString: c }],
      })),
    ],
  });
}

/** A custodian's answer with records it has not anchored yet (no ledger needed to judge them: pending). */
function pendingRecords(member: MemberEntry, ids: string[]): string {
  const versions: StoredVersion[] = ids.map((id) => ({
    resourceType: 'Observation',
    id,
    versionId: 1,
    lastUpdated: '2026-01-01T00:00:00.000Z',
    deleted: false,
    method: 'PUT',
    json: `{"resourceType":"Observation","id":"${id}","meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00.000Z"},"status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50}}`,
  }));
  return evidenceBundleText(
    versions,
    versions.map(() => ({ status: 'pending' as const, reason: 'queued; not yet on the ledger' })),
    member,
  );
}

const linked: PatientLinks = {
  npidOf: (ref) => Promise.resolve(ref === 'Patient/p1' ? 'npid-of-p1' : undefined),
  homeOf: (ref) => Promise.resolve(ref === 'Patient/p1' ? HOME : undefined),
  localPatientsOf: () => Promise.resolve([]),
  custodiansOf: () => Promise.resolve([]),
};

interface Outcome {
  resourceType: 'Bundle';
  total: number;
  entry: {
    fullUrl?: string;
    search: { mode: string };
    resource: {
      resourceType: string;
      issue?: {
        severity: string;
        code: string;
        diagnostics: string;
        details?: { coding: { code: string }[] };
      }[];
      extension?: { extension: { url: string; valueCode?: string }[] }[];
    };
  }[];
}

async function gateway(
  members: MapMembers,
  options: Partial<NetworkEverythingOptions> = {},
  memberTimeoutMs = 10_000,
): Promise<NetworkEverything> {
  const http = new MemberHttpClient({
    localNetwork: true,
    maxResponseBytes: 1024 * 1024,
    connectionsPerMember: 4,
    memberTimeoutMs,
  });
  clients.push(http);
  const { privateKey } = await selfSigned('b-service');
  const tokens = new NetworkTokenClient({ identity: { mspId: SELF, privateKey }, http });
  return new NetworkEverything({
    mspId: SELF,
    links: linked,
    members,
    tokens: () => tokens,
    batchSource: () => ({ readBatch: () => Promise.resolve(null) }),
    deadlineMs: 30_000,
    pendingRetryMs: 0,
    ...options,
  });
}

describe('a network fetch against members on loopback', () => {
  it('locates at the home with no grant ids, then asks every custodian with the grant ids, and answers their records marked pending', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const lab = await fakeMember(LAB, 'Lab C');
    const members = new MapMembers();
    members.add(home.entry);
    members.add(lab.entry);
    home.on['network-locate'] = (_req, _body, res) =>
      answer(res, 200, locateText(['grant-1', 'grant-2'], [HOME, LAB, SELF]));
    home.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(home.entry, ['a1']));
    lab.on['network-records'] = (_req, _body, res) =>
      answer(res, 200, pendingRecords(lab.entry, ['c1', 'c2']));

    const everything = await gateway(members);
    const bundle = JSON.parse(
      await everything.run('Patient/p1', asker, { ...query, types: ['Observation'] }),
    ) as Outcome;

    expect(bundle.total).toBe(3);
    expect(bundle.entry.filter((e) => e.search.mode === 'match').map((e) => e.fullUrl)).toEqual([
      `${home.entry.fhirBaseUrl}/Observation/a1/_history/1`,
      `${lab.entry.fhirBaseUrl}/Observation/c1/_history/1`,
      `${lab.entry.fhirBaseUrl}/Observation/c2/_history/1`,
    ]);
    const statuses = bundle.entry
      .filter((e) => e.resource.resourceType === 'Provenance')
      .map((e) => e.resource.extension![0].extension.find((p) => p.url === 'status')?.valueCode);
    expect(statuses).toEqual(['pending', 'pending', 'pending']);
    // B never calls itself; the home is asked for its records too.
    expect(home.calls.map((c) => c.operation)).toEqual(['network-locate', 'network-records']);
    expect(lab.calls.map((c) => c.operation)).toEqual(['network-records']);
    expect(JSON.parse(lab.calls[0].body)).toEqual({
      resourceType: 'Parameters',
      parameter: [
        { name: 'patient', valueString: 'npid-of-p1' },
        { name: '_type', valueString: 'Observation' },
      ],
    });
    // The locate token carries no grant ids; the records tokens carry the ones the home gave.
    const b2b = (a: Record<string, unknown>) =>
      (a.extensions as Record<string, Record<string, unknown>>)['hl7-b2b'];
    expect(b2b(home.assertions[0])).toMatchObject({
      subject_id: 'dr-b-pseudonym',
      subject_role: 'clinician',
      organization_id: SELF,
      purpose_of_use: ['TREAT'],
      consent_reference: [],
    });
    expect(b2b(home.assertions[1]).consent_reference).toEqual(['grant-1', 'grant-2']);
    expect(b2b(lab.assertions[0]).consent_reference).toEqual(['grant-1', 'grant-2']);
    expect(lab.calls[0].authorization).toBe('Bearer hnt1.1');
  });

  it('answers a Patient with no network link with only a network-not-linked outcome, asking no one', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const members = new MapMembers();
    members.add(home.entry);
    const everything = await gateway(members);
    const bundle = JSON.parse(await everything.run('Patient/other', asker, query)) as Outcome;
    expect(bundle.total).toBe(0);
    expect(bundle.entry).toHaveLength(1);
    expect(bundle.entry[0].search.mode).toBe('outcome');
    expect(bundle.entry[0].resource.issue![0].details!.coding[0]).toEqual({
      system: NETWORK_OUTCOME_SYSTEM,
      code: 'network-not-linked',
    });
    expect(home.calls).toEqual([]);
  });

  it('asks no custodian when the home lists no grant', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const lab = await fakeMember(LAB, 'Lab C');
    const members = new MapMembers();
    members.add(home.entry);
    members.add(lab.entry);
    home.on['network-locate'] = (_req, _body, res) => answer(res, 200, locateText([], []));
    const everything = await gateway(members);
    const bundle = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;
    expect(bundle.total).toBe(0);
    expect(bundle.entry[0].resource.issue![0].details!.coding[0].code).toBe('network-no-grant');
    expect(lab.calls).toEqual([]);
    expect(home.calls.map((c) => c.operation)).toEqual(['network-locate']);
  });

  it('answers what the others sent when one custodian is down, one is slow and one refuses, naming each', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const lab = await fakeMember(LAB, 'Lab C');
    const slow = await fakeMember('OrgSlowMSP', 'Slow clinic');
    const refusing = await fakeMember('OrgNoMSP', 'Refusing clinic');
    const members = new MapMembers();
    for (const m of [home, lab, slow, refusing]) members.add(m.entry);
    // A member in the directory whose service is not running: connection refused.
    const down: MemberEntry = {
      ...lab.entry,
      mspId: 'OrgDownMSP',
      organization: 'Down',
      fhirBaseUrl: 'http://127.0.0.1:1/fhir',
    };
    members.add(down);
    home.on['network-locate'] = (_req, _body, res) =>
      answer(res, 200, locateText(['g'], [HOME, LAB, 'OrgSlowMSP', 'OrgNoMSP', 'OrgDownMSP', 'OrgGoneMSP']));
    home.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(home.entry, ['a1']));
    lab.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(lab.entry, ['c1']));
    slow.on['network-records'] = () => undefined; // never answers
    refusing.on['network-records'] = (_req, _body, res) =>
      answer(
        res,
        403,
        '{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"forbidden","diagnostics":"secret text","details":{"coding":[{"system":"https://hie-ledger.dev/fhir/CodeSystem/error","code":"access-denied"}]}}]}',
      );

    // The per-member timeout ends the slow member's call; the other calls are long done by then.
    const everything = await gateway(members, {}, 2_500);
    const bundle = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;

    expect(bundle.total).toBe(2);
    const outcome = bundle.entry.find((e) => e.search.mode === 'outcome')!.resource;
    const diagnostics = outcome.issue!.map((i) => i.diagnostics);
    expect(diagnostics.find((d) => d.includes('OrgSlowMSP'))).toMatch(/no complete answer within 2500 ms/);
    expect(diagnostics.find((d) => d.includes('OrgDownMSP'))).toMatch(/connection failed/);
    expect(diagnostics.find((d) => d.includes('OrgNoMSP'))).toMatch(/answered 403 access-denied/);
    expect(diagnostics.find((d) => d.includes('OrgGoneMSP'))).toMatch(/not an active member/);
    // The custodian's own words never pass through.
    expect(JSON.stringify(bundle)).not.toContain('secret text');
  });

  it('stops at the overall deadline with an outcome naming the members that had not answered', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const lab = await fakeMember(LAB, 'Lab C');
    const members = new MapMembers();
    members.add(home.entry);
    members.add(lab.entry);
    home.on['network-locate'] = (_req, _body, res) => answer(res, 200, locateText(['g'], [HOME, LAB]));
    home.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(home.entry, ['a1']));
    lab.on['network-records'] = () => undefined; // never answers
    const everything = await gateway(members, { deadlineMs: 2_500 });
    const bundle = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;
    expect(bundle.total).toBe(1);
    const issue = bundle.entry.find((e) => e.search.mode === 'outcome')!.resource.issue![0];
    expect(issue.diagnostics).toMatch(/^member OrgCMSP: the overall deadline passed/);
    expect(issue.code).toBe('timeout');
  });

  it('answers only an outcome naming the home when the home is down', async () => {
    const members = new MapMembers();
    members.add({
      mspId: HOME,
      organization: 'Hospital A',
      fhirBaseUrl: 'http://127.0.0.1:1/fhir',
      serviceCertificate: '',
      status: 'active',
    });
    const everything = await gateway(members);
    const bundle = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;
    expect(bundle.total).toBe(0);
    expect(bundle.entry).toHaveLength(1);
    expect(bundle.entry[0].resource.issue![0].diagnostics).toMatch(/^member OrgAMSP: connection failed/);
  });

  it('asks the custodians the home last listed when the home cannot be reached, never when it says no', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const lab = await fakeMember(LAB, 'Lab C');
    const members = new MapMembers();
    members.add(home.entry);
    members.add(lab.entry);
    let homeSays: 'grants' | 'down' | 'nothing' | 'refuses' = 'grants';
    home.on['network-locate'] = (_req, _body, res) => {
      if (homeSays === 'grants') return answer(res, 200, locateText(['g'], [HOME, LAB]));
      if (homeSays === 'down') return answer(res, 503, '{}');
      if (homeSays === 'refuses') return answer(res, 403, '{}');
      answer(res, 200, locateText([], []));
    };
    home.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(home.entry, ['a1']));
    lab.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(lab.entry, ['c1']));
    const everything = await gateway(members);

    // Never located: the home down gives only the outcome naming it.
    homeSays = 'down';
    const never = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;
    expect(never.total).toBe(0);
    expect(lab.calls).toEqual([]);

    homeSays = 'grants';
    expect((JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome).total).toBe(2);

    homeSays = 'down';
    const down = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;
    expect(down.entry.filter((e) => e.search.mode === 'match').map((e) => e.fullUrl)).toEqual([
      `${lab.entry.fhirBaseUrl}/Observation/c1/_history/1`,
    ]);
    const issues = down.entry.find((e) => e.search.mode === 'outcome')!.resource.issue!;
    expect(issues.map((i) => i.diagnostics)).toEqual([
      expect.stringMatching(/^member OrgAMSP \(the patient’s home\): answered 503/),
    ]);
    // The token for the lab still carries the remembered grant ids: the lab checks them on its ledger.
    expect(lab.calls).toHaveLength(2);

    // The home answering "no grant" (or refusing) is believed: nothing the lab sends is used. While an answer with
    // grants is remembered the lab is asked during the locate (speculatively: its answer discarded unread); "no
    // grant" forgets it, and then nobody is asked.
    for (const says of ['refuses', 'nothing', 'down'] as const) {
      homeSays = says;
      const bundle = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;
      expect([says, bundle.total]).toEqual([says, 0]);
    }
    expect(lab.calls).toHaveLength(4);
  });

  it('asks the custodians the home named last time while it locates, and uses their answers only under the same grants', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const lab = await fakeMember(LAB, 'Lab C');
    const members = new MapMembers();
    members.add(home.entry);
    members.add(lab.entry);
    const events: string[] = [];
    let homeSays = { grants: ['g'], custodians: [LAB] };
    // Whether the step expects B to ask the lab before the home answers. Then the home answers only once the lab
    // has been asked: were it not asked, the locate would time out and the step fail (no timer decides the order).
    let labFirst = false;
    let labAsked: () => void = () => undefined;
    let labAskedNow = Promise.resolve();
    const expectLabFirst = (expected: boolean) => {
      labFirst = expected;
      labAskedNow = new Promise<void>((resolve) => (labAsked = resolve));
    };
    home.on['network-locate'] = (_req, _body, res) => {
      const reply = () => {
        events.push('home answers the locate');
        answer(res, 200, locateText(homeSays.grants, homeSays.custodians));
      };
      if (labFirst) void labAskedNow.then(reply);
      else reply();
    };
    home.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(home.entry, ['a1']));
    lab.on['network-records'] = (_req, _body, res) => {
      const call = lab.calls.length;
      events.push(`lab asked (${call})`);
      labAsked();
      answer(res, 200, pendingRecords(lab.entry, [`c${call}`]));
    };
    const everything = await gateway(members);
    const matches = async () =>
      (JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome).entry
        .filter((e) => e.search.mode === 'match')
        .map((e) => e.fullUrl);
    const lab1 = (n: number) => `${lab.entry.fhirBaseUrl}/Observation/c${n}/_history/1`;

    // Nothing remembered: locate, then the lab.
    expectLabFirst(false);
    expect(await matches()).toEqual([lab1(1)]);
    expect(events).toEqual(['home answers the locate', 'lab asked (1)']);

    // Remembered: the lab is asked before the home answers, once, and its answer is used.
    events.length = 0;
    expectLabFirst(true);
    expect(await matches()).toEqual([lab1(2)]);
    expect(events).toEqual(['lab asked (2)', 'home answers the locate']);
    expect(lab.calls).toHaveLength(2);

    // A custodian the home names anew is asked after the locate, under the grants it names now.
    homeSays = { grants: ['g'], custodians: [LAB, HOME] };
    expectLabFirst(true);
    expect(await matches()).toEqual([lab1(3), `${home.entry.fhirBaseUrl}/Observation/a1/_history/1`]);
    expect(home.calls.map((c) => c.operation)).toEqual([
      'network-locate',
      'network-locate',
      'network-locate',
      'network-records',
    ]);

    // Other grants now: what the lab answered under the old ones is discarded, and it is asked again.
    homeSays = { grants: ['g2'], custodians: [LAB] };
    expectLabFirst(true);
    expect(await matches()).toEqual([lab1(5)]);
    expect(lab.calls).toHaveLength(5);
    const b2b = (a: Record<string, unknown>) =>
      (a.extensions as Record<string, Record<string, unknown>>)['hl7-b2b'];
    expect(lab.assertions.map((a) => b2b(a).consent_reference)).toEqual([['g'], ['g2']]);

    // No grant now: the lab's speculative answer is discarded, only the outcome is answered.
    homeSays = { grants: [], custodians: [] };
    expectLabFirst(true);
    const refused = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;
    expect(lab.calls).toHaveLength(6);
    expect(refused.total).toBe(0);
    expect(refused.entry).toHaveLength(1);
    expect(refused.entry[0].resource.issue![0].details!.coding[0].code).toBe('network-no-grant');
    // "No grant" forgets the answer: the next fetch asks the home alone first.
    events.length = 0;
    expectLabFirst(false);
    await everything.run('Patient/p1', asker, query);
    expect(lab.calls).toHaveLength(6);
  });

  it('reuses the home’s answer while it is fresh (--network-locate-fresh-ms), and asks again once stale or after "no grant"', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const lab = await fakeMember(LAB, 'Lab C');
    const members = new MapMembers();
    members.add(home.entry);
    members.add(lab.entry);
    let grants = ['g'];
    home.on['network-locate'] = (_req, _body, res) =>
      answer(res, 200, locateText(grants, grants.length > 0 ? [HOME, LAB] : []));
    home.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(home.entry, ['a1']));
    lab.on['network-records'] = (_req, _body, res) => answer(res, 200, pendingRecords(lab.entry, ['c1']));
    let clock = 1_000_000;
    const everything = await gateway(members, { locateFreshMs: 1000, now: () => clock });
    const locates = () => home.calls.filter((c) => c.operation === 'network-locate').length;
    const fetchTotal = async (purpose = 'TREAT') =>
      (
        JSON.parse(
          await everything.run('Patient/p1', { ...asker, purposes: [purpose] }, { ...query, purpose }),
        ) as Outcome
      ).total;

    expect(await fetchTotal()).toBe(2);
    expect(locates()).toBe(1);
    // Fresh: the same actor and purpose fetch again without a locate; the custodians still get the grant ids.
    clock += 999;
    expect(await fetchTotal()).toBe(2);
    expect(locates()).toBe(1);
    expect(lab.calls).toHaveLength(2);
    // Another purpose is another question for the home.
    expect(await fetchTotal('ETREAT')).toBe(2);
    expect(locates()).toBe(2);
    // Stale: the home is asked again, and its "no grant" is believed and never reused.
    clock += 1;
    grants = [];
    expect(await fetchTotal()).toBe(0);
    expect(locates()).toBe(3);
    grants = ['g'];
    expect(await fetchTotal()).toBe(2);
    expect(locates()).toBe(4);

    // Without the setting the home is asked on every fetch.
    const always = await gateway(members, { now: () => clock });
    await always.run('Patient/p1', asker, query);
    await always.run('Patient/p1', asker, query);
    expect(locates()).toBe(6);
  });

  it('refuses the whole fetch with 400 network-too-many when a custodian holds more than one answer carries', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const members = new MapMembers();
    members.add(home.entry);
    home.on['network-locate'] = (_req, _body, res) => answer(res, 200, locateText(['g'], [HOME]));
    home.on['network-records'] = (_req, _body, res) =>
      answer(
        res,
        400,
        '{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"too-costly","details":{"coding":[{"system":"https://hie-ledger.dev/fhir/CodeSystem/error","code":"network-too-many"}]}}]}',
      );
    const everything = await gateway(members);
    const err = await everything.run('Patient/p1', asker, query).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FhirError);
    expect((err as FhirError).status).toBe(400);
    expect((err as FhirError).code).toBe('network-too-many');
    expect((err as FhirError).outcome.issue[0].diagnostics).toMatch(/OrgAMSP.*_type, _since/);
  });

  it('gets a new token once when a custodian answers 401 to a cached one', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const members = new MapMembers();
    members.add(home.entry);
    home.on['network-locate'] = (_req, _body, res) => answer(res, 200, locateText(['g'], [HOME]));
    let refused = 0;
    home.on['network-records'] = (req, _body, res) => {
      if (req.headers.authorization === 'Bearer hnt1.2' && refused++ === 0) return answer(res, 401, '{}');
      answer(res, 200, pendingRecords(home.entry, ['a1']));
    };
    const everything = await gateway(members);
    const bundle = JSON.parse(await everything.run('Patient/p1', asker, query)) as Outcome;
    expect(bundle.total).toBe(1);
    expect(home.calls.filter((c) => c.operation === 'network-records').map((c) => c.authorization)).toEqual([
      'Bearer hnt1.2',
      'Bearer hnt1.3',
    ]);
  });
});

describe('verification of a fetch against the ledger', () => {
  let cleanup: () => Promise<void>;
  let chain: EmbeddedChain;
  let orgs: TestOrg[];
  let store: SqliteResourceStore;
  let integrity: IntegrityService;

  beforeEach(async () => {
    let dir: string;
    ({ dir, cleanup } = await tempDir());
    orgs = [await makeOrg(dir, HOME), await makeOrg(dir, SELF)];
    chain = await openChain(dir, orgs);
    await mkdir(path.join(dir, 'a'), { recursive: true });
    store = new SqliteResourceStore({ file: path.join(dir, 'a', 'resources.sqlite') });
    await store.init();
    integrity = await openIntegrity({
      dataDir: path.join(dir, 'a'),
      store,
      ledger: chain.connect(orgs[0].service),
    });
  });

  afterEach(async () => {
    await integrity.close();
    await store.close();
    await chain.close();
    await cleanup();
  });

  async function write(json: string): Promise<StoredVersion> {
    const resource = parseFhirJson<FhirResource>(json);
    return store.write({
      resourceType: resource.resourceType,
      id: resource.id!,
      resource,
      method: 'PUT',
      patients: patientCompartments(resource),
      index: extractIndex(resource),
      custodian: 'Organization/a',
      anchor: integrity.anchorer.anchorFor,
    });
  }

  it('verifies anchored records, and verifies again within the retry time records whose root this peer had not seen', async () => {
    const home = await fakeMember(HOME, 'Hospital A');
    const members = new MapMembers();
    members.add(home.entry);
    const written = [
      await write(
        '{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"g"},"valueQuantity":{"value":1.50}}',
      ),
      await write(
        '{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"g"},"valueQuantity":{"value":1e2}}',
      ),
    ];
    await integrity.anchorer.drain();
    const text = await recordEvidenceBundle(written, { store, journal: integrity.journal }, home.entry);
    home.on['network-locate'] = (_req, _body, res) => answer(res, 200, locateText(['g'], [HOME]));
    home.on['network-records'] = (_req, _body, res) => answer(res, 200, text);

    // B's peer has not received the anchoring block yet; it arrives while B waits between rounds.
    let peerCaughtUp = false;
    let rounds = 0;
    const receiverLedger = chain.connect(orgs[1].service);
    const batchSource = (): BatchSource => {
      const real = new CachedBatchSource(receiverLedger);
      const caughtUp = peerCaughtUp;
      return { readBatch: (root) => (caughtUp ? real.readBatch(root) : Promise.resolve(null)) };
    };
    const sleep = () => {
      rounds++;
      peerCaughtUp = true;
      return Promise.resolve();
    };

    const notRetrying = await gateway(members, { batchSource, sleep, pendingRetryMs: 0 });
    const first = JSON.parse(await notRetrying.run('Patient/p1', asker, query)) as Outcome;
    const statusesOf = (bundle: Outcome) =>
      bundle.entry
        .filter((e) => e.resource.resourceType === 'Provenance')
        .map((e) => e.resource.extension![0].extension.find((p) => p.url === 'status')?.valueCode);
    expect(statusesOf(first)).toEqual(['pending', 'pending']);
    expect(rounds).toBe(0);

    peerCaughtUp = false;
    const retrying = await gateway(members, { batchSource, sleep, pendingRetryMs: 10_000 });
    const bodyText = await retrying.run('Patient/p1', asker, query);
    const second = JSON.parse(bodyText) as Outcome;
    expect(statusesOf(second)).toEqual(['verified', 'verified']);
    expect(rounds).toBe(1);
    // Byte-identical to A's stored text.
    for (const version of written) expect(bodyText).toContain(`"resource":${version.json!},`);
    expect(second.entry.find((e) => e.search.mode === 'outcome')).toBeUndefined();
  });
});
