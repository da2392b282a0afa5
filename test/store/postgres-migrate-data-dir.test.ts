/**
 * `hie-ledger migrate --database-url URL --from-data-dir DIR` (docs/replicas.md, "Moving a deployment to
 * replicas"), through the real CLI: a single-node data directory's participants (registered by the CLI), pseudonyms,
 * network patient ids, grant index, home MSP and bulk jobs (written by the classes the service writes them with) are
 * copied into the shared tables, the jobs' files into --bulk-dir; a replica on the database then serves the
 * migrated job. A second run copies nothing and changes nothing; a data directory that disagrees with the database
 * is refused with the conflicts named, and nothing of it is copied. Needs HIE_TEST_POSTGRES_URL.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { NetworkIds } from '../../src/consent/network-ids.js';
import { ParticipantDirectory } from '../../src/access/participants.js';
import { SqliteBulkJobStore } from '../../src/bulk/job-store.js';
import { PatientLinkStore, patientLinksFileIn } from '../../src/exchange/patient-links.js';
import { PostgresPatientLinks } from '../../src/exchange/postgres-patient-links.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { runCli } from '../support/cli-process.js';
import { bootApp, send } from '../support/app-harness.js';

const skip = postgresSkipReason('hie-ledger migrate --from-data-dir');
const schema = `hie_copy_${randomBytes(6).toString('hex')}`;
const databaseUrl = `${POSTGRES_URL}${POSTGRES_URL?.includes('?') ? '&' : '?'}schema=${schema}`;
/** The schema two different nodes are merged into. */
const mergedSchema = `hie_merge_${randomBytes(6).toString('hex')}`;
const mergedUrl = `${POSTGRES_URL}${POSTGRES_URL?.includes('?') ? '&' : '?'}schema=${mergedSchema}`;
const roots: string[] = [];
function folder(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  roots.push(dir);
  return dir;
}

async function cli(args: string[]): Promise<{ code: number | null; output: string }> {
  const started = runCli(args);
  const code = await started.exited;
  return { code, output: started.output() };
}

/** A single node's data directory as its service leaves it: what migrate copies. */
async function singleNode(participant: string, patient: string, npidOfNode: string): Promise<string> {
  const dataDir = folder('hie-single-node-');
  const registered = await cli([
    ...['participant', 'register', '--data-dir', dataDir],
    ...['--role', 'system', '--id', participant, '--resource', 'Organization/hosp-a'],
  ]);
  expect(registered.code, registered.output).toBe(0);
  const directory = ParticipantDirectory.open(dataDir);
  directory.pseudonymOf(patient);
  directory.pseudonymOf('Organization/hosp-b');
  directory.close();
  const ids = new NetworkIds(join(dataDir, 'identity', 'network-ids.sqlite'));
  ids.noteHomeMsp('Org1MSP');
  ids.npidOf(patient);
  ids.grantIdOf({ patientReference: patient, patient: 'pp1', grantee: 'pg1', consent: 'pc1' });
  ids.close();
  const links = new PatientLinkStore(patientLinksFileIn(dataDir));
  links.link({
    localPatient: patient,
    npid: npidOfNode,
    homeMsp: 'Org3MSP',
    linkedAt: '2026-01-01T00:00:00.000Z',
  });
  links.link({
    localPatient: patient,
    npid: `${npidOfNode}2`,
    homeMsp: 'Org3MSP',
    linkedAt: '2026-01-02T00:00:00.000Z',
  });
  links.locate('npid-at-home', 'Org2MSP', '2026-01-01T00:00:00.000Z');
  links.spend(
    'Org3MSP jti-1',
    Date.parse('2027-01-01T00:00:00.000Z'),
    Date.parse('2026-01-01T00:00:00.000Z'),
  );
  links.close();
  return dataDir;
}

/** A node whose one Patient was linked, then relinked (an ended link, a wrong-link report) and disclosed. */
function linkingNode(patient: string, npid: string): string {
  const dataDir = folder('hie-linking-node-');
  const links = new PatientLinkStore(patientLinksFileIn(dataDir));
  links.link({ localPatient: patient, npid, homeMsp: 'Org3MSP', linkedAt: '2026-01-01T00:00:00.000Z' });
  links.noteDisclosure({
    localPatient: patient,
    npid,
    at: '2026-01-01T12:00:00.000Z',
    accessorMsp: 'Org2MSP',
    accessor: 'pa1',
    purpose: 'TREAT',
    records: 2,
    types: ['Patient', 'Observation'],
    auditEvent: `audit-${patient}`,
  });
  links.link({
    localPatient: patient,
    npid: `${npid}2`,
    homeMsp: 'Org3MSP',
    linkedAt: '2026-01-02T00:00:00.000Z',
  });
  links.close();
  return dataDir;
}

