/**
 * `npm run bench:exchange`: a clinician at B fetches one Synthea patient's records (about 300 resources) from the
 * other members with `$network-everything`, every record verified against the ledger, with the records spread
 * over 1, 3 and 10 custodians, with warm tokens (B's token cache holds a token for each custodian) and cold ones
 * (a token request per custodian first), warm tokens with the home's locate answer reused while fresh
 * (`--network-locate-fresh-ms`: no locate call), and an injected round trip of 20 ms per call to a custodian. Next to it,
 * in the same run, interleaved: the same patient's local `$everything` at B (the same records in B's own store).
 * Prints p50 and p99 per case and the ratios to the local `$everything`, and the CPU time per fetch (the whole
 * process: B and the custodians), which a loaded machine stretches less than wall time.
 *
 * What runs for real: B's initiating gateway (src/exchange/network-everything.ts: locate, parallel fan-out over
 * MemberHttpClient with NetworkTokenClient tokens, verifyEvidenceBundle against the embedded chain, assembly), and
 * at each custodian its network token service (the client assertion checked against B's certificate, replay
 * cache) and its evidence Bundle (recordEvidenceBundle over its own SQLite store and batch journal, its records
 * anchored on the shared chain by its own MSP). Each custodian is a loopback HTTP server answering after 20 ms.
 * Its `$network-records` here reads the patient's records by id: the custodian's grant checks and disclosure
 * records (the responding side's operation) are not in these figures.
 *
 * Run: npx tsx bench/exchange.ts [rounds=40]
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OpenAccess } from '../src/fhir/interactions/access-policy.js';
import type { FhirContext, FhirRequest } from '../src/fhir/interactions/types.js';
import { everythingHandler } from '../src/fhir/operations/everything.js';
import { parseFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';
import { patientCompartments } from '../src/fhir/search/definitions.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import type { StoredVersion } from '../src/fhir/store/resource-store.js';
import { SqliteResourceStore } from '../src/fhir/store/sqlite/sqlite-store.js';
import { createSchemaValidator } from '../src/fhir/validation/schema.js';
import { openIntegrity, type IntegrityService } from '../src/integrity/integrity-service.js';
import { CachedBatchSource } from '../src/integrity/verification.js';
import { MemberHttpClient } from '../src/exchange/member-http.js';
import type { MemberEntry, MemberLookup } from '../src/exchange/members.js';
import { NetworkEverything, type NetworkAsker } from '../src/exchange/network-everything.js';
import { NetworkTokenClient } from '../src/exchange/network-token-client.js';
import { NetworkTokenService } from '../src/exchange/network-tokens.js';
import { recordEvidenceBundle } from '../src/exchange/record-evidence.js';
import { makeOrg, openChain } from '../test/ledger/helpers.js';
import { selfSigned } from '../test/exchange/helpers.js';

const ROUNDS = Number(process.argv[2] ?? 40);
const ROUND_TRIP_MS = 20;
const CUSTODIAN_COUNTS = [1, 3, 10];
const NPID = randomBytes(32).toString('base64url');
const GRANT = 'grant-bench-1';

// The patient: the Synthea bundle whose patient compartment is closest to 300 resources.
const syntheaDir = join(process.cwd(), '../shared/data/synthea-bundles');
function patientRecords(file: string): { patient: string; resources: FhirResource[] } {
  const bundle = parseFhirJson<{ entry: { fullUrl: string; resource: FhirResource }[] }>(
    readFileSync(join(syntheaDir, file), 'utf8'),
  );
  // urn:uuid references -> Type/id, as a server's transaction would resolve them.
  const byUrl = new Map(bundle.entry.map((e) => [e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`]));
  const text = JSON.stringify(bundle.entry.map((e) => e.resource)).replace(
    /"(urn:uuid:[0-9a-fA-F-]{36})"/g,
    (quoted, url: string) => (byUrl.has(url) ? `"${byUrl.get(url)}"` : quoted),
  );
  const resources = parseFhirJson<FhirResource[]>(text);
  const patient = resources.find((r) => r.resourceType === 'Patient')!;
  const ref = `Patient/${patient.id}`;
  return { patient: ref, resources: resources.filter((r) => patientCompartments(r).includes(ref)) };
}
const files = readdirSync(syntheaDir)
  .filter((f) => f.endsWith('.json'))
  .sort();
const { patient: patientRef, resources } = files
  .map((f) => patientRecords(f))
  .reduce((best, p) =>
    Math.abs(p.resources.length - 300) < Math.abs(best.resources.length - 300) ? p : best,
  );

const dir = mkdtempSync(join(tmpdir(), 'hie-bench-exchange-'));
const maxCustodians = Math.max(...CUSTODIAN_COUNTS);
const orgs = await Promise.all(
  ['BenchBMSP', ...Array.from({ length: maxCustodians }, (_, i) => `BenchC${i}MSP`)].map((msp) =>
    makeOrg(dir, msp),
  ),
);
const chain = await openChain(dir, orgs);
const silent = { info() {}, warn() {}, error() {}, debug() {} };

interface Custodian {
  entry: MemberEntry;
  store: SqliteResourceStore;
  integrity: IntegrityService;
  server: Server;
  tokens: NetworkTokenService;
  /** The patient's records this custodian holds (ids), for each custodian count. */
  holds: Map<number, StoredVersion[]>;
}

