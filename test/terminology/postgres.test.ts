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
import { writeExcerpts, type ExcerptPaths } from './excerpts.js';
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

    it('keeps nothing in the data directory: no terminology.sqlite, no scratch file left', () => {
      expect(existsSync(terminologyFile(dataDir))).toBe(false);
      expect(readdirSync(dataDir)).toEqual([]);
    });
  },
);
