/**
 * Terminology loaded once into the PostgreSQL database and used by every replica: `hie-ledger terminology load
 * --store postgres` run as its own process (as an operator does), then two replicas with their own data directories
 * (no terminology.sqlite in either) check LOINC codes on $validate and on writes, and answer $lookup, from the
 * database. Needs a server: HIE_TEST_POSTGRES_URL.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFhirValidatorSync } from '../../src/fhir/validation/index.js';
import { terminologyFile } from '../../src/terminology/terminology-store.js';
import { runCli, until } from '../support/cli-process.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { bootApp, FHIR_JSON, type BootedApp } from '../support/app-harness.js';
import { writeExcerpts } from './excerpts.js';

const skip = postgresSkipReason('terminology shared by PostgreSQL replicas');
const schema = `hie_term_${randomBytes(6).toString('hex')}`;
const databaseUrl = POSTGRES_URL
  ? `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${schema}`
  : '';
const LOINC = 'http://loinc.org';

const observation = (code: string) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: LOINC, code }] },
  subject: { reference: 'Patient/p1' },
  valueQuantity: { value: 5.4, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
});

let dir: string;
const replicas: BootedApp[] = [];

async function cli(args: string[]): Promise<{ code: number | null; output: string }> {
  const started = runCli(args);
  const code = await started.exited;
  return { code, output: started.output() };
}

describe.skipIf(skip !== undefined)(
  'terminology shared by replicas (skipped unless HIE_TEST_POSTGRES_URL is set)',
  () => {
    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'hie-terms-replicas-'));
      const files = writeExcerpts(path.join(dir, 'releases'));
      const operatorDir = mkdtempSync(path.join(dir, 'operator-'));
      const db = ['--store', 'postgres', '--database-url', databaseUrl, '--data-dir', operatorDir];
      const loaded = await cli(['terminology', 'load', ...db, '--system', 'loinc', files.loinc]);
      expect(loaded.output).toContain('Loaded LOINC (http://loinc.org): 5 concepts');
      expect(loaded.code).toBe(0);
      const listed = await cli(['terminology', 'list', ...db]);
      expect(listed.output).toMatch(/LOINC\thttp:\/\/loinc\.org\t.*\t5 concepts/);
      expect(listed.code).toBe(0);
      const flags = { auth: 'dev-open', logLevel: 'warn', store: 'postgres', databaseUrl, anchoring: 'off' };
      for (let i = 0; i < 2; i++)
        replicas.push(await bootApp(flags, { validator: createFhirValidatorSync() }, 'hie-terms-replica-'));
    });

    afterAll(async () => {
      for (const replica of replicas) await replica.stop();
      rmSync(dir, { recursive: true, force: true });
      if (!POSTGRES_URL) return;
      const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    });

    it('each replica checks the codes from the database: $validate, writes and $lookup', async () => {
      for (const replica of replicas) {
        expect(existsSync(terminologyFile(replica.dataDir))).toBe(false);
        const inject = (method: 'GET' | 'POST', url: string, body?: unknown) =>
          replica.app.fastify.inject({
            method,
            url,
            headers: FHIR_JSON,
            ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
          });
        const validated = JSON.parse(
          (await inject('POST', '/fhir/Observation/$validate', observation('9999-9'))).body,
        );
        expect(
          validated.issue
            .filter((i: { severity: string }) => i.severity === 'error')
            .map((i: { expression: string[]; diagnostics: string }) => [i.expression[0], i.diagnostics]),
        ).toEqual([
          ['Observation.code.coding[0].code', `Unknown code '9999-9' in the CodeSystem '${LOINC}'`],
        ]);
        const refused = await inject('POST', '/fhir/Observation', observation('9999-9'));
        expect(refused.statusCode).toBe(400);
        expect(refused.body).toContain(`Unknown code '9999-9'`);
        expect((await inject('POST', '/fhir/Observation', observation('2345-7'))).statusCode).toBe(201);
        const lookup = await inject('GET', `/fhir/CodeSystem/$lookup?system=${LOINC}&code=29463-7`);
        expect(lookup.statusCode).toBe(200);
        expect(lookup.body).toContain('Body weight');
      }
    });

    it('a write whose code is not cached waits for the database without holding up the other requests', async () => {
      const { fastify } = replicas[0]!.app;
      const locker = new pg.Client({ connectionString: POSTGRES_URL });
      await locker.connect();
      const S = `"${schema}"`;
      try {
        // Every read of the code systems' tables waits until the locker's transaction ends.
        await locker.query('BEGIN');
        await locker.query(
          `LOCK TABLE ${S}.ts_concept, ${S}.ts_designation, ${S}.ts_property, ${S}.ts_parent IN ACCESS EXCLUSIVE MODE`,
        );
        const writing = fastify.inject({
          method: 'POST',
          url: '/fhir/Observation',
          headers: FHIR_JSON,
          payload: JSON.stringify(observation('1234-5')),
        });
        // Polled on this thread's timers: a lookup blocking the thread would stop them until it gave up.
        await until(async () => {
          const { rows } = await locker.query(
            `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position($1 in query) > 0`,
            [S],
          );
          return rows.length > 0;
        }, "the write's code lookup waits for the locked tables");
        expect((await fastify.inject({ method: 'GET', url: '/fhir/Patient/not-there' })).statusCode).toBe(
          404,
        );
        await locker.query('COMMIT');
        const written = await writing;
        expect(written.statusCode, written.body).toBe(201);
      } finally {
        await locker.end();
      }
    });
  },
);
