/**
 * The PatientLinkStorage port on both adapters, two views of one store each (two processes on one data directory's
 * file; two replicas on one PostgreSQL schema, each with its own pool): a link made through one view is the other's
 * at once; a link token is spent once for both; of two links of unrelated Patients to one network patient made at
 * once through the two views, one is refused (`link-conflict`); the wrong-link bookkeeping (history, disclosures
 * under a link, pending reports) is the same. PostgreSQL needs HIE_TEST_POSTGRES_URL.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { PatientLinkStore, type PatientLinkStorage } from '../../src/exchange/patient-links.js';
import { PostgresPatientLinks } from '../../src/exchange/postgres-patient-links.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';

interface Views {
  views: [PatientLinkStorage, PatientLinkStorage];
  close(): Promise<void>;
}

const X = 'x'.repeat(43);
const Y = 'y'.repeat(43);
const disclosure = (localPatient: string, npid: string, at: string) => ({
  localPatient,
  npid,
  at,
  accessorMsp: 'Org2MSP',
  accessor: 'actor-0001',
  purpose: 'TREAT',
  records: 2,
  types: ['Observation', 'Patient'],
  auditEvent: `ae-${at}`,
});

function describeLinkStorage(name: string, open: () => Promise<Views>): void {
  describe(`patient link storage: ${name}`, () => {
    it('a link made through one view is the other’s; a token is spent once for both', async () => {
      const { views, close } = await open();
      const [a, b] = views;
      try {
        await a.link({
          localPatient: 'Patient/c1',
          npid: X,
          homeMsp: 'Org1MSP',
          linkedAt: '2026-01-01T00:00:00.000Z',
        });
        expect(await b.linkOf('Patient/c1')).toEqual({
          localPatient: 'Patient/c1',
          npid: X,
          homeMsp: 'Org1MSP',
          linkedAt: '2026-01-01T00:00:00.000Z',
        });
        expect((await b.linksTo(X)).map((l) => l.localPatient)).toEqual(['Patient/c1']);
        await b.locate(X, 'Org3MSP', '2026-01-01T00:00:00.000Z');
        await a.locate(X, 'Org2MSP', '2026-01-01T00:00:01.000Z');
        await a.locate(X, 'Org3MSP', '2026-01-02T00:00:00.000Z');
        expect(await b.custodiansOf(X)).toEqual(['Org2MSP', 'Org3MSP']);

        const now = Date.parse('2026-01-01T00:00:00.000Z');
        expect(await a.spend('Org1MSP jti-1', now + 600_000, now)).toBe(true);
        expect(await b.spend('Org1MSP jti-1', now + 600_000, now + 1)).toBe(false);
        expect(await b.spend('Org1MSP jti-2', now + 600_000, now + 1)).toBe(true);

        const ended = await b.unlink('Patient/c1', '2026-01-03T00:00:00.000Z');
        expect(ended?.reason).toBe('revoked');
        expect(await a.linkOf('Patient/c1')).toBeUndefined();
        expect((await a.history('Patient/c1')).map((h) => h.seq)).toEqual([ended!.seq]);
      } finally {
        await close();
      }
    });

    it('two unrelated Patients linked to one network patient at once: one is refused', async () => {
      const { views, close } = await open();
      const [a, b] = views;
      try {
        // Each view found no other Patient linked to X (allowed: none), then both write.
        const outcomes = await Promise.allSettled([
          Promise.resolve().then(() =>
            a.link(
              {
                localPatient: 'Patient/u1',
                npid: X,
                homeMsp: 'Org1MSP',
                linkedAt: '2026-01-01T00:00:00.000Z',
              },
              [],
            ),
          ),
          Promise.resolve().then(() =>
            b.link(
              {
                localPatient: 'Patient/u2',
                npid: X,
                homeMsp: 'Org1MSP',
                linkedAt: '2026-01-01T00:00:00.000Z',
              },
              [],
            ),
          ),
        ]);
        expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
        const refused = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
        expect(String(refused.reason)).toMatch(/already linked to this network patient/);
        expect(await a.linksTo(X)).toHaveLength(1);
        // Accepted as the same person, the second one links.
        const [linked] = await a.linksTo(X);
        const other = linked!.localPatient === 'Patient/u1' ? 'Patient/u2' : 'Patient/u1';
        await b.link(
          { localPatient: other, npid: X, homeMsp: 'Org1MSP', linkedAt: '2026-01-02T00:00:00.000Z' },
          [linked!.localPatient],
        );
        expect((await a.linksTo(X)).map((l) => l.localPatient)).toEqual(['Patient/u1', 'Patient/u2']);
      } finally {
        await close();
      }
    });

    it('a relink and an unlink as wrong leave a pending report, seen through either view', async () => {
      const { views, close } = await open();
      const [a, b] = views;
      try {
        await a.link({
          localPatient: 'Patient/c1',
          npid: X,
          homeMsp: 'Org1MSP',
          linkedAt: '2026-01-01T00:00:00.000Z',
        });
        await a.noteDisclosure(disclosure('Patient/c1', X, '2026-01-02T00:00:00.000Z'));
        await b.noteDisclosure(disclosure('Patient/c2', X, '2026-01-02T00:00:00.000Z'));
        await b.noteDisclosure(disclosure('Patient/c1', Y, '2026-01-02T00:00:00.000Z'));
        const corrected = (await b.link({
          localPatient: 'Patient/c1',
          npid: Y,
          homeMsp: 'Org3MSP',
          linkedAt: '2026-01-03T00:00:00.000Z',
        }))!;
        expect(corrected).toMatchObject({ reason: 'corrected', npid: X });
        expect((await a.disclosuresUnder(corrected)).map((d) => [d.localPatient, d.npid, d.at])).toEqual([
          ['Patient/c1', X, '2026-01-02T00:00:00.000Z'],
        ]);
        expect(await a.pendingReports()).toEqual([{ ended: corrected, ownerNpid: Y }]);
        await a.reported(corrected.seq, '2026-01-03T00:00:01.000Z');
        expect(await b.pendingReports()).toEqual([]);
        const wrong = (await a.unlink('Patient/c1', '2026-01-07T00:00:00.000Z', true))!;
        expect(await b.pendingReports()).toEqual([{ ended: wrong }]);
        expect((await b.history('Patient/c1')).map((h) => h.reason)).toEqual(['corrected', 'wrong']);
      } finally {
        await close();
      }
    });
  });
}

describeLinkStorage('SQLite (the data directory)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hie-links-'));
  const file = join(dir, 'exchange', 'patient-links.sqlite');
  const views: [PatientLinkStore, PatientLinkStore] = [
    new PatientLinkStore(file),
    new PatientLinkStore(file),
  ];
  return {
    views,
    async close() {
      for (const view of views) view.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

if (postgresSkipReason('patient links on PostgreSQL') === undefined)
  describeLinkStorage('PostgreSQL (migration 15)', async () => {
    const schema = `hie_links_${randomBytes(6).toString('hex')}`;
    const stores = [0, 1].map(
      () => new PostgresResourceStore({ connectionString: POSTGRES_URL!, schema, maxConnections: 3 }),
    );
    await stores[0]!.migrate();
    return {
      views: [
        new PostgresPatientLinks(stores[0]!.pool, schema),
        new PostgresPatientLinks(stores[1]!.pool, schema),
      ],
      async close() {
        for (const store of stores) await store.close();
        const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
        await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        await pool.end();
      },
    };
  });