async function openStore(name: string, mspIndex: number) {
  const dataDir = join(dir, name);
  mkdirSync(dataDir, { recursive: true });
  const store = new SqliteResourceStore({ file: join(dataDir, 'resources.sqlite') });
  await store.init();
  const integrity = await openIntegrity({
    dataDir,
    store,
    ledger: chain.connect(orgs[mspIndex].service),
    anchoring: { batchSize: 10_000 },
  });
  return { store, integrity };
}

async function writeAll(
  store: SqliteResourceStore,
  integrity: IntegrityService,
  list: FhirResource[],
  custodian: string,
) {
  const versions: StoredVersion[] = [];
  for (const resource of list)
    versions.push(
      await store.write({
        resourceType: resource.resourceType,
        id: resource.id!,
        resource,
        method: 'PUT',
        patients: patientCompartments(resource),
        index: extractIndex(resource),
        custodian,
        anchor: integrity.anchorer.anchorFor,
      }),
    );
  await integrity.anchorer.drain();
  return versions;
}

// B: its own store with the same records (the local $everything baseline), and its service key.
const b = await openStore('b', 0);
await writeAll(b.store, b.integrity, resources, 'Organization/b');
const bKey = await selfSigned('bench-b-service');
const bEntry: MemberEntry = {
  mspId: 'BenchBMSP',
  organization: 'Hospital B',
  fhirBaseUrl: 'http://127.0.0.1:1/fhir',
  serviceCertificate: bKey.certificatePem,
  status: 'active',
};

function delay(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ROUND_TRIP_MS));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

function reply(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type });
  res.end(body);
}

/** Which slice of the patient's records custodian i holds when there are n custodians. */
const sliceOf = (i: number, n: number) => resources.filter((_, k) => k % n === i);

