/**
 * Hidden matches: does a search cost more when many resources match that the caller may not see?
 * Prints a table: a clinician of hospital B searches `Observation?code=X` (one page of 50, and with
 * `_total=accurate`) while N Observations with that code exist that only hospital A may see (N = 0, 1,000,
 * 10,000), first with few grants, then with 10,000 patients' grants to hospital B. Each row gives the median time
 * with the read scope inside the query (the service's path) and, for comparison, filtered after the query
 * (canRead on every match, the former path), each as a ratio to the same search on a store without hidden
 * matches, the stores measured in turn in the same run. In process: the SQLite store, the real access policy and consent cache (grants loaded from a consent
 * checkpoint, as the service does at start), no HTTP.
 * Run: npm run bench:hidden
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedCa } from '../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../src/ledger/embedded/index.js';
import { ConsentService, type LedgerGrant } from '../src/consent/consent-service.js';
import { AccessControl } from '../src/access/caller-access-policy.js';
import { patientCompartmentTypes } from '../src/access/setup.js';
import type { Caller } from '../src/fhir/interactions/access-policy.js';
import { SqliteResourceStore } from '../src/fhir/store/sqlite/sqlite-store.js';
import { searchSqlite } from '../src/fhir/store/sqlite/sqlite-search.js';
import { parseSearch } from '../src/fhir/search/parse.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import type { FhirResource } from '../src/fhir/fhir-json.js';
import { TestPseudonyms } from '../test/ledger/helpers.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const HOSP_A = 'Organization/hosp-a';
const HOSP_B = 'Organization/hosp-b';
const caller: Caller = {
  participant: 'bench-dr-b',
  role: 'clinician',
  organization: HOSP_B,
  fhirUser: 'Practitioner/dr-b',
  scopes: ['user/*.rs'],
};

const observation = (id: string, patient: string): FhirResource => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '2339-0' }] },
  subject: { reference: patient },
  valueQuantity: { value: 95, unit: 'mg/dL' },
});

async function writeObservations(
  store: SqliteResourceStore,
  from: number,
  to: number,
  prefix: string,
  custodian: string,
  patientOf: (i: number) => string,
): Promise<void> {
  await store.transaction(async (tx) => {
    for (let i = from; i < to; i++) {
      const resource = observation(`${prefix}-${i}`, patientOf(i));
      await tx.write({
        resourceType: 'Observation',
        id: resource.id!,
        method: 'PUT',
        resource,
        custodian,
        patients: [patientOf(i)],
        index: extractIndex(resource),
      });
    }
  });
}

interface Setup {
  store: SqliteResourceStore;
  control: AccessControl;
  close(): Promise<void>;
}

/**
 * A store and a consent cache whose checkpoint holds `grants` patients' grants to hospital B, with `hidden`
 * Observations of hospital A's own patients (no grants): matches hospital B may not see.
 */