/** Every shared table's rows, as text (to compare before and after). */
async function tablesOf(pool: pg.Pool, schemaName = schema): Promise<string> {
  const dump: Record<string, unknown[]> = {};
  for (const table of [
    'participant',
    'ref_pseudonym',
    'network_patient',
    'grant_link',
    'network_meta',
    'bulk_job',
    'patient_link',
    'patient_link_history',
    'spent_link_token',
    'wrong_link_report',
    'link_locator',
    'link_disclosure',
  ])
    dump[table] = (await pool.query(`SELECT * FROM "${schemaName}".${table} ORDER BY 1`)).rows;
  return JSON.stringify(dump);
}

describe.skipIf(skip !== undefined)('hie-ledger migrate --from-data-dir', () => {
  afterAll(async () => {
    for (const dir of roots) rmSync(dir, { recursive: true, force: true });
    if (!POSTGRES_URL) return;
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
    for (const name of [schema, mergedSchema]) await pool.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
    await pool.end();
  });

  it('copies a single node into the shared tables once, and refuses a conflicting one', async () => {
    const dataDir = await singleNode('ehr-1', 'Patient/p1', 'n'.repeat(43));
    // A finished export of the single node, as its job store keeps it.
    const jobs = new SqliteBulkJobStore(join(dataDir, 'bulk'));
    const job = '00000000-0000-4000-8000-000000000001';
    await jobs.create({
      id: job,
      kind: 'export',
      owner: 'dev-open',
      request: JSON.stringify({
        request: {
          level: 'system',
          types: ['Patient'],
          typeFilters: [],
          requestUrl: 'http://hie.test/fhir/$export',
          baseUrl: 'http://hie.test/fhir',
        },
        caller: { caller: { participant: 'dev-open', role: 'open', scopes: ['system/*.*'] } },
      }),
      state: '{}',
      createdAt: Date.now(),
    });
    const line = '{"resourceType":"Patient","id":"p1"}\n';
    writeFileSync(join(jobs.filesDir('export', job), 'Patient.ndjson'), line);
    expect(await jobs.claim('export')).toBe(job);
    const state = {
      transactionTime: new Date().toISOString(),
      step: 1,
      listed: false,
      listOffset: 0,
      files: { 'Patient.ndjson': { type: 'Patient', count: 1, bytes: line.length } },
      exported: 1,
      warnings: [],
    };
    await jobs.finish(job, { status: 'completed', state: JSON.stringify(state) }, 3_600_000);
    await jobs.close();

    const bulkDir = folder('hie-bulk-shared-');
    const migrate = (from: string) =>
      cli(['migrate', '--database-url', databaseUrl, '--from-data-dir', from, '--bulk-dir', bulkDir]);
    const first = await migrate(dataDir);
    expect(first.code, first.output).toBe(0);
    expect(first.output).toContain(`participants: 1 in ${dataDir}, 1 copied, 0 already there`);
    // The participant's own pseudonym is not a reference's: two references.
    expect(first.output).toContain(`pseudonyms: 2 in ${dataDir}, 2 copied, 0 already there`);
    expect(first.output).toContain(`network patient ids: 1 in ${dataDir}, 1 copied`);
    expect(first.output).toContain(`grant index: 1 in ${dataDir}, 1 copied`);
    expect(first.output).toContain(`network meta (home MSP): 1 in ${dataDir}, 1 copied`);
    expect(first.output).toContain(`bulk jobs: 1 in ${dataDir}, 1 copied`);
    // The relink ended the first link as corrected, with a pending wrong-link report.
    expect(first.output).toContain(`patient links: 1 in ${dataDir}, 1 copied`);
    expect(first.output).toContain(`ended patient links: 1 in ${dataDir}, 1 copied`);
    expect(first.output).toContain(`wrong-link reports: 1 in ${dataDir}, 1 copied`);
    expect(first.output).toContain(`link locator: 1 in ${dataDir}, 1 copied`);
    expect(first.output).toContain(`redeemed link tokens: 1 in ${dataDir}, 1 copied`);
    expect(readFileSync(join(bulkDir, 'export', job, 'Patient.ndjson'), 'utf8')).toBe(line);

    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
    try {
      const copied = await tablesOf(pool);
      expect(copied).toContain('"patient_link":[{"local_patient":"Patient/p1"');
      const { rows } = await pool.query(
        `SELECT client_id, role, status FROM "${schema}".participant ORDER BY client_id`,
      );
      expect(rows).toEqual([{ client_id: 'ehr-1', role: 'system', status: 'registered' }]);
      const ids = new NetworkIds(join(dataDir, 'identity', 'network-ids.sqlite'));
      const npid = ids.npidOf('Patient/p1');
      ids.close();
      const npids = await pool.query(`SELECT reference, npid FROM "${schema}".network_patient`);
      expect(npids.rows).toEqual([{ reference: 'Patient/p1', npid }]);
      // Read as a replica reads them.
      const links = new PostgresPatientLinks(pool, schema);
      expect(await links.linkOf('Patient/p1')).toMatchObject({
        npid: `${'n'.repeat(43)}2`,
        homeMsp: 'Org3MSP',
      });
      expect(await links.custodiansOf('npid-at-home')).toEqual(['Org2MSP']);
      const [pending] = await links.pendingReports();
      expect(pending).toMatchObject({ ended: { reason: 'corrected', npid: 'n'.repeat(43) } });

      // Again: nothing copied, nothing changed.
      const second = await migrate(dataDir);
      expect(second.code, second.output).toBe(0);
      expect(second.output).toContain(`participants: 1 in ${dataDir}, 0 copied, 1 already there`);
      expect(second.output).toContain(`bulk jobs: 1 in ${dataDir}, 0 copied, 1 already there`);
      expect(await tablesOf(pool)).toBe(copied);

      // Another node with its own pseudonym and npid for the same patient: refused, nothing of it copied.
      const other = await singleNode('ehr-2', 'Patient/p1', 'm'.repeat(43));
      const refused = await migrate(other);
      expect(refused.code, refused.output).toBe(3);
      expect(refused.output).toContain('nothing was copied');
      expect(refused.output).toContain('ref_pseudonym reference=Patient/p1: differs in pseudonym');
      expect(refused.output).toContain('network_patient reference=Patient/p1: differs in npid');
      expect(refused.output).toContain('patient_link local_patient=Patient/p1: differs in npid');
      expect(refused.output).not.toContain(npid);
      expect(await tablesOf(pool)).toBe(copied);

      // A replica on the database serves the migrated job and its file from the shared folder.
      const replica = await bootApp(
        { auth: 'dev-open', logLevel: 'warn', store: 'postgres', databaseUrl, anchoring: 'off', bulkDir },
        {},
        'hie-copy-replica-',
      );
      try {
        const manifest = JSON.parse((await send(replica.app, { url: `/fhir/bulk/export/${job}` }, 200)).body);
        expect(manifest.output).toEqual([expect.objectContaining({ type: 'Patient', count: 1 })]);
        const file = await send(replica.app, { url: new URL(manifest.output[0].url).pathname }, 200);
        expect(file.body).toBe(line);
      } finally {
        await replica.stop();
      }
    } finally {
      await pool.end();
    }
  }, 300_000);

  it("merges a second node's ended links, disclosures and wrong-link reports under new numbers", async () => {
    const first = linkingNode('Patient/a1', 'a'.repeat(43));
    const second = linkingNode('Patient/b1', 'b'.repeat(43));
    const migrate = (from: string) => cli(['migrate', '--database-url', mergedUrl, '--from-data-dir', from]);
    const one = await migrate(first);
    expect(one.code, one.output).toBe(0);
    expect(one.output).toContain(`ended patient links: 1 in ${first}, 1 copied, 0 already there`);
    // Both nodes numbered their rows from 1: the second's get the next numbers, its report follows its ended link.
    const two = await migrate(second);
    expect(two.code, two.output).toBe(0);
    expect(two.output).toContain(
      `ended patient links: 1 in ${second}, 1 copied (1 under new numbers), 0 already there`,
    );
    expect(two.output).toContain(
      `disclosures under links: 1 in ${second}, 1 copied (1 under new numbers), 0 already there`,
    );
    expect(two.output).toContain(`wrong-link reports: 1 in ${second}, 1 copied, 0 already there`);

    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
    try {
      const links = new PostgresPatientLinks(pool, mergedSchema);
      const reports = await links.pendingReports();
      expect(reports.map((r) => [r.ended.localPatient, r.ended.npid, r.ownerNpid])).toEqual([
        ['Patient/a1', 'a'.repeat(43), `${'a'.repeat(43)}2`],
        ['Patient/b1', 'b'.repeat(43), `${'b'.repeat(43)}2`],
      ]);
      const [ended] = await links.history('Patient/b1');
      expect(ended).toMatchObject({ npid: 'b'.repeat(43), reason: 'corrected', seq: 2 });
      expect((await links.disclosuresUnder(ended!)).map((d) => d.auditEvent)).toEqual(['audit-Patient/b1']);

      // Either node again: nothing copied, nothing changed.
      const merged = await tablesOf(pool, mergedSchema);
      for (const dataDir of [second, first]) {
        const again = await migrate(dataDir);
        expect(again.code, again.output).toBe(0);
        expect(again.output).toContain(`ended patient links: 1 in ${dataDir}, 0 copied, 1 already there`);
        expect(again.output).toContain(`wrong-link reports: 1 in ${dataDir}, 0 copied, 1 already there`);
        expect(await tablesOf(pool, mergedSchema)).toBe(merged);
      }
      // A replica's next ended link numbers on after both nodes'.
      const relinked = await links.link({
        localPatient: 'Patient/b1',
        npid: 'c'.repeat(43),
        homeMsp: 'Org3MSP',
        linkedAt: '2026-01-03T00:00:00.000Z',
      });
      expect(relinked?.seq).toBe(3);
    } finally {
      await pool.end();
    }
  }, 300_000);
});