const custodians: Custodian[] = [];
const directory = new Map<string, MemberEntry>([[bEntry.mspId, bEntry]]);
const members: MemberLookup = { member: (msp) => Promise.resolve(directory.get(msp)) };
let countNow = 1;
for (let i = 0; i < maxCustodians; i++) {
  const { store, integrity } = await openStore(`c${i}`, i + 1);
  // Every record this custodian holds in any configuration, written once (anchored by its own MSP).
  const mine = resources.filter((_, k) => CUSTODIAN_COUNTS.some((n) => i < n && k % n === i));
  const written = await writeAll(store, integrity, mine, `Organization/c${i}`);
  const byKey = new Map(written.map((v) => [`${v.resourceType}/${v.id}`, v]));
  const holds = new Map<number, StoredVersion[]>();
  for (const n of CUSTODIAN_COUNTS)
    if (i < n)
      holds.set(
        n,
        sliceOf(i, n).map((r) => byKey.get(`${r.resourceType}/${r.id}`)!),
      );
  const tokens = new NetworkTokenService({ members, secret: randomBytes(32), allowedPurposes: ['TREAT'] });
  const custodian: Custodian = {
    entry: {
      mspId: orgs[i + 1].msp.mspId,
      organization: `Custodian ${i}`,
      fhirBaseUrl: '',
      serviceCertificate: '',
      status: 'active',
    },
    store,
    integrity,
    server: createServer(),
    tokens,
    holds,
  };
  custodian.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const body = await readBody(req);
      await delay(); // the injected round trip
      if (req.url === '/auth/token') {
        try {
          const form = Object.fromEntries(new URLSearchParams(body));
          const origin = new URL(custodian.entry.fhirBaseUrl).origin;
          const answer = await tokens.exchange(form, `${origin}/auth/token`);
          return reply(res, 200, 'application/json', JSON.stringify(answer));
        } catch (err) {
          return reply(
            res,
            400,
            'application/json',
            JSON.stringify({ error: (err as { error?: string }).error ?? 'invalid_request' }),
          );
        }
      }
      const bearer = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      try {
        await tokens.verify(bearer);
      } catch {
        return reply(res, 401, 'application/fhir+json', '{}');
      }
      if (req.url === '/fhir/$network-locate')
        return reply(
          res,
          200,
          'application/fhir+json',
          JSON.stringify({
            resourceType: 'Parameters',
            parameter: [
              { name: 'grant', valueString: GRANT },
              ...custodians.slice(0, countNow).map((c) => ({
                name: 'custodian',
                part: [
                  { name: 'member', valueString: c.entry.mspId },
                  { name: 'endpoint', valueUrl: c.entry.fhirBaseUrl },
                ],
              })),
            ],
          }),
        );
      if (req.url === '/fhir/$network-records') {
        // The current versions of what it holds for the patient, with their evidence.
        const current: StoredVersion[] = [];
        for (const v of custodian.holds.get(countNow) ?? []) {
          const now = await store.read(v.resourceType, v.id);
          if (now && !now.deleted) current.push(now);
        }
        const text = await recordEvidenceBundle(
          current,
          { store, journal: integrity.journal },
          custodian.entry,
        );
        return reply(res, 200, 'application/fhir+json', text);
      }
      reply(res, 404, 'application/fhir+json', '{}');
    })();
  });
  await new Promise<void>((resolve) => custodian.server.listen(0, '127.0.0.1', resolve));
  custodian.entry.fhirBaseUrl = `http://127.0.0.1:${(custodian.server.address() as AddressInfo).port}/fhir`;
  directory.set(custodian.entry.mspId, custodian.entry);
  custodians.push(custodian);
}

// B's gateway.
const http = new MemberHttpClient({
  localNetwork: true,
  maxResponseBytes: 64 * 1024 * 1024,
  connectionsPerMember: 4,
  memberTimeoutMs: 10_000,
});
const bLedger = chain.connect(orgs[0].service);
const warmTokens = new NetworkTokenClient({
  identity: { mspId: bEntry.mspId, privateKey: bKey.privateKey },
  http,
});
let tokens = warmTokens;
const gatewayOptions = {
  mspId: bEntry.mspId,
  links: {
    npidOf: () => Promise.resolve(NPID),
    homeOf: () => Promise.resolve(custodians[0].entry.mspId),
    localPatientsOf: () => Promise.resolve([]),
    custodiansOf: () => Promise.resolve([]),
  },
  members,
  tokens: () => tokens,
  batchSource: () => new CachedBatchSource(bLedger),
  deadlineMs: 20_000,
  pendingRetryMs: 0,
};
// The home asked on every fetch (the default: the custodians it named last time asked meanwhile), and a gateway
// reusing a fresh locate answer (--network-locate-fresh-ms). One of each per custodian count: the home lists a
// different set of custodians for each (one patient in this bench), as it would for different patients.
const everything = new Map(CUSTODIAN_COUNTS.map((n) => [n, new NetworkEverything(gatewayOptions)]));
const everythingFresh = new Map(
  CUSTODIAN_COUNTS.map((n) => [n, new NetworkEverything({ ...gatewayOptions, locateFreshMs: 60_000 })]),
);
const asker: NetworkAsker = {
  member: bEntry.mspId,
  actor: 'bench-clinician',
  role: 'clinician',
  purposes: ['TREAT'],
};
const query = { dates: [], codes: [], categories: [], purpose: 'TREAT' };