async function setup(dir: string, grants: number, hidden: number): Promise<Setup> {
  const pseudonyms = new TestPseudonyms();
  const ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: 'Org1MSP' });
  const { chain, release } = await acquireChain({
    file: join(dir, 'chain.sqlite'),
    msps: [{ mspId: 'Org1MSP', rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
  });
  const ledger = chain.connect(await serviceIdentity(ca, join(dir, 'svc')));
  const checkpointFile = join(dir, 'checkpoints', 'consent.json');
  const records: { record: LedgerGrant; blockNumber: number; patient: string; consent: string }[] = [];
  for (let i = 0; i < grants; i++) {
    const record: LedgerGrant = {
      docType: 'grant',
      grantId: `bench-grant-${i}`,
      patientTag: '0'.repeat(64),
      grantee: pseudonyms.pseudonymOf(HOSP_B),
      granteeMsp: 'Org1MSP',
      homeMsp: 'Org1MSP',
      classes: [],
      deny: [],
      purpose: ['TREAT'],
      status: 'active',
      grantedInPerson: false,
      grantedTxId: `tx-${i}`,
      grantedAt: '2026-01-01T00:00:00.000Z',
    };
    records.push({
      record,
      blockNumber: 0,
      patient: pseudonyms.pseudonymOf(`Patient/granted-${i}`),
      consent: pseudonyms.pseudonymOf(`Consent/k-${i}`),
    });
  }
  mkdirSync(join(dir, 'checkpoints'), { recursive: true });
  writeFileSync(
    checkpointFile,
    JSON.stringify({ format: 2, nextBlock: await ledger.height(), grants: records }),
  );
  const consent = await ConsentService.open({ ledger, pseudonyms, checkpointFile });
  const control = new AccessControl({ compartmentTypes: patientCompartmentTypes(), consent });
  const store = new SqliteResourceStore({ file: join(dir, 'resources.sqlite') });
  await store.init();
  // Hospital B's own record: 50 Observations of 10 patients.
  await writeObservations(store, 0, 50, 'own', HOSP_B, (i) => `Patient/own-${i % 10}`);
  // Each granting patient's Observation, held by hospital A: visible to B under the grant.
  await writeObservations(store, 0, grants, 'granted', HOSP_A, (i) => `Patient/granted-${i}`);
  await writeObservations(store, 0, hidden, 'hidden', HOSP_A, (i) => `Patient/a-${i % 1000}`);
  return {
    store,
    control,
    close: async () => {
      await store.close();
      await consent.close();
      await release();
    },
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** One timed search for the caller: the read scope in the query, or canRead after the query only. */
function timeOnce(s: Setup, total: boolean, inQuery: boolean): { ms: number; found: number } {
  const query = parseSearch(
    { code: ['http://loinc.org|2339-0'], ...(total ? { _total: ['accurate'] } : {}) },
    { resourceType: 'Observation' },
  );
  const policy = s.control.policyFor(caller); // one per request, as the service makes them
  const start = process.hrtime.bigint();
  const result = searchSqlite(s.store.db, {
    query,
    canRead: (v) => policy.canRead(v),
    scope: inQuery ? (t) => policy.readScope(t) : undefined,
    wantTotal: total,
  });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  return { ms, found: total ? result.total! : result.versions.length };
}

const rows: string[][] = [];
const HIDDEN = [0, 1_000, 10_000];

/**
 * One store per hidden count (the same grants and visible data in each), measured in alternation, so that the
 * machine's load falls on every store alike and the ratios to the store without hidden matches hold.
 */
async function scenario(grants: number): Promise<void> {
  const dirs = HIDDEN.map(() => mkdtempSync(join(tmpdir(), 'hie-bench-hidden-')));
  const setups: Setup[] = [];
  try {
    for (const [i, hidden] of HIDDEN.entries()) setups.push(await setup(dirs[i]!, grants, hidden));
    for (const total of [false, true]) {
      for (const inQuery of [true, false]) {
        const samples = HIDDEN.map(() => [] as number[]);
        const found = HIDDEN.map(() => 0);
        for (let run = 0; run < RUNS + 3; run++) {
          setups.forEach((s, i) => {
            const { ms, found: n } = timeOnce(s, total, inQuery);
            found[i] = n;
            if (run >= 3) samples[i]!.push(ms);
          });
        }
        const medians = samples.map(median);
        HIDDEN.forEach((hidden, i) =>
          rows.push([
            grants.toLocaleString('en'),
            hidden.toLocaleString('en'),
            total ? 'accurate' : 'page of 50',
            inQuery ? 'in the query' : 'after the query',
            medians[i]!.toFixed(3),
            `${(medians[i]! / medians[0]!).toFixed(2)}x`,
            found[i]!.toLocaleString('en'),
          ]),
        );
      }
    }
  } finally {
    for (const s of setups) await s.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}

await scenario(0);
await scenario(10_000);

const header = [
  'grants',
  'hidden matches',
  '_total',
  'access filter',
  'median ms',
  'vs none',
  'visible found',
];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
console.log(
  `Observation?code=X for a clinician of hospital B (median of ${RUNS} runs, stores measured in turn)`,
);
console.log(line(header));
for (const row of rows) console.log(line(row));
