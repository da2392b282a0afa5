/**
 * The code systems on PostgreSQL (`--store postgres`): `hie-ledger terminology load` writes them to the database
 * (migration 10), once, and every replica reads them through the same LoadedCodeSystems port (the contract of
 * code-systems-contract.ts, as terminology.sqlite passes it). Needs a server: HIE_TEST_POSTGRES_URL.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPostgresCodeSystems } from '../../src/terminology/postgres-code-systems.js';
import { terminologyFile } from '../../src/terminology/terminology-store.js';
import { postgresOptions } from '../../src/app/open-store.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { SCT, writeExcerpts, type ExcerptPaths } from './excerpts.js';
import { until } from '../support/cli-process.js';
import { describeLoadedCodeSystemsContract, loadInto } from './code-systems-contract.js';

const skip = postgresSkipReason('terminology on PostgreSQL');
const schema = `hie_term_${randomBytes(6).toString('hex')}`;
const databaseUrl = POSTGRES_URL
  ? `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${schema}`
  : '';

let dir: string;
let dataDir: string;
let files: ExcerptPaths;
const settings = () => ({ dataDir, store: 'postgres' as const, databaseUrl });

const openDatabase = async () => (await openPostgresCodeSystems(postgresOptions(databaseUrl)))!;

describe.skipIf(skip !== undefined)(
  'terminology on PostgreSQL (skipped unless HIE_TEST_POSTGRES_URL is set)',
  () => {
    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'hie-terms-pg-'));
      dataDir = path.join(dir, 'data');
      mkdirSync(dataDir);
      files = writeExcerpts(path.join(dir, 'releases'));
      // Nothing loaded yet: no port (validation as without loaded systems).
      expect(await loadInto(settings(), 'icd9', files.cvx)).toMatchObject({ code: 2 });
      for (const system of ['loinc', 'snomed', 'rxnorm', 'icd10cm', 'cvx'] as const) {
        const result = await loadInto(settings(), system, files[system]);
        expect(result.err).toBe('');
        expect(result.code).toBe(0);
      }
    });

    afterAll(async () => {
      rmSync(dir, { recursive: true, force: true });
      if (!POSTGRES_URL) return;
      const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    });

    describeLoadedCodeSystemsContract('PostgreSQL', {
      load: (system, target) => loadInto(settings(), system, target),
      open: openDatabase,
      files: () => files,
      dir: () => dir,
    });

    it("reads a document's codes ahead without blocking the thread; their lookups then answer from memory", async () => {
      const store = await openDatabase();
      const locker = new pg.Client({ connectionString: POSTGRES_URL });
      await locker.connect();
      const S = `"${schema}"`;
      // Readers of these tables wait until the locker's transaction ends.
      const lockTables = async () => {
        await locker.query('BEGIN');
        await locker.query(
          `LOCK TABLE ${S}.ts_concept, ${S}.ts_designation, ${S}.ts_property, ${S}.ts_parent IN ACCESS EXCLUSIVE MODE`,
        );
      };
      try {
        const loinc = 'http://loinc.org';
        const sct = 'http://snomed.info/sct';
        const document = JSON.stringify({
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [
            {
              resource: {
                resourceType: 'Condition',
                code: {
                  coding: [
                    { system: sct, code: SCT.type2 },
                    { system: sct, code: 'no-such-code' },
                  ],
                },
              },
            },
            {
              resource: {
                resourceType: 'Observation',
                code: { coding: [{ system: loinc, code: '29463-7' }] },
              },
            },
          ],
        });
        await lockTables();
        let timerFired = false;
        // Scheduled before the read-ahead starts: it fires while the read waits for the database.
        setTimeout(() => (timerFired = true), 0);
        let read = false;
        const reading = store.prefetch(document).then(() => (read = true));
        await until(async () => {
          const { rows } = await locker.query(
            `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position($1 in query) > 0`,
            [S],
          );
          return rows.length > 0;
        }, 'the read-ahead waits for the locked tables');
        expect(timerFired).toBe(true);
        expect(read).toBe(false);
        await locker.query('COMMIT');
        await reading;

        // The tables locked again: a lookup that went to the database would wait (and block this thread) now.
        await lockTables();
        expect(store.concept(sct, SCT.type2)?.display).toBeDefined();
        expect(store.concept(sct, 'no-such-code')).toBeUndefined();
        expect(store.subsumes(sct, SCT.disease, SCT.type2)).toBe(true);
        expect(store.subsumes(sct, SCT.type1, SCT.type2)).toBe(false);
        expect(store.subsumes(sct, SCT.type2, SCT.type2)).toBe(true);
        expect(store.property(loinc, '29463-7', 'COMPONENT')).toEqual(['Body weight']);
        expect(store.property(loinc, '29463-7', 'NO_SUCH_PROPERTY')).toEqual([]);
        await locker.query('COMMIT');
      } finally {
        await locker.end();
        await store.close();
      }
    });

    it('keeps nothing in the data directory: no terminology.sqlite, no scratch file left', () => {
      expect(existsSync(terminologyFile(dataDir))).toBe(false);
      expect(readdirSync(dataDir)).toEqual([]);
    });
  },
);