// The local baseline: $everything of the same patient in B's store, every record on one page.
const validator = await createSchemaValidator({ cacheDir: join(dir, 'cache') });
const localContext: FhirContext = { store: b.store, validator, access: new OpenAccess(), log: silent };
const localRequest: FhirRequest = {
  interaction: 'operation',
  method: 'GET',
  resourceType: 'Patient',
  id: patientRef.slice('Patient/'.length),
  operation: 'everything',
  query: { _count: ['1000'] },
  baseUrl: 'http://b.example/fhir',
};
async function localEverything(): Promise<number> {
  const res = await everythingHandler(localRequest, localContext);
  return (res.body as string).length;
}

type Warmth = 'fresh locate' | 'warm' | 'cold';
async function networkFetch(count: number, warmth: Warmth): Promise<string> {
  countNow = count;
  tokens =
    warmth !== 'cold'
      ? warmTokens
      : new NetworkTokenClient({ identity: { mspId: bEntry.mspId, privateKey: bKey.privateKey }, http });
  return (warmth === 'fresh locate' ? everythingFresh : everything).get(count)!.run(patientRef, asker, query);
}

/** Outside the timings: every record of a fetch verified (the answer parsed once per case, at warm-up). */
function checkVerified(name: string, text: string): void {
  const bundle = JSON.parse(text) as {
    entry: {
      resource: { resourceType: string; extension?: { extension: { url: string; valueCode?: string }[] }[] };
    }[];
  };
  const verified = bundle.entry.filter(
    (e) =>
      e.resource.resourceType === 'Provenance' &&
      e.resource.extension?.[0].extension.some((p) => p.url === 'status' && p.valueCode === 'verified'),
  ).length;
  if (verified !== resources.length) throw new Error(`${name}: ${verified} of ${resources.length} verified`);
}

/**
 * `roundTrips`: the injected round trips one after the other (fresh locate: records only; warm: the locate and the
 * records of the custodians the home named last time at once; cold: a token first, then the same).
 */
type Case = { name: string; roundTrips: number; run: () => Promise<unknown> };
const cases: Case[] = [{ name: 'local $everything at B (baseline)', roundTrips: 0, run: localEverything }];
const ROUND_TRIPS: Record<Warmth, number> = { 'fresh locate': 1, warm: 1, cold: 2 };
const LABEL: Record<Warmth, string> = {
  'fresh locate': 'warm tokens, fresh locate',
  warm: 'warm tokens',
  cold: 'cold tokens',
};
for (const n of CUSTODIAN_COUNTS)
  for (const warmth of ['fresh locate', 'warm', 'cold'] as const)
    cases.push({
      name: `$network-everything, ${n} custodian${n > 1 ? 's' : ''}, ${LABEL[warmth]}`,
      roundTrips: ROUND_TRIPS[warmth],
      run: () => networkFetch(n, warmth),
    });

try {
  const bytes = resources.reduce((s, r) => s + JSON.stringify(r).length, 0);
  console.log(
    `${patientRef}: ${resources.length} resources of its compartment (mean ${Math.round(bytes / resources.length)} B), ` +
      `verified from 1, 3 or 10 custodians (records spread evenly), ${ROUND_TRIP_MS} ms injected per custodian call; ` +
      `${ROUNDS} rounds, the cases interleaved\n`,
  );
  // Warm-up (caches, JIT, connections), and the check that every fetch verifies every record.
  for (const c of cases) {
    const out = await c.run();
    if (typeof out === 'string') checkVerified(c.name, out);
  }
  const times = cases.map(() => [] as number[]);
  // CPU time of the whole process per fetch (B and every custodian: they share it here), steadier than wall time
  // on a shared machine: the injected round trips cost none.
  const cpuTimes = cases.map(() => [] as number[]);
  for (let round = 0; round < ROUNDS; round++)
    for (const [i, c] of cases.entries()) {
      const cpu0 = process.cpuUsage();
      const start = performance.now();
      await c.run();
      times[i].push(performance.now() - start);
      const cpu = process.cpuUsage(cpu0);
      cpuTimes[i].push((cpu.user + cpu.system) / 1000);
    }
  const pct = (sorted: number[], p: number) =>
    sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
  const stats = times.map((t, i) => {
    const sorted = [...t].sort((x, y) => x - y);
    const cpuSorted = [...cpuTimes[i]].sort((x, y) => x - y);
    return { p50: pct(sorted, 50), p99: pct(sorted, 99), cpu50: pct(cpuSorted, 50) };
  });
  const local = stats[0];
  const target = 3 * local.p50 + ROUND_TRIP_MS;
  console.table(
    cases.map((c, i) => ({
      case: c.name,
      'p50 ms': Number(stats[i].p50.toFixed(1)),
      'p99 ms': Number(stats[i].p99.toFixed(1)),
      'p50 / local p50': Number((stats[i].p50 / local.p50).toFixed(2)),
      // What is left once the injected latency is taken out: B's and the custodians' own work.
      'p50 less injected ms': Number((stats[i].p50 - c.roundTrips * ROUND_TRIP_MS).toFixed(1)),
      '(p50 less injected) / local p50': Number(
        ((stats[i].p50 - c.roundTrips * ROUND_TRIP_MS) / local.p50).toFixed(2),
      ),
      'CPU ms p50': Number(stats[i].cpu50.toFixed(1)),
      'CPU / local CPU': Number((stats[i].cpu50 / local.cpu50).toFixed(2)),
    })),
  );
  const p50Of = (name: string) => stats[cases.findIndex((c) => c.name.endsWith(name))].p50;
  const fresh3 = p50Of('3 custodians, warm tokens, fresh locate');
  const warm3 = p50Of('3 custodians, warm tokens');
  const warm3Cpu = stats[cases.findIndex((c) => c.name.endsWith('3 custodians, warm tokens'))].cpu50;
  console.log(
    `\ntarget (issue 14): warm tokens, 3 custodians, p50 under 3 x local p50 + one round trip = ${target.toFixed(1)} ms; ` +
      `measured ${fresh3.toFixed(1)} ms with a fresh locate answer (${fresh3 < target ? 'met' : 'NOT met'}: one round trip), ` +
      `${warm3.toFixed(1)} ms asking the home every time (${warm3 < target ? 'met' : 'NOT met'}: ` +
      `one round trip: the locate and the custodians the home named last time asked at once, ${ROUND_TRIP_MS} ms injected).`,
  );
  console.log(
    `CPU (all parties in this one process): warm tokens, 3 custodians ${warm3Cpu.toFixed(1)} ms per fetch = ` +
      `${(warm3Cpu / local.cpu50).toFixed(2)} x the local $everything's ${local.cpu50.toFixed(1)} ms ` +
      `(the target's work budget: 3 x; on an idle machine, wall time is about this CPU time plus the round trip).`,
  );
} finally {
  http.close();
  for (const c of custodians) {
    c.server.closeAllConnections();
    await new Promise<void>((resolve) => c.server.close(() => resolve()));
    await c.integrity.close();
    await c.store.close();
  }
  await b.integrity.close();
  await b.store.close();
  await chain.close();
  rmSync(dir, { recursive: true, force: true });
}
